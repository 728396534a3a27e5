//! The hub's settings as plain data. Loading them (TOML, environment, flags) is the server's job;
//! the library only receives a finished [`HubConfig`].

use std::time::Duration;

/// What happens when a connection's outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Close the connection with 4008 (slow consumer). The default: a client is told, rather
    /// than silently missing events; it reconnects.
    Close,
    /// Drop the oldest queued frames to make room, and count them. For feeds where only the latest
    /// state matters (telemetry, overlays).
    DropOldest,
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
        }
    }
}
