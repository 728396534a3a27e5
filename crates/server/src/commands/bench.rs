//! `hubbub bench`: the load generator behind `docs/performance.md`.
//!
//! It runs against a hub started separately (so the two can be pinned to different cores) and
//! speaks raw RFC 6455 with the hub's own frame codec: 10,000 receiving sockets must cost the load
//! side less than they cost the hub, or the figures measure the load generator.
//!
//! - `fanout`: N subscribers on one channel, events published through the HTTP API at R/s; reports
//!   deliveries/s, publish-to-receipt latency (p50/p99/max) and loss.
//! - `storm`: opens N connections (connect + subscribe) as fast as it can; reports connections/s.
//! - `idle`: opens N subscribed connections and reports the hub's resident memory per connection.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use hubbub_client::http::Api;
use hubbub_client::tls::{Conn, Tls};
use hubbub_proto::frame::{self, OpCode, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `hubbub bench …`
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Which measurement.
    #[command(subcommand)]
    pub scenario: Scenario,
    /// For an `https://` hub: a PEM file of certificates to trust besides the system's (its
    /// self-signed certificate, say). Subscribers then connect over `wss://`.
    #[arg(long, global = true)]
    pub ca_file: Option<std::path::PathBuf>,
}

/// The measurements.
#[derive(Debug, clap::Subcommand)]
pub enum Scenario {
    /// Fan-out throughput and latency to N subscribers of one channel.
    Fanout {
        /// The hub's HTTP address (WebSocket at /ws on the same port).
        #[arg(long, default_value = "http://127.0.0.1:8000")]
        url: String,
        /// Subscribers.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Publishes per second.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// How long to publish.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Event size in bytes (the JSON object as published).
        #[arg(long, default_value_t = 200)]
        size: usize,
        /// Concurrent publish requests (raise for high rates).
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// Keep the load generator's thread spinning instead of sleeping in epoll. On a VM, every
        /// write that wakes a sleeping receiver on another vCPU costs the *writer* an
        /// inter-processor interrupt (10–20 µs here); receivers on other machines put no such
        /// cost on the hub. See docs/performance.md.
        #[arg(long)]
        busy_poll: bool,
        /// Connect the subscribers to other nodes (their HTTP addresses, round-robin; repeat the
        /// flag) while publishing to `--url`: cross-node delivery through the Redis broker.
        #[arg(long)]
        subscribe_url: Vec<String>,
        /// Subscribers negotiate permessage-deflate and inflate what arrives compressed (as a
        /// browser does); the report adds the bytes on the wire per delivery.
        #[arg(long)]
        deflate: bool,
    },
    /// Publish throughput and latency (HTTP request to response) with one subscriber listening.
    Publish {
        /// The hub's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8000")]
        url: String,
        /// Channel to publish on (the hub's `[[channels]]` rules decide whether it keeps history).
        #[arg(long, default_value = "bench")]
        channel: String,
        /// Concurrent publishers, each on its own keep-alive connection.
        #[arg(long, default_value_t = 8)]
        publishers: usize,
        /// How long to publish.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Event size in bytes.
        #[arg(long, default_value_t = 200)]
        size: usize,
        /// Ask for durable publishes (disk store only).
        #[arg(long)]
        durable: bool,
    },
    /// In process, no hub: what compressing one publication for permessage-deflate subscribers
    /// costs (the hub does it once per publish, whatever the number of subscribers).
    Deflate {
        /// Event size in bytes (event JSON with the same padding as `fanout`).
        #[arg(long, default_value_t = 2048)]
        size: usize,
        /// zlib level (`websocket.compression_level`).
        #[arg(long, default_value_t = 1)]
        level: u32,
        /// Compressions to time.
        #[arg(long, default_value_t = 20_000)]
        iterations: u32,
    },
    /// Connection storm: connect + subscribe N clients as fast as possible.
    Storm {
        /// The hub's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8000")]
        url: String,
        /// Connections to open.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
    },
    /// Resident memory per idle subscribed connection.
    Idle {
        /// The hub's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8000")]
        url: String,
        /// Connections to open.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// The hub's process id (its RSS is read from /proc).
        #[arg(long)]
        server_pid: u32,
    },
}

