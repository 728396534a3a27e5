//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// hubbub: a self-hosted real-time event hub.
#[derive(Debug, Parser)]
#[command(name = "hubbub", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub (in-memory broker; nothing else needed).
    Serve {
        /// TOML settings file.
        #[arg(long, short, env = "HUBBUB_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on (overrides the file and HUBBUB_SERVER__BIND).
        #[arg(long)]
        bind: Option<SocketAddr>,
    },
    /// Work with settings files.
    Config {
        /// What to do with the file.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Subscribe and print events as JSON lines; reconnects with backoff.
    Sub {
        /// WebSocket URL, e.g. ws://127.0.0.1:8000/ws
        url: String,
        /// Channels to subscribe to.
        #[arg(required = true)]
        channels: Vec<String>,
        /// Print heartbeats and replies too, not only events.
        #[arg(long)]
        all: bool,
    },
    /// Publish one event through the HTTP API.
    Pub {
        /// Channel to publish on.
        channel: String,
        /// The event, a JSON object.
        event: String,
        /// The hub's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8000")]
        url: String,
        /// API key, if the hub requires one.
        #[arg(long, env = "HUBBUB_API_KEY")]
        api_key: Option<String>,
    },
    /// Publish sample events of the seed applications' kinds, so you can watch something move.
    Demo {
        /// The hub's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8000")]
        url: String,
        /// API key, if the hub requires one.
        #[arg(long, env = "HUBBUB_API_KEY")]
        api_key: Option<String>,
        /// Events per second, over all channels.
        #[arg(long, default_value_t = 2.0)]
        rate: f64,
        /// Stop after this many events (default: run until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Measure the hub: fan-out throughput and latency, connection storm, idle memory.
    Bench(crate::commands::bench::BenchArgs),
}

/// `hubbub config …`
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate a settings file and print the effective settings (file plus HUBBUB_* variables).
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}
