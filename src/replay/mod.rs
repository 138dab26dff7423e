//! Replay: applying journal entries to a target database exactly once, with retries,
//! quarantine and a status measured against the target.

mod check;
pub(crate) mod conflict;
mod driver;
mod observer;
mod offline_status;
mod options;
mod quarantine;
mod report;
mod settle;
mod source;

mod state;
mod status;
pub(crate) mod watch;

#[cfg(feature = "fault-injection")]
pub use crate::fault::TargetFaults;
pub use crate::target::{PROGRESS_TABLE, REJECTED_TABLE};
pub use crate::target::{TargetJournalMode, TargetOptions};
pub use check::{
    INTEGRITY_LINES_MAX, Integrity, JOURNALS_LISTED_MAX, JournalSeen, TableCheck, TargetCheck,
    check_target, check_target_spec, read_target_watermark,
};
pub use conflict::{
    Conflict, ConflictKind, ConflictPolicies, ConflictPolicy, Resolution, Resolver,
};
pub use driver::Replayer;
pub use offline_status::{LastSeen, OfflineStatus, offline_status, offline_status_of};
pub use options::{RejectPolicy, ReplayOptions};
pub use quarantine::QuarantinedEntry;
pub use report::{SyncProgress, SyncReport};
pub use state::{LostWrites, REPLAY_STATE_BYTES_MAX, ReplayState, SyncError};
pub(crate) use status::{JournalSide, created_at_ms};
pub use status::{PendingBasis, STALLED_AFTER_MS_DEFAULT, SyncState, SyncStatus, TargetBehind};

/// File (in the journal directory) where the replayer keeps its last outcome.
pub use crate::segment::REPLAY_STATE_FILE;

/// Reads a target's watermark for journal `id` without writing to it (nor creating it).
pub(crate) fn peek_watermark(
    target: &crate::target::TargetSpec,
    id: uuid::Uuid,
) -> crate::error::Result<crate::format::Lsn> {
    crate::target::peek(target, id).map(|(wm, _)| wm)
}

/// Reads a target's watermark and quarantine count for journal `id` without writing to it.
pub(crate) fn peek_target(
    target: &crate::target::TargetSpec,
    id: uuid::Uuid,
) -> crate::error::Result<(crate::format::Lsn, u64)> {
    crate::target::peek(target, id)
}
