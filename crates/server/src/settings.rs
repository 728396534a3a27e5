//! Settings: defaults < TOML file < `HUBBUB_*` environment < command-line flags.
//!
//! Every key is documented in `docs/configuration.md`. Unknown keys and bad values are errors that
//! name the key (`deny_unknown_fields` plus figment's key paths).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use hubbub::config::ChannelRule;
use hubbub::{HubConfig, OverflowPolicy};
use serde::{Deserialize, Serialize};

/// All settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Listening, endpoints, API access.
    pub server: ServerSettings,
    /// WebSocket behaviour: timeouts, heartbeats, frame limits, welcome.
    pub websocket: WebSocketSettings,
    /// Per-connection and per-channel limits.
    pub limits: LimitSettings,
    /// Where history lives and how far recovery reaches.
    pub history: HistorySettings,
    /// Publish options: idempotency.
    pub publish: PublishSettings,
    /// Rules per channel pattern (`[[channels]]`): history, who may subscribe and publish, limits;
    /// the first matching rule wins.
    pub channels: Vec<ChannelSettings>,
    /// `[auth]`: connection tokens (JWT).
    pub auth: AuthSettings,
    /// `[tls]`: serve `wss://` and `https://` directly.
    pub tls: TlsSettings,
    /// `"memory"` (one process, the default) or `"redis"` (several nodes sharing one Redis).
    pub broker: BrokerKind,
    /// `[redis]`: used when `broker = "redis"`.
    pub redis: RedisSettings,
}

/// Which broker carries publications.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BrokerKind {
    /// In-process; nothing else needed.
    #[default]
    Memory,
    /// Redis pub/sub, history streams and cursors, shared by every node.
    Redis,
}

/// `[redis]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: String,
    /// With `rediss://`: a PEM file of the CA to trust instead of the system's roots (for a Redis
    /// with a private or self-signed certificate).
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Redis Sentinel addresses (`redis://host:port`); when set, `url` is not used and the primary
    /// of `sentinel_service` is asked from them at every (re)connection.
    pub sentinels: Vec<String>,
    /// The Sentinel service (master group) name.
    pub sentinel_service: String,
    /// Prefix of every key and pub/sub channel hubbub uses, so several deployments can share a Redis.
    pub prefix: String,
    /// While Redis is unreachable: `"local"` delivers publishes to this node's subscribers only
    /// (no offset, not stored), `"fail"` answers them with HTTP 503.
    pub on_failure: OnRedisFailure,
}

/// What a publish does while Redis is unreachable.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisFailure {
    /// Deliver to local subscribers only.
    #[default]
    Local,
    /// Refuse with 503.
    Fail,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "hubbub".into(),
            on_failure: OnRedisFailure::Local,
            tls_ca_file: None,
            sentinels: Vec::new(),
            sentinel_service: "mymaster".into(),
        }
    }
}

/// `[history]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySettings {
    /// `"memory"` (lost on restart: every channel starts a new epoch) or `"disk"` (survives
    /// restarts and `kill -9`; needed for `durable` publishes).
    pub store: Store,
    /// Directory of the disk store.
    pub path: std::path::PathBuf,
    /// Most publications one recovery replays; a client further behind is told to reload.
    pub max_recovery: usize,
}

/// Where history lives.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Store {
    /// In memory.
    Memory,
    /// In an embedded database under `history.path`.
    Disk,
}

/// `[publish]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PublishSettings {
    /// How long an `idempotency_key` is remembered.
    #[serde(with = "duration_str")]
    pub idempotency_window: Duration,
    /// Most keys remembered at once (oldest forgotten first).
    pub idempotency_max_keys: usize,
}

