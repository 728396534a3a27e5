//! The hubbub server: settings, the HTTP API, the WebSocket endpoint and the CLI commands, around
//! the `hubbub` library. The binary (`main.rs`) only parses the command line and calls in here;
//! tests call [`serve::serve`] directly on a listener they bound.
//!
//! # Layout
//! - [`settings`]: defaults < TOML < `HUBBUB_*` env < flags, validated.
//! - [`serve`]: the accept loop, graceful shutdown, the `serve(listener, hub, settings, shutdown)` seam.
//! - [`http`]: routes, the JSON API, API access rules.
//! - [`ws`]: the upgrade handshake and the per-connection session.
//! - [`commands`]: `sub`, `pub`, `demo`, `bench`.
//! - [`cli`]: the command-line definition.

pub mod cli;
pub mod commands;
pub mod http;
pub mod serve;
pub mod settings;
pub mod state;
pub mod ws;
