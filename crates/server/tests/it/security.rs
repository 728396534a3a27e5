//! The red-team table (docs/security.md): every way in that must stay shut, each a test, each
//! checking that the refusal says why. Plus the positive side: every supported algorithm, JWKS
//! rotation, user channels, client publish where a rule allows it, expiry and refresh.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hubbub_client::Client;
use hubbub_proto::frame::OpCode;
use hubbub_server::settings::{Access, ChannelSettings, Settings};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::support::{RawWs, TestHub, start_with, upgrade_response};

const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!!";

fn key_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/keys").join(name)
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(key_file(name)).unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A token for `claims`, signed with `alg` by the matching test key.
fn sign(alg: Algorithm, claims: &Value) -> String {
    sign_kid(alg, None, claims)
}

fn sign_kid(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let key = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem("ec.key")).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem("ed.key")).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem("rsa.key")).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &key).unwrap()
}

fn alice(extra: Value) -> Value {
    let mut c = json!({"sub": "alice", "exp": now() + 600});
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    c
}

/// A hub checking HS* tokens with `SECRET` and RS* tokens with the test RSA key.
async fn secured(f: impl FnOnce(&mut Settings)) -> TestHub {
    start_with(|s| {
        s.auth.hmac_secret = Some(SECRET.into());
        s.auth.public_key_file = Some(key_file("rsa.pub"));
        f(s)
    })
    .await
}

/// Connects with `?token=`; `Err((status, response))` when the upgrade is refused.
async fn connect_with(hub: &TestHub, token: &str) -> Result<Client, (u16, String)> {
    let (status, text) = upgrade_response(hub.addr, &format!("/ws?token={token}"), &[]).await;
    if status != 101 {
        return Err((status, text));
    }
    Ok(Client::connect(&hub.ws(&format!("/ws?token={token}"))).await.unwrap())
}

/// The upgrade is refused with 401 and a message containing `why`.
async fn refused(hub: &TestHub, token: &str, why: &str) {
    let Err((status, text)) = connect_with(hub, token).await else { panic!("token accepted; expected: {why}") };
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("\"unauthorized\"") && text.contains(why), "expected {why:?} in {text}");
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

// ---- The red-team table ------------------------------------------------------------------

#[tokio::test]
async fn alg_none_is_refused() {
    let hub = secured(|_| {}).await;
    let token = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&alice(json!({}))));
    refused(&hub, &token, "alg \\\"none\\\" is not accepted").await;
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // Key confusion: an attacker signs HS256 with the (public) RSA key as the HMAC secret.
    let claims = alice(json!({}));
    let forged = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&pem("rsa.pub"))).unwrap();
    // With an HMAC secret configured, the RSA key is never the HMAC key: the signature fails.
    refused(&secured(|_| {}).await, &forged, "signature does not match").await;
    // With only the RSA key, HS256 is not accepted at all.
    let rsa_only = start_with(|s| s.auth.public_key_file = Some(key_file("rsa.pub"))).await;
    refused(&rsa_only, &forged, "HS256 tokens are not accepted here").await;
}

#[tokio::test]
async fn rs256_token_is_refused_where_only_hmac_is_configured() {
    let hub = start_with(|s| s.auth.hmac_secret = Some(SECRET.into())).await;
    refused(&hub, &sign(Algorithm::RS256, &alice(json!({}))), "RS256 tokens are not accepted here").await;
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let hub = secured(|_| {}).await;
    refused(&hub, &sign(Algorithm::HS256, &json!({"sub": "alice", "exp": now() - 60})), "token expired").await;
}

#[tokio::test]
async fn a_token_not_valid_yet_is_refused() {
    let hub = secured(|_| {}).await;
    refused(&hub, &sign(Algorithm::HS256, &alice(json!({"nbf": now() + 3600}))), "not valid yet").await;
}

#[tokio::test]
async fn a_mistyped_exp_or_nbf_is_refused_not_ignored() {
    // GHSA-h395-gr6q-cpjc: a string nbf/exp must not be treated as absent.
    let hub = secured(|_| {}).await;
    let nbf = sign(Algorithm::HS256, &json!({"sub": "alice", "nbf": "99999999999"}));
    refused(&hub, &nbf, "nbf").await;
    let exp = sign(Algorithm::HS256, &json!({"sub": "alice", "exp": "never"}));
    refused(&hub, &exp, "invalid type: string").await;
}

#[tokio::test]
async fn wrong_or_missing_audience_and_issuer_are_refused() {
    let hub = secured(|s| {
        s.auth.audience = Some("hubbub".into());
        s.auth.issuer = Some("https://id.example".into());
    })
    .await;
    let good = json!({"aud": "hubbub", "iss": "https://id.example"});
    assert!(connect_with(&hub, &sign(Algorithm::HS256, &alice(good))).await.is_ok());
    let wrong_aud = alice(json!({"aud": "other", "iss": "https://id.example"}));
    refused(&hub, &sign(Algorithm::HS256, &wrong_aud), "wrong audience").await;
    let no_aud = alice(json!({"iss": "https://id.example"}));
    refused(&hub, &sign(Algorithm::HS256, &no_aud), "aud").await;
    let wrong_iss = alice(json!({"aud": "hubbub", "iss": "https://evil.example"}));
    refused(&hub, &sign(Algorithm::HS256, &wrong_iss), "wrong issuer").await;
}

