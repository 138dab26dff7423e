//! What waits on the target for a human: entries it refused under the `Quarantine` policy
//! (listing them, applying one again out of order, discarding one for good) and the conflicts
//! it recorded (listing them, reading one).

use crate::error::{Error, Result, TargetError};
use crate::event::{JournalEvent, decode_stamped_event};
use crate::format::Lsn;
use crate::replay::driver::Replayer;
use crate::target::{Applied, BatchMode, Commit, ConflictRecord, EntryClock, EventDb};

/// An entry the target refused, kept in its `syncjournal_rejected` table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuarantinedEntry {
    /// The entry's LSN.
    pub lsn: Lsn,
    /// Its record kind.
    pub kind: u8,
    /// A one-line description.
    pub summary: String,
    /// Why the target refused it.
    pub error: String,
    /// When, ms since the Unix epoch.
    pub rejected_at_ms: u64,
}

impl<E: JournalEvent> Replayer<E> {
    /// Lists the entries quarantined on the target for this journal.
    pub fn quarantined(&mut self) -> Result<Vec<QuarantinedEntry>> {
        let rows = self.target.quarantined(self.source.id());
        self.target.idle();
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                self.discard_target();
                return Err(e);
            }
        };
        let rows: Vec<QuarantinedEntry> = rows
            .into_iter()
            .map(|r| QuarantinedEntry {
                lsn: r.lsn,
                kind: r.kind,
                summary: r.summary,
                error: r.error,
                rejected_at_ms: r.rejected_at_ms,
            })
            .collect();
        self.obs.watch.update(|s| s.quarantined = rows.len() as u64);
        self.persist();
        Ok(rows)
    }

    /// Applies a quarantined entry again (out of order: after everything already applied) and
    /// removes it from quarantine, in one target transaction, if it now applies; otherwise
    /// records the new error and returns [`TargetError::EntryRejected`].
    pub fn retry_quarantined(&mut self, lsn: Lsn) -> Result<()> {
        let result = self.retry(lsn);
        if result.as_ref().is_err_and(|e| e.is_transient()) {
            self.target.rollback();
            self.discard_target();
        } else {
            self.recount_quarantine();
        }
        self.target.idle();
        result
    }

    fn retry(&mut self, lsn: Lsn) -> Result<()> {
        let id = self.source.id();
        let target = &mut self.target;
        // One entry: nothing to combine, and its refusal must be known as it happens.
        target.begin(id, BatchMode::EntryByEntry)?;
        let Some(row) = target.quarantined_entry(id, lsn)? else {
            target.rollback();
            return Err(Error::Target(TargetError::EntryRejected {
                lsn,
                entry: "(none)".into(),
                reason: "no quarantined entry has this LSN".into(),
            }));
        };
        target.savepoint()?;
        let applied = if row.kind == E::KIND {
            match decode_stamped_event::<E>(&row.payload) {
                Ok((created_at_ms, ev, stamp)) => {
                    // Applied as it is: a human decided (its conflicts, if any, are settled
                    // below with it).
                    let clock = EntryClock {
                        created_at_ms,
                        hlc: stamp.map(|s| s.hlc),
                        inherit: false,
                    };
                    let applied = target.apply(lsn, &mut |db| match db {
                        EventDb::Sqlite(ctx) => ev.apply(ctx),
                        #[cfg(feature = "postgres")]
                        EventDb::Postgres(ctx) => ev.apply_postgres(ctx),
                    })?;
                    for (table, key) in ev.touched_rows() {
                        target.touch(table, key, lsn, clock);
                    }
                    applied
                }
                Err(r) => Applied::Refused(format!("undecodable payload: {r}")),
            }
        } else {
            Applied::Refused(format!(
                "kind {:#04x} cannot be applied by this program",
                row.kind
            ))
        };
        let reason = match applied {
            Applied::Done => {
                target.release()?;
                target.remove_quarantined(id, lsn)?;
                target.settle_conflicts(id, lsn, "retried")?;
                return match target.commit() {
                    Commit::Landed => {
                        tracing::info!(lsn, entry = %row.summary, "quarantined entry applied on retry");
                        Ok(())
                    }
                    Commit::Failed(e) => Err(e),
                    Commit::InDoubt(e) => Err(Error::Target(TargetError::Unavailable {
                        path: self.spec.error_path(),
                        message: format!(
                            "retry of quarantined LSN {lsn}: commit outcome unknown ({e}); list the quarantine to see whether it is still there"
                        ),
                        transient: true,
                        source: None,
                    })),
                };
            }
            Applied::Refused(reason) => reason,
            Applied::Unsupported(backend) => {
                target.rollback();
                return Err(Error::Target(TargetError::NoApply {
                    lsn,
                    kind: row.kind,
                    backend,
                }));
            }
        };
        target.rollback();
        let _ = target.note_refused_again(id, lsn, &reason);
        Err(Error::Target(TargetError::EntryRejected {
            lsn,
            entry: row.summary,
            reason,
        }))
    }

    /// Re-reads the quarantine count from the target and persists it (after a retry or a
    /// discard, so that the status never shows a stale count).
    fn recount_quarantine(&mut self) {
        if let Ok(n) = self.target.quarantine_count(self.source.id()) {
            self.obs.watch.update(|s| s.quarantined = n);
            self.refresh_conflicts(self.source.id());
            self.persist();
        }
    }

    /// The conflicts recorded on the target, newest first, at most `limit`: this journal's, or
    /// every journal's if `all_journals` (`sync-protocol.md` §4.4). Also refreshes the status's
    /// counts.
    pub fn conflicts(&mut self, limit: usize, all_journals: bool) -> Result<Vec<ConflictRecord>> {
        let id = self.source.id();
        let r = self.target.conflicts((!all_journals).then_some(id), limit);
        if r.is_ok() {
            self.refresh_conflicts(id);
        }
        self.target.idle();
        r
    }

    /// The conflict numbered `id` on the target (any journal's).
    pub fn conflict(&mut self, id: u64) -> Result<Option<ConflictRecord>> {
        let r = self.target.conflict(id);
        self.target.idle();
        r
    }

    /// Removes a quarantined entry for good (an explicit operator decision, logged).
    pub fn discard_quarantined(&mut self, lsn: Lsn) -> Result<bool> {
        // Its conflicts are settled first: if the removal then fails, discarding again
        // removes it (settling twice changes nothing).
        let settled = self
            .target
            .settle_conflicts(self.source.id(), lsn, "discarded");
        let n = match settled.and_then(|_| self.target.remove_quarantined(self.source.id(), lsn)) {
            Ok(n) => n,
            Err(e) => {
                self.target.idle();
                self.discard_target();
                return Err(e);
            }
        };
        if n > 0 {
            tracing::warn!(lsn, "quarantined entry discarded by request");
        }
        self.recount_quarantine();
        self.target.idle();
        Ok(n > 0)
    }
}
