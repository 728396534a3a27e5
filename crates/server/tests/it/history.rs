//! History, recovery, acknowledged delivery, idempotent and durable publishing.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{TestHub, ack, history, resubscribe, start_with, temp_dir};

async fn hub_with_history(size: usize, ttl: Duration) -> TestHub {
    start_with(|s| s.channels.push(history("h:*", size, ttl))).await
}

#[tokio::test]
async fn a_reconnecting_client_recovers_what_it_missed_then_continues_live() {
    let hub = hub_with_history(100, Duration::from_secs(600)).await;
    let mut c = hub.subscriber(&["h:1"]).await;
    for n in 1..=3 {
        hub.publish("h:1", json!({"type": "n", "n": n})).await;
    }
    let mut last = Value::Null;
    for _ in 0..3 {
        last = c.recv_event().await.unwrap();
    }
    let epoch = hub.api().get("/api/v1/channels").await.unwrap().body["data"]["channels"][0]["epoch"].clone();
    c.close().await.unwrap();
    for n in 4..=9 {
        hub.publish("h:1", json!({"type": "n", "n": n})).await;
    }
    let mut c = hub.client().await;
    let p = resubscribe(&mut c, "h:1", last["offset"].as_u64().unwrap(), epoch.as_str().unwrap()).await;
    assert_eq!(
        (p["recovered"].as_bool(), p["replayed"].as_u64(), p["offset"].as_u64()),
        (Some(true), Some(6), Some(9))
    );
    hub.publish("h:1", json!({"type": "n", "n": 10})).await;
    for n in 4..=10 {
        let e = c.recv_event().await.unwrap();
        assert_eq!((e["n"].as_u64(), e["offset"].as_u64()), (Some(n), Some(n)));
    }
}