#[tokio::test]
async fn a_tampered_token_is_refused() {
    let hub = secured(|_| {}).await;
    let token = sign(Algorithm::HS256, &alice(json!({"channels": ["own:*"]})));
    let parts: Vec<&str> = token.split('.').collect();
    // Same signature, escalated claims.
    let tampered = format!("{}.{}.{}", parts[0], b64(&alice(json!({"channels": ["*"]}))), parts[2]);
    refused(&hub, &tampered, "signature does not match").await;
    let rs = sign(Algorithm::RS256, &alice(json!({})));
    let mut sig = rs.rsplit('.').next().unwrap().to_owned().into_bytes();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    let flipped = format!("{}.{}", rs.rsplit_once('.').unwrap().0, String::from_utf8(sig).unwrap());
    refused(&hub, &flipped, "signature does not match").await;
}

#[tokio::test]
async fn an_unknown_kid_is_refused_and_a_rotated_key_is_picked_up_without_restart() {
    let jwks = JwksServer::start().await;
    let hub = start_with(|s| {
        s.auth.jwks_url = Some(jwks.url());
        s.auth.jwks_min_refresh = Duration::from_millis(100);
    })
    .await;
    jwks.serve(&[("k1", "rsa.key")]);
    let k1 = sign_kid(Algorithm::RS256, Some("k1"), &alice(json!({})));
    crate::support::eventually("the JWKS to load", async || connect_with(&hub, &k1).await.is_ok()).await;
    // A token signed by the second key: unknown until the set publishes it.
    let k2 = sign_with(&pem("rsa2.key"), "k2", &alice(json!({})));
    refused(&hub, &k2, "unknown key id").await;
    jwks.serve(&[("k1", "rsa.key"), ("k2", "rsa2.key")]);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(connect_with(&hub, &k2).await.is_ok(), "rotated key accepted without a restart");
    // A kid the set has, with the other key's signature: refused.
    let lying = sign_with(&pem("rsa2.key"), "k1", &alice(json!({})));
    refused(&hub, &lying, "signature does not match").await;
}

#[tokio::test]
async fn subscribing_beyond_the_tokens_channels_is_refused() {
    let hub = secured(|s| {
        s.channels = vec![ChannelSettings { subscribe: Access::Token, ..ChannelSettings::new("private:*") }];
    })
    .await;
    let token = sign(Algorithm::HS256, &alice(json!({"channels": ["private:alice-*"]})));
    let mut c = connect_with(&hub, &token).await.unwrap();
    assert_eq!(c.subscribe(&["private:alice-inbox"]).await.unwrap()["type"], "subscribed");
    for escalation in [vec!["private:bob-inbox"], vec!["private:alice-x", "private:bob-inbox"], vec!["user:bob"]] {
        let r = c.subscribe(&escalation).await.unwrap();
        assert_eq!(r["code"], "permission_denied", "{escalation:?}: {r}");
        assert!(r["message"].as_str().unwrap().contains("private:bob-inbox") || escalation == ["user:bob"], "{r}");
    }
    // Nothing of a refused request was subscribed.
    let chans = hub.api().get("/api/v1/channels").await.unwrap().body;
    let names: Vec<&str> =
        chans["data"]["channels"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(!names.contains(&"private:alice-x") && !names.contains(&"private:bob-inbox"), "{names:?}");
    // Without a token, not even the own pattern.
    let mut anon = hub.client().await;
    assert_eq!(anon.subscribe(&["private:alice-inbox"]).await.unwrap()["code"], "permission_denied");
}

#[tokio::test]
async fn client_publish_is_refused_where_no_rule_allows_it() {
    let hub = secured(|s| {
        s.channels = vec![ChannelSettings { publish: Access::Authenticated, ..ChannelSettings::new("chat:*") }];
    })
    .await;
    let mut listener = hub.subscriber(&["news", "chat:lobby"]).await;
    let mut anon = hub.client().await;
    for (channel, why) in [("news", "may not publish"), ("chat:lobby", "needs a token")] {
        anon.send_json(&json!({"type": "publish", "channel": channel, "event": {"text": "spam"}})).await.unwrap();
        let r = anon.recv().await.unwrap();
        assert_eq!(r["code"], "permission_denied", "{r}");
        assert!(r["message"].as_str().unwrap().contains(why), "{r}");
    }
    let mut a = connect_with(&hub, &sign(Algorithm::HS256, &alice(json!({})))).await.unwrap();
    a.send_json(&json!({"type": "publish", "id": 9, "channel": "chat:lobby", "event": {"text": "hi"}})).await.unwrap();
    let r = a.wait_for(|m| m["type"] == "published").await.unwrap();
    assert_eq!((r["id"].as_i64(), r["delivered"].as_u64()), (Some(9), Some(1)), "{r}");
    let got = listener.recv_event().await.unwrap();
    assert_eq!((got["text"].as_str(), got["channel"].as_str()), (Some("hi"), Some("chat:lobby")));
    assert!(listener.recv_timeout(Duration::from_millis(200)).await.is_err(), "the refused publishes went nowhere");
}

#[tokio::test]
async fn api_key_rows_no_key_and_read_only_key_publishing() {
    use hubbub_server::settings::{ApiKeySettings, Scope};
    let hub = start_with(|s| {
        s.server.api_keys =
            vec![ApiKeySettings { name: "ro".into(), key: "read-only-0123456789".into(), scopes: vec![Scope::Read] }]
    })
    .await;
    let body = json!({"channel": "x", "event": {}});
    let r = hub.api().post("/api/v1/publish", &body).await.unwrap();
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (401, Some("missing_api_key")));
    let r = hub.api_with_key("read-only-0123456789").post("/api/v1/publish", &body).await.unwrap();
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (403, Some("insufficient_scope")));
}

