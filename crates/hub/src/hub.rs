//! [`Hub`]: the handle every caller goes through, and [`Connection`], one client's membership.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use hubbub_proto::codes::ErrorCode;
use hubbub_proto::{frame, server, time};
use tokio::sync::{Mutex as AsyncMutex, OnceCell};

use crate::broker::memory::MemoryBroker;
use crate::broker::{Broker, BrokerError, HistoryPage, HistoryQuery, Receipt};
use crate::channel_name;
use crate::config::HubConfig;
use crate::event::Event;
use crate::fanout::Fanout;
use crate::history::{Entry, Gap};
use crate::journal::{Journal, JournalError};
use crate::outbox::{Closed, OutFrame, Outbox};
use crate::registry::{Added, ConnShared, Registry, StreamPosition};
use crate::stats::{Counters, Stats};

/// Sub/unsub of one channel and the broker call it causes happen under one of these locks, so a
/// "first subscriber" and a "last unsubscriber" of the same channel can never cross.
const CHANNEL_LOCKS: usize = 64;

/// The hub. Cheap to clone; every clone is the same hub.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    config: HubConfig,
    registry: Arc<Registry>,
    stats: Arc<Stats>,
    broker: Box<dyn Broker>,
    channel_locks: Vec<AsyncMutex<()>>,
    next_id: AtomicU64,
    idempotency: Idempotency,
}

type PublishCell = Arc<OnceCell<Vec<ChannelReceipt>>>;
type KeyMap = HashMap<String, (Instant, u64, PublishCell)>;

/// Remembered publish results by idempotency key, oldest first for expiry.
#[derive(Default)]
struct Idempotency {
    inner: std::sync::Mutex<(KeyMap, VecDeque<(Instant, String)>)>,
}

impl Idempotency {
    /// The result cell for `key`: shared by every publish with that key within the window, so
    /// concurrent retries wait for the first instead of publishing again.
    /// `fingerprint` identifies the request (channels and event): a key reused for a different
    /// request is refused rather than silently answered with another request's result.
    fn cell(
        &self,
        key: &str,
        fingerprint: u64,
        window: Duration,
        max_keys: usize,
    ) -> Result<PublishCell, PublishError> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some((at, fp, cell)) = g.0.get(key)
            && now.duration_since(*at) < window
        {
            if *fp != fingerprint {
                return Err(PublishError::KeyReused(key.to_owned()));
            }
            return Ok(cell.clone());
        }
        let cell = PublishCell::default();
        g.0.insert(key.to_owned(), (now, fingerprint, cell.clone()));
        g.1.push_back((now, key.to_owned()));
        while g.0.len() > max_keys.max(1) {
            let Some((at, old)) = g.1.pop_front() else { break };
            if g.0.get(&old).is_some_and(|(t, _, _)| *t == at) {
                g.0.remove(&old);
            }
        }
        Ok(cell)
    }

    fn expire(&self, window: Duration) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        while let Some((at, key)) = g.1.front().cloned() {
            if now.duration_since(at) < window {
                break;
            }
            g.1.pop_front();
            if g.0.get(&key).is_some_and(|(t, _, _)| *t == at) {
                g.0.remove(&key);
            }
        }
    }
}

/// Who is connecting.
#[derive(Debug, Clone, Default)]
pub struct ConnectInfo {
    /// The `client_name` the client chose, if any.
    pub client_name: Option<String>,
    /// The peer address, if the client came over a socket.
    pub remote_addr: Option<SocketAddr>,
}

/// One channel's result of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelReceipt {
    /// The channel.
    pub channel: String,
    /// What the broker did.
    pub receipt: Receipt,
}

/// How to subscribe.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Per channel, the last position the client saw: recover what followed it.
    pub since: HashMap<String, StreamPosition>,
    /// Acknowledged delivery: resume after this identity's last `ack`, whatever `since` says.
    pub ack: bool,
}

/// Whether a subscription caught up on what it missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Every missed publication is replayed (`replayed` of them), with no gap and no duplicate.
    Recovered {
        /// How many publications the replay holds.
        replayed: usize,
    },
    /// Nothing is replayed; the client should reload its state. The reason is one of
    /// `too_old`, `too_far_behind`, `epoch_changed`, `offset_ahead`, `no_history`, `unavailable`.
    NotRecovered {
        /// Why.
        reason: &'static str,
    },
}

