//! Remembered publish results by idempotency key: a retry within the window gets the first result
//! and publishes nothing; a key reused for a different request is refused.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::hub::{ChannelReceipt, PublishError};

pub(crate) type PublishCell = Arc<OnceCell<Vec<ChannelReceipt>>>;
type KeyMap = HashMap<String, (Instant, u64, PublishCell)>;

/// Remembered publish results by idempotency key, oldest first for expiry.
#[derive(Default)]
pub(crate) struct Idempotency {
    inner: std::sync::Mutex<(KeyMap, VecDeque<(Instant, String)>)>,
}

impl Idempotency {
    /// The result cell for `key`: shared by every publish with that key within the window, so
    /// concurrent retries wait for the first instead of publishing again.
    /// `fingerprint` identifies the request (channels and event): a key reused for a different
    /// request is refused rather than silently answered with another request's result.
    pub(crate) fn cell(
        &self,
        key: &str,
        fingerprint: u64,
        window: Duration,
        max_keys: usize,
    ) -> Result<PublishCell, PublishError> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some((at, fp, cell)) = g.0.get(key)
            && now.duration_since(*at) < window
        {
            if *fp != fingerprint {
                return Err(PublishError::KeyReused(key.to_owned()));
            }
            return Ok(cell.clone());
        }
        let cell = PublishCell::default();
        g.0.insert(key.to_owned(), (now, fingerprint, cell.clone()));
        g.1.push_back((now, key.to_owned()));
        while g.0.len() > max_keys.max(1) {
            let Some((at, old)) = g.1.pop_front() else { break };
            if g.0.get(&old).is_some_and(|(t, _, _)| *t == at) {
                g.0.remove(&old);
            }
        }
        Ok(cell)
    }

    pub(crate) fn expire(&self, window: Duration) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        while let Some((at, key)) = g.1.front().cloned() {
            if now.duration_since(at) < window {
                break;
            }
            g.1.pop_front();
            if g.0.get(&key).is_some_and(|(t, _, _)| *t == at) {
                g.0.remove(&key);
            }
        }
    }
}
