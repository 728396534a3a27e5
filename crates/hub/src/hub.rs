//! [`Hub`]: the handle every caller goes through, and [`Connection`], one client's membership.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Instant, SystemTime};

use hubbub_proto::codes::ErrorCode;
use hubbub_proto::{frame, server, time};
use tokio::sync::Mutex as AsyncMutex;

use crate::broker::memory::MemoryBroker;
use crate::broker::{Broker, BrokerError, Receipt};
use crate::channel_name;
use crate::config::HubConfig;
use crate::event::Event;
use crate::fanout::Fanout;
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
    /// A hub with the in-memory broker.
    pub fn new(config: HubConfig) -> Hub {
        Hub::with_broker(config, |fanout| Box::new(MemoryBroker::new(fanout)))
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
        if channels.is_empty() {
            return Err(PublishError::NoChannel);
        }
        let max = self.inner.config.max_channel_name_length;
        for ch in channels {
            channel_name::validate(ch, max).map_err(PublishError::InvalidChannel)?;
        }
        let event = Arc::new(event);
        let mut out = Vec::with_capacity(channels.len());
        for ch in channels {
            let receipt = self.inner.broker.publish(ch, event.clone()).await?;
            out.push(ChannelReceipt { channel: ch.clone(), receipt });
        }
        Counters::add(&self.inner.stats.counters.publishes, channels.len() as u64);
        self.inner.stats.touch();
        Ok(out)
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

    /// Subscribes to every channel in `channels`, or to none if any name is invalid or the limit
    /// would be passed. Returns each channel's position.
    pub async fn subscribe(&self, channels: &[String]) -> Result<Vec<(String, StreamPosition)>, SubscribeError> {
        let cfg = &self.hub.inner.config;
        for ch in channels {
            channel_name::validate(ch, cfg.max_channel_name_length)
                .map_err(|message| SubscribeError { code: ErrorCode::InvalidChannel, message })?;
        }
        let registry = &self.hub.inner.registry;
        let current = registry.channels_of(self.shared.id);
        let mut new: Vec<&String> = channels.iter().filter(|c| !current.contains(c)).collect();
        new.sort();
        new.dedup();
        if current.len() + new.len() > cfg.max_channels_per_connection {
            return Err(SubscribeError {
                code: ErrorCode::TooManyChannels,
                message: format!(
                    "subscribed to {} channels, {} more would pass the limit of {}; unsubscribe from some first",
                    current.len(),
                    new.len(),
                    cfg.max_channels_per_connection
                ),
            });
        }
        let mut positions = Vec::with_capacity(channels.len());
        for ch in channels {
            let _guard = self.hub.channel_lock(ch).lock().await;
            if registry.subscribe(self.shared.id, ch) == Added::First {
                match self.hub.inner.broker.subscribe(ch).await {
                    Ok(pos) => registry.set_position(ch, &pos),
                    Err(e) => {
                        registry.unsubscribe(self.shared.id, ch);
                        return Err(SubscribeError {
                            code: ErrorCode::Unavailable,
                            message: format!("could not subscribe to {ch}: {e}; try again shortly"),
                        });
                    }
                }
            }
            if let Some(pos) = registry.position(ch) {
                positions.push((ch.clone(), pos));
            }
        }
        Ok(positions)
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
    hub.inner.registry.remove_connection(shared.id);
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
