//! Replay: applying journal entries to a target database exactly once, with retries,
//! quarantine and a status measured against the target.

mod check;
mod driver;
mod offline_status;
mod options;
mod report;
mod source;
mod sqlite;
mod state;
mod status;
pub(crate) mod watch;

#[cfg(feature = "fault-injection")]
pub use crate::fault::TargetFaults;
pub use check::{
    INTEGRITY_LINES_MAX, Integrity, JOURNALS_LISTED_MAX, JournalSeen, TableCheck, TargetCheck,
    check_target, read_target_watermark,
};
pub use driver::{QuarantinedEntry, Replayer};
pub use offline_status::{LastSeen, OfflineStatus, offline_status};
pub use options::{RejectPolicy, ReplayOptions, TargetJournalMode, TargetOptions};
pub use report::{SyncProgress, SyncReport};
pub use sqlite::{PROGRESS_TABLE, REJECTED_TABLE};
pub use state::{LostWrites, REPLAY_STATE_BYTES_MAX, ReplayState, SyncError};
pub(crate) use status::{JournalSide, created_at_ms};
pub use status::{PendingBasis, STALLED_AFTER_MS_DEFAULT, SyncState, SyncStatus, TargetBehind};

/// File (in the journal directory) where the replayer keeps its last outcome.
pub use crate::segment::REPLAY_STATE_FILE;

/// Reads a target's watermark for journal `id` without writing to it (nor creating it).
pub(crate) fn peek_watermark(
    target: &std::path::Path,
    id: uuid::Uuid,
) -> crate::error::Result<crate::format::Lsn> {
    sqlite::peek(target, id).map(|(wm, _)| wm)
}

/// Reads a target's watermark and quarantine count for journal `id` without writing to it.
pub(crate) fn peek_target(
    target: &std::path::Path,
    id: uuid::Uuid,
) -> crate::error::Result<(crate::format::Lsn, u64)> {
    sqlite::peek(target, id)
}

/// A target's name as recorded in `replay.json`: the path made absolute (without touching the
/// file system, so that an unreachable share cannot hang it), so that `./share.db` and its
/// absolute spelling name one target.
pub(crate) fn target_name(path: &std::path::Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}
