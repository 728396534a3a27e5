//! The hubbub library: channels, subscriptions and fan-out, with no HTTP, CLI, environment or file
//! IO inside. The server crate puts sockets and an HTTP API around it; a Rust program can embed it
//! and publish in-process with the same semantics.
//!
//! # Layout
//! - [`Hub`] ([`hub`]): the handle everything goes through: connect, publish, broadcast, history.
//! - [`Connection`] ([`connection`]): one client's membership: subscribe (with recovery or acks),
//!   acknowledge, leave.
//! - [`registry`]: the one registry of connections and subscriptions.
//! - [`outbox`]: each connection's bounded queue of encoded frames, and its overflow policy.
//! - [`fanout`]: the one delivery path: encode once, queue the same bytes to every subscriber.
//! - [`broker`]: the seam publications flow through, with its delivery contract; [`broker::memory`]
//!   is the default.
//! - [`history`]: a channel's bounded history, plain data.
//! - [`journal`]: the trait a disk store implements so history survives restarts.
//! - [`stats`]: counters and the latency window behind health levels.
//! - [`config`]: the settings this library acts on, as plain data.
//!
//! # Example
//! ```
//! # tokio_test();
//! # fn tokio_test() {
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! rt.block_on(async {
//!     let hub = hubbub::Hub::new(hubbub::HubConfig::default());
//!     let conn = hub.connect(hubbub::ConnectInfo::default());
//!     conn.subscribe(&["news".to_string()]).await.unwrap();
//!     let event = hubbub::Event::from_json(r#"{"type":"headline","data":{"text":"hi"}}"#).unwrap();
//!     let receipts = hub.publish(&["news".to_string()], event).await.unwrap();
//!     assert_eq!(receipts[0].receipt.delivered, 1);
//!     assert_eq!(receipts[0].receipt.offset, Some(1));
//! });
//! # }
//! ```

pub mod broker;
pub mod channel_name;
pub mod config;
pub mod connection;
pub mod event;
pub mod fanout;
pub mod history;
pub mod hub;
mod idempotency;
pub mod journal;
pub mod outbox;
pub mod registry;
pub mod stats;

pub use config::{HubConfig, OverflowPolicy};
pub use connection::{Connection, Recovery, SubscribeError, SubscribeOptions, Subscribed};
pub use event::Event;
pub use hub::{ChannelReceipt, ConnectInfo, Hub, PublishError, PublishOptions, PublishOutcome};
pub use registry::StreamPosition;
