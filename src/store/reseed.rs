//! Reseed: the cache rebuilt from one consistent snapshot of the target at a known change-log
//! sequence, this journal's entries the target does not hold yet applied on top, the pull
//! cursor set to that sequence, all in one cache transaction (`sync-protocol.md` §5).

use std::path::Path;

use serde::Serialize;

use crate::apply::{ApplyContext, ApplyError, quote_ident};
use crate::error::{CacheError, Error, JournalError, Result};
use crate::event::{JournalEvent, decode_event};
use crate::format::Lsn;
use crate::journal::Journal;
use crate::mutation::Mutation;
use crate::replay::Replayer;

use crate::store::cache::CacheWriter;
use crate::store::handle::cache_err;

/// What a reseed did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReseedReport {
    /// Rows copied from the target.
    pub rows: u64,
    /// The change log's head in the snapshot: the cache's pull cursor now.
    pub cursor_seq: u64,
    /// This journal's watermark on the target in the snapshot.
    pub target_lsn: Lsn,
    /// Local entries after it (not on the target yet) applied again on top.
    pub local_reapplied: u64,
    /// Local entries after it that the target's rows refuse (the target will refuse them
    /// too: they are quarantined or stop the sync by its policy).
    pub local_refused: u64,
}

/// The application's tables of the cache.
fn app_tables(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table'
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE 'syncjournal\\_%' ESCAPE '\\'
         ORDER BY name",
    )?
    .query_map([], |r| r.get(0))?
    .collect()
}

/// Rebuilds the cache `w` (at `path`) of `journal` from `replayer`'s target. Nothing of the
/// cache changes unless all of it succeeds.
pub(crate) fn reseed<E: JournalEvent>(
    path: &Path,
    journal: &Journal,
    w: &mut CacheWriter,
    replayer: &mut Replayer<E>,
) -> Result<ReseedReport> {
    let ce = cache_err(path);
    let tables = app_tables(&w.conn).map_err(&ce)?;
    w.conn.execute_batch("BEGIN IMMEDIATE").map_err(&ce)?;
    let r = rebuild::<E>(path, journal, w, replayer, &tables);
    replayer.idle();
    match r {
        Ok(report) => {
            if let Err(e) = w.conn.execute_batch("COMMIT") {
                let _ = w.conn.execute_batch("ROLLBACK");
                return Err(ce(e));
            }
            let head = journal.state().next_lsn - 1;
            w.committed = head;
            w.txn_max = head;
            w.schema.clear();
            tracing::info!(cache = %path.display(), rows = report.rows, cursor = report.cursor_seq, reapplied = report.local_reapplied, "cache reseeded from the target");
            Ok(report)
        }
        Err(e) => {
            let _ = w.conn.execute_batch("ROLLBACK");
            w.schema.clear();
            Err(e)
        }
    }
}

fn rebuild<E: JournalEvent>(
    path: &Path,
    journal: &Journal,
    w: &mut CacheWriter,
    replayer: &mut Replayer<E>,
    tables: &[String],
) -> Result<ReseedReport> {
    let ce = cache_err(path);
    for t in tables {
        w.conn
            .execute(&format!("DELETE FROM {}", quote_ident(t)), [])
            .map_err(&ce)?;
    }
    let mut rows = 0u64;
    let CacheWriter { conn, schema, .. } = w;
    let (cursor_seq, target_lsn) = replayer.snapshot(tables, &mut |table, key, row| {
        let m = Mutation::Upsert {
            table: table.to_string(),
            key,
            values: row,
        };
        ApplyContext::new(conn, schema, 0)
            .apply_mutation(&m)
            .map_err(|e| match e {
                ApplyError::Transient(e) => ce(e.into_inner()),
                other => Error::Cache(CacheError::PullRefused {
                    seq: 0,
                    reason: format!("a row of the target's snapshot: {other}"),
                }),
            })?;
        rows += 1;
        Ok(())
    })?;
    // This journal's entries the target does not hold yet, on top.
    let st = journal.state();
    let head = st.next_lsn - 1;
    let (mut local_reapplied, mut local_refused) = (0, 0);
    if target_lsn < head {
        if target_lsn + 1 < st.first_lsn {
            return Err(Error::Journal(JournalError::Discontinuity {
                dir: journal.dir().to_path_buf(),
                expected: target_lsn + 1,
                found: Some(st.first_lsn),
            }));
        }
        let mut reader = journal.reader(target_lsn + 1)?;
        while let Some(rec) = reader.next_ref()? {
            if rec.lsn > head {
                break;
            }
            if rec.gap().is_some() || rec.kind != E::KIND {
                local_refused += 1;
                continue;
            }
            let Ok((_, ev)) = decode_event::<E>(rec.payload) else {
                local_refused += 1;
                continue;
            };
            conn.execute_batch("SAVEPOINT sj_reseed").map_err(&ce)?;
            match ev.apply(&mut ApplyContext::new(conn, schema, rec.lsn)) {
                Ok(()) => {
                    conn.execute_batch("RELEASE sj_reseed").map_err(&ce)?;
                    local_reapplied += 1;
                }
                Err(ApplyError::Transient(e)) => return Err(ce(e.into_inner())),
                Err(e) => {
                    tracing::warn!(lsn = rec.lsn, error = %e, "a local entry not on the target yet does not apply to the target's rows");
                    conn.execute_batch("ROLLBACK TO sj_reseed; RELEASE sj_reseed")
                        .map_err(&ce)?;
                    local_refused += 1;
                }
            }
        }
    }
    conn.execute(
        "UPDATE syncjournal_cache SET applied_lsn = ?1",
        [head as i64],
    )
    .map_err(&ce)?;
    conn.execute(
        "UPDATE syncjournal_pull SET seq = ?1 WHERE id = 1",
        [cursor_seq as i64],
    )
    .map_err(&ce)?;
    Ok(ReseedReport {
        rows,
        cursor_seq,
        target_lsn,
        local_reapplied,
        local_refused,
    })
}
