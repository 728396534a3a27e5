//! The `hubbub` binary itself: settings files, environment layering, `pub`/`sub`, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hubbub"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Server(Child, u16);

impl Server {
    fn start(envs: &[(&str, &str)]) -> Server {
        Server::start_with_config(None, envs)
    }

    fn start_with_config(config: Option<&std::path::Path>, envs: &[(&str, &str)]) -> Server {
        Server::start_on(free_port(), config, envs)
    }

    fn start_on(port: u16, config: Option<&std::path::Path>, envs: &[(&str, &str)]) -> Server {
        let mut cmd = bin();
        cmd.args(["serve", "--bind", &format!("127.0.0.1:{port}")]).stdout(Stdio::null()).stderr(Stdio::null());
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        // Wrapped at once so Drop reaps it on every path, including the panic below.
        let server = Server(cmd.spawn().unwrap(), port);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("hubbub serve did not start");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A settings file with a disk history store in `data` and history for `d:*`.
fn disk_config(name: &str, data: &std::path::Path, history_size: usize) -> std::path::PathBuf {
    let toml = format!(
        "[history]\nstore = \"disk\"\npath = {:?}\n\n[[channels]]\npattern = \"d:*\"\nhistory_size = {history_size}\nhistory_ttl = \"1h\"\n",
        data.display().to_string()
    );
    write_temp(&format!("{name}.toml"), &toml)
}

fn write_temp(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("hubbub-it-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn config_check_prints_effective_settings_and_names_bad_keys() {
    let good = write_temp("good.toml", "[websocket]\nmax_message_bytes = 512\n[server]\nws_aliases = [\"/ws/live\"]\n");
    let out =
        bin().args(["config", "check"]).arg(&good).env("HUBBUB_WEBSOCKET__HEARTBEAT_INTERVAL", "5s").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("max_message_bytes = 512"), "{text}");
    assert!(text.contains("heartbeat_interval = \"5s\""), "env layer applies: {text}");

    let bad = write_temp("bad.toml", "[websocket]\nmax_mesage_bytes = 512\n");
    let out = bin().args(["config", "check"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("max_mesage_bytes"), "{err}");

    let out = bin().args(["config", "check"]).arg(&good).env("HUBBUB_LIMITS__OVERFLOW", "sometimes").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("limits.overflow"));
}

#[test]
fn env_and_flags_layer_over_defaults() {
    let server =
        // HUBBUB_API_KEY belongs to `pub`/`demo`; it must not trip the server's settings loader.
        Server::start(&[
            ("HUBBUB_WEBSOCKET__HEARTBEAT_INTERVAL", "7s"),
            ("HUBBUB_SERVER__BIND", "127.0.0.1:1"),
            ("HUBBUB_API_KEY", "for-the-cli-only"),
        ]);
    // --bind beat HUBBUB_SERVER__BIND (we reached the flag's port); the env heartbeat applied.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stats = rt.block_on(async {
        hubbub_client::http::Api::new(&format!("http://127.0.0.1:{}", server.1), None)
            .unwrap()
            .get("/api/v1/stats")
            .await
            .unwrap()
    });
    assert_eq!(stats.body["data"]["heartbeat_interval"], 7);
}

