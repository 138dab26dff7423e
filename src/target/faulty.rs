//! The fault-injecting target (feature `fault-injection`): wraps any target and fails chosen
//! protocol steps, as redb's crash tests wrap its storage backend. Steps are numbered per batch
//! (`BEGIN` is 0, then `read watermark`, per entry `savepoint`, `event`, `release` or
//! `rollback to` (+ `quarantine`), then `update watermark`, `settle`, `commit`); see
//! [`TargetFaults`](crate::fault::TargetFaults).

use std::sync::Arc;

use uuid::Uuid;

use crate::apply::ApplyError;
use crate::error::{Error, Result};
use crate::fault::TargetFaults;
use crate::format::Lsn;
use crate::mutation::Columns;
use crate::target::sqlite::target_error;
use crate::target::{
    Applied, BatchMode, ChangeLogRetention, ChangePage, Commit, ConflictCounts, ConflictRecord,
    ConflictRows, EntryClock, EventDb, NewConflict, Probe, PruneReport, QuarantineRow, Rejected,
    Remote, RowSink, Settled, Target,
};

/// A target whose protocol steps pass through a [`TargetFaults`] first.
pub(crate) struct Faulty {
    inner: Box<dyn Target>,
    /// The target, as its errors name it.
    path: std::path::PathBuf,
    faults: Arc<dyn TargetFaults>,
    /// The index of the next step in the current batch.
    step: usize,
}

impl Faulty {
    pub(crate) fn new(
        inner: Box<dyn Target>,
        path: std::path::PathBuf,
        faults: Arc<dyn TargetFaults>,
    ) -> Self {
        Faulty {
            inner,
            path,
            faults,
            step: 0,
        }
    }

    /// Runs the hook of the next step; an injected failure is classified like the SQLite error
    /// it is.
    fn hook(&mut self, label: &str) -> Result<()> {
        let r = self.faults.before_statement(self.step, label);
        self.step += 1;
        r.map_err(|e| self.injected(label, e))
    }

    fn injected(&self, label: &str, e: rusqlite::Error) -> Error {
        target_error(&self.path, label, e)
    }
}

impl Target for Faulty {
    fn connect(&mut self) -> Result<bool> {
        self.inner.connect()
    }

    fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    fn discard(&mut self) {
        self.inner.discard()
    }

    fn idle(&mut self) {
        self.inner.idle()
    }

    fn begin(&mut self, journal: Uuid, mode: BatchMode) -> Result<()> {
        self.step = 0;
        self.inner.connect()?;
        self.hook("BEGIN")?;
        self.inner.begin(journal, mode)
    }

    fn read_watermark(&mut self, journal: Uuid) -> Result<Lsn> {
        self.hook("read watermark")?;
        self.inner.read_watermark(journal)
    }

    fn savepoint(&mut self) -> Result<()> {
        self.hook("savepoint")?;
        self.inner.savepoint()
    }

    fn apply(
        &mut self,
        lsn: Lsn,
        f: &mut dyn FnMut(EventDb<'_, '_>) -> std::result::Result<(), ApplyError>,
    ) -> Result<Applied> {
        // An injected failure here is the event's own failure: transient or permanent by its
        // code, as an error inside an event's apply would be.
        if let Err(e) = self.faults.before_statement(self.step, "event") {
            self.step += 1;
            return match ApplyError::from(e) {
                ApplyError::Transient(e) => Err(self.injected("event", e.into_inner())),
                ApplyError::Permanent { reason } => Ok(Applied::Refused(reason)),
                other => Ok(Applied::Refused(other.to_string())),
            };
        }
        self.step += 1;
        self.inner.apply(lsn, f)
    }

    fn release(&mut self) -> Result<()> {
        self.hook("release")?;
        self.inner.release()
    }

    fn rollback_to(&mut self) -> Result<()> {
        self.hook("rollback to")?;
        self.inner.rollback_to()
    }

    fn quarantine(&mut self, journal: Uuid, entry: &Rejected<'_>) -> Result<()> {
        self.hook("quarantine")?;
        self.inner.quarantine(journal, entry)
    }

