//! The one registry of connections and subscriptions.
//!
//! **Invariant:** this is the only record of who is subscribed to what. Both directions (channel →
//! subscribers, connection → channels) live in one `State` behind one lock and change together in
//! one critical section, so they cannot disagree. A channel entry exists exactly while it has at
//! least one local subscriber; the last unsubscribe removes it.
//!
//! Locking: a `std::sync::RwLock`, never held across `.await`. Fan-out holds the read lock while it
//! pushes into outboxes (pushes never wait), so publishes to different channels run in parallel and a
//! subscribe waits at most one fan-out.
//!
//! Catching up: a subscription that recovers from history joins the fan-out first in *catching-up*
//! mode, where its live frames are held aside (with their offsets) instead of queued. The hub then
//! replays history and calls [`Registry::go_live`], which queues the held frames newer than the
//! replay and switches the subscription to live, under the same lock the fan-out takes. Joining
//! before reading history is what rules out gaps; dropping held frames at or below the replayed
//! offset is what rules out duplicates.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use crate::outbox::{Closed, OutFrame, Outbox, Prepared, Pushed};

/// The hub's internal id for a connection.
pub type ConnId = u64;

/// What the hub knows about one connection, shared by its session and the registry.
#[derive(Debug)]
pub struct ConnShared {
    /// Internal id (registry key).
    pub id: ConnId,
    /// The UUID the client is told in the welcome frame.
    pub client_id: String,
    /// The `client_name` query parameter, if given.
    pub client_name: Option<String>,
    /// The peer's address, when the connection came over a socket.
    pub remote_addr: Option<SocketAddr>,
    /// When the connection was accepted.
    pub connected_at: SystemTime,
    /// Frames waiting to be written.
    pub outbox: Outbox,
    /// Frames written to this connection's socket.
    pub sent: AtomicU64,
    /// The connection negotiated permessage-deflate and takes compressed publications.
    pub deflate: bool,
    /// The connection has yet to authenticate (the server requires it): broadcasts and heartbeats
    /// skip it until [`ConnShared::admit`].
    awaiting_auth: AtomicBool,
    /// The authenticated user whose acknowledgement cursors this connection moves (see
    /// [`ConnShared::ack_identity`]); set once, by the server, when a token names a user.
    ack_owner: OnceLock<String>,
}

impl ConnShared {
    /// A connection's shared state; `awaiting_auth` keeps hub-wide frames from it until it is
    /// admitted.
    pub(crate) fn new(id: ConnId, info: crate::hub::ConnectInfo, outbox: Outbox) -> ConnShared {
        ConnShared {
            id,
            client_id: uuid::Uuid::new_v4().to_string(),
            client_name: info.client_name,
            remote_addr: info.remote_addr,
            connected_at: SystemTime::now(),
            outbox,
            sent: AtomicU64::new(0),
            deflate: info.deflate,
            awaiting_auth: AtomicBool::new(info.awaiting_auth),
            ack_owner: OnceLock::new(),
        }
    }

    /// Ties this connection's acknowledgement cursors to `user` (a token's `sub`). Only the first
    /// call counts: a connection's user does not change.
    pub fn set_ack_owner(&self, user: &str) {
        let _ = self.ack_owner.set(user.to_owned());
    }

    /// The key of this connection's acknowledgement cursors: its `client_name`, inside the
    /// namespace of its user when a token named one. A `client_name` cannot contain control
    /// characters (the server refuses them), so no anonymous name can reach a user's cursors.
    pub fn ack_identity(&self) -> Option<String> {
        let name = self.client_name.as_deref()?;
        Some(match self.ack_owner.get() {
            Some(user) => format!("\u{1}user\u{1}{user}\u{1}{name}"),
            None => name.to_owned(),
        })
    }

    /// The connection authenticated: it receives broadcasts and heartbeats from now on.
    pub fn admit(&self) {
        self.awaiting_auth.store(false, Relaxed);
    }

    /// Whether the connection still has to authenticate.
    pub fn awaiting_auth(&self) -> bool {
        self.awaiting_auth.load(Relaxed)
    }
}

/// A channel's position: the last offset published and the epoch the offsets count in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamPosition {
    /// The last offset published (0 before the first publish).
    pub offset: u64,
    /// Changes whenever offsets restart, so a client can tell it may have missed events.
    pub epoch: String,
}

