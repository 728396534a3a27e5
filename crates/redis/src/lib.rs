//! hubbub's Redis broker: several hubbub nodes share channels, history and ack cursors through one
//! Redis, and every publication reaches every node's subscribers through the hub's one fan-out path.
//!
//! # How it uses Redis
//! - **Position and history, atomically.** One Lua script per publish increments the channel's
//!   offset (`{prefix}:m:{channel}`, a hash with the epoch `e` and offset `o`), splices the offset
//!   into the event, appends it to the channel's history stream (`{prefix}:h:{channel}`, entry id
//!   `{offset}-0`, `MAXLEN` from the channel's rule, `PEXPIRE` from its TTL) and `PUBLISH`es it on
//!   `{prefix}:c:{channel}`. Redis runs scripts one at a time, so offset order, history order and
//!   pub/sub order agree on every node.
//! - **Node-level interest.** A node `SUBSCRIBE`s to a channel when its first local subscriber
//!   arrives and `UNSUBSCRIBE`s when the last leaves; `{prefix}:broadcast` is always subscribed.
//! - **Epochs.** A channel's epoch is created by the first publish or subscribe and lives in its
//!   hash; when the hash expires (no publish for a history TTL, or a day for channels without
//!   history) or Redis loses its data, the next use creates a new epoch, which is exactly the signal
//!   clients need to reload.
//! - **Ack cursors** in `{prefix}:k:{identity}` (a hash of channel → `epoch offset`).
//! - **Liveness.** Each node records a heartbeat in the sorted set `{prefix}:nodes` every second;
//!   entries older than 5 s are dropped, the rest counted. The pub/sub link is pinged every 5 s.
//! - **One clock.** History entries carry Redis's `TIME`, and TTL filtering uses it too, so the
//!   nodes' clocks never disagree about what has expired.
//!
//! # When Redis goes away
//! The pub/sub reader reconnects with exponential backoff (100 ms doubling to 5 s) and, once back,
//! re-subscribes to every channel that has local subscribers (read from the registry, the one
//! record of them). Meanwhile, by [`OnFailure`]: `Local` (the default) still delivers a publish to
//! this node's own subscribers, best effort (no offset, not stored, other nodes miss it), or `Fail`
//! answers it with a broker error (HTTP 503). Either way `/api/v1/health` says `degraded`, and
//! clients that missed publications recover what history holds when they resubscribe.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use hubbub::StreamPosition;
use hubbub::broker::memory::new_epoch;
use hubbub::broker::{BoxFuture, Broker, BrokerError, BrokerStatus, HistoryPage, HistoryQuery, Receipt};
use hubbub::config::HubConfig;
use hubbub::event::Event;
use hubbub::fanout::Fanout;
use hubbub::history::{Entry, Gap};
use hubbub_proto::{frame, time};
use redis::aio::{ConnectionManager, PubSubSink};
use redis::{AsyncCommands, Script};
use tokio::sync::Mutex as AsyncMutex;

mod reader;
mod scripts;

use crate::reader::read_pubsub;
use crate::scripts::{POSITION, PUBLISH, SET_CURSOR};

/// How long a pub/sub command (subscribe, unsubscribe, ping) may take before the link counts as
/// dead.
pub(crate) const SINK_TIMEOUT: Duration = Duration::from_secs(2);

/// What a publish does while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Deliver to this node's subscribers only: no offset, not in history, other nodes miss it.
    Local,
    /// Refuse the publish (HTTP 503 `broker_unavailable`).
    Fail,
}

/// Where the Redis primary is: a fixed address, or whatever Redis Sentinel says it is now.
pub(crate) enum Source {
    Fixed(redis::Client),
    Sentinel(AsyncMutex<redis::sentinel::SentinelClient>),
}

impl Source {
    /// A client for the current primary. With Sentinel this asks the sentinels each time, so a
    /// reconnect after a failover finds the new primary.
    pub(crate) async fn client(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Source::Fixed(c) => Ok(c.clone()),
            Source::Sentinel(s) => s.lock().await.async_get_client().await,
        }
    }
}

/// How to reach Redis.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// One address: `redis://[:password@]host:port[/db]`, or `rediss://` for TLS (trusting
    /// `tls_root`, PEM, if given, else the system's roots).
    Url {
        /// The URL.
        url: String,
        /// A CA to trust for `rediss://`.
        tls_root: Option<Vec<u8>>,
    },
    /// Redis Sentinel: the sentinels' `redis://` URLs and the monitored service's name.
    Sentinel {
        /// Sentinel addresses.
        sentinels: Vec<String>,
        /// The service (master group) name, e.g. `mymaster`.
        service: String,
    },
}

