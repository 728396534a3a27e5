//! The closed tables of codes a client can see. Every code is stable: clients branch on it.
//! `docs/protocol.md` carries the same tables for people; a test keeps the two in step.

/// Why a client frame was refused. Sent as `{"type":"error","code":…}`; the connection stays open
/// unless the matching close code says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame was not valid JSON, or not a JSON object.
    MalformedJson,
    /// The object had no string `type` field.
    MissingType,
    /// The `type` is not one the hub knows.
    UnknownType,
    /// A field had the wrong shape (for example `channels` not a list of strings).
    InvalidMessage,
    /// A channel name is empty, too long, or has a character outside the allowed set.
    InvalidChannel,
    /// Subscribing would take the connection over its channel limit.
    TooManyChannels,
    /// The frame was larger than `websocket.max_message_bytes`; the connection is closed with 1009.
    MessageTooBig,
    /// A binary frame arrived; the protocol is JSON text only.
    BinaryNotSupported,
    /// The client sent too many bad frames in a short time; the connection is closed with 1008.
    TooManyErrors,
    /// The request is valid but could not be completed now (the broker did not answer); retry.
    Unavailable,
    /// No valid token: the hub requires one (`auth.required`), or the one sent was refused
    /// (bad signature, expired, not yet valid, wrong audience or issuer, unknown key). The message
    /// says which.
    Unauthorized,
    /// The connection's identity may not subscribe to, or publish into, this channel.
    PermissionDenied,
    /// The channel has its rule's `max_subscribers` already.
    ChannelFull,
    /// The client sent frames faster than `limits.client_frames_per_minute`; this one was dropped.
    RateLimited,
}

impl ErrorCode {
    /// Every code, in the order of the documentation table.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::MalformedJson,
        ErrorCode::MissingType,
        ErrorCode::UnknownType,
        ErrorCode::InvalidMessage,
        ErrorCode::InvalidChannel,
        ErrorCode::TooManyChannels,
        ErrorCode::MessageTooBig,
        ErrorCode::BinaryNotSupported,
        ErrorCode::TooManyErrors,
        ErrorCode::Unavailable,
        ErrorCode::Unauthorized,
        ErrorCode::PermissionDenied,
        ErrorCode::ChannelFull,
        ErrorCode::RateLimited,
    ];

    /// The stable string sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::MissingType => "missing_type",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::InvalidChannel => "invalid_channel",
            ErrorCode::TooManyChannels => "too_many_channels",
            ErrorCode::MessageTooBig => "message_too_big",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::TooManyErrors => "too_many_errors",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::ChannelFull => "channel_full",
            ErrorCode::RateLimited => "rate_limited",
        }
    }
}

/// WebSocket close codes the hub sends. 1000–1009 are RFC 6455's; 4000–4999 are hubbub's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: the client asked to close (the hub echoes the client's own code and reason).
    Normal,
    /// 1001: the hub is shutting down; reconnect (to another node) after a short delay.
    GoingAway,
    /// 1002: the peer broke RFC 6455 framing (unmasked frame, bad opcode, bad control frame).
    ProtocolError,
    /// 1007: a text frame was not valid UTF-8.
    InvalidPayload,
    /// 1008: policy: too many bad frames (`too_many_errors`), or a peer that answered nothing
    /// within the read timeout.
    Policy,
    /// 1009: a frame larger than `websocket.max_message_bytes`.
    TooBig,
    /// 4008: slow consumer: the connection's outbound queue overflowed, or a write did not finish
    /// within the write timeout. Reconnect; events published meanwhile are missed unless the
    /// channel keeps history (a later feature).
    SlowConsumer,
    /// 4001: no valid token: none arrived within `auth.token_timeout` where one is required, the
    /// one sent was refused, or it expired and no fresh one came. Reconnect with a new token.
    Unauthorized,
    /// 4029: the client kept sending frames over its rate limit after being told.
    RateLimited,
}

impl CloseCode {
    /// Every code, in the order of the documentation table.
    pub const ALL: [CloseCode; 9] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::Policy,
        CloseCode::TooBig,
        CloseCode::SlowConsumer,
        CloseCode::Unauthorized,
        CloseCode::RateLimited,
    ];

    /// The numeric code.
    pub fn as_u16(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidPayload => 1007,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::SlowConsumer => 4008,
            CloseCode::Unauthorized => 4001,
            CloseCode::RateLimited => 4029,
        }
    }

    /// The short reason sent in the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal closure",
            CloseCode::GoingAway => "server shutting down",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::InvalidPayload => "invalid utf-8",
            CloseCode::Policy => "policy violation",
            CloseCode::TooBig => "message too big",
            CloseCode::SlowConsumer => "slow consumer",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::RateLimited => "rate limited",
        }
    }

    /// Whether a well-behaved client should reconnect after this code.
    pub fn should_reconnect(self) -> bool {
        !matches!(self, CloseCode::ProtocolError | CloseCode::InvalidPayload | CloseCode::TooBig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/protocol.md lists every code in its tables; this keeps the two in step.
    #[test]
    fn every_code_is_documented() {
        let doc = include_str!("../../../docs/protocol.md");
        for code in ErrorCode::ALL {
            assert!(
                doc.contains(&format!("| `{}` |", code.as_str())),
                "{} missing from docs/protocol.md",
                code.as_str()
            );
        }
        for code in CloseCode::ALL {
            assert!(
                doc.contains(&format!("| `{}` |", code.as_u16())),
                "{} missing from docs/protocol.md",
                code.as_u16()
            );
        }
    }
}