#[derive(Debug)]
struct Subscriber {
    conn: Arc<ConnShared>,
    /// Subscribed with acknowledgements: the client's `ack` frames move its cursor.
    ack: bool,
}

/// Live frames held for subscriptions that are still replaying history.
type HeldFrames = HashMap<ConnId, Vec<(u64, OutFrame)>>;

#[derive(Debug)]
struct ChannelEntry {
    subscribers: HashMap<ConnId, Subscriber>,
    catching_up: Mutex<HeldFrames>,
    /// `catching_up.len()`, readable without the mutex so the common fan-out skips it.
    n_catching_up: AtomicUsize,
    last_offset: AtomicU64,
    epoch: String,
}

#[derive(Debug)]
struct ConnEntry {
    conn: Arc<ConnShared>,
    channels: Vec<Arc<str>>,
}

#[derive(Debug, Default)]
struct State {
    channels: HashMap<Arc<str>, ChannelEntry>,
    connections: HashMap<ConnId, ConnEntry>,
}

/// The result of adding one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The connection was already subscribed.
    Already,
    /// Added; other local subscribers already existed.
    Joined,
    /// Added as the channel's first local subscriber: the broker must be told.
    First,
}

/// How one fan-out went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fanned {
    /// Subscribers the frame was queued to.
    pub queued: u64,
    /// Subscribers whose queue overflowed, now closing as slow consumers.
    pub overflowed: u64,
    /// Older frames dropped to make room (drop-oldest policy).
    pub dropped: u64,
}

/// A row of `GET /api/v1/connections`.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The connection.
    pub conn: Arc<ConnShared>,
    /// Its channels, from the registry.
    pub channels: Vec<String>,
}

/// A row of `GET /api/v1/channels`.
#[derive(Debug, Clone)]
pub struct ChannelInfo {
    /// The channel.
    pub name: String,
    /// Local subscribers.
    pub subscribers: usize,
    /// The channel's position.
    pub position: StreamPosition,
}

/// The registry. See the module docs for its invariant.
#[derive(Debug, Default)]
pub struct Registry {
    state: RwLock<State>,
    /// Connections that take compressed publications; while none does, no publication is
    /// compressed.
    deflate_connections: AtomicUsize,
}

impl Registry {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        // Every mutation below completes or does nothing before it could panic, so a poisoned
        // lock still guards consistent data.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection with no subscriptions.
    pub fn add_connection(&self, conn: Arc<ConnShared>) {
        if conn.deflate {
            self.deflate_connections.fetch_add(1, Relaxed);
        }
        self.write().connections.insert(conn.id, ConnEntry { conn, channels: Vec::new() });
    }

    /// Whether any connection takes compressed publications.
    pub fn wants_deflate(&self) -> bool {
        self.deflate_connections.load(Relaxed) > 0
    }

    /// Removes a connection and all its subscriptions; returns the channels that became empty.
    pub fn remove_connection(&self, id: ConnId) -> Vec<Arc<str>> {
        let mut st = self.write();
        let Some(entry) = st.connections.remove(&id) else { return Vec::new() };
        if entry.conn.deflate {
            self.deflate_connections.fetch_sub(1, Relaxed);
        }
        let mut emptied = Vec::new();
        for ch in entry.channels {
            if let Some(c) = st.channels.get_mut(&ch) {
                c.subscribers.remove(&id);
                forget_held(c, id);
                if c.subscribers.is_empty() {
                    st.channels.remove(&ch);
                    emptied.push(ch);
                }
            }
        }
        emptied
    }

    /// How many channels `id` is subscribed to.
    pub fn subscription_count(&self, id: ConnId) -> usize {
        self.read().connections.get(&id).map_or(0, |e| e.channels.len())
    }

