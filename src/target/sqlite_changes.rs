//! The change log's statements on an SQLite target: its tables, the records a batch writes
//! before it commits (the file's write lock orders them), and a page read in one snapshot.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};
use uuid::Uuid;

use crate::apply::{ApplyError, RowImage, SchemaCache, for_each_row, row_image};
use crate::error::{Error, Result, TargetError};
use crate::format::Lsn;
use crate::journal::ack::now_ms;
use crate::target::changes::{
    CHANGE_HEAD_TABLE, ChangeBuffer, ChangePage, NewChange, RawChange, encode_columns, next_hlcs,
    page_of, sql_int,
};
use crate::target::retention::{
    AGE_SCAN_ROWS, ChangeLogRetention, PruneReport, age_floor, new_floor,
};
use crate::target::sqlite::{read_watermark, table_exists, target_error};
use crate::target::{RowSink, watermark_value};

/// The change log's tables.
pub(crate) const CREATE_CHANGE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS syncjournal_changes (
    seq INTEGER PRIMARY KEY,
    hlc INTEGER NOT NULL,
    journal_id TEXT NOT NULL,
    lsn INTEGER NOT NULL,
    table_name TEXT NOT NULL,
    key BLOB NOT NULL,
    row BLOB,
    committed_at INTEGER NOT NULL,
    row_id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS syncjournal_changes_row ON syncjournal_changes (row_id, seq);
CREATE TABLE IF NOT EXISTS syncjournal_change_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hlc INTEGER NOT NULL,
    floor_seq INTEGER NOT NULL
);
INSERT OR IGNORE INTO syncjournal_change_head (id, seq, hlc, floor_seq) VALUES (1, 0, 0, 0);
CREATE TABLE IF NOT EXISTS syncjournal_cursors (
    journal_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);";

/// Records `journal`'s reported cursor (in the open transaction).
pub(crate) fn record_cursor(conn: &Connection, journal: Uuid, seq: u64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO syncjournal_cursors (journal_id, seq, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (journal_id) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
    )?
    .execute((
        journal.to_string(),
        sql_int(seq),
        now_ms() as i64,
    ))?;
    Ok(())
}

