//! Delivery guarantees: order, slow consumers, no waiting on clients.

use std::time::Duration;

use serde_json::json;

use crate::support::{eventually, start_with};

#[tokio::test]
async fn order_holds_under_concurrent_publishers() {
    let hub = start_with(|_| {}).await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(hub.subscriber(&["ordered"]).await);
    }
    const PUBLISHERS: u64 = 4;
    const EACH: u64 = 150;
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let api = hub.api();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                api.publish("ordered", &json!({"type": "n", "publisher": p, "i": i})).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for c in &mut subs {
        let mut last_i = vec![-1i64; PUBLISHERS as usize];
        for expected_offset in 1..=PUBLISHERS * EACH {
            let e = c.recv_event().await.unwrap();
            assert_eq!(e["offset"].as_u64(), Some(expected_offset), "gap or reorder: {e}");
            let p = e["publisher"].as_u64().unwrap() as usize;
            let i = e["i"].as_i64().unwrap();
            assert!(i > last_i[p], "publisher {p} reordered");
            last_i[p] = i;
        }
    }
}

#[tokio::test]
async fn a_slow_consumer_is_closed_while_others_keep_receiving() {
    let hub = start_with(|s| {
        s.limits.outbox_max_messages = 64;
        s.limits.outbox_max_bytes = 1 << 20;
    })
    .await;
    // Never reads: its socket buffers fill, then its outbox.
    let mut slow = hub.subscriber(&["firehose"]).await;
    let mut fast = hub.subscriber(&["firehose"]).await;
    let big = "y".repeat(60_000);
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < 400 {
            let e = fast.recv_event().await.unwrap();
            assert_eq!(e["n"], n);
            n += 1;
        }
        n
    });
    for n in 0..400 {
        let r = hub.publish("firehose", json!({"type": "blob", "n": n, "pad": big})).await;
        assert!(r["delivered"].as_u64().unwrap() >= 1);
    }
    assert_eq!(tokio::time::timeout(Duration::from_secs(20), reader).await.unwrap().unwrap(), 400);
    let stats = hub.api().get("/api/v1/stats").await.unwrap().body;
    assert_eq!(stats["data"]["slow_consumer_disconnects"], 1, "{stats}");
    let (code, reason) = slow.closed().await;
    assert_eq!(code, Some(4008), "{reason}");
    eventually("slow consumer unregistered", async || hub.hub.registry().connection_count() == 1).await;
}

#[tokio::test]
async fn drop_oldest_keeps_a_slow_client_connected_with_the_newest_frames() {
    let hub = start_with(|s| {
        s.limits.outbox_max_messages = 8;
        s.limits.overflow = hubbub_server::settings::Overflow::DropOldest;
    })
    .await;
    let mut slow = hub.subscriber(&["telemetry"]).await;
    let big = "z".repeat(60_000);
    for n in 0..300 {
        hub.publish("telemetry", json!({"type": "t", "n": n, "pad": big})).await;
    }
    let stats = hub.api().get("/api/v1/stats").await.unwrap().body;
    assert!(stats["data"]["dropped_frames"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(stats["data"]["slow_consumer_disconnects"], 0);
    // Still connected, and the last event published is among what it receives.
    let mut last = 0;
    while last != 299 {
        last = slow.recv_event().await.unwrap()["n"].as_u64().unwrap();
    }
}

#[tokio::test]
async fn publish_to_a_channel_nobody_listens_to_goes_nowhere() {
    let hub = start_with(|_| {}).await;
    let r = hub.publish("void", json!({"type": "x"})).await;
    assert_eq!(r["delivered"], 0);
    assert!(r["offset"].is_null());
}

#[tokio::test]
async fn multi_channel_publish_stamps_each_channel() {
    let hub = start_with(|_| {}).await;
    let mut a = hub.subscriber(&["a"]).await;
    let mut b = hub.subscriber(&["b"]).await;
    let r =
        hub.api().post("/api/v1/publish", &json!({"channels": ["a", "b"], "event": {"type": "both"}})).await.unwrap();
    assert_eq!(r.body["data"]["delivered"], 2);
    assert_eq!(r.body["data"]["results"].as_array().unwrap().len(), 2);
    assert_eq!(a.recv_event().await.unwrap()["channel"], "a");
    assert_eq!(b.recv_event().await.unwrap()["channel"], "b");
}

#[tokio::test]
async fn in_process_publish_has_the_same_semantics() {
    let hub = start_with(|_| {}).await;
    let mut c = hub.subscriber(&["inproc"]).await;
    let event = hubbub::Event::from_json(r#"{"type":"from-rust","v":1}"#).unwrap();
    let receipts = hub.hub.publish(&["inproc".to_string()], event).await.unwrap();
    assert_eq!((receipts[0].receipt.offset, receipts[0].receipt.delivered), (Some(1), 1));
    let e = c.recv_event().await.unwrap();
    assert_eq!((e["type"].as_str(), e["offset"].as_u64()), (Some("from-rust"), Some(1)));
    assert!(hubbub::Event::from_json("[1,2]").is_err());
}

#[tokio::test]
async fn a_write_stuck_past_the_write_timeout_closes_the_client() {
    let hub = start_with(|s| {
        s.websocket.write_timeout = Duration::from_millis(300);
        s.limits.outbox_max_messages = 100_000;
        s.limits.outbox_max_bytes = 256 << 20;
    })
    .await;
    let mut stuck = hub.subscriber(&["big"]).await; // never reads until the end
    let big = "w".repeat(60_000);
    for n in 0..300 {
        hub.publish("big", json!({"type": "blob", "n": n, "pad": big})).await;
    }
    eventually("write timeout closes it", async || {
        hub.api().get("/api/v1/stats").await.unwrap().body["data"]["slow_consumer_disconnects"] == 1
    })
    .await;
    eventually("unregistered", async || hub.hub.registry().connection_count() == 0).await;
    let (code, _) = stuck.closed().await;
    assert!(code.is_none() || code == Some(4008), "{code:?}");
}