#[tokio::test]
async fn recovery_has_no_gap_and_no_duplicate_under_concurrent_publishers() {
    let hub = hub_with_history(100_000, Duration::from_secs(600)).await;
    // Offset 0 of a fresh channel: create the epoch first.
    let mut first = hub.subscriber(&["h:race"]).await;
    hub.publish("h:race", json!({"type": "seed"})).await;
    first.recv_event().await.unwrap();
    let epoch = hub.api().get("/api/v1/channels").await.unwrap().body["data"]["channels"][0]["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    let publishers: Vec<_> = (0..3)
        .map(|p| {
            let api = hub.api();
            tokio::spawn(async move {
                for i in 0..150 {
                    api.publish("h:race", &json!({"type": "n", "p": p, "i": i})).await.unwrap();
                }
            })
        })
        .collect();
    // Subscribe from offset 1 while the publishers run.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut c = hub.client().await;
    let p = resubscribe(&mut c, "h:race", 1, &epoch).await;
    assert_eq!(p["recovered"], true, "{p}");
    for t in publishers {
        t.await.unwrap();
    }
    let total = 1 + 3 * 150;
    for expected in 2..=total {
        let e = c.recv_event().await.unwrap();
        assert_eq!(e["offset"].as_u64(), Some(expected), "gap or duplicate: {e}");
    }
    assert!(c.recv_timeout(Duration::from_millis(200)).await.is_err(), "no extra frames");
}

#[tokio::test]
async fn a_changed_epoch_is_reported_not_hidden() {
    let hub = hub_with_history(100, Duration::from_secs(600)).await;
    hub.publish("h:e", json!({"type": "x"})).await;
    let mut c = hub.client().await;
    let p = resubscribe(&mut c, "h:e", 0, "some-old-epoch").await;
    assert_eq!((p["recovered"].as_bool(), p["reason"].as_str()), (Some(false), Some("epoch_changed")));
    assert_eq!(p["offset"], 1, "the current position, so the client can reload and continue");
    // A restarted in-memory hub is a new epoch too.
    let again = hub_with_history(100, Duration::from_secs(600)).await;
    again.publish("h:e", json!({"type": "x"})).await;
    let e2 = again.api().get("/api/v1/channels/h:e/history").await.unwrap().body["data"]["epoch"].clone();
    let e1 = hub.api().get("/api/v1/channels/h:e/history").await.unwrap().body["data"]["epoch"].clone();
    assert_ne!(e1, e2);
}

#[tokio::test]
async fn size_trimming_and_ttl_expiry_end_recovery() {
    let hub = start_with(|s| {
        s.channels.push(history("h:small", 3, Duration::from_secs(600)));
        s.channels.push(history("h:short", 100, Duration::from_millis(300)));
    })
    .await;
    for n in 1..=5 {
        hub.publish("h:small", json!({"n": n})).await;
    }
    let r = hub.api().get("/api/v1/channels/h:small/history").await.unwrap().body;
    let epoch = r["data"]["epoch"].as_str().unwrap().to_string();
    let ns: Vec<u64> = r["data"]["events"].as_array().unwrap().iter().map(|e| e["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, vec![3, 4, 5]);
    let mut c = hub.client().await;
    assert_eq!(resubscribe(&mut c, "h:small", 1, &epoch).await["reason"], "too_old");
    let mut c = hub.client().await;
    assert_eq!(resubscribe(&mut c, "h:small", 2, &epoch).await["replayed"], 3);

    hub.publish("h:short", json!({"n": 1})).await;
    let epoch = hub.api().get("/api/v1/channels/h:short/history").await.unwrap().body["data"]["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(450)).await;
    let r = hub.api().get("/api/v1/channels/h:short/history").await.unwrap().body;
    assert_eq!(r["data"]["count"], 0, "expired: {r}");
    let mut c = hub.client().await;
    assert_eq!(resubscribe(&mut c, "h:short", 0, &epoch).await["reason"], "too_old");
}

#[tokio::test]
async fn history_endpoint_pages_and_explains() {
    let hub = hub_with_history(100, Duration::from_secs(600)).await;
    for n in 1..=5 {
        hub.publish("h:api", json!({"n": n})).await;
    }
    let get = |q: &'static str| {
        let api = hub.api();
        async move { api.get(&format!("/api/v1/channels/h:api/history{q}")).await.unwrap() }
    };
    let ns = |r: &Value| {
        r["data"]["events"].as_array().unwrap().iter().map(|e| e["n"].as_u64().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(ns(&get("").await.body), vec![1, 2, 3, 4, 5]);
    assert_eq!(ns(&get("?since=2&limit=2").await.body), vec![3, 4]);
    assert_eq!(ns(&get("?reverse=true&limit=2").await.body), vec![5, 4]);
    let r = get("?since=9").await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (410, Some("offset_ahead")));
    let r = hub.api().get("/api/v1/channels/plain/history").await.unwrap();
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (404, Some("no_history")));
    // A history channel keeps its events with nobody subscribed; a plain one does not.
    assert_eq!(hub.publish("h:api", json!({"n": 6})).await["offset"], 6);
    assert!(hub.publish("plain", json!({"n": 1})).await["offset"].is_null());
}

#[tokio::test]
async fn acknowledged_delivery_resumes_after_the_last_ack() {
    let hub = hub_with_history(100, Duration::from_secs(600)).await;
    let url = hub.ws("/ws?client_name=alice");
    let sub_ack = json!({"type": "subscribe", "channels": ["h:inbox"], "ack": true});
    let mut c = hubbub_client::Client::connect(&url).await.unwrap();
    c.send_json(&sub_ack).await.unwrap();
    assert_eq!(c.recv_event().await.unwrap()["positions"][0]["recovered"], true);
    for n in 1..=3 {
        hub.publish("h:inbox", json!({"n": n})).await;
    }
    for _ in 0..3 {
        c.recv_event().await.unwrap();
    }
    ack(&mut c, "h:inbox", 2).await;
    c.close().await.unwrap();
    // Published while alice is offline: they wait for her.
    for n in 4..=5 {
        hub.publish("h:inbox", json!({"n": n})).await;
    }
    let mut c = hubbub_client::Client::connect(&url).await.unwrap();
    // Whatever alice claims to remember, delivery resumes after her last ack (2).
    c.send_json(&json!({"type": "subscribe", "channels": ["h:inbox"], "ack": true,
                        "since": {"h:inbox": {"offset": 5, "epoch": "whatever"}}}))
        .await
        .unwrap();
    let r = c.recv_event().await.unwrap();
    assert_eq!(
        (r["positions"][0]["recovered"].as_bool(), r["positions"][0]["replayed"].as_u64()),
        (Some(true), Some(3))
    );
    for n in 3..=5 {
        assert_eq!(c.recv_event().await.unwrap()["n"], n, "unacknowledged 3 is redelivered");
    }
    // Ack errors are explained.
    c.send_json(&json!({"type": "ack", "channel": "h:other", "offset": 1})).await.unwrap();
    assert_eq!(c.recv_event().await.unwrap()["code"], "invalid_message");
    let mut anon = hub.client().await;
    anon.send_json(&sub_ack).await.unwrap();
    let e = anon.recv_event().await.unwrap();
    assert!(e["message"].as_str().unwrap().contains("client_name"), "{e}");
}

#[tokio::test]
async fn idempotent_publish_publishes_once() {
    let hub = hub_with_history(100, Duration::from_secs(600)).await;
    let mut c = hub.subscriber(&["h:idem"]).await;
    let body = json!({"channel": "h:idem", "event": {"type": "pay", "amount": 5}, "idempotency_key": "order-17"});
    let first = hub.api().post("/api/v1/publish", &body).await.unwrap().body;
    let again = hub.api().post("/api/v1/publish", &body).await.unwrap().body;
    assert_eq!(first["data"]["offset"], again["data"]["offset"]);
    assert_eq!((first["data"]["duplicate"].as_bool(), again["data"]["duplicate"].as_bool()), (Some(false), Some(true)));
    assert_eq!(c.recv_event().await.unwrap()["amount"], 5);
    assert!(c.recv_timeout(Duration::from_millis(300)).await.is_err(), "published once");
    let other = json!({"channel": "h:idem", "event": {"type": "pay"}, "idempotency_key": "order-18"});
    assert_eq!(hub.api().post("/api/v1/publish", &other).await.unwrap().body["data"]["offset"], 2);
}

#[tokio::test]
async fn durable_publish_needs_a_disk_store_and_a_history_channel() {
    let mem = hub_with_history(100, Duration::from_secs(600)).await;
    let r = mem.api().post("/api/v1/publish", &json!({"channel": "h:d", "durable": true, "event": {}})).await.unwrap();
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (400, Some("durable_unavailable")));
    let dir = temp_dir("durable");
    let disk = start_with(|s| {
        s.channels.push(history("h:*", 100, Duration::from_secs(600)));
        s.history.store = hubbub_server::settings::Store::Disk;
        s.history.path = dir.clone();
    })
    .await;
    let r = disk
        .api()
        .post("/api/v1/publish", &json!({"channel": "h:d", "durable": true, "event": {"n": 1}}))
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.body["data"]["stored"].as_bool(), r.body["data"]["durable"].as_bool()),
        (200, Some(true), Some(true))
    );
    let r =
        disk.api().post("/api/v1/publish", &json!({"channel": "plain", "durable": true, "event": {}})).await.unwrap();
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (400, Some("no_history")));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_replay_larger_than_the_outbox_is_delivered_not_cut_off() {
    let hub = start_with(|s| {
        s.channels.push(history("h:*", 5_000, Duration::from_secs(600)));
        s.limits.outbox_max_messages = 64;
    })
    .await;
    hub.publish("h:big", json!({"n": 0})).await;
    let epoch = hub.api().get("/api/v1/channels/h:big/history").await.unwrap().body["data"]["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    for n in 1..=500 {
        hub.publish("h:big", json!({"n": n})).await;
    }
    let mut c = hub.client().await;
    let p = resubscribe(&mut c, "h:big", 1, &epoch).await;
    assert_eq!((p["recovered"].as_bool(), p["replayed"].as_u64()), (Some(true), Some(500)));
    for offset in 2..=501 {
        assert_eq!(c.recv_event().await.unwrap()["offset"], offset);
    }
}

#[tokio::test]
async fn an_idempotency_key_reused_for_another_request_is_refused() {
    let hub = hub_with_history(100, Duration::from_secs(600)).await;
    let a = json!({"channel": "h:k", "event": {"n": 1}, "idempotency_key": "k1"});
    let b = json!({"channel": "h:k", "event": {"n": 2}, "idempotency_key": "k1"});
    assert_eq!(hub.api().post("/api/v1/publish", &a).await.unwrap().status, 200);
    let r = hub.api().post("/api/v1/publish", &b).await.unwrap();
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (409, Some("idempotency_key_reused")));
    let r = hub.api().get("/api/v1/channels/h:k/history?since=abc").await.unwrap();
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (400, Some("invalid_query")));
}