/// Prunes the log by `retention` at time `now` (in the open transaction).
pub(crate) fn prune(
    conn: &Connection,
    retention: &ChangeLogRetention,
    now: u64,
) -> rusqlite::Result<PruneReport> {
    let (head, floor): (i64, i64) = conn.query_row(
        "SELECT seq, floor_seq FROM syncjournal_change_head WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (head, floor) = (head.max(0) as u64, floor.max(0) as u64);
    let by_size = retention
        .keep_records_max
        .map(|_| retention.size_floor(head));
    let by_age = match retention.keep_age_ms {
        None => None,
        Some(age) => {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, committed_at FROM syncjournal_changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            Some(age_floor(floor, now.saturating_sub(age) as i64, |after| {
                stmt.query_map((after as i64, AGE_SCAN_ROWS as i64), |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })?)
        }
    };
    let stale = retention
        .cursor_stale_after_ms
        .map(|ms| now.saturating_sub(ms) as i64);
    let lowest: Option<(String, i64)> = conn
        .prepare_cached(
            "SELECT journal_id, seq FROM syncjournal_cursors
             WHERE ?1 IS NULL OR updated_at >= ?1 ORDER BY seq LIMIT 1",
        )?
        .query_row([stale], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let lowest = lowest.and_then(|(j, s)| Some((Uuid::parse_str(&j).ok()?, s.max(0) as u64)));
    let (new, held_by) = new_floor(floor, by_size, by_age, lowest);
    let mut removed = 0;
    if new > floor {
        removed = conn
            .prepare_cached("DELETE FROM syncjournal_changes WHERE seq > ?1 AND seq <= ?2")?
            .execute((floor as i64, new as i64))? as u64;
        conn.prepare_cached("UPDATE syncjournal_change_head SET floor_seq = ?1 WHERE id = 1")?
            .execute([new as i64])?;
    }
    Ok(PruneReport {
        floor_seq: new,
        removed,
        held_by,
    })
}

/// The records of the rows `buffer` holds, each as it is now (in the batch's transaction).
pub(crate) fn images(
    conn: &Connection,
    schema: &mut SchemaCache,
    buffer: &ChangeBuffer,
    journal_id: Uuid,
) -> std::result::Result<Vec<NewChange>, ApplyError> {
    let mut out = Vec::with_capacity(buffer.rows().len());
    for t in buffer.rows() {
        let (table, key, row) = match row_image(conn, schema, &t.table, &t.key)? {
            RowImage::Unknown => continue,
            RowImage::Absent { table, key } => (table, key, None),
            RowImage::Present { table, key, row } => (table, key, Some(row)),
        };
        out.push(NewChange {
            journal_id,
            lsn: t.lsn,
            clock: t.clock,
            table,
            key,
            row,
        });
    }
    Ok(out)
}

/// Writes `changes` to the log and moves its head, in the open transaction.
pub(crate) fn write(conn: &Connection, changes: &[NewChange]) -> rusqlite::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let (seq, hlc): (i64, i64) = conn
        .prepare_cached("SELECT seq, hlc FROM syncjournal_change_head WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    // A record that inherits takes the HLC of the row's latest record (0 if none).
    let mut clocks = Vec::with_capacity(changes.len());
    for c in changes {
        let mut clock = c.clock;
        if clock.inherit {
            let last: Option<i64> = conn
                .prepare_cached(
                    "SELECT hlc FROM syncjournal_changes
                     WHERE row_id = ?1 AND table_name = ?2 AND key = ?3 ORDER BY seq DESC LIMIT 1",
                )?
                .query_row((c.row_id(), &c.table, encode_columns(&c.key)), |r| r.get(0))
                .optional()?;
            clock.hlc = Some(last.map_or(0, |h| h.max(0) as u64));
        }
        clocks.push(clock);
    }
    let (hlcs, head_hlc) = next_hlcs(hlc as u64, clocks.into_iter());
    let at = now_ms() as i64;
    let mut ins = conn.prepare_cached(
        "INSERT INTO syncjournal_changes
         (seq, hlc, journal_id, lsn, table_name, key, row, committed_at, row_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let journal = changes[0].journal_id.to_string();
    for (i, (c, h)) in changes.iter().zip(&hlcs).enumerate() {
        ins.execute((
            seq + 1 + i as i64,
            *h as i64,
            &journal,
            c.lsn as i64,
            &c.table,
            encode_columns(&c.key),
            c.row.as_ref().map(encode_columns),
            at,
            c.row_id(),
        ))?;
    }
    conn.prepare_cached("UPDATE syncjournal_change_head SET seq = ?1, hlc = ?2 WHERE id = 1")?
        .execute((seq + changes.len() as i64, head_hlc as i64))?;
    Ok(())
}

/// A page of the log after `after` with `journal`'s watermark, in one read transaction.
pub(crate) fn read_page(
    conn: &Connection,
    path: &Path,
    journal: Uuid,
    after: u64,
    limit: usize,
) -> Result<ChangePage> {
    let te = |e| target_error(path, "read the change log", e);
    conn.execute_batch("BEGIN").map_err(te)?;
    let page = read_in_snapshot(conn, path, journal, after, limit);
    let _ = conn.execute_batch("COMMIT");
    page
}

fn read_in_snapshot(
    conn: &Connection,
    path: &Path,
    journal: Uuid,
    after: u64,
    limit: usize,
) -> Result<ChangePage> {
    let te = |e| target_error(path, "read the change log", e);
    let watermark = watermark_value(path, read_watermark(conn, journal).map_err(te)?)?;
    if !table_exists(conn, CHANGE_HEAD_TABLE).map_err(te)? {
        return Ok(ChangePage {
            watermark,
            ..ChangePage::default()
        });
    }
    let head: Option<(i64, i64)> = conn
        .prepare_cached("SELECT seq, floor_seq FROM syncjournal_change_head WHERE id = 1")
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(te)?;
    let (head_seq, floor_seq) = head.unwrap_or((0, 0));
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, hlc, journal_id, lsn, table_name, key, row, committed_at,
                 CASE WHEN journal_id = ?3 THEN EXISTS (
                     SELECT 1 FROM syncjournal_changes l
                     WHERE l.row_id = c.row_id AND l.seq > c.seq
                       AND l.table_name = c.table_name AND l.key = c.key) ELSE 0 END
             FROM syncjournal_changes c WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .map_err(te)?;
    let mut rows = stmt
        .query((sql_int(after), limit as i64, journal.to_string()))
        .map_err(te)?;
    let mut raws = Vec::new();
    while let Some(r) = rows.next().map_err(te)? {
        raws.push(RawChange {
            seq: r.get(0).map_err(te)?,
            hlc: r.get(1).map_err(te)?,
            journal_id: r.get(2).map_err(te)?,
            lsn: r.get(3).map_err(te)?,
            table: r.get(4).map_err(te)?,
            key: r.get(5).map_err(te)?,
            row: r.get(6).map_err(te)?,
            committed_at: r.get(7).map_err(te)?,
            superseded: r.get(8).map_err(te)?,
        });
    }
    page_of(path, watermark, (head_seq, floor_seq), raws)
}

/// Every row of `tables` and the log's head and `journal`'s watermark, in one read transaction.
pub(crate) fn read_snapshot(
    conn: &Connection,
    schema: &mut SchemaCache,
    path: &Path,
    journal: Uuid,
    tables: &[String],
    sink: &mut RowSink<'_>,
) -> Result<(u64, Lsn)> {
    let te = |e| target_error(path, "read a snapshot", e);
    conn.execute_batch("BEGIN").map_err(te)?;
    let r = (|| {
        let page = read_in_snapshot(conn, path, journal, u64::MAX, 0)?;
        for t in tables {
            if !for_each_row(conn, schema, t, &te, sink)? {
                return Err(Error::Target(TargetError::Unusable {
                    path: path.to_path_buf(),
                    reason: format!(
                        "the target has no table {t:?} with a primary key, which the cache has"
                    ),
                }));
            }
        }
        Ok((page.head_seq, page.watermark))
    })();
    let _ = conn.execute_batch("COMMIT");
    r
}
