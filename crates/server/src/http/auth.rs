//! Who may use `/api/v1/*`.
//!
//! With `server.api_key` set: only requests with `Authorization: Bearer <key>` (compared in constant
//! time). Without a key: only loopback peers, unless `server.allow_public_api_without_key` is true —
//! an open publish API on a public address is a mistake we do not make silently.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;
use crate::state::AppState;

/// Middleware enforcing the rule above.
pub async fn require_api_access(State(app): State<AppState>, ConnectInfo(remote): ConnectInfo<SocketAddr>, req: Request, next: Next) -> Response {
    let server = &app.settings.server;
    match &server.api_key {
        Some(key) => {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
            match given {
                None => {
                    return ApiError::new(StatusCode::UNAUTHORIZED, "missing_api_key", "send Authorization: Bearer <api key>")
                        .into_response();
                }
                Some(g) if !constant_time_eq(g.trim().as_bytes(), key.as_bytes()) => {
                    return ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", "the API key is not valid").into_response();
                }
                Some(_) => {}
            }
        }
        None if !remote.ip().is_loopback() && !server.allow_public_api_without_key => {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "api_loopback_only",
                "no server.api_key is set, so the API only answers loopback clients; set an API key",
            )
            .into_response();
        }
        None => {}
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
