//! hubbub's durable history store: [`DiskJournal`] implements the hub's
//! `Journal` (`hubbub::journal::Journal`) over fjall, an LSM-tree key-value store in safe Rust.
//!
//! Why fjall: the workload is append, trim and replay, which an LSM tree does with sequential
//! writes (see `../shared/reference/dependencies.md` for the comparison with redb). Every write
//! reaches the operating system before it returns (fjall's journal is flushed to OS buffers on each
//! write), so it survives `kill -9`; [`DiskJournal::sync`] adds an fsync, shared by every caller
//! waiting at that moment (group commit), for what must survive a machine crash.
//!
//! # Layout on disk
//! - keyspace `streams`: channel → epoch length (u8), epoch, last offset (u64 BE)
//! - keyspace `events`: channel, 0x00, offset (u64 BE) → stored-at Unix ms (u64 BE), payload JSON
//! - keyspace `cursors`: identity length (u16 BE), identity, channel → epoch length, epoch, offset
//!
//! Channel names never contain 0x00 (the hub allows a small ASCII set), so `channel, 0x00` is an
//! exact prefix; identities are length-prefixed because clients choose them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use hubbub::broker::BoxFuture;
use hubbub::journal::{Journal, JournalError, Restored, RestoredCursor, RestoredEntry, RestoredStream};
use tokio::sync::oneshot;

/// The fjall-backed journal.
pub struct DiskJournal {
    db: Database,
    streams: Keyspace,
    events: Keyspace,
    cursors: Keyspace,
    /// Per channel, the offset already trimmed through, so a trim only visits new keys.
    trimmed: Mutex<HashMap<String, u64>>,
    /// Sync requests for the group-commit thread.
    syncs: Mutex<mpsc::Sender<oneshot::Sender<Result<(), JournalError>>>>,
}

fn err(e: impl std::fmt::Display) -> JournalError {
    JournalError(e.to_string())
}

fn event_key(channel: &str, offset: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(channel.len() + 9);
    k.extend_from_slice(channel.as_bytes());
    k.push(0);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

fn position_value(epoch: &str, offset: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(epoch.len() + 9);
    v.push(epoch.len().min(255) as u8);
    v.extend_from_slice(&epoch.as_bytes()[..epoch.len().min(255)]);
    v.extend_from_slice(&offset.to_be_bytes());
    v
}

fn parse_position(v: &[u8]) -> Option<(String, u64)> {
    let n = *v.first()? as usize;
    let epoch = std::str::from_utf8(v.get(1..1 + n)?).ok()?.to_owned();
    let offset = u64::from_be_bytes(v.get(1 + n..9 + n)?.try_into().ok()?);
    Some((epoch, offset))
}

fn cursor_key(identity: &str, channel: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(identity.len() + channel.len() + 2);
    k.extend_from_slice(&(identity.len().min(u16::MAX as usize) as u16).to_be_bytes());
    k.extend_from_slice(identity.as_bytes());
    k.extend_from_slice(channel.as_bytes());
    k
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl DiskJournal {
    /// Opens (or creates) the store in `dir` and starts its group-commit thread.
    pub fn open(dir: &Path) -> Result<DiskJournal, JournalError> {
        let db = Database::builder(dir).open().map_err(|e| err(format!("cannot open {}: {e}", dir.display())))?;
        let streams = db.keyspace("streams", KeyspaceCreateOptions::default).map_err(err)?;
        let events = db.keyspace("events", KeyspaceCreateOptions::default).map_err(err)?;
        let cursors = db.keyspace("cursors", KeyspaceCreateOptions::default).map_err(err)?;
        let (tx, rx) = mpsc::channel::<oneshot::Sender<Result<(), JournalError>>>();
        let syncer = db.clone();
        std::thread::Builder::new()
            .name("hubbub-fsync".into())
            .spawn(move || group_commit(&syncer, &rx))
            .map_err(err)?;
        Ok(DiskJournal { db, streams, events, cursors, trimmed: Mutex::new(HashMap::new()), syncs: Mutex::new(tx) })
    }
}

/// Waits for sync requests; each fsync answers every request that arrived before it started.
fn group_commit(db: &Database, rx: &mpsc::Receiver<oneshot::Sender<Result<(), JournalError>>>) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        // Requests that arrive while this fsync runs share the next one.
        while let Ok(more) = rx.recv_timeout(Duration::ZERO) {
            waiting.push(more);
        }
        let result = db.persist(PersistMode::SyncAll).map_err(err);
        for w in waiting {
            let _ = w.send(result.clone());
        }
    }
}

