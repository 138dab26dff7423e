//! syncjournal: make a local SQLite cache sync reliably to a shared database.
//!
//! Every mutation is first appended as a checksummed record to a memory-mapped, preallocated,
//! append-only [`Journal`], durable before `append` returns (by default). The journal is the
//! source of truth; everything downstream is applied from it exactly once.
//!
//! ```no_run
//! use syncjournal::{Journal, JournalOptions};
//!
//! # fn main() -> syncjournal::Result<()> {
//! let journal = Journal::open("/var/lib/app/journal", JournalOptions::new())?;
//! let lsn = journal.append(b"hello")?; // durable when this returns
//! for record in journal.reader(1)? {
//!     let record = record?;
//!     println!("{} {:?}", record.lsn, record.payload);
//! }
//! journal.ack(lsn)?; // applied downstream: the segment may be retired
//! # Ok(()) }
//! ```
//!
//! The on-disk format is specified in `journal-format.md`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod apply;
pub mod error;
pub mod event;
#[cfg(feature = "fault-injection")]
pub mod fault;
#[cfg(not(feature = "fault-injection"))]
pub(crate) mod fault;
pub mod format;
pub mod inspect;
pub mod journal;
pub mod mutation;
pub mod replay;
pub mod segment;
pub mod store;
pub mod target;

pub use apply::{ApplyContext, ApplyError};
#[cfg(feature = "postgres")]
pub use error::PostgresError;
pub use error::{
    CacheError, Corruption, DamageKind, Error, JournalError, Result, SqliteError, TargetError,
};
pub use event::JournalEvent;
pub use journal::{
    Cut, Journal, JournalOptions, JournalState, KIND_DATA, PersistMode, Reader, Record, RecordRef,
    RecoveryMode, RecoveryReport,
};
pub use mutation::{ChangeSet, Mutation, Value};
pub use replay::{Conflict, ConflictKind, ConflictPolicies, ConflictPolicy, Resolution, Resolver};
pub use replay::{
    RejectPolicy, ReplayOptions, Replayer, SyncReport, SyncStatus, TargetJournalMode, TargetOptions,
};
pub use store::{HeldBack, PullReport, PullStatus, ReseedReport, Store, StoreOptions};
pub use target::{ChangeLogRetention, ConflictCounts, ConflictRecord, PruneReport, TargetSpec};

/// The SQLite binding of the public API (`Store::read`'s connection, `ApplyContext::conn`):
/// use this one, whatever version your own dependencies pull in.
pub use rusqlite;

/// The PostgreSQL client of the public API (`PgApplyContext::execute`'s parameter types), feature
/// `postgres`.
#[cfg(feature = "postgres")]
pub use postgres;

pub use format::Lsn;