#[tokio::test]
async fn a_frame_flood_is_answered_then_closed_with_4029() {
    let hub = start_with(|s| s.limits.client_frames_per_minute = 5).await;
    let mut c = hub.client().await;
    for _ in 0..5 {
        c.send_json(&json!({"type": "ping"})).await.unwrap();
        assert_eq!(c.recv().await.unwrap()["type"], "pong");
    }
    c.send_json(&json!({"type": "ping"})).await.unwrap();
    let r = c.recv().await.unwrap();
    assert_eq!(r["code"], "rate_limited", "{r}");
    for _ in 0..10 {
        let _ = c.send_json(&json!({"type": "ping"})).await;
    }
    assert_eq!(c.closed().await.0, Some(4029));
}

#[tokio::test]
async fn too_many_connections_per_ip_get_429_with_retry_after() {
    let hub = start_with(|s| s.limits.connections_per_ip_per_minute = 3).await;
    let mut keep = Vec::new();
    for _ in 0..3 {
        keep.push(hub.client().await);
    }
    let (status, text) = upgrade_response(hub.addr, "/ws", &[]).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after: "), "{text}");
    assert!(text.contains("too_many_connection_attempts"), "{text}");
}

#[tokio::test]
async fn max_connections_and_max_connections_per_user_are_enforced() {
    let hub = secured(|s| {
        s.limits.max_connections = 3;
        s.limits.max_connections_per_user = 2;
    })
    .await;
    let token = sign(Algorithm::HS256, &alice(json!({})));
    let _a1 = connect_with(&hub, &token).await.unwrap();
    let _a2 = connect_with(&hub, &token).await.unwrap();
    let (status, text) = connect_with(&hub, &token).await.err().expect("third connection of alice refused");
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("too_many_user_connections"), "{text}");
    // The probes `connect_with` makes (an upgrade, then a close) hold a slot until their session
    // sees the close: let them go first.
    crate::support::eventually("the probes gone", async || hub.hub.registry().connection_count() == 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _anon = hub.client().await;
    let (status, text) = upgrade_response(hub.addr, "/ws", &[]).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("too_many_connections"), "{text}");
}

#[tokio::test]
async fn a_handshake_that_never_finishes_is_cut_off() {
    let hub = start_with(|s| s.limits.handshake_timeout = Duration::from_millis(500)).await;
    let mut slow = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut slow, &mut buf))
        .await
        .expect("the hub must drop a stalled handshake")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn origins_outside_the_allow_list_are_refused() {
    let hub =
        start_with(|s| s.server.allowed_origins = vec!["https://app.example".into(), "https://*.example.org".into()])
            .await;
    let (status, text) = upgrade_response(hub.addr, "/ws", &[("Origin", "https://evil.example")]).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("origin_not_allowed"), "{text}");
    for ok in ["https://app.example", "https://a.example.org"] {
        assert_eq!(upgrade_response(hub.addr, "/ws", &[("Origin", ok)]).await.0, 101, "{ok}");
    }
    assert_eq!(upgrade_response(hub.addr, "/ws", &[]).await.0, 101, "no Origin: not a browser");
}

#[tokio::test]
async fn with_auth_required_a_silent_client_is_closed_with_4001() {
    let hub = secured(|s| {
        s.auth.required = true;
        s.auth.token_timeout = Duration::from_millis(300);
    })
    .await;
    let mut c = hub.client().await;
    c.send_json(&json!({"type": "subscribe", "channels": ["x"]})).await.unwrap();
    let r = c.recv().await.unwrap();
    assert_eq!(r["code"], "unauthorized", "{r}");
    assert_eq!(c.closed().await.0, Some(4001));
    // A bad token in the auth frame closes at once, with the reason first.
    let mut c = hub.client().await;
    c.send_json(&json!({"type": "auth", "token": "not.a.jwt"})).await.unwrap();
    let r = c.recv().await.unwrap();
    assert!(r["message"].as_str().unwrap().contains("token refused"), "{r}");
    assert_eq!(c.closed().await.0, Some(4001));
}

