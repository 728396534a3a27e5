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

pub mod access;
pub mod cli;
pub mod commands;
pub mod http;
pub mod serve;
pub mod settings;
pub mod state;
pub mod ws;

/// A hub on the Redis broker described by `settings.redis`.
pub fn redis_hub(settings: &settings::Settings) -> anyhow::Result<hubbub::Hub> {
    let config = settings.hub_config();
    let tls_root = match &settings.redis.tls_ca_file {
        Some(path) => {
            Some(std::fs::read(path).map_err(|e| anyhow::anyhow!("redis.tls_ca_file {}: {e}", path.display()))?)
        }
        None => None,
    };
    let endpoint = if settings.redis.sentinels.is_empty() {
        hubbub_redis::Endpoint::Url { url: settings.redis.url.clone(), tls_root }
    } else {
        hubbub_redis::Endpoint::Sentinel {
            sentinels: settings.redis.sentinels.clone(),
            service: settings.redis.sentinel_service.clone(),
        }
    };
    let mut failed = None;
    let hub = hubbub::Hub::with_broker(config.clone(), |fanout| {
        match hubbub_redis::RedisBroker::new(
            fanout.clone(),
            config.clone(),
            endpoint.clone(),
            &settings.redis.prefix,
            match settings.redis.on_failure {
                settings::OnRedisFailure::Local => hubbub_redis::OnFailure::Local,
                settings::OnRedisFailure::Fail => hubbub_redis::OnFailure::Fail,
            },
        ) {
            Ok(b) => Box::new(b),
            Err(e) => {
                failed = Some(e);
                Box::new(hubbub::broker::memory::MemoryBroker::new(fanout, config.clone()))
            }
        }
    });
    match failed {
        Some(e) => Err(anyhow::anyhow!("{e}")),
        None => {
            // The URL may carry a password: log only where it points.
            let at = settings.redis.url.rsplit('@').next().unwrap_or_default();
            tracing::info!(redis = %at, prefix = %settings.redis.prefix, "broker: redis");
            Ok(hub)
        }
    }
}
