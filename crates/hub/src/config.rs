//! The hub's settings as plain data. Loading them (TOML, environment, flags) is the server's job;
//! the library only receives a finished [`HubConfig`].

use std::time::Duration;

/// What happens when a connection's outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Close the connection with 4008 (slow consumer). The default: a client is told, rather
    /// than silently missing events; it reconnects and, where the channel keeps history, recovers.
    Close,
    /// Drop the oldest queued frames to make room, and count them. For feeds where only the latest
    /// state matters (telemetry, overlays).
    DropOldest,
}

/// History for the channels whose names match `pattern` (`*` matches any run of characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRule {
    /// A channel name, or a pattern with `*` wildcards, e.g. `sensor_*` or `room:*`.
    pub pattern: String,
    /// Publications kept per channel.
    pub history_size: usize,
    /// How long each publication is kept.
    pub history_ttl: Duration,
    /// Most local subscribers a matching channel may have on this node; 0: no limit.
    pub max_subscribers: usize,
}

impl ChannelRule {
    /// Whether `channel` matches this rule's pattern.
    pub fn matches(&self, channel: &str) -> bool {
        glob_match(&self.pattern, channel)
    }
}

/// Channel patterns: `*` matches any run of characters (including none); every other character
/// matches itself. The one matcher for history rules, permissions and token `channels` claims.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    glob_bytes(pattern.as_bytes(), text.as_bytes())
}

fn glob_bytes(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|b| *b == b'*')
}

/// Settings the hub library acts on.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Frames a connection may have queued before the overflow policy applies.
    pub outbox_max_messages: usize,
    /// Bytes a connection may have queued before the overflow policy applies.
    pub outbox_max_bytes: usize,
    /// What a full outbox does.
    pub overflow: OverflowPolicy,
    /// Channels one connection may be subscribed to at once.
    pub max_channels_per_connection: usize,
    /// Longest channel name, in bytes.
    pub max_channel_name_length: usize,
    /// How often the hub sends `heartbeat` frames to every connection; zero turns them off.
    pub heartbeat_interval: Duration,
    /// Rules per channel pattern; the first matching rule decides; no match, or a matching rule
    /// with `history_size` 0, means no history.
    pub channels: Vec<ChannelRule>,
    /// Most publications one recovery replays; a client further behind is told to reload.
    pub max_recovery: usize,
    /// How long a publish's `idempotency_key` is remembered.
    pub idempotency_window: Duration,
    /// Most idempotency keys remembered at once (oldest forgotten first).
    pub idempotency_max_keys: usize,
    /// How publications are compressed for connections with permessage-deflate.
    pub deflate: DeflateConfig,
}

/// How publications are compressed for connections that negotiated permessage-deflate (whether a
/// connection does is the server's handshake business; see `ConnectInfo::deflate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// zlib level, 0 (store) to 9 (smallest); 1 is the fastest that still compresses well.
    pub level: u32,
    /// Publications smaller than this many bytes go out uncompressed: on small JSON the
    /// saving is a few bytes and the receiver still pays for inflating.
    pub min_bytes: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig { level: 1, min_bytes: 256 }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            outbox_max_messages: 4096,
            outbox_max_bytes: 8 << 20,
            overflow: OverflowPolicy::Close,
            max_channels_per_connection: 256,
            max_channel_name_length: 200,
            heartbeat_interval: Duration::from_secs(30),
            channels: Vec::new(),
            max_recovery: 10_000,
            idempotency_window: Duration::from_secs(300),
            idempotency_max_keys: 100_000,
            deflate: DeflateConfig::default(),
        }
    }
}

impl HubConfig {
    /// The most local subscribers `channel` may have (0: no limit), from its first matching rule.
    pub fn max_subscribers(&self, channel: &str) -> usize {
        self.channels.iter().find(|r| r.matches(channel)).map_or(0, |r| r.max_subscribers)
    }

    /// The history rule for `channel`, if any.
    pub fn history_rule(&self, channel: &str) -> Option<&ChannelRule> {
        self.channels.iter().find(|r| r.matches(channel)).filter(|r| r.history_size > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let m = glob_match;
        assert!(m("sensor_*", "sensor_event"));
        assert!(m("sensor_*", "sensor_"));
        assert!(!m("sensor_*", "sensors"));
        assert!(m("*", "anything"));
        assert!(m("room:*:log", "room:12:log"));
        assert!(!m("room:*:log", "room:12:logs"));
        assert!(m("exact", "exact"));
        assert!(!m("exact", "exactly"));
        assert!(m("a*b*c", "aXXbYYc"));
    }

    #[test]
    fn the_first_matching_rule_decides_even_without_history() {
        let rule = |pattern: &str, history_size| ChannelRule {
            pattern: pattern.into(),
            history_size,
            history_ttl: Duration::from_secs(60),
            max_subscribers: 0,
        };
        let cfg = HubConfig { channels: vec![rule("chat:private", 0), rule("chat:*", 10)], ..HubConfig::default() };
        assert!(cfg.history_rule("chat:private").is_none());
        assert_eq!(cfg.history_rule("chat:lobby").map(|r| r.history_size), Some(10));
    }
}
