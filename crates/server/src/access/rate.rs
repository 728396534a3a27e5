//! Fixed one-minute windows per key: "at most N per minute", with an exact `Retry-After`.
//!
//! A window per key rather than a token bucket because the limits are stated per minute (seed 001:
//! 10 connections per IP per minute, 100 messages per client per minute) and a client told
//! "retry after 23 s" can act on it. Entries whose window ended are swept when the map grows, so
//! the map holds at most the keys seen in the last minute (plus `SWEEP_AT`).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(60);
const SWEEP_AT: usize = 4096;

/// At most `limit` events per key per minute; a limit of 0 allows everything.
pub struct Window<K> {
    limit: u32,
    counts: Mutex<HashMap<K, (Instant, u32)>>,
}

impl<K: Hash + Eq + Clone> Window<K> {
    /// A limiter allowing `limit` per minute per key.
    pub fn new(limit: u32) -> Window<K> {
        Window { limit, counts: Mutex::new(HashMap::new()) }
    }

    /// Counts one event for `key`; `Err(wait)` when the key is over its limit until `wait` passes.
    pub fn hit(&self, key: &K) -> Result<(), Duration> {
        self.hit_at(key, Instant::now())
    }

    fn hit_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        if self.limit == 0 {
            return Ok(());
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.len() >= SWEEP_AT && !counts.contains_key(key) {
            counts.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let (start, n) = counts.entry(key.clone()).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            *n = 0;
        }
        if *n >= self.limit {
            return Err(WINDOW - now.duration_since(*start));
        }
        *n += 1;
        Ok(())
    }
}

/// The same rule for one connection's own frames, without a map or a lock.
#[derive(Debug)]
pub struct Counter {
    start: Instant,
    n: u32,
}

impl Counter {
    /// A counter whose first window starts now.
    pub fn new(now: Instant) -> Counter {
        Counter { start: now, n: 0 }
    }

    /// Counts one event; returns how many this window holds, this one included.
    pub fn hit(&mut self, now: Instant) -> u32 {
        if now.duration_since(self.start) >= WINDOW {
            self.start = now;
            self.n = 0;
        }
        self.n += 1;
        self.n
    }
}

/// Whole seconds for a `Retry-After` header, never 0.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_limit_per_minute_then_a_retry_time() {
        let w = Window::new(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(w.hit_at(&"a", t0).is_ok());
        }
        let wait = w.hit_at(&"a", t0 + Duration::from_secs(20)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(40));
        assert!(w.hit_at(&"b", t0).is_ok(), "keys are independent");
        assert!(w.hit_at(&"a", t0 + WINDOW).is_ok(), "a new window starts after a minute");
        assert!(Window::new(0).hit_at(&"a", t0).is_ok());
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn old_windows_are_swept_so_the_map_stays_bounded() {
        let w = Window::new(1);
        let t0 = Instant::now();
        for k in 0..SWEEP_AT as u32 {
            w.hit_at(&k, t0).unwrap();
        }
        w.hit_at(&u32::MAX, t0 + WINDOW).unwrap();
        assert_eq!(w.counts.lock().unwrap().len(), 1);
    }
}
