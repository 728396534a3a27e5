//! Several hubbub nodes sharing one real `redis-server` (each test starts its own on a free port,
//! so it can kill and restart it).

use std::time::Duration;

use serde_json::json;

use crate::support::{RedisServer, ack, eventually, history, resubscribe, start_node};

/// Settings with history for `h:*`, `size` publications for 10 minutes.
fn keep_history(size: usize) -> impl Fn(&mut hubbub_server::settings::Settings) + Copy {
    move |s| s.channels.push(history("h:*", size, Duration::from_secs(600)))
}

macro_rules! redis_or_skip {
    () => {
        match RedisServer::start() {
            Some(r) => r,
            None => return,
        }
    };
}

#[tokio::test]
async fn a_publish_on_one_node_reaches_subscribers_on_all_nodes_once() {
    let redis = redis_or_skip!();
    let a = start_node(&redis, "t1", |_| {}).await;
    let b = start_node(&redis, "t1", |_| {}).await;
    let c = start_node(&redis, "t1", |_| {}).await;
    let mut on_b = b.subscriber(&["news"]).await;
    let mut on_c = c.subscriber(&["news"]).await;
    let mut other = c.subscriber(&["sport"]).await;
    let mut on_a = a.subscriber(&["news"]).await;
    for n in 1..=20 {
        let r = a.publish("news", json!({"type": "headline", "n": n})).await;
        assert_eq!(r["offset"], n);
    }
    for client in [&mut on_a, &mut on_b, &mut on_c] {
        for n in 1..=20 {
            let e = client.recv_event().await.unwrap();
            assert_eq!(
                (e["n"].as_u64(), e["offset"].as_u64(), e["channel"].as_str()),
                (Some(n), Some(n), Some("news"))
            );
        }
        assert!(client.recv_timeout(Duration::from_millis(200)).await.is_err(), "no duplicates");
    }
    assert!(other.recv_timeout(Duration::from_millis(100)).await.is_err(), "channel isolation across nodes");
    // Broadcast reaches every node's clients.
    b.api().post("/api/v1/broadcast", &json!({"event": {"type": "all-hands"}})).await.unwrap();
    for client in [&mut on_a, &mut on_b, &mut on_c, &mut other] {
        assert_eq!(client.recv_event().await.unwrap()["type"], "all-hands");
    }
    let stats = a.api().get("/api/v1/stats").await.unwrap().body;
    assert_eq!(stats["data"]["broker"], "redis");
    let nodes = async || a.api().get("/api/v1/health").await.unwrap().body["data"]["nodes_alive"].as_u64() == Some(3);
    eventually("three nodes alive", nodes).await;
}

#[tokio::test]
async fn redis_subscriptions_end_when_the_last_local_subscriber_leaves() {
    let redis = redis_or_skip!();
    let a = start_node(&redis, "t2", |_| {}).await;
    let numsub = || redis.cli(&["PUBSUB", "NUMSUB", "t2:c:room:1"]);
    let c1 = a.subscriber(&["room:1"]).await;
    let c2 = a.subscriber(&["room:1"]).await;
    assert_eq!(numsub(), "t2:c:room:1\n1", "one Redis subscription per node, not per client");
    c1.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(numsub(), "t2:c:room:1\n1");
    c2.close().await.unwrap();
    eventually("unsubscribed from redis", async || numsub() == "t2:c:room:1\n0").await;
}