/// One channel's result of [`Connection::subscribe_with`].
#[derive(Debug, Clone)]
pub struct Subscribed {
    /// The channel.
    pub channel: String,
    /// Its current position.
    pub position: StreamPosition,
    /// The recovery outcome, when recovery was asked for.
    pub recovery: Option<Recovery>,
    replay: Vec<Entry>,
    replayed_through: u64,
    catching_up: bool,
    added: bool,
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

/// Why a subscribe was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SubscribeError {
    /// The client-facing code.
    pub code: ErrorCode,
    /// What was wrong and what to do instead.
    pub message: String,
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
        let broker = make(Fanout::new(registry.clone(), stats.clone()));
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
        let shared = Arc::new(ConnShared {
            id: self.inner.next_id.fetch_add(1, Relaxed),
            client_id: uuid::Uuid::new_v4().to_string(),
            client_name: info.client_name,
            remote_addr: info.remote_addr,
            connected_at: SystemTime::now(),
            outbox: Outbox::new(cfg.outbox_max_messages, cfg.outbox_max_bytes, cfg.overflow),
            sent: AtomicU64::new(0),
        });
        self.inner.registry.add_connection(shared.clone());
        Counters::add(&self.inner.stats.counters.total_connections, 1);
        self.inner.stats.touch();
        Connection { hub: self.clone(), shared, open: true }
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
            let receipt = self.inner.broker.publish(ch, event.clone(), durable).await?;
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
        let fanned = self.inner.registry.fan_out_all(&out);
        Counters::add(&self.inner.stats.counters.slow_consumer_disconnects, fanned.overflowed);
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