#[tokio::test]
async fn an_oversize_frame_is_refused_with_1009() {
    let hub = start_with(|s| s.websocket.max_message_bytes = 1024).await;
    let mut raw = RawWs::connect(hub.addr, "/ws").await;
    raw.send_frame(OpCode::Text, &vec![b' '; 2048]).await;
    let (texts, close) = raw.until_close().await;
    assert!(texts.iter().any(|t| t["code"] == "message_too_big"), "{texts:?}");
    assert_eq!(close.map(|c| c.0), Some(1009));
}

// ---- What a token does grant ---------------------------------------------------------------

#[tokio::test]
async fn every_supported_algorithm_is_accepted() {
    for (alg, key) in [
        (Algorithm::HS256, None),
        (Algorithm::HS384, None),
        (Algorithm::HS512, None),
        (Algorithm::RS256, Some("rsa.pub")),
        (Algorithm::PS256, Some("rsa.pub")),
        (Algorithm::ES256, Some("ec.pub")),
        (Algorithm::EdDSA, Some("ed.pub")),
    ] {
        let hub = start_with(|s| match key {
            None => s.auth.hmac_secret = Some(SECRET.into()),
            Some(k) => s.auth.public_key_file = Some(key_file(k)),
        })
        .await;
        let token = sign(alg, &alice(json!({})));
        // Both ways of presenting it at the upgrade, and the auth frame.
        assert!(connect_with(&hub, &token).await.is_ok(), "{alg:?} ?token=");
        let (status, _) = upgrade_response(hub.addr, "/ws", &[("Authorization", &format!("Bearer {token}"))]).await;
        assert_eq!(status, 101, "{alg:?} Authorization: Bearer");
        let mut c = hub.client().await;
        c.send_json(&json!({"type": "auth", "token": token})).await.unwrap();
        let r = c.recv().await.unwrap();
        assert_eq!((r["type"].as_str(), r["user"].as_str()), (Some("authenticated"), Some("alice")), "{alg:?}: {r}");
    }
}

#[tokio::test]
async fn user_channels_reach_every_connection_of_that_user_only() {
    let hub = secured(|_| {}).await;
    let token = |user: &str| sign(Algorithm::HS256, &json!({"sub": user, "exp": now() + 600}));
    let mut a1 = connect_with(&hub, &token("alice")).await.unwrap();
    let mut a2 = hub.client().await;
    a2.send_json(&json!({"type": "auth", "token": token("alice")})).await.unwrap();
    a2.wait_for(|m| m["type"] == "authenticated").await.unwrap();
    let mut b = connect_with(&hub, &token("bob")).await.unwrap();
    crate::support::eventually("user channels subscribed", async || {
        let r = hub.api().get("/api/v1/channels").await.unwrap().body;
        r["data"]["channels"].as_array().unwrap().iter().any(|c| c["name"] == "user:alice" && c["subscribers"] == 2)
    })
    .await;
    let r = hub.api().post("/api/v1/publish", &json!({"users": ["alice"], "event": {"type": "dm"}})).await.unwrap();
    assert_eq!(r.body["data"]["delivered"], 2, "{}", r.body);
    for c in [&mut a1, &mut a2] {
        assert_eq!(c.recv_event().await.unwrap()["channel"], "user:alice");
    }
    assert!(b.recv_timeout(Duration::from_millis(200)).await.is_err(), "bob got alice's message");
}

#[tokio::test]
async fn an_expiring_token_is_warned_then_closed_unless_refreshed() {
    let hub = secured(|s| {
        s.auth.expiry_warning = Duration::from_secs(2);
        s.auth.leeway = Duration::ZERO;
    })
    .await;
    let short = |secs: u64| sign(Algorithm::HS256, &json!({"sub": "alice", "exp": now() + secs}));
    // Not refreshed: told, then closed with 4001.
    let mut c = connect_with(&hub, &short(3)).await.unwrap();
    let warn = c.wait_for(|m| m["type"] == "token_expiring").await.unwrap();
    assert!(warn["seconds_left"].as_u64().unwrap() <= 2, "{warn}");
    assert_eq!(c.closed().await.0, Some(4001));
    // Refreshed in time: stays open; a token for someone else is not a refresh.
    let mut c = connect_with(&hub, &short(3)).await.unwrap();
    c.wait_for(|m| m["type"] == "token_expiring").await.unwrap();
    c.send_json(
        &json!({"type": "auth", "token": sign(Algorithm::HS256, &json!({"sub": "mallory", "exp": now() + 600}))}),
    )
    .await
    .unwrap();
    assert_eq!(c.recv().await.unwrap()["code"], "unauthorized");
    c.send_json(&json!({"type": "auth", "token": short(600)})).await.unwrap();
    assert_eq!(c.wait_for(|m| m["type"] == "authenticated").await.unwrap()["user"], "alice");
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.send_json(&json!({"type": "ping"})).await.unwrap();
    assert_eq!(c.wait_for(|m| m["type"] == "pong").await.unwrap()["type"], "pong", "still open after the first exp");
}

