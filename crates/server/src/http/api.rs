//! The JSON API handlers. Each answers `{"success":true,"data":…,"timestamp":…}` or an [`ApiError`].

use std::time::SystemTime;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hubbub::broker::HistoryQuery;
use hubbub::history::Gap;
use hubbub::{Event, PublishError, PublishOptions};
use hubbub_proto::time;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::sync::atomic::Ordering::Relaxed;

use crate::http::error::ApiError;
use crate::state::AppState;

pub(crate) fn ok(data: Value) -> Response {
    Json(json!({"success": true, "data": data, "timestamp": time::now_iso()})).into_response()
}

/// The request body, or the API's error shape when it was too large or unreadable (axum's own
/// rejection is plain text).
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "body_too_large",
                "the request body is over server.max_body_bytes; send a smaller event",
            )
        } else {
            ApiError::new(status, "unreadable_body", e.body_text())
        }
    })
}

fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("request body is not valid JSON for this endpoint: {e}"))
    })
}

#[derive(Deserialize)]
struct PublishBody<'a> {
    #[serde(default)]
    durable: bool,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    /// Users to reach: each becomes the channel `user:<id>` (every connection of that user).
    #[serde(default)]
    users: Option<Vec<String>>,
    #[serde(borrow)]
    event: Option<&'a RawValue>,
}

/// `POST /api/v1/publish` `{"channel":"x"` or `"channels":[…], "event":{…}}`.
pub async fn publish(State(app): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let req: PublishBody<'_> = parse_body(&body)?;
    let mut channels = req.channels.unwrap_or_default();
    if let Some(c) = req.channel {
        channels.insert(0, c);
    }
    for user in req.users.unwrap_or_default() {
        channels.push(format!("{}{user}", crate::access::policy::USER_PREFIX));
    }
    let raw =
        req.event.ok_or_else(|| ApiError::bad_request("missing_event", "add \"event\": a JSON object to deliver"))?;
    let event = Event::new(raw.to_owned()).map_err(|e| ApiError::bad_request("invalid_event", e.to_string()))?;
    let opts = PublishOptions { durable: req.durable, idempotency_key: req.idempotency_key };
    let outcome = app.hub.publish_with(&channels, event, opts).await.map_err(|e| match e {
        PublishError::NoChannel => ApiError::bad_request("missing_channel", e.to_string()),
        PublishError::InvalidChannel(m) => ApiError::bad_request("invalid_channel", m),
        PublishError::DurableUnavailable => ApiError::bad_request("durable_unavailable", e.to_string()),
        PublishError::NotStored(_) => ApiError::bad_request("no_history", e.to_string()),
        PublishError::KeyReused(_) => ApiError::new(StatusCode::CONFLICT, "idempotency_key_reused", e.to_string()),
        PublishError::Broker(b) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", b.to_string()),
    })?;
    let receipts = &outcome.receipts;
    let delivered: u64 = receipts.iter().map(|r| r.receipt.delivered).sum();
    let first = &receipts[0].receipt;
    let results: Vec<Value> = receipts
        .iter()
        .map(|r| {
            json!({"channel": r.channel, "offset": r.receipt.offset, "epoch": r.receipt.epoch,
                   "delivered": r.receipt.delivered, "stored": r.receipt.stored})
        })
        .collect();
    Ok(ok(json!({
        "channel": receipts[0].channel,
        "offset": first.offset,
        "epoch": first.epoch,
        "delivered": delivered,
        "stored": receipts.iter().all(|r| r.receipt.stored),
        "durable": req.durable,
        "duplicate": outcome.duplicate,
        "results": results,
    })))
}

/// `GET /api/v1/channels/{channel}/history?since=N&limit=N&reverse=true`.
pub async fn history(
    State(app): State<AppState>,
    Path(channel): Path<String>,
    q: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| {
        ApiError::bad_request(
            "invalid_query",
            format!("{}; use since=<offset>&limit=<1-10000>&reverse=true", e.body_text()),
        )
    })?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    if q.since.is_some() && q.reverse {
        return Err(ApiError::bad_request(
            "invalid_query",
            "reverse=true reads the newest entries; it cannot be combined with since",
        ));
    }
    let query = HistoryQuery { since: q.since, limit, reverse: q.reverse };
    let page = app.hub.history(&channel, query).await.map_err(|e| match e {
        PublishError::InvalidChannel(m) => ApiError::bad_request("invalid_channel", m),
        other => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", other.to_string()),
    })?;
    let Some(page) = page else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_history",
            format!("{channel:?} keeps no history; add a [[channels]] rule that matches it"),
        ));
    };
    if let Some(g) = page.gap {
        let (code, why) = match g {
            Gap::TooOld => ("history_gap", "the publications after `since` are no longer in history"),
            Gap::FromTheFuture => ("offset_ahead", "`since` is beyond the last publication"),
        };
        return Err(ApiError::new(
            StatusCode::GONE,
            code,
            format!("{why}; the channel is at offset {} in epoch {}", page.position.offset, page.position.epoch),
        ));
    }
    let events: Vec<Value> = page.entries.iter().filter_map(|e| frame_json(&e.frame)).collect();
    Ok(ok(json!({
        "channel": channel,
        "offset": page.position.offset,
        "epoch": page.position.epoch,
        "count": events.len(),
        "events": events,
    })))
}