/// `[[channels]]`: everything about the channels whose names match `pattern`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettings {
    /// A channel name or a pattern with `*`, e.g. `"sensor_*"`.
    pub pattern: String,
    /// Publications kept per channel; 0 keeps none (no history, no recovery).
    #[serde(default)]
    pub history_size: usize,
    /// How long each publication is kept (needed when `history_size` > 0).
    #[serde(with = "duration_str", default)]
    pub history_ttl: Duration,
    /// Who may subscribe.
    #[serde(default = "Access::anyone")]
    pub subscribe: Access,
    /// Who may publish with a `publish` frame over WebSocket (the HTTP API is governed by API keys).
    #[serde(default = "Access::nobody")]
    pub publish: Access,
    /// Whether subscribers may ask for missed publications (`since`, `ack`).
    #[serde(default = "yes")]
    pub recovery: bool,
    /// Most subscribers one channel may have on this node; 0 means no limit.
    #[serde(default)]
    pub max_subscribers: usize,
}

impl ChannelSettings {
    /// A rule with the defaults: no history, anyone subscribes, no client publishes.
    pub fn new(pattern: &str) -> ChannelSettings {
        ChannelSettings {
            pattern: pattern.into(),
            history_size: 0,
            history_ttl: Duration::ZERO,
            subscribe: Access::Anyone,
            publish: Access::Nobody,
            recovery: true,
            max_subscribers: 0,
        }
    }

    /// The same rule keeping `size` publications for `ttl`.
    pub fn with_history(self, size: usize, ttl: Duration) -> ChannelSettings {
        ChannelSettings { history_size: size, history_ttl: ttl, ..self }
    }

    /// Whether `channel` matches this rule.
    pub fn matches(&self, channel: &str) -> bool {
        hubbub::config::glob_match(&self.pattern, channel)
    }
}

fn yes() -> bool {
    true
}

/// Who may do something on a channel.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Every connection, with or without a token.
    Anyone,
    /// Connections with a valid token.
    Authenticated,
    /// Connections whose token's `channels` claim has a pattern matching the channel.
    Token,
    /// No client (the HTTP API still may).
    Nobody,
}

impl Access {
    fn anyone() -> Access {
        Access::Anyone
    }

    fn nobody() -> Access {
        Access::Nobody
    }
}

/// `[tls]`: with both set, every connection on `server.bind` is TLS (rustls): `wss://` and
/// `https://`. Without, plain TCP (terminate TLS in a proxy, or set these).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM file with the certificate chain, leaf first.
    pub cert: Option<std::path::PathBuf>,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<std::path::PathBuf>,
}

/// `[auth]`: who a connection is. With a key source set, a connection may present a JWT (query
/// `?token=`, `Authorization: Bearer`, or an `auth` frame); with `required`, it must.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Shared secret for HS256, HS384 and HS512 tokens.
    pub hmac_secret: Option<String>,
    /// A PEM public key (RSA, EC P-256/P-384 or Ed25519) for RS*, PS*, ES* or EdDSA tokens.
    pub public_key_file: Option<std::path::PathBuf>,
    /// A JWKS URL (`http://` or `https://`); keys are picked by the token's `kid`.
    pub jwks_url: Option<String>,
    /// How often the JWKS is fetched again even when every `kid` is known.
    #[serde(with = "duration_str")]
    pub jwks_refresh: Duration,
    /// Shortest time between two fetches caused by an unknown `kid` (so forged `kid`s cannot
    /// make the hub hammer the JWKS server).
    #[serde(with = "duration_str")]
    pub jwks_min_refresh: Duration,
    /// When set, a token's `aud` must contain it.
    pub audience: Option<String>,
    /// When set, a token's `iss` must equal it.
    pub issuer: Option<String>,
    /// Whether a connection must authenticate; without a token it is closed with 4001 after
    /// `token_timeout`.
    pub required: bool,
    /// How long a connection without a token may take to send its `auth` frame.
    #[serde(with = "duration_str")]
    pub token_timeout: Duration,
    /// How long before `exp` the connection gets a `token_expiring` frame.
    #[serde(with = "duration_str")]
    pub expiry_warning: Duration,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "duration_str")]
    pub leeway: Duration,
    /// Subscribe every authenticated connection to `user:<sub>`, so a publish to that channel
    /// reaches every connection of the user.
    pub user_channels: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            hmac_secret: None,
            public_key_file: None,
            jwks_url: None,
            jwks_refresh: Duration::from_secs(3600),
            jwks_min_refresh: Duration::from_secs(10),
            audience: None,
            issuer: None,
            required: false,
            token_timeout: Duration::from_secs(5),
            expiry_warning: Duration::from_secs(30),
            leeway: Duration::from_secs(5),
            user_channels: true,
        }
    }
}

