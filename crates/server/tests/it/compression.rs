//! permessage-deflate (RFC 7692): negotiation, one compression per publication shared by every
//! compressed subscriber, compressed client messages, and the limits on inflating. Compressed
//! bytes are checked with flate2's streaming decoder and encoder, not the hub's own helpers.

use std::io::{Read, Write};
use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use hubbub_proto::deflate;
use hubbub_proto::frame::OpCode;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::support::{RawWs, start, start_with, sub_msg};

const OFFER: (&str, &str) = ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits");
const AGREED: &str =
    "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// A message as a client with permessage-deflate compresses it: raw DEFLATE, sync flush, the
/// 4-byte tail removed.
fn client_deflate(payload: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(payload).unwrap();
    z.flush().unwrap(); // a sync flush
    let mut out = z.get_ref().clone();
    assert_eq!(out[out.len() - 4..], [0, 0, 0xFF, 0xFF]);
    out.truncate(out.len() - 4);
    out
}

/// Inflates a compressed message as a client would (tail appended again).
fn client_inflate(compressed: &[u8]) -> Vec<u8> {
    let mut input = compressed.to_vec();
    input.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
    let mut out = Vec::new();
    let mut d = flate2::read::DeflateDecoder::new(&input[..]);
    // The stream has no final block, so the decoder reports the end of its input as an error
    // after producing everything; what it produced is what counts.
    let _ = d.read_to_end(&mut out);
    out
}

async fn deflate_client(addr: std::net::SocketAddr) -> RawWs {
    let (mut ws, head) = RawWs::connect_with(addr, "/ws", &[OFFER]).await;
    assert!(head.to_ascii_lowercase().contains(AGREED), "{head}");
    let welcome = ws.next().await.unwrap();
    assert!(!welcome.compressed, "replies are small and go out plain");
    ws
}

async fn subscribe(ws: &mut RawWs, channel: &str) {
    ws.send_frame(OpCode::Text, sub_msg(&[channel]).to_string().as_bytes()).await;
    loop {
        let f = ws.next().await.unwrap();
        let v: Value = serde_json::from_slice(&f.payload).unwrap();
        if v["type"] == "subscribed" {
            return;
        }
    }
}

#[tokio::test]
async fn each_publication_is_compressed_once_and_shared() {
    let hub = start().await;
    let mut zipped = Vec::new();
    for _ in 0..3 {
        let mut ws = deflate_client(hub.addr).await;
        subscribe(&mut ws, "match-1").await;
        zipped.push(ws);
    }
    let mut plain = hub.subscriber(&["match-1"]).await;
    let counters = &hub.hub.stats().counters;
    let before = counters.deflated_publications.load(Relaxed);

    let players: Vec<Value> =
        (0..20).map(|i| json!({"id": i, "name": format!("player {i}"), "score": i * 7})).collect();
    let event = json!({"type": "match_update", "players": players});
    hub.publish("match-1", event.clone()).await;

    let mut frames = Vec::new();
    for ws in &mut zipped {
        let f = ws.next().await.unwrap();
        assert!(f.compressed, "RSV1 set on a {}-byte publication", event.to_string().len());
        let v: Value = serde_json::from_slice(&client_inflate(&f.payload)).unwrap();
        assert_eq!(v["players"], event["players"]);
        assert_eq!(v["channel"], "match-1");
        frames.push(f.payload);
    }
    assert!(frames.windows(2).all(|w| w[0] == w[1]), "every subscriber got the same compressed bytes");
    assert!(frames[0].len() * 2 < event.to_string().len(), "{} vs {}", frames[0].len(), event.to_string().len());
    let v = plain.recv_event().await.unwrap();
    assert_eq!(v["players"], event["players"], "a client without the extension gets the plain frame");
    assert_eq!(counters.deflated_publications.load(Relaxed) - before, 1, "compressed once, not per subscriber");

    // Small publications are not worth compressing.
    hub.publish("match-1", json!({"type": "tick", "n": 1})).await;
    for ws in &mut zipped {
        let f = ws.next().await.unwrap();
        assert!(!f.compressed);
        assert_eq!(serde_json::from_slice::<Value>(&f.payload).unwrap()["n"], 1);
    }
    let metrics = hub.api().get("/metrics").await.unwrap().text;
    assert!(metrics.contains("hubbub_deflated_publications_total 1\n"), "{metrics}");
}

