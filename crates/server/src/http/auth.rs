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
use crate::settings::ServerSettings;
use crate::state::AppState;

/// Middleware enforcing the rule above.
pub async fn require_api_access(
    State(app): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match check(&app.settings.server, remote, authorization) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// The access rule, given the peer and its `Authorization` header.
pub fn check(server: &ServerSettings, remote: SocketAddr, authorization: Option<&str>) -> Result<(), ApiError> {
    match &server.api_key {
        Some(key) => {
            // The scheme is case-insensitive (RFC 7235).
            let given = authorization
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, key)| key);
            match given {
                None => Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing_api_key",
                    "send Authorization: Bearer <api key>",
                )),
                Some(g) if !constant_time_eq(g.trim().as_bytes(), key.as_bytes()) => {
                    Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", "the API key is not valid"))
                }
                Some(_) => Ok(()),
            }
        }
        None if !is_loopback(remote.ip()) && !server.allow_public_api_without_key => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "api_loopback_only",
            "no server.api_key is set, so the API only answers loopback clients; set an API key",
        )),
        None => Ok(()),
    }
}

/// Loopback, including IPv4-mapped `::ffff:127.0.0.1` as a dual-stack listener reports it.
fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(v6.is_loopback(), |v4| v4.is_loopback()),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_a_key_only_loopback_unless_opted_out() {
        let mut server = ServerSettings::default();
        assert!(check(&server, addr("127.0.0.1:5"), None).is_ok());
        assert!(check(&server, addr("[::1]:5"), None).is_ok());
        assert!(check(&server, addr("[::ffff:127.0.0.1]:5"), None).is_ok());
        assert_eq!(check(&server, addr("10.1.2.3:5"), None).unwrap_err().code(), "api_loopback_only");
        server.allow_public_api_without_key = true;
        assert!(check(&server, addr("10.1.2.3:5"), None).is_ok());
    }

    #[test]
    fn with_a_key_everyone_needs_it() {
        let server = ServerSettings { api_key: Some("k".repeat(16)), ..ServerSettings::default() };
        let good = format!("Bearer {}", "k".repeat(16));
        assert_eq!(check(&server, addr("127.0.0.1:5"), None).unwrap_err().code(), "missing_api_key");
        assert_eq!(check(&server, addr("127.0.0.1:5"), Some("Bearer nope")).unwrap_err().code(), "invalid_api_key");
        assert!(check(&server, addr("10.1.2.3:5"), Some(&good)).is_ok());
    }
}