#[tokio::test]
async fn cors_answers_allowed_origins_only() {
    let hub = start_with(|s| s.server.cors_origins = vec!["https://app.example".into()]).await;
    let (status, head) = raw_http(hub.addr, "OPTIONS /api/v1/publish", "https://app.example").await;
    assert_eq!(status, 204, "{head}");
    assert!(head.contains("access-control-allow-origin: https://app.example"), "{head}");
    assert!(head.contains("access-control-allow-headers: authorization, content-type"), "{head}");
    let (_, head) = raw_http(hub.addr, "GET /api/v1/stats", "https://evil.example").await;
    assert!(!head.contains("access-control-allow-origin"), "{head}");
}

/// A raw HTTP request with an `Origin`; returns the status and the lower-cased head.
async fn raw_http(addr: std::net::SocketAddr, line: &str, origin: &str) -> (u16, String) {
    let req = format!(
        "{line} HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
    );
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    (text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0), text)
}

fn sign_with(private_pem: &[u8], kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    encode(&header, claims, &EncodingKey::from_rsa_pem(private_pem).unwrap()).unwrap()
}

/// A JWKS endpoint whose key set the test changes while the hub runs.
struct JwksServer {
    addr: std::net::SocketAddr,
    doc: std::sync::Arc<std::sync::Mutex<String>>,
}

impl JwksServer {
    async fn start() -> JwksServer {
        let doc = std::sync::Arc::new(std::sync::Mutex::new(r#"{"keys":[]}"#.to_string()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = doc.clone();
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let body = served.lock().unwrap().clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], body) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        JwksServer { addr, doc }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    /// Publishes the public halves of these (kid, private key file) pairs.
    fn serve(&self, keys: &[(&str, &str)]) {
        let keys: Vec<Value> = keys
            .iter()
            .map(|(kid, file)| {
                let enc = EncodingKey::from_rsa_pem(&pem(file)).unwrap();
                let mut jwk =
                    serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, Algorithm::RS256).unwrap())
                        .unwrap();
                jwk["kid"] = json!(kid);
                jwk
            })
            .collect();
        *self.doc.lock().unwrap() = json!({"keys": keys}).to_string();
    }
}

// ---- TLS ----------------------------------------------------------------------------------

/// A self-signed certificate for localhost/127.0.0.1, made with openssl in a temp dir.
fn self_signed() -> Option<(PathBuf, PathBuf)> {
    let dir = crate::support::temp_dir("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // A leaf, not a CA: webpki refuses a CA certificate as the server's own.
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status();
    match made {
        Ok(s) if s.success() => Some((cert, key)),
        _ if std::env::var("CI").as_deref() == Ok("true") => panic!("openssl is needed to make the test certificate"),
        _ => {
            eprintln!("!!! SKIPPED: openssl is not installed, so the TLS test did not run");
            None
        }
    }
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    cert: &std::path::Path,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(cert).unwrap()).unwrap();
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap()
}

/// `POST /api/v1/publish` over https; returns the whole response.
async fn https_publish(addr: std::net::SocketAddr, cert: &std::path::Path, body: Value) -> String {
    let mut https = tls_connect(addr, cert).await;
    let body = body.to_string();
    let req = format!(
        "POST /api/v1/publish HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    https.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut https, &mut out).await.unwrap();
    String::from_utf8_lossy(&out).to_string()
}

/// A hub serving TLS with a fresh self-signed certificate, and that certificate's file.
async fn tls_hub() -> Option<(TestHub, PathBuf)> {
    let (cert, key) = self_signed()?;
    let hub = start_with(|s| {
        s.tls.cert = Some(cert.clone());
        s.tls.key = Some(key);
    })
    .await;
    Some((hub, cert))
}

#[tokio::test]
async fn tls_serves_wss_and_https_with_a_self_signed_certificate() {
    use futures_util::{SinkExt, StreamExt};
    let Some((hub, cert)) = tls_hub().await else { return };
    // wss://: welcome, subscribe, then an event published over https://.
    let tls = tls_connect(hub.addr, &cert).await;
    let uri = http::Uri::from_static("wss://localhost/ws");
    let (mut ws, _) = tokio_websockets::ClientBuilder::from_uri(uri).connect_on(tls).await.unwrap();
    let welcome = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert!(welcome.as_text().unwrap().contains("connection_ack"));
    ws.send(tokio_websockets::Message::text(json!({"type": "subscribe", "channels": ["secure"]}).to_string()))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert!(reply.as_text().unwrap().contains("subscribed"));
    let text =
        https_publish(hub.addr, &cert, json!({"channel": "secure", "event": {"type": "over_tls", "n": 1}})).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // Large enough to need several TLS records and writes.
    let big = "x".repeat(100_000);
    let text = https_publish(hub.addr, &cert, json!({"channel": "secure", "event": {"type": "big", "pad": big}})).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        let v: Value = serde_json::from_str(m.as_text().unwrap()).unwrap();
        if v["type"] != "heartbeat" {
            got.push(v);
        }
    }
    assert_eq!((got[0]["type"].as_str(), got[0]["n"].as_u64()), (Some("over_tls"), Some(1)));
    assert_eq!(got[1]["pad"].as_str().map(str::len), Some(100_000));
    // Plain text on the TLS port gets no HTTP answer.
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), async {
        let mut s = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
        s.write_all(b"GET /api/v1/stats HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out).await;
        (String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"), ())
    })
    .await
    .unwrap();
    assert!(!status, "plain HTTP must not be served on a TLS port");
}