impl AuthSettings {
    /// Whether any key source is configured (tokens can be checked at all).
    pub fn enabled(&self) -> bool {
        self.hmac_secret.is_some() || self.public_key_file.is_some() || self.jwks_url.is_some()
    }
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            store: Store::Memory,
            path: "hubbub-data".into(),
            max_recovery: HubConfig::default().max_recovery,
        }
    }
}

impl Default for PublishSettings {
    fn default() -> Self {
        let hub = HubConfig::default();
        PublishSettings { idempotency_window: hub.idempotency_window, idempotency_max_keys: hub.idempotency_max_keys }
    }
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Extra WebSocket paths besides `/ws` (the seeds' paths by default).
    pub ws_aliases: Vec<String>,
    /// Channels a connection is subscribed to on connect, per WebSocket path; lets clients that
    /// never send `subscribe` (seeds 002, 003) receive a channel.
    pub auto_subscribe: BTreeMap<String, Vec<String>>,
    /// When set, `/api/v1/*` requires `Authorization: Bearer <api_key>`; this key may do
    /// everything (scope `admin`).
    pub api_key: Option<String>,
    /// More keys, each with its own scopes (`[[server.api_keys]]`); any key set means every API
    /// request needs one.
    pub api_keys: Vec<ApiKeySettings>,
    /// Without an API key the API answers only loopback peers, unless this is true.
    pub allow_public_api_without_key: bool,
    /// Origins allowed to open WebSocket connections (`https://app.example.com`, `*` wildcards
    /// allowed); empty allows every origin. Requests without an `Origin` header (non-browser
    /// clients) are always allowed: the header only protects browsers' users.
    pub allowed_origins: Vec<String>,
    /// Origins whose pages may call the HTTP API (CORS); empty sends no CORS headers.
    pub cors_origins: Vec<String>,
    /// Reverse proxies (addresses or ranges such as `"10.0.0.0/8"`) whose `X-Forwarded-For` is
    /// believed: the client address (per-address limits, loopback rule, connection list) is then
    /// the right-most forwarded address that is not a trusted proxy. Empty: the peer address.
    pub trusted_proxies: Vec<String>,
    /// How long shutdown waits for connections to drain after sending them 1001.
    #[serde(with = "duration_str")]
    pub shutdown_timeout: Duration,
    /// Largest HTTP API request body, in bytes.
    pub max_body_bytes: usize,
}

/// `[[server.api_keys]]`: one key and what it may do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// A label for logs and docs ("backend", "grafana"); never the key itself.
    #[serde(default)]
    pub name: String,
    /// The secret, at least 16 characters.
    pub key: String,
    /// What the key may do.
    pub scopes: Vec<Scope>,
}

/// What an API key may do. `admin` includes the other two.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// `POST /api/v1/publish` and `/broadcast`.
    Publish,
    /// Stats, metrics, health, channel and connection lists, history.
    Read,
    /// Everything, including `/api/v1/admin/*` (the `/admin` dashboard).
    Admin,
}

