//! The status of a journal read from its directory without opening it (another process may
//! own it): positions from `HEAD`/`ACK` and the records on disk, the target's watermark read
//! now if a target is named — and what `replay.json` says only as information.

use crate::error::JournalError;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::error::{DamageKind, Error, Result};
use crate::format::Lsn;
use crate::journal::Until;
use crate::journal::ack::{AckFile, now_ms};
use crate::journal::offline::{OfflineReader, first_retained, journal_id_of, owner_of, read_head};
use crate::replay::state::ReplayState;
use crate::replay::status::{JournalSide, SyncStatus, created_at_ms};

/// What the replayer last recorded in `replay.json` about the target: shown for information,
/// never used to lower a figure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastSeen {
    /// The target the replayer writes to.
    pub target: Option<String>,
    /// Its watermark as the replayer last read it.
    pub target_lsn: Option<Lsn>,
    /// When, ms since the Unix epoch.
    pub at_ms: Option<u64>,
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
    /// What `replay.json` says about the target (informational).
    pub last_seen: LastSeen,
    /// Remarks about how a figure was obtained.
    pub notes: Vec<String>,
}

/// The sync status of the journal in `dir`, read without opening it: the head from the
/// owner's `HEAD` (or, with no owner, from the records on disk, every one verified), the
/// acknowledgement from `ACK`, and — if `target` is given — the target's watermark and
/// quarantine count, read now. Without a target, pending entries are counted from the
/// acknowledgement. `stalled_after` is the stall threshold of the verdict.
pub fn offline_status(
    dir: &Path,
    target: Option<&Path>,
    stalled_after: Duration,
) -> Result<OfflineStatus> {
    let spec = target.map(crate::target::TargetSpec::from);
    offline_status_of(dir, spec.as_ref(), stalled_after)
}

/// [`offline_status`] with the target named as a user names it: an SQLite file or a
/// PostgreSQL server.
pub fn offline_status_of(
    dir: &Path,
    target: Option<&crate::target::TargetSpec>,
    stalled_after: Duration,
) -> Result<OfflineStatus> {
    if !dir.is_dir() {
        return Err(Error::Journal(JournalError::NotFound {
            dir: dir.to_path_buf(),
        }));
    }
    let id = journal_id_of(dir)?;
    let owner = owner_of(dir)?;
    let ack = AckFile::peek(dir)?;
    let (acked, acked_at_ms) = ack.map_or((0, 0), |a| (a.acked_lsn, a.acked_at_ms));
    let first = first_retained(dir, id)?;
    let state = ReplayState::load(dir);
    let mut journal_error = None;
    let mut notes = Vec::new();
    // The target first: what it holds decides where the pending part starts.
    let mut target_error = None;
    let mut observed = None;
    let mut state = state;
    let last_seen = LastSeen {
        target: state.target.clone(),
        target_lsn: state.target_lsn,
        at_ms: state.target_read_at_ms,
    };
    if let Some(t) = target {
        match crate::target::peek(t, id) {
            Ok((wm, q)) => {
                observed = Some((wm, now_ms()));
                state.quarantined = q;
            }
            Err(e) => target_error = Some(e.to_string()),
        }
    }
    let base = observed.map_or(acked, |o| o.0);
    // The head: what the owner published, or (no owner) the last valid record on disk, found
    // in the same pass that sizes the pending part.
    let (until, from) = match (owner, read_head(dir, id)) {
        (Some(_), Some(h)) => (Until::Durable(h.durable_lsn), base + 1),
        (Some(_), None) => {
            notes.push("the owner publishes no HEAD: the head shown is the acknowledgement".into());
            (Until::Durable(acked), base + 1)
        }
        (None, _) => {
            if ack.is_some() && first > acked + 1 {
                // Segments are removed only once acknowledged.
                journal_error = Some(
                    DamageKind::SegmentDiscontinuity {
                        expected: acked + 1,
                        found: first,
                    }
                    .to_string()
                        + " (segments were removed that the acknowledgement does not cover)",
                );
            }
            (Until::End, base.min(acked) + 1)
        }
    };
    let from = from.max(first);
    let mut head = from - 1;
    let (mut pending_bytes, mut oldest) = (0u64, None);
    let mut r = OfflineReader::open(dir, from, until)?;
    loop {
        match r.next_ref() {
            Ok(Some(rec)) => {
                head = rec.gap().map_or(rec.lsn, |g| g.end - 1);
                if rec.lsn > base {
                    if oldest.is_none() {
                        oldest = created_at_ms(rec.payload);
                    }
                    pending_bytes += crate::format::frame_bytes(rec.payload.len()) as u64;
                }
            }
            Ok(None) => break,
            // Damage: the head is the last readable record, and the status says so.
            Err(
                e @ (Error::Journal(JournalError::Corrupt(_))
                | Error::Journal(JournalError::MissingSegment { .. })
                | Error::Journal(JournalError::Discontinuity { .. })),
            ) => {
                if let Error::Journal(JournalError::Corrupt(c)) = &e
                    && let DamageKind::MissingDurable { next_lsn, .. } = c.kind
                {
                    head = next_lsn - 1;
                }
                journal_error.get_or_insert_with(|| e.to_string());
                break;
            }
            // Not this journal's files, or an I/O error: no status can be given.
            Err(e) => return Err(e),
        }
    }
    if let Until::Durable(d) = until {
        // The owner's published head, even where nothing was pending to read.
        head = head.max(d);
    }
    let side = JournalSide {
        journal_id: id,
        head,
        first,
        acked,
        acked_at_ms,
        poisoned: None,
    };
    let status = SyncStatus::assemble(
        &side,
        None,
        target.is_some(),
        observed,
        pending_bytes,
        oldest,
        &state,
        stalled_after,
    );
    Ok(OfflineStatus {
        status,
        dir: dir.to_path_buf(),
        owner,
        journal_error,
        target_error,
        last_seen,
        notes,
    })
}