/// Runs the chosen scenario and prints its figures.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let tls = match &args.ca_file {
        Some(path) => Tls::with_ca_file(path)?,
        None => Tls::native(),
    };
    let _ = TRUST.set(tls);
    match args.scenario {
        Scenario::Fanout { url, subscribers, rate, duration, size, publishers, busy_poll, subscribe_url, deflate } => {
            let spinner = busy_poll.then(|| {
                tokio::spawn(async {
                    // Always runnable: the runtime polls the IO driver with a zero timeout instead
                    // of parking the thread.
                    loop {
                        tokio::task::yield_now().await;
                    }
                })
            });
            let sub_urls = if subscribe_url.is_empty() { vec![url.clone()] } else { subscribe_url };
            let load = Load { subscribers, rate, duration, size, publishers, deflate };
            let r = fanout(&url, &sub_urls, load).await;
            if let Some(s) = spinner {
                s.abort();
            }
            r
        }
        Scenario::Publish { url, channel, publishers, duration, size, durable } => {
            publish(&url, &channel, publishers, duration, size, durable).await
        }
        Scenario::Deflate { size, level, iterations } => {
            deflate_cost(size, level, iterations);
            Ok(())
        }
        Scenario::Storm { url, connections, concurrency } => storm(&url, connections, concurrency).await,
        Scenario::Idle { url, connections, server_pid } => idle(&url, connections, server_pid).await,
    }
}

/// What `--ca-file` (or the system) says to trust, for `https://` hubs.
static TRUST: std::sync::OnceLock<Tls> = std::sync::OnceLock::new();

/// Where a hub is, and for `https://` the TLS it needs.
#[derive(Clone)]
struct Target {
    host: String,
    port: u16,
    tls: Option<Tls>,
}

fn host_port(url: &str) -> anyhow::Result<Target> {
    let uri: http::Uri = url.parse()?;
    let secure = uri.scheme_str() == Some("https");
    let tls = secure.then(|| TRUST.get().cloned().unwrap_or_else(Tls::native));
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    Ok(Target { host: uri.host().unwrap_or("127.0.0.1").to_string(), port, tls })
}

/// The HTTP API of the hub at `url`, with the API key from `HUBBUB_API_KEY`.
fn api_for(url: &str) -> anyhow::Result<Api> {
    let api = Api::new(url, std::env::var("HUBBUB_API_KEY").ok())?;
    Ok(match TRUST.get() {
        Some(t) => api.with_tls(t.clone()),
        None => api,
    })
}

/// Spreads connections over 127.0.0.1–127.0.0.32 so 10,000+ of them fit the ephemeral port range.
fn source_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % 32) as u8))
}