#[tokio::test]
async fn with_auth_required_nothing_fanned_out_reaches_a_connection_before_it_authenticates() {
    let hub = secured(|s| {
        s.auth.required = true;
        s.auth.token_timeout = Duration::from_secs(10);
        s.server.auto_subscribe.insert("/ws/ui".into(), vec!["ui".into()]);
    })
    .await;
    let mut c = Client::connect(&hub.ws("/ws/ui")).await.unwrap();
    crate::support::eventually("the connection", async || hub.hub.registry().connection_count() == 1).await;
    assert_eq!(hub.hub.registry().channel_count(), 0, "the path's channel waits for the token");
    hub.api().post("/api/v1/broadcast", &json!({"event": {"type": "secret_broadcast"}})).await.unwrap();
    hub.publish("ui", json!({"type": "secret_event"})).await;
    assert!(c.recv_timeout(Duration::from_millis(300)).await.is_err(), "nothing before auth");

    c.send_json(&json!({"type": "auth", "token": sign(Algorithm::HS256, &alice(json!({})))})).await.unwrap();
    assert_eq!(c.recv().await.unwrap()["type"], "authenticated");
    crate::support::eventually("the deferred subscription", async || hub.hub.registry().subscriber_count("ui") == 1)
        .await;
    hub.api().post("/api/v1/broadcast", &json!({"event": {"type": "open_broadcast"}})).await.unwrap();
    hub.publish("ui", json!({"type": "open_event"})).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(c.recv_event().await.unwrap()["type"].as_str().unwrap().to_string());
    }
    got.sort();
    assert_eq!(got, ["open_broadcast", "open_event"], "and nothing from before auth");
}

#[tokio::test]
async fn max_subscribers_fills_but_a_member_may_subscribe_again() {
    let hub = start_with(|s| {
        s.channels.push(ChannelSettings { max_subscribers: 1, ..ChannelSettings::new("room") });
    })
    .await;
    let mut first = hub.subscriber(&["room"]).await;
    let mut second = hub.client().await;
    let r = second.subscribe(&["room"]).await.unwrap();
    assert_eq!(r["code"], "channel_full", "{r}");
    let r = first.subscribe(&["room"]).await.unwrap();
    assert_eq!(r["type"], "subscribed", "re-subscribing a channel it is in is not joining it: {r}");
}

#[tokio::test]
async fn auto_subscribe_obeys_the_channel_rules() {
    let hub = secured(|s| {
        s.server.auto_subscribe.insert("/ws/ui".into(), vec!["ui".into(), "staff".into()]);
        s.channels.push(ChannelSettings { subscribe: Access::Authenticated, ..ChannelSettings::new("staff") });
    })
    .await;
    let mut anon = Client::connect(&hub.ws("/ws/ui")).await.unwrap();
    let e = anon.recv().await.unwrap();
    assert_eq!(e["code"], "permission_denied", "{e}");
    assert!(e["message"].as_str().unwrap().contains("not subscribed on connect"), "{e}");
    let token = sign(Algorithm::HS256, &alice(json!({})));
    let _staff = Client::connect(&hub.ws(&format!("/ws/ui?token={token}"))).await.unwrap();
    crate::support::eventually("the subscriptions", async || {
        hub.hub.registry().subscriber_count("ui") == 2 && hub.hub.registry().subscriber_count("staff") == 1
    })
    .await;
    hub.publish("staff", json!({"type": "staff_only"})).await;
    hub.publish("ui", json!({"type": "for_all"})).await;
    assert_eq!(anon.recv_event().await.unwrap()["type"], "for_all", "the refused channel is not delivered");
}

/// `GET path` over raw TCP with extra headers; returns the status.
async fn get_status(addr: std::net::SocketAddr, path: &str, extra: &str) -> u16 {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf)[9..12].parse().unwrap()
}

