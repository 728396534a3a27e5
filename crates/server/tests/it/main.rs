#![allow(unreachable_pub, missing_docs)]
//! The server's integration tests: one binary, a module per area. Every test starts a real hub on
//! `127.0.0.1:0` and talks to it over real sockets with a real WebSocket client
//! (`tokio-websockets`, independent of the hub's own framing) or raw TCP where a test must misbehave.

mod api; // the HTTP API: publish, broadcast, stats, connections, channels, health, API key
mod cli; // the binary: config check, env layering, sub/pub, SIGTERM shutdown
mod compression; // permessage-deflate: negotiation, one compression per publication, limits
mod delivery; // order under concurrent publishers, slow consumers, isolation
mod errors; // every row of the error table, oversize frames, error budget
mod history; // history, recovery without gap or duplicate, acks, idempotency, durability
mod lifecycle; // heartbeats, pings, read timeout, graceful shutdown
mod protocol; // welcome, every subscribe form, unsubscribe, ping, ids, broadcast
mod redis; // several nodes on one Redis: fan-out, isolation, shared history and acks, failures
mod security; // the red-team table: tokens, permissions, limits, origins
mod seeds; // each seed application's front-end flow, unchanged
mod support; // starting hubs and raw clients
