//! The `/admin` dashboard: a page built into the binary (no CDN) and the one endpoint it polls.

use axum::extract::State;
use axum::response::{Html, Response};
use serde_json::json;

use crate::http::api::{channel_rows, connection_rows, latency_value, ok, stats_value};
use crate::state::AppState;

/// `GET /admin`: charts, channel and connection lists, publish and broadcast forms. The page
/// holds no data; it asks for the admin key and sends it with every request.
pub async fn page() -> Html<&'static str> {
    Html(include_str!("../../assets/admin.html"))
}

/// `GET /api/v1/admin/overview` (scope `admin`): everything the dashboard draws, in one request
/// per refresh, so one open dashboard costs the hub one snapshot a second.
pub async fn overview(State(app): State<AppState>) -> Response {
    ok(json!({
        "stats": stats_value(&app),
        "latency_ms": latency_value(&app),
        "channels": channel_rows(&app),
        "connections": connection_rows(&app),
    }))
}
