//! The WebSocket protocol as a client sees it.

use std::time::Duration;

use serde_json::json;

use crate::support::{start, start_with};

#[tokio::test]
async fn welcome_has_the_one_shape_every_seed_reads() {
    let hub = start().await;
    let c = hubbub_client::Client::connect(&hub.ws("/ws?client_name=tester")).await.unwrap();
    let w = &c.welcome;
    assert_eq!(w["type"], "connection_ack");
    assert_eq!(w["event_type"], "connection_established");
    let id = w["client_id"].as_str().unwrap();
    assert!(uuid_like(id), "{id}");
    assert_eq!(w["data"]["client_id"], id);
    assert_eq!(w["data"]["status"], "connected");
    assert_eq!(w["heartbeat_interval"], 30);
    assert!(w["message"].is_string());
    assert!(w["capabilities"].as_array().unwrap().iter().any(|c| c == "subscribe"));
    let ts = w["timestamp"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == 24, "ISO-8601 UTC with ms: {ts}");
    let conns = hub.api().get("/api/v1/connections").await.unwrap().body;
    assert_eq!(conns["data"]["connections"][0]["client_name"], "tester");
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn aliases_serve_the_same_hub() {
    let hub = start().await;
    let mut clients = Vec::new();
    for path in ["/ws", "/ws/live", "/ws/ui"] {
        let mut c = hubbub_client::Client::connect(&hub.ws(path)).await.unwrap();
        assert_eq!(c.subscribe(&["a"]).await.unwrap()["type"], "subscribed");
        clients.push(c);
    }
    assert_eq!(hub.publish("a", json!({"type": "x"})).await["delivered"], 3);
}

#[tokio::test]
async fn every_subscribe_form_subscribes() {
    let hub = start().await;
    let forms = [
        (json!({"type": "subscribe", "channels": ["status", "sensor_event"]}), vec!["status", "sensor_event"]),
        (json!({"type": "subscribe", "data": {"streams": ["state"]}}), vec!["state"]),
        (json!({"type": "subscribe", "data": {"channels": ["alert"]}}), vec!["alert"]),
        (json!({"type": "subscribe_room", "data": {"room_id": 1}}), vec!["room:1"]),
        (json!({"type": "subscribe_room", "data": {"room_id": "kitchen"}}), vec!["room:kitchen"]),
    ];
    for (msg, channels) in forms {
        let mut c = hub.client().await;
        c.send_json(&msg).await.unwrap();
        let r = c.recv_event().await.unwrap();
        assert_eq!(r["type"], "subscribed", "{msg} → {r}");
        for ch in &channels {
            hub.publish(ch, json!({"type": "probe", "n": ch})).await;
            let e = c.recv_event().await.unwrap();
            assert_eq!(e["channel"], *ch);
            assert_eq!(e["n"], *ch);
        }
    }
}

#[tokio::test]
async fn subscribed_reply_carries_positions_and_echoes_id() {
    let hub = start().await;
    let mut first = hub.subscriber(&["news"]).await;
    hub.publish("news", json!({"type": "a"})).await;
    first.recv_event().await.unwrap();
    let mut c = hub.client().await;
    c.send_json(&json!({"type": "subscribe", "id": "req-7", "channels": ["news"]})).await.unwrap();
    let r = c.recv_event().await.unwrap();
    assert_eq!(r["id"], "req-7");
    assert_eq!(r["channels"], json!(["news"]));
    assert_eq!(r["positions"][0]["channel"], "news");
    assert_eq!(r["positions"][0]["offset"], 1);
    assert!(r["positions"][0]["epoch"].as_str().unwrap().len() >= 8);
}

#[tokio::test]
async fn unsubscribe_and_unsubscribe_room_stop_delivery() {
    let hub = start().await;
    let mut c = hub.subscriber(&["a", "b"]).await;
    c.send_json(&json!({"type": "subscribe_room", "data": {"room_id": 2}})).await.unwrap();
    assert_eq!(c.recv_event().await.unwrap()["type"], "subscribed");
    let r = c.unsubscribe(&["a"]).await.unwrap();
    assert_eq!(r, json!({"type": "unsubscribed", "channels": ["a"], "timestamp": r["timestamp"]}));
    c.send_json(&json!({"type": "unsubscribe_room", "id": 3, "data": {"room_id": 2}})).await.unwrap();
    let r = c.recv_event().await.unwrap();
    assert_eq!((r["type"].as_str(), r["id"].as_i64()), (Some("unsubscribed"), Some(3)));
    assert_eq!(hub.publish("a", json!({"type": "x"})).await["delivered"], 0);
    assert_eq!(hub.publish("room:2", json!({"type": "x"})).await["delivered"], 0);
    hub.publish("b", json!({"type": "still"})).await;
    assert_eq!(c.recv_event().await.unwrap()["type"], "still");
    // The registry dropped the emptied channels.
    let chans = hub.api().get("/api/v1/channels").await.unwrap().body;
    assert_eq!(
        chans["data"]["channels"],
        json!([{"name": "b", "subscribers": 1, "last_offset": 1, "epoch": chans["data"]["channels"][0]["epoch"]}])
    );
}

#[tokio::test]
async fn channels_are_isolated() {
    let hub = start().await;
    let mut a = hub.subscriber(&["a"]).await;
    let mut b = hub.subscriber(&["b"]).await;
    hub.publish("a", json!({"type": "for-a"})).await;
    hub.publish("b", json!({"type": "for-b"})).await;
    assert_eq!(a.recv_event().await.unwrap()["type"], "for-a");
    assert_eq!(b.recv_event().await.unwrap()["type"], "for-b");
    assert!(a.recv_timeout(Duration::from_millis(300)).await.is_err(), "a got b's event");
    assert!(b.recv_timeout(Duration::from_millis(300)).await.is_err(), "b got a second event");
}

#[tokio::test]
async fn events_arrive_as_published_with_hub_keys_added_never_overwritten() {
    let hub = start().await;
    let mut c = hub.subscriber(&["sensor_event"]).await;
    let event = json!({"type": "sensor_event", "event_type": "impact_detected", "sensor_id": "BT50_01",
                       "data": {"magnitude": 15.5, "location": {"x": 2.3, "y": 1.8}}});
    let r = hub.publish("sensor_event", event.clone()).await;
    assert_eq!((r["offset"].as_u64(), r["delivered"].as_u64()), (Some(1), Some(1)));
    let got = c.recv_event().await.unwrap();
    for (k, v) in event.as_object().unwrap() {
        assert_eq!(&got[k], v, "key {k}");
    }
    assert_eq!(got["channel"], "sensor_event");
    assert_eq!(got["offset"], 1);
    assert!(got["timestamp"].as_str().unwrap().ends_with('Z'));
    hub.publish("sensor_event", json!({"type": "t", "timestamp": "mine", "channel": "theirs", "offset": -1})).await;
    let got = c.recv_event().await.unwrap();
    assert_eq!(
        (got["timestamp"].as_str(), got["channel"].as_str(), got["offset"].as_i64()),
        (Some("mine"), Some("theirs"), Some(-1))
    );
}

#[tokio::test]
async fn ping_gets_pong_with_seed_shape() {
    let hub = start().await;
    let mut c = hub.client().await;
    c.send_json(&json!({"type": "ping", "data": {}})).await.unwrap();
    let p = c.recv_event().await.unwrap();
    assert_eq!(p["type"], "pong");
    assert!(p["data"]["timestamp"].is_string() && p["timestamp"].is_string());
    c.send_json(&json!({"type": "ping", "id": 99})).await.unwrap();
    assert_eq!(c.recv_event().await.unwrap()["id"], 99);
}

#[tokio::test]
async fn broadcast_reaches_every_client_subscribed_or_not() {
    let hub = start().await;
    let mut subscribed = hub.subscriber(&["x"]).await;
    let mut bare = hub.client().await;
    let r = hub
        .api()
        .post("/api/v1/broadcast", &json!({"event": {"type": "maintenance", "data": {"in": "5m"}}}))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body["data"]["delivered"], 2);
    assert_eq!(r.body["data"]["message_type"], "maintenance");
    for c in [&mut subscribed, &mut bare] {
        let e = c.recv_event().await.unwrap();
        assert_eq!(e["type"], "maintenance");
        assert!(e.get("channel").is_none() && e.get("offset").is_none());
    }
}

#[tokio::test]
async fn auto_subscribe_serves_clients_that_never_subscribe() {
    let hub = start_with(|s| {
        s.server.auto_subscribe.insert("/ws/ui".into(), vec!["ui".into()]);
    })
    .await;
    let mut ui = hubbub_client::Client::connect(&hub.ws("/ws/ui")).await.unwrap();
    let mut other = hubbub_client::Client::connect(&hub.ws("/ws")).await.unwrap();
    crate::support::eventually("auto-subscription", async || {
        hub.api().get("/api/v1/channels").await.unwrap().body["data"]["count"] == 1
    })
    .await;
    hub.publish("ui", json!({"type": "overlay", "overlay_type": "detection", "data": {"boxes": []}})).await;
    assert_eq!(ui.recv_event().await.unwrap()["overlay_type"], "detection");
    assert!(other.recv_timeout(Duration::from_millis(300)).await.is_err());
}

#[tokio::test]
async fn plain_http_on_the_ws_path_gets_a_clear_error() {
    let hub = start().await;
    let r = hub.api().get("/ws").await.unwrap();
    assert_eq!(r.status, 426);
    assert_eq!(r.body["error"]["code"], "websocket_upgrade_required");
}