/// Query parameters of the history endpoint.
#[derive(Deserialize)]
pub struct HistoryParams {
    since: Option<u64>,
    limit: Option<usize>,
    #[serde(default)]
    reverse: bool,
}

/// The JSON payload of a stored server frame.
fn frame_json(frame: &[u8]) -> Option<Value> {
    let mut buf = bytes::BytesMut::from(frame);
    let f = hubbub_proto::frame::decode(&mut buf, u64::MAX >> 1, hubbub_proto::frame::Role::Client).ok()??;
    serde_json::from_slice(&f.payload).ok()
}

/// `POST /api/v1/broadcast` `{"event":{…}}`; a body without `"event"` is taken as the event itself
/// (seed 004 posts the event object directly).
pub async fn broadcast(State(app): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    #[derive(Deserialize)]
    struct Wrapped<'a> {
        #[serde(borrow)]
        event: Option<&'a RawValue>,
    }
    let wrapped: Wrapped<'_> = parse_body(&body)?;
    let raw: Box<RawValue> = match wrapped.event {
        Some(e) => e.to_owned(),
        None => serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?,
    };
    let message_type = serde_json::from_str::<Value>(raw.get()).ok().and_then(|v| v.get("type").cloned());
    let event = Event::new(raw).map_err(|e| ApiError::bad_request("invalid_event", e.to_string()))?;
    let n = app
        .hub
        .broadcast(event)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", e.to_string()))?;
    Ok(ok(json!({
        "message": "Message broadcasted successfully",
        "delivered": n,
        "clients_count": n,
        "message_type": message_type,
    })))
}

pub(crate) fn stats_value(app: &AppState) -> Value {
    let hub = &app.hub;
    let c = &hub.stats().counters;
    let reg = hub.registry();
    let uptime = hub.stats().started.elapsed().as_secs();
    let connected = reg.connection_count();
    json!({
        "connected_clients": connected,
        "active_connections": connected,
        "total_connections": c.total_connections.load(Relaxed),
        "messages_sent": c.messages_sent.load(Relaxed),
        "messages_received": c.messages_received.load(Relaxed),
        "publishes": c.publishes.load(Relaxed),
        "broadcasts": c.broadcasts.load(Relaxed),
        "deliveries": c.deliveries.load(Relaxed),
        "bytes_sent": c.bytes_sent.load(Relaxed),
        "slow_consumer_disconnects": c.slow_consumer_disconnects.load(Relaxed),
        "dropped_frames": c.dropped_frames.load(Relaxed),
        "client_errors": c.client_errors.load(Relaxed),
        "read_timeouts": c.read_timeouts.load(Relaxed),
        "channels": reg.channel_count(),
        "queue_size": reg.queued_frames(),
        "heartbeat_interval": app.settings.websocket.heartbeat_interval.as_secs(),
        "heartbeat_active": !app.settings.websocket.heartbeat_interval.is_zero(),
        "broadcast_worker_active": !app.shutdown.is_cancelled(),
        "uptime": uptime,
        "uptime_human": humantime::format_duration(std::time::Duration::from_secs(uptime)).to_string(),
        "last_activity": hub.stats().last_activity().map(time::iso),
        "broker": hub.broker_name(),
        "broker_connected": hub.broker_status().healthy,
        "broker_disconnects": hub.broker_status().disconnects,
        "broker_local_fallbacks": hub.broker_status().local_fallbacks,
        "node_id": hub.broker_status().node_id,
        "nodes_alive": hub.broker_status().nodes_alive,
    })
}

/// `GET /api/v1/stats`.
pub async fn stats(State(app): State<AppState>) -> Response {
    ok(stats_value(&app))
}

/// `GET /ws/stats`: the same numbers as a flat object, as seed 002's tooling reads them.
pub async fn flat_stats(State(app): State<AppState>) -> Response {
    Json(stats_value(&app)).into_response()
}

/// One row per connection, as `/api/v1/connections` and the dashboard list them.
pub(crate) fn connection_rows(app: &AppState) -> Vec<Value> {
    app.hub
        .registry()
        .connections()
        .into_iter()
        .map(|c| {
            json!({
                "id": c.conn.client_id,
                "client_name": c.conn.client_name,
                "remote_addr": c.conn.remote_addr.map(|a| a.to_string()),
                "connected_at": time::iso(c.conn.connected_at),
                "subscriptions": c.channels,
                "queued": c.conn.outbox.len(),
                "sent": c.conn.sent.load(Relaxed),
            })
        })
        .collect()
}

