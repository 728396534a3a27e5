//! The WebSocket side: the upgrade handshake and the per-connection session.

pub mod handshake;
pub mod session;
pub mod transport;
