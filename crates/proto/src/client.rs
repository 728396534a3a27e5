//! What a client may send. One parser accepts every form the seed applications use, so their
//! front-ends work unchanged:
//!
//! | form | meaning |
//! |---|---|
//! | `{"type":"subscribe","channels":["a","b"]}` | subscribe (seed 000) |
//! | `{"type":"subscribe","data":{"streams":["state"]}}` | subscribe (seed 001) |
//! | `{"type":"subscribe_room","data":{"room_id":1}}` | subscribe to `room:1` (seed 004) |
//! | `unsubscribe`, `unsubscribe_room` | the same shapes, reversed |
//! | `{"type":"ping","data":{}}` | answered by `pong` |
//!
//! An optional `"id"` (any JSON value) on any frame is echoed in its reply.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::codes::ErrorCode;

/// A parsed client frame.
#[derive(Debug)]
pub struct ClientFrame {
    /// The client's correlation id, echoed verbatim in the reply.
    pub id: Option<Box<RawValue>>,
    /// What the client asked for.
    pub request: Request,
}

/// What the client asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Start receiving these channels' events.
    Subscribe(Vec<String>),
    /// Stop receiving these channels' events.
    Unsubscribe(Vec<String>),
    /// Application-level ping; answered with `pong`.
    Ping,
}

/// A refused client frame: the code plus a sentence saying what to send instead.
#[derive(Debug, Clone)]
pub struct ParseError {
    /// The stable code.
    pub code: ErrorCode,
    /// What was wrong and what to send instead.
    pub message: String,
    /// The frame's `id`, when it could be read, so the error can be correlated.
    pub id: Option<Box<RawValue>>,
}

/// The `type` values the hub understands, listed in `unknown_type` errors.
pub const KNOWN_TYPES: &[&str] = &["subscribe", "unsubscribe", "subscribe_room", "unsubscribe_room", "ping"];

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<&'a RawValue>,
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    channels: Option<&'a RawValue>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct Data<'a> {
    #[serde(default, borrow)]
    streams: Option<&'a RawValue>,
    #[serde(default, borrow)]
    channels: Option<&'a RawValue>,
    #[serde(default, borrow)]
    room_id: Option<&'a RawValue>,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<ClientFrame, ParseError> {
    let err = |code, message: String, id: Option<Box<RawValue>>| ParseError { code, message, id };
    if !text.trim_start().starts_with('{') {
        return Err(err(
            ErrorCode::MalformedJson,
            "frame is not a JSON object; send e.g. {\"type\":\"subscribe\",\"channels\":[\"news\"]}".into(),
            None,
        ));
    }
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
        err(
            ErrorCode::MalformedJson,
            format!("frame is not valid JSON ({e}); send one JSON object per text frame"),
            None,
        )
    })?;
    let id = env.id.map(|r| r.to_owned());
    let Some(kind) = env.kind.and_then(|k| serde_json::from_str::<&str>(k.get()).ok()) else {
        return Err(err(
            ErrorCode::MissingType,
            "frame has no string \"type\"; send e.g. {\"type\":\"ping\"}".into(),
            id,
        ));
    };
    let data: Data<'_> = match env.data {
        Some(d) if d.get().starts_with('{') => serde_json::from_str(d.get()).unwrap_or_default(),
        _ => Data::default(),
    };
    let request = match kind {
        "subscribe" | "unsubscribe" => {
            let list = env.channels.or(data.channels).or(data.streams);
            let Some(list) = list else {
                return Err(err(
                    ErrorCode::InvalidMessage,
                    format!(
                        "{kind} needs \"channels\": a list of channel names, e.g. {{\"type\":\"{kind}\",\"channels\":[\"news\"]}}"
                    ),
                    id,
                ));
            };
            let Ok(channels) = serde_json::from_str::<Vec<String>>(list.get()) else {
                return Err(err(
                    ErrorCode::InvalidMessage,
                    format!("\"channels\" must be a list of strings, got {}", truncate(list.get())),
                    id,
                ));
            };
            if kind == "subscribe" { Request::Subscribe(channels) } else { Request::Unsubscribe(channels) }
        }
        "subscribe_room" | "unsubscribe_room" => {
            let room = data.room_id.and_then(|r| room_name(r.get()));
            let Some(room) = room else {
                return Err(err(
                    ErrorCode::InvalidMessage,
                    format!(
                        "{kind} needs data.room_id (a number or string), e.g. {{\"type\":\"{kind}\",\"data\":{{\"room_id\":1}}}}"
                    ),
                    id,
                ));
            };
            if kind == "subscribe_room" { Request::Subscribe(vec![room]) } else { Request::Unsubscribe(vec![room]) }
        }
        "ping" => Request::Ping,
        other => {
            return Err(err(
                ErrorCode::UnknownType,
                format!("unknown type \"{}\"; known types: {}", truncate(other), KNOWN_TYPES.join(", ")),
                id,
            ));
        }
    };
    Ok(ClientFrame { id, request })
}

/// `room_id` 1 or "1" becomes channel `room:1`.
fn room_name(raw: &str) -> Option<String> {
    if let Ok(n) = serde_json::from_str::<i64>(raw) {
        return Some(format!("room:{n}"));
    }
    match serde_json::from_str::<String>(raw) {
        Ok(s) if !s.is_empty() => Some(format!("room:{s}")),
        _ => None,
    }
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Request {
        parse(text).unwrap().request
    }

    #[test]
    fn every_subscribe_form() {
        let ab = || vec!["a".to_string(), "b".to_string()];
        assert_eq!(req(r#"{"type":"subscribe","channels":["a","b"]}"#), Request::Subscribe(ab()));
        assert_eq!(req(r#"{"type":"subscribe","data":{"streams":["a","b"]}}"#), Request::Subscribe(ab()));
        assert_eq!(req(r#"{"type":"subscribe","data":{"channels":["a","b"]}}"#), Request::Subscribe(ab()));
        assert_eq!(req(r#"{"type":"subscribe_room","data":{"room_id":1}}"#), Request::Subscribe(vec!["room:1".into()]));
        assert_eq!(
            req(r#"{"type":"unsubscribe_room","data":{"room_id":"x"}}"#),
            Request::Unsubscribe(vec!["room:x".into()])
        );
        assert_eq!(req(r#"{"type":"ping","data":{}}"#), Request::Ping);
    }

    #[test]
    fn id_is_kept_verbatim() {
        let f = parse(r#"{"type":"ping","id":{"n":7}}"#).unwrap();
        assert_eq!(f.id.unwrap().get(), r#"{"n":7}"#);
        let e = parse(r#"{"type":"nope","id":"abc"}"#).unwrap_err();
        assert_eq!(e.id.unwrap().get(), r#""abc""#);
    }

    #[test]
    fn errors_name_the_fix() {
        let code = |t: &str| parse(t).unwrap_err().code;
        assert_eq!(code("nope"), ErrorCode::MalformedJson);
        assert_eq!(code("{\"type\":"), ErrorCode::MalformedJson);
        assert_eq!(code("[1]"), ErrorCode::MalformedJson);
        assert_eq!(code("{}"), ErrorCode::MissingType);
        assert_eq!(code(r#"{"type":5}"#), ErrorCode::MissingType);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"subscribe"}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":"subscribe","channels":"a"}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":"subscribe_room","data":{}}"#), ErrorCode::InvalidMessage);
        assert!(parse(r#"{"type":"dance"}"#).unwrap_err().message.contains("subscribe, unsubscribe"));
    }
}
