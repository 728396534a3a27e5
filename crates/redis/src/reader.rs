//! The pub/sub reader: one task per node that turns Redis pub/sub messages into fan-out calls, and
//! after every reconnect re-subscribes (from the registry) and fills the gap from history.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures_util::StreamExt;
use hubbub::broker::BrokerError;
use hubbub::broker::memory::new_epoch;
use hubbub::config::HubConfig;
use hubbub::fanout::Fanout;
use hubbub_proto::frame;
use redis::Script;
use redis::aio::PubSubSink;
use tokio::sync::Mutex as AsyncMutex;

use crate::scripts::POSITION;
use crate::{RedisStatus, SINK_TIMEOUT, Source, broker_err};

/// Reads pub/sub messages into the fan-out, reconnecting and re-subscribing when Redis comes back.
/// Reconnect delays: 100 ms doubling to 5 s, logged.
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(100))
    }
}

impl Backoff {
    async fn wait(&mut self, why: &str) {
        tracing::warn!(error = %why, retry_in = ?self.0, "redis pub/sub connection failed");
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }
}

/// A pub/sub connection to the current primary (asked from the sentinels, with Sentinel).
async fn connect(source: &Source) -> Result<(redis::Client, redis::aio::PubSub), String> {
    let client = source.client().await.map_err(|e| format!("no redis primary found: {e}"))?;
    let pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
    Ok((client, pubsub))
}

pub(crate) async fn read_pubsub(
    config: HubConfig,
    source: Arc<Source>,
    fanout: Fanout,
    prefix: String,
    sink_slot: Arc<AsyncMutex<Option<PubSubSink>>>,
    status: Arc<RedisStatus>,
) {
    let channel_prefix = format!("{prefix}:c:");
    let broadcast = format!("{prefix}:broadcast");
    let mut backoff = Backoff::default();
    loop {
        let (client, pubsub) = match connect(&source).await {
            Ok(c) => c,
            Err(why) => {
                backoff.wait(&why).await;
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        // Hold the slot while re-subscribing so a concurrent subscribe waits, then sees the sink.
        let mut slot = sink_slot.lock().await;
        let mut names = vec![broadcast.clone()];
        names.extend(fanout.channels().into_iter().map(|ch| format!("{channel_prefix}{ch}")));
        let mut ok = true;
        for name in names {
            ok &= matches!(tokio::time::timeout(SINK_TIMEOUT, sink.subscribe(name)).await, Ok(Ok(())));
        }
        if !ok {
            drop(slot);
            backoff.wait("re-subscribing failed").await;
            continue;
        }
        // Subscribed again: what was published while the link was down is missing locally.
        // Deliver it from history before the first new message (which waits in the stream).
        if let Err(e) = fill_gaps(&client, &config, &fanout, &prefix).await {
            tracing::warn!(error = %e, "could not fill the gap after reconnecting; clients recover on resubscribe");
        }
        *slot = Some(sink);
        drop(slot);
        status.generation.fetch_add(1, Relaxed);
        status.connected.store(true, Relaxed);
        backoff = Backoff::default();
        tracing::info!("redis pub/sub connected");
        let mut ping = tokio::time::interval(Duration::from_secs(5));
        ping.tick().await;
        loop {
            let msg = tokio::select! {
                msg = stream.next() => match msg {
                    Some(m) => m,
                    None => break,
                },
                _ = ping.tick() => {
                    // A half-open link (host gone, no reset) ends no stream: ask it to answer.
                    let mut slot = sink_slot.lock().await;
                    let alive = match slot.as_mut() {
                        Some(sink) => matches!(tokio::time::timeout(SINK_TIMEOUT, sink.ping::<String>()).await, Ok(Ok(_))),
                        None => false,
                    };
                    if !alive {
                        tracing::warn!("redis pub/sub link did not answer a ping");
                        break;
                    }
                    continue;
                }
            };
            let name = msg.get_channel_name();
            let payload = msg.get_payload_bytes();
            if name == broadcast {
                fanout.deliver_raw_to_all(frame::server_text(payload));
            } else if let Some(channel) = name.strip_prefix(&channel_prefix) {
                let mut parts = payload.splitn(3, |b| *b == b'\n');
                let (Some(epoch), Some(offset), Some(json)) = (parts.next(), parts.next(), parts.next()) else {
                    continue;
                };
                let Some(offset) = std::str::from_utf8(offset).ok().and_then(|o| o.parse::<u64>().ok()) else {
                    continue;
                };
                // Redis may have started a new epoch (data lost, channel expired) while this node
                // kept subscribers: the registry's view must follow.
                let epoch = String::from_utf8_lossy(epoch);
                fanout.note_epoch(channel, &epoch, offset);
                // Already delivered by the gap fill after a reconnect.
                if fanout.position(channel).is_some_and(|p| p.epoch == epoch && offset <= p.offset) {
                    continue;
                }
                fanout.deliver_frame(channel, offset, frame::server_text(json), std::time::Instant::now());
            }
        }
        *sink_slot.lock().await = None;
        status.connected.store(false, Relaxed);
        status.disconnects.fetch_add(1, Relaxed);
        tracing::warn!("redis pub/sub connection lost; reconnecting");
    }
}

/// After a reconnect, delivers to local subscribers every stored publication they missed: for each
/// local channel with history, the entries between this node's last delivered offset and Redis's
/// current one, in the same epoch. Channels without history cannot be filled (at most once).
async fn fill_gaps(
    client: &redis::Client,
    config: &HubConfig,
    fanout: &Fanout,
    prefix: &str,
) -> Result<(), BrokerError> {
    let mut conn = client.get_multiplexed_async_connection().await.map_err(broker_err)?;
    let position = Script::new(POSITION);
    for channel in fanout.channels() {
        if config.history_rule(&channel).is_none() {
            continue;
        }
        let Some(local) = fanout.position(&channel) else { continue };
        let (epoch, offset, _now): (String, u64, u64) = position
            .key(format!("{prefix}:m:{channel}"))
            .key(format!("{prefix}:h:{channel}"))
            .arg(new_epoch())
            .invoke_async(&mut conn)
            .await
            .map_err(broker_err)?;
        if epoch != local.epoch || offset <= local.offset {
            continue;
        }
        let raw: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(format!("{prefix}:h:{channel}"))
            .arg(format!("{}-0", local.offset + 1))
            .arg(format!("{offset}-0"))
            .query_async(&mut conn)
            .await
            .map_err(broker_err)?;
        for (id, fields) in raw {
            let Some(o) = id.split('-').next().and_then(|o| o.parse::<u64>().ok()) else { continue };
            let payload = fields.chunks(2).find(|p| p.first().map(Vec::as_slice) == Some(b"p")).and_then(|p| p.get(1));
            if let Some(p) = payload {
                fanout.deliver_frame(&channel, o, frame::server_text(p), std::time::Instant::now());
            }
        }
    }
    Ok(())
}
