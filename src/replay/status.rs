//! Sync status from durable state: positions from the journal (`ACK`, segments), the cache's
//! applied LSN, and the replayer's last outcome kept in `replay.json` in the journal directory.
//! Nothing here comes from a counter that a restart resets.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Lsn;
use crate::error::{Error, Result};
use crate::journal::ack::now_ms;

/// File (in the journal directory) where the replayer keeps its last outcome.
pub const REPLAY_STATE_FILE: &str = "replay.json";

/// The last error the replayer met, kept until a success clears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncError {
    /// The error message.
    pub message: String,
    /// True if retrying can succeed (the target is busy, offline, read-only…).
    pub transient: bool,
    /// The LSN of the entry at fault, for a rejected entry.
    pub lsn: Option<Lsn>,
    /// A summary of the entry at fault.
    pub entry: Option<String>,
    /// When it happened, ms since the Unix epoch.
    pub at_ms: u64,
}

/// What the replayer persists after each sync attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayState {
    /// The target the replayer writes to.
    pub target: Option<PathBuf>,
    /// The last error, until a successful sync clears it.
    pub last_error: Option<SyncError>,
    /// When the current run of failures started (cleared by a success).
    pub failing_since_ms: Option<u64>,
    /// When a sync last succeeded (applied entries or confirmed there were none).
    pub last_success_ms: Option<u64>,
    /// The target's watermark as last seen.
    pub target_lsn: Option<Lsn>,
    /// Entries in the target's quarantine table for this journal, as last seen.
    pub quarantined: u64,
}

impl ReplayState {
    /// Reads `replay.json` from a journal directory (default state if absent or unreadable).
    pub fn load(journal_dir: &Path) -> ReplayState {
        fs::read(journal_dir.join(REPLAY_STATE_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Writes `replay.json` atomically (temporary file, fsync, rename).
    pub fn store(&self, journal_dir: &Path) -> Result<()> {
        let path = journal_dir.join(REPLAY_STATE_FILE);
        let tmp = journal_dir.join(format!("{REPLAY_STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).expect("state serialises");
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_data()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| Error::io("write replay state", &path, e))
    }

    /// Records a failure.
    pub(crate) fn failed(&mut self, e: &Error) {
        let (lsn, entry) = match e {
            Error::EntryRejected { lsn, entry, .. } => (Some(*lsn), Some(entry.clone())),
            Error::JournalGap { from, .. } => (Some(*from), None),
            _ => (None, None),
        };
        let now = now_ms();
        self.failing_since_ms.get_or_insert(now);
        self.last_error = Some(SyncError {
            message: e.to_string(),
            transient: e.is_transient(),
            lsn,
            entry,
            at_ms: now,
        });
    }

    /// Records a success: clears the error.
    pub(crate) fn succeeded(&mut self) {
        self.last_error = None;
        self.failing_since_ms = None;
        self.last_success_ms = Some(now_ms());
    }
}

/// What one `sync_now` did.
#[derive(Debug)]
#[non_exhaustive]
pub struct SyncReport {
    /// Entries applied to the target (committed and confirmed).
    pub applied: u64,
    /// Entries the target refused and that were quarantined.
    pub quarantined: u64,
    /// Target transactions committed.
    pub transactions: u64,
    /// Transient failures retried.
    pub retries: u32,
    /// Time spent.
    pub duration: Duration,
    /// Entries still pending afterwards.
    pub pending: u64,
    /// Why the sync stopped early, if it did. `None` means everything durable was applied.
    pub error: Option<Error>,
}

impl std::fmt::Display for SyncReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "applied {} entries in {} transactions ({} quarantined, {} retries) in {:.1?}; {} pending",
            self.applied,
            self.transactions,
            self.quarantined,
            self.retries,
            self.duration,
            self.pending
        )?;
        if let Some(e) = &self.error {
            write!(f, "; stopped: {e}")?;
        }
        Ok(())
    }
}

/// The sync status, derived from durable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SyncStatus {
    /// The journal's UUID.
    pub journal_id: Uuid,
    /// The last durable LSN (the head of the journal).
    pub head_lsn: Lsn,
    /// The LSN the cache has applied up to (`None` without a cache).
    pub cache_applied_lsn: Option<Lsn>,
    /// The LSN acknowledged by the target (recorded in the journal's `ACK` file after the
    /// target's transaction committed).
    pub acked_lsn: Lsn,
    /// The target's own watermark as last seen by the replayer.
    pub target_lsn: Option<Lsn>,
    /// Entries durable in the journal and not yet acknowledged.
    pub pending_entries: u64,
    /// Bytes of those entries in the journal.
    pub pending_bytes: u64,
    /// When the oldest pending entry was created, ms since the Unix epoch.
    pub oldest_pending_ms: Option<u64>,
    /// When a sync last succeeded, ms since the Unix epoch.
    pub last_success_ms: Option<u64>,
    /// The last error, cleared only by a success.
    pub last_error: Option<SyncError>,
    /// Entries quarantined on the target (as last seen).
    pub quarantined: u64,
    /// Since when the head of the queue has not moved while entries are pending (ms since the
    /// Unix epoch): the later of the oldest pending entry's creation and the last
    /// acknowledgement. `None` when nothing is pending.
    pub stalled_since_ms: Option<u64>,
    /// Since when sync attempts have been failing (ms since the Unix epoch), until a success.
    pub failing_since_ms: Option<u64>,
}

impl SyncStatus {
    /// True if entries are pending and the queue head has not moved for at least `threshold`.
    pub fn is_stalled(&self, threshold: Duration) -> bool {
        self.stalled_since_ms
            .is_some_and(|s| now_ms().saturating_sub(s) >= threshold.as_millis() as u64)
    }

    /// Age of the oldest pending entry.
    pub fn oldest_pending_age(&self) -> Option<Duration> {
        self.oldest_pending_ms
            .map(|t| Duration::from_millis(now_ms().saturating_sub(t)))
    }
}

/// Reads the creation time at the start of a store record's payload (the `u64` that
/// `encode_event` writes first). `None` if it does not decode.
pub(crate) fn created_at_ms(payload: &[u8]) -> Option<u64> {
    bincode::serde::decode_from_slice::<u64, _>(payload, bincode::config::standard())
        .ok()
        .map(|(v, _)| v)
}