impl Scope {
    /// The name used in config and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// `[websocket]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketSettings {
    /// How often `heartbeat` frames go to every client; "0s" turns them off.
    #[serde(with = "duration_str")]
    pub heartbeat_interval: Duration,
    /// How often the hub sends a WebSocket ping to each client.
    #[serde(with = "duration_str")]
    pub ping_interval: Duration,
    /// A client that sends nothing (not even a pong) for this long is closed with 1008.
    #[serde(with = "duration_str")]
    pub read_timeout: Duration,
    /// A write that cannot finish in this long closes the client as a slow consumer (4008).
    #[serde(with = "duration_str")]
    pub write_timeout: Duration,
    /// Largest client frame or message, in bytes; larger ones close the connection with 1009.
    pub max_message_bytes: usize,
    /// Bad client frames allowed per minute before the connection is closed with 1008.
    pub max_errors_per_minute: u32,
    /// The welcome frame's `message`.
    pub welcome_message: String,
    /// The welcome frame's `capabilities`.
    pub capabilities: Vec<String>,
    /// A path serving an echo endpoint: every text and binary message comes back as it was sent,
    /// through the same codec, limits and close handling, with no welcome and no JSON. For
    /// protocol conformance runs (scripts/autobahn); unset (off) by default.
    pub echo_path: Option<String>,
    /// Offer permessage-deflate (RFC 7692) to clients that ask for it (browsers do). Each
    /// publication is compressed once for all of them, not once per connection.
    pub compression: bool,
    /// zlib level of that compression, 0 (store only) to 9 (smallest, slowest).
    pub compression_level: u32,
    /// Publications smaller than this many bytes go out uncompressed.
    pub compression_min_bytes: usize,
}

/// `[limits]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Frames a connection may have queued before `overflow` applies.
    pub outbox_max_messages: usize,
    /// Bytes a connection may have queued before `overflow` applies.
    pub outbox_max_bytes: usize,
    /// `"close"` (slow consumer, 4008) or `"drop_oldest"`.
    pub overflow: Overflow,
    /// Channels one connection may subscribe to.
    pub max_channels_per_connection: usize,
    /// Longest channel name, in bytes.
    pub max_channel_name_length: usize,
    /// New WebSocket connections one IP address may open per minute (HTTP 429 beyond); 0: no limit.
    pub connections_per_ip_per_minute: u32,
    /// Frames one connection may send per minute (`rate_limited` beyond; closed with 4029 at
    /// twice the limit); 0: no limit.
    pub client_frames_per_minute: u32,
    /// Publishes per minute per API key (per client address without keys) on the HTTP API
    /// (HTTP 429 beyond); 0: no limit.
    pub publishes_per_key_per_minute: u32,
    /// Most WebSocket connections on this node (HTTP 503 beyond); 0: no limit.
    pub max_connections: usize,
    /// Most WebSocket connections one user (token `sub`) may hold on this node; 0: no limit.
    pub max_connections_per_user: usize,
    /// How long a new TCP connection may take to send its HTTP request headers (slowloris).
    #[serde(with = "duration_str")]
    pub handshake_timeout: Duration,
}

/// What a full outbox does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Close the client as a slow consumer.
    Close,
    /// Drop the oldest queued frames.
    DropOldest,
}

