//! A PostgreSQL target named in a build without the `postgres` feature: every use says so.

use uuid::Uuid;

use crate::apply::ApplyError;
use crate::error::{Error, Result, TargetError};
use crate::format::Lsn;
use crate::mutation::Columns;
use crate::target::{
    Applied, BatchMode, ChangeLogRetention, ChangePage, Commit, ConflictCounts, ConflictRecord,
    ConflictRows, ConnString, EntryClock, EventDb, NewConflict, Probe, PruneReport, QuarantineRow,
    Rejected, Remote, RowSink, Settled, Target,
};

/// The error every use of a PostgreSQL target gives in this build.
pub(crate) fn no_postgres(conn: &ConnString) -> Error {
    Error::Target(TargetError::Unusable {
        path: conn.redacted().into(),
        reason: "names a PostgreSQL server, but this build of syncjournal has no PostgreSQL support (cargo feature `postgres`)".into(),
    })
}

/// Stands in for a PostgreSQL target: never connects.
pub(crate) struct NoPostgres {
    conn: ConnString,
}

impl NoPostgres {
    pub(crate) fn new(conn: ConnString) -> Self {
        NoPostgres { conn }
    }

    fn err<T>(&self) -> Result<T> {
        Err(no_postgres(&self.conn))
    }
}

impl Target for NoPostgres {
    fn connect(&mut self) -> Result<bool> {
        self.err()
    }
    fn is_connected(&self) -> bool {
        false
    }
    fn discard(&mut self) {}
    fn begin(&mut self, _: Uuid, _: BatchMode) -> Result<()> {
        self.err()
    }
    fn settle(&mut self) -> Result<Settled> {
        self.err()
    }
    fn read_watermark(&mut self, _: Uuid) -> Result<Lsn> {
        self.err()
    }
    fn savepoint(&mut self) -> Result<()> {
        self.err()
    }
    fn apply(
        &mut self,
        _: Lsn,
        _: &mut dyn FnMut(EventDb<'_, '_>) -> std::result::Result<(), ApplyError>,
    ) -> Result<Applied> {
        self.err()
    }
    fn release(&mut self) -> Result<()> {
        self.err()
    }
    fn rollback_to(&mut self) -> Result<()> {
        self.err()
    }
    fn quarantine(&mut self, _: Uuid, _: &Rejected<'_>) -> Result<()> {
        self.err()
    }
    fn set_watermark(&mut self, _: Uuid, _: Lsn) -> Result<()> {
        self.err()
    }
    fn commit(&mut self) -> Commit {
        Commit::Failed(no_postgres(&self.conn))
    }
    fn rollback(&mut self) {}
    fn watermark(&mut self, _: Uuid) -> Result<Lsn> {
        self.err()
    }
    fn keeps_connection(&self, _: &Error) -> bool {
        false
    }
    fn is_damage(&self, _: &Error) -> bool {
        false
    }
    fn integrity(&mut self) -> Result<Option<String>> {
        self.err()
    }
    fn quarantined(&mut self, _: Uuid) -> Result<Vec<QuarantineRow>> {
        self.err()
    }
    fn quarantined_entry(&mut self, _: Uuid, _: Lsn) -> Result<Option<QuarantineRow>> {
        self.err()
    }
    fn remove_quarantined(&mut self, _: Uuid, _: Lsn) -> Result<u64> {
        self.err()
    }
    fn note_refused_again(&mut self, _: Uuid, _: Lsn, _: &str) -> Result<()> {
        self.err()
    }
    fn touch(&mut self, _: &str, _: &Columns, _: Lsn, _: EntryClock) {}
    fn find_conflicts(&mut self, _: Uuid, _: &[Probe]) -> Result<Vec<Option<Remote>>> {
        self.err()
    }
    fn conflict_rows(&mut self, _: &str, _: &Columns, _: u64) -> Result<ConflictRows> {
        self.err()
    }
    fn record_conflict(&mut self, _: &NewConflict<'_>) -> Result<()> {
        self.err()
    }
    fn conflicts(&mut self, _: Option<Uuid>, _: usize) -> Result<Vec<ConflictRecord>> {
        self.err()
    }
    fn conflict(&mut self, _: u64) -> Result<Option<ConflictRecord>> {
        self.err()
    }
    fn conflict_counts(&mut self, _: Uuid) -> Result<ConflictCounts> {
        self.err()
    }
    fn record_cursor(&mut self, _: Uuid, _: u64) -> Result<()> {
        self.err()
    }
    fn prune_changes(&mut self, _: &ChangeLogRetention) -> Result<PruneReport> {
        self.err()
    }
    fn settle_conflicts(&mut self, _: Uuid, _: Lsn, _: &str) -> Result<u64> {
        self.err()
    }
    fn changes_after(&mut self, _: Uuid, _: u64, _: usize) -> Result<ChangePage> {
        self.err()
    }
    fn snapshot(&mut self, _: Uuid, _: &[String], _: &mut RowSink<'_>) -> Result<(u64, Lsn)> {
        self.err()
    }
    fn quarantine_count(&mut self, _: Uuid) -> Result<u64> {
        self.err()
    }
}
