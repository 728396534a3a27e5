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

use crate::access::Access;
use crate::access::rejections::Limit;
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
    let tls = tls_acceptor(&settings)?;
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
    tracing::info!(addr = %listener.local_addr()?, broker = hub.broker_name(), tls = tls.is_some(), "hubbub listening");
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
        let access = state.access.clone();
        match tls.clone() {
            None => {
                http_conns.spawn(async move {
                    serve_connection(stream, remote, router, token, handshake_timeout, access).await
                });
            }
            Some(acceptor) => {
                http_conns.spawn(async move {
                    // The TLS handshake shares the slowloris budget with the HTTP request head.
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_connection(tls, remote, router, token, handshake_timeout, access).await,
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                        Err(_) => {
                            access.rejections.hit(Limit::HandshakeTimeout);
                            tracing::debug!(%remote, "TLS handshake timed out");
                        }
                    }
                });
            }
        }
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

/// The rustls acceptor for `[tls]`, or `None` for plain TCP.
fn tls_acceptor(settings: &Settings) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&settings.tls.cert, &settings.tls.key) else { return Ok(None) };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("tls.cert {}: {e}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "tls.cert {}: no certificate in the file", cert.display());
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("tls.key {}: {e}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| anyhow::anyhow!("tls.cert / tls.key do not make a usable pair: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

async fn serve_connection<I>(
    stream: I,
    remote: SocketAddr,
    router: axum::Router,
    shutdown: CancellationToken,
    handshake_timeout: std::time::Duration,
    access: Arc<Access>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
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
                if e.is_timeout() {
                    access.rejections.hit(Limit::HandshakeTimeout);
                }
                tracing::debug!(%remote, error = %e, "http connection error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
