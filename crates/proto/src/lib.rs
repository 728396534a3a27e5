//! hubbub's wire protocol, shared by the server, the Rust client and the benchmark.
//!
//! # Layout
//! - [`frame`]: RFC 6455 framing. Server frames are built once per publish and the same bytes go to
//!   every subscriber; client frames are decoded without allocating while a connection is idle.
//! - [`client`]: what a client may send, in every form the seed applications use.
//! - [`server`]: the frames the hub sends of its own (welcome, replies, heartbeats, errors).
//! - [`event`]: how a published event becomes the delivered JSON (publisher's keys are never touched).
//! - [`codes`]: the closed tables of error codes and close codes, with their meaning.
//!
//! This is the only crate that derives `Serialize`/`Deserialize`: everything that crosses the wire is
//! defined here and nowhere else.

pub mod client;
pub mod codes;
pub mod deflate;
pub mod event;
pub mod frame;
pub mod server;
pub mod time;

pub use codes::{CloseCode, ErrorCode};
