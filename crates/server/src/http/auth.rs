//! Who may use `/api/v1/*`, `/metrics` and `/admin`'s data.
//!
//! With API keys configured (`server.api_key`, `[[server.api_keys]]`): only requests with
//! `Authorization: Bearer <key>` (compared in constant time) whose key has the route's scope
//! (`admin` includes `publish` and `read`). Without any key: only loopback peers, unless
//! `server.allow_public_api_without_key` is true — an open publish API on a public address is a
//! mistake we do not make silently.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;
use crate::settings::{Scope, ServerSettings};
use crate::state::AppState;

/// Middleware for routes that publish.
pub async fn require_publish(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    guard(Scope::Publish, state, peer, req, next).await
}

/// Middleware for routes that read stats, lists and history.
pub async fn require_read(state: State<AppState>, peer: ConnectInfo<SocketAddr>, req: Request, next: Next) -> Response {
    guard(Scope::Read, state, peer, req, next).await
}

/// Middleware for the dashboard's routes.
pub async fn require_admin(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    guard(Scope::Admin, state, peer, req, next).await
}

async fn guard(
    needed: Scope,
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let remote = app.access.client_addr(peer, req.headers());
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Err(e) = check(&app.settings.server, remote, authorization, needed) {
        return e.into_response();
    }
    if needed == Scope::Publish {
        // Per key (the validated credential itself, however the header spells "Bearer"), or per
        // address when the API has no keys (any header text would otherwise be a fresh allowance).
        let who = match bearer(authorization) {
            Some(key) if app.settings.server.has_api_keys() => key.to_owned(),
            _ => remote.ip().to_string(),
        };
        if let Err(wait) = app.access.publishes.hit(&who) {
            app.access.rejections.hit(crate::access::rejections::Limit::PublishesPerKey);
            let per_minute = app.settings.limits.publishes_per_key_per_minute;
            let e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("over {per_minute} publishes a minute with this key (limits.publishes_per_key_per_minute)"),
            );
            return e.retry_after(wait).into_response();
        }
    }
    next.run(req).await
}

/// CORS for the HTTP API: pages from `server.cors_origins` may call it. Preflights are answered
/// here; other requests get `Access-Control-Allow-Origin` for an allowed origin, nothing otherwise.
pub async fn cors(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let allowed = &app.settings.server.cors_origins;
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| allowed.iter().any(|p| hubbub::config::glob_match(p, o)))
        .and_then(|o| axum::http::HeaderValue::from_str(o).ok());
    let Some(origin) = origin else { return next.run(req).await };
    let preflight = req.method() == axum::http::Method::OPTIONS;
    let mut res = if preflight { StatusCode::NO_CONTENT.into_response() } else { next.run(req).await };
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.append(header::VARY, axum::http::HeaderValue::from_static("origin"));
    if preflight {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, axum::http::HeaderValue::from_static("GET, POST"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            axum::http::HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, axum::http::HeaderValue::from_static("600"));
    }
    res
}

/// The access rule, given the peer, its `Authorization` header and the scope the route needs.
pub fn check(
    server: &ServerSettings,
    remote: SocketAddr,
    authorization: Option<&str>,
    needed: Scope,
) -> Result<(), ApiError> {
    if !server.has_api_keys() {
        if !is_loopback(remote.ip()) && !server.allow_public_api_without_key {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "api_loopback_only",
                "no server.api_key is set, so the API only answers loopback clients; set an API key",
            ));
        }
        return Ok(());
    }
    let given = bearer(authorization).map(str::as_bytes).ok_or_else(|| {
        ApiError::new(StatusCode::UNAUTHORIZED, "missing_api_key", "send Authorization: Bearer <api key>")
    })?;
    // Compare with every key (no early exit) so the time taken does not say which key was close.
    let mut scopes: Option<&[Scope]> = None;
    for (key, key_scopes) in server.keys() {
        if constant_time_eq(given, key.as_bytes()) {
            scopes = Some(key_scopes);
        }
    }
    let scopes =
        scopes.ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", "the API key is not valid"))?;
    if scopes.iter().any(|s| *s == needed || *s == Scope::Admin) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this API key lacks the {:?} scope this endpoint needs", needed.as_str()),
        ))
    }
}

/// The credential of an `Authorization: Bearer <credential>` header (the scheme is
/// case-insensitive, RFC 7235); the one parser for API keys and WebSocket tokens.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, credential)| credential.trim())
        .filter(|c| !c.is_empty())
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
    use crate::settings::ApiKeySettings;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_a_key_only_loopback_unless_opted_out() {
        let mut server = ServerSettings::default();
        assert!(check(&server, addr("127.0.0.1:5"), None, Scope::Admin).is_ok());
        assert!(check(&server, addr("[::1]:5"), None, Scope::Publish).is_ok());
        assert!(check(&server, addr("[::ffff:127.0.0.1]:5"), None, Scope::Read).is_ok());
        assert_eq!(check(&server, addr("10.1.2.3:5"), None, Scope::Read).unwrap_err().code(), "api_loopback_only");
        server.allow_public_api_without_key = true;
        assert!(check(&server, addr("10.1.2.3:5"), None, Scope::Publish).is_ok());
    }

    #[test]
    fn with_a_key_everyone_needs_it() {
        let server = ServerSettings { api_key: Some("k".repeat(16)), ..ServerSettings::default() };
        let good = format!("Bearer {}", "k".repeat(16));
        let at = addr("127.0.0.1:5");
        assert_eq!(check(&server, at, None, Scope::Read).unwrap_err().code(), "missing_api_key");
        assert_eq!(check(&server, at, Some("Bearer nope"), Scope::Read).unwrap_err().code(), "invalid_api_key");
        assert!(check(&server, addr("10.1.2.3:5"), Some(&good), Scope::Admin).is_ok());
    }

    #[test]
    fn scopes_limit_what_a_key_may_do() {
        let key =
            |k: &str, scopes: &[Scope]| ApiKeySettings { name: k.into(), key: k.repeat(16), scopes: scopes.to_vec() };
        let server = ServerSettings {
            api_keys: vec![key("p", &[Scope::Publish]), key("r", &[Scope::Read]), key("a", &[Scope::Admin])],
            ..ServerSettings::default()
        };
        let at = addr("10.0.0.1:5");
        let with = |k: &str, s| check(&server, at, Some(&format!("Bearer {}", k.repeat(16))), s).map_err(|e| e.code());
        assert_eq!(with("p", Scope::Publish), Ok(()));
        assert_eq!(with("p", Scope::Read), Err("insufficient_scope"));
        assert_eq!(with("r", Scope::Read), Ok(()));
        assert_eq!(with("r", Scope::Publish), Err("insufficient_scope"));
        assert_eq!(with("r", Scope::Admin), Err("insufficient_scope"));
        for s in [Scope::Publish, Scope::Read, Scope::Admin] {
            assert_eq!(with("a", s), Ok(()));
        }
    }
}
