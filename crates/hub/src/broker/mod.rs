//! The seam through which publications reach this node's subscribers.
//!
//! A [`Broker`] decides where a publication's position (offset, epoch) comes from and which nodes see
//! it. The in-memory broker serves one process; a Redis broker (a later issue) serves many. Both
//! hand every publication to the same [`Fanout`], so there is one delivery path.
//!
//! # Delivery contract
//! - **At most once, to live subscribers.** A publication reaches the subscribers that were
//!   subscribed on some node when the broker delivered it there. Catching up on missed events is
//!   history's job, not the broker's.
//! - **Per-channel order.** On every node, a channel's publications reach [`Fanout::deliver`] in
//!   offset order, one at a time, even under concurrent publishers.
//! - **Node-level interest.** The hub calls [`Broker::subscribe`] when a channel gets its first local
//!   subscriber and [`Broker::unsubscribe`] when it loses its last one; the broker never sees
//!   individual clients. Calls for one channel are serialized by the hub.
//! - **Position.** Offsets increase by one per publication within an epoch; a broker that loses a
//!   channel's state (restart, eviction) starts a new epoch.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::event::Event;
use crate::fanout::Fanout;
use crate::registry::StreamPosition;

pub mod memory;

/// A boxed future, as returned by [`Broker`] methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The publication's offset, or `None` when no node had the channel (nothing was delivered).
    pub offset: Option<u64>,
    /// The channel's epoch, when it has one.
    pub epoch: Option<String>,
    /// Local subscribers the event was queued to.
    pub delivered: u64,
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
    /// Publishes `event` on `channel`.
    fn publish<'a>(&'a self, channel: &'a str, event: Arc<Event>) -> BoxFuture<'a, Result<Receipt, BrokerError>>;
    /// Sends `event` to every connection on every node; returns how many local ones it was queued to.
    fn broadcast(&self, event: Arc<Event>) -> BoxFuture<'_, Result<u64, BrokerError>>;
    /// A short name for logs and stats.
    fn name(&self) -> &'static str;
}

/// Builds a broker around the hub's fan-out.
pub type BrokerFactory = Box<dyn FnOnce(Fanout) -> Box<dyn Broker>>;