    /// Subscribes `id` to `channel`; with `catch_up`, live frames are held until [`Registry::go_live`].
    pub fn subscribe(&self, id: ConnId, channel: &str, ack: bool, catch_up: bool) -> Added {
        let mut st = self.write();
        let st = &mut *st;
        let Some(entry) = st.connections.get_mut(&id) else { return Added::Already };
        if entry.channels.iter().any(|c| &**c == channel) {
            return Added::Already;
        }
        let conn = entry.conn.clone();
        let (name, added) = match st.channels.get_key_value(channel) {
            Some((name, _)) => (name.clone(), Added::Joined),
            None => (Arc::<str>::from(channel), Added::First),
        };
        entry.channels.push(name.clone());
        let c = st.channels.entry(name).or_insert_with(|| ChannelEntry {
            subscribers: HashMap::new(),
            catching_up: Mutex::new(HashMap::new()),
            n_catching_up: AtomicUsize::new(0),
            last_offset: AtomicU64::new(0),
            epoch: String::new(),
        });
        c.subscribers.insert(id, Subscriber { conn, ack });
        if catch_up {
            let mut held = lock(&c.catching_up);
            held.insert(id, Vec::new());
            c.n_catching_up.store(held.len(), Relaxed);
        }
        added
    }

    /// Ends `id`'s catch-up on `channel`: queues the held live frames newer than `replayed_through`
    /// and makes the subscription live. Returns how many held frames were queued.
    pub fn go_live(&self, id: ConnId, channel: &str, replayed_through: u64) -> usize {
        let st = self.read();
        let Some(c) = st.channels.get(channel) else { return 0 };
        let mut held = lock(&c.catching_up);
        let Some(frames) = held.remove(&id) else { return 0 };
        let Some(sub) = c.subscribers.get(&id) else {
            c.n_catching_up.store(held.len(), Release);
            return 0;
        };
        let mut queued = 0;
        for (offset, frame) in frames {
            if offset > replayed_through {
                // Already bounded while held (fan-out closes a catching-up client whose held frames
                // pass its outbox size), so these join the replay unconditionally.
                sub.conn.outbox.push_replay(frame);
                queued += 1;
            }
        }
        // Only now may fan-outs skip the held-frames lock: a publish that took the shortcut
        // earlier could overtake the frames just queued.
        c.n_catching_up.store(held.len(), Release);
        queued
    }

    /// Whether `id` is subscribed to `channel` with acknowledgements (`None`: not subscribed).
    pub fn ack_mode(&self, id: ConnId, channel: &str) -> Option<bool> {
        self.read().channels.get(channel).and_then(|c| c.subscribers.get(&id)).map(|s| s.ack)
    }

    /// Unsubscribes `id` from `channel`; `Some(true)` when it was the last subscriber (the channel
    /// is gone and the broker must be told), `None` when it was not subscribed.
    pub fn unsubscribe(&self, id: ConnId, channel: &str) -> Option<bool> {
        let mut st = self.write();
        let entry = st.connections.get_mut(&id)?;
        let pos = entry.channels.iter().position(|c| &**c == channel)?;
        entry.channels.swap_remove(pos);
        let c = st.channels.get_mut(channel)?;
        c.subscribers.remove(&id);
        forget_held(c, id);
        if c.subscribers.is_empty() {
            st.channels.remove(channel);
            Some(true)
        } else {
            Some(false)
        }
    }

    /// Records the broker's position for a channel that just got its first subscriber.
    pub fn set_position(&self, channel: &str, pos: &StreamPosition) {
        if let Some(c) = self.write().channels.get_mut(channel) {
            c.epoch = pos.epoch.clone();
            c.last_offset.fetch_max(pos.offset, Relaxed);
        }
    }

    /// Moves `channel` to a new epoch (see [`crate::fanout::Fanout::note_epoch`]).
    pub fn note_epoch(&self, channel: &str, epoch: &str, offset: u64) {
        if self.read().channels.get(channel).is_none_or(|c| c.epoch == epoch) {
            return;
        }
        if let Some(c) = self.write().channels.get_mut(channel) {
            c.epoch = epoch.to_owned();
            c.last_offset.store(offset.saturating_sub(1), Relaxed);
        }
    }

    /// The channel's position, if it has local subscribers.
    pub fn position(&self, channel: &str) -> Option<StreamPosition> {
        self.read()
            .channels
            .get(channel)
            .map(|c| StreamPosition { offset: c.last_offset.load(Relaxed), epoch: c.epoch.clone() })
    }

