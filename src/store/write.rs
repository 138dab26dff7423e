//! The write path: an event applied to the cache in a savepoint, journaled, made durable,
//! and the cache transaction committed once every entry in it is durable.

use crate::error::{CacheError, JournalError};
use std::path::Path;

use rusqlite::Connection;

use crate::apply::{ApplyContext, ApplyError};
use crate::error::{Error, Result};
use crate::event::{JournalEvent, Stamp, encode_event_within};
use crate::format::Lsn;
use crate::journal::ack::now_ms;
use crate::journal::{Journal, PersistMode};
use crate::target::HLC_LOGICAL_BITS;

use crate::store::cache::{CacheWriter, check_unchanged};
use crate::store::handle::Store;
use crate::store::handle::{cache_err, lock};

/// Runs a parameterless statement through the statement cache (no parsing per call).
pub(crate) fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs a statement with one integer parameter through the statement cache.
pub(crate) fn exec_cached_with(conn: &Connection, sql: &str, v: Lsn) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([v as i64]).map(|_| ())
}

/// What became of an event in [`journal_in_savepoint`].
enum Staged {
    /// Applied in the open cache transaction and written to the journal.
    Journaled(Lsn),
    /// Refused or failed before the journal write; the cache transaction is as it was.
    NotJournaled(Error),
    /// Failed before the journal write, and rolling its effects back failed too (the second
    /// error): they may still be in the open cache transaction, which must not commit.
    NotJournaledCacheUnknown(Error, Error),
    /// Written to the journal, but releasing its savepoint failed.
    JournaledCacheUnknown(Lsn, Error),
}

/// Applies `event` to the cache in a savepoint of the open cache transaction (opening one if
/// needed) and writes `payload` to the journal; rolls the savepoint back if either fails.
fn journal_in_savepoint<E: JournalEvent>(
    w: &mut CacheWriter,
    path: &Path,
    journal: &Journal,
    event: &E,
    payload: &mut [u8],
    ce: &impl Fn(rusqlite::Error) -> Error,
) -> Staged {
    let CacheWriter {
        conn,
        schema,
        txn_open,
        txn_max,
        committed,
        file_id,
        schema_version,
        hlc_last,
        ..
    } = w;
    if !*txn_open {
        if let Err(e) = exec_cached(conn, "BEGIN IMMEDIATE") {
            return Staged::NotJournaled(ce(e));
        }
        *txn_open = true;
        if let Err(e) = check_unchanged(conn, path, journal, *committed, file_id, schema_version) {
            let _ = conn.execute_batch("ROLLBACK");
            *txn_open = false;
            let again = Error::Cache(CacheError::Unguarded {
                path: path.to_path_buf(),
                table: None,
                detail: e.to_string(),
            });
            return Staged::NotJournaledCacheUnknown(e, again);
        }
    }
    if let Err(e) = exec_cached(conn, "SAVEPOINT sj_apply") {
        return Staged::NotJournaled(ce(e));
    }
    // What the cache knew when the event was made (`sync-protocol.md` §4.1): its pull cursor,
    // read in the transaction the event joins, and the next value of the store's clock.
    let base_seq = match conn
        .prepare_cached("SELECT seq FROM syncjournal_pull WHERE id = 1")
        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
    {
        Ok(s) => s.max(0) as u64,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO sj_apply; RELEASE sj_apply");
            return Staged::NotJournaled(ce(e));
        }
    };
    let hlc = next_hlc(*hlc_last, now_ms());
    Stamp { base_seq, hlc }.overwrite(payload);
    // Only this store writes its journal, always under the cache lock: the next LSN follows
    // the last one it wrote.
    let expected = *txn_max + 1;
    let span = tracing::trace_span!("cache_apply", kind = E::KIND).entered();
    let applied = event.apply(&mut ApplyContext::new(conn, schema, expected));
    drop(span);
    let written = applied
        .map_err(|e| match e {
            ApplyError::Permanent { reason } => Error::Cache(CacheError::ChangeRefused { reason }),
            ApplyError::Transient(source) => ce(source.into_inner()),
            other => Error::Cache(CacheError::ChangeRefused {
                reason: other.to_string(),
            }),
        })
        .and_then(|()| journal.write(E::KIND, payload));
    match written {
        Ok(lsn) => {
            *txn_max = lsn;
            *hlc_last = hlc;
            if lsn != expected {
                // Only this store writes its journal, under the cache lock: cannot happen. If
                // it did, the event saw a wrong `ApplyContext::lsn`; reopening re-applies it.
                return Staged::JournaledCacheUnknown(
                    lsn,
                    Error::Journal(JournalError::Poisoned {
                        reason: format!(
                            "the event was applied to the cache as LSN {expected} but journaled as LSN {lsn}"
                        ),
                    }),
                );
            }
            match exec_cached(conn, "RELEASE sj_apply") {
                Ok(()) => Staged::Journaled(lsn),
                Err(e) => Staged::JournaledCacheUnknown(lsn, ce(e)),
            }
        }
        Err(e) => {
            if let Err(r) = conn.execute_batch("ROLLBACK TO sj_apply; RELEASE sj_apply") {
                return Staged::NotJournaledCacheUnknown(e, ce(r));
            }
            if *txn_max <= *committed {
                if let Err(r) = conn.execute_batch("ROLLBACK") {
                    return Staged::NotJournaledCacheUnknown(e, ce(r));
                }
                *txn_open = false;
            }
            Staged::NotJournaled(e)
        }
    }
}