    fn channel_lock(&self, channel: &str) -> &AsyncMutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        channel.hash(&mut h);
        &self.inner.channel_locks[h.finish() as usize % CHANNEL_LOCKS]
    }

    async fn leave(&self, id: u64, channel: &str) -> bool {
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

/// One client's membership in the hub. Subscriptions live in the registry, not here; this is the
/// handle through which they change. Dropping it without [`Connection::close`] still cleans up, on
/// a spawned task.
pub struct Connection {
    hub: Hub,
    shared: Arc<ConnShared>,
    open: bool,
}

impl Connection {
    /// What the hub knows about this connection, including its outbox.
    pub fn shared(&self) -> &Arc<ConnShared> {
        &self.shared
    }

    /// The frames waiting to be written.
    pub fn outbox(&self) -> &Outbox {
        &self.shared.outbox
    }

    /// The hub this connection belongs to.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Subscribes to `channels` with no recovery and makes them live at once. Returns each
    /// channel's position. The in-process form of a plain `subscribe` frame.
    pub async fn subscribe(&self, channels: &[String]) -> Result<Vec<(String, StreamPosition)>, SubscribeError> {
        let subscribed = self.subscribe_with(channels, &SubscribeOptions::default()).await?;
        self.go_live(&subscribed);
        Ok(subscribed.into_iter().map(|s| (s.channel, s.position)).collect())
    }

    /// Subscribes to every channel in `channels`, or to none if a name is invalid, a limit would
    /// be passed, or an option cannot be honoured. Channels that recover from history (`since`, or
    /// `ack`) are left catching up: live frames are held until [`Connection::go_live`], so the
    /// caller can queue its reply and the replay first.
    pub async fn subscribe_with(
        &self,
        channels: &[String],
        opts: &SubscribeOptions,
    ) -> Result<Vec<Subscribed>, SubscribeError> {
        let mut seen = std::collections::HashSet::new();
        let channels: Vec<String> = channels.iter().filter(|c| seen.insert(c.as_str())).cloned().collect();
        let channels = &channels[..];
        self.check_subscribe(channels, opts)?;
        let registry = &self.hub.inner.registry;
        let broker = &self.hub.inner.broker;
        let mut out: Vec<Subscribed> = Vec::with_capacity(channels.len());
        for ch in channels {
            let _guard = self.hub.channel_lock(ch).lock().await;
            let wants_catch_up = opts.ack || opts.since.contains_key(ch);
            let added = registry.subscribe(self.shared.id, ch, opts.ack, wants_catch_up);
            if added == Added::First {
                match broker.subscribe(ch).await {
                    Ok(pos) => registry.set_position(ch, &pos),
                    Err(e) => {
                        registry.unsubscribe(self.shared.id, ch);
                        // All or nothing: leave what this request added before the failure.
                        for done in out.iter().filter(|s| s.added) {
                            self.hub.leave(self.shared.id, &done.channel).await;
                        }
                        return Err(SubscribeError {
                            code: ErrorCode::Unavailable,
                            message: format!("could not subscribe to {ch}: {e}; try again shortly"),
                        });
                    }
                }
            }
            let mut sub = Subscribed {
                channel: ch.clone(),
                position: registry.position(ch).unwrap_or_default(),
                recovery: None,
                replay: Vec::new(),
                replayed_through: 0,
                catching_up: wants_catch_up && added != Added::Already,
                added: added != Added::Already,
            };
            if sub.catching_up
                && let Err(e) = self.catch_up(&mut sub, opts).await
            {
                // The subscription stands; it simply goes live without a replay.
                sub.recovery = Some(Recovery::NotRecovered { reason: "unavailable" });
                tracing::warn!(channel = %ch, error = %e, "history unavailable during recovery");
            }
            out.push(sub);
        }
        Ok(out)
    }

    fn check_subscribe(&self, channels: &[String], opts: &SubscribeOptions) -> Result<(), SubscribeError> {
        let cfg = &self.hub.inner.config;
        let invalid = |code, message: String| Err(SubscribeError { code, message });
        for ch in channels {
            channel_name::validate(ch, cfg.max_channel_name_length)
                .map_err(|message| SubscribeError { code: ErrorCode::InvalidChannel, message })?;
            if opts.ack && cfg.history_rule(ch).is_none() {
                return invalid(
                    ErrorCode::InvalidMessage,
                    format!("\"ack\": true needs history on {ch:?}; configure a [[channels]] rule that matches it"),
                );
            }
        }
        if opts.ack && self.shared.client_name.is_none() {
            return invalid(
                ErrorCode::InvalidMessage,
                "\"ack\": true needs a durable identity: connect with ?client_name=<your name>".into(),
            );
        }
        let current = self.hub.inner.registry.channels_of(self.shared.id);
        let mut new: Vec<&String> = channels.iter().filter(|c| !current.contains(c)).collect();
        new.sort();
        new.dedup();
        if current.len() + new.len() > cfg.max_channels_per_connection {
            return invalid(
                ErrorCode::TooManyChannels,
                format!(
                    "subscribed to {} channels, {} more would pass the limit of {}; unsubscribe from some first",
                    current.len(),
                    new.len(),
                    cfg.max_channels_per_connection
                ),
            );
        }
        Ok(())
    }

    /// Reads what `sub` missed. Called with the subscription already joined (catching up), so
    /// everything published from here on is held for it.
    async fn catch_up(&self, sub: &mut Subscribed, opts: &SubscribeOptions) -> Result<(), BrokerError> {
        let broker = &self.hub.inner.broker;
        let ch = sub.channel.as_str();
        let from = if opts.ack {
            let identity = self.shared.client_name.as_deref().unwrap_or_default();
            broker.cursor(identity, ch).await?
        } else {
            opts.since.get(ch).cloned()
        };
        let limit = self.hub.inner.config.max_recovery;
        let page =
            broker.history(ch, HistoryQuery { since: from.as_ref().map(|p| p.offset), limit, reverse: false }).await?;
        let Some(page) = page else {
            sub.recovery = Some(Recovery::NotRecovered { reason: "no_history" });
            return Ok(());
        };
        sub.position = page.position.clone();
        sub.replayed_through = page.position.offset;
        let recovery = match &from {
            // First acknowledged subscription of this identity: start from now.
            None => Recovery::Recovered { replayed: 0 },
            // `{offset: 0, epoch: ""}` means "from the beginning, whatever the epoch": a client that
            // has never seen the channel (its history read showed no epoch yet).
            Some(p) if p.epoch != page.position.epoch && !(p.offset == 0 && p.epoch.is_empty()) => {
                Recovery::NotRecovered { reason: "epoch_changed" }
            }
            Some(_) => match page.gap {
                Some(Gap::TooOld) => Recovery::NotRecovered { reason: "too_old" },
                Some(Gap::FromTheFuture) => Recovery::NotRecovered { reason: "offset_ahead" },
                None if page.entries.last().is_some_and(|e| e.offset < page.position.offset) => {
                    Recovery::NotRecovered { reason: "too_far_behind" }
                }
                None => {
                    sub.replay = page.entries;
                    Recovery::Recovered { replayed: sub.replay.len() }
                }
            },
        };
        if opts.ack && from.is_none() {
            // This identity's first acknowledged subscription: its cursor starts here. (After a
            // failed recovery the cursor is left alone: the client is told to reload, and its next
            // ack in the current epoch moves the cursor.)
            let identity = self.shared.client_name.as_deref().unwrap_or_default();
            broker.set_cursor(identity, ch, page.position.clone()).await?;
        }
        sub.recovery = Some(recovery);
        Ok(())
    }

    /// Queues each catching-up subscription's replay, then the live frames held meanwhile (newer
    /// than the replay), and makes it live. Call after queueing the `subscribed` reply.
    pub fn go_live(&self, subscribed: &[Subscribed]) {
        let registry = &self.hub.inner.registry;
        for sub in subscribed.iter().filter(|s| s.catching_up) {
            for e in &sub.replay {
                self.shared.outbox.push_replay(OutFrame { bytes: e.frame.clone(), published_at: Instant::now() });
            }
            registry.go_live(self.shared.id, &sub.channel, sub.replayed_through);
        }
    }

    /// Acknowledges everything up to `offset` on `channel` (cumulative).
    pub async fn ack(&self, channel: &str, offset: u64) -> Result<(), SubscribeError> {
        let registry = &self.hub.inner.registry;
        if registry.ack_mode(self.shared.id, channel) != Some(true) {
            return Err(SubscribeError {
                code: ErrorCode::InvalidMessage,
                message: format!("not subscribed to {channel:?} with \"ack\": true; subscribe with it first"),
            });
        }
        let position = registry.position(channel).unwrap_or_default();
        if offset > position.offset {
            return Err(SubscribeError {
                code: ErrorCode::InvalidMessage,
                message: format!("offset {offset} is beyond the last publication on {channel:?} ({})", position.offset),
            });
        }
        let identity = self.shared.client_name.as_deref().unwrap_or_default();
        self.hub
            .inner
            .broker
            .set_cursor(identity, channel, StreamPosition { offset, epoch: position.epoch })
            .await
            .map_err(|e| SubscribeError {
                code: ErrorCode::Unavailable,
                message: format!("could not store the ack: {e}; send it again"),
            })
    }

    /// Unsubscribes from `channels`; returns the ones it was subscribed to.
    pub async fn unsubscribe(&self, channels: &[String]) -> Vec<String> {
        let mut left = Vec::new();
        for ch in channels {
            if self.hub.leave(self.shared.id, ch).await {
                left.push(ch.clone());
            }
        }
        left
    }

    /// The channels this connection is subscribed to, read from the registry.
    pub fn channels(&self) -> Vec<String> {
        self.hub.inner.registry.channels_of(self.shared.id)
    }

    /// Counts frames the session wrote; `oldest` is the publish time of the oldest of them.
    pub fn record_written(&self, frames: u64, bytes: u64, oldest: Option<Instant>) {
        let stats = &self.hub.inner.stats;
        Counters::add(&stats.counters.messages_sent, frames);
        Counters::add(&stats.counters.bytes_sent, bytes);
        self.shared.sent.fetch_add(frames, Relaxed);
        if let Some(t) = oldest {
            stats.latency.record(t.elapsed(), frames);
        }
    }

    /// Leaves every channel and unregisters.
    pub async fn close(mut self) {
        self.open = false;
        close(&self.hub, &self.shared).await;
    }
}

async fn close(hub: &Hub, shared: &ConnShared) {
    shared.outbox.close(Closed::Finished);
    for ch in hub.inner.registry.channels_of(shared.id) {
        hub.leave(shared.id, &ch).await;
    }
    for ch in hub.inner.registry.remove_connection(shared.id) {
        let _guard = hub.channel_lock(&ch).lock().await;
        if hub.inner.registry.position(&ch).is_none() {
            let _ = hub.inner.broker.unsubscribe(&ch).await;
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let (hub, shared) = (self.hub.clone(), self.shared.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move { close(&hub, &shared).await });
            }
            Err(_) => {
                // No runtime left to run broker calls on (process exit): unregister locally.
                shared.outbox.close(Closed::Finished);
                hub.inner.registry.remove_connection(shared.id);
            }
        }
    }
}
