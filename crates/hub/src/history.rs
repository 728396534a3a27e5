//! [`HistoryBuffer`]: one channel's recent publications, bounded by count and age.
//!
//! A plain data structure: no locks, no IO, no clock of its own (callers pass `now`), so it is
//! unit-tested alone. Locking lives with whoever owns it (the broker's per-channel stream).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// One stored publication.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its offset in the channel.
    pub offset: u64,
    /// The complete WebSocket frame, as live subscribers got it.
    pub frame: Bytes,
    /// When it was stored, for TTL expiry.
    pub stored_at: Instant,
}

/// Why a catch-up from an offset is impossible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// Entries after the requested offset were trimmed (size) or expired (TTL).
    TooOld,
    /// The requested offset is beyond the last published one.
    FromTheFuture,
}

/// A channel's bounded history.
#[derive(Debug)]
pub struct HistoryBuffer {
    entries: VecDeque<Entry>,
    max_len: usize,
    ttl: Duration,
    /// The last offset ever stored, even if since trimmed.
    last_offset: u64,
}

impl HistoryBuffer {
    /// An empty history keeping at most `max_len` entries, each for at most `ttl`.
    pub fn new(max_len: usize, ttl: Duration) -> HistoryBuffer {
        HistoryBuffer { entries: VecDeque::new(), max_len: max_len.max(1), ttl, last_offset: 0 }
    }

    /// Starts the history after `offset` (a stream restored from disk or Redis).
    pub fn starting_after(mut self, offset: u64) -> HistoryBuffer {
        self.last_offset = self.last_offset.max(offset);
        self
    }

    /// Appends the publication at `offset` (which must be the next one) and trims.
    pub fn push(&mut self, offset: u64, frame: Bytes, now: Instant) {
        debug_assert!(offset > self.last_offset, "offsets must increase");
        self.last_offset = offset;
        self.entries.push_back(Entry { offset, frame, stored_at: now });
        while self.entries.len() > self.max_len {
            self.entries.pop_front();
        }
        self.expire(now);
    }

    /// Puts back an entry loaded from a journal (offsets ascending; TTL and size still apply).
    pub fn restore(&mut self, offset: u64, frame: Bytes, stored_at: Instant) {
        if offset > self.last_offset {
            self.push(offset, frame, stored_at);
        }
    }

    /// The oldest offset held, if any.
    pub fn first_offset(&self) -> Option<u64> {
        self.entries.front().map(|e| e.offset)
    }

    /// Drops entries older than the TTL.
    pub fn expire(&mut self, now: Instant) {
        while let Some(front) = self.entries.front() {
            if now.saturating_duration_since(front.stored_at) >= self.ttl {
                self.entries.pop_front();
            } else {
                break;
            }
        }
    }

    /// Every entry after `offset`, oldest first, at most `limit`; or why the entries right after
    /// `offset` are gone. `since(last_offset)` is an empty success.
    pub fn since(&mut self, offset: u64, limit: usize, now: Instant) -> Result<Vec<Entry>, Gap> {
        self.expire(now);
        if offset > self.last_offset {
            return Err(Gap::FromTheFuture);
        }
        if offset == self.last_offset {
            return Ok(Vec::new());
        }
        match self.entries.front() {
            Some(first) if first.offset <= offset + 1 => {}
            _ => return Err(Gap::TooOld),
        }
        let skip = (offset + 1 - self.entries[0].offset) as usize;
        Ok(self.entries.iter().skip(skip).take(limit).cloned().collect())
    }

    /// The oldest `limit` entries held, oldest first.
    pub fn oldest(&mut self, limit: usize, now: Instant) -> Vec<Entry> {
        self.expire(now);
        self.entries.iter().take(limit).cloned().collect()
    }

    /// The newest `limit` entries, newest first.
    pub fn latest(&mut self, limit: usize, now: Instant) -> Vec<Entry> {
        self.expire(now);
        self.entries.iter().rev().take(limit).cloned().collect()
    }

    /// The last offset stored.
    pub fn last_offset(&self) -> u64 {
        self.last_offset
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(n: u64, max: usize, ttl: Duration, now: Instant) -> HistoryBuffer {
        let mut h = HistoryBuffer::new(max, ttl);
        for o in 1..=n {
            h.push(o, Bytes::from(o.to_string()), now);
        }
        h
    }

    fn offsets(v: &[Entry]) -> Vec<u64> {
        v.iter().map(|e| e.offset).collect()
    }

    #[test]
    fn since_returns_what_follows() {
        let now = Instant::now();
        let mut h = filled(5, 10, Duration::from_secs(60), now);
        assert_eq!(offsets(&h.since(2, 100, now).unwrap()), vec![3, 4, 5]);
        assert_eq!(offsets(&h.since(0, 2, now).unwrap()), vec![1, 2]);
        assert!(h.since(5, 100, now).unwrap().is_empty());
        assert_eq!(h.since(6, 100, now).unwrap_err(), Gap::FromTheFuture);
    }

    #[test]
    fn size_trimming_makes_old_positions_too_old() {
        let now = Instant::now();
        let mut h = filled(10, 3, Duration::from_secs(60), now);
        assert_eq!(h.len(), 3);
        assert_eq!(offsets(&h.since(7, 100, now).unwrap()), vec![8, 9, 10]);
        assert_eq!(h.since(6, 100, now).unwrap_err(), Gap::TooOld);
    }

    #[test]
    fn ttl_expiry() {
        let t0 = Instant::now();
        let mut h = HistoryBuffer::new(100, Duration::from_secs(10));
        h.push(1, Bytes::new(), t0);
        h.push(2, Bytes::new(), t0 + Duration::from_secs(5));
        let later = t0 + Duration::from_secs(11);
        assert_eq!(h.since(0, 10, later).unwrap_err(), Gap::TooOld);
        assert_eq!(offsets(&h.since(1, 10, later).unwrap()), vec![2]);
        let much_later = t0 + Duration::from_secs(16);
        assert!(h.since(2, 10, much_later).unwrap().is_empty(), "caught up is fine even when empty");
        assert_eq!(h.since(1, 10, much_later).unwrap_err(), Gap::TooOld);
    }

    #[test]
    fn restored_stream_continues_its_offsets() {
        let now = Instant::now();
        let mut h = HistoryBuffer::new(10, Duration::from_secs(60)).starting_after(41);
        assert!(h.since(41, 10, now).unwrap().is_empty());
        h.push(42, Bytes::new(), now);
        assert_eq!(offsets(&h.since(41, 10, now).unwrap()), vec![42]);
        assert_eq!(h.since(40, 10, now).unwrap_err(), Gap::TooOld);
    }
}
