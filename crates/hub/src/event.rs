//! A published event, checked once and shared by every channel and subscriber it goes to.

use std::time::Instant;

use hubbub_proto::event::{self, EventError, PresentKeys};
use serde_json::value::RawValue;

/// An event accepted for publishing: a JSON object, kept byte for byte as the publisher sent it.
#[derive(Debug)]
pub struct Event {
    raw: Box<RawValue>,
    present: PresentKeys,
    accepted_at: Instant,
}

impl Event {
    /// Accepts `raw` if it is a JSON object.
    pub fn new(raw: Box<RawValue>) -> Result<Event, EventError> {
        let present = event::inspect(&raw)?;
        Ok(Event { raw, present, accepted_at: Instant::now() })
    }

    /// Parses and accepts a JSON object given as text.
    pub fn from_json(text: &str) -> Result<Event, EventError> {
        let raw = RawValue::from_string(text.trim().to_owned()).map_err(|_| EventError::NotAnObject)?;
        Event::new(raw)
    }

    /// The event as the publisher sent it.
    pub fn raw(&self) -> &RawValue {
        &self.raw
    }

    /// When the hub accepted it; publish-to-write latency is measured from here.
    pub fn accepted_at(&self) -> Instant {
        self.accepted_at
    }

    /// The delivered JSON: the event plus the hub's keys it lacks.
    pub fn stamped(&self, channel: Option<&str>, offset: Option<u64>, now: &str) -> String {
        event::stamp(&self.raw, self.present, channel, offset, now)
    }
}
