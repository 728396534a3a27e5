//! `hubbub pub CHANNEL JSON`: one publish through the HTTP API.

use hubbub_client::http::Api;

/// Publishes `event` on `channel` and prints the API's answer.
pub async fn run(url: &str, api_key: Option<String>, channel: &str, event: &str) -> anyhow::Result<()> {
    let event: serde_json::Value = serde_json::from_str(event)
        .map_err(|e| anyhow::anyhow!("the event is not valid JSON ({e}); pass an object like '{{\"type\":\"x\"}}'"))?;
    let api = Api::new(url, api_key)?;
    let reply = api.post("/api/v1/publish", &serde_json::json!({"channel": channel, "event": event})).await?;
    println!("{}", reply.body);
    anyhow::ensure!(reply.status == 200, "publish failed with HTTP {}", reply.status);
    Ok(())
}