impl ServerSettings {
    /// Every configured key with its scopes: `api_key` (all scopes) first, then `api_keys`.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &[Scope])> {
        let legacy = self.api_key.as_deref().map(|k| (k, &[Scope::Admin][..]));
        legacy.into_iter().chain(self.api_keys.iter().map(|k| (k.key.as_str(), k.scopes.as_slice())))
    }

    /// Whether the API asks for a key at all.
    pub fn has_api_keys(&self) -> bool {
        self.keys().next().is_some()
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            bind: "127.0.0.1:8000".parse().expect("valid literal address"),
            ws_aliases: vec!["/ws/live".into(), "/ws/ui".into()],
            auto_subscribe: BTreeMap::new(),
            api_key: None,
            api_keys: Vec::new(),
            allowed_origins: Vec::new(),
            cors_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            allow_public_api_without_key: false,
            shutdown_timeout: Duration::from_secs(10),
            max_body_bytes: 1 << 20,
        }
    }
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        let hub_deflate = hubbub::config::DeflateConfig::default();
        WebSocketSettings {
            heartbeat_interval: Duration::from_secs(30),
            ping_interval: Duration::from_secs(54),
            read_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            max_message_bytes: 64 << 10,
            max_errors_per_minute: 30,
            welcome_message: "Connected to hubbub".into(),
            capabilities: ["subscribe", "unsubscribe", "subscribe_room", "unsubscribe_room", "ping", "heartbeat"]
                .map(String::from)
                .to_vec(),
            echo_path: None,
            compression: true,
            compression_level: hub_deflate.level,
            compression_min_bytes: hub_deflate.min_bytes,
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        let hub = HubConfig::default();
        LimitSettings {
            outbox_max_messages: hub.outbox_max_messages,
            outbox_max_bytes: hub.outbox_max_bytes,
            overflow: Overflow::Close,
            max_channels_per_connection: hub.max_channels_per_connection,
            max_channel_name_length: hub.max_channel_name_length,
            connections_per_ip_per_minute: 0,
            client_frames_per_minute: 0,
            publishes_per_key_per_minute: 0,
            max_connections: 0,
            max_connections_per_user: 0,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

fn needs_token(a: Access) -> bool {
    matches!(a, Access::Authenticated | Access::Token)
}

/// Overrides given on the command line (the top layer).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--bind`
    pub bind: Option<SocketAddr>,
}

impl Settings {
    /// Loads defaults, then `file` (if any), then `HUBBUB_*` variables, then `overrides`, and
    /// checks the result. Environment keys use `__` between levels: `HUBBUB_SERVER__BIND`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Settings> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                anyhow::bail!("config file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file(path));
        }
        // HUBBUB_CONFIG, HUBBUB_LOG and HUBBUB_API_KEY (the key `pub`/`demo` send) are read by
        // the CLI itself, not settings keys; the server's key is HUBBUB_SERVER__API_KEY.
        fig = fig.merge(Env::prefixed("HUBBUB_").ignore(&["config", "log", "api_key"]).split("__"));
        if let Some(bind) = overrides.bind {
            fig = fig.merge(Serialized::default("server.bind", bind));
        }
        let settings: Settings = fig.extract().map_err(|e| anyhow::anyhow!(describe(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Settings from TOML text alone (defaults below it; no environment, no flags): what
    /// `hubbub config check` does with a file, for tests and the config fuzz target.
    pub fn from_toml(text: &str) -> anyhow::Result<Settings> {
        let fig = Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(text));
        let settings: Settings = fig.extract().map_err(|e| anyhow::anyhow!(describe(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values no type can express.
    pub fn validate(&self) -> anyhow::Result<()> {
        let ws = &self.websocket;
        let mut paths = vec!["/ws".to_string()];
        paths.extend(self.server.ws_aliases.iter().cloned());
        paths.extend(self.websocket.echo_path.iter().cloned());
        for (i, p) in paths.iter().enumerate() {
            anyhow::ensure!(
                p.starts_with('/') && p.len() > 1,
                "server.ws_aliases: {p:?} must start with '/' and name a path"
            );
            anyhow::ensure!(
                !p.starts_with("/api/")
                    && !["/ws/stats", "/ws/test", "/client.js", "/metrics", "/admin"].contains(&p.as_str()),
                "server.ws_aliases: {p:?} collides with an HTTP API path"
            );
            anyhow::ensure!(!paths[..i].contains(p), "server.ws_aliases: {p:?} is listed twice (or repeats /ws)");
        }
        for (path, channels) in &self.server.auto_subscribe {
            anyhow::ensure!(
                paths.contains(path),
                "server.auto_subscribe: {path:?} is not /ws or one of server.ws_aliases"
            );
            anyhow::ensure!(
                channels.len() <= self.limits.max_channels_per_connection,
                "server.auto_subscribe: {path:?} lists more channels than limits.max_channels_per_connection"
            );
            for ch in channels {
                hubbub::channel_name::validate(ch, self.limits.max_channel_name_length)
                    .map_err(|e| anyhow::anyhow!("server.auto_subscribe: {path:?}: {e}"))?;
            }
        }
        anyhow::ensure!(!ws.read_timeout.is_zero(), "websocket.read_timeout must be more than 0s");
        anyhow::ensure!(!ws.write_timeout.is_zero(), "websocket.write_timeout must be more than 0s");
        anyhow::ensure!(
            !ws.ping_interval.is_zero() && ws.ping_interval < ws.read_timeout,
            "websocket.ping_interval ({}) must be more than 0s and less than websocket.read_timeout ({})",
            humantime::format_duration(ws.ping_interval),
            humantime::format_duration(ws.read_timeout)
        );
        anyhow::ensure!(ws.max_message_bytes >= 125, "websocket.max_message_bytes must be at least 125");
        anyhow::ensure!(ws.compression_level <= 9, "websocket.compression_level must be 0 to 9");
        crate::access::proxy::TrustedProxies::parse(&self.server.trusted_proxies).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(self.limits.outbox_max_messages >= 1, "limits.outbox_max_messages must be at least 1");
        anyhow::ensure!(self.limits.outbox_max_bytes >= 1024, "limits.outbox_max_bytes must be at least 1024");
        anyhow::ensure!(
            self.limits.max_channels_per_connection >= 1,
            "limits.max_channels_per_connection must be at least 1"
        );
        anyhow::ensure!(
            (1..=1024).contains(&self.limits.max_channel_name_length),
            "limits.max_channel_name_length must be between 1 and 1024"
        );
        for (i, c) in self.channels.iter().enumerate() {
            let at = format!("channels[{i}] ({:?})", c.pattern);
            anyhow::ensure!(!c.pattern.is_empty(), "{at}: pattern is empty");
            let literal = c.pattern.replace('*', "x");
            hubbub::channel_name::validate(&literal, 1024).map_err(|e| anyhow::anyhow!("{at}: pattern: {e}"))?;
            anyhow::ensure!(c.history_size <= 1_000_000, "{at}: history_size must be 0 to 1000000");
            anyhow::ensure!(
                c.history_size == 0 || !c.history_ttl.is_zero(),
                "{at}: history_ttl must be more than 0s when history_size is set"
            );
            anyhow::ensure!(
                self.auth.enabled() || !needs_token(c.subscribe) && !needs_token(c.publish),
                "{at}: subscribe or publish needs a token, but [auth] has no hmac_secret, public_key_file or jwks_url"
            );
        }
        let auth = &self.auth;
        anyhow::ensure!(
            !auth.required || auth.enabled(),
            "auth.required needs hmac_secret, public_key_file or jwks_url"
        );
        if let Some(secret) = &auth.hmac_secret {
            anyhow::ensure!(secret.len() >= 32, "auth.hmac_secret must be at least 32 bytes (RFC 7518 §3.2 for HS256)");
        }
        if let Some(path) = &auth.public_key_file {
            anyhow::ensure!(path.is_file(), "auth.public_key_file: {} is not a readable file", path.display());
        }
        if let Some(url) = &auth.jwks_url {
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "auth.jwks_url must start with http:// or https://"
            );
        }
        anyhow::ensure!(!auth.token_timeout.is_zero(), "auth.token_timeout must be more than 0s");
        anyhow::ensure!(auth.jwks_refresh >= Duration::from_secs(1), "auth.jwks_refresh must be at least 1s");
        anyhow::ensure!(!self.limits.handshake_timeout.is_zero(), "limits.handshake_timeout must be more than 0s");
        match (&self.tls.cert, &self.tls.key) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                anyhow::ensure!(cert.is_file(), "tls.cert: {} is not a readable file", cert.display());
                anyhow::ensure!(key.is_file(), "tls.key: {} is not a readable file", key.display());
            }
            _ => anyhow::bail!("tls.cert and tls.key go together: set both, or neither"),
        }
        anyhow::ensure!(self.history.max_recovery >= 1, "history.max_recovery must be at least 1");
        if self.broker == BrokerKind::Redis {
            anyhow::ensure!(
                self.history.store == Store::Memory,
                "history.store = \"disk\" cannot be used with broker = \"redis\": with Redis, history lives in Redis"
            );
            anyhow::ensure!(
                self.redis.url.starts_with("redis://") || self.redis.url.starts_with("rediss://"),
                "redis.url must start with redis:// or rediss:// (TLS)"
            );
            for s in &self.redis.sentinels {
                anyhow::ensure!(s.starts_with("redis://"), "redis.sentinels: {s:?} must start with redis://");
            }
            anyhow::ensure!(!self.redis.sentinel_service.is_empty(), "redis.sentinel_service must not be empty");
            if let Some(ca) = &self.redis.tls_ca_file {
                anyhow::ensure!(ca.is_file(), "redis.tls_ca_file: {} is not a readable file", ca.display());
                anyhow::ensure!(
                    self.redis.url.starts_with("rediss://"),
                    "redis.tls_ca_file is set but redis.url is not rediss:// (TLS)"
                );
            }
            anyhow::ensure!(
                !self.redis.prefix.is_empty() && !self.redis.prefix.contains(char::is_whitespace),
                "redis.prefix must be non-empty, without spaces"
            );
        }
        if let Some(key) = &self.server.api_key {
            anyhow::ensure!(key.len() >= 16, "server.api_key must be at least 16 characters");
        }
        for (i, k) in self.server.api_keys.iter().enumerate() {
            let at = format!("server.api_keys[{i}] ({:?})", k.name);
            anyhow::ensure!(k.key.len() >= 16, "{at}: key must be at least 16 characters");
            anyhow::ensure!(!k.scopes.is_empty(), "{at}: scopes is empty; list publish, read and/or admin");
            let earlier =
                self.server.api_keys[..i].iter().map(|e| e.key.as_str()).chain(self.server.api_key.as_deref());
            anyhow::ensure!(!earlier.into_iter().any(|e| e == k.key), "{at}: the same key is listed twice");
        }
        Ok(())
    }

    /// The part the hub library acts on.
    pub fn hub_config(&self) -> HubConfig {
        HubConfig {
            outbox_max_messages: self.limits.outbox_max_messages,
            outbox_max_bytes: self.limits.outbox_max_bytes,
            overflow: match self.limits.overflow {
                Overflow::Close => OverflowPolicy::Close,
                Overflow::DropOldest => OverflowPolicy::DropOldest,
            },
            max_channels_per_connection: self.limits.max_channels_per_connection,
            max_channel_name_length: self.limits.max_channel_name_length,
            heartbeat_interval: self.websocket.heartbeat_interval,
            channels: self
                .channels
                .iter()
                .map(|c| ChannelRule {
                    pattern: c.pattern.clone(),
                    history_size: c.history_size,
                    history_ttl: c.history_ttl,
                    max_subscribers: c.max_subscribers,
                })
                .collect(),
            max_recovery: self.history.max_recovery,
            idempotency_window: self.publish.idempotency_window,
            idempotency_max_keys: self.publish.idempotency_max_keys,
            deflate: hubbub::config::DeflateConfig {
                level: self.websocket.compression_level,
                min_bytes: self.websocket.compression_min_bytes,
            },
        }
    }

    /// The effective settings as TOML (what `hubbub config check` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# could not render settings: {e}"))
    }
}

fn describe(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let key = if e.path.is_empty() { String::new() } else { format!("{}: ", e.path.join(".")) };
            let from = e.metadata.as_ref().map(|m| format!(" (from {})", m.name)).unwrap_or_default();
            format!("{key}{}{from}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Durations as humane strings ("30s", "10m", "1h 30m").
mod duration_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a duration ({e}); write e.g. \"30s\" or \"5m\""))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_str(toml: &str) -> anyhow::Result<Settings> {
        let mut f = tempfile(toml);
        f.flush().unwrap();
        Settings::load(Some(&f.path), &Overrides::default())
    }

    struct Temp {
        path: std::path::PathBuf,
        file: std::fs::File,
    }
    impl Write for Temp {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.file.write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.file.flush()
        }
    }
    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
    fn tempfile(text: &str) -> Temp {
        let path = std::env::temp_dir().join(format!("hubbub-test-{}.toml", uuid_like()));
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(text.as_bytes()).unwrap();
        Temp { path, file }
    }
    fn uuid_like() -> u128 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let s = Settings::default();
        s.validate().unwrap();
        let back: Settings = toml::from_str(&s.to_toml()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn file_values_apply() {
        let s = load_str("[websocket]\nheartbeat_interval = \"5s\"\nmax_message_bytes = 512\n").unwrap();
        assert_eq!(s.websocket.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(s.websocket.max_message_bytes, 512);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = load_str("[websocket]\nheartbeat = \"5s\"\n").unwrap_err().to_string();
        assert!(e.contains("heartbeat"), "{e}");
        let e = load_str("[websocket]\nread_timeout = \"soon\"\n").unwrap_err().to_string();
        assert!(e.contains("websocket.read_timeout"), "{e}");
        let e = load_str("[limits]\noverflow = \"explode\"\n").unwrap_err().to_string();
        assert!(e.contains("limits.overflow"), "{e}");
        let e = load_str("[websocket]\nping_interval = \"2m\"\n").unwrap_err().to_string();
        assert!(e.contains("ping_interval"), "{e}");
    }

    #[test]
    fn paths_and_auto_subscribe_are_checked() {
        let e = load_str("[server]\nws_aliases = [\"/ws/live\", \"/ws/live\"]\n").unwrap_err().to_string();
        assert!(e.contains("listed twice"), "{e}");
        let e = load_str("[server]\nws_aliases = [\"/ws/stats\"]\n").unwrap_err().to_string();
        assert!(e.contains("collides"), "{e}");
        let e = load_str("[server.auto_subscribe]\n\"/ws/ui\" = [\"bad name\"]\n").unwrap_err().to_string();
        assert!(e.contains("server.auto_subscribe"), "{e}");
        assert!(load_str("[server.auto_subscribe]\n\"/ws/ui\" = [\"ui\"]\n").is_ok());
    }

    #[test]
    fn flags_beat_file() {
        let f = tempfile("[server]\nbind = \"127.0.0.1:9001\"\n");
        let o = Overrides { bind: Some("127.0.0.1:9002".parse().unwrap()) };
        assert_eq!(Settings::load(Some(&f.path), &o).unwrap().server.bind.port(), 9002);
        assert_eq!(Settings::load(Some(&f.path), &Overrides::default()).unwrap().server.bind.port(), 9001);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        // The config fuzz target in miniature, in every test run: any value under any known key
        // loads or is refused with a message, never a panic.
        #[test]
        fn any_value_under_a_known_key_loads_or_is_refused(
            section in proptest::sample::select(vec!["server", "websocket", "limits", "history", "publish", "auth", "redis"]),
            key in proptest::sample::select(vec!["bind", "api_key", "read_timeout", "max_message_bytes", "overflow", "store", "hmac_secret", "jwks_url", "required", "handshake_timeout", "max_connections", "echo_path", "allowed_origins", "url"]),
            value in proptest::sample::select(vec!["0", "-1", "18446744073709551616", "\"\"", "\"0s\"", "\"5m\"", "\"x\"", "true", "[]", "[\"/a\"]", "{}", "1.5"]),
        ) {
            let text = format!("[{section}]\n{key} = {value}\n");
            if let Err(e) = Settings::from_toml(&text) {
                proptest::prop_assert!(!e.to_string().is_empty());
            }
        }

        #[test]
        fn any_text_loads_or_is_refused(text in "\\PC{0,120}") {
            let _ = Settings::from_toml(&text);
        }
    }
}
