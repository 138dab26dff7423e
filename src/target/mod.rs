//! Targets: the databases the replayer applies journal entries to, behind one seam
//! (`Target`) that carries the exactly-once protocol's steps. Every SQL string of a target
//! lives in that target's module; the replay driver (`replay/driver.rs`) holds only the
//! protocol.
//!
//! A target is named by what a user types ([`TargetSpec`]): a path is an SQLite file (on a
//! share), `postgres://…`, `postgresql://…` or a libpq `key=value` string is a PostgreSQL
//! server.

pub(crate) mod changes;
pub(crate) mod conflicts;
#[cfg(feature = "fault-injection")]
mod faulty;
mod lease;
mod options;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
pub(crate) mod retention;
mod spec;
pub(crate) mod sqlite;
mod sqlite_changes;
mod sqlite_conflicts;
#[cfg(not(feature = "postgres"))]
mod unsupported;

use uuid::Uuid;

use crate::apply::{ApplyContext, ApplyError};
use crate::error::{Error, Result};
use crate::format::Lsn;
use crate::mutation::Columns;

pub(crate) use changes::ChangePage;
pub(crate) use changes::EntryClock;
pub use changes::{CHANGE_HEAD_TABLE, CHANGES_TABLE, Change, HLC_LOGICAL_BITS};
pub use conflicts::{CONFLICTS_TABLE, ConflictCounts, ConflictRecord};
pub(crate) use conflicts::{ConflictRows, NewConflict, Probe, Remote};
pub use retention::{CURSORS_TABLE, ChangeLogRetention, PruneReport};

#[cfg(feature = "fault-injection")]
pub use lease::lease_file_calls;
pub use lease::{LeaseHolder, lease_holder, lease_path};
pub use options::{TargetJournalMode, TargetOptions};
#[cfg(feature = "postgres")]
pub use postgres::PgApplyContext;
pub use spec::{ConnString, TargetSpec};
#[cfg(not(feature = "postgres"))]
pub(crate) use unsupported::no_postgres;

/// Progress table: one row per journal, updated in the same transaction as the entries it
/// covers. The target's copy of "how far this journal has been applied" is the truth.
pub const PROGRESS_TABLE: &str = "syncjournal_progress";
/// Quarantine table: entries the target refused under the `Quarantine` policy.
pub const REJECTED_TABLE: &str = "syncjournal_rejected";

/// The columns syncjournal requires of [`PROGRESS_TABLE`].
pub(crate) const PROGRESS_COLUMNS: [&str; 3] = ["journal_id", "lsn", "updated_at"];
/// The columns syncjournal requires of [`REJECTED_TABLE`].
pub(crate) const REJECTED_COLUMNS: [&str; 7] = [
    "journal_id",
    "lsn",
    "kind",
    "payload",
    "summary",
    "error",
    "rejected_at",
];

/// The database an event's `apply` runs against, handed to the driver's closure by
/// [`Target::apply`]: the event picks its apply for this backend.
pub(crate) enum EventDb<'a, 'c> {
    /// An SQLite database (the target file on a share).
    Sqlite(&'a mut ApplyContext<'c>),
    /// A PostgreSQL server.
    #[cfg(feature = "postgres")]
    Postgres(&'a mut PgApplyContext<'c>),
}

/// An entry to keep in the target's quarantine table.
pub(crate) struct Rejected<'a> {
    /// Its LSN (a gap's first LSN for a salvaged gap).
    pub lsn: Lsn,
    /// Its record kind.
    pub kind: u8,
    /// Its payload, kept so that it can be retried.
    pub payload: &'a [u8],
    /// A one-line description.
    pub summary: &'a str,
    /// Why the target refused it.
    pub reason: &'a str,
}

/// A quarantined entry as read back from the target.
pub(crate) struct QuarantineRow {
    pub lsn: Lsn,
    pub kind: u8,
    pub payload: Vec<u8>,
    pub summary: String,
    pub error: String,
    pub rejected_at_ms: u64,
}

