//! Who a client is and what it may do: token verification ([`jwt`], with [`jwks`] for key sets),
//! channel permissions ([`policy`]) and rate limits ([`rate`]). The HTTP API's keys and scopes
//! live in `http::auth`; everything here is about WebSocket clients, plus the API's publish rate.

pub mod jwks;
pub mod jwt;
pub mod policy;
pub mod proxy;
pub mod rate;
pub mod rejections;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::AcqRel, Ordering::Acquire};
use std::sync::{Arc, Mutex};

pub use jwt::{Identity, TokenError, Verifier};

use crate::settings::Settings;

/// Everything the handshake, the sessions and the API consult, built once from the settings.
pub struct Access {
    /// Checks tokens; `None` when `[auth]` configures no key.
    pub verifier: Option<Verifier>,
    /// New WebSocket connections per client address per minute.
    pub connects: rate::Window<std::net::IpAddr>,
    /// HTTP publishes per API key (or client address) per minute.
    pub publishes: rate::Window<String>,
    /// Open connections per user, for `limits.max_connections_per_user`.
    users: Mutex<HashMap<Arc<str>, usize>>,
    /// `server.trusted_proxies`: whose `X-Forwarded-For` names the client.
    pub proxies: proxy::TrustedProxies,
    /// WebSocket connections on this node, handshakes in flight included, for
    /// `limits.max_connections`. Counted here rather than read from the registry, which learns
    /// of a connection only after its upgrade completes, so concurrent upgrades cannot all pass.
    connections: AtomicUsize,
    /// How often each limit refused something (`hubbub_limit_rejections_total`).
    pub rejections: rejections::Rejections,
}

impl Access {
    /// Builds the verifier (loading the public key file, starting the JWKS refresher).
    pub fn new(settings: &Settings) -> anyhow::Result<Access> {
        let verifier = if settings.auth.enabled() { Some(Verifier::new(&settings.auth)?) } else { None };
        Ok(Access {
            verifier,
            connects: rate::Window::new(settings.limits.connections_per_ip_per_minute),
            publishes: rate::Window::new(settings.limits.publishes_per_key_per_minute),
            users: Mutex::new(HashMap::new()),
            connections: AtomicUsize::new(0),
            rejections: rejections::Rejections::default(),
            proxies: proxy::TrustedProxies::parse(&settings.server.trusted_proxies).map_err(anyhow::Error::msg)?,
        })
    }

    /// Counts one more connection for `user`, unless that would exceed `max` (0: no limit).
    /// The returned guard gives the slot back when dropped.
    pub fn claim_user_slot(self: &Arc<Self>, user: &str, max: usize) -> Option<UserSlot> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let n = users.entry(Arc::from(user)).or_insert(0);
        if max > 0 && *n >= max {
            if *n == 0 {
                users.remove(user);
            }
            return None;
        }
        *n += 1;
        Some(UserSlot { access: self.clone(), user: Arc::from(user) })
    }

    /// Takes one of the node's `max` connection slots (0: no limit), or `None` when all are taken.
    pub fn claim_connection_slot(self: &Arc<Self>, max: usize) -> Option<ConnectionSlot> {
        self.connections.fetch_update(AcqRel, Acquire, |n| (max == 0 || n < max).then_some(n + 1)).ok()?;
        Some(ConnectionSlot { access: self.clone() })
    }

    /// The client's address for a request from `peer` (the forwarded one behind a trusted proxy;
    /// its port is then unknown and given as 0).
    pub fn client_addr(&self, peer: std::net::SocketAddr, headers: &axum::http::HeaderMap) -> std::net::SocketAddr {
        let ip = self.proxies.client_ip(peer.ip(), headers);
        if ip == peer.ip() { peer } else { std::net::SocketAddr::new(ip, 0) }
    }
}

/// One of the node's connection slots, held from the upgrade request to the end of the session;
/// released on drop.
pub struct ConnectionSlot {
    access: Arc<Access>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.access.connections.fetch_sub(1, AcqRel);
    }
}

/// One of a user's connection slots; released on drop.
pub struct UserSlot {
    access: Arc<Access>,
    user: Arc<str>,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut users = self.access.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = users.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                users.remove(&self.user);
            }
        }
    }
}