/// Opens a WebSocket to `/ws` (offering permessage-deflate with `deflate`), reads the welcome
/// frame and subscribes to `channel`; returns the stream and any bytes already read past the
/// `subscribed` reply.
async fn open(target: &Target, i: usize, channel: &str, deflate: bool) -> anyhow::Result<(Conn, BytesMut)> {
    let Target { host, port, tls } = target;
    let (host, port) = (host.as_str(), *port);
    let mut s = hubbub_client::tls::open(host, port, Some(source_ip(i)), tls.as_ref()).await?;
    let offer = if deflate { "Sec-WebSocket-Extensions: permessage-deflate\r\n" } else { "" };
    let req = format!(
        "GET /ws?client_name=bench{i} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(1024);
    let header_end = loop {
        if s.read_buf(&mut buf).await? == 0 {
            anyhow::bail!("hub closed during the handshake");
        }
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    anyhow::ensure!(
        buf.starts_with(b"HTTP/1.1 101"),
        "handshake refused: {}",
        String::from_utf8_lossy(&buf[..header_end])
    );
    let head = buf.split_to(header_end);
    anyhow::ensure!(
        !deflate || head.windows(18).any(|w| w == b"permessage-deflate"),
        "the hub did not accept permessage-deflate (websocket.compression = false?)"
    );
    let mut out = BytesMut::new();
    let sub = format!("{{\"type\":\"subscribe\",\"channels\":[\"{channel}\"]}}");
    frame::encode_into(&mut out, OpCode::Text, sub.as_bytes(), Some((i as u32).to_be_bytes()));
    s.write_all(&out).await?;
    // Read until the subscribed reply (the welcome comes first).
    loop {
        while let Some(f) = frame::decode(&mut buf, 1 << 20, Role::Client)? {
            if f.opcode == OpCode::Text && f.payload.starts_with(b"{\"type\":\"subscribed\"") {
                return Ok((s, buf));
            }
        }
        if s.read_buf(&mut buf).await? == 0 {
            anyhow::bail!("hub closed before confirming the subscription");
        }
    }
}

/// Finds `"t":<digits>` in an event and returns the number.
fn field_t(payload: &[u8]) -> Option<u64> {
    let at = payload.windows(4).position(|w| w == b"\"t\":")? + 4;
    let digits = payload[at..].iter().take_while(|b| b.is_ascii_digit());
    Some(digits.fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

struct Receipts {
    delivered: AtomicU64,
    /// Bytes read from the sockets after the subscription (frames, compressed or not).
    wire_bytes: AtomicU64,
    closed: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

async fn receive(mut s: Conn, mut buf: BytesMut, r: Arc<Receipts>) {
    let mut lat = Vec::with_capacity(64);
    loop {
        buf.reserve(16 << 10);
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => r.wire_bytes.fetch_add(n as u64, Relaxed),
        };
        let now = hubbub_proto::time::unix_nanos();
        let mut n = 0;
        loop {
            match frame::decode_with(&mut buf, 1 << 24, Role::Client, true) {
                Ok(Some(f)) if f.opcode == OpCode::Text => {
                    let text = if f.compressed {
                        match hubbub_proto::deflate::inflate(&f.payload, 1 << 24) {
                            Ok(t) => bytes::Bytes::from(t),
                            Err(_) => return,
                        }
                    } else {
                        f.payload.freeze()
                    };
                    if let Some(t) = field_t(&text) {
                        n += 1;
                        lat.push(now.saturating_sub(t) / 1000);
                    }
                }
                Ok(Some(f)) if f.opcode == OpCode::Close => {
                    r.closed.fetch_add(1, Relaxed);
                    return;
                }
                Ok(Some(f)) if f.opcode == OpCode::Ping => {
                    // Answer pings, or the hub's read timeout closes an otherwise silent client.
                    let mut pong = BytesMut::new();
                    frame::encode_into(&mut pong, OpCode::Pong, &f.payload, Some([7, 7, 7, 7]));
                    if s.write_all(&pong).await.is_err() {
                        break;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if n > 0 {
            r.delivered.fetch_add(n, Relaxed);
            let mut h = r.latency.lock().unwrap_or_else(|e| e.into_inner());
            for us in lat.drain(..) {
                let _ = h.record(us.max(1));
            }
        }
    }
    r.closed.fetch_add(1, Relaxed);
}

/// What `bench fanout` sends.
struct Load {
    subscribers: usize,
    rate: f64,
    duration: Duration,
    size: usize,
    publishers: usize,
    deflate: bool,
}

/// `len` bytes of JSON-string-safe text that compresses about as well as real event JSON (words
/// and numbers, not one repeated letter), the same in every run.
fn padding(len: usize) -> String {
    const WORDS: [&str; 8] = ["player", "score", "team", "home", "away", "status", "minute", "goal"];
    let mut x: u32 = 0x9E37_79B9;
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.push_str(WORDS[(x % 8) as usize]);
        out.push_str(&(x % 1000).to_string());
        out.push(' ');
    }
    out.truncate(len);
    out
}

/// Times `deflate::server_frame` on the event `fanout` would publish, and checks the result
/// inflates back.
fn deflate_cost(size: usize, level: u32, iterations: u32) {
    let event = format!(
        "{{\"type\":\"bench\",\"seq\":1,\"t\":{},\"pad\":\"{}\"}}",
        hubbub_proto::time::unix_nanos(),
        padding(size.saturating_sub(60))
    );
    let plain = frame::server_text(event.as_bytes());
    let mut out = None;
    let start = Instant::now();
    for _ in 0..iterations {
        out = std::hint::black_box(hubbub_proto::deflate::server_frame(&plain, level, 0));
    }
    let per = start.elapsed() / iterations.max(1);
    let Some(z) = out else {
        println!("scenario: deflate  size={size}B level={level}: compression does not make this event smaller");
        return;
    };
    let header = if z[1] & 0x7F == 126 { 4 } else { 2 };
    let back = hubbub_proto::deflate::inflate(&z[header..], 1 << 24).map(|b| b == event.as_bytes());
    println!(
        "scenario: deflate  size={size}B level={level} iterations={iterations}\n\
         frame bytes: {} plain, {} compressed ({:.1}x smaller); inflates back: {}\n\
         compress time per publication: {:.1} us",
        plain.len(),
        z.len(),
        plain.len() as f64 / z.len() as f64,
        back == Ok(true),
        per.as_secs_f64() * 1e6
    );
}

async fn fanout(url: &str, sub_urls: &[String], load: Load) -> anyhow::Result<()> {
    let Load { subscribers, rate, duration, size, publishers, deflate } = load;
    let nodes = sub_urls.iter().map(|u| host_port(u)).collect::<anyhow::Result<Vec<_>>>()?;
    let channel = format!("bench{}", std::process::id());
    let receipts = Arc::new(Receipts {
        delivered: AtomicU64::new(0),
        wire_bytes: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
    });
    eprintln!("connecting {subscribers} subscribers…");
    let mut opened = Vec::with_capacity(subscribers);
    for chunk in (0..subscribers).collect::<Vec<_>>().chunks(256) {
        let batch = chunk.iter().map(|&i| {
            let target = nodes[i % nodes.len()].clone();
            let channel = channel.clone();
            tokio::spawn(async move { open(&target, i, &channel, deflate).await })
        });
        for h in batch.collect::<Vec<_>>() {
            opened.push(h.await??);
        }
    }
    for (s, buf) in opened {
        tokio::spawn(receive(s, buf, receipts.clone()));
    }
    let api = api_for(url)?;
    let pad = padding(size.saturating_sub(60));
    let total = (rate * duration.as_secs_f64()).round() as u64;
    eprintln!("publishing {total} events of {size} bytes at {rate}/s to {subscribers} subscribers…");
    let published = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..publishers.max(1) {
        let (api, pad, channel, next, published, failed) =
            (api.clone(), pad.clone(), channel.clone(), next.clone(), published.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let seq = next.fetch_add(1, Relaxed);
                if seq >= total {
                    break;
                }
                tokio::time::sleep_until((start + Duration::from_secs_f64(seq as f64 / rate)).into()).await;
                let body = format!(
                    "{{\"channel\":\"{channel}\",\"event\":{{\"type\":\"bench\",\"seq\":{seq},\"t\":{},\"pad\":\"{pad}\"}}}}",
                    hubbub_proto::time::unix_nanos()
                );
                match api.post_raw("/api/v1/publish", body).await {
                    Ok(r) if r.status == 200 => published.fetch_add(1, Relaxed),
                    _ => failed.fetch_add(1, Relaxed),
                };
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let publish_time = start.elapsed();
    let expected = published.load(Relaxed) * subscribers as u64;
    // Let queued frames arrive: stop when nothing moved for a second (or after 30 s).
    let mut last = 0;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let d = receipts.delivered.load(Relaxed);
        if d >= expected || (d == last && start.elapsed() > publish_time + Duration::from_secs(1)) {
            break;
        }
        last = d;
    }
    let elapsed = start.elapsed();
    let delivered = receipts.delivered.load(Relaxed);
    let h = receipts.latency.lock().unwrap_or_else(|e| e.into_inner());
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "scenario: fanout  subscribers={subscribers} rate={rate}/s size={size}B duration={} deflate={deflate}",
        humantime::format_duration(duration)
    );
    println!(
        "published: {} ok, {} failed, in {:.2}s ({:.0}/s achieved)",
        published.load(Relaxed),
        failed.load(Relaxed),
        publish_time.as_secs_f64(),
        published.load(Relaxed) as f64 / publish_time.as_secs_f64()
    );
    println!(
        "delivered: {delivered} of {expected} expected, loss {} ({:.4}%), closed connections {}",
        expected.saturating_sub(delivered),
        if expected == 0 { 0.0 } else { 100.0 * expected.saturating_sub(delivered) as f64 / expected as f64 },
        receipts.closed.load(Relaxed)
    );
    println!(
        "deliveries/s: {:.0} (over the publishing window plus drain, {:.2}s)",
        delivered as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "wire bytes per delivery: {:.0} (frames as read from the sockets, heartbeats and pings included)",
        receipts.wire_bytes.load(Relaxed) as f64 / delivered.max(1) as f64
    );
    println!(
        "latency publish->receipt ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max())
    );
    Ok(())
}

async fn publish(
    url: &str,
    channel: &str,
    publishers: usize,
    duration: Duration,
    size: usize,
    durable: bool,
) -> anyhow::Result<()> {
    let target = host_port(url)?;
    // One subscriber, so every publish is also fanned out.
    let (s, buf) = open(&target, 0, channel, false).await?;
    let receipts = Arc::new(Receipts {
        delivered: AtomicU64::new(0),
        wire_bytes: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
    });
    tokio::spawn(receive(s, buf, receipts.clone()));
    let api = api_for(url)?;
    let pad = "x".repeat(size.saturating_sub(60));
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..publishers.max(1) {
        let mut conn = api.keep_alive().await?;
        let (pad, channel, hist, ok, failed) =
            (pad.clone(), channel.to_string(), hist.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            while start.elapsed() < duration {
                let body = format!(
                    "{{\"channel\":\"{channel}\",\"durable\":{durable},\"event\":{{\"type\":\"bench\",\"t\":{},\"pad\":\"{pad}\"}}}}",
                    hubbub_proto::time::unix_nanos()
                );
                let t = Instant::now();
                match conn.post_raw("/api/v1/publish", body).await {
                    Ok(200) => {
                        ok.fetch_add(1, Relaxed);
                        let _ = hist.lock().unwrap_or_else(|e| e.into_inner()).record(t.elapsed().as_micros().max(1) as u64);
                    }
                    _ => {
                        failed.fetch_add(1, Relaxed);
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let elapsed = start.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let h = hist.lock().unwrap_or_else(|e| e.into_inner());
    let ms = |us: u64| us as f64 / 1000.0;
    println!("scenario: publish  channel={channel} publishers={publishers} durable={durable} size={size}B");
    println!(
        "publishes: {} ok, {} failed in {:.2}s: {:.0} publishes/s; subscriber received {}",
        ok.load(Relaxed),
        failed.load(Relaxed),
        elapsed.as_secs_f64(),
        ok.load(Relaxed) as f64 / elapsed.as_secs_f64(),
        receipts.delivered.load(Relaxed)
    );
    println!(
        "publish latency (request to response) ms: p50 {:.2}  p99 {:.2}  max {:.2}",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    );
    Ok(())
}

async fn storm(url: &str, connections: usize, concurrency: usize) -> anyhow::Result<()> {
    let target = host_port(url)?;
    let start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut handles = Vec::with_capacity(connections);
    for i in 0..connections {
        let permit = sem.clone().acquire_owned().await?;
        let target = target.clone();
        handles.push(tokio::spawn(async move {
            let r = open(&target, i, &format!("storm{}", i % 100), false).await;
            drop(permit);
            r
        }));
    }
    let mut kept = Vec::with_capacity(connections);
    let mut failed = 0;
    for h in handles {
        match h.await? {
            Ok(c) => kept.push(c),
            Err(_) => failed += 1,
        }
    }
    let t = start.elapsed();
    println!("scenario: storm  connections={connections} concurrency={concurrency}");
    println!(
        "opened {} (connect + upgrade + subscribe confirmed), failed {failed}, in {:.2}s: {:.0} connections/s",
        kept.len(),
        t.as_secs_f64(),
        kept.len() as f64 / t.as_secs_f64()
    );
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line =
        status.lines().find(|l| l.starts_with("VmRSS:")).ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {pid}"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}

async fn idle(url: &str, connections: usize, server_pid: u32) -> anyhow::Result<()> {
    let target = host_port(url)?;
    let before = rss_kib(server_pid)?;
    let mut kept = Vec::with_capacity(connections);
    for chunk in (0..connections).collect::<Vec<_>>().chunks(256) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let target = target.clone();
                tokio::spawn(async move { open(&target, i, &format!("idle{}", i % 100), false).await })
            })
            .collect();
        for h in batch {
            kept.push(h.await??);
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(server_pid)?;
    println!("scenario: idle  connections={connections} (each subscribed to one of 100 channels)");
    println!(
        "hub RSS: {before} KiB before, {after} KiB after: {:.2} KiB per idle subscribed connection",
        after.saturating_sub(before) as f64 / connections as f64
    );
    drop(kept);
    Ok(())
}
