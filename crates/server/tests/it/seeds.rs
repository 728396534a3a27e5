//! Each seed application's front-end flow, exactly as its document shows it, against hubbub. Only
//! the URL changes.

use serde_json::json;

use crate::support::{start, start_with};

/// Seed 000 (live match monitoring): `/ws/live`, subscribe with `channels`, events read by
/// `type`, `event_type`, `sensor_id`, `data.current_shot`.
#[tokio::test]
async fn seed_000_match_monitoring() {
    let hub = start().await;
    let mut ws = hubbub_client::Client::connect(&hub.ws("/ws/live")).await.unwrap();
    ws.send_json(&json!({"type": "subscribe", "channels": ["status", "sensor_event", "timer_event", "run_update"]}))
        .await
        .unwrap();
    assert_eq!(ws.recv_event().await.unwrap()["type"], "subscribed");
    hub.publish(
        "timer_event",
        json!({"type": "timer_event", "event_type": "shot_detected", "device_id": "60:09:C3:1F:DC:1A",
        "data": {"shot_state": "ACTIVE", "current_shot": 3, "current_time": 15.67}}),
    )
    .await;
    let e = ws.recv_event().await.unwrap();
    assert_eq!((e["type"].as_str(), e["event_type"].as_str()), (Some("timer_event"), Some("shot_detected")));
    assert_eq!(e["data"]["current_shot"], 3);
    hub.publish("run_update", json!({"type": "run_update", "event_type": "run_started", "run_id": "run_001"})).await;
    assert_eq!(ws.recv_event().await.unwrap()["run_id"], "run_001");
}

/// Seed 001 (vision pipeline): `{"type":"subscribe","data":{"streams":["state"]}}`.
#[tokio::test]
async fn seed_001_vision_streams() {
    let hub = start().await;
    let mut ws = hub.client().await;
    ws.send_json(&json!({"type": "subscribe", "data": {"streams": ["state", "trajectory"]}})).await.unwrap();
    assert_eq!(ws.recv_event().await.unwrap()["type"], "subscribed");
    hub.publish("state", json!({"type": "state", "data": {"balls": [{"id": 1}]}})).await;
    hub.publish("alert", json!({"type": "alert", "level": "warning"})).await;
    hub.publish("trajectory", json!({"type": "trajectory", "data": {"points": []}})).await;
    assert_eq!(ws.recv_event().await.unwrap()["type"], "state");
    assert_eq!(ws.recv_event().await.unwrap()["type"], "trajectory", "alert was not subscribed");
}

/// Seed 002 (poker hands): `/ws?client_name=…`, reads `connection_ack` + `client_id`, then
/// `new_hand` with `hand_id`, `hero_result`, and `heartbeat`. The client never subscribes.
#[tokio::test]
async fn seed_002_poker_hands() {
    let hub = start_with(|s| s.websocket.heartbeat_interval = std::time::Duration::from_millis(300)).await;
    let mut ws = hubbub_client::Client::connect(&hub.ws("/ws?client_name=my_client")).await.unwrap();
    assert_eq!(ws.welcome["type"], "connection_ack");
    assert!(ws.welcome["client_id"].is_string());
    let hand = json!({"type": "new_hand", "hand_id": "20240101120000_TableName_Hand123", "timestamp": "2024-01-01T12:00:00.000Z",
        "hero_result": 5.50, "hero_position": "BTN", "game_type": "NLH", "stakes": "0.05/0.10"});
    hub.api().post("/api/v1/broadcast", &json!({"event": hand})).await.unwrap();
    let e = ws.recv_event().await.unwrap();
    assert_eq!(e, hand, "delivered exactly as published (it already had a timestamp)");
    assert_eq!(ws.recv().await.unwrap()["type"], "heartbeat");
}

/// Seed 003 (pet camera): `/ws/ui`, no subscribe; messages typed `event`/`overlay`/`telemetry`.
#[tokio::test]
async fn seed_003_pet_camera() {
    let hub = start().await;
    let mut ws = hubbub_client::Client::connect(&hub.ws("/ws/ui")).await.unwrap();
    hub.api()
        .post(
            "/api/v1/broadcast",
            &json!({"event": {"type": "event", "event_type": "sit", "data": {"confidence": 0.95}}}),
        )
        .await
        .unwrap();
    hub.api()
        .post(
            "/api/v1/broadcast",
            &json!({"event": {"type": "overlay", "overlay_type": "detection", "data": {"boxes": []}}}),
        )
        .await
        .unwrap();
    let e = ws.recv_event().await.unwrap();
    assert_eq!((e["type"].as_str(), e["event_type"].as_str()), (Some("event"), Some("sit")));
    assert_eq!(ws.recv_event().await.unwrap()["overlay_type"], "detection");
}

/// Seed 004 (home automation): `/ws`, `subscribe_room`, ping/pong, welcome `data.status`,
/// `room_updated` with `data.room_id`, 512-byte client messages.
#[tokio::test]
async fn seed_004_home_automation() {
    let hub = start_with(|s| s.websocket.max_message_bytes = 512).await;
    let mut ws = hub.client().await;
    assert_eq!(ws.welcome["data"]["status"], "connected");
    ws.send_json(&json!({"type": "subscribe_room", "data": {"room_id": 1}})).await.unwrap();
    assert_eq!(ws.recv_event().await.unwrap()["type"], "subscribed");
    ws.send_json(&json!({"type": "ping", "data": {}})).await.unwrap();
    assert_eq!(ws.recv_event().await.unwrap()["type"], "pong");
    hub.publish(
        "room:1",
        json!({"type": "room_updated", "data": {"room_id": 1, "room_name": "Living Room", "action": "created"}}),
    )
    .await;
    let e = ws.recv_event().await.unwrap();
    assert_eq!((e["type"].as_str(), e["data"]["action"].as_str()), (Some("room_updated"), Some("created")));
}
