//! The `hubbub` binary: parse the command line, load settings, run.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use hubbub_server::cli::{Cli, Command, ConfigAction};
use hubbub_server::settings::{BrokerKind, Overrides, Settings, Store};
use hubbub_server::{commands, serve};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HUBBUB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config, bind } => {
            let settings = Settings::load(config.as_deref(), &Overrides { bind })?;
            let listener = tokio::net::TcpListener::bind(settings.server.bind)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.server.bind))?;
            if !settings.server.has_api_keys() && !settings.server.bind.ip().is_loopback() {
                if settings.server.allow_public_api_without_key {
                    tracing::warn!(
                        "no server.api_key and allow_public_api_without_key = true: anyone who can reach this port can publish"
                    );
                } else {
                    tracing::warn!(
                        "no server.api_key: the HTTP API answers loopback clients only (WebSocket clients may connect from anywhere)"
                    );
                }
            }
            let hub = build_hub(&settings)?;
            serve::serve(listener, hub, Arc::new(settings), shutdown_signal()).await
        }
        Command::Config { action: ConfigAction::Check { file } } => {
            let settings = Settings::load(Some(&file), &Overrides::default())?;
            println!("# {} is valid; effective settings:\n{}", file.display(), settings.to_toml());
            Ok(())
        }
        Command::Sub { url, channels, all } => commands::sub::run(&url, &channels, all).await,
        Command::Pub { channel, event, url, api_key } => commands::publish::run(&url, api_key, &channel, &event).await,
        Command::Demo { url, api_key, rate, count } => commands::demo::run(&url, api_key, rate, count).await,
        Command::Bench(args) => commands::bench::run(args).await,
    }
}

/// The hub with the configured history store.
fn build_hub(settings: &Settings) -> anyhow::Result<hubbub::Hub> {
    if settings.broker == BrokerKind::Redis {
        return hubbub_server::redis_hub(settings);
    }
    match settings.history.store {
        Store::Memory => Ok(hubbub::Hub::new(settings.hub_config())),
        Store::Disk => {
            let path = &settings.history.path;
            std::fs::create_dir_all(path).map_err(|e| anyhow::anyhow!("history.path {}: {e}", path.display()))?;
            let journal = hubbub_store::open(path)?;
            let hub = hubbub::Hub::with_journal(settings.hub_config(), journal)?;
            tracing::info!(path = %path.display(), "history store: disk");
            Ok(hub)
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
