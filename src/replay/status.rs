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
    /// Entries durable in the journal and not yet applied to the target: after the higher of
    /// the local acknowledgement and the target's watermark as last seen.
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

impl SyncStatus {
    /// The first LSN not known applied on the target: after the higher of the local
    /// acknowledgement and the target's watermark as last seen (another replayer may have
    /// moved the target past the local acknowledgement), at most the head.
    pub(crate) fn applied_base(head: Lsn, acked: Lsn, state: &ReplayState) -> Lsn {
        acked.max(state.target_lsn.unwrap_or(0)).min(head)
    }

    /// Puts a status together from durable positions and the replayer's persisted state.
    /// `pending_bytes` and `oldest_pending_ms` describe the entries after `applied_base`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn assemble(
        journal_id: Uuid,
        head: Lsn,
        cache_applied: Option<Lsn>,
        acked: Lsn,
        acked_at_ms: u64,
        pending_bytes: u64,
        oldest_pending_ms: Option<u64>,
        state: &ReplayState,
    ) -> SyncStatus {
        let pending = head - Self::applied_base(head, acked, state);
        SyncStatus {
            journal_id,
            head_lsn: head,
            cache_applied_lsn: cache_applied,
            acked_lsn: acked,
            target_lsn: state.target_lsn,
            pending_entries: pending,
            pending_bytes,
            oldest_pending_ms,
            last_success_ms: state.last_success_ms,
            last_error: state.last_error.clone(),
            quarantined: state.quarantined,
            // The head of the queue has waited since it became the head: the later of its
            // creation and the last acknowledgement (the last time the head moved).
            stalled_since_ms: (pending > 0)
                .then(|| oldest_pending_ms.unwrap_or(0).max(acked_at_ms)),
            failing_since_ms: state.failing_since_ms,
        }
    }
}

/// Reads the creation time at the start of a store record's payload (the `u64` that
/// `encode_event` writes first). `None` if it does not decode.
pub(crate) fn created_at_ms(payload: &[u8]) -> Option<u64> {
    bincode::serde::decode_from_slice::<u64, _>(payload, bincode::config::standard())
        .ok()
        .map(|(v, _)| v)
}

/// What [`offline_status`] found besides the status itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct OfflineStatus {
    /// The sync status.
    pub status: SyncStatus,
    /// The journal directory.
    pub dir: PathBuf,
    /// The process holding the journal open, if any (`Some(None)`: held, pid unknown).
    pub owner: Option<Option<u32>>,
    /// Why the head could not be read to its end (damage), if it could not.
    pub journal_error: Option<String>,
    /// Why the target could not be read, if `target` was given and it could not.
    pub target_error: Option<String>,
}

/// The sync status of the journal in `dir`, read without opening it (another process may own
/// it): the head from the owner's `HEAD` (or, with no owner, from the records on disk), the
/// acknowledgement from `ACK`, the replayer's last outcome from `replay.json`, and — if
/// `target` is given — the target's watermark and quarantine count, read now. Reads the
/// pending part of the journal to size it.
pub fn offline_status(dir: &Path, target: Option<&Path>) -> Result<OfflineStatus> {
    use crate::journal::offline::{OfflineReader, journal_id_of, owner_of, read_head};
    if !dir.is_dir() {
        return Err(Error::NotFound {
            dir: dir.to_path_buf(),
        });
    }
    let id = journal_id_of(dir)?;
    let owner = owner_of(dir)?;
    let ack = crate::journal::ack::AckFile::peek(dir)?;
    let (acked, acked_at_ms) = ack.map_or((0, 0), |a| (a.acked_lsn, a.acked_at_ms));
    let mut state = ReplayState::load(dir);
    let mut journal_error = None;
    // The head: what the owner published, or (no owner) the last valid record on disk.
    let head = match (owner, read_head(dir, id)) {
        (Some(_), Some(h)) => h.durable_lsn,
        _ => {
            let mut last = acked;
            let mut r = OfflineReader::open(dir, acked + 1, crate::journal::Until::End)?;
            loop {
                match r.next_ref() {
                    Ok(Some(rec)) => last = rec.gap().map_or(rec.lsn, |g| g.end - 1),
                    Ok(None) => break,
                    // Damage: the head is the last readable record, and the status says so.
                    Err(e @ (Error::Corrupt(_) | Error::MissingSegment { .. })) => {
                        journal_error = Some(e.to_string());
                        break;
                    }
                    // Not this journal's files, or an I/O error: no status can be given.
                    Err(e) => return Err(e),
                }
            }
            last
        }
    };
    let mut target_error = None;
    if let Some(t) = target {
        match read_target(t, id) {
            Ok((wm, q)) => {
                state.target_lsn = Some(wm);
                state.quarantined = q;
            }
            Err(e) => target_error = Some(e.to_string()),
        }
    }
    let base = SyncStatus::applied_base(head, acked, &state);
    let (mut pending_bytes, mut oldest) = (0u64, None);
    if head > base {
        let mut r = OfflineReader::open(dir, base + 1, crate::journal::Until::Durable(head))?;
        while let Some(rec) = r.next_ref()? {
            if oldest.is_none() {
                oldest = created_at_ms(rec.payload);
            }
            pending_bytes += crate::format::frame_bytes(rec.payload.len()) as u64;
        }
    }
    let status = SyncStatus::assemble(
        id,
        head,
        None,
        acked,
        acked_at_ms,
        pending_bytes,
        oldest,
        &state,
    );
    Ok(OfflineStatus {
        status,
        dir: dir.to_path_buf(),
        owner,
        journal_error,
        target_error,
    })
}

/// Reads a target's watermark and quarantine count for `journal_id`, read-only.
fn read_target(path: &Path, journal_id: Uuid) -> Result<(Lsn, u64)> {
    use rusqlite::{Connection, OpenFlags, OptionalExtension};
    if !path.exists() {
        return Err(Error::TargetMissing {
            path: path.to_path_buf(),
        });
    }
    let err = |e: rusqlite::Error| crate::replay::sqlite::target_error(path, "read", e);
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err)?;
    c.busy_timeout(Duration::from_secs(2)).map_err(err)?;
    let id = journal_id.to_string();
    let has = |t: &str| -> rusqlite::Result<bool> {
        c.query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [t],
            |r| r.get(0),
        )
    };
    let wm = if has("syncjournal_progress").map_err(err)? {
        c.query_row(
            "SELECT lsn FROM syncjournal_progress WHERE journal_id = ?1",
            [&id],
            |r| r.get::<_, i64>(0),
        )
        .optional()
        .map_err(err)?
        .unwrap_or(0)
    } else {
        0
    };
    let q = if has("syncjournal_rejected").map_err(err)? {
        c.query_row(
            "SELECT count(*) FROM syncjournal_rejected WHERE journal_id = ?1",
            [&id],
            |r| r.get::<_, i64>(0),
        )
        .map_err(err)?
    } else {
        0
    };
    Ok((wm.max(0) as Lsn, q.max(0) as u64))
}
