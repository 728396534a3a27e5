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
//! | `{"type":"subscribe","channels":["x"],"since":{"x":{"offset":41,"epoch":"…"}}}` | subscribe and recover what followed offset 41 |
//! | `{"type":"subscribe","channels":["x"],"ack":true}` | acknowledged delivery: resume after this client's last `ack` |
//! | `{"type":"ack","channel":"x","offset":42}` | acknowledge everything up to 42 (cumulative) |
//! | `{"type":"auth","token":"eyJ…"}` | authenticate, or refresh the token before it expires |
//! | `{"type":"publish","channel":"x","event":{…}}` | publish, where the channel's rule allows clients to |
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

/// A position a client last saw on a channel.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Since {
    /// The last offset received.
    pub offset: u64,
    /// The epoch it counted in.
    pub epoch: String,
}

/// A subscribe request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscribe {
    /// The channels.
    pub channels: Vec<String>,
    /// Per channel, where to recover from.
    pub since: Vec<(String, Since)>,
    /// Acknowledged delivery.
    pub ack: bool,
}

/// What the client asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Start receiving these channels' events.
    Subscribe(Subscribe),
    /// Stop receiving these channels' events.
    Unsubscribe(Vec<String>),
    /// Application-level ping; answered with `pong`.
    Ping,
    /// Authenticate (or refresh) with a JWT.
    Auth {
        /// The compact JWT.
        token: String,
    },
    /// Publish `event` (a JSON object) into `channel`.
    Publish {
        /// The channel.
        channel: String,
        /// The event: a JSON object's text, as sent.
        event: String,
    },
    /// Acknowledge every publication up to `offset` on `channel`.
    Ack {
        /// The channel.
        channel: String,
        /// The last offset processed.
        offset: u64,
    },
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
pub const KNOWN_TYPES: &[&str] =
    &["subscribe", "unsubscribe", "subscribe_room", "unsubscribe_room", "ping", "ack", "auth", "publish"];

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
    #[serde(default, borrow)]
    since: Option<&'a RawValue>,
    #[serde(default, borrow)]
    ack: Option<&'a RawValue>,
    #[serde(default, borrow)]
    channel: Option<&'a RawValue>,
    #[serde(default, borrow)]
    offset: Option<&'a RawValue>,
    #[serde(default, borrow)]
    token: Option<&'a RawValue>,
    #[serde(default, borrow)]
    event: Option<&'a RawValue>,
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
            if kind == "unsubscribe" {
                Request::Unsubscribe(channels)
            } else {
                let since = match env.since {
                    None => Vec::new(),
                    Some(raw) => match serde_json::from_str::<std::collections::BTreeMap<String, Since>>(raw.get()) {
                        Ok(m) => m.into_iter().collect(),
                        Err(_) => {
                            return Err(err(
                                ErrorCode::InvalidMessage,
                                "\"since\" must map channels to positions, e.g. {\"x\":{\"offset\":41,\"epoch\":\"a1b2\"}}".into(),
                                id,
                            ));
                        }
                    },
                };
                let ack = match env.ack.map(|a| serde_json::from_str::<bool>(a.get())) {
                    None => false,
                    Some(Ok(b)) => b,
                    Some(Err(_)) => {
                        return Err(err(ErrorCode::InvalidMessage, "\"ack\" must be true or false".into(), id));
                    }
                };
                Request::Subscribe(Subscribe { channels, since, ack })
            }
        }
        "ack" => {
            let channel = env.channel.and_then(|c| serde_json::from_str::<String>(c.get()).ok());
            let offset = env.offset.and_then(|o| serde_json::from_str::<u64>(o.get()).ok());
            match (channel, offset) {
                (Some(channel), Some(offset)) => Request::Ack { channel, offset },
                _ => {
                    return Err(err(
                        ErrorCode::InvalidMessage,
                        "ack needs \"channel\" (a string) and \"offset\" (a whole number), e.g. {\"type\":\"ack\",\"channel\":\"x\",\"offset\":42}".into(),
                        id,
                    ));
                }
            }
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
            if kind == "subscribe_room" {
                Request::Subscribe(Subscribe { channels: vec![room], ..Subscribe::default() })
            } else {
                Request::Unsubscribe(vec![room])
            }
        }
        "ping" => Request::Ping,
        "auth" => match env.token.and_then(|t| serde_json::from_str::<String>(t.get()).ok()) {
            Some(token) if !token.is_empty() => Request::Auth { token },
            _ => {
                return Err(err(
                    ErrorCode::InvalidMessage,
                    "auth needs \"token\": a JWT string, e.g. {\"type\":\"auth\",\"token\":\"eyJ…\"}".into(),
                    id,
                ));
            }
        },
        "publish" => {
            let channel = env.channel.and_then(|c| serde_json::from_str::<String>(c.get()).ok());
            match (channel, env.event) {
                (Some(channel), Some(event)) if event.get().starts_with('{') => {
                    Request::Publish { channel, event: event.get().to_owned() }
                }
                _ => {
                    return Err(err(
                        ErrorCode::InvalidMessage,
                        "publish needs \"channel\" (a string) and \"event\" (a JSON object), e.g. {\"type\":\"publish\",\"channel\":\"chat\",\"event\":{\"text\":\"hi\"}}".into(),
                        id,
                    ));
                }
            }
        }
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
        let ab = || Request::Subscribe(Subscribe { channels: vec!["a".into(), "b".into()], ..Subscribe::default() });
        assert_eq!(req(r#"{"type":"subscribe","channels":["a","b"]}"#), ab());
        assert_eq!(req(r#"{"type":"subscribe","data":{"streams":["a","b"]}}"#), ab());
        assert_eq!(req(r#"{"type":"subscribe","data":{"channels":["a","b"]}}"#), ab());
        let room = Request::Subscribe(Subscribe { channels: vec!["room:1".into()], ..Subscribe::default() });
        assert_eq!(req(r#"{"type":"subscribe_room","data":{"room_id":1}}"#), room);
        assert_eq!(
            req(r#"{"type":"unsubscribe_room","data":{"room_id":"x"}}"#),
            Request::Unsubscribe(vec!["room:x".into()])
        );
        assert_eq!(req(r#"{"type":"ping","data":{}}"#), Request::Ping);
    }

    #[test]
    fn recovery_and_ack_forms() {
        let r = req(r#"{"type":"subscribe","channels":["x"],"since":{"x":{"offset":41,"epoch":"e1"}},"ack":false}"#);
        let Request::Subscribe(s) = r else { panic!() };
        assert_eq!(s.since, vec![("x".to_string(), Since { offset: 41, epoch: "e1".into() })]);
        assert!(!s.ack);
        let Request::Subscribe(s) = req(r#"{"type":"subscribe","channels":["x"],"ack":true}"#) else { panic!() };
        assert!(s.ack);
        assert_eq!(
            req(r#"{"type":"ack","channel":"x","offset":42}"#),
            Request::Ack { channel: "x".into(), offset: 42 }
        );
        let code = |t: &str| parse(t).unwrap_err().code;
        assert_eq!(code(r#"{"type":"subscribe","channels":["x"],"since":{"x":5}}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":"subscribe","channels":["x"],"ack":"yes"}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":"ack","channel":"x"}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":"ack","channel":"x","offset":-1}"#), ErrorCode::InvalidMessage);
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
        assert_eq!(code(r#"{"type":"auth"}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":"auth","token":""}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":"auth","token":7}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":"publish","channel":"a"}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":"publish","channel":"a","event":[1]}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":"publish","event":{}}"#), ErrorCode::InvalidMessage);
    }

    #[test]
    fn auth_and_publish_forms() {
        assert_eq!(req(r#"{"type":"auth","token":"a.b.c"}"#), Request::Auth { token: "a.b.c".into() });
        match req(r#"{"type":"publish","channel":"chat","event": {"text":"hi"}}"#) {
            Request::Publish { channel, event } => {
                assert_eq!(channel, "chat");
                assert_eq!(event, r#"{"text":"hi"}"#);
            }
            other => panic!("{other:?}"),
        }
    }

    proptest::proptest! {
        // The fuzz target (fuzz/fuzz_targets/client_frame.rs) in miniature, in every test run:
        // any text gets a frame or an error, never a panic.
        #[test]
        fn any_text_parses_or_is_refused(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn any_frame_shape_parses_or_is_refused(
            kind in proptest::sample::select(vec!["subscribe", "unsubscribe", "subscribe_room", "ping", "ack", "auth", "publish", "x"]),
            key in proptest::sample::select(vec!["channels", "channel", "data", "since", "ack", "offset", "token", "event", "id"]),
            value in proptest::sample::select(vec!["null", "1", "-1", "1e400", "\"\"", "\"a\"", "[]", "[1]", "[\"a\"]", "{}", "{\"a\":{\"offset\":1}}", "true"]),
        ) {
            let text = format!("{{\"type\":\"{kind}\",\"{key}\":{value}}}");
            match parse(&text) {
                Ok(_) => {}
                Err(e) => proptest::prop_assert!(!e.message.is_empty()),
            }
        }
    }
}