    /// Queues `frame` to every local subscriber of `channel`. Never waits.
    pub fn fan_out(&self, channel: &str, offset: u64, frame: &Prepared) -> Fanned {
        let st = self.read();
        let Some(c) = st.channels.get(channel) else { return Fanned::default() };
        c.last_offset.fetch_max(offset, Relaxed);
        if c.n_catching_up.load(Acquire) == 0 {
            return push_all(c.subscribers.values().map(|s| &s.conn), frame);
        }
        // Some subscribers are replaying history: hold their copy, with its offset.
        let mut held = lock(&c.catching_up);
        let mut out = Fanned::default();
        let mut overflowed = Vec::new();
        for (id, sub) in &c.subscribers {
            match held.get_mut(id) {
                Some(frames) => {
                    frames.push((offset, frame.for_conn(sub.conn.deflate).clone()));
                    if frames.len() > sub.conn.outbox.max_messages() {
                        overflowed.push(*id);
                    }
                    out.queued += 1;
                }
                None => out = out.plus(push_all(std::iter::once(&sub.conn), frame)),
            }
        }
        for id in overflowed {
            held.remove(&id);
            if let Some(sub) = c.subscribers.get(&id) {
                sub.conn.outbox.close(Closed::SlowConsumer);
            }
            out.queued -= 1;
            out.overflowed += 1;
        }
        c.n_catching_up.store(held.len(), Relaxed);
        out
    }

    /// Queues `frame` to every connection, subscribed or not. Never waits.
    pub fn fan_out_all(&self, frame: &Prepared) -> Fanned {
        let st = self.read();
        push_all(st.connections.values().map(|e| &e.conn).filter(|c| !c.awaiting_auth()), frame)
    }

    /// Local subscribers of `channel`.
    pub fn subscriber_count(&self, channel: &str) -> usize {
        self.read().channels.get(channel).map_or(0, |c| c.subscribers.len())
    }

    /// Connected clients.
    pub fn connection_count(&self) -> usize {
        self.read().connections.len()
    }

    /// Channels with at least one local subscriber.
    pub fn channel_count(&self) -> usize {
        self.read().channels.len()
    }

    /// Frames queued over all connections.
    pub fn queued_frames(&self) -> usize {
        self.read().connections.values().map(|e| e.conn.outbox.len()).sum()
    }

    /// Every connection with its channels.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.read()
            .connections
            .values()
            .map(|e| ConnectionInfo {
                conn: e.conn.clone(),
                channels: e.channels.iter().map(|c| c.to_string()).collect(),
            })
            .collect()
    }

    /// The channels `id` is subscribed to.
    pub fn channels_of(&self, id: ConnId) -> Vec<String> {
        self.read().connections.get(&id).map_or_else(Vec::new, |e| e.channels.iter().map(|c| c.to_string()).collect())
    }

    /// Every channel with its subscriber count and position.
    pub fn channels(&self) -> Vec<ChannelInfo> {
        self.read()
            .channels
            .iter()
            .map(|(name, c)| ChannelInfo {
                name: name.to_string(),
                subscribers: c.subscribers.len(),
                position: StreamPosition { offset: c.last_offset.load(Relaxed), epoch: c.epoch.clone() },
            })
            .collect()
    }
}

impl Fanned {
    fn plus(self, o: Fanned) -> Fanned {
        Fanned {
            queued: self.queued + o.queued,
            overflowed: self.overflowed + o.overflowed,
            dropped: self.dropped + o.dropped,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Held-frame maps are updated in single inserts and removes; a poisoned lock holds valid data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn forget_held(c: &ChannelEntry, id: ConnId) {
    let mut held = lock(&c.catching_up);
    if held.remove(&id).is_some() {
        c.n_catching_up.store(held.len(), Relaxed);
    }
}

fn push_all<'a>(conns: impl Iterator<Item = &'a Arc<ConnShared>>, frame: &Prepared) -> Fanned {
    let mut out = Fanned::default();
    for conn in conns {
        match conn.outbox.push(frame.for_conn(conn.deflate).clone()) {
            Pushed::Queued => out.queued += 1,
            Pushed::DroppedOldest(n) => {
                out.queued += 1;
                out.dropped += n as u64;
            }
            Pushed::Overflowed => out.overflowed += 1,
            Pushed::Closed => {}
        }
    }
    out
}
