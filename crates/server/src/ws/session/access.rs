//! The session's identity and permission work: `auth` frames and token expiry, channel
//! permissions on subscribe, client `publish` frames, and the per-connection frame rate. The
//! protocol loop, I/O and close handshake stay in the parent module.

use hubbub_proto::client;
use hubbub_proto::server as reply;
use hubbub_proto::{CloseCode, ErrorCode, time};
use serde_json::value::RawValue;
use std::time::Duration;
use tokio::time::Instant;

use super::{End, Session};
use crate::access::Identity;
use crate::access::policy::{self, Action};
use crate::settings::Settings;

/// `exp` (Unix seconds) on the monotonic clock.
pub(super) fn expiry_instant(exp: u64) -> Instant {
    let now_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let left = Duration::from_secs(exp).saturating_sub(now_unix).min(Duration::from_secs(10 * 365 * 86_400));
    Instant::now() + left
}

/// The user's own channel, when `auth.user_channels` is on and the token names a user.
pub(super) fn user_channel(settings: &Settings, who: &Identity) -> Option<String> {
    let user = who.user.as_deref().filter(|_| settings.auth.user_channels)?;
    let channel = format!("{}{user}", policy::USER_PREFIX);
    hubbub::channel_name::validate(&channel, settings.limits.max_channel_name_length).ok().map(|()| channel)
}

/// A frame over the rate limit.
pub(super) enum RateLimited {
    /// Dropped, with an error frame.
    Dropped,
    /// Dropped, and the connection is to be closed.
    Close,
}

impl Session {
    /// When to warn and when to close for the current token's `exp`.
    pub(super) fn expiry_times(&self) -> Option<(Instant, Instant)> {
        let expire = self.token_expiry?;
        Some((expire.checked_sub(self.settings.auth.expiry_warning).unwrap_or(expire), expire))
    }

    /// `limits.client_frames_per_minute`: over it a frame is dropped with `rate_limited`; at twice
    /// it the connection is closed with 4029.
    pub(super) fn check_frame_rate(&mut self) -> Result<(), RateLimited> {
        let limit = self.settings.limits.client_frames_per_minute;
        if limit == 0 {
            return Ok(());
        }
        let n = self.frames.hit(Instant::now());
        if n <= limit {
            return Ok(());
        }
        if n > limit.saturating_mul(2) {
            self.send_error(
                None,
                ErrorCode::RateLimited,
                &format!("kept sending over {limit} frames a minute; closing (4029)"),
            );
            return Err(RateLimited::Close);
        }
        self.send_error(None, ErrorCode::RateLimited, &format!("over {limit} frames a minute; this frame was dropped"));
        Err(RateLimited::Dropped)
    }

    /// Permission and recovery checks for every channel of a subscribe; one refusal refuses the
    /// whole request, so a client never ends up half-subscribed. (`max_subscribers` is the hub's:
    /// `Connection::subscribe_with` checks it under the channel's lock.)
    pub(super) fn may_subscribe(&self, req: &client::Subscribe) -> Result<(), (ErrorCode, String)> {
        let rules = &self.settings.channels;
        for ch in &req.channels {
            policy::check(rules, self.identity.as_ref(), ch, Action::Subscribe, self.access.verifier.is_some())
                .map_err(|why| (ErrorCode::PermissionDenied, why))?;
            let Some(rule) = policy::rule_for(rules, ch) else { continue };
            let recovering = req.ack || req.since.iter().any(|(c, _)| c == ch);
            if recovering && !rule.recovery {
                return Err((ErrorCode::PermissionDenied, format!("{ch:?} does not allow recovery (since/ack)")));
            }
        }
        Ok(())
    }

    /// Subscribes the channels the server gives this connection by itself (the path's
    /// `auto_subscribe`, the user channel), each under the same permission checks as a client's
    /// subscribe and the hub's `max_subscribers`; a refused one is skipped with an error naming
    /// it, and the others are still subscribed.
    pub(super) async fn subscribe_given(&mut self, channels: Vec<String>) {
        for ch in channels {
            let one = client::Subscribe { channels: vec![ch.clone()], since: Vec::new(), ack: false };
            let refused = match self.may_subscribe(&one) {
                Ok(()) => self.conn.subscribe(std::slice::from_ref(&ch)).await.err().map(|e| (e.code, e.message)),
                Err(refusal) => Some(refusal),
            };
            if let Some((code, why)) = refused {
                self.send_error(None, code, &format!("not subscribed on connect: {why}"));
            }
        }
    }

