//! What every request handler and session shares.

use std::sync::Arc;

use hubbub::Hub;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::Access;
use crate::settings::Settings;

/// Shared by the HTTP handlers and the WebSocket sessions.
#[derive(Clone)]
pub struct AppState {
    /// The hub.
    pub hub: Hub,
    /// The effective settings.
    pub settings: Arc<Settings>,
    /// Cancelled when shutdown begins; sessions then close with 1001.
    pub shutdown: CancellationToken,
    /// Every WebSocket session, so shutdown can wait for them to drain.
    pub sessions: TaskTracker,
    /// Tokens, permissions, rate limits.
    pub access: Arc<Access>,
}
