//! Errors of the target and of the replay to it: unavailable (transient), missing, unusable,
//! damaged, refusing an entry, behind or ahead of the journal.

use std::path::PathBuf;

use crate::error::SqliteError;
use crate::error::text::lsn_span;
use crate::format::Lsn;

/// What can go wrong with a target or the replay to it. Converts into [`crate::Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The target database could not be used; `transient` errors are retried.
    #[error("target {}: {message}", path.display())]
    Unavailable {
        /// The target database.
        path: PathBuf,
        /// What happened.
        message: String,
        /// True if retrying later may succeed (busy, locked, offline, I/O error, read-only).
        transient: bool,
        /// The SQLite error, if any.
        #[source]
        source: Option<SqliteError>,
    },

    /// A PostgreSQL server refused or failed a statement, or the connection to it failed; the
    /// message carries the SQLSTATE. `transient` errors (connection failures, class 08; admin
    /// shutdown or crash, 57P01..57P03; serialization failure and deadlock, 40001, 40P01; too
    /// many connections, 53300; read-only transaction during a failover, 25006; statement
    /// timeout, 57014) are retried; others (privileges, 42501; a missing bookkeeping table;
    /// invalid connection settings) need an operator.
    #[error("target {target}: {message}")]
    Server {
        /// The server, as named (without password).
        target: String,
        /// What happened, with the SQLSTATE.
        message: String,
        /// The SQLSTATE, if the server reported one.
        sqlstate: Option<String>,
        /// True if retrying later may succeed.
        transient: bool,
        /// The client's error.
        #[cfg(feature = "postgres")]
        #[source]
        source: Option<crate::error::PostgresError>,
    },

    /// Another machine holds the SQLite target's writer lease (the `-sjlease` file beside it,
    /// see `sync-protocol.md`) and did not release it within `TargetOptions::lease_wait_ms`:
    /// retried.
    #[error("target {}: {message}", path.display())]
    LeaseHeld {
        /// The target database.
        path: PathBuf,
        /// Who holds it and how long this replayer waited.
        message: String,
        /// The holder, as its lease record names it (none while a record is being written).
        holder: Option<Box<crate::target::LeaseHolder>>,
    },

    /// This replayer's writer lease on the SQLite target was lost: taken over, removed, or run
    /// out before it could be renewed (a paused process, a share too slow). Nothing more is
    /// written under it; a commit made under it is verified, and the file's integrity checked
    /// before it is written again. Retried (the lease is taken again).
    #[error("target {}: {message}; another machine may have written the file meanwhile: its integrity is checked before it is written again", path.display())]
    LeaseLost {
        /// The target database.
        path: PathBuf,
        /// What happened.
        message: String,
    },

    /// The lease file beside the SQLite target is not a lease file (a symbolic link, a
    /// directory, a foreign file): an operator must remove it.
    #[error("target {}: {message}", path.display())]
    LeaseUnusable {
        /// The target database.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// The target failed an integrity check through a fresh connection: the replayer does not
    /// write into it until a check passes again.
    #[error("target {} is damaged: {detail}; syncjournal will not write into it — run `syncjournal check-target {}`, then restore it from a backup (the journal re-applies what it still holds) or repair it", path.display(), path.display())]
    Damaged {
        /// The target database.
        path: PathBuf,
        /// What the integrity check reported.
        detail: String,
    },

    /// The target database file does not exist.
    #[error("target {} does not exist; if it is on a network share, is the share mounted? (syncjournal refuses to create it there unless asked to: SQLite would create an empty local file under an unmounted mount point)", path.display())]
    Missing {
        /// The target path.
        path: PathBuf,
    },

    /// The target path names something that cannot be the target database: a directory, a
    /// device, a file that is not an SQLite database. A configuration error: retrying cannot
    /// help.
    #[error("target {} {reason}; check the target path: it must name the SQLite database file itself (on the share)", path.display())]
    Unusable {
        /// The target path.
        path: PathBuf,
        /// What it is.
        reason: String,
    },

    /// The target uses WAL, which does not work on network file systems.
    #[error("target {} is in journal_mode={mode}; WAL does not work on network file systems (its shared memory is local to each machine); switch it to DELETE or TRUNCATE (`PRAGMA journal_mode=TRUNCATE`) while no one uses it", path.display())]
    Wal {
        /// The target database.
        path: PathBuf,
        /// The journal mode found.
        mode: String,
    },

    /// The target's schema for syncjournal's own tables is not the expected one.
    #[error("target {}: table {table} does not have the expected columns ({detail})", path.display())]
    SchemaMismatch {
        /// The target database.
        path: PathBuf,
        /// The table.
        table: String,
        /// What differs.
        detail: String,
    },

    /// The target permanently refused an entry and the reject policy is `Stop`.
    #[error(
        "entry at LSN {lsn} ({entry}) was rejected by the target: {reason}; fix the target or the entry, or use the Quarantine policy"
    )]
    EntryRejected {
        /// The entry's LSN.
        lsn: Lsn,
        /// A one-line description of the entry.
        entry: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The target is behind what the journal still holds (restored from an old backup after
    /// the entries were retired).
    #[error("target {} has applied up to LSN {target_lsn}, but the journal only retains LSNs from {first_retained} on: LSNs {}..{first_retained} cannot be replayed; restore a newer backup of the target or re-seed it", path.display(), target_lsn + 1)]
    ReplayGap {
        /// The target database.
        path: PathBuf,
        /// The target's watermark.
        target_lsn: Lsn,
        /// The oldest LSN in the journal.
        first_retained: Lsn,
    },

    /// The target has applied entries beyond the end of this journal.
    #[error("target {} has applied up to LSN {target_lsn} of this journal, beyond its last durable LSN {head}: the journal directory is not the one that fed this target, or it lost records", path.display())]
    Ahead {
        /// The target database.
        path: PathBuf,
        /// The target's watermark.
        target_lsn: Lsn,
        /// The journal's last durable LSN.
        head: Lsn,
    },

    /// A sync was asked of a store that has no target configured.
    #[error("no target database is configured for this store (StoreOptions::target)")]
    NoTarget,

    /// The journal lost LSNs to damage (a gap record left by salvage).
    #[error(
        "journal {} lost to damage (see the salvage report); replay stops before them unless the Quarantine policy records the loss", lsn_span(&(*from..*to))
    )]
    JournalGap {
        /// First lost LSN.
        from: Lsn,
        /// First LSN after the gap.
        to: Lsn,
    },

    /// A record's kind is not the one this replayer applies.
    #[error(
        "record at LSN {lsn} has kind {kind:#04x}, which this program does not apply (it expects {expected:#04x}); replay it with the application that wrote it"
    )]
    UnknownKind {
        /// The record's LSN.
        lsn: Lsn,
        /// Its kind.
        kind: u8,
        /// The kind this replayer applies.
        expected: u8,
    },
    /// The event type has no apply for this kind of target (an application event replayed
    /// to PostgreSQL that implements only `JournalEvent::apply`): replay stops before it.
    #[error(
        "record at LSN {lsn} (kind {kind:#04x}) cannot be applied to a {backend} target: its event type gives no apply for {backend} (implement `JournalEvent::{}`)",
        if *backend == "PostgreSQL" { "apply_postgres" } else { "apply" }
    )]
    NoApply {
        /// The record's LSN.
        lsn: Lsn,
        /// Its kind.
        kind: u8,
        /// The kind of target: `"SQLite"` or `"PostgreSQL"`.
        backend: &'static str,
    },
}
