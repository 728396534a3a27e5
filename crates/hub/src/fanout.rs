//! The one delivery path: brokers hand every publication to [`Fanout`], which encodes it once and
//! queues the same bytes to every local subscriber.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use hubbub_proto::{frame, time};

use crate::event::Event;
use crate::outbox::OutFrame;
use crate::registry::{Fanned, Registry};
use crate::stats::{Counters, Stats};

/// The hub's delivery sink, handed to the broker when the hub is built.
#[derive(Debug, Clone)]
pub struct Fanout {
    registry: Arc<Registry>,
    stats: Arc<Stats>,
}

impl Fanout {
    pub(crate) fn new(registry: Arc<Registry>, stats: Arc<Stats>) -> Fanout {
        Fanout { registry, stats }
    }

    /// Delivers the publication at `offset` on `channel`, already encoded as one WebSocket frame,
    /// to its local subscribers; returns how many it was queued to. Brokers call this in offset
    /// order per channel (see the broker contract).
    pub fn deliver_frame(&self, channel: &str, offset: u64, frame: Bytes, published_at: Instant) -> u64 {
        let out = OutFrame { bytes: frame, published_at };
        let fanned = self.registry.fan_out(channel, offset, &out);
        self.count(fanned)
    }

    /// Delivers `event` to every local connection, subscribed or not.
    pub fn deliver_to_all(&self, event: &Event) -> u64 {
        let json = event.stamped(None, None, &time::now_iso());
        let out = OutFrame { bytes: frame::server_text(json.as_bytes()), published_at: event.accepted_at() };
        let fanned = self.registry.fan_out_all(&out);
        self.count(fanned)
    }

    /// Delivers an already-encoded frame to every local connection (a broadcast that came from
    /// another node).
    pub fn deliver_raw_to_all(&self, frame: Bytes) -> u64 {
        let out = OutFrame { bytes: frame, published_at: Instant::now() };
        let fanned = self.registry.fan_out_all(&out);
        self.count(fanned)
    }

    /// Tells the registry that `channel` is now in `epoch` (a broker whose backend restarted a
    /// stream); the channel's position is reset to `offset` in it. No-op when the epoch is known.
    pub fn note_epoch(&self, channel: &str, epoch: &str, offset: u64) {
        self.registry.note_epoch(channel, epoch, offset);
    }

    /// Channels with local subscribers (a broker re-subscribes to these after a reconnect).
    pub fn channels(&self) -> Vec<String> {
        self.registry.channels().into_iter().map(|c| c.name).collect()
    }

    /// The channel's position as this node last delivered it, if it has local subscribers.
    pub fn position(&self, channel: &str) -> Option<crate::registry::StreamPosition> {
        self.registry.position(channel)
    }

    /// Local subscribers of `channel`.
    pub fn subscriber_count(&self, channel: &str) -> usize {
        self.registry.subscriber_count(channel)
    }

    /// Local connections.
    pub fn connection_count(&self) -> usize {
        self.registry.connection_count()
    }

    fn count(&self, f: Fanned) -> u64 {
        let c = &self.stats.counters;
        Counters::add(&c.deliveries, f.queued);
        if f.overflowed > 0 {
            Counters::add(&c.slow_consumer_disconnects, f.overflowed);
        }
        if f.dropped > 0 {
            Counters::add(&c.dropped_frames, f.dropped);
        }
        f.queued
    }
}