/// The fault seam of the cache commit ([`crate::fault::IoOp::CacheCommit`]), through the
/// journal's injector: `ENOSPC` becomes `SQLITE_FULL`, any other errno `SQLITE_IOERR`.
fn inject_cache_fault(journal: &Journal, cache: &Path) -> rusqlite::Result<()> {
    let Some(faults) = journal.options().faults.as_deref() else {
        return Ok(());
    };
    faults
        .check(crate::fault::IoOp::CacheCommit, cache)
        .map_err(|e| {
            let full = crate::error::is_disk_full(&e);
            let code = if full {
                rusqlite::ffi::SQLITE_FULL
            } else {
                rusqlite::ffi::SQLITE_IOERR
            };
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                Some(format!(
                    "{} (injected fault at the cache commit: {e})",
                    if full {
                        "database or disk is full"
                    } else {
                        "disk I/O error"
                    }
                )),
            )
        })
}

impl<E: JournalEvent> Store<E> {
    /// Applies `event`: journals it (durably, with the default persist mode) and applies it to
    /// the cache, atomically. Returns its LSN.
    ///
    /// # Errors
    ///
    /// [`CacheError::ChangeRefused`] if the cache refuses the event (constraint, missing table or
    /// column, type mismatch, no such row): nothing was journaled, nothing changed.
    /// [`CacheError::EventTooLarge`] if it encodes to more than the journal's record limit
    /// ([`JournalOptions::payload_bytes_limit`](crate::JournalOptions::payload_bytes_limit)), [`CacheError::EventUnencodable`] if its encoding
    /// would not decode again: nothing was journaled, nothing changed. [`JournalError::Poisoned`]
    /// (the store or its journal refuses writes until reopened): nothing was journaled.
    ///
    /// [`CacheError::AppliedInDoubt`] when a failure *followed* the journal write (the sync failed
    /// — an EIO from `msync` poisons the journal —, or the cache commit failed, for example
    /// with `SQLITE_FULL`): the event is journaled as the LSN the error gives, and the store is
    /// poisoned. It is not a plain failure, and retrying blindly may apply the change twice.
    /// Instead: drop the store and reopen it (which re-applies the journal to the cache); if
    /// the error says `durable`, the event is in; otherwise, right after the reopen,
    /// [`journal_state`](Self::journal_state)`().durable_lsn >= lsn` says whether the journal
    /// kept it (then it is in the cache and will reach the target) or lost it (then applying
    /// it again is safe). [`poisoned`](Self::poisoned) and [`status`](Self::status) keep
    /// working meanwhile. Other errors before the journal write (a cache error): nothing was
    /// journaled.
    pub fn apply(&self, event: &E) -> Result<Lsn> {
        let inner = &*self.inner;
        inner.check()?;
        // The stamp is a placeholder until the cache lock is held (`journal_in_savepoint`).
        let mut payload = encode_event_within(
            now_ms(),
            event,
            Some(Stamp {
                base_seq: 0,
                hlc: 0,
            }),
            inner.journal.options().payload_bytes_limit(),
        )?;
        let sync_mode = inner.journal.options().persist_mode == PersistMode::Sync;
        let ce = cache_err(&inner.cache_path);
        let lsn = {
            let mut w = lock(&inner.writer);
            while w.closing {
                w = inner.writer_cv.wait(w).unwrap_or_else(|e| e.into_inner());
            }
            inner.check()?;
            match journal_in_savepoint(
                &mut w,
                &inner.cache_path,
                &inner.journal,
                event,
                &mut payload,
                &ce,
            ) {
                Staged::Journaled(lsn) => lsn,
                Staged::NotJournaled(e) => return Err(e),
                Staged::NotJournaledCacheUnknown(e, cause) => {
                    drop(w);
                    inner.break_store(&cause);
                    return Err(e);
                }
                Staged::JournaledCacheUnknown(lsn, cause) => {
                    drop(w);
                    inner.break_store(&cause);
                    return Err(inner.in_doubt(lsn, cause));
                }
            }
        };
        tracing::trace!(lsn, "journaled");
        // From here on the event is in the journal: every failure is an outcome in doubt.
        if sync_mode && let Err(e) = inner.journal.wait_durable(lsn) {
            inner.break_store(&e);
            return Err(inner.in_doubt(lsn, e));
        }
        // Commit the cache transaction once every entry in it is durable. A thread whose
        // transaction holds entries not yet durable closes it to newcomers and waits for them
        // without holding the cache lock (their appenders, and the journal's sync leader,
        // must be able to run meanwhile).
        let mut w = lock(&inner.writer);
        while w.committed < lsn {
            // The open transaction was rolled back if the store broke meanwhile.
            if let Err(e) = inner.check() {
                return Err(inner.in_doubt(lsn, e));
            }
            let upto = w.txn_max;
            if !sync_mode || inner.journal.durable_lsn() >= upto {
                let r = exec_cached_with(
                    &w.conn,
                    "UPDATE syncjournal_cache SET applied_lsn = ?1",
                    upto,
                )
                .and_then(|()| inject_cache_fault(&inner.journal, &inner.cache_path))
                .and_then(|()| exec_cached(&w.conn, "COMMIT"));
                w.closing = false;
                inner.writer_cv.notify_all();
                if let Err(e) = r {
                    let err = ce(e);
                    drop(w);
                    inner.break_store(&err);
                    return Err(inner.in_doubt(lsn, err));
                }
                w.committed = upto;
                w.txn_open = false;
                break;
            }
            if w.closing {
                w = inner.writer_cv.wait(w).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            w.closing = true;
            drop(w);
            let durable = inner.journal.wait_durable(upto);
            w = lock(&inner.writer);
            if let Err(e) = durable {
                w.closing = false;
                inner.writer_cv.notify_all();
                drop(w);
                inner.break_store(&e);
                return Err(inner.in_doubt(lsn, e));
            }
        }
        drop(w);
        inner.wake();
        Ok(lsn)
    }
}

/// The store clock's next value after `last` at wall-clock time `now_ms`: the larger of the
/// time (`ms << 16`) and `last + 1` (`sync-protocol.md` §4.1).
pub(crate) fn next_hlc(last: u64, now_ms: u64) -> u64 {
    let physical = now_ms.min(u64::MAX >> HLC_LOGICAL_BITS) << HLC_LOGICAL_BITS;
    physical.max(last.saturating_add(1))
}