/// Connection state, for health and stats.
#[derive(Debug, Default)]
pub struct RedisStatus {
    /// Whether the pub/sub connection is up.
    pub connected: AtomicBool,
    /// Times the pub/sub connection was lost.
    pub disconnects: AtomicU64,
    /// Other nodes seen alive at the last maintenance tick, this one included.
    pub nodes_alive: AtomicU64,
    /// Publishes delivered locally only because Redis was unreachable.
    pub local_fallbacks: AtomicU64,
    /// Bumped at every (re)connection of the pub/sub reader; the command connection is rebuilt
    /// when it changes, so both follow a failover to the same new primary.
    pub generation: AtomicU64,
}

/// The Redis broker.
pub struct RedisBroker {
    fanout: Fanout,
    config: HubConfig,
    source: Arc<Source>,
    on_failure: OnFailure,
    prefix: String,
    node_id: String,
    conn: AsyncMutex<Option<(u64, ConnectionManager)>>,
    sink: Arc<AsyncMutex<Option<PubSubSink>>>,
    status: Arc<RedisStatus>,
    reader: tokio::task::AbortHandle,
    publish_script: Script,
    position_script: Script,
    cursor_script: Script,
}

pub(crate) fn broker_err(e: impl std::fmt::Display) -> BrokerError {
    BrokerError(format!("redis: {e}"))
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl RedisBroker {
    /// A broker on the Redis at `url` (`redis://[:password@]host:port[/db]`, or `rediss://` for
    /// TLS, trusting `tls_root` (PEM) if given, else the system's roots), keys under `prefix`. Starts the pub/sub reader on the current Tokio runtime; Redis
    /// need not be up yet.
    pub fn new(
        fanout: Fanout,
        config: HubConfig,
        endpoint: Endpoint,
        prefix: &str,
        on_failure: OnFailure,
    ) -> Result<RedisBroker, BrokerError> {
        let source = match endpoint {
            Endpoint::Url { url, tls_root } if url.starts_with("rediss://") => {
                // rustls needs a process-wide crypto provider; another part of the process may
                // have installed one already, which is fine.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let certs = redis::TlsCertificates { client_tls: None, root_cert: tls_root };
                Source::Fixed(redis::Client::build_with_tls(url, certs).map_err(broker_err)?)
            }
            Endpoint::Url { url, .. } => Source::Fixed(redis::Client::open(url).map_err(broker_err)?),
            Endpoint::Sentinel { sentinels, service } => {
                let client = redis::sentinel::SentinelClient::build(
                    sentinels,
                    service,
                    None,
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(broker_err)?;
                Source::Sentinel(AsyncMutex::new(client))
            }
        };
        let (source, sink, status) =
            (Arc::new(source), Arc::new(AsyncMutex::new(None)), Arc::new(RedisStatus::default()));
        let reader = tokio::spawn(read_pubsub(
            config.clone(),
            source.clone(),
            fanout.clone(),
            prefix.to_owned(),
            sink.clone(),
            status.clone(),
        ))
        .abort_handle();
        let broker = RedisBroker {
            fanout,
            config,
            source,
            on_failure,
            prefix: prefix.to_owned(),
            node_id: new_epoch(),
            conn: AsyncMutex::new(None),
            sink,
            status,
            reader,
            publish_script: Script::new(PUBLISH),
            position_script: Script::new(POSITION),
            cursor_script: Script::new(SET_CURSOR),
        };
        Ok(broker)
    }

    /// Connection state.
    pub fn status(&self) -> Arc<RedisStatus> {
        self.status.clone()
    }

    /// This node's id (its liveness key).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The command connection, rebuilt after the pub/sub reader reconnected (possibly to a new
    /// primary after a failover).
    async fn conn(&self) -> Result<ConnectionManager, BrokerError> {
        let generation = self.status.generation.load(Relaxed);
        let mut slot = self.conn.lock().await;
        if let Some((g, m)) = slot.as_ref()
            && *g == generation
        {
            return Ok(m.clone());
        }
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        let client = self.source.client().await.map_err(broker_err)?;
        let m = client.get_connection_manager_with_config(cfg).await.map_err(broker_err)?;
        *slot = Some((generation, m.clone()));
        Ok(m)
    }

    /// The shared path: offset, history and pub/sub in one script.
    async fn publish_shared(&self, channel: &str, event: &Event) -> Result<Receipt, BrokerError> {
        let mut conn = self.conn().await?;
        let (prefix, suffix, insert) = split_for_offset(event, channel);
        let rule = self.config.history_rule(channel);
        let (offset, epoch, _nodes): (u64, String, u64) = self
            .publish_script
            .key(self.key("m", channel))
            .key(self.key("h", channel))
            .arg(prefix)
            .arg(suffix)
            .arg(if insert { "1" } else { "0" })
            .arg(new_epoch())
            .arg(rule.map_or(0, |r| r.history_size))
            .arg(rule.map_or(0, |r| r.history_ttl.as_millis() as u64).max(1))
            .arg(self.key("c", channel))
            .invoke_async(&mut conn)
            .await
            .map_err(broker_err)?;
        // Local subscribers get it through pub/sub like everyone else; count them for the reply.
        let delivered = self.fanout.subscriber_count(channel) as u64;
        Ok(Receipt { offset: Some(offset), epoch: Some(epoch), delivered, stored: rule.is_some() })
    }

    /// The shared broadcast: one pub/sub message every node delivers to all its connections.
    async fn broadcast_shared(&self, event: &Event) -> Result<u64, BrokerError> {
        let mut conn = self.conn().await?;
        let json = event.stamped(None, None, &time::now_iso());
        let _: u64 = conn.publish(format!("{}:broadcast", self.prefix), json).await.map_err(broker_err)?;
        Ok(self.fanout.connection_count() as u64)
    }

    /// The channel's position, creating its epoch if it has none yet.
    /// With Redis's clock (ms), which history's TTL is measured against: one clock for all nodes.
    async fn position(
        &self,
        conn: &mut ConnectionManager,
        channel: &str,
    ) -> Result<(StreamPosition, u64), BrokerError> {
        let (epoch, offset, now_ms): (String, u64, u64) = self
            .position_script
            .key(self.key("m", channel))
            .key(self.key("h", channel))
            .arg(new_epoch())
            .invoke_async(conn)
            .await
            .map_err(broker_err)?;
        Ok((StreamPosition { offset, epoch }, now_ms))
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.prefix)
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        // The reader holds the fan-out and a Redis connection; it goes with the broker.
        self.reader.abort();
    }
}

/// The event with channel and timestamp stamped, split where the offset goes (the script inserts
/// it). `u64::MAX` marks the spot; it is the last occurrence because the hub's keys come after the
/// publisher's body.
fn split_for_offset(event: &Event, channel: &str) -> (String, String, bool) {
    let full = event.stamped(Some(channel), Some(u64::MAX), &time::now_iso());
    let marker = format!("\"offset\":{}", u64::MAX);
    match full.rfind(&marker) {
        Some(at) => (
            full[..at + marker.len() - u64::MAX.to_string().len()].to_owned(),
            full[at + marker.len()..].to_owned(),
            true,
        ),
        None => (full, String::new(), false),
    }
}

impl Broker for RedisBroker {
    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<StreamPosition, BrokerError>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            // Without the pub/sub link a subscription would silently miss publications.
            let mut slot = self.sink.lock().await;
            let sink = slot.as_mut().ok_or_else(|| BrokerError("redis pub/sub link is down".into()))?;
            tokio::time::timeout(SINK_TIMEOUT, sink.subscribe(self.key("c", channel)))
                .await
                .map_err(|_| BrokerError("redis did not confirm the subscription in time".into()))?
                .map_err(broker_err)?;
            drop(slot);
            Ok(self.position(&mut conn, channel).await?.0)
        })
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            if let Some(sink) = self.sink.lock().await.as_mut() {
                // A link that does not answer is replaced by the reader, which re-subscribes only
                // to channels that still have subscribers; a timeout here loses nothing.
                let _ = tokio::time::timeout(SINK_TIMEOUT, sink.unsubscribe(self.key("c", channel))).await;
            }
            Ok(())
        })
    }

    /// `durable` is refused before it gets here ([`Broker::durable`] is false): on Redis,
    /// durability is Redis's own `appendfsync` setting.
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        event: Arc<Event>,
        _durable: bool,
    ) -> BoxFuture<'a, Result<Receipt, BrokerError>> {
        Box::pin(async move {
            match self.publish_shared(channel, &event).await {
                // Only while the link is known to be down: a timeout on a script that did run must not
                // deliver the event a second time, locally.
                Err(e) if self.on_failure == OnFailure::Local && !self.status.connected.load(Relaxed) => {
                    // Best effort while Redis is away: this node's subscribers still hear it.
                    self.status.local_fallbacks.fetch_add(1, Relaxed);
                    tracing::debug!(channel, error = %e, "redis unreachable: delivering locally only");
                    let json = event.stamped(Some(channel), None, &time::now_iso());
                    let delivered =
                        self.fanout.deliver_frame(channel, 0, frame::server_text(json.as_bytes()), event.accepted_at());
                    Ok(Receipt { offset: None, epoch: None, delivered, stored: false })
                }
                other => other,
            }
        })
    }

    fn broadcast(&self, event: Arc<Event>) -> BoxFuture<'_, Result<u64, BrokerError>> {
        Box::pin(async move {
            match self.broadcast_shared(&event).await {
                Err(_) if self.on_failure == OnFailure::Local && !self.status.connected.load(Relaxed) => {
                    self.status.local_fallbacks.fetch_add(1, Relaxed);
                    Ok(self.fanout.deliver_to_all(&event))
                }
                other => other,
            }
        })
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<Option<HistoryPage>, BrokerError>> {
        Box::pin(async move {
            let Some(rule) = self.config.history_rule(channel) else { return Ok(None) };
            let mut conn = self.conn().await?;
            let (position, now_ms) = self.position(&mut conn, channel).await?;
            let offset = position.offset;
            let key = self.key("h", channel);
            let limit = query.limit.max(1);
            let (command, from, to) = match (query.since, query.reverse) {
                (Some(since), _) if since > offset => {
                    return Ok(Some(HistoryPage { entries: Vec::new(), position, gap: Some(Gap::FromTheFuture) }));
                }
                // Capped at the position just read: a publication after it reaches a recovering
                // client live, so the replay must not include it too.
                (Some(since), _) => ("XRANGE", format!("{}-0", since + 1), format!("{offset}-0")),
                (None, false) => ("XRANGE", "-".to_string(), format!("{offset}-0")),
                (None, true) => ("XREVRANGE", format!("{offset}-0"), "-".to_string()),
            };
            let raw: Vec<(String, Vec<Vec<u8>>)> = redis::cmd(command)
                .arg(&key)
                .arg(from)
                .arg(to)
                .arg("COUNT")
                .arg(limit)
                .query_async(&mut conn)
                .await
                .map_err(broker_err)?;
            let ttl_ms = rule.history_ttl.as_millis() as u64;
            let now = Instant::now();
            let entries: Vec<Entry> = raw
                .into_iter()
                .filter_map(|(id, fields)| {
                    let offset = id.split('-').next()?.parse::<u64>().ok()?;
                    let (mut t, mut p) = (None, None);
                    for pair in fields.chunks(2) {
                        match (pair.first().map(Vec::as_slice), pair.get(1)) {
                            (Some(b"t"), Some(v)) => t = std::str::from_utf8(v).ok()?.parse::<u64>().ok(),
                            (Some(b"p"), Some(v)) => p = Some(v.clone()),
                            _ => {}
                        }
                    }
                    let (t, p) = (t?, p?);
                    (now_ms.saturating_sub(t) < ttl_ms).then(|| Entry {
                        offset,
                        frame: frame::server_text(&p),
                        stored_at: now.checked_sub(Duration::from_millis(now_ms.saturating_sub(t))).unwrap_or(now),
                    })
                })
                .collect();
            let gap = match query.since {
                Some(since) if since < offset => match entries.first() {
                    Some(first) if first.offset == since + 1 => None,
                    _ => Some(Gap::TooOld),
                },
                _ => None,
            };
            let entries = if gap.is_some() { Vec::new() } else { entries };
            Ok(Some(HistoryPage { entries, position, gap }))
        })
    }

    fn cursor<'a>(
        &'a self,
        identity: &'a str,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Option<StreamPosition>, BrokerError>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let v: Option<String> = conn.hget(self.key("k", identity), channel).await.map_err(broker_err)?;
            Ok(v.and_then(|v| {
                let (epoch, offset) = v.split_once(' ')?;
                Some(StreamPosition { offset: offset.parse().ok()?, epoch: epoch.to_owned() })
            }))
        })
    }

    fn set_cursor<'a>(
        &'a self,
        identity: &'a str,
        channel: &'a str,
        position: StreamPosition,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let _: i64 = self
                .cursor_script
                .key(self.key("k", identity))
                .arg(channel)
                .arg(&position.epoch)
                .arg(position.offset)
                .invoke_async(&mut conn)
                .await
                .map_err(broker_err)?;
            Ok(())
        })
    }

    fn maintain(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Ok(mut conn) = self.conn().await else { return };
            // Liveness: a sorted set of node ids scored by their last heartbeat (ms).
            let key = format!("{}:nodes", self.prefix);
            let now = unix_ms();
            let alive: Result<(i64, i64, u64), _> = redis::pipe()
                .zadd(&key, &self.node_id, now)
                .zrembyscore(&key, 0, now.saturating_sub(5000))
                .zcard(&key)
                .query_async(&mut conn)
                .await;
            if let Ok((_, _, n)) = alive {
                self.status.nodes_alive.store(n, Relaxed);
            }
        })
    }

    fn status(&self) -> BrokerStatus {
        BrokerStatus {
            healthy: self.status.connected.load(Relaxed),
            node_id: Some(self.node_id.clone()),
            nodes_alive: Some(self.status.nodes_alive.load(Relaxed)),
            disconnects: self.status.disconnects.load(Relaxed),
            local_fallbacks: self.status.local_fallbacks.load(Relaxed),
        }
    }

    fn durable(&self) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
