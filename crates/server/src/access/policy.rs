//! Channel permissions: may this connection subscribe to, or publish into, this channel?
//!
//! The first `[[channels]]` rule whose pattern matches decides (the same rule that decides history);
//! a channel no rule matches may be subscribed to by anyone and published to by no client.
//! `user:<id>` channels are built in where tokens are checked (`[auth]` has a key): only the
//! connection whose token says `sub: <id>` (or a token whose `channels` claim covers the channel)
//! may subscribe to one. Without `[auth]` they are ordinary channels, as they were before tokens.

use crate::access::Identity;
use crate::settings::{Access, ChannelSettings};

/// What the client wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Receive the channel's events.
    Subscribe,
    /// Send a `publish` frame into it.
    Publish,
}

/// The prefix of per-user channels.
pub const USER_PREFIX: &str = "user:";

/// The rule for `channel`, if one matches.
pub fn rule_for<'a>(rules: &'a [ChannelSettings], channel: &str) -> Option<&'a ChannelSettings> {
    rules.iter().find(|r| r.matches(channel))
}

/// `Ok` or a sentence saying why not.
pub fn check(
    rules: &[ChannelSettings],
    who: Option<&Identity>,
    channel: &str,
    action: Action,
    users_reserved: bool,
) -> Result<(), String> {
    let rule = rule_for(rules, channel);
    if action == Action::Subscribe
        && users_reserved
        && let Some(owner) = channel.strip_prefix(USER_PREFIX)
    {
        let own = who.is_some_and(|w| w.user.as_deref() == Some(owner) || w.grants(channel));
        return if own { Ok(()) } else { Err(format!("{channel:?} is another user's channel")) };
    }
    let access = match (action, rule) {
        (Action::Subscribe, Some(r)) => r.subscribe,
        (Action::Subscribe, None) => Access::Anyone,
        (Action::Publish, Some(r)) => r.publish,
        (Action::Publish, None) => Access::Nobody,
    };
    let verb = match action {
        Action::Subscribe => "subscribe to",
        Action::Publish => "publish into",
    };
    match access {
        Access::Anyone => Ok(()),
        Access::Authenticated if who.is_some() => Ok(()),
        Access::Authenticated => Err(format!("{verb} {channel:?} needs a token; authenticate first")),
        Access::Token if who.is_some_and(|w| w.grants(channel)) => Ok(()),
        Access::Token => Err(format!("{verb} {channel:?} needs a token whose \"channels\" claim covers it")),
        Access::Nobody => Err(format!("clients may not {verb} {channel:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, subscribe: Access, publish: Access) -> ChannelSettings {
        ChannelSettings { subscribe, publish, ..ChannelSettings::new(pattern) }
    }

    fn who(user: &str, channels: &[&str]) -> Identity {
        Identity {
            user: Some(user.into()),
            channels: channels.iter().map(|c| c.to_string()).collect(),
            expires_at: None,
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let rules = vec![
            rule("secret:*", Access::Token, Access::Nobody),
            rule("chat:*", Access::Authenticated, Access::Authenticated),
            rule("*", Access::Anyone, Access::Anyone),
        ];
        let alice = who("alice", &["secret:alice-*"]);
        let ok = |w: Option<&Identity>, ch, a| check(&rules, w, ch, a, true).is_ok();
        assert!(ok(Some(&alice), "secret:alice-1", Action::Subscribe));
        assert!(!ok(Some(&alice), "secret:bob-1", Action::Subscribe));
        assert!(!ok(Some(&alice), "secret:alice-1", Action::Publish));
        assert!(!ok(None, "chat:x", Action::Subscribe));
        assert!(ok(Some(&alice), "chat:x", Action::Publish));
        assert!(ok(None, "news", Action::Publish));
    }

    #[test]
    fn without_rules_anyone_subscribes_and_no_client_publishes() {
        assert!(check(&[], None, "news", Action::Subscribe, true).is_ok());
        let e = check(&[], None, "news", Action::Publish, true).unwrap_err();
        assert!(e.contains("may not publish"), "{e}");
    }

    #[test]
    fn user_channels_belong_to_their_user() {
        let alice = who("alice", &[]);
        let admin = who("root", &["user:*"]);
        assert!(check(&[], Some(&alice), "user:alice", Action::Subscribe, true).is_ok());
        assert!(check(&[], Some(&alice), "user:bob", Action::Subscribe, true).is_err());
        assert!(check(&[], None, "user:alice", Action::Subscribe, true).is_err());
        assert!(check(&[], Some(&admin), "user:bob", Action::Subscribe, true).is_ok());
        assert!(check(&[], None, "user:42", Action::Subscribe, false).is_ok(), "without [auth]: ordinary");
    }
}
