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
        let port = free_port();
        let mut cmd = bin();
        cmd.args(["serve", "--bind", &format!("127.0.0.1:{port}")]).stdout(Stdio::null()).stderr(Stdio::null());
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