impl Journal for DiskJournal {
    fn load(&self) -> Result<Restored, JournalError> {
        let mut restored = Restored::default();
        for kv in self.streams.iter() {
            let (k, v) = kv.into_inner().map_err(err)?;
            let channel = String::from_utf8_lossy(&k).into_owned();
            let Some((epoch, last_offset)) = parse_position(&v) else { continue };
            let mut prefix = channel.as_bytes().to_vec();
            prefix.push(0);
            let mut entries = Vec::new();
            for kv in self.events.prefix(&prefix) {
                let (k, v) = kv.into_inner().map_err(err)?;
                let (Some(off), Some(at)) = (k.get(prefix.len()..), v.get(..8)) else { continue };
                let offset = u64::from_be_bytes(off.try_into().map_err(err)?);
                let ms = u64::from_be_bytes(at.try_into().map_err(err)?);
                entries.push(RestoredEntry {
                    offset,
                    payload: Bytes::copy_from_slice(&v[8..]),
                    stored_at: SystemTime::UNIX_EPOCH + Duration::from_millis(ms),
                });
            }
            if let Some(first) = entries.first() {
                self.trimmed.lock().unwrap_or_else(|e| e.into_inner()).insert(channel.clone(), first.offset - 1);
            }
            restored.streams.push(RestoredStream { channel, epoch, last_offset, entries });
        }
        for kv in self.cursors.iter() {
            let (k, v) = kv.into_inner().map_err(err)?;
            let Some(n) = k.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize) else { continue };
            let (Some(identity), Some(channel)) = (k.get(2..2 + n), k.get(2 + n..)) else { continue };
            let Some((epoch, offset)) = parse_position(&v) else { continue };
            restored.cursors.push(RestoredCursor {
                identity: String::from_utf8_lossy(identity).into_owned(),
                channel: String::from_utf8_lossy(channel).into_owned(),
                epoch,
                offset,
            });
        }
        Ok(restored)
    }

    fn append(
        &self,
        channel: &str,
        epoch: &str,
        offset: u64,
        payload: &[u8],
        stored_at: SystemTime,
    ) -> Result<(), JournalError> {
        let mut value = Vec::with_capacity(payload.len() + 8);
        value.extend_from_slice(&unix_ms(stored_at).to_be_bytes());
        value.extend_from_slice(payload);
        // One batch: the event and the channel's new position land together or not at all.
        let mut batch = self.db.batch();
        batch.insert(&self.events, event_key(channel, offset), value);
        batch.insert(&self.streams, channel.as_bytes(), position_value(epoch, offset));
        batch.commit().map_err(err)
    }

    fn trim(&self, channel: &str, through: u64) -> Result<(), JournalError> {
        let mut trimmed = self.trimmed.lock().unwrap_or_else(|e| e.into_inner());
        let from = trimmed.get(channel).map_or(0, |t| t + 1);
        if from > through {
            return Ok(());
        }
        for offset in from..=through {
            self.events.remove(event_key(channel, offset)).map_err(err)?;
        }
        trimmed.insert(channel.to_owned(), through);
        Ok(())
    }

    fn remove_stream(&self, channel: &str) -> Result<(), JournalError> {
        let mut prefix = channel.as_bytes().to_vec();
        prefix.push(0);
        let keys: Vec<_> = self.events.prefix(&prefix).filter_map(|kv| kv.key().ok()).collect();
        for k in keys {
            self.events.remove(k).map_err(err)?;
        }
        self.streams.remove(channel.as_bytes()).map_err(err)?;
        self.trimmed.lock().unwrap_or_else(|e| e.into_inner()).remove(channel);
        Ok(())
    }

    fn set_cursor(&self, identity: &str, channel: &str, epoch: &str, offset: u64) -> Result<(), JournalError> {
        self.cursors.insert(cursor_key(identity, channel), position_value(epoch, offset)).map_err(err)
    }

    fn sync(&self) -> BoxFuture<'_, Result<(), JournalError>> {
        let (tx, rx) = oneshot::channel();
        let sent = self.syncs.lock().unwrap_or_else(|e| e.into_inner()).send(tx);
        Box::pin(async move {
            sent.map_err(|_| JournalError("the fsync thread has stopped".into()))?;
            rx.await.map_err(|_| JournalError("the fsync thread has stopped".into()))?
        })
    }
}

/// Shared handle, for callers that need the journal as `Arc<dyn Journal>`.
pub fn open(dir: &Path) -> Result<Arc<dyn Journal>, JournalError> {
    Ok(Arc::new(DiskJournal::open(dir)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("hubbub-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[tokio::test]
    async fn round_trips_streams_trims_and_cursors() {
        let dir = temp_dir("rt");
        {
            let j = DiskJournal::open(&dir).unwrap();
            for o in 1..=5 {
                j.append("ch", "ep1", o, format!("{{\"n\":{o}}}").as_bytes(), SystemTime::now()).unwrap();
            }
            j.trim("ch", 2).unwrap();
            j.set_cursor("alice", "ch", "ep1", 4).unwrap();
            j.append("gone", "ep2", 1, b"{}", SystemTime::now()).unwrap();
            j.remove_stream("gone").unwrap();
            j.sync().await.unwrap();
        }
        let j = DiskJournal::open(&dir).unwrap();
        let r = j.load().unwrap();
        assert_eq!(r.streams.len(), 1);
        let s = &r.streams[0];
        assert_eq!((s.channel.as_str(), s.epoch.as_str(), s.last_offset), ("ch", "ep1", 5));
        assert_eq!(s.entries.iter().map(|e| e.offset).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(&s.entries[0].payload[..], b"{\"n\":3}");
        assert_eq!(r.cursors.len(), 1);
        assert_eq!((r.cursors[0].identity.as_str(), r.cursors[0].offset), ("alice", 4));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
