//! The frames the hub sends of its own accord or in reply. Each function returns JSON text; the
//! caller frames it once (see [`crate::frame::server_text`]).

use serde::Serialize;
use serde_json::value::RawValue;

use crate::codes::ErrorCode;

/// The first frame after the upgrade. One shape serves every seed client: seed 002 reads
/// `type == "connection_ack"` and `client_id`, seed 004 reads `data.status` and `data.client_id`,
/// seed 000 logs `type`/`event_type`.
#[derive(Serialize)]
pub struct Welcome<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    event_type: &'static str,
    client_id: &'a str,
    message: &'a str,
    capabilities: &'a [String],
    heartbeat_interval: u64,
    data: WelcomeData<'a>,
    timestamp: &'a str,
}

#[derive(Serialize)]
struct WelcomeData<'a> {
    status: &'static str,
    client_id: &'a str,
}

/// Builds the welcome frame's JSON.
pub fn welcome(
    client_id: &str,
    message: &str,
    capabilities: &[String],
    heartbeat_interval_secs: u64,
    now: &str,
) -> String {
    to_json(&Welcome {
        kind: "connection_ack",
        event_type: "connection_established",
        client_id,
        message,
        capabilities,
        heartbeat_interval: heartbeat_interval_secs,
        data: WelcomeData { status: "connected", client_id },
        timestamp: now,
    })
}

/// One channel's position in a `subscribed` reply.
#[derive(Serialize, Debug, Clone)]
pub struct ChannelPosition {
    /// The channel.
    pub channel: String,
    /// The last offset published on it, 0 when none yet.
    pub offset: u64,
    /// The channel's epoch: when it changes, offsets started again and history was lost.
    pub epoch: String,
    /// With recovery: whether every missed publication follows this reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// With recovery: how many publications the replay holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed: Option<usize>,
    /// Without recovery: why (`too_old`, `too_far_behind`, `epoch_changed`, `offset_ahead`,
    /// `no_history`, `unavailable`); the client should reload its state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Subscription<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    channels: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    positions: &'a [ChannelPosition],
    timestamp: &'a str,
}

/// `{"type":"subscribed","channels":[…],"positions":[…]}`.
pub fn subscribed(id: Option<&RawValue>, channels: &[String], positions: &[ChannelPosition], now: &str) -> String {
    to_json(&Subscription { kind: "subscribed", id, channels, positions, timestamp: now })
}

/// `{"type":"unsubscribed","channels":[…]}`.
pub fn unsubscribed(id: Option<&RawValue>, channels: &[String], now: &str) -> String {
    to_json(&Subscription { kind: "unsubscribed", id, channels, positions: &[], timestamp: now })
}

#[derive(Serialize)]
struct Stamped<'a, D> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    data: D,
    timestamp: &'a str,
}

#[derive(Serialize)]
struct PongData<'a> {
    timestamp: &'a str,
}

/// `{"type":"pong","data":{"timestamp":…},"timestamp":…}` (seed 004's shape).
pub fn pong(id: Option<&RawValue>, now: &str) -> String {
    to_json(&Stamped { kind: "pong", id, data: PongData { timestamp: now }, timestamp: now })
}

#[derive(Serialize)]
struct HeartbeatData<'a> {
    timestamp: &'a str,
    clients: usize,
}

/// `{"type":"heartbeat","data":{"timestamp":…,"clients":N},"timestamp":…}` (seeds 002 and 004).
pub fn heartbeat(clients: usize, now: &str) -> String {
    to_json(&Stamped { kind: "heartbeat", id: None, data: HeartbeatData { timestamp: now, clients }, timestamp: now })
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    code: &'static str,
    message: &'a str,
    timestamp: &'a str,
}

/// `{"type":"error","code":…,"message":…,"timestamp":…}`; seed 002 reads `message`.
pub fn error(id: Option<&RawValue>, code: ErrorCode, message: &str, now: &str) -> String {
    to_json(&ErrorFrame { kind: "error", id, code: code.as_str(), message, timestamp: now })
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serializing these plain structs cannot fail: no maps with non-string keys, no foreign types.
    serde_json::to_string(value).unwrap_or_else(|_| String::from("{}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn welcome_has_every_seed_field() {
        let caps = vec!["subscribe".to_string()];
        let v: Value = serde_json::from_str(&welcome("c1", "hi", &caps, 30, "T")).unwrap();
        assert_eq!(v["type"], "connection_ack");
        assert_eq!(v["event_type"], "connection_established");
        assert_eq!(v["client_id"], "c1");
        assert_eq!(v["data"]["client_id"], "c1");
        assert_eq!(v["data"]["status"], "connected");
        assert_eq!(v["heartbeat_interval"], 30);
        assert_eq!(v["timestamp"], "T");
    }

    #[test]
    fn replies_echo_id() {
        let id = RawValue::from_string("42".into()).unwrap();
        let v: Value = serde_json::from_str(&pong(Some(&id), "T")).unwrap();
        assert_eq!(v["id"], 42);
        assert_eq!(v["data"]["timestamp"], "T");
        let v: Value = serde_json::from_str(&error(None, ErrorCode::UnknownType, "m", "T")).unwrap();
        assert_eq!(v["code"], "unknown_type");
        assert!(v.get("id").is_none());
    }
}

#[derive(Serialize)]
struct Authenticated<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    user: Option<&'a str>,
    expires_at: Option<u64>,
    timestamp: &'a str,
}

/// `{"type":"authenticated","user":…,"expires_at":…}`: the token was accepted; `expires_at` is
/// its `exp` (Unix seconds), or null when it has none.
pub fn authenticated(id: Option<&RawValue>, user: Option<&str>, expires_at: Option<u64>, now: &str) -> String {
    to_json(&Authenticated { kind: "authenticated", id, user, expires_at, timestamp: now })
}

#[derive(Serialize)]
struct Published<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    channel: &'a str,
    offset: Option<u64>,
    delivered: u64,
    timestamp: &'a str,
}

/// `{"type":"published","channel":…,"offset":…,"delivered":…}`: a client publish went out;
/// `offset` is null when the channel had neither subscribers nor history.
pub fn published(id: Option<&RawValue>, channel: &str, offset: Option<u64>, delivered: u64, now: &str) -> String {
    to_json(&Published { kind: "published", id, channel, offset, delivered, timestamp: now })
}

#[derive(Serialize)]
struct TokenExpiring {
    #[serde(rename = "type")]
    kind: &'static str,
    expires_at: u64,
    seconds_left: u64,
}

/// `{"type":"token_expiring","expires_at":…,"seconds_left":…}`: send a fresh `auth` frame before
/// `expires_at` (Unix seconds) or the connection closes with 4001.
pub fn token_expiring(expires_at: u64, seconds_left: u64) -> String {
    to_json(&TokenExpiring { kind: "token_expiring", expires_at, seconds_left })
}
