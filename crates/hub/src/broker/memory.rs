//! The in-process broker: the default, needing nothing outside the binary.
//!
//! Each channel that has local subscribers or history has a `Stream`: its epoch, last offset and
//! (if a `[[channels]]` rule matches) its [`HistoryBuffer`]. A publish takes that stream's lock,
//! assigns the next offset, stores the publication in history (and the journal, if any) and fans
//! out before releasing it, which is what keeps per-channel order and "history before delivery".
//! The lock is per channel: publishes to different channels do not wait for each other.
//!
//! With a [`Journal`], history, epochs and ack cursors are loaded at start and written as they
//! change, so they survive a restart (see `hubbub-store`). Without one, a restart starts every
//! channel in a new epoch, which tells clients their positions no longer hold.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use hubbub_proto::{frame, time};

use super::{BoxFuture, Broker, BrokerError, HistoryPage, HistoryQuery, Receipt};
use crate::config::HubConfig;
use crate::event::Event;
use crate::fanout::Fanout;
use crate::history::HistoryBuffer;
use crate::journal::{Journal, JournalError};
use crate::registry::StreamPosition;

#[derive(Debug)]
struct Stream {
    epoch: String,
    offset: u64,
    history: Option<HistoryBuffer>,
    subscribed: bool,
    /// Removed from the map. A publish that fetched this stream before its removal must not use
    /// it: a new incarnation (new epoch) may already be serving the channel.
    dead: bool,
}

impl Stream {
    fn position(&self) -> StreamPosition {
        StreamPosition { offset: self.offset, epoch: self.epoch.clone() }
    }
}

type Cursors = HashMap<(String, String), StreamPosition>;

/// The in-memory broker.
pub struct MemoryBroker {
    fanout: Fanout,
    config: HubConfig,
    streams: Mutex<HashMap<String, Arc<Mutex<Stream>>>>,
    cursors: Mutex<Cursors>,
    journal: Option<Arc<dyn Journal>>,
    /// Set when the last background sync failed; health then reports `degraded`.
    store_failed: std::sync::atomic::AtomicBool,
}

