//! `GET /metrics`: the hub's counters, gauges and histograms in the Prometheus text format
//! (version 0.0.4), rendered by hand from `hubbub::stats`: a dozen lines of formatting do not
//! justify an exporter crate and its global recorder.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use hubbub::stats::Histogram;

use crate::state::AppState;

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let (buckets, sum, count) = h.snapshot();
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (le, n) in buckets {
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}");
}

/// `GET /metrics`.
pub async fn metrics(State(app): State<AppState>) -> Response {
    let hub = &app.hub;
    let stats = hub.stats();
    let c = &stats.counters;
    let reg = hub.registry();
    let broker = hub.broker_status();
    let mut out = String::with_capacity(4096);
    metric(&mut out, "hubbub_connections", "gauge", "Connected WebSocket clients.", reg.connection_count());
    metric(&mut out, "hubbub_channels", "gauge", "Channels with at least one local subscriber.", reg.channel_count());
    metric(&mut out, "hubbub_queued_frames", "gauge", "Frames waiting in outboxes.", reg.queued_frames());
    let counters = [
        ("hubbub_connections_total", "Connections accepted since start.", &c.total_connections),
        ("hubbub_messages_sent_total", "Frames written to clients.", &c.messages_sent),
        ("hubbub_bytes_sent_total", "Bytes written to clients.", &c.bytes_sent),
        ("hubbub_messages_received_total", "Text frames received from clients.", &c.messages_received),
        ("hubbub_publishes_total", "Channel publications accepted.", &c.publishes),
        ("hubbub_broadcasts_total", "Broadcasts to every connection.", &c.broadcasts),
        ("hubbub_deliveries_total", "Frames queued to subscribers by publications.", &c.deliveries),
        ("hubbub_dropped_frames_total", "Frames dropped by the drop_oldest policy.", &c.dropped_frames),
        ("hubbub_slow_consumer_disconnects_total", "Clients closed with 4008.", &c.slow_consumer_disconnects),
        ("hubbub_client_errors_total", "Error frames sent to clients.", &c.client_errors),
        ("hubbub_read_timeouts_total", "Clients closed for silence (1008).", &c.read_timeouts),
        (
            "hubbub_deflated_publications_total",
            "Publications compressed (once each) for permessage-deflate clients.",
            &c.deflated_publications,
        ),
        ("hubbub_deflate_bytes_in_total", "Frame bytes of those publications before compression.", &c.deflate_bytes_in),
        (
            "hubbub_deflate_bytes_out_total",
            "Frame bytes of those publications after compression.",
            &c.deflate_bytes_out,
        ),
    ];
    for (name, help, v) in counters {
        metric(&mut out, name, "counter", help, v.load(Relaxed));
    }
    metric(&mut out, "hubbub_broker_up", "gauge", "1 while the broker is healthy.", u8::from(broker.healthy));
    metric(&mut out, "hubbub_broker_disconnects_total", "counter", "Broker connections lost.", broker.disconnects);
    metric(
        &mut out,
        "hubbub_broker_local_fallbacks_total",
        "counter",
        "Publications delivered only locally while the broker was unreachable.",
        broker.local_fallbacks,
    );
    if let Some(n) = broker.nodes_alive {
        metric(&mut out, "hubbub_nodes_alive", "gauge", "Nodes seen alive on the shared broker.", n);
    }
    out.push_str("# HELP hubbub_limit_rejections_total Requests, frames and connections a limit refused, by the setting's name.\n");
    out.push_str("# TYPE hubbub_limit_rejections_total counter\n");
    for (limit, n) in app.access.rejections.rows() {
        out.push_str(&format!("hubbub_limit_rejections_total{{limit=\"{limit}\"}} {n}\n"));
    }
    metric(&mut out, "hubbub_uptime_seconds", "gauge", "Seconds since start.", stats.started.elapsed().as_secs());
    histogram(
        &mut out,
        "hubbub_publish_duration_seconds",
        "Time the hub took per channel publication (offset, history, fan-out; fsync when durable).",
        &stats.publish_duration,
    );
    histogram(
        &mut out,
        "hubbub_delivery_latency_seconds",
        "Time from accepting a publication to writing it to a client's socket, per frame.",
        &stats.delivery_latency,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}
