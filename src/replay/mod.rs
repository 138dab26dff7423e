//! Replay: applying journal entries to a target database exactly once, with retries,
//! quarantine and a status derived from durable state.

mod driver;
mod options;
mod source;
mod sqlite;
mod status;

pub use driver::{QuarantinedEntry, Replayer, SyncProgress};
pub use options::{RejectPolicy, ReplayOptions, TargetFaults, TargetJournalMode, TargetOptions};
pub use sqlite::{PROGRESS_TABLE, REJECTED_TABLE};
pub(crate) use status::created_at_ms;
pub use status::{
    OfflineStatus, REPLAY_STATE_FILE, ReplayState, SyncError, SyncReport, SyncStatus,
    offline_status,
};
