//! `hubbub sub URL CHANNEL…`: print events as JSON lines, reconnecting with exponential backoff
//! and full jitter (0.5 s doubling to 30 s, reset after a connection that lasted 30 s).

use std::time::{Duration, Instant};

use hubbub_client::{Client, Error};

/// Runs until interrupted.
pub async fn run(url: &str, channels: &[String], all: bool) -> anyhow::Result<()> {
    let refs: Vec<&str> = channels.iter().map(String::as_str).collect();
    let mut delay = Duration::from_millis(500);
    loop {
        let started = Instant::now();
        match session(url, &refs, all).await {
            Ok(()) => return Ok(()),
            Err(Error::Closed(Some(code), reason)) if matches!(code, 1002 | 1007 | 1009) => {
                anyhow::bail!("the hub closed the connection with {code} ({reason}); not reconnecting");
            }
            Err(e) => eprintln!("hubbub sub: {e}"),
        }
        if started.elapsed() > Duration::from_secs(30) {
            delay = Duration::from_millis(500);
        }
        let jittered = delay.mul_f64(fastish_random());
        eprintln!("hubbub sub: reconnecting in {jittered:.1?}");
        tokio::time::sleep(jittered).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

async fn session(url: &str, channels: &[&str], all: bool) -> Result<(), Error> {
    let mut client = Client::connect(url).await?;
    if all {
        println!("{}", client.welcome);
    }
    let reply = client.subscribe(channels).await?;
    if reply["type"] == "error" {
        eprintln!("hubbub sub: {}", reply["message"]);
        return Err(Error::Closed(Some(1002), "subscribe refused".into()));
    }
    if all {
        println!("{reply}");
    }
    loop {
        let v = client.recv().await?;
        if all || v.get("channel").is_some() || !matches!(v["type"].as_str(), Some("heartbeat" | "pong")) {
            println!("{v}");
        }
    }
}

/// A number in [0, 1) for jitter; the clock's nanoseconds are plenty for spreading reconnects.
fn fastish_random() -> f64 {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    (n % 1_000_000) as f64 / 1_000_000.0
}