/// One row per channel, by name.
pub(crate) fn channel_rows(app: &AppState) -> Vec<Value> {
    let mut rows = app.hub.registry().channels();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows.into_iter()
        .map(|c| json!({"name": c.name, "subscribers": c.subscribers, "last_offset": c.position.offset, "epoch": c.position.epoch}))
        .collect()
}

/// Recent publish-to-write latency in milliseconds, with its level.
pub(crate) fn latency_value(app: &AppState) -> Value {
    let l = app.hub.stats().latency.summary();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    json!({
        "window": "last 30-60 s",
        "samples": l.samples, "min": ms(l.min), "avg": ms(l.avg), "max": ms(l.max),
        "jitter": ms(l.jitter), "p99": ms(l.p99), "level": l.level.as_str(),
    })
}

/// `GET /api/v1/connections`.
pub async fn connections(State(app): State<AppState>) -> Response {
    let rows = connection_rows(&app);
    ok(json!({"count": rows.len(), "connections": rows}))
}

/// `GET /api/v1/channels`.
pub async fn channels(State(app): State<AppState>) -> Response {
    let rows = channel_rows(&app);
    ok(json!({"count": rows.len(), "channels": rows}))
}

/// `GET /api/v1/health`: status plus a latency level graded on measured publish-to-write p99.
pub async fn health(State(app): State<AppState>) -> Response {
    let l = app.hub.stats().latency.summary();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let broker = app.hub.broker_status();
    let status = if app.shutdown.is_cancelled() {
        "shutting_down"
    } else if !broker.healthy {
        "degraded"
    } else {
        "ok"
    };
    ok(json!({
        "status": status,
        "level": l.level.as_str(),
        "latency_ms": {"p99": ms(l.p99), "avg": ms(l.avg), "min": ms(l.min), "max": ms(l.max), "samples": l.samples},
        "connections": app.hub.registry().connection_count(),
        "broker": app.hub.broker_name(),
        "broker_connected": broker.healthy,
        "node_id": broker.node_id,
        "nodes_alive": broker.nodes_alive,
        "uptime": app.hub.stats().started.elapsed().as_secs(),
        "checked_at": time::iso(SystemTime::now()),
    }))
}

/// `GET /api/v1/metrics`: what seed 001's monitoring tracks, as JSON: recent latency (min, max,
/// avg, jitter, p99, level), throughput since start, errors, and per-connection activity.
pub async fn metrics_json(State(app): State<AppState>) -> Response {
    let hub = &app.hub;
    let stats = hub.stats();
    let c = &stats.counters;
    let uptime = stats.started.elapsed().as_secs_f64().max(1e-3);
    let per_s = |n: u64| n as f64 / uptime;
    let now = SystemTime::now();
    let connected = hub.registry().connection_count() as u64;
    let connections: Vec<Value> = hub
        .registry()
        .connections()
        .into_iter()
        .map(|ci| {
            let up = now.duration_since(ci.conn.connected_at).map(|d| d.as_secs_f64()).unwrap_or(0.0);
            let sent = ci.conn.sent.load(Relaxed);
            json!({
                "id": ci.conn.client_id,
                "client_name": ci.conn.client_name,
                "uptime_seconds": up,
                "sent": sent,
                "sent_per_second": if up > 0.0 { sent as f64 / up } else { 0.0 },
                "queued": ci.conn.outbox.len(),
                "subscriptions": ci.channels.len(),
            })
        })
        .collect();
    ok(json!({
        "latency_ms": latency_value(&app),
        "throughput": {
            "messages_sent": c.messages_sent.load(Relaxed),
            "bytes_sent": c.bytes_sent.load(Relaxed),
            "messages_received": c.messages_received.load(Relaxed),
            "publishes": c.publishes.load(Relaxed),
            "deliveries": c.deliveries.load(Relaxed),
            "messages_sent_per_second": per_s(c.messages_sent.load(Relaxed)),
            "bytes_sent_per_second": per_s(c.bytes_sent.load(Relaxed)),
            "averaged_over_seconds": uptime,
        },
        "errors": {
            "failed_sends": c.slow_consumer_disconnects.load(Relaxed) + c.dropped_frames.load(Relaxed),
            "slow_consumer_disconnects": c.slow_consumer_disconnects.load(Relaxed),
            "dropped_frames": c.dropped_frames.load(Relaxed),
            "timeouts": c.read_timeouts.load(Relaxed),
            "client_errors": c.client_errors.load(Relaxed),
            "disconnections": c.total_connections.load(Relaxed).saturating_sub(connected),
        },
        "connections": connections,
    }))
}

/// `GET /`: what this server is and where to go.
pub async fn index() -> Response {
    Json(json!({
        "name": "hubbub",
        "version": env!("CARGO_PKG_VERSION"),
        "websocket": "/ws",
        "api": ["/api/v1/publish", "/api/v1/broadcast", "/api/v1/stats", "/api/v1/connections", "/api/v1/channels", "/api/v1/health"],
    }))
    .into_response()
}

/// Any other path.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint; see GET / for the list")
}