    pub(super) async fn on_auth(&mut self, id: Option<&RawValue>, token: &str) -> Result<(), End> {
        let Some(verifier) = self.access.verifier.as_ref() else {
            return self.client_error(id, ErrorCode::Unauthorized, "this hub checks no tokens ([auth] has no key)");
        };
        let fresh = match verifier.verify(token).await {
            Ok(i) => i,
            Err(e) => {
                let first = self.identity.is_none();
                self.client_error(id, ErrorCode::Unauthorized, &format!("token refused: {e}"))?;
                if first && self.settings.auth.required {
                    return Err(End::Close(CloseCode::Unauthorized, "token refused".into()));
                }
                return Ok(());
            }
        };
        if let Some(current) = &self.identity
            && current.user != fresh.user
        {
            return self.client_error(
                id,
                ErrorCode::Unauthorized,
                "a refreshed token must name the same user (sub) as the connection's first one",
            );
        }
        let first = self.identity.is_none();
        if first && let Some(user) = &fresh.user {
            let max = self.settings.limits.max_connections_per_user;
            match self.access.claim_user_slot(user, max) {
                Some(slot) => self._user_slot = Some(slot),
                None => {
                    self.access.rejections.hit(crate::access::rejections::Limit::MaxConnectionsPerUser);
                    self.send_error(
                        id,
                        ErrorCode::PermissionDenied,
                        &format!("user {user:?} has {max} connections already (limits.max_connections_per_user)"),
                    );
                    return Err(End::Close(CloseCode::Policy, "too many connections for this user".into()));
                }
            }
        }
        self.reply(reply::authenticated(id, fresh.user.as_deref(), fresh.expires_at, &time::now_iso()));
        let user_channel = if first { user_channel(&self.settings, &fresh) } else { None };
        self.token_expiry = fresh.expires_at.map(expiry_instant);
        self.identity = Some(fresh);
        self.auth_deadline = None;
        self.expiry_warned = false;
        // A connection that had to authenticate first joins the hub-wide stream and its path's
        // channels only now; its acknowledgement cursors are its user's from now on.
        self.conn.shared().admit();
        if let Some(user) = self.identity.as_ref().and_then(|i| i.user.as_deref()) {
            self.conn.shared().set_ack_owner(user);
        }
        let mut channels = std::mem::take(&mut self.deferred_subscribe);
        channels.extend(user_channel);
        self.subscribe_given(channels).await;
        Ok(())
    }

    pub(super) async fn on_publish(
        &mut self,
        id: Option<&RawValue>,
        channel: String,
        event: String,
    ) -> Result<(), End> {
        if let Err(why) =
            policy::check(&self.settings.channels, self.identity.as_ref(), &channel, Action::Publish, true)
        {
            return self.client_error(id, ErrorCode::PermissionDenied, &why);
        }
        let event = match RawValue::from_string(event)
            .map_err(|e| e.to_string())
            .and_then(|raw| hubbub::Event::new(raw).map_err(|e| e.to_string()))
        {
            Ok(e) => e,
            Err(why) => return self.client_error(id, ErrorCode::InvalidMessage, &why),
        };
        let hub = self.conn.hub().clone();
        match hub.publish_with(std::slice::from_ref(&channel), event, hubbub::PublishOptions::default()).await {
            Ok(outcome) => {
                let r = &outcome.receipts[0].receipt;
                self.reply(reply::published(id, &channel, r.offset, r.delivered, &time::now_iso()));
                Ok(())
            }
            Err(hubbub::PublishError::InvalidChannel(why)) => self.client_error(id, ErrorCode::InvalidChannel, &why),
            Err(e) => self.client_error(id, ErrorCode::Unavailable, &format!("publish failed: {e}; retry")),
        }
    }
}
