//! Bad input gets a clear error and loses nothing; abuse closes with a documented code.

use hubbub_proto::frame::OpCode;
use serde_json::{Value, json};

use crate::support::{RawWs, start, start_with, sub_msg};

/// Sends `text` and returns the error frame it earns, checking the connection still works after.
async fn error_for(c: &mut hubbub_client::Client, text: &str) -> Value {
    c.send_text(text.to_string()).await.unwrap();
    let e = c.recv_event().await.unwrap();
    assert_eq!(e["type"], "error", "{text} → {e}");
    assert!(e["message"].as_str().unwrap().len() > 10, "the message explains: {e}");
    assert!(e["timestamp"].is_string());
    c.send_json(&json!({"type": "ping"})).await.unwrap();
    assert_eq!(c.recv_event().await.unwrap()["type"], "pong", "connection stays usable after {text}");
    e
}

#[tokio::test]
async fn each_recoverable_error_has_its_code_and_keeps_the_connection() {
    let hub = start_with(|s| s.limits.max_channels_per_connection = 3).await;
    let mut c = hub.client().await;
    let table = [
        ("{not json", "malformed_json"),
        ("[1,2,3]", "malformed_json"),
        ("{}", "missing_type"),
        (r#"{"type":42}"#, "missing_type"),
        (r#"{"type":"dance"}"#, "unknown_type"),
        (r#"{"type":"subscribe"}"#, "invalid_message"),
        (r#"{"type":"subscribe","channels":[1,2]}"#, "invalid_message"),
        (r#"{"type":"subscribe_room","data":{}}"#, "invalid_message"),
        (r#"{"type":"subscribe","channels":["has space"]}"#, "invalid_channel"),
        (r#"{"type":"subscribe","channels":[""]}"#, "invalid_channel"),
        (r#"{"type":"subscribe","channels":["a","b","c","d"]}"#, "too_many_channels"),
    ];
    for (text, code) in table {
        let e = error_for(&mut c, text).await;
        assert_eq!(e["code"], code, "{text}");
    }
    // An id is echoed on errors too, and unknown types list the known ones.
    let e = error_for(&mut c, r#"{"type":"dance","id":"x1"}"#).await;
    assert_eq!(e["id"], "x1");
    assert!(e["message"].as_str().unwrap().contains("subscribe"));
    // Nothing was lost: the connection still subscribes and receives.
    assert_eq!(c.subscribe(&["ok"]).await.unwrap()["type"], "subscribed");
    hub.publish("ok", json!({"type": "fine"})).await;
    assert_eq!(c.recv_event().await.unwrap()["type"], "fine");
    let stats = hub.api().get("/api/v1/stats").await.unwrap().body;
    assert_eq!(stats["data"]["client_errors"], 12);
}

#[tokio::test]
async fn binary_frames_are_refused_politely() {
    let hub = start().await;
    let mut raw = RawWs::connect(hub.addr, "/ws").await;
    raw.next().await.unwrap(); // welcome
    raw.send_frame(OpCode::Binary, b"\x00\x01").await;
    let f = raw.next().await.unwrap();
    let e: Value = serde_json::from_slice(&f.payload).unwrap();
    assert_eq!(e["code"], "binary_not_supported");
}

#[tokio::test]
async fn oversize_frame_gets_an_error_then_close_1009() {
    let hub = start_with(|s| s.websocket.max_message_bytes = 512).await;
    let mut raw = RawWs::connect(hub.addr, "/ws").await;
    raw.next().await.unwrap();
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "p".repeat(600));
    raw.send_frame(OpCode::Text, big.as_bytes()).await;
    let (texts, close) = raw.until_close().await;
    assert_eq!(texts.last().unwrap()["code"], "message_too_big");
    assert_eq!(close.unwrap().0, 1009);
    // Exactly 512 bytes is fine.
    let mut c = hub.client().await;
    let ok = format!(r#"{{"type":"ping","pad":"{}"}}"#, "p".repeat(512 - 24));
    assert_eq!(ok.len(), 512);
    c.send_text(ok).await.unwrap();
    assert_eq!(c.recv_event().await.unwrap()["type"], "pong");
}

#[tokio::test]
async fn a_flood_of_bad_frames_closes_with_1008() {
    let hub = start_with(|s| s.websocket.max_errors_per_minute = 5).await;
    let mut raw = RawWs::connect(hub.addr, "/ws").await;
    raw.next().await.unwrap();
    for _ in 0..6 {
        raw.send_frame(OpCode::Text, b"garbage").await;
    }
    let (texts, close) = raw.until_close().await;
    assert_eq!(texts.iter().filter(|t| t["code"] == "malformed_json").count(), 6);
    assert_eq!(texts.last().unwrap()["code"], "too_many_errors");
    assert_eq!(close.unwrap().0, 1008);
}

#[tokio::test]
async fn protocol_violations_close_with_rfc_codes() {
    let hub = start().await;
    // Unmasked client frame: 1002.
    let mut raw = RawWs::connect(hub.addr, "/ws").await;
    raw.next().await.unwrap();
    raw.send_bytes(&[0x81, 0x02, b'h', b'i']).await;
    assert_eq!(raw.until_close().await.1.unwrap().0, 1002);
    // Invalid UTF-8 in a text frame: 1007.
    let mut raw = RawWs::connect(hub.addr, "/ws").await;
    raw.next().await.unwrap();
    raw.send_frame(OpCode::Text, &[0xC3, 0x28]).await;
    assert_eq!(raw.until_close().await.1.unwrap().0, 1007);
}

#[tokio::test]
async fn websocket_ping_is_answered_and_client_close_is_echoed() {
    let hub = start().await;
    let mut raw = RawWs::connect(hub.addr, "/ws").await;
    raw.next().await.unwrap();
    raw.send_frame(OpCode::Ping, b"hello").await;
    let f = raw.next().await.unwrap();
    assert_eq!((f.opcode, &f.payload[..]), (OpCode::Pong, &b"hello"[..]));
    raw.send_frame(OpCode::Close, &[0x03, 0xE8]).await;
    assert_eq!(raw.until_close().await.1.unwrap().0, 1000);
}

#[tokio::test]
async fn fragmented_messages_are_reassembled() {
    let hub = start().await;
    let mut raw = RawWs::connect(hub.addr, "/ws").await;
    raw.next().await.unwrap();
    let msg = sub_msg(&["frag"]).to_string();
    let (a, b) = msg.as_bytes().split_at(10);
    let mut out = bytes::BytesMut::new();
    hubbub_proto::frame::encode_into(&mut out, OpCode::Text, a, Some([1, 2, 3, 4]));
    out[0] &= 0x7F; // not final
    hubbub_proto::frame::encode_into(&mut out, OpCode::Continuation, b, Some([4, 3, 2, 1]));
    raw.send_bytes(&out).await;
    let f = raw.next().await.unwrap();
    let v: Value = serde_json::from_slice(&f.payload).unwrap();
    assert_eq!(v["type"], "subscribed");
}
