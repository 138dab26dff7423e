//! The measured cases: one file per comparison family (the machine's raw limits, the
//! application's SQLite approaches, okaywal, syncjournal), and one per group that schedules
//! them (durable, nosync) or measures a family of its own (replay, scan, backlog).

pub mod backlog;
pub mod conflicts;
pub mod durable;
pub mod nosync;
pub mod okaywal;
pub mod outbox;
pub mod pg_replay;
pub mod pull;
pub mod raw;
pub mod replay;
pub mod scan;
pub mod syncjournal;