#[tokio::test]
async fn behind_a_trusted_proxy_limits_and_the_loopback_rule_see_the_forwarded_client() {
    let hub = start_with(|s| {
        s.server.trusted_proxies = vec!["127.0.0.0/8".into()];
        s.limits.connections_per_ip_per_minute = 2;
    })
    .await;
    let from = |ip: &'static str| [("X-Forwarded-For", ip)];
    for _ in 0..2 {
        assert_eq!(upgrade_response(hub.addr, "/ws", &from("203.0.113.1")).await.0, 101);
    }
    let (status, text) = upgrade_response(hub.addr, "/ws", &from("203.0.113.1")).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("203.0.113.1"), "the refusal names the forwarded client: {text}");
    assert_eq!(upgrade_response(hub.addr, "/ws", &from("203.0.113.2")).await.0, 101, "another client, own budget");
    // A forged left-most entry does not help: the proxy appended the real address.
    assert_eq!(upgrade_response(hub.addr, "/ws", &from("198.51.100.7, 203.0.113.1")).await.0, 429);
    // The keyless API answers loopback clients only; a remote client through a local proxy is not one.
    assert_eq!(get_status(hub.addr, "/api/v1/stats", "X-Forwarded-For: 203.0.113.9\r\n").await, 403);
    assert_eq!(get_status(hub.addr, "/api/v1/stats", "").await, 200);

    // Without trusted proxies the header is ignored: every connection is 127.0.0.1.
    let plain = start_with(|s| s.limits.connections_per_ip_per_minute = 2).await;
    for ip in ["203.0.113.1", "203.0.113.2"] {
        assert_eq!(upgrade_response(plain.addr, "/ws", &from(ip)).await.0, 101);
    }
    assert_eq!(upgrade_response(plain.addr, "/ws", &from("203.0.113.3")).await.0, 429);
    assert_eq!(get_status(plain.addr, "/api/v1/stats", "X-Forwarded-For: 203.0.113.9\r\n").await, 200);
}

#[tokio::test]
async fn a_users_ack_cursors_cannot_be_read_or_moved_by_borrowing_its_client_name() {
    let hub = secured(|s| s.channels.push(crate::support::history("h:*", 100, Duration::from_secs(600)))).await;
    let token = sign(Algorithm::HS256, &alice(json!({})));
    let sub_ack = json!({"type": "subscribe", "channels": ["h:inbox"], "ack": true});
    let mut phone = Client::connect(&hub.ws(&format!("/ws?client_name=phone&token={token}"))).await.unwrap();
    phone.send_json(&sub_ack).await.unwrap();
    assert_eq!(phone.recv_event().await.unwrap()["type"], "subscribed");
    for n in 1..=3 {
        hub.publish("h:inbox", json!({"n": n})).await;
    }
    for _ in 0..3 {
        phone.recv_event().await.unwrap();
    }
    crate::support::ack(&mut phone, "h:inbox", 1).await;
    phone.close().await.unwrap();

    // An anonymous client naming itself "phone" gets a cursor of its own, starting now: it
    // neither replays alice's unacknowledged events nor moves her cursor.
    let mut thief = Client::connect(&hub.ws("/ws?client_name=phone")).await.unwrap();
    thief.send_json(&sub_ack).await.unwrap();
    let r = thief.recv_event().await.unwrap();
    assert_eq!(r["positions"][0]["replayed"], 0, "{r}");
    crate::support::ack(&mut thief, "h:inbox", 3).await;
    thief.close().await.unwrap();

    // Alice's phone, back with its token, resumes after its own last ack (1).
    let mut phone = Client::connect(&hub.ws(&format!("/ws?client_name=phone&token={token}"))).await.unwrap();
    phone.send_json(&sub_ack).await.unwrap();
    assert_eq!(phone.recv_event().await.unwrap()["positions"][0]["replayed"], 2);
    for n in 2..=3 {
        assert_eq!(phone.recv_event().await.unwrap()["n"], n);
    }
    // A client_name that could forge the user namespace is refused at the upgrade.
    let (status, text) = upgrade_response(hub.addr, "/ws?client_name=%01user%01alice%01phone", &[]).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("invalid_client_name"), "{text}");
}

#[tokio::test]
async fn concurrent_upgrades_cannot_overshoot_max_connections() {
    use tokio::io::AsyncReadExt;
    let hub = start_with(|s| s.limits.max_connections = 5).await;
    let addr = hub.addr;
    let attempts = (0..30).map(|_| {
        tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!(
                "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut head = [0u8; 12];
            s.read_exact(&mut head).await.unwrap();
            (String::from_utf8_lossy(&head[9..12]).to_string(), s)
        })
    });
    let mut held = Vec::new();
    for a in attempts.collect::<Vec<_>>() {
        held.push(a.await.unwrap());
    }
    let upgraded = held.iter().filter(|(status, _)| status == "101").count();
    let refused = held.iter().filter(|(status, _)| status == "503").count();
    assert_eq!((upgraded, refused), (5, 25), "all 30 upgrades were in flight at once");
    drop(held);
    // Closed connections give their slots back.
    crate::support::eventually("the slots back", async || upgrade_response(addr, "/ws", &[]).await.0 == 101).await;
}

