//! `hubbub sub URL CHANNEL…`: print events as JSON lines, reconnecting with exponential backoff
//! and full jitter (0.5 s doubling to 30 s, reset after a connection that lasted 30 s). After a
//! reconnect it subscribes with `since` set to the last position it printed, so channels with
//! history continue without gap or duplicate; when the hub cannot recover (`recovered: false`) it
//! says so on stderr.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hubbub_client::{Client, Error};
use serde_json::{Value, json};

/// Last seen (offset, epoch) per channel.
type Positions = HashMap<String, (u64, String)>;

/// Runs until interrupted.
pub async fn run(url: &str, channels: &[String], all: bool) -> anyhow::Result<()> {
    let refs: Vec<&str> = channels.iter().map(String::as_str).collect();
    let mut delay = Duration::from_millis(500);
    let mut positions = Positions::new();
    loop {
        let started = Instant::now();
        match session(url, &refs, all, &mut positions).await {
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

async fn session(url: &str, channels: &[&str], all: bool, positions: &mut Positions) -> Result<(), Error> {
    let mut client = Client::connect(url).await?;
    if all {
        println!("{}", client.welcome);
    }
    let since: serde_json::Map<String, Value> =
        positions.iter().map(|(ch, (offset, epoch))| (ch.clone(), json!({"offset": offset, "epoch": epoch}))).collect();
    let mut request = json!({"type": "subscribe", "channels": channels});
    if !since.is_empty() {
        request["since"] = Value::Object(since);
    }
    client.send_json(&request).await?;
    let reply = client.wait_for(|v| v["type"] == "subscribed" || v["type"] == "error").await?;
    if reply["type"] == "error" {
        eprintln!("hubbub sub: {}", reply["message"]);
        return Err(Error::Closed(Some(1002), "subscribe refused".into()));
    }
    if all {
        println!("{reply}");
    }
    for p in reply["positions"].as_array().into_iter().flatten() {
        let (Some(ch), Some(epoch), Some(offset)) = (p["channel"].as_str(), p["epoch"].as_str(), p["offset"].as_u64())
        else {
            continue;
        };
        if p["reason"] == "no_history" {
            // Nothing to resume from on this channel: stop asking.
            positions.remove(ch);
            continue;
        }
        if p["recovered"] == false {
            eprintln!("hubbub sub: {ch}: missed events could not be recovered ({}); continuing live", p["reason"]);
        }
        // Continue from where we were if recovered; otherwise from the channel's current position.
        let keep = p["recovered"] == true && positions.get(ch).is_some_and(|(_, e)| e == epoch);
        if !keep {
            positions.insert(ch.to_string(), (offset, epoch.to_string()));
        }
    }
    loop {
        let v = client.recv().await?;
        if let (Some(ch), Some(offset)) = (v["channel"].as_str(), v["offset"].as_u64())
            && let Some(p) = positions.get_mut(ch)
        {
            p.0 = offset;
        }
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
