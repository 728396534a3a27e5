//! The seam through which publications reach this node's subscribers.
//!
//! A [`Broker`] decides where a publication's position (offset, epoch) comes from, keeps channel
//! history and ack cursors, and decides which nodes see a publication. The in-memory broker serves
//! one process (optionally with a disk [`Journal`](crate::journal::Journal)); the Redis broker
//! (`hubbub-redis`) serves many. Every broker hands publications to the same `Fanout`, so there is one
//! delivery path.
//!
//! # Delivery contract
//! - **At most once, to live subscribers.** A publication reaches the subscribers that were
//!   subscribed on some node when the broker delivered it there. Catching up is done from
//!   [`Broker::history`], not by the broker re-sending.
//! - **Per-channel order.** On every node, a channel's publications reach [`Fanout::deliver_frame`](crate::fanout::Fanout::deliver_frame) in
//!   offset order, one at a time, even under concurrent publishers.
//! - **History before delivery.** A publication is in the channel's history (when the channel has
//!   history) before it is handed to the fan-out, so a reader that joined the fan-out first and read
//!   history second misses nothing.
//! - **Node-level interest.** The hub calls [`Broker::subscribe`] when a channel gets its first local
//!   subscriber and [`Broker::unsubscribe`] when it loses its last one; the broker never sees
//!   individual clients. Calls for one channel are serialized by the hub.
//! - **Position.** Offsets increase by one per publication within an epoch. A broker that loses a
//!   channel's state (restart without a journal, expiry of an idle channel) starts a new epoch.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::event::Event;
use crate::history::{Entry, Gap};
use crate::registry::StreamPosition;

pub mod memory;

/// A boxed future, as returned by [`Broker`] methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The publication's offset, or `None` when the channel has neither subscribers nor history
    /// (nothing was delivered or kept).
    pub offset: Option<u64>,
    /// The channel's epoch, when it has one.
    pub epoch: Option<String>,
    /// Local subscribers the event was queued to.
    pub delivered: u64,
    /// Whether the publication is in the channel's history.
    pub stored: bool,
}

/// Which part of a channel's history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Publications after this offset, oldest first; `None` for the oldest (or, with `reverse`,
    /// the newest) held.
    pub since: Option<u64>,
    /// At most this many.
    pub limit: usize,
    /// Newest first (only without `since`).
    pub reverse: bool,
}

/// A page of history.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The publications, as complete frames.
    pub entries: Vec<Entry>,
    /// The channel's current position.
    pub position: StreamPosition,
    /// Set when `since` could not be served: the entries after it are gone.
    pub gap: Option<Gap>,
}

/// A broker's health and, for multi-node brokers, the cluster view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerStatus {
    /// False while the broker cannot reach its backend (health then reports `degraded`).
    pub healthy: bool,
    /// This node's id, for multi-node brokers.
    pub node_id: Option<String>,
    /// Nodes seen alive, this one included.
    pub nodes_alive: Option<u64>,
    /// Times the backend connection was lost since start.
    pub disconnects: u64,
    /// Publishes delivered to this node only because the backend was unreachable.
    pub local_fallbacks: u64,
}

/// Why a broker could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
#[error("broker unavailable: {0}")]
pub struct BrokerError(pub String);

/// See the module docs for the contract every implementation keeps.
pub trait Broker: Send + Sync + 'static {
    /// Starts delivering `channel` to this node; returns the channel's current position.
    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<StreamPosition, BrokerError>>;
    /// Stops delivering `channel` to this node.
    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Publishes `event` on `channel`; with `durable`, returns only once the publication is on
    /// stable storage.
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        event: Arc<Event>,
        durable: bool,
    ) -> BoxFuture<'a, Result<Receipt, BrokerError>>;
    /// Sends `event` to every connection on every node; returns how many local ones it was queued to.
    fn broadcast(&self, event: Arc<Event>) -> BoxFuture<'_, Result<u64, BrokerError>>;
    /// Reads `channel`'s history; `None` when the channel keeps none.
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<Option<HistoryPage>, BrokerError>>;
    /// The last offset `identity` acknowledged on `channel`, with the epoch it counts in.
    fn cursor<'a>(
        &'a self,
        identity: &'a str,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Option<StreamPosition>, BrokerError>>;
    /// Moves `identity`'s cursor on `channel` forward to `position` (never backward within an
    /// epoch).
    fn set_cursor<'a>(
        &'a self,
        identity: &'a str,
        channel: &'a str,
        position: StreamPosition,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Periodic housekeeping (expiry, background sync); the hub calls it about once a second.
    fn maintain(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
    /// How the broker is doing, for `/api/v1/health` and `/api/v1/stats`.
    fn status(&self) -> BrokerStatus {
        BrokerStatus { healthy: true, ..BrokerStatus::default() }
    }
    /// Whether `publish(…, durable = true)` can be honoured.
    fn durable(&self) -> bool;
    /// A short name for logs and stats.
    fn name(&self) -> &'static str;
}
