//! [`serve`]: the seam between the process and the hub. The caller binds the listener (tests bind
//! `127.0.0.1:0`) and says when to stop.
//!
//! Shutdown: stop accepting, cancel the token (every session sends 1001 after draining its queue),
//! wait for sessions up to `server.shutdown_timeout`, return. axum's own graceful shutdown does not
//! wait for upgraded connections (tokio-rs/axum#3003), so the hub tracks its sessions itself.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use hubbub::Hub;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::settings::Settings;
use crate::state::AppState;

/// Serves HTTP and WebSocket connections on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    settings: Arc<Settings>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let state = AppState {
        hub: hub.clone(),
        settings: settings.clone(),
        shutdown: CancellationToken::new(),
        sessions: TaskTracker::new(),
        access: Arc::new(crate::access::Access::new(&settings)?),
    };
    let router = crate::http::router(state.clone());
    let http_conns = TaskTracker::new();
    let heartbeats = tokio::spawn({
        let hub = hub.clone();
        async move { hub.run_heartbeats().await }
    });
    let maintenance = tokio::spawn({
        let hub = hub.clone();
        async move { hub.run_maintenance().await }
    });
    tokio::pin!(shutdown);
    tracing::info!(addr = %listener.local_addr()?, broker = hub.broker_name(), "hubbub listening");
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let token = state.shutdown.clone();
        let handshake_timeout = settings.limits.handshake_timeout;
        http_conns.spawn(async move { serve_connection(stream, remote, router, token, handshake_timeout).await });
    }
    drop(listener);
    tracing::info!("shutting down: closing every connection with 1001");
    state.shutdown.cancel();
    heartbeats.abort();
    maintenance.abort();
    state.sessions.close();
    http_conns.close();
    let limit = settings.server.shutdown_timeout;
    let drained = tokio::time::timeout(limit, async {
        state.sessions.wait().await;
        http_conns.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(timeout = ?limit, "some connections did not drain in time");
    }
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    router: axum::Router,
    shutdown: CancellationToken,
    handshake_timeout: std::time::Duration,
) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote));
        router.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%remote, error = %e, "http connection error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
