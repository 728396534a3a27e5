//! The HTTP side: routes, the JSON API and its access rule.

pub mod admin;
pub mod api;
pub mod auth;
pub mod error;
pub mod metrics;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;
use crate::ws::handshake;

/// The JavaScript client (`clients/js/hubbub.js`), built into the binary so a page served from
/// anywhere can `import { HubbubClient } from "http://hub/client.js"`.
async fn client_js() -> impl axum::response::IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        include_str!("../../../../clients/js/hubbub.js"),
    )
}

/// `/ws/test`: seed 000's interactive test page (status, connect/disconnect, reconnection shown
/// live, subscribe/unsubscribe, raw frames, a filterable event log, a publish form), built into
/// the binary.
async fn ws_test_page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../../assets/ws-test.html"))
}

/// Every route: WebSocket endpoints, the API (each group behind the scope it needs, see
/// [`auth`]), the seeds' compatibility aliases for it, and the built-in pages.
pub fn router(state: AppState) -> Router {
    let publish = Router::new()
        .route("/api/v1/publish", post(api::publish))
        .route("/api/v1/broadcast", post(api::broadcast))
        // Seed 004's management API.
        .route("/api/v1/websocket/broadcast", post(api::broadcast))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_publish));
    let read = Router::new()
        .route("/api/v1/stats", get(api::stats))
        .route("/api/v1/connections", get(api::connections))
        .route("/api/v1/channels", get(api::channels))
        .route("/api/v1/health", get(api::health))
        .route("/api/v1/channels/{channel}/history", get(api::history))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/metrics", get(api::metrics_json))
        .route("/api/v1/websocket/metrics", get(api::metrics_json))
        // Seed 004's management API and seed 001's monitoring paths.
        .route("/api/v1/websocket/stats", get(api::stats))
        .route("/api/v1/websocket/health", get(api::health))
        .route("/api/v1/websocket/connections", get(api::connections))
        // Seed 002's debugging endpoint (a flat object).
        .route("/ws/stats", get(api::flat_stats))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_read));
    let admin = Router::new()
        .route("/api/v1/admin/overview", get(admin::overview))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_admin));
    let api = publish.merge(read).merge(admin).layer(axum::middleware::from_fn_with_state(state.clone(), auth::cors));
    let mut router = Router::new().route("/ws", get(handshake::upgrade));
    for alias in state.settings.server.ws_aliases.iter().chain(&state.settings.websocket.echo_path) {
        router = router.route(alias, get(handshake::upgrade));
    }
    router
        .merge(api)
        .route("/", get(api::index))
        .route("/client.js", get(client_js))
        .route("/ws/test", get(ws_test_page))
        // The page holds no data; what it shows comes from /api/v1/admin/*, which needs the key.
        .route("/admin", get(admin::page))
        .fallback(api::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(state.settings.server.max_body_bytes))
        .with_state(state)
}
