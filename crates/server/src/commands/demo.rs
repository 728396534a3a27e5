//! `hubbub demo`: publishes sample events shaped like the seed applications' (match monitoring,
//! vision pipeline, poker hands, pet camera, home automation), round-robin over their channels.

use std::time::Duration;

use hubbub_client::http::Api;
use serde_json::{Value, json};

fn sample(i: u64) -> (&'static str, Value) {
    match i % 5 {
        0 => (
            "sensor_event",
            json!({"type": "sensor_event", "event_type": "impact_detected", "sensor_id": "BT50_01",
              "data": {"magnitude": 10.0 + (i % 10) as f64, "location": {"x": 2.3, "y": 1.8}}}),
        ),
        1 => ("state", json!({"type": "state", "data": {"balls": [{"id": 1, "x": 0.25, "y": 0.5}], "frame": i}})),
        2 => (
            "hands",
            json!({"type": "new_hand", "hand_id": format!("demo_hand_{i}"), "hero_result": 5.5,
              "hero_position": "BTN", "game_type": "NLH", "stakes": "0.05/0.10"}),
        ),
        3 => ("ui", json!({"type": "event", "event_type": "sit", "data": {"confidence": 0.95}})),
        _ => (
            "room:1",
            json!({"type": "room_updated", "data": {"room_id": 1, "room_name": "Living Room", "action": "updated"}}),
        ),
    }
}

/// Publishes until `count` events were sent, or forever.
pub async fn run(url: &str, api_key: Option<String>, rate: f64, count: Option<u64>) -> anyhow::Result<()> {
    anyhow::ensure!(rate > 0.0, "--rate must be positive");
    let api = Api::new(url, api_key)?;
    eprintln!(
        "publishing demo events to {url} on sensor_event, state, hands, ui, room:1 (try: hubbub sub ws://127.0.0.1:8000/ws sensor_event)"
    );
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut i = 0;
    while count.is_none_or(|c| i < c) {
        tick.tick().await;
        let (channel, event) = sample(i);
        let data = api.publish(channel, &event).await?;
        println!("{channel}: offset {} delivered to {}", data["offset"], data["delivered"]);
        i += 1;
    }
    Ok(())
}