#[tokio::test]
async fn history_and_acks_are_shared_across_nodes() {
    let redis = redis_or_skip!();
    let rule = keep_history(100);
    let a = start_node(&redis, "t3", rule).await;
    let b = start_node(&redis, "t3", rule).await;
    for n in 1..=5 {
        a.publish("h:x", json!({"n": n})).await;
    }
    let page = b.api().get("/api/v1/channels/h:x/history").await.unwrap().body;
    assert_eq!(page["data"]["count"], 5);
    let epoch = page["data"]["epoch"].as_str().unwrap().to_string();
    // A client that last saw offset 2 on node A recovers on node B.
    let mut c = b.client().await;
    let p = resubscribe(&mut c, "h:x", 2, &epoch).await;
    assert_eq!((p["recovered"].as_bool(), p["replayed"].as_u64()), (Some(true), Some(3)));
    a.publish("h:x", json!({"n": 6})).await;
    for n in 3..=6 {
        assert_eq!(c.recv_event().await.unwrap()["n"], n);
    }
    // Acks made on A are honoured on B.
    let sub = json!({"type": "subscribe", "channels": ["h:inbox"], "ack": true});
    let mut bob = hubbub_client::Client::connect(&a.ws("/ws?client_name=bob")).await.unwrap();
    bob.send_json(&sub).await.unwrap();
    bob.recv_event().await.unwrap();
    for n in 1..=3 {
        a.publish("h:inbox", json!({"n": n})).await;
    }
    for _ in 0..3 {
        bob.recv_event().await.unwrap();
    }
    ack(&mut bob, "h:inbox", 1).await;
    bob.close().await.unwrap();
    let mut bob = hubbub_client::Client::connect(&b.ws("/ws?client_name=bob")).await.unwrap();
    bob.send_json(&sub).await.unwrap();
    assert_eq!(bob.recv_event().await.unwrap()["positions"][0]["replayed"], 2);
    assert_eq!(bob.recv_event().await.unwrap()["n"], 2);
    assert_eq!(bob.recv_event().await.unwrap()["n"], 3);
}