/// A fresh epoch: unique per process run and per channel incarnation.
pub fn new_epoch() -> String {
    let id = uuid::Uuid::new_v4();
    id.simple().to_string()[..12].to_string()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below leaves its data consistent before anything can panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn store_err(e: JournalError) -> BrokerError {
    BrokerError(e.to_string())
}

impl MemoryBroker {
    /// A broker delivering through `fanout`, keeping history per `config.channels`, in memory.
    pub fn new(fanout: Fanout, config: HubConfig) -> MemoryBroker {
        MemoryBroker {
            fanout,
            config,
            streams: Mutex::new(HashMap::new()),
            cursors: Mutex::new(HashMap::new()),
            journal: None,
            store_failed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A broker whose history, epochs and cursors live in `journal`, loaded now.
    pub fn with_journal(
        fanout: Fanout,
        config: HubConfig,
        journal: Arc<dyn Journal>,
    ) -> Result<MemoryBroker, JournalError> {
        let restored = journal.load()?;
        let mut broker = MemoryBroker::new(fanout, config);
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut streams = HashMap::new();
        for s in restored.streams {
            let history = broker.config.history_rule(&s.channel).map(|rule| {
                let mut h = HistoryBuffer::new(rule.history_size, rule.history_ttl).starting_after(0);
                for e in &s.entries {
                    let age = wall.duration_since(e.stored_at).unwrap_or_default();
                    let stored_at = now.checked_sub(age).unwrap_or(now);
                    h.restore(e.offset, frame::server_text(&e.payload), stored_at);
                }
                h.starting_after(s.last_offset)
            });
            let stream = Stream { epoch: s.epoch, offset: s.last_offset, history, subscribed: false, dead: false };
            streams.insert(s.channel, Arc::new(Mutex::new(stream)));
        }
        broker.streams = Mutex::new(streams);
        let cursors = restored
            .cursors
            .into_iter()
            .map(|c| ((c.identity, c.channel), StreamPosition { offset: c.offset, epoch: c.epoch }))
            .collect();
        broker.cursors = Mutex::new(cursors);
        broker.journal = Some(journal);
        Ok(broker)
    }

    /// The channel's stream, created (new epoch) if it has history or `for_subscriber`.
    fn stream_or_create(&self, channel: &str, for_subscriber: bool) -> Option<Arc<Mutex<Stream>>> {
        let mut map = lock(&self.streams);
        if let Some(s) = map.get(channel) {
            return Some(s.clone());
        }
        let history = self.config.history_rule(channel).map(|r| HistoryBuffer::new(r.history_size, r.history_ttl));
        if history.is_none() && !for_subscriber {
            return None;
        }
        let s = Arc::new(Mutex::new(Stream { epoch: new_epoch(), offset: 0, history, subscribed: false, dead: false }));
        map.insert(channel.to_owned(), s.clone());
        Some(s)
    }

    /// The current stream for `channel` (see `Stream::dead`: one removed concurrently is skipped).
    fn live(&self, channel: &str, for_subscriber: bool) -> Option<Arc<Mutex<Stream>>> {
        loop {
            let stream = self.stream_or_create(channel, for_subscriber)?;
            if !lock(&stream).dead {
                return Some(stream);
            }
        }
    }

    fn publish_now(&self, channel: &str, event: &Event) -> Result<Receipt, BrokerError> {
        loop {
            let Some(stream) = self.live(channel, false) else {
                return Ok(Receipt { offset: None, epoch: None, delivered: 0, stored: false });
            };
            let mut s = lock(&stream);
            if s.dead {
                // Removed (swept, or its last subscriber left) between the look-up and the lock:
                // look again; a history channel gets a new stream, a plain one is simply gone.
                continue;
            }
            return self.publish_locked(channel, event, &mut s);
        }
    }

    fn publish_locked(&self, channel: &str, event: &Event, s: &mut Stream) -> Result<Receipt, BrokerError> {
        let offset = s.offset + 1;
        let json = event.stamped(Some(channel), Some(offset), &time::now_iso());
        let bytes = frame::server_text(json.as_bytes());
        let stored = s.history.is_some();
        if stored {
            if let Some(j) = &self.journal {
                j.append(channel, &s.epoch, offset, json.as_bytes(), SystemTime::now()).map_err(store_err)?;
            }
            let now = Instant::now();
            if let Some(h) = s.history.as_mut() {
                let before = h.first_offset();
                h.push(offset, bytes.clone(), now);
                if let (Some(j), Some(b), Some(a)) = (&self.journal, before, h.first_offset())
                    && a > b
                {
                    j.trim(channel, a - 1).map_err(store_err)?;
                }
            }
        }
        s.offset = offset;
        let delivered = self.fanout.deliver_frame(channel, offset, bytes, event.accepted_at());
        Ok(Receipt { offset: Some(offset), epoch: Some(s.epoch.clone()), delivered, stored })
    }

    /// Drops idle streams whose history is empty (their next publish starts a new epoch).
    fn sweep(&self) {
        let now = Instant::now();
        let mut map = lock(&self.streams);
        map.retain(|channel, stream| {
            let mut s = lock(stream);
            if s.subscribed {
                return true;
            }
            let keep = match s.history.as_mut() {
                Some(h) => {
                    h.expire(now);
                    !h.is_empty()
                }
                None => false,
            };
            if !keep {
                s.dead = true;
                if let Some(j) = &self.journal
                    && let Err(e) = j.remove_stream(channel)
                {
                    tracing::warn!(channel, error = %e, "could not remove an expired stream from the journal");
                }
            }
            keep
        });
    }
}

impl Broker for MemoryBroker {
    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<StreamPosition, BrokerError>> {
        let pos = loop {
            let Some(stream) = self.live(channel, true) else { unreachable!("created for a subscriber") };
            let mut s = lock(&stream);
            if s.dead {
                continue;
            }
            s.subscribed = true;
            break s.position();
        };
        Box::pin(std::future::ready(Ok(pos)))
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        let mut map = lock(&self.streams);
        let remove = match map.get(channel) {
            Some(stream) => {
                let mut s = lock(stream);
                s.subscribed = false;
                s.dead = s.history.is_none();
                s.dead
            }
            None => false,
        };
        if remove {
            map.remove(channel);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        event: Arc<Event>,
        durable: bool,
    ) -> BoxFuture<'a, Result<Receipt, BrokerError>> {
        Box::pin(async move {
            let receipt = self.publish_now(channel, &event)?;
            if durable && receipt.stored {
                let journal = self.journal.as_ref().ok_or_else(|| BrokerError("no durable store".into()))?;
                journal.sync().await.map_err(store_err)?;
            }
            Ok(receipt)
        })
    }

    fn broadcast(&self, event: Arc<Event>) -> BoxFuture<'_, Result<u64, BrokerError>> {
        Box::pin(std::future::ready(Ok(self.fanout.deliver_to_all(&event))))
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<Option<HistoryPage>, BrokerError>> {
        if self.config.history_rule(channel).is_none() {
            return Box::pin(std::future::ready(Ok(None)));
        }
        let Some(stream) = lock(&self.streams).get(channel).cloned() else {
            // Nothing published yet: an empty history, and no epoch until there is a stream.
            let empty = HistoryPage { entries: Vec::new(), position: StreamPosition::default(), gap: None };
            return Box::pin(std::future::ready(Ok(Some(empty))));
        };
        let page = Some(stream).map(|stream| {
            let mut s = lock(&stream);
            let position = s.position();
            let now = Instant::now();
            let h = s.history.as_mut().expect("streams of history channels have history");
            let (entries, gap) = match (query.since, query.reverse) {
                (Some(since), _) => match h.since(since, query.limit, now) {
                    Ok(e) => (e, None),
                    Err(g) => (Vec::new(), Some(g)),
                },
                (None, false) => (h.oldest(query.limit, now), None),
                (None, true) => (h.latest(query.limit, now), None),
            };
            HistoryPage { entries, position, gap }
        });
        Box::pin(std::future::ready(Ok(page)))
    }

    fn cursor<'a>(
        &'a self,
        identity: &'a str,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Option<StreamPosition>, BrokerError>> {
        let c = lock(&self.cursors).get(&(identity.to_owned(), channel.to_owned())).cloned();
        Box::pin(std::future::ready(Ok(c)))
    }

    fn set_cursor<'a>(
        &'a self,
        identity: &'a str,
        channel: &'a str,
        position: StreamPosition,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let result = (|| {
            let mut cursors = lock(&self.cursors);
            let key = (identity.to_owned(), channel.to_owned());
            if let Some(old) = cursors.get(&key)
                && old.epoch == position.epoch
                && old.offset >= position.offset
            {
                return Ok(());
            }
            if let Some(j) = &self.journal {
                j.set_cursor(identity, channel, &position.epoch, position.offset).map_err(store_err)?;
            }
            cursors.insert(key, position);
            Ok(())
        })();
        Box::pin(std::future::ready(result))
    }

    fn maintain(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.sweep();
            // Publications not published as durable reach the disk within about a second.
            if let Some(j) = &self.journal {
                match j.sync().await {
                    Ok(()) => self.store_failed.store(false, std::sync::atomic::Ordering::Relaxed),
                    Err(e) => {
                        self.store_failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        tracing::error!(error = %e, "background sync of the history store failed");
                    }
                }
            }
        })
    }

    fn status(&self) -> super::BrokerStatus {
        let healthy = !self.store_failed.load(std::sync::atomic::Ordering::Relaxed);
        super::BrokerStatus { healthy, ..super::BrokerStatus::default() }
    }

    fn durable(&self) -> bool {
        self.journal.is_some()
    }

    fn name(&self) -> &'static str {
        if self.journal.is_some() { "memory+disk" } else { "memory" }
    }
}