/// The outcome of [`Target::commit`].
pub(crate) enum Commit {
    /// The target confirmed the commit.
    Landed,
    /// The target refused the commit: nothing of the batch is on it.
    Failed(Error),
    /// The commit reported an error after it may have reached the target (a connection lost
    /// during `COMMIT`, an I/O error on a share): resolve it with [`Target::watermark`] through
    /// a new connection.
    InDoubt(Error),
}

/// How a batch applies its entries (see [`Target::begin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchMode {
    /// A target that can may send the batch's entries together (rows of one table sharing
    /// statements) without a savepoint each, and report at [`Target::settle`]; if the target
    /// refused something in it, the batch is rolled back and done again entry by entry.
    Combined,
    /// Each entry is applied and confirmed in its own savepoint before the next: a refused
    /// entry is known as it happens (and quarantined or stopped before).
    EntryByEntry,
}

/// The outcome of [`Target::settle`].
pub(crate) enum Settled {
    /// Every entry of the batch (and its watermark) is applied in the open transaction.
    Applied,
    /// The target refused something of a combined batch, which entry is not known: roll the
    /// batch back and do it again [`BatchMode::EntryByEntry`]. The string says what failed.
    /// (Only PostgreSQL combines a batch.)
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Redo(String),
}

/// How an entry's apply ended (see [`Target::apply`]).
pub(crate) enum Applied {
    /// Its effects are in the open savepoint.
    Done,
    /// The target refuses it for good (the reason names the table, column or constraint).
    Refused(String),
    /// The event has no apply for this kind of target (`backend` names it).
    Unsupported(&'static str),
}

/// A target database, as the replay protocol needs it. A batch is: [`begin`](Target::begin)
/// (which takes the target's write lock for this journal), [`read_watermark`]
/// (Target::read_watermark), per entry [`savepoint`](Target::savepoint) →
/// [`apply`](Target::apply) → [`release`](Target::release) or
/// [`rollback_to`](Target::rollback_to) (then maybe [`quarantine`](Target::quarantine)),
/// [`set_watermark`](Target::set_watermark), [`settle`](Target::settle) (which may ask for the
/// batch again entry by entry), [`commit`](Target::commit). Any error ends the
/// batch: the driver calls [`rollback`](Target::rollback) and, unless
/// [`keeps_connection`](Target::keeps_connection), [`discard`](Target::discard).
///
/// Errors are [`Error::Target`] values already classified: `is_transient()` says whether a
/// retry can help.
pub(crate) trait Target: Send {
    /// Opens the connection if there is none. Returns true if a new one was opened. (The
    /// protocol's steps connect by themselves; the fault injector connects first so that its
    /// faults hit statements, not the connection.)
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    fn connect(&mut self) -> Result<bool>;

    /// True if a connection is open.
    fn is_connected(&self) -> bool;

    /// Drops the connection; the next use reconnects.
    fn discard(&mut self);

    /// The replayer is done with the target for now (a sync ended): a target that holds a
    /// writer lease releases it, so that another machine can take over at once. The next use
    /// takes it again.
    fn idle(&mut self) {}

    /// Starts a batch: a transaction holding the target's write lock for journal `journal`, so
    /// that no other replayer moves its watermark until the batch ends. `mode` says whether
    /// the entries may be sent together (a target without round trips to save ignores it).
    fn begin(&mut self, journal: Uuid, mode: BatchMode) -> Result<()>;

    /// The watermark of `journal`, read inside the batch (0: nothing applied yet).
    fn read_watermark(&mut self, journal: Uuid) -> Result<Lsn>;

    /// Opens the savepoint of one entry.
    fn savepoint(&mut self) -> Result<()>;

    /// Applies one entry (LSN `lsn`) inside its savepoint, through `f`, which picks the
    /// event's apply for this backend. `Err` is a failure of the target (transient or not),
    /// not a refusal of the entry.
    fn apply(
        &mut self,
        lsn: Lsn,
        f: &mut dyn FnMut(EventDb<'_, '_>) -> std::result::Result<(), ApplyError>,
    ) -> Result<Applied>;

    /// Keeps the entry's effects.
    fn release(&mut self) -> Result<()>;

    /// Undoes the entry's effects (and closes its savepoint).
    fn rollback_to(&mut self) -> Result<()>;