#[tokio::test]
async fn max_subscribers_holds_under_concurrent_subscribes_and_a_refusal_subscribes_nothing() {
    let hub = start_with(|s| {
        s.channels.push(ChannelSettings { max_subscribers: 3, ..ChannelSettings::new("stage") });
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(hub.client().await);
    }
    let replies = clients.into_iter().map(|mut c| {
        tokio::spawn(async move {
            let r = c.subscribe(&["lobby", "stage"]).await.unwrap();
            (r["type"].as_str().unwrap_or_default().to_string(), r["code"].as_str().unwrap_or_default().to_string(), c)
        })
    });
    let mut got = Vec::new();
    for r in replies.collect::<Vec<_>>() {
        got.push(r.await.unwrap());
    }
    let ok = got.iter().filter(|(t, _, _)| t == "subscribed").count();
    let full = got.iter().filter(|(_, code, _)| code == "channel_full").count();
    assert_eq!((ok, full), (3, 17));
    assert_eq!(hub.hub.registry().subscriber_count("stage"), 3);
    assert_eq!(hub.hub.registry().subscriber_count("lobby"), 3, "a refused request subscribes nothing");
}

#[tokio::test]
async fn every_limit_that_refuses_is_counted_in_metrics() {
    let hub = start_with(|s| {
        s.limits.connections_per_ip_per_minute = 3;
        s.limits.client_frames_per_minute = 2;
        s.limits.max_channels_per_connection = 1;
        s.limits.publishes_per_key_per_minute = 1;
        s.limits.handshake_timeout = Duration::from_millis(300);
        s.websocket.max_message_bytes = 1024;
    })
    .await;
    // max_channels_per_connection, then client_frames_per_minute (third frame of the minute).
    let mut c = hub.client().await;
    assert_eq!(c.subscribe(&["a", "b"]).await.unwrap()["code"], "too_many_channels");
    c.send_json(&json!({"type": "ping"})).await.unwrap();
    assert_eq!(c.recv().await.unwrap()["type"], "pong");
    c.send_json(&json!({"type": "ping"})).await.unwrap();
    assert_eq!(c.recv().await.unwrap()["code"], "rate_limited");
    // max_message_bytes.
    let mut raw = RawWs::connect(hub.addr, "/ws").await;
    raw.send_frame(OpCode::Text, &vec![b' '; 2048]).await;
    assert_eq!(raw.until_close().await.1.map(|c| c.0), Some(1009));
    // connections_per_ip_per_minute: the two above and one more, then refused.
    assert_eq!(upgrade_response(hub.addr, "/ws", &[]).await.0, 101);
    assert_eq!(upgrade_response(hub.addr, "/ws", &[]).await.0, 429);
    // publishes_per_key_per_minute (per address without keys).
    hub.publish("a", json!({"n": 1})).await;
    assert_eq!(
        hub.api().post("/api/v1/publish", &json!({"channel": "a", "event": {"n": 2}})).await.unwrap().status,
        429
    );
    // handshake_timeout: a request head that never ends.
    let mut slow = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let metrics = async || hub.api().get("/metrics").await.unwrap().text;
    crate::support::eventually("the handshake timeout counted", async || {
        metrics().await.contains("hubbub_limit_rejections_total{limit=\"handshake_timeout\"} 1\n")
    })
    .await;
    let text = metrics().await;
    for (limit, n) in [
        ("max_channels_per_connection", 1),
        ("client_frames_per_minute", 1),
        ("max_message_bytes", 1),
        ("connections_per_ip_per_minute", 1),
        ("publishes_per_key_per_minute", 1),
        ("max_subscribers", 0),
    ] {
        let line = format!("hubbub_limit_rejections_total{{limit=\"{limit}\"}} {n}\n");
        assert!(text.contains(&line), "{line:?} missing in\n{text}");
    }
}

#[tokio::test]
async fn the_rust_client_and_the_cli_speak_wss_and_https() {
    let Some((hub, cert)) = tls_hub().await else { return };
    let port = hub.addr.port();
    let trust = hubbub_client::tls::Tls::with_ca_file(&cert).unwrap();
    let mut c = Client::connect_with_tls(&format!("wss://localhost:{port}/ws"), &trust).await.unwrap();
    assert_eq!(c.subscribe(&["secure"]).await.unwrap()["type"], "subscribed");
    let api = hubbub_client::http::Api::new(&format!("https://localhost:{port}"), None).unwrap().with_tls(trust);
    api.publish("secure", &json!({"type": "from_rust"})).await.unwrap();
    assert_eq!(c.recv_event().await.unwrap()["type"], "from_rust");
    // The CLI trusts the system's roots, or SSL_CERT_FILE.
    let (url, cert_file) = (format!("https://localhost:{port}"), cert.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_hubbub"))
            .args(["pub", "--url", &url, "secure", r#"{"type":"from_cli"}"#])
            .env("SSL_CERT_FILE", &cert_file)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(c.recv_event().await.unwrap()["type"], "from_cli");
    // Without trusting the certificate, the handshake is refused with the reason.
    let err = Client::connect(&format!("wss://localhost:{port}/ws")).await.err().expect("untrusted certificate");
    assert!(err.to_string().contains("tls: handshake with localhost"), "{err}");
}
