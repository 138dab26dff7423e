//! What the replayer remembers between attempts, in memory and in `replay.json` (in the
//! journal directory): the last error, when failures started, the last success, the target's
//! watermark as last read, lost writes seen. The file is informational: it is read back with
//! a size bound and never makes a figure look better than the durable positions do.

use crate::error::{JournalError, TargetError};
use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::Lsn;
use crate::journal::ack::now_ms;
use crate::segment::{Access, REPLAY_STATE_FILE, open_journal_file, replay_tmp_name};

/// Largest `replay.json` that is read (syncjournal writes well under 4 KiB); a larger file is
/// ignored, never read whole.
pub const REPLAY_STATE_BYTES_MAX: u64 = 64 << 10;

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

/// A time the target's watermark was found lower than this replayer had itself committed (or
/// the journal had acknowledged): writes on the target were lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostWrites {
    /// The watermark this replayer knew the target to hold (its own last commit, or the
    /// journal's acknowledgement).
    pub expected_lsn: Lsn,
    /// The watermark found.
    pub found_lsn: Lsn,
    /// When it was found, ms since the Unix epoch.
    pub at_ms: u64,
}

impl LostWrites {
    /// What it means, in one line.
    pub fn describe(&self) -> String {
        format!(
            "the target's watermark went back from {} to {} ({} entries' effects lost on the target): restored from an older backup, or written by a second machine over a share that does not forward locks; the entries were applied again from the journal",
            self.expected_lsn,
            self.found_lsn,
            self.expected_lsn - self.found_lsn
        )
    }
}

/// What the replayer persists after each sync attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplayState {
    /// The target the replayer writes to, as named.
    pub target: Option<String>,
    /// The target the journal is acknowledged against: the first one an owner's replayer
    /// acknowledged for (or one adopted since). Other targets are replayed, not acknowledged.
    pub acknowledged_target: Option<String>,
    /// The last error, until a successful sync clears it.
    pub last_error: Option<SyncError>,
    /// When the current run of failures started (cleared by a success).
    pub failing_since_ms: Option<u64>,
    /// When a sync last succeeded (applied entries or confirmed there were none).
    pub last_success_ms: Option<u64>,
    /// The target's watermark as last read (informational: status reads the target itself).
    pub target_lsn: Option<Lsn>,
    /// When `target_lsn` was read, ms since the Unix epoch.
    pub target_read_at_ms: Option<u64>,
    /// Entries in the target's quarantine table for this journal, as last seen.
    pub quarantined: u64,
    /// Since when syncs have been failing because another machine holds the target's writer
    /// lease (cleared by a success or another error).
    pub lease_waiting_since_ms: Option<u64>,
    /// Conflicts of this journal on the target, as last seen: settled, and pending a human
    /// decision (`sync-protocol.md` §4).
    pub conflicts: crate::target::ConflictCounts,
    /// How many times the target's watermark was found to have gone back.
    pub lost_writes: u64,
    /// The last time it was.
    pub last_lost_writes: Option<LostWrites>,
    /// Why the target is considered damaged (it failed an integrity check through a fresh
    /// connection); the replayer does not write into it until a check passes again.
    pub target_damaged: Option<String>,
}

impl ReplayState {
    /// Reads `replay.json` from a journal directory: the default state if it is absent, larger
    /// than [`REPLAY_STATE_BYTES_MAX`], not a regular file, or not valid.
    pub fn load(journal_dir: &Path) -> ReplayState {
        let path = journal_dir.join(REPLAY_STATE_FILE);
        let Ok(f) = open_journal_file(&path, Access::Read, "open replay state") else {
            return ReplayState::default();
        };
        let mut bytes = Vec::new();
        if f.take(REPLAY_STATE_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .is_err()
            || bytes.len() as u64 > REPLAY_STATE_BYTES_MAX
        {
            tracing::warn!(path = %path.display(), "replay state unreadable or too large; ignored");
            return ReplayState::default();
        }
        serde_json::from_slice(&bytes).unwrap_or_default()
    }

    /// Writes `replay.json` atomically: a temporary file of this process's own (created new,
    /// never through a link), `fdatasync`, rename over the old one.
    pub fn store(&self, journal_dir: &Path) -> Result<()> {
        let path = journal_dir.join(REPLAY_STATE_FILE);
        let tmp = journal_dir.join(replay_tmp_name(std::process::id()));
        let bytes = serde_json::to_vec_pretty(self).expect("state serialises");
        // A temporary file left by a crash of this pid's earlier life is this process's to
        // remove.
        let _ = std::fs::remove_file(&tmp);
        let mut f = open_journal_file(&tmp, Access::CreateNew, "create replay state")?;
        let written = f
            .write_all(&bytes)
            .and_then(|()| f.sync_data())
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io("write replay state", &path, e));
        }
        Ok(())
    }

    /// Records a failure.
    pub(crate) fn failed(&mut self, e: &Error) {
        let (lsn, entry) = match e {
            Error::Target(TargetError::EntryRejected { lsn, entry, .. }) => {
                (Some(*lsn), Some(entry.clone()))
            }
            Error::Target(TargetError::JournalGap { from, .. }) => (Some(*from), None),
            Error::Target(TargetError::UnknownKind { lsn, kind, .. }) => {
                (Some(*lsn), Some(format!("a record of kind {kind:#04x}")))
            }
            Error::Journal(JournalError::Discontinuity { expected, .. }) => (Some(*expected), None),
            _ => (None, None),
        };
        let now = now_ms();
        self.failing_since_ms.get_or_insert(now);
        if matches!(e, Error::Target(TargetError::LeaseHeld { .. })) {
            self.lease_waiting_since_ms.get_or_insert(now);
        } else {
            self.lease_waiting_since_ms = None;
        }
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
        self.lease_waiting_since_ms = None;
        self.last_success_ms = Some(now_ms());
    }

    /// Records a watermark read from the target now.
    pub(crate) fn observed(&mut self, lsn: Lsn) {
        self.target_lsn = Some(lsn);
        self.target_read_at_ms = Some(now_ms());
    }
}
