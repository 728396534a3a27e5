//! Test support: start a hub in-process, open clients (real and deliberately broken).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hubbub_client::Client;
use hubbub_client::http::Api;
use hubbub_proto::frame::{self, OpCode, Role};
use hubbub_server::settings::Settings;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A running hub.
pub struct TestHub {
    pub addr: SocketAddr,
    pub hub: hubbub::Hub,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestHub {
    pub fn ws(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn api(&self) -> Api {
        Api::new(&format!("http://{}", self.addr), None).unwrap()
    }

    pub fn api_with_key(&self, key: &str) -> Api {
        Api::new(&format!("http://{}", self.addr), Some(key.to_string())).unwrap()
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.ws("/ws")).await.unwrap()
    }

    /// A client subscribed to `channels`.
    pub async fn subscriber(&self, channels: &[&str]) -> Client {
        let mut c = self.client().await;
        let r = c.subscribe(channels).await.unwrap();
        assert_eq!(r["type"], "subscribed", "{r}");
        c
    }

    pub async fn publish(&self, channel: &str, event: Value) -> Value {
        self.api().publish(channel, &event).await.unwrap()
    }

    /// Stops the hub as SIGTERM would and waits for `serve` to return.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Test settings: everything default except what `f` changes.
pub async fn start_with(f: impl FnOnce(&mut Settings)) -> TestHub {
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    f(&mut settings);
    settings.validate().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hub = if settings.broker == hubbub_server::settings::BrokerKind::Redis {
        hubbub_server::redis_hub(&settings).unwrap()
    } else {
        match settings.history.store {
            hubbub_server::settings::Store::Memory => hubbub::Hub::new(settings.hub_config()),
            hubbub_server::settings::Store::Disk => {
                let journal = hubbub_store::open(&settings.history.path).unwrap();
                hubbub::Hub::with_journal(settings.hub_config(), journal).unwrap()
            }
        }
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(hubbub_server::serve::serve(listener, hub.clone(), Arc::new(settings), async {
        let _ = stopped.await;
    }));
    TestHub { addr, hub, stop: Some(stop), task: Some(task) }
}

pub async fn start() -> TestHub {
    start_with(|_| {}).await
}

/// Waits up to 5 s for `f` to hold.
pub async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Blocks up to 5 s for `f` to hold (for tests outside a runtime).
pub fn wait_until(mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out");
}

/// A hand-driven WebSocket connection over raw TCP, for tests that must misbehave (stay silent,
/// send broken frames, never read).
pub struct RawWs {
    pub stream: TcpStream,
    pub buf: BytesMut,
}

impl RawWs {
    pub async fn connect(addr: SocketAddr, path: &str) -> RawWs {
        RawWs::connect_with(addr, path, &[]).await.0
    }

    /// Connects with `extra` request headers; returns the connection and the 101 response head.
    pub async fn connect_with(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> (RawWs, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(upgrade_request(addr, path, extra).as_bytes()).await.unwrap();
        let mut buf = BytesMut::new();
        let end = loop {
            assert!(stream.read_buf(&mut buf).await.unwrap() > 0, "closed during handshake");
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
        let _ = buf.split_to(end);
        (RawWs { stream, buf }, head)
    }

    /// Sends one masked frame with the given first byte (FIN/opcode) and payload.
    pub async fn send_frame(&mut self, opcode: OpCode, payload: &[u8]) {
        let mut out = BytesMut::new();
        frame::encode_into(&mut out, opcode, payload, Some([9, 8, 7, 6]));
        self.stream.write_all(&out).await.unwrap();
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next frame from the hub, or `None` at EOF.
    pub async fn next(&mut self) -> Option<frame::Frame> {
        loop {
            // RSV1 is accepted here; tests of compression look at `compressed` themselves.
            if let Some(f) = frame::decode_with(&mut self.buf, u64::MAX >> 1, Role::Client, true).unwrap() {
                return Some(f);
            }
            match tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(_)) => {}
                Err(_) => panic!("no frame within 10 s"),
            }
        }
    }

    /// Reads until a close frame; returns its code and reason (`None` if the TCP connection ended
    /// without one). Text frames before it are returned too.
    pub async fn until_close(&mut self) -> (Vec<Value>, Option<(u16, String)>) {
        let mut texts = Vec::new();
        while let Some(f) = self.next().await {
            match f.opcode {
                OpCode::Text => texts.push(serde_json::from_slice(&f.payload).unwrap()),
                OpCode::Close => {
                    let code = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                    let reason = String::from_utf8_lossy(&f.payload[2..]).to_string();
                    return (texts, Some((code, reason)));
                }
                _ => {}
            }
        }
        (texts, None)
    }
}

/// A `redis-server` of the test's own, on a free port, so a test can kill and restart it.
/// `redis-server` must be installed (Debian: `apt-get install redis-server`). Without it the test
/// fails under CI (`CI=true`) and, elsewhere, says loudly that it did not run.
pub struct RedisServer {
    child: Option<std::process::Child>,
    pub port: u16,
    /// With TLS: the directory holding `ca.crt`, `server.crt`, `server.key`.
    pub tls: Option<std::path::PathBuf>,
}

impl RedisServer {
    pub fn start() -> Option<RedisServer> {
        if std::process::Command::new("redis-server").arg("--version").output().is_err() {
            let msg = "redis-server is not installed (apt-get install redis-server); Redis tests cannot run";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("\n!!! SKIPPED: {msg}\n");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = RedisServer { child: None, port, tls: None };
        r.restart();
        Some(r)
    }

    /// A TLS-only `redis-server` with a CA and certificate made now with the `openssl` CLI.
    pub fn start_tls() -> Option<RedisServer> {
        let mut r = RedisServer::start()?;
        r.kill();
        let dir = temp_dir("redis-tls");
        let openssl = |args: &[&str]| {
            let ok =
                std::process::Command::new("openssl").args(args).current_dir(&dir).output().map(|o| o.status.success());
            assert!(ok.unwrap_or(false), "openssl {args:?} failed (is openssl installed?)");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=hubbub-test-ca",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        r.tls = Some(dir);
        r.restart();
        Some(r)
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        let mut cmd = std::process::Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        match &self.tls {
            None => cmd.args(["--port", &self.port.to_string()]),
            Some(dir) => {
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string(), "--tls-auth-clients", "no"]).args([
                    "--tls-cert-file",
                    &dir.join("server.crt").display().to_string(),
                    "--tls-key-file",
                    &dir.join("server.key").display().to_string(),
                    "--tls-ca-cert-file",
                    &dir.join("ca.crt").display().to_string(),
                ])
            }
        };
        let child = cmd.stdout(std::process::Stdio::null()).spawn().unwrap();
        self.child = Some(child);
        wait_until(|| self.cli(&["PING"]) == "PONG");
    }

    /// Runs `redis-cli` against this server; returns its trimmed output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = std::process::Command::new("redis-cli");
        cmd.arg("-p").arg(self.port.to_string());
        if let Some(dir) = &self.tls {
            cmd.arg("--tls").arg("--cacert").arg(dir.join("ca.crt"));
        }
        let out = cmd.args(args).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A hub node on the Redis broker at `redis`, keys under `prefix`.
pub async fn start_node(redis: &RedisServer, prefix: &str, f: impl FnOnce(&mut Settings)) -> TestHub {
    let (url, prefix) = (redis.url(), prefix.to_string());
    let hub = start_with(move |s| {
        s.broker = hubbub_server::settings::BrokerKind::Redis;
        s.redis.url = url;
        s.redis.prefix = prefix;
        f(s);
    })
    .await;
    let h = hub.hub.clone();
    eventually("node connected to redis", async || h.broker_status().healthy).await;
    hub
}

/// A history rule for `pattern`.
pub fn history(pattern: &str, size: usize, ttl: Duration) -> hubbub_server::settings::ChannelSettings {
    hubbub_server::settings::ChannelSettings::new(pattern).with_history(size, ttl)
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let d = std::env::temp_dir().join(format!("hubbub-it-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Subscribes with `since` and returns the `subscribed` reply's position for the channel.
pub async fn resubscribe(c: &mut Client, channel: &str, offset: u64, epoch: &str) -> Value {
    c.send_json(
        &json!({"type": "subscribe", "channels": [channel], "since": {channel: {"offset": offset, "epoch": epoch}}}),
    )
    .await
    .unwrap();
    let r = c.wait_for(|v| v["type"] == "subscribed" || v["type"] == "error").await.unwrap();
    assert_eq!(r["type"], "subscribed", "{r}");
    r["positions"][0].clone()
}

/// Acknowledges `offset` and waits until the hub has processed it (acks are answered only on
/// error, so a ping behind it tells when it is done).
pub async fn ack(c: &mut Client, channel: &str, offset: u64) {
    c.send_json(&json!({"type": "ack", "channel": channel, "offset": offset})).await.unwrap();
    c.send_json(&json!({"type": "ping"})).await.unwrap();
    assert_eq!(c.recv_event().await.unwrap()["type"], "pong", "ack accepted silently");
}

pub fn sub_msg(channels: &[&str]) -> Value {
    json!({"type": "subscribe", "channels": channels})
}

/// A WebSocket upgrade request for `path` (the RFC 6455 sample key) with `extra` headers.
fn upgrade_request(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// Sends a WebSocket upgrade request with `extra` headers and returns the status code and the
/// response head and body, for tests of refused handshakes.
pub async fn upgrade_response(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(upgrade_request(addr, path, extra).as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            // A 101 has no body; an error response ends with its JSON body.
            if n == 0 || text.starts_with("HTTP/1.1 101") && text.contains("\r\n\r\n") || text.trim_end().ends_with('}')
            {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("no handshake response within 10 s");
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}
