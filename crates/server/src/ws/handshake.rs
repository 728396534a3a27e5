//! The HTTP/1.1 upgrade (RFC 6455 §4.2) on `/ws` and its aliases.
//!
//! After the 101 response, hyper hands back the connection; we take the raw `TcpStream` out of it so
//! the session can wait for readiness without holding a buffer (see `session.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::http::error::ApiError;
use crate::state::AppState;
use crate::ws::session;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a client's key.
pub fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Handles `GET /ws` (and aliases): checks the upgrade request, answers 101 and starts the session.
pub async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    mut req: Request,
) -> Response {
    let headers = req.headers();
    if !header_has_token(headers, header::UPGRADE, "websocket")
        || !header_has_token(headers, header::CONNECTION, "upgrade")
    {
        return ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_upgrade_required",
            "this is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)",
        )
        .into_response();
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13") {
        let mut r = ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_websocket_version",
            "only Sec-WebSocket-Version 13 is supported",
        )
        .into_response();
        r.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, header::HeaderValue::from_static("13"));
        return r;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).and_then(|v| v.to_str().ok()) else {
        return ApiError::new(StatusCode::BAD_REQUEST, "missing_websocket_key", "Sec-WebSocket-Key header is missing")
            .into_response();
    };
    if app.shutdown.is_cancelled() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the hub is shutting down; connect to another node",
        )
        .into_response();
    }
    let accept = accept_key(key);
    let path = req.uri().path().to_owned();
    let auto = app.settings.server.auto_subscribe.get(&path).cloned().unwrap_or_default();
    let client_name = query.get("client_name").filter(|n| !n.is_empty()).map(|n| n.chars().take(128).collect());
    let on_upgrade = hyper::upgrade::on(&mut req);

    let sessions = app.sessions.clone();
    sessions.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "upgrade failed");
                return;
            }
        };
        let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(p) => p,
            Err(_) => {
                tracing::error!("upgraded connection is not a TCP stream; this is a bug in serve()");
                return;
            }
        };
        let conn = app.hub.connect(hubbub::ConnectInfo { client_name, remote_addr: Some(remote) });
        session::run(parts.io.into_inner(), parts.read_buf, conn, app.settings.clone(), auto, app.shutdown.clone())
            .await;
    });

    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc_6455_example_key() {
        assert_eq!(super::accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