    fn set_watermark(&mut self, journal: Uuid, lsn: Lsn) -> Result<()> {
        self.hook("update watermark")?;
        self.inner.set_watermark(journal, lsn)
    }

    fn settle(&mut self) -> Result<Settled> {
        self.hook("settle")?;
        self.inner.settle()
    }

    fn find_conflicts(&mut self, journal: Uuid, probes: &[Probe]) -> Result<Vec<Option<Remote>>> {
        self.inner.find_conflicts(journal, probes)
    }

    fn conflict_rows(&mut self, table: &str, key: &Columns, base_seq: u64) -> Result<ConflictRows> {
        self.inner.conflict_rows(table, key, base_seq)
    }

    fn record_conflict(&mut self, c: &NewConflict<'_>) -> Result<()> {
        self.inner.record_conflict(c)
    }

    fn conflicts(&mut self, journal: Option<Uuid>, limit: usize) -> Result<Vec<ConflictRecord>> {
        self.inner.conflicts(journal, limit)
    }

    fn conflict(&mut self, id: u64) -> Result<Option<ConflictRecord>> {
        self.inner.conflict(id)
    }

    fn record_cursor(&mut self, journal: Uuid, seq: u64) -> Result<()> {
        self.inner.record_cursor(journal, seq)
    }

    fn prune_changes(&mut self, retention: &ChangeLogRetention) -> Result<PruneReport> {
        self.inner.prune_changes(retention)
    }

    fn conflict_counts(&mut self, journal: Uuid) -> Result<ConflictCounts> {
        self.inner.conflict_counts(journal)
    }

    fn settle_conflicts(&mut self, journal: Uuid, lsn: Lsn, resolution: &str) -> Result<u64> {
        self.inner.settle_conflicts(journal, lsn, resolution)
    }

    fn touch(&mut self, table: &str, key: &Columns, lsn: Lsn, clock: EntryClock) {
        self.inner.touch(table, key, lsn, clock);
    }

    fn changes_after(&mut self, journal: Uuid, after: u64, limit: usize) -> Result<ChangePage> {
        self.hook("read changes")?;
        self.inner.changes_after(journal, after, limit)
    }

    fn snapshot(
        &mut self,
        journal: Uuid,
        tables: &[String],
        sink: &mut RowSink<'_>,
    ) -> Result<(u64, Lsn)> {
        self.hook("snapshot")?;
        self.inner.snapshot(journal, tables, sink)
    }

    fn commit(&mut self) -> Commit {
        // A COMMIT that reports an error is in doubt, whether the error came from the target
        // or from here.
        if let Err(e) = self.hook("commit") {
            return Commit::InDoubt(e);
        }
        match self.inner.commit() {
            Commit::Landed => match self.faults.after_commit() {
                Ok(()) => Commit::Landed,
                Err(e) => Commit::InDoubt(self.injected("after commit", e)),
            },
            other => other,
        }
    }

    fn rollback(&mut self) {
        self.inner.rollback()
    }

    fn watermark(&mut self, journal: Uuid) -> Result<Lsn> {
        self.inner.watermark(journal)
    }

    fn keeps_connection(&self, e: &Error) -> bool {
        self.inner.keeps_connection(e)
    }

    fn is_damage(&self, e: &Error) -> bool {
        self.inner.is_damage(e)
    }

    fn integrity(&mut self) -> Result<Option<String>> {
        self.inner.integrity()
    }

    fn quarantined(&mut self, journal: Uuid) -> Result<Vec<QuarantineRow>> {
        self.inner.quarantined(journal)
    }

    fn quarantined_entry(&mut self, journal: Uuid, lsn: Lsn) -> Result<Option<QuarantineRow>> {
        self.inner.quarantined_entry(journal, lsn)
    }

    fn remove_quarantined(&mut self, journal: Uuid, lsn: Lsn) -> Result<u64> {
        self.inner.remove_quarantined(journal, lsn)
    }

    fn note_refused_again(&mut self, journal: Uuid, lsn: Lsn, reason: &str) -> Result<()> {
        self.inner.note_refused_again(journal, lsn, reason)
    }

    fn quarantine_count(&mut self, journal: Uuid) -> Result<u64> {
        self.inner.quarantine_count(journal)
    }
}
