//! Heartbeats, pings, timeouts and shutdown.

use std::time::{Duration, Instant};

use hubbub_proto::frame::OpCode;
use serde_json::json;

use crate::support::{RawWs, start_with};

#[tokio::test]
async fn heartbeats_arrive_with_the_client_count() {
    let hub = start_with(|s| s.websocket.heartbeat_interval = Duration::from_millis(200)).await;
    let mut a = hub.client().await;
    let _b = hub.client().await;
    let start = Instant::now();
    let hb = a.recv().await.unwrap();
    assert_eq!(hb["type"], "heartbeat");
    assert_eq!(hb["data"]["clients"], 2);
    assert!(hb["data"]["timestamp"].is_string() && hb["timestamp"].is_string());
    let hb2 = a.recv().await.unwrap();
    assert_eq!(hb2["type"], "heartbeat");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_silent_peer_is_pinged_then_closed_at_the_read_timeout() {
    let hub = start_with(|s| {
        s.websocket.read_timeout = Duration::from_millis(800);
        s.websocket.ping_interval = Duration::from_millis(300);
    })
    .await;
    let mut raw = RawWs::connect(hub.addr, "/ws").await;
    let start = Instant::now();
    let mut pinged = false;
    let close = loop {
        let f = raw.next().await.expect("closed without a close frame");
        match f.opcode {
            OpCode::Ping => pinged = true,
            OpCode::Close => break f,
            _ => {}
        }
    };
    let code = u16::from_be_bytes([close.payload[0], close.payload[1]]);
    assert_eq!(code, 1008);
    assert!(String::from_utf8_lossy(&close.payload[2..]).contains("read timeout"));
    assert!(pinged, "the hub pings before giving up");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(750) && took < Duration::from_secs(3), "{took:?}");
    let stats = hub.api().get("/api/v1/stats").await.unwrap().body;
    assert_eq!(stats["data"]["read_timeouts"], 1);
}

#[tokio::test]
async fn a_peer_that_answers_pings_stays_connected() {
    let hub = start_with(|s| {
        s.websocket.read_timeout = Duration::from_millis(600);
        s.websocket.ping_interval = Duration::from_millis(200);
    })
    .await;
    let mut c = hub.subscriber(&["alive"]).await;
    // tokio-websockets answers pings while we wait for frames.
    assert!(c.recv_timeout(Duration::from_millis(1500)).await.is_err());
    hub.publish("alive", json!({"type": "still-here"})).await;
    assert_eq!(c.recv_event().await.unwrap()["type"], "still-here");
}

#[tokio::test]
async fn graceful_shutdown_flushes_then_sends_1001() {
    let hub = start_with(|_| {}).await;
    let mut a = hub.subscriber(&["last"]).await;
    let mut b = hub.client().await;
    hub.publish("last", json!({"type": "final-words"})).await;
    let shutdown = tokio::spawn(hub.shutdown());
    assert_eq!(a.recv_event().await.unwrap()["type"], "final-words", "queued events are flushed first");
    assert_eq!(a.closed().await.0, Some(1001));
    assert_eq!(b.closed().await.0, Some(1001));
    tokio::time::timeout(Duration::from_secs(5), shutdown).await.unwrap().unwrap();
}

#[tokio::test]
async fn connections_are_removed_from_the_registry_when_they_leave() {
    let hub = start_with(|_| {}).await;
    let c = hub.subscriber(&["x", "y"]).await;
    let raw = RawWs::connect(hub.addr, "/ws").await;
    assert_eq!(hub.hub.registry().connection_count(), 2);
    c.close().await.unwrap();
    drop(raw);
    crate::support::eventually("both gone", async || {
        hub.hub.registry().connection_count() == 0 && hub.hub.registry().channel_count() == 0
    })
    .await;
}
