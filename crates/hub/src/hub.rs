//! [`Hub`]: the handle every caller goes through: connect, publish, broadcast, history, and the
//! hub's background loops. One client's side lives in [`crate::connection`].

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hubbub_proto::{frame, server, time};
use tokio::sync::Mutex as AsyncMutex;

use crate::broker::memory::MemoryBroker;
use crate::broker::{Broker, BrokerError, HistoryPage, HistoryQuery, Receipt};
use crate::channel_name;
use crate::config::HubConfig;
use crate::connection::Connection;
use crate::event::Event;
use crate::fanout::Fanout;
use crate::idempotency::Idempotency;
use crate::journal::{Journal, JournalError};
use crate::outbox::{OutFrame, Outbox, Prepared};
use crate::registry::{ConnShared, Registry};
use crate::stats::{Counters, Stats};

/// Sub/unsub of one channel and the broker call it causes happen under one of these locks, so a
/// "first subscriber" and a "last unsubscriber" of the same channel can never cross.
const CHANNEL_LOCKS: usize = 64;

/// The hub. Cheap to clone; every clone is the same hub.
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: HubConfig,
    pub(crate) registry: Arc<Registry>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) broker: Box<dyn Broker>,
    pub(crate) channel_locks: Vec<AsyncMutex<()>>,
    pub(crate) next_id: AtomicU64,
    pub(crate) idempotency: Idempotency,
}

/// Who is connecting.
#[derive(Debug, Clone, Default)]
pub struct ConnectInfo {
    /// The `client_name` the client chose, if any.
    pub client_name: Option<String>,
    /// The peer address, if the client came over a socket.
    pub remote_addr: Option<SocketAddr>,
    /// The connection negotiated permessage-deflate and takes compressed publications.
    pub deflate: bool,
    /// The server requires this connection to authenticate first: broadcasts and heartbeats skip
    /// it until `ConnShared::admit` (the hub library itself never checks tokens).
    pub awaiting_auth: bool,
}

/// One channel's result of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelReceipt {
    /// The channel.
    pub channel: String,
    /// What the broker did.
    pub receipt: Receipt,
}

/// How to publish.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Return only once the publication is on stable storage (needs a disk history store and a
    /// history rule for every channel).
    pub durable: bool,
    /// A retry with the same key within the idempotency window returns the first result and
    /// publishes nothing.
    pub idempotency_key: Option<String>,
}

/// What a publish did.
#[derive(Debug, Clone)]
pub struct PublishOutcome {
    /// Per channel, in request order.
    pub receipts: Vec<ChannelReceipt>,
    /// This answer is the remembered result of an earlier publish with the same idempotency key.
    pub duplicate: bool,
}