#[tokio::test]
async fn redis_going_away_degrades_then_recovers() {
    let mut redis = redis_or_skip!();
    let fail =
        |s: &mut hubbub_server::settings::Settings| s.redis.on_failure = hubbub_server::settings::OnRedisFailure::Fail;
    let a = start_node(&redis, "t4", fail).await;
    let b = start_node(&redis, "t4", |_| {}).await;
    let mut local_on_b = b.subscriber(&["local"]).await;
    let mut on_b = b.subscriber(&["live"]).await;
    a.publish("live", json!({"n": 1})).await;
    assert_eq!(on_b.recv_event().await.unwrap()["n"], 1);

    redis.kill();
    eventually("health degraded", async || {
        a.api().get("/api/v1/health").await.unwrap().body["data"]["status"] == "degraded"
    })
    .await;
    let r = a.api().post("/api/v1/publish", &json!({"channel": "live", "event": {"n": 2}})).await.unwrap();
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (503, Some("broker_unavailable")), "{}", r.body);
    // b (on_failure = "local", the default) keeps serving its own subscribers, best effort.
    eventually("b sees the outage", async || !b.hub.broker_status().healthy).await;
    let r = b.api().post("/api/v1/publish", &json!({"channel": "local", "event": {"n": 1}})).await.unwrap();
    assert_eq!((r.status, r.body["data"]["delivered"].as_u64()), (200, Some(1)), "{}", r.body);
    assert!(r.body["data"]["offset"].is_null(), "not a shared publication: {}", r.body);
    let e = local_on_b.recv_event().await.unwrap();
    assert_eq!(e["n"], 1);
    assert!(e.get("offset").is_none());

    redis.restart();
    eventually("healthy again", async || a.api().get("/api/v1/health").await.unwrap().body["data"]["status"] == "ok")
        .await;
    eventually("b re-subscribed", async || b.hub.broker_status().healthy).await;
    // b re-subscribed its channel by itself: a publish on a reaches the existing client on b.
    let mut delivered = false;
    for n in 3..50 {
        let r = a.api().post("/api/v1/publish", &json!({"channel": "live", "event": {"n": n}})).await.unwrap();
        if r.status == 200 {
            let e = on_b.recv_timeout(Duration::from_secs(2)).await.unwrap();
            assert_eq!(e["n"], n);
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(delivered);
    let stats = b.api().get("/api/v1/stats").await.unwrap().body;
    assert!(stats["data"]["broker_disconnects"].as_u64().unwrap() >= 1);
    assert_eq!(stats["data"]["broker_local_fallbacks"], 1);
}

#[tokio::test]
async fn clients_of_a_dead_node_reconnect_elsewhere_and_recover() {
    let redis = redis_or_skip!();
    let rule = keep_history(100);
    let a = start_node(&redis, "t5", rule).await;
    let b = start_node(&redis, "t5", rule).await;
    let mut c = a.subscriber(&["h:feed"]).await;
    b.publish("h:feed", json!({"n": 1})).await;
    let e = c.recv_event().await.unwrap();
    let last = e["offset"].as_u64().unwrap();
    let epoch = b.api().get("/api/v1/channels/h:feed/history").await.unwrap().body["data"]["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    a.shutdown().await;
    assert_eq!(c.closed().await.0, Some(1001));
    for n in 2..=4 {
        b.publish("h:feed", json!({"n": n})).await;
    }
    let mut c = b.client().await;
    assert_eq!(resubscribe(&mut c, "h:feed", last, &epoch).await["recovered"], true);
    for n in 2..=4 {
        assert_eq!(c.recv_event().await.unwrap()["n"], n);
    }
}

#[tokio::test]
async fn nodes_talk_to_redis_over_tls() {
    let Some(redis) = RedisServer::start_tls() else { return };
    let ca = redis.tls.as_ref().unwrap().join("ca.crt");
    let tls = move |s: &mut hubbub_server::settings::Settings| s.redis.tls_ca_file = Some(ca.clone());
    let a = start_node(&redis, "t6", tls.clone()).await;
    let b = start_node(&redis, "t6", tls).await;
    let mut on_b = b.subscriber(&["secure"]).await;
    let r = a.publish("secure", json!({"type": "tls"})).await;
    assert_eq!(r["offset"], 1);
    assert_eq!(on_b.recv_event().await.unwrap()["type"], "tls");
    // Without the CA the certificate is not trusted: the node never connects.
    let url = redis.url();
    let untrusting = crate::support::start_with(move |s| {
        s.broker = hubbub_server::settings::BrokerKind::Redis;
        s.redis.url = url;
        s.redis.prefix = "t6".into();
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!untrusting.hub.broker_status().healthy, "an untrusted certificate must not be accepted");
}

/// Redis Sentinel: the node asks the sentinel for the primary; when the primary dies and the
/// sentinel promotes the replica, the node reconnects to the new primary and carries on.
#[tokio::test]
async fn a_sentinel_failover_is_followed() {
    let Some(probe) = RedisServer::start() else { return };
    drop(probe);
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (p_primary, p_replica, p_sentinel) = (free(), free(), free());
    let spawn = |args: Vec<String>| {
        std::process::Command::new("redis-server").args(args).stdout(std::process::Stdio::null()).spawn().unwrap()
    };
    let base = |port: u16| {
        vec![format!("--port"), port.to_string(), "--bind".into(), "127.0.0.1".into(), "--save".into(), "".into()]
    };
    // Killed on drop, also when an assertion fails.
    struct Procs(Vec<std::process::Child>);
    impl Drop for Procs {
        fn drop(&mut self) {
            for p in &mut self.0 {
                let _ = p.kill();
                let _ = p.wait();
            }
        }
    }
    // Without a delay the replica syncs at once (Redis 7 waits 5 s for more replicas by default).
    let mut primary_args = base(p_primary);
    primary_args.extend(["--repl-diskless-sync-delay".into(), "0".into()]);
    let primary = Procs(vec![spawn(primary_args)]);
    let mut args = base(p_replica);
    args.extend(["--replicaof".into(), "127.0.0.1".into(), p_primary.to_string()]);
    let mut others = Procs(vec![spawn(args)]);
    let dir = crate::support::temp_dir("sentinel");
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {p_sentinel}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {p_primary} 1\n\
             sentinel down-after-milliseconds mymaster 300\nsentinel failover-timeout mymaster 2000\n"
        ),
    )
    .unwrap();
    others.0.push(
        std::process::Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let cli = |port: u16, args: &[&str]| {
        let o = std::process::Command::new("redis-cli").arg("-p").arg(port.to_string()).args(args).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    crate::support::wait_until(|| cli(p_replica, &["INFO", "replication"]).contains("master_link_status:up"));
    crate::support::wait_until(|| {
        cli(p_sentinel, &["SENTINEL", "get-master-addr-by-name", "mymaster"]).contains(&p_primary.to_string())
    });
    // A failover needs the sentinel to know the replica, which it learns from the primary's INFO
    // (polled every 10 s): wait for that before killing the primary.
    let mut known = false;
    for _ in 0..300 {
        if cli(p_sentinel, &["SENTINEL", "replicas", "mymaster"]).contains(&p_replica.to_string()) {
            known = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(known, "the sentinel never discovered the replica");

    let sentinels = vec![format!("redis://127.0.0.1:{p_sentinel}")];
    let node = crate::support::start_with(move |s| {
        s.broker = hubbub_server::settings::BrokerKind::Redis;
        s.redis.sentinels = sentinels;
        s.redis.prefix = "t7".into();
    })
    .await;
    let h = node.hub.clone();
    eventually("connected through the sentinel", async || h.broker_status().healthy).await;
    let mut c = node.subscriber(&["ha"]).await;
    node.publish("ha", json!({"n": 1})).await;
    assert_eq!(c.recv_event().await.unwrap()["n"], 1);

    drop(primary);
    // The sentinel promotes the replica; the node follows and re-subscribes by itself.
    let (mut delivered, mut last) = (false, String::new());
    for _ in 0..100 {
        let r = node.api().post("/api/v1/publish", &json!({"channel": "ha", "event": {"n": 2}})).await.unwrap();
        if r.status == 200
            && !r.body["data"]["offset"].is_null()
            && let Ok(e) = c.recv_timeout(Duration::from_secs(2)).await
        {
            assert_eq!(e["n"], 2);
            delivered = true;
            break;
        }
        last = r.body.to_string();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let health = node.api().get("/api/v1/health").await.unwrap().body;
    let master = cli(p_sentinel, &["SENTINEL", "get-master-addr-by-name", "mymaster"]);
    assert!(delivered, "no delivery after the failover; last publish {last}; health {health}; sentinel says {master}");
    assert!(cli(p_sentinel, &["SENTINEL", "get-master-addr-by-name", "mymaster"]).contains(&p_replica.to_string()));
    drop(others);
    let _ = std::fs::remove_dir_all(dir);
}

/// A node whose pub/sub link drops (Redis up, the link cut) misses nothing on history channels:
/// after reconnecting it delivers what was published meanwhile from history, then live, without
/// duplicates.
#[tokio::test]
async fn a_dropped_pubsub_link_is_filled_from_history() {
    let redis = redis_or_skip!();
    let rule = keep_history(10_000);
    let a = start_node(&redis, "t8", rule).await;
    let b = start_node(&redis, "t8", rule).await;
    let mut c = b.subscriber(&["h:gap"]).await;
    for n in 1..=200u64 {
        a.publish("h:gap", json!({"n": n})).await;
        if n % 25 == 0 {
            // Cut every pub/sub link (b's included); a keeps publishing through its command link.
            redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        }
    }
    for n in 1..=200u64 {
        let e = c.recv_timeout(Duration::from_secs(10)).await.unwrap();
        assert_eq!((e["n"].as_u64(), e["offset"].as_u64()), (Some(n), Some(n)), "gap or duplicate");
    }
    assert!(c.recv_timeout(Duration::from_millis(300)).await.is_err(), "no duplicates");
    assert!(b.hub.broker_status().disconnects >= 1);
}
