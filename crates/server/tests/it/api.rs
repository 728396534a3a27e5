//! The HTTP API.

use serde_json::json;

use crate::support::{eventually, start, start_with};

#[tokio::test]
async fn stats_connections_and_channels_match_reality() {
    let hub = start().await;
    let mut a = hub.subscriber(&["s1", "s2"]).await;
    let _b = hub.subscriber(&["s1"]).await;
    let _idle = hubbub_client::Client::connect(&hub.ws("/ws?client_name=idle-one")).await.unwrap();
    hub.publish("s1", json!({"type": "x"})).await;
    hub.publish("s1", json!({"type": "y"})).await;
    a.recv_event().await.unwrap();
    a.recv_event().await.unwrap();

    let stats = hub.api().get("/api/v1/stats").await.unwrap();
    assert_eq!(stats.status, 200);
    let s = &stats.body["data"];
    assert_eq!(stats.body["success"], true);
    assert_eq!(s["connected_clients"], 3);
    assert_eq!(s["total_connections"], 3);
    assert_eq!(s["channels"], 2);
    assert_eq!(s["publishes"], 2);
    assert_eq!(s["deliveries"], 4);
    assert_eq!(s["messages_received"], 2, "two subscribe frames");
    assert_eq!(s["heartbeat_interval"], 30);
    for key in ["messages_sent", "bytes_sent", "slow_consumer_disconnects", "queue_size", "uptime", "last_activity"] {
        assert!(!s[key].is_null(), "{key} missing");
    }
    assert!(s["messages_sent"].as_u64().unwrap() >= 7, "3 welcomes + 2 replies + 2 events read by a");

    let conns = hub.api().get("/api/v1/connections").await.unwrap().body;
    assert_eq!(conns["data"]["count"], 3);
    let rows = conns["data"]["connections"].as_array().unwrap();
    let mine = rows.iter().find(|r| r["id"] == a.client_id()).unwrap();
    let mut subs: Vec<&str> = mine["subscriptions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    subs.sort();
    assert_eq!(subs, ["s1", "s2"]);
    assert!(mine["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(mine["sent"].as_u64().unwrap() >= 4);
    assert!(rows.iter().any(|r| r["client_name"] == "idle-one" && r["subscriptions"] == json!([])));

    let chans = hub.api().get("/api/v1/channels").await.unwrap().body;
    assert_eq!(chans["data"]["channels"][0]["name"], "s1");
    assert_eq!(chans["data"]["channels"][0]["subscribers"], 2);
    assert_eq!(chans["data"]["channels"][0]["last_offset"], 2);
    assert_eq!(chans["data"]["channels"][1]["subscribers"], 1);

    // Seed 002's flat form and seed 004's path show the same numbers.
    let flat = hub.api().get("/ws/stats").await.unwrap().body;
    assert_eq!(flat["active_connections"], 3);
    assert_eq!(flat["heartbeat_active"], true);
    let seed4 = hub.api().get("/api/v1/websocket/stats").await.unwrap().body;
    assert_eq!(seed4["data"]["connected_clients"], 3);

    drop(a);
    eventually("stats follow a disconnect", async || {
        hub.api().get("/api/v1/stats").await.unwrap().body["data"]["connected_clients"] == 2
    })
    .await;
}

#[tokio::test]
async fn health_grades_measured_latency() {
    let hub = start().await;
    let mut c = hub.subscriber(&["h"]).await;
    hub.publish("h", json!({"type": "x"})).await;
    c.recv_event().await.unwrap();
    let h = hub.api().get("/api/v1/health").await.unwrap().body;
    assert_eq!(h["data"]["status"], "ok");
    assert!(["EXCELLENT", "GOOD", "FAIR", "POOR", "CRITICAL"].contains(&h["data"]["level"].as_str().unwrap()));
    assert!(h["data"]["latency_ms"]["samples"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn publish_errors_are_clear_and_publish_nothing() {
    let hub = start().await;
    let mut c = hub.subscriber(&["p"]).await;
    let api = hub.api();
    let cases = [
        ("{oops", "invalid_json"),
        (r#"{"channel":"p"}"#, "missing_event"),
        (r#"{"channel":"p","event":[1]}"#, "invalid_event"),
        (r#"{"channel":"p","event":"text"}"#, "invalid_event"),
        (r#"{"event":{"type":"x"}}"#, "missing_channel"),
        (r#"{"channel":"bad name","event":{"type":"x"}}"#, "invalid_channel"),
        (r#"{"channels":["p","bad name"],"event":{"type":"x"}}"#, "invalid_channel"),
    ];
    for (body, code) in cases {
        let r = api.post_raw("/api/v1/publish", body.to_string()).await.unwrap();
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.body["success"], false);
        assert_eq!(r.body["error"]["code"], code, "{body} → {}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().len() > 5);
        assert!(r.body["timestamp"].is_string());
    }
    assert!(c.recv_timeout(std::time::Duration::from_millis(300)).await.is_err(), "nothing was published");
    let big = format!(r#"{{"channel":"p","event":{{"pad":"{}"}}}}"#, "x".repeat(2 << 20));
    let r = api.post_raw("/api/v1/publish", big).await.unwrap();
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (413, Some("body_too_large")));
    let r = api.get("/api/v1/nope").await.unwrap();
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn the_api_key_is_enforced() {
    let key = "0123456789abcdef-secret";
    let hub = start_with(|s| s.server.api_key = Some(key.into())).await;
    for path in ["/api/v1/stats", "/api/v1/connections", "/api/v1/channels", "/api/v1/health", "/ws/stats"] {
        let r = hub.api().get(path).await.unwrap();
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.body["error"]["code"], "missing_api_key");
        let r = hub.api_with_key("wrong-key-wrong-key").get(path).await.unwrap();
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (401, Some("invalid_api_key")), "{path}");
        assert_eq!(hub.api_with_key(key).get(path).await.unwrap().status, 200, "{path}");
    }
    let body = json!({"channel": "k", "event": {"type": "x"}});
    assert_eq!(hub.api().post("/api/v1/publish", &body).await.unwrap().status, 401);
    assert_eq!(hub.api().post("/api/v1/broadcast", &json!({"event": {}})).await.unwrap().status, 401);
    assert_eq!(hub.api_with_key(key).post("/api/v1/publish", &body).await.unwrap().status, 200);
    // WebSocket clients need no API key.
    hub.client().await;
}

#[tokio::test]
async fn api_key_scopes_decide_which_endpoints_a_key_reaches() {
    use hubbub_server::settings::{ApiKeySettings, Scope};
    let key = |name: &str, scopes: &[Scope]| ApiKeySettings {
        name: name.into(),
        key: format!("{name}-0123456789abcdef"),
        scopes: scopes.to_vec(),
    };
    let hub = start_with(|s| {
        s.server.api_keys =
            vec![key("publisher", &[Scope::Publish]), key("reader", &[Scope::Read]), key("admin", &[Scope::Admin])]
    })
    .await;
    let api = |name: &str| hub.api_with_key(&format!("{name}-0123456789abcdef"));
    let body = json!({"channel": "k", "event": {"type": "x"}});
    // (key, publish, read, admin) → expected statuses.
    for (name, publish, read, admin) in
        [("publisher", 200, 403, 403), ("reader", 403, 200, 403), ("admin", 200, 200, 200)]
    {
        let p = api(name).post("/api/v1/publish", &body).await.unwrap();
        let r = api(name).get("/api/v1/stats").await.unwrap();
        let m = api(name).get("/metrics").await.unwrap();
        let a = api(name).get("/api/v1/admin/overview").await.unwrap();
        assert_eq!((p.status, r.status, m.status, a.status), (publish, read, read, admin), "{name}");
        for denied in [&p, &r, &a].into_iter().filter(|x| x.status == 403) {
            assert_eq!(denied.body["error"]["code"], "insufficient_scope", "{name}");
        }
    }
    assert_eq!(hub.api().get("/api/v1/admin/overview").await.unwrap().status, 401);
}

#[tokio::test]
async fn the_admin_overview_has_what_the_dashboard_draws() {
    let hub = start().await;
    let _c = hub.subscriber(&["dash"]).await;
    hub.api().publish("dash", &json!({"type": "tick"})).await.unwrap();
    let r = hub.api().get("/api/v1/admin/overview").await.unwrap();
    assert_eq!(r.status, 200);
    let d = &r.body["data"];
    assert_eq!(d["stats"]["connected_clients"], 1);
    assert_eq!(d["stats"]["publishes"], 1);
    assert_eq!(d["channels"][0]["name"], "dash");
    assert_eq!(d["channels"][0]["subscribers"], 1);
    assert_eq!(d["connections"][0]["subscriptions"], json!(["dash"]));
    assert!(d["latency_ms"]["level"].is_string());
    // The page itself holds no data, is built in, and loads nothing from elsewhere.
    let page = hub.api().get("/admin").await.unwrap();
    assert_eq!(page.status, 200);
    assert!(page.content_type.as_deref().unwrap_or("").starts_with("text/html"));
    assert!(page.text.contains("/api/v1/admin/overview"));
    for external in ["src=\"http", "href=\"http", "url(http", "import(\"http", "from \"http"] {
        assert!(!page.text.contains(external), "the page loads {external}…; everything must come from the binary");
    }
}

#[tokio::test]
async fn seed_004_broadcast_body_is_the_event_itself() {
    let hub = start().await;
    let mut c = hub.client().await;
    let r = hub
        .api()
        .post(
            "/api/v1/websocket/broadcast",
            &json!({"type": "custom_notification", "data": {"message": "maintenance", "level": "warning"}}),
        )
        .await
        .unwrap();
    assert_eq!(r.body["data"]["clients_count"], 1);
    assert_eq!(r.body["data"]["message_type"], "custom_notification");
    let e = c.recv_event().await.unwrap();
    assert_eq!((e["type"].as_str(), e["data"]["level"].as_str()), (Some("custom_notification"), Some("warning")));
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_text_format() {
    let hub = start().await;
    let mut c = hub.subscriber(&["m"]).await;
    hub.publish("m", json!({"type": "x"})).await;
    hub.publish("m", json!({"type": "y"})).await;
    c.recv_event().await.unwrap();
    c.recv_event().await.unwrap();
    let r = hub.api().get("/metrics").await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.content_type.unwrap().starts_with("text/plain; version=0.0.4"));
    let t = r.text;
    for line in [
        "# TYPE hubbub_connections gauge",
        "hubbub_connections 1",
        "hubbub_publishes_total 2",
        "hubbub_deliveries_total 2",
        "# TYPE hubbub_publish_duration_seconds histogram",
        "hubbub_publish_duration_seconds_bucket{le=\"+Inf\"} 2",
        "hubbub_publish_duration_seconds_count 2",
        "hubbub_broker_up 1",
    ] {
        assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
    }
    // Buckets are cumulative and never exceed the count.
    let buckets: Vec<u64> = t
        .lines()
        .filter(|l| l.starts_with("hubbub_delivery_latency_seconds_bucket"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert!(*buckets.last().unwrap() >= 2);
}

#[tokio::test]
async fn json_metrics_cover_latency_throughput_errors_and_connections() {
    let hub = start().await;
    let mut c = hub.subscriber(&["jm"]).await;
    for n in 0..5 {
        hub.publish("jm", json!({"n": n})).await;
    }
    for _ in 0..5 {
        c.recv_event().await.unwrap();
    }
    c.send_text("not json".into()).await.unwrap();
    assert_eq!(c.recv_event().await.unwrap()["type"], "error");
    for path in ["/api/v1/metrics", "/api/v1/websocket/metrics"] {
        let m = hub.api().get(path).await.unwrap().body;
        let d = &m["data"];
        assert!(d["latency_ms"]["samples"].as_u64().unwrap() >= 5, "{m}");
        for k in ["min", "avg", "max", "jitter", "p99"] {
            assert!(d["latency_ms"][k].as_f64().unwrap() >= 0.0, "{k}");
        }
        assert!(d["latency_ms"]["min"].as_f64() <= d["latency_ms"]["max"].as_f64());
        assert_eq!(d["throughput"]["publishes"], 5);
        assert_eq!(d["throughput"]["deliveries"], 5);
        assert_eq!(d["errors"]["client_errors"], 1);
        assert_eq!(d["errors"]["disconnections"], 0);
        assert_eq!(d["connections"][0]["subscriptions"], 1);
        assert!(d["connections"][0]["sent"].as_u64().unwrap() >= 7);
    }
}

#[tokio::test]
async fn the_javascript_client_is_served_at_client_js() {
    let hub = start().await;
    let r = hub.api().get("/client.js").await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.content_type.unwrap().starts_with("text/javascript"));
    assert!(r.text.contains("export class HubbubClient"));
}

#[tokio::test]
async fn the_interactive_test_page_is_served_at_ws_test() {
    let hub = start().await;
    let r = hub.api().get("/ws/test").await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.content_type.unwrap().starts_with("text/html"));
    for needle in ["import { HubbubClient } from \"/client.js\"", "id=\"subscribe\"", "id=\"publish\"", "id=\"filter\""]
    {
        assert!(r.text.contains(needle), "{needle}");
    }
}
