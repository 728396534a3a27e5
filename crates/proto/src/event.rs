//! How a published event becomes the frame subscribers receive.
//!
//! The event object is delivered **as published**: the seeds' front-ends read `type`, `event_type`,
//! `data`, `sensor_id`, `hand_id` … at the top level. The hub appends `channel`, `offset` and
//! `timestamp` only where the publisher did not set them, and never rewrites the publisher's bytes:
//! the object's closing brace is replaced by the added keys. This runs once per publish.

use serde::Deserialize;
use serde_json::value::RawValue;

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The event is not a JSON object.
    #[error("event must be a JSON object, e.g. {{\"type\":\"sensor_event\",\"data\":{{}}}}")]
    NotAnObject,
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(default, borrow)]
    channel: Option<&'a RawValue>,
    #[serde(default, borrow)]
    offset: Option<&'a RawValue>,
    #[serde(default, borrow)]
    timestamp: Option<&'a RawValue>,
}

/// Which of the hub's keys the publisher already set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresentKeys {
    channel: bool,
    offset: bool,
    timestamp: bool,
}

/// Checks that `event` is a JSON object and notes which hub keys it already has.
pub fn inspect(event: &RawValue) -> Result<PresentKeys, EventError> {
    let text = event.get();
    if !text.starts_with('{') {
        return Err(EventError::NotAnObject);
    }
    let probe: Probe<'_> = serde_json::from_str(text).map_err(|_| EventError::NotAnObject)?;
    Ok(PresentKeys {
        channel: probe.channel.is_some(),
        offset: probe.offset.is_some(),
        timestamp: probe.timestamp.is_some(),
    })
}

/// Builds the delivered JSON: `event` plus whichever of `channel`, `offset`, `timestamp` it lacks.
/// `event` must have passed [`inspect`], which produced `present`.
pub fn stamp(event: &RawValue, present: PresentKeys, channel: Option<&str>, offset: Option<u64>, now: &str) -> String {
    let text = event.get();
    let body = text[..text.len() - 1].trim_end();
    let mut out = String::with_capacity(text.len() + 96);
    out.push_str(body);
    let mut first = body.len() == 1; // just "{"
    let mut add = |out: &mut String, key: &str, value: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
        out.push_str(value);
    };
    if let (Some(ch), false) = (channel, present.channel) {
        // Channel names are validated to a JSON-safe character set before they get here, but
        // serializing keeps this function correct on its own.
        add(&mut out, "channel", &serde_json::to_string(ch).unwrap_or_default());
    }
    if let (Some(off), false) = (offset, present.offset) {
        add(&mut out, "offset", &off.to_string());
    }
    if !present.timestamp {
        add(&mut out, "timestamp", &format!("\"{now}\""));
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn run(event: &str) -> Value {
        let raw = RawValue::from_string(event.to_string()).unwrap();
        let present = inspect(&raw).unwrap();
        serde_json::from_str(&stamp(&raw, present, Some("c"), Some(7), "T")).unwrap()
    }

    #[test]
    fn adds_missing_keys_only() {
        let v = run(r#"{"type":"sensor_event","sensor_id":"BT50_01","data":{"m":1}}"#);
        assert_eq!(v["type"], "sensor_event");
        assert_eq!(v["sensor_id"], "BT50_01");
        assert_eq!(v["channel"], "c");
        assert_eq!(v["offset"], 7);
        assert_eq!(v["timestamp"], "T");
        let v = run(r#"{"timestamp":"mine","channel":"theirs","offset":"x"}"#);
        assert_eq!(v["timestamp"], "mine");
        assert_eq!(v["channel"], "theirs");
        assert_eq!(v["offset"], "x");
    }

    #[test]
    fn empty_and_spaced_objects() {
        assert_eq!(run("{}")["offset"], 7);
        assert_eq!(run("{ \"a\" : 1 \n}")["a"], 1);
    }

    #[test]
    fn refuses_non_objects() {
        for bad in ["[1]", "1", "\"s\"", "null"] {
            let raw = RawValue::from_string(bad.to_string()).unwrap();
            assert_eq!(inspect(&raw), Err(EventError::NotAnObject));
        }
    }
}
