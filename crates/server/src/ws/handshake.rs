//! The HTTP/1.1 upgrade (RFC 6455 §4.2) on `/ws` and its aliases.
//!
//! After the 101 response, hyper hands back the connection; we take the raw `TcpStream` out of it so
//! the session can wait for readiness without holding a buffer (see `session/mod.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hubbub_proto::deflate;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use std::time::Duration;

use crate::access::rejections::Limit;
use crate::access::{ConnectionSlot, Identity, UserSlot};
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::ws::session;
use crate::ws::transport::Transport;

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
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    mut req: Request,
) -> Response {
    let headers = req.headers();
    let remote = app.access.client_addr(peer, headers);
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
    let client_name: Option<String> =
        query.get("client_name").filter(|n| !n.is_empty()).map(|n| n.chars().take(128).collect());
    if client_name.as_deref().is_some_and(|n| n.chars().any(char::is_control)) {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_client_name",
            "client_name may not contain control characters",
        )
        .into_response();
    }
    if app.shutdown.is_cancelled() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the hub is shutting down; connect to another node",
        )
        .into_response();
    }
    let slot = match admit(&app, remote, headers) {
        Ok(slot) => slot,
        Err(refusal) => return refusal,
    };
    let identity = match presented_token(&query, headers) {
        None => None,
        Some(token) => match admit_token(&app, &token).await {
            Ok(i) => Some(i),
            Err(refusal) => return refusal,
        },
    };
    let accept = accept_key(key);
    let deflate = if app.settings.websocket.compression {
        let offers = headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS);
        deflate::negotiate(offers.iter().filter_map(|v| v.to_str().ok()))
    } else {
        None
    };
    let path = req.uri().path().to_owned();
    let auto = app.settings.server.auto_subscribe.get(&path).cloned().unwrap_or_default();
    let on_upgrade = hyper::upgrade::on(&mut req);

    let sessions = app.sessions.clone();
    sessions.spawn(async move {
        // The connection's slot is held until the session ends (or the upgrade fails).
        let _slot = slot;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "upgrade failed");
                return;
            }
        };
        let (transport, read_buf) = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(p) => (Transport::Plain(p.io.into_inner()), p.read_buf),
            Err(upgraded) => match upgraded.downcast::<TokioIo<tokio_rustls::server::TlsStream<TcpStream>>>() {
                Ok(p) => {
                    let (tcp, tls) = p.io.into_inner().into_inner();
                    (Transport::tls(tcp, tls), p.read_buf)
                }
                Err(_) => {
                    tracing::error!("upgraded connection is neither TCP nor TLS; this is a bug in serve()");
                    return;
                }
            },
        };
        let echo = app.settings.websocket.echo_path.as_deref() == Some(path.as_str());
        let conn = app.hub.connect(hubbub::ConnectInfo {
            client_name,
            remote_addr: Some(remote),
            deflate: deflate.is_some_and(|d| d.compresses_outgoing()),
            // Echo connections (protocol tests) are never admitted to hub-wide frames.
            awaiting_auth: echo || (app.settings.auth.required && identity.is_none()),
        });
        let start = session::Start {
            settings: app.settings.clone(),
            access: app.access.clone(),
            auto_subscribe: auto,
            shutdown: app.shutdown.clone(),
            identity,
            echo,
            deflate,
        };
        session::run(transport, read_buf, conn, start).await;
    });

    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(d) = deflate {
        response = response.header(header::SEC_WEBSOCKET_EXTENSIONS, d.response_header());
    }
    response.body(axum::body::Body::empty()).unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Origin, connection count and per-address rate: checked before anything is allocated.
// A refusal is the response itself; it is built once per refused upgrade, so its size is moot.
#[allow(clippy::result_large_err)]
fn admit(app: &AppState, remote: SocketAddr, headers: &HeaderMap) -> Result<ConnectionSlot, Response> {
    let allowed = &app.settings.server.allowed_origins;
    if !allowed.is_empty()
        && let Some(origin) = headers.get(header::ORIGIN)
    {
        let origin = origin.to_str().unwrap_or("");
        if !allowed.iter().any(|p| hubbub::config::glob_match(p, origin)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                format!("origin {origin:?} is not in server.allowed_origins"),
            )
            .into_response());
        }
    }
    let max = app.settings.limits.max_connections;
    let Some(slot) = app.access.claim_connection_slot(max) else {
        app.access.rejections.hit(Limit::MaxConnections);
        let e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            format!("this node has its {max} connections (limits.max_connections); retry later or use another node"),
        );
        return Err(e.retry_after(Duration::from_secs(5)).into_response());
    };
    if let Err(wait) = app.access.connects.hit(&remote.ip()) {
        app.access.rejections.hit(Limit::ConnectionsPerIp);
        let per_minute = app.settings.limits.connections_per_ip_per_minute;
        let e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connection_attempts",
            format!("over {per_minute} new connections a minute from {}", remote.ip()),
        );
        return Err(e.retry_after(wait).into_response());
    }
    Ok(slot)
}

/// A token from `?token=` or `Authorization: Bearer`.
fn presented_token(query: &HashMap<String, String>, headers: &HeaderMap) -> Option<String> {
    if let Some(t) = query.get("token").filter(|t| !t.is_empty()) {
        return Some(t.clone());
    }
    crate::http::auth::bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())).map(str::to_owned)
}

/// Verifies a token presented with the upgrade and takes the user's connection slot. A refused
/// token is refused here, with HTTP 401 and the reason, rather than after the upgrade.
#[allow(clippy::result_large_err)]
async fn admit_token(app: &AppState, token: &str) -> Result<(Identity, Option<UserSlot>), Response> {
    let Some(verifier) = app.access.verifier.as_ref() else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this hub checks no tokens ([auth] has no key); connect without one",
        )
        .into_response());
    };
    let identity = verifier.verify(token).await.map_err(|e| {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", format!("token refused: {e}")).into_response()
    })?;
    let slot = match &identity.user {
        None => None,
        Some(user) => {
            let max = app.settings.limits.max_connections_per_user;
            match app.access.claim_user_slot(user, max) {
                Some(slot) => Some(slot),
                None => {
                    app.access.rejections.hit(Limit::MaxConnectionsPerUser);
                    let e = ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too_many_user_connections",
                        format!("user {user:?} has {max} connections already (limits.max_connections_per_user)"),
                    );
                    return Err(e.retry_after(Duration::from_secs(5)).into_response());
                }
            }
        }
    };
    Ok((identity, slot))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc_6455_example_key() {
        assert_eq!(super::accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
