//! The one delivery path: brokers hand every publication to [`Fanout`], which encodes it once (and,
//! while any connection negotiated permessage-deflate, compresses it once) and queues the same
//! bytes to every local subscriber.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use hubbub_proto::{deflate, frame, time};

use crate::config::DeflateConfig;
use crate::event::Event;
use crate::outbox::{OutFrame, Prepared};
use crate::registry::{Fanned, Registry};
use crate::stats::{Counters, Stats};

/// The hub's delivery sink, handed to the broker when the hub is built.
#[derive(Debug, Clone)]
pub struct Fanout {
    registry: Arc<Registry>,
    stats: Arc<Stats>,
    deflate: DeflateConfig,
}

impl Fanout {
    pub(crate) fn new(registry: Arc<Registry>, stats: Arc<Stats>, deflate: DeflateConfig) -> Fanout {
        Fanout { registry, stats, deflate }
    }

    /// The plain frame and, with `compress` and when compressing pays off, its compressed twin.
    /// Runs before the registry lock is taken, so compressing a large publication never holds up
    /// subscribes.
    fn prepare(&self, frame: Bytes, published_at: Instant, compress: bool) -> Prepared {
        let deflated =
            if compress { deflate::server_frame(&frame, self.deflate.level, self.deflate.min_bytes) } else { None };
        if let Some(d) = &deflated {
            let c = &self.stats.counters;
            Counters::add(&c.deflated_publications, 1);
            Counters::add(&c.deflate_bytes_in, frame.len() as u64);
            Counters::add(&c.deflate_bytes_out, d.len() as u64);
        }
        Prepared {
            plain: OutFrame { bytes: frame, published_at },
            deflated: deflated.map(|bytes| OutFrame { bytes, published_at }),
        }
    }

    /// Delivers the publication at `offset` on `channel`, already encoded as one WebSocket frame,
    /// to its local subscribers; returns how many it was queued to. Brokers call this in offset
    /// order per channel (see the broker contract).
    pub fn deliver_frame(&self, channel: &str, offset: u64, frame: Bytes, published_at: Instant) -> u64 {
        // A channel with history is delivered here even without local subscribers: no compressing
        // for nobody. (The subscriber count takes the registry lock, so only when it can matter.)
        let compress = self.registry.wants_deflate() && self.registry.subscriber_count(channel) > 0;
        let fanned = self.registry.fan_out(channel, offset, &self.prepare(frame, published_at, compress));
        self.count(fanned)
    }

    /// Delivers `event` to every local connection, subscribed or not.
    pub fn deliver_to_all(&self, event: &Event) -> u64 {
        let json = event.stamped(None, None, &time::now_iso());
        let out = self.prepare(frame::server_text(json.as_bytes()), event.accepted_at(), self.registry.wants_deflate());
        let fanned = self.registry.fan_out_all(&out);
        self.count(fanned)
    }

    /// Delivers an already-encoded frame to every local connection (a broadcast that came from
    /// another node).
    pub fn deliver_raw_to_all(&self, frame: Bytes) -> u64 {
        let fanned = self.registry.fan_out_all(&self.prepare(frame, Instant::now(), self.registry.wants_deflate()));
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
