//! [`Journal`]: where a broker keeps history, epochs and ack cursors so they outlive the process.
//!
//! The trait lives here; the implementation that touches files (`hubbub-store`, over fjall) lives
//! in its own crate, because this library does no file IO. Without a journal, history is memory
//! only and a restart starts every channel in a new epoch.

use std::time::SystemTime;

use bytes::Bytes;

use crate::broker::BoxFuture;

/// Why the journal failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("history store: {0}")]
pub struct JournalError(pub String);

/// One stored publication, as loaded.
#[derive(Debug, Clone)]
pub struct RestoredEntry {
    /// Its offset.
    pub offset: u64,
    /// The delivered JSON.
    pub payload: Bytes,
    /// When it was first stored (TTL counts from here).
    pub stored_at: SystemTime,
}

/// One channel's stream, as loaded.
#[derive(Debug, Clone)]
pub struct RestoredStream {
    /// The channel.
    pub channel: String,
    /// Its epoch, unchanged across the restart.
    pub epoch: String,
    /// The last offset ever published on it.
    pub last_offset: u64,
    /// Stored publications, oldest first.
    pub entries: Vec<RestoredEntry>,
}

/// One ack cursor, as loaded.
#[derive(Debug, Clone)]
pub struct RestoredCursor {
    /// The durable client identity.
    pub identity: String,
    /// The channel.
    pub channel: String,
    /// The epoch the offset counts in.
    pub epoch: String,
    /// The last acknowledged offset.
    pub offset: u64,
}

/// Everything a journal holds.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// Streams with their history.
    pub streams: Vec<RestoredStream>,
    /// Ack cursors.
    pub cursors: Vec<RestoredCursor>,
}

/// Durable storage for a broker's streams and cursors.
///
/// Contract: `append`, `trim`, `remove_stream` and `set_cursor` hand their data to the operating
/// system before returning, so it survives the process being killed; [`Journal::sync`] makes
/// everything handed over so far survive a machine crash (fsync), and may share one fsync among
/// concurrent callers (group commit).
pub trait Journal: Send + Sync + 'static {
    /// Reads everything stored.
    fn load(&self) -> Result<Restored, JournalError>;
    /// Stores the publication at `offset` and moves the channel's last offset to it.
    fn append(
        &self,
        channel: &str,
        epoch: &str,
        offset: u64,
        payload: &[u8],
        stored_at: SystemTime,
    ) -> Result<(), JournalError>;
    /// Forgets the channel's publications up to and including `through`.
    fn trim(&self, channel: &str, through: u64) -> Result<(), JournalError>;
    /// Forgets a channel entirely (its next incarnation starts a new epoch).
    fn remove_stream(&self, channel: &str) -> Result<(), JournalError>;
    /// Stores an ack cursor.
    fn set_cursor(&self, identity: &str, channel: &str, epoch: &str, offset: u64) -> Result<(), JournalError>;
    /// Makes everything stored so far durable.
    fn sync(&self) -> BoxFuture<'_, Result<(), JournalError>>;
}