    /// Records a refused entry in the quarantine table, in the batch.
    fn quarantine(&mut self, journal: Uuid, entry: &Rejected<'_>) -> Result<()>;

    /// Moves the watermark of `journal` to `lsn`, in the batch.
    fn set_watermark(&mut self, journal: Uuid, lsn: Lsn) -> Result<()>;

    /// Sends what the batch still holds back and confirms that every entry and the watermark
    /// are applied in the open transaction (before [`commit`](Target::commit)).
    fn settle(&mut self) -> Result<Settled>;

    /// Notes that entry `lsn` (made at `clock`) touched `key` of `table`: the batch
    /// records the row, as it is then, in the change log before it commits. Called for every
    /// entry kept and every entry quarantined (whose rows are recorded as the target has them,
    /// so that a cache that applied the refused change is set back).
    fn touch(&mut self, table: &str, key: &Columns, lsn: Lsn, clock: EntryClock);

    /// For each probe, the latest change-log record of its row after the probe's base made by
    /// another journal than `journal`, read in the open batch, which keeps other batches from
    /// adding records until it ends (the file's write lock; on PostgreSQL the log's head row,
    /// locked here). A target without a change log finds none.
    fn find_conflicts(&mut self, journal: Uuid, probes: &[Probe]) -> Result<Vec<Option<Remote>>>;

    /// The rows a resolution of a conflict on `key` of `table` sees, read in the batch: the
    /// row now, and the row as of `base_seq`.
    fn conflict_rows(&mut self, table: &str, key: &Columns, base_seq: u64) -> Result<ConflictRows>;

    /// Records a conflict, in the batch.
    fn record_conflict(&mut self, c: &NewConflict<'_>) -> Result<()>;

    /// Recorded conflicts of `journal` (every journal's if `None`), newest first, at most
    /// `limit` (outside a batch; a target without the table has none).
    fn conflicts(&mut self, journal: Option<Uuid>, limit: usize) -> Result<Vec<ConflictRecord>>;

    /// The recorded conflict numbered `id`.
    fn conflict(&mut self, id: u64) -> Result<Option<ConflictRecord>>;

    /// How many conflicts of `journal` are resolved, and how many pending.
    fn conflict_counts(&mut self, journal: Uuid) -> Result<ConflictCounts>;

    /// Marks the pending conflicts of entry `lsn` of `journal` settled as `resolution` (the
    /// entry was retried or discarded by hand); returns how many.
    fn settle_conflicts(&mut self, journal: Uuid, lsn: Lsn, resolution: &str) -> Result<u64>;

    /// Records, in its own transaction, that `journal`'s cache needs the change log from `seq`
    /// on (its cursor, or the base of its oldest entry not on the target if lower), so that
    /// retention keeps it (`sync-protocol.md` §2.6). A target without a change log ignores it.
    fn record_cursor(&mut self, journal: Uuid, seq: u64) -> Result<()>;

    /// Prunes the change log by `retention`, in its own transaction.
    fn prune_changes(&mut self, retention: &ChangeLogRetention) -> Result<PruneReport>;

    /// Commits the batch, with its change-log records (unless the options turn the log off).
    fn commit(&mut self) -> Commit;

    /// Ends the batch without its effects (best effort: a connection that cannot roll back is
    /// discarded by the caller).
    fn rollback(&mut self);

    /// The watermark of `journal`, read now outside any batch (connecting if needed): what
    /// resolves an in-doubt commit through a new connection.
    fn watermark(&mut self, journal: Uuid) -> Result<Lsn>;

    /// True if the connection may be used again after `e` (the database was only busy).
    fn keeps_connection(&self, e: &Error) -> bool;

    /// True if `e` says the database itself may be damaged (checked with
    /// [`integrity`](Target::integrity) before it is written again).
    fn is_damage(&self, e: &Error) -> bool;

    /// An integrity check through a fresh connection: `Ok(None)` if it passes, `Ok(Some(what))`
    /// if not, `Err` if it cannot be checked now.
    fn integrity(&mut self) -> Result<Option<String>>;

    /// The quarantined entries of `journal`, by LSN.
    fn quarantined(&mut self, journal: Uuid) -> Result<Vec<QuarantineRow>>;

    /// The quarantined entry `lsn` of `journal`, read inside a batch.
    fn quarantined_entry(&mut self, journal: Uuid, lsn: Lsn) -> Result<Option<QuarantineRow>>;

    /// Removes a quarantined entry (in a batch or on its own); returns the rows removed.
    fn remove_quarantined(&mut self, journal: Uuid, lsn: Lsn) -> Result<u64>;

    /// Records a new refusal of a quarantined entry (outside a batch).
    fn note_refused_again(&mut self, journal: Uuid, lsn: Lsn, reason: &str) -> Result<()>;

    /// The number of quarantined entries of `journal`.
    fn quarantine_count(&mut self, journal: Uuid) -> Result<u64>;

    /// Up to `limit` change-log records after sequence number `after`, with `journal`'s
    /// watermark and the log's head and floor, read in one snapshot of the target (outside
    /// any batch; a target without a change log yet reads as an empty one).
    fn changes_after(&mut self, journal: Uuid, after: u64, limit: usize) -> Result<ChangePage>;

    /// Reads every row of `tables` in one snapshot of the target, handing each to `sink`
    /// (table as the target names it, key in key order, other columns), and returns the change
    /// log's head and `journal`'s watermark in that snapshot. A table the target does not
    /// have is an error naming it.
    fn snapshot(
        &mut self,
        journal: Uuid,
        tables: &[String],
        sink: &mut RowSink<'_>,
    ) -> Result<(u64, Lsn)>;
}

/// Where [`Target::snapshot`] sends each row: (table, key, other columns).
pub(crate) type RowSink<'a> = dyn FnMut(&str, Columns, Columns) -> Result<()> + 'a;

/// A watermark read from a progress table (either kind of target), checked: a negative value,
/// or one past the largest LSN, was not written by syncjournal. `path` names the target.
pub(crate) fn watermark_value(path: &std::path::Path, lsn: Option<i64>) -> Result<Lsn> {
    match lsn {
        None => Ok(0),
        Some(l) if (0..=crate::format::LSN_MAX as i64).contains(&l) => Ok(l as Lsn),
        Some(l) => Err(Error::Target(crate::error::TargetError::SchemaMismatch {
            path: path.to_path_buf(),
            table: PROGRESS_TABLE.into(),
            detail: format!(
                "watermark {l} is not an LSN (0 to {})",
                crate::format::LSN_MAX
            ),
        })),
    }
}

/// Opens the target `spec` names (nothing is connected yet), wrapped in the fault injector
/// when the options carry one.
pub(crate) fn open(spec: &TargetSpec, opts: TargetOptions) -> Box<dyn Target> {
    #[cfg(feature = "fault-injection")]
    let faults = opts.faults.clone();
    let target: Box<dyn Target> = match spec {
        TargetSpec::Sqlite(path) => Box::new(sqlite::SqliteTarget::new(path.clone(), opts)),
        #[cfg(feature = "postgres")]
        TargetSpec::Postgres(conn) => Box::new(postgres::PgTarget::new(conn.clone(), opts)),
        #[cfg(not(feature = "postgres"))]
        TargetSpec::Postgres(conn) => Box::new(unsupported::NoPostgres::new(conn.clone())),
    };
    #[cfg(feature = "fault-injection")]
    if let Some(f) = faults {
        return Box::new(faulty::Faulty::new(target, spec.error_path(), f));
    }
    target
}

/// Reads the watermark and quarantine count of `journal` on the target `spec` names, without
/// writing to it nor creating it (a missing bookkeeping table counts as none).
pub(crate) fn peek(spec: &TargetSpec, journal: Uuid) -> Result<(Lsn, u64)> {
    match spec {
        TargetSpec::Sqlite(path) => sqlite::peek(path, journal),
        #[cfg(feature = "postgres")]
        TargetSpec::Postgres(conn) => postgres::peek(conn, journal),
        #[cfg(not(feature = "postgres"))]
        TargetSpec::Postgres(conn) => Err(unsupported::no_postgres(conn)),
    }
}