#[test]
fn pub_and_sub_talk_through_a_real_server() {
    let server = Server::start(&[]);
    let url = format!("ws://127.0.0.1:{}/ws", server.1);
    let mut sub = bin().args(["sub", &url, "cli-news"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    let api = format!("http://127.0.0.1:{}", server.1);
    // Publish until the subscriber is in (it connects asynchronously).
    let mut delivered = 0;
    for _ in 0..100 {
        let out =
            bin().args(["pub", "--url", &api, "cli-news", r#"{"type":"headline","text":"hi"}"#]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
        delivered = reply["data"]["delivered"].as_u64().unwrap();
        if delivered == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(delivered, 1);
    let line = lines.next().unwrap().unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["text"].as_str(), v["channel"].as_str()),
        (Some("headline"), Some("hi"), Some("cli-news"))
    );
    let _ = sub.kill();
    let _ = sub.wait();

    let out = bin().args(["pub", "--url", &api, "cli-news", "not json"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
}

#[test]
fn sigterm_closes_clients_with_1001_and_exits_zero() {
    let mut server = Server::start(&[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let url = format!("ws://127.0.0.1:{}/ws", server.1);
    let mut client = rt.block_on(hubbub_client::Client::connect(&url)).unwrap();
    let kill = Command::new("kill").args(["-TERM", &server.0.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let (code, _) = rt.block_on(client.closed());
    assert_eq!(code, Some(1001));
    let status = server.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn demo_publishes_sample_events() {
    let server = Server::start(&[]);
    let api = format!("http://127.0.0.1:{}", server.1);
    let out = bin().args(["demo", "--url", &api, "--rate", "50", "--count", "5"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(text.contains("sensor_event") && text.contains("room:1"), "{text}");
}

/// Durable publishes acknowledged before a `kill -9` are all there after a restart, in order, in
/// the same epoch.
#[test]
fn durable_publishes_survive_kill_9() {
    let data = crate::support::temp_dir("kill9");
    let config = disk_config("kill9", &data, 100000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut server = Server::start_with_config(Some(&config), &[]);
    let api = hubbub_client::http::Api::new(&format!("http://127.0.0.1:{}", server.1), None).unwrap();
    // Four publishers stream durable publishes; the server is killed in the middle.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u64, String, u64)>::new()));
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let (api, acked) = (api.clone(), acked.clone());
            rt.spawn(async move {
                for i in 0.. {
                    let n = w * 1_000_000 + i;
                    let body = serde_json::json!({"channel": "d:1", "durable": true, "event": {"n": n}});
                    match api.post("/api/v1/publish", &body).await {
                        Ok(r) if r.status == 200 => {
                            let d = &r.body["data"];
                            acked.lock().unwrap().push((
                                d["offset"].as_u64().unwrap(),
                                d["epoch"].as_str().unwrap().into(),
                                n,
                            ));
                        }
                        _ => break,
                    }
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 200 {
        std::thread::sleep(Duration::from_millis(10));
    }
    server.0.kill().unwrap(); // SIGKILL
    server.0.wait().unwrap();
    for w in workers {
        rt.block_on(w).unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 200);

    let server = Server::start_with_config(Some(&config), &[]);
    let api = hubbub_client::http::Api::new(&format!("http://127.0.0.1:{}", server.1), None).unwrap();
    let r = rt.block_on(api.get("/api/v1/channels/d:1/history?limit=10000")).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let events = r.body["data"]["events"].as_array().unwrap().clone();
    let stored: std::collections::HashMap<u64, u64> =
        events.iter().map(|e| (e["offset"].as_u64().unwrap(), e["n"].as_u64().unwrap())).collect();
    let epoch = r.body["data"]["epoch"].as_str().unwrap();
    // Every acknowledged event is there, with the same offset and epoch.
    for (offset, ep, n) in &acked {
        assert_eq!(ep, epoch, "epoch changed across kill -9");
        assert_eq!(stored.get(offset), Some(n), "acknowledged offset {offset} lost");
    }
    // In order, no gaps: offsets run 1..=last.
    let offsets: Vec<u64> = events.iter().map(|e| e["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (1..=offsets.len() as u64).collect::<Vec<_>>());
    drop(server);
    let _ = std::fs::remove_dir_all(data);
}

/// `hubbub sub` survives a hub restart and continues from its last position: nothing missed,
/// nothing twice.
#[test]
fn sub_resumes_after_the_hub_restarts() {
    let data = crate::support::temp_dir("subresume");
    let config = disk_config("subresume", &data, 1000);
    let port = free_port();
    let mut server = Server::start_on(port, Some(&config), &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let api = hubbub_client::http::Api::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
    let mut sub = bin()
        .args(["sub", &format!("ws://127.0.0.1:{port}/ws"), "d:s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let out = sub.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let publish = |n: u64| {
        let body = serde_json::json!({"channel": "d:s", "durable": true, "event": {"n": n}});
        rt.block_on(api.post("/api/v1/publish", &body)).unwrap()
    };
    // Wait until the subscriber is in, then publish 1 and 2.
    crate::support::wait_until(|| rt.block_on(api.get("/api/v1/channels")).unwrap().body["data"]["count"] == 1);
    publish(1);
    publish(2);
    let n = |line: String| serde_json::from_str::<Value>(&line).unwrap()["n"].as_u64().unwrap();
    assert_eq!(n(lines.recv_timeout(Duration::from_secs(5)).unwrap()), 1);
    assert_eq!(n(lines.recv_timeout(Duration::from_secs(5)).unwrap()), 2);
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    let _server = Server::start_on(port, Some(&config), &[]);
    publish(3);
    publish(4);
    assert_eq!(n(lines.recv_timeout(Duration::from_secs(10)).unwrap()), 3);
    assert_eq!(n(lines.recv_timeout(Duration::from_secs(5)).unwrap()), 4);
    assert!(lines.recv_timeout(Duration::from_millis(800)).is_err(), "no duplicates");
    let _ = sub.kill();
    let _ = sub.wait();
    let _ = std::fs::remove_dir_all(data);
}

/// Two `hubbub serve` processes on one Redis: a publish on B reaches a client on A; A is killed
/// with SIGKILL; the client reconnects to B and recovers what it missed.
#[test]
fn a_killed_node_s_client_recovers_on_another_process() {
    let Some(redis) = crate::support::RedisServer::start() else { return };
    let config = write_temp(
        "nodes.toml",
        &format!(
            "broker = \"redis\"\n[redis]\nurl = \"{}\"\nprefix = \"procs\"\n\n[[channels]]\npattern = \"h:*\"\nhistory_size = 100\nhistory_ttl = \"1h\"\n",
            redis.url()
        ),
    );
    let mut a = Server::start_with_config(Some(&config), &[]);
    let b = Server::start_with_config(Some(&config), &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let api_b = hubbub_client::http::Api::new(&format!("http://127.0.0.1:{}", b.1), None).unwrap();
    let healthy = |port: u16| {
        let api = hubbub_client::http::Api::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        rt.block_on(api.get("/api/v1/health")).unwrap().body["data"]["status"] == "ok"
    };
    crate::support::wait_until(|| healthy(a.1) && healthy(b.1));
    rt.block_on(async {
        let mut c = hubbub_client::Client::connect(&format!("ws://127.0.0.1:{}/ws", a.1)).await.unwrap();
        assert_eq!(c.subscribe(&["h:x"]).await.unwrap()["type"], "subscribed");
        let r = api_b.publish("h:x", &serde_json::json!({"n": 1})).await.unwrap();
        let epoch = r["epoch"].as_str().unwrap().to_string();
        let e = c.recv_event().await.unwrap();
        assert_eq!((e["n"].as_u64(), e["offset"].as_u64()), (Some(1), Some(1)));
        a.0.kill().unwrap(); // SIGKILL: no 1001, the TCP connection just ends
        a.0.wait().unwrap();
        let (code, _) = c.closed().await;
        assert_eq!(code, None);
        for n in 2..=3 {
            api_b.publish("h:x", &serde_json::json!({"n": n})).await.unwrap();
        }
        let mut c = hubbub_client::Client::connect(&format!("ws://127.0.0.1:{}/ws", b.1)).await.unwrap();
        c.send_json(&serde_json::json!({"type": "subscribe", "channels": ["h:x"], "since": {"h:x": {"offset": 1, "epoch": epoch}}}))
            .await
            .unwrap();
        let r = c.recv_event().await.unwrap();
        assert_eq!(r["positions"][0]["recovered"], true, "{r}");
        for n in 2..=3 {
            assert_eq!(c.recv_event().await.unwrap()["n"], n);
        }
    });
}