/// Why a publish was refused. Nothing was published when this is returned, except for
/// [`PublishError::Broker`] on a multi-channel publish, where earlier channels may have been.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// No channel was named.
    #[error("name at least one channel: \"channel\":\"x\" or \"channels\":[\"x\",\"y\"]")]
    NoChannel,
    /// A channel name is not allowed.
    #[error("{0}")]
    InvalidChannel(String),
    /// `durable` was asked for but the hub has no disk history store.
    #[error("durable publishes need the memory broker with history.store = \"disk\"; this hub cannot store durably")]
    DurableUnavailable,
    /// `durable` was asked for on a channel without history.
    #[error("durable publish to {0:?}, which keeps no history: add a [[channels]] rule that matches it")]
    NotStored(String),
    /// The idempotency key was used, within the window, for a different request.
    #[error("idempotency_key {0:?} was already used for a different publish; use a new key for a new request")]
    KeyReused(String),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl Hub {
    /// A hub with the in-memory broker (history in memory, per `config.channels`).
    pub fn new(config: HubConfig) -> Hub {
        let rules = config.clone();
        Hub::with_broker(config, move |fanout| Box::new(MemoryBroker::new(fanout, rules)))
    }

    /// A hub with the in-memory broker whose history, epochs and ack cursors live in `journal`.
    pub fn with_journal(config: HubConfig, journal: Arc<dyn Journal>) -> Result<Hub, JournalError> {
        let rules = config.clone();
        let mut failed = None;
        let hub = Hub::with_broker(config, |fanout| {
            match MemoryBroker::with_journal(fanout.clone(), rules.clone(), journal) {
                Ok(b) => Box::new(b),
                Err(e) => {
                    failed = Some(e);
                    Box::new(MemoryBroker::new(fanout, rules))
                }
            }
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(hub),
        }
    }

    /// A hub whose broker is built by `make` around the hub's fan-out.
    pub fn with_broker(config: HubConfig, make: impl FnOnce(Fanout) -> Box<dyn Broker>) -> Hub {
        let registry = Arc::new(Registry::default());
        let stats = Arc::new(Stats::default());
        let broker = make(Fanout::new(registry.clone(), stats.clone(), config.deflate));
        Hub {
            inner: Arc::new(Inner {
                config,
                registry,
                stats,
                broker,
                channel_locks: (0..CHANNEL_LOCKS).map(|_| AsyncMutex::new(())).collect(),
                next_id: AtomicU64::new(1),
                idempotency: Idempotency::default(),
            }),
        }
    }

    /// The settings the hub runs with.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// The registry (read-only views for the API).
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Counters and latency.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The broker's name.
    pub fn broker_name(&self) -> &'static str {
        self.inner.broker.name()
    }

    /// The broker's health and cluster view.
    pub fn broker_status(&self) -> crate::broker::BrokerStatus {
        self.inner.broker.status()
    }

    /// Registers a new connection. Its outbox is empty; the caller sends the welcome frame.
    pub fn connect(&self, info: ConnectInfo) -> Connection {
        let cfg = &self.inner.config;
        let id = self.inner.next_id.fetch_add(1, Relaxed);
        let outbox = Outbox::new(cfg.outbox_max_messages, cfg.outbox_max_bytes, cfg.overflow);
        let shared = Arc::new(ConnShared::new(id, info, outbox));
        self.inner.registry.add_connection(shared.clone());
        Counters::add(&self.inner.stats.counters.total_connections, 1);
        self.inner.stats.touch();
        Connection::new(self.clone(), shared)
    }

    /// Publishes `event` on each of `channels`, in order. The same event object is stamped with
    /// each channel's name and offset.
    pub async fn publish(&self, channels: &[String], event: Event) -> Result<Vec<ChannelReceipt>, PublishError> {
        Ok(self.publish_with(channels, event, PublishOptions::default()).await?.receipts)
    }

    /// [`Hub::publish`] with options: durable storage and idempotency.
    pub async fn publish_with(
        &self,
        channels: &[String],
        event: Event,
        opts: PublishOptions,
    ) -> Result<PublishOutcome, PublishError> {
        if channels.is_empty() {
            return Err(PublishError::NoChannel);
        }
        let cfg = &self.inner.config;
        for ch in channels {
            channel_name::validate(ch, cfg.max_channel_name_length).map_err(PublishError::InvalidChannel)?;
            if opts.durable && cfg.history_rule(ch).is_none() {
                return Err(PublishError::NotStored(ch.clone()));
            }
        }
        if opts.durable && !self.inner.broker.durable() {
            return Err(PublishError::DurableUnavailable);
        }
        let event = Arc::new(event);
        let Some(key) = &opts.idempotency_key else {
            return Ok(PublishOutcome {
                receipts: self.publish_all(channels, event, opts.durable).await?,
                duplicate: false,
            });
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        channels.hash(&mut h);
        event.raw().get().hash(&mut h);
        let cell = self.inner.idempotency.cell(key, h.finish(), cfg.idempotency_window, cfg.idempotency_max_keys)?;
        let first = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (hub, chans, durable, ran) = (self.clone(), channels.to_vec(), opts.durable, first.clone());
        // The publish runs in a task of its own, so it completes and the key is remembered even if
        // the caller goes away midway (a timed-out HTTP client that retries with the same key).
        let receipts = tokio::spawn(async move {
            cell.get_or_try_init(|| {
                ran.store(true, Relaxed);
                hub.publish_all(&chans, event, durable)
            })
            .await
            .cloned()
        })
        .await
        .map_err(|e| PublishError::Broker(BrokerError(format!("publish task failed: {e}"))))??;
        Ok(PublishOutcome { receipts, duplicate: !first.load(Relaxed) })
    }

    async fn publish_all(
        &self,
        channels: &[String],
        event: Arc<Event>,
        durable: bool,
    ) -> Result<Vec<ChannelReceipt>, PublishError> {
        let mut out = Vec::with_capacity(channels.len());
        for ch in channels {
            let started = Instant::now();
            let receipt = self.inner.broker.publish(ch, event.clone(), durable).await?;
            self.inner.stats.publish_duration.record(started.elapsed(), 1);
            out.push(ChannelReceipt { channel: ch.clone(), receipt });
        }
        Counters::add(&self.inner.stats.counters.publishes, channels.len() as u64);
        self.inner.stats.touch();
        Ok(out)
    }

    /// Reads `channel`'s history; `None` when the channel keeps none.
    pub async fn history(&self, channel: &str, query: HistoryQuery) -> Result<Option<HistoryPage>, PublishError> {
        channel_name::validate(channel, self.inner.config.max_channel_name_length)
            .map_err(PublishError::InvalidChannel)?;
        Ok(self.inner.broker.history(channel, query).await?)
    }

    /// Runs housekeeping (history expiry, background sync, idempotency expiry) about once a second
    /// until the future is dropped.
    pub async fn run_maintenance(&self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.inner.broker.maintain().await;
            self.inner.idempotency.expire(self.inner.config.idempotency_window);
        }
    }

    /// Sends `event` to every connection, subscribed or not; returns how many it was queued to here.
    pub async fn broadcast(&self, event: Event) -> Result<u64, BrokerError> {
        let n = self.inner.broker.broadcast(Arc::new(event)).await?;
        Counters::add(&self.inner.stats.counters.broadcasts, 1);
        self.inner.stats.touch();
        Ok(n)
    }

    /// Queues one heartbeat frame, encoded once, to every connection.
    pub fn heartbeat(&self) -> u64 {
        let clients = self.inner.registry.connection_count();
        let json = server::heartbeat(clients, &time::now_iso());
        let out = OutFrame { bytes: frame::server_text(json.as_bytes()), published_at: Instant::now() };
        let fanned = self.inner.registry.fan_out_all(&Prepared::plain(out));
        Counters::add(&self.inner.stats.counters.slow_consumer_disconnects, fanned.overflowed);
        Counters::add(&self.inner.stats.counters.dropped_frames, fanned.dropped);
        fanned.queued
    }

    /// Sends heartbeats every `heartbeat_interval` until the future is dropped. Returns at once
    /// when heartbeats are turned off.
    pub async fn run_heartbeats(&self) {
        let every = self.inner.config.heartbeat_interval;
        if every.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.heartbeat();
        }
    }

    pub(crate) fn channel_lock(&self, channel: &str) -> &AsyncMutex<()> {
        &self.inner.channel_locks[stripe(channel)]
    }

    /// Takes the locks of all `channels` at once, in stripe order (so two requests can never each
    /// hold a lock the other waits for; everything else takes one stripe at a time).
    pub(crate) async fn lock_channels(&self, channels: &[String]) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = channels.iter().map(|c| stripe(c)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for i in stripes {
            guards.push(self.inner.channel_locks[i].lock().await);
        }
        guards
    }

    pub(crate) async fn leave(&self, id: u64, channel: &str) -> bool {
        let _guard = self.channel_lock(channel).lock().await;
        match self.inner.registry.unsubscribe(id, channel) {
            Some(true) => {
                if let Err(e) = self.inner.broker.unsubscribe(channel).await {
                    tracing::warn!(channel, error = %e, "broker unsubscribe failed");
                }
                true
            }
            Some(false) => true,
            None => false,
        }
    }
}

/// Which of the `CHANNEL_LOCKS` striped locks guards `channel`.
fn stripe(channel: &str) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    channel.hash(&mut h);
    h.finish() as usize % CHANNEL_LOCKS
}
