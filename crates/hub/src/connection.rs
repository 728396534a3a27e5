//! [`Connection`]: one client's membership in the hub, and how it subscribes (with recovery from
//! history or acknowledged delivery), acknowledges and leaves.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use hubbub_proto::codes::ErrorCode;

use crate::broker::{BrokerError, HistoryQuery};
use crate::channel_name;
use crate::history::{Entry, Gap};
use crate::hub::Hub;
use crate::outbox::{Closed, OutFrame, Outbox};
use crate::registry::{Added, ConnShared, StreamPosition};
use crate::stats::Counters;

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

/// Why a subscribe was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SubscribeError {
    /// The client-facing code.
    pub code: ErrorCode,
    /// What was wrong and what to do instead.
    pub message: String,
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
    pub(crate) fn new(hub: Hub, shared: Arc<ConnShared>) -> Connection {
        Connection { hub, shared, open: true }
    }

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
        // Every channel's lock for the whole request: the limits are checked for all channels
        // before any is joined (a refused request delivers nothing), and no concurrent subscribe
        // can pass them meanwhile.
        let guards = self.hub.lock_channels(channels).await;
        for ch in channels {
            let max = self.hub.inner.config.max_subscribers(ch);
            if max > 0 && registry.ack_mode(self.shared.id, ch).is_none() && registry.subscriber_count(ch) >= max {
                return Err(SubscribeError {
                    code: ErrorCode::ChannelFull,
                    message: format!("{ch:?} has its {max} subscribers (max_subscribers); try again later"),
                });
            }
        }
        for ch in channels {
            let wants_catch_up = opts.ack || opts.since.contains_key(ch);
            let added = registry.subscribe(self.shared.id, ch, opts.ack, wants_catch_up);
            if added == Added::First {
                match broker.subscribe(ch).await {
                    Ok(pos) => registry.set_position(ch, &pos),
                    Err(e) => {
                        registry.unsubscribe(self.shared.id, ch);
                        // Leaving takes the channels' locks again.
                        drop(guards);
                        self.undo(&out).await;
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
        drop(guards);
        Ok(out)
    }

    /// All or nothing: leaves what a failed subscribe request added before it failed.
    async fn undo(&self, done: &[Subscribed]) {
        for sub in done.iter().filter(|s| s.added) {
            self.hub.leave(self.shared.id, &sub.channel).await;
        }
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
            let identity = self.shared.ack_identity().unwrap_or_default();
            broker.cursor(&identity, ch).await?
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
            let identity = self.shared.ack_identity().unwrap_or_default();
            broker.set_cursor(&identity, ch, page.position.clone()).await?;
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
        let identity = self.shared.ack_identity().unwrap_or_default();
        self.hub
            .inner
            .broker
            .set_cursor(&identity, channel, StreamPosition { offset, epoch: position.epoch })
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
            let d = t.elapsed();
            stats.latency.record(d, frames);
            stats.delivery_latency.record(d, frames);
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