#[tokio::test]
async fn client_messages_may_arrive_compressed_and_fragmented() {
    let hub = start().await;
    let mut ws = deflate_client(hub.addr).await;
    let sub = sub_msg(&["a", "b"]).to_string();
    let z = client_deflate(sub.as_bytes());
    // First fragment carries RSV1, the continuation does not (RFC 7692 §6.1).
    let (head, tail) = z.split_at(z.len() / 2);
    let mut out = BytesMut::new();
    deflate::client_frame_into(&mut out, OpCode::Text, head, [1, 2, 3, 4]);
    out[0] &= 0x7F; // not FIN
    hubbub_proto::frame::encode_into(&mut out, OpCode::Continuation, tail, Some([5, 6, 7, 8]));
    ws.send_bytes(&out).await;
    let f = ws.next().await.unwrap();
    let v: Value = serde_json::from_slice(&f.payload).unwrap();
    assert_eq!(v["type"], "subscribed", "{v}");
    assert_eq!(v["channels"], json!(["a", "b"]));

    // Plain messages still work on the same connection.
    ws.send_frame(OpCode::Text, br#"{"type":"ping"}"#).await;
    let v: Value = serde_json::from_slice(&ws.next().await.unwrap().payload).unwrap();
    assert_eq!(v["type"], "pong");
}

#[tokio::test]
async fn a_decompression_bomb_is_stopped_at_the_message_limit() {
    let hub = start_with(|s| s.websocket.max_message_bytes = 4096).await;
    let mut ws = deflate_client(hub.addr).await;
    let bomb = client_deflate(&vec![b' '; 1 << 20]);
    assert!(bomb.len() < 4096, "the compressed frame itself is within the limit ({} bytes)", bomb.len());
    let mut out = BytesMut::new();
    deflate::client_frame_into(&mut out, OpCode::Text, &bomb, [1, 2, 3, 4]);
    ws.send_bytes(&out).await;
    let (texts, close) = ws.until_close().await;
    assert_eq!(texts.last().unwrap()["code"], "message_too_big", "{texts:?}");
    assert_eq!(close.unwrap().0, 1009);
}

#[tokio::test]
async fn invalid_compressed_data_and_stray_rsv1_are_refused() {
    let hub = start().await;
    let mut ws = deflate_client(hub.addr).await;
    let mut out = BytesMut::new();
    deflate::client_frame_into(&mut out, OpCode::Text, &[0xFF; 16], [1, 2, 3, 4]);
    ws.send_bytes(&out).await;
    let (_, close) = ws.until_close().await;
    assert_eq!(close.unwrap(), (1007, "invalid compressed data".to_string()));

    // RSV1 on a control frame, even with the extension.
    let mut ws = deflate_client(hub.addr).await;
    let mut out = BytesMut::new();
    deflate::client_frame_into(&mut out, OpCode::Ping, b"x", [1, 2, 3, 4]);
    ws.send_bytes(&out).await;
    assert_eq!(ws.until_close().await.1.unwrap().0, 1002);

    // RSV1 without the extension.
    let mut ws = RawWs::connect(hub.addr, "/ws").await;
    ws.next().await.unwrap();
    let mut out = BytesMut::new();
    deflate::client_frame_into(&mut out, OpCode::Text, &client_deflate(b"{}"), [1, 2, 3, 4]);
    ws.stream.write_all(&out).await.unwrap();
    assert_eq!(ws.until_close().await.1.unwrap().0, 1002);
}

#[tokio::test]
async fn offers_the_hub_cannot_honour_get_plain_frames() {
    // A client that limits the hub's window gets the extension but uncompressed messages.
    let hub = start().await;
    let offer = ("Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=10");
    let (mut ws, head) = RawWs::connect_with(hub.addr, "/ws", &[offer]).await;
    assert!(head.to_ascii_lowercase().contains("server_max_window_bits=10"), "{head}");
    ws.next().await.unwrap();
    subscribe(&mut ws, "big").await;
    hub.publish("big", json!({"text": "x".repeat(2000)})).await;
    let f = ws.next().await.unwrap();
    assert!(!f.compressed);
    assert_eq!(serde_json::from_slice::<Value>(&f.payload).unwrap()["text"].as_str().unwrap().len(), 2000);

    // A malformed offer is declined: no extension.
    let bad = ("Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=99");
    let (_, head) = RawWs::connect_with(hub.addr, "/ws", &[bad]).await;
    assert!(!head.to_ascii_lowercase().contains("sec-websocket-extensions"), "{head}");

    // Turned off in the settings: no extension for anybody.
    let off = start_with(|s| s.websocket.compression = false).await;
    let (_, head) = RawWs::connect_with(off.addr, "/ws", &[OFFER]).await;
    assert!(!head.to_ascii_lowercase().contains("sec-websocket-extensions"), "{head}");
}

#[tokio::test]
async fn the_echo_endpoint_compresses_every_message_within_the_agreed_window() {
    let hub = start_with(|s| s.websocket.echo_path = Some("/echo".into())).await;
    for (offer, label) in
        [(OFFER.1, "full window"), ("permessage-deflate; server_max_window_bits=9", "512-byte window")]
    {
        let (mut ws, head) = RawWs::connect_with(hub.addr, "/echo", &[("Sec-WebSocket-Extensions", offer)]).await;
        assert!(head.to_ascii_lowercase().contains("permessage-deflate"), "{head}");
        // Tiny, incompressible and large repetitive messages all come back compressed and intact.
        let noise: Vec<u8> = (0..3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        let text = "abc".repeat(5000).into_bytes();
        for (op, msg) in [(OpCode::Text, b"hi".to_vec()), (OpCode::Binary, noise), (OpCode::Text, text)] {
            ws.send_frame(op, &msg).await;
            let f = ws.next().await.unwrap();
            assert!(f.compressed, "{label}: {} bytes", msg.len());
            assert_eq!(f.opcode, op);
            assert_eq!(client_inflate(&f.payload), msg, "{label}");
        }
    }
}

#[tokio::test]
async fn across_redis_each_node_compresses_for_its_own_subscribers() {
    let Some(redis) = crate::support::RedisServer::start() else { return };
    let a = crate::support::start_node(&redis, "deflate", |_| {}).await;
    let b = crate::support::start_node(&redis, "deflate", |_| {}).await;
    let mut on_b = deflate_client(b.addr).await;
    subscribe(&mut on_b, "feed").await;
    let event =
        json!({"type": "report", "rows": (0..30).map(|i| json!({"row": i, "label": "ok"})).collect::<Vec<_>>()});
    a.publish("feed", event.clone()).await;
    let f = on_b.next().await.unwrap();
    assert!(f.compressed, "the frame from the other node went out compressed");
    let v: Value = serde_json::from_slice(&client_inflate(&f.payload)).unwrap();
    assert_eq!((v["rows"].clone(), v["offset"].as_u64()), (event["rows"].clone(), Some(1)));
    let count = |hub: &crate::support::TestHub| hub.hub.stats().counters.deflated_publications.load(Relaxed);
    assert_eq!((count(&a), count(&b)), (0, 1), "only the node with a compressed subscriber compresses");
}
