//! How often each limit said no, for `hubbub_limit_rejections_total{limit="…"}` in `/metrics`.
//! The label is the setting's name, so an operator can go from a rising line to the knob.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hubbub_proto::ErrorCode;

/// The limits that refuse something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `limits.connections_per_ip_per_minute` (HTTP 429).
    ConnectionsPerIp,
    /// `limits.max_connections` (HTTP 503).
    MaxConnections,
    /// `limits.max_connections_per_user` (HTTP 429, or close 1008 after an `auth` frame).
    MaxConnectionsPerUser,
    /// `limits.client_frames_per_minute` (`rate_limited`, close 4029).
    ClientFrames,
    /// `limits.publishes_per_key_per_minute` (HTTP 429).
    PublishesPerKey,
    /// `websocket.max_message_bytes` (`message_too_big`, close 1009).
    MaxMessageBytes,
    /// `limits.max_channels_per_connection` (`too_many_channels`).
    MaxChannelsPerConnection,
    /// `[[channels]] max_subscribers` (`channel_full`).
    MaxSubscribers,
    /// `websocket.max_errors_per_minute` (`too_many_errors`, close 1008).
    MaxErrors,
    /// `limits.handshake_timeout` (request head or TLS handshake too slow).
    HandshakeTimeout,
    /// `auth.token_timeout` (no `auth` frame in time, close 4001).
    TokenTimeout,
}

impl Limit {
    /// Every limit, in declaration order.
    const ALL: [Limit; 11] = [
        Limit::ConnectionsPerIp,
        Limit::MaxConnections,
        Limit::MaxConnectionsPerUser,
        Limit::ClientFrames,
        Limit::PublishesPerKey,
        Limit::MaxMessageBytes,
        Limit::MaxChannelsPerConnection,
        Limit::MaxSubscribers,
        Limit::MaxErrors,
        Limit::HandshakeTimeout,
        Limit::TokenTimeout,
    ];

    /// The setting's name, used as the metric label.
    pub fn label(self) -> &'static str {
        match self {
            Limit::ConnectionsPerIp => "connections_per_ip_per_minute",
            Limit::MaxConnections => "max_connections",
            Limit::MaxConnectionsPerUser => "max_connections_per_user",
            Limit::ClientFrames => "client_frames_per_minute",
            Limit::PublishesPerKey => "publishes_per_key_per_minute",
            Limit::MaxMessageBytes => "max_message_bytes",
            Limit::MaxChannelsPerConnection => "max_channels_per_connection",
            Limit::MaxSubscribers => "max_subscribers",
            Limit::MaxErrors => "max_errors_per_minute",
            Limit::HandshakeTimeout => "handshake_timeout",
            Limit::TokenTimeout => "token_timeout",
        }
    }

    /// The limit an error frame reports, when it reports one.
    pub fn of_error(code: ErrorCode) -> Option<Limit> {
        Some(match code {
            ErrorCode::RateLimited => Limit::ClientFrames,
            ErrorCode::MessageTooBig => Limit::MaxMessageBytes,
            ErrorCode::TooManyChannels => Limit::MaxChannelsPerConnection,
            ErrorCode::ChannelFull => Limit::MaxSubscribers,
            ErrorCode::TooManyErrors => Limit::MaxErrors,
            _ => return None,
        })
    }
}

/// One counter per limit.
#[derive(Debug, Default)]
pub struct Rejections {
    counts: [AtomicU64; Limit::ALL.len()],
}

impl Rejections {
    /// Counts one refusal by `limit`.
    pub fn hit(&self, limit: Limit) {
        // `ALL` lists the variants in declaration order, so a variant's discriminant is its index.
        self.counts[limit as usize].fetch_add(1, Relaxed);
    }

    /// Every limit with its count, in a fixed order.
    pub fn rows(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Limit::ALL.iter().zip(&self.counts).map(|(l, c)| (l.label(), c.load(Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_limit_at_its_own_index() {
        for (i, l) in Limit::ALL.iter().enumerate() {
            assert_eq!(*l as usize, i, "{l:?}");
        }
    }
}
