//! The conflict table's statements on an SQLite target: its table, the change-log lookups that
//! find an entry's conflicts (the file's write lock keeps other batches out meanwhile), the
//! rows a resolution sees, and the records read back.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};
use uuid::Uuid;

use crate::apply::{ApplyError, RowImage, SchemaCache, row_image};
use crate::error::Result;
use crate::format::Lsn;
use crate::mutation::Columns;
use crate::target::changes::{decode_columns, row_hash, row_identity, sql_int};
use crate::target::conflicts::{
    ConflictCounts, ConflictRecord, ConflictRows, NewConflict, Probe, RawConflict, Remote,
    SELECT_CONFLICT, same_row,
};
use crate::target::sqlite::target_error;

/// The conflict table (created with the change log).
pub(crate) const CREATE_CONFLICT_TABLE: &str = "
CREATE TABLE IF NOT EXISTS syncjournal_conflicts (
    id INTEGER PRIMARY KEY,
    journal_id TEXT NOT NULL,
    lsn INTEGER NOT NULL,
    table_name TEXT NOT NULL,
    key BLOB NOT NULL,
    kind TEXT NOT NULL,
    summary TEXT NOT NULL,
    local_row BLOB,
    local_hlc INTEGER NOT NULL,
    base_seq INTEGER NOT NULL,
    base_row BLOB,
    base_known INTEGER NOT NULL,
    target_row BLOB,
    remote_journal_id TEXT NOT NULL,
    remote_seq INTEGER NOT NULL,
    remote_hlc INTEGER NOT NULL,
    resolution TEXT NOT NULL,
    result_row BLOB,
    pending INTEGER NOT NULL,
    detected_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS syncjournal_conflicts_entry ON syncjournal_conflicts (journal_id, lsn);";

/// For each probe, the latest record of its row after its base made by another journal.
pub(crate) fn find(
    conn: &Connection,
    journal: Uuid,
    probes: &[Probe],
) -> rusqlite::Result<Vec<Option<Remote>>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, hlc, journal_id, table_name, key FROM syncjournal_changes
         WHERE row_id = ?1 AND seq > ?2 AND journal_id <> ?3 ORDER BY seq DESC",
    )?;
    let me = journal.to_string();
    let mut out = Vec::with_capacity(probes.len());
    for p in probes {
        let mut rows = stmt.query((p.row_id, sql_int(p.base_seq), &me))?;
        let mut found = None;
        while let Some(r) = rows.next()? {
            let (table, key): (String, Vec<u8>) = (r.get(3)?, r.get(4)?);
            if !same_row(&p.identity, &table, &key) {
                continue;
            }
            let (seq, hlc, j): (i64, i64, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            found = (|| {
                Some(Remote {
                    seq: u64::try_from(seq).ok()?,
                    hlc: u64::try_from(hlc).ok()?,
                    journal_id: Uuid::parse_str(&j).ok()?,
                })
            })();
            break;
        }
        out.push(found);
    }
    Ok(out)
}

/// The target's row now and the row as of `base_seq`, in the batch.
pub(crate) fn rows(
    conn: &Connection,
    schema: &mut SchemaCache,
    table: &str,
    key: &Columns,
    base_seq: u64,
) -> std::result::Result<ConflictRows, ApplyError> {
    let current = match row_image(conn, schema, table, key)? {
        RowImage::Present { row, .. } => Some(row),
        RowImage::Absent { .. } | RowImage::Unknown => None,
    };
    let identity = row_identity(table, key);
    let mut stmt = conn
        .prepare_cached(
            "SELECT row, table_name, key FROM syncjournal_changes WHERE row_id = ?1 AND seq <= ?2
             ORDER BY seq DESC",
        )
        .map_err(ApplyError::from)?;
    let mut rows = stmt
        .query((row_hash(&identity), sql_int(base_seq)))
        .map_err(ApplyError::from)?;
    let mut base = None;
    while let Some(r) = rows.next().map_err(ApplyError::from)? {
        let (row, t, k): (Option<Vec<u8>>, String, Vec<u8>) = (r.get(0)?, r.get(1)?, r.get(2)?);
        if same_row(&identity, &t, &k) {
            base = Some(row.and_then(|b| decode_columns(&b).ok()));
            break;
        }
    }
    Ok(ConflictRows { current, base })
}

/// Records a conflict, in the batch.
pub(crate) fn record(conn: &Connection, c: &NewConflict<'_>) -> rusqlite::Result<()> {
    let (key, local, base, current, result) = c.encoded();
    conn.prepare_cached(
        "INSERT INTO syncjournal_conflicts (journal_id, lsn, table_name, key, kind, summary,
            local_row, local_hlc, base_seq, base_row, base_known, target_row, remote_journal_id,
            remote_seq, remote_hlc, resolution, result_row, pending, detected_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
    )?
    .execute(rusqlite::params![
        c.journal_id.to_string(),
        c.lsn as i64,
        c.table,
        key,
        c.kind,
        c.summary,
        local,
        sql_int(c.local_hlc),
        sql_int(c.base_seq),
        base,
        c.rows.base.is_some(),
        current,
        c.remote.journal_id.to_string(),
        sql_int(c.remote.seq),
        sql_int(c.remote.hlc),
        c.resolution,
        result,
        c.pending,
        sql_int(c.detected_at_ms),
    ])?;
    Ok(())
}

fn raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawConflict> {
    Ok(RawConflict {
        id: r.get(0)?,
        journal_id: r.get(1)?,
        lsn: r.get(2)?,
        table: r.get(3)?,
        key: r.get(4)?,
        kind: r.get(5)?,
        summary: r.get(6)?,
        local_row: r.get(7)?,
        local_hlc: r.get(8)?,
        base_seq: r.get(9)?,
        base_row: r.get(10)?,
        base_known: r.get(11)?,
        target_row: r.get(12)?,
        remote_journal_id: r.get(13)?,
        remote_seq: r.get(14)?,
        remote_hlc: r.get(15)?,
        resolution: r.get(16)?,
        result_row: r.get(17)?,
        pending: r.get(18)?,
        detected_at: r.get(19)?,
    })
}

/// The conflicts of `journal` (every journal's if `None`), newest first, at most `limit`.
pub(crate) fn list(
    conn: &Connection,
    path: &Path,
    journal: Option<Uuid>,
    limit: usize,
) -> Result<Vec<ConflictRecord>> {
    let te = |e| target_error(path, "list conflicts", e);
    let sql = format!(
        "SELECT {SELECT_CONFLICT} FROM syncjournal_conflicts
         WHERE ?1 IS NULL OR journal_id = ?1 ORDER BY id DESC LIMIT ?2"
    );
    let mut stmt = conn.prepare(&sql).map_err(te)?;
    let rows = stmt
        .query_map((journal.map(|j| j.to_string()), sql_int(limit as u64)), raw)
        .map_err(te)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r.map_err(te)?.check(path)?);
    }
    Ok(out)
}

/// The conflict numbered `id`.
pub(crate) fn get(conn: &Connection, path: &Path, id: u64) -> Result<Option<ConflictRecord>> {
    let te = |e| target_error(path, "read a conflict", e);
    let sql = format!("SELECT {SELECT_CONFLICT} FROM syncjournal_conflicts WHERE id = ?1");
    let raw = conn
        .query_row(&sql, [sql_int(id)], raw)
        .optional()
        .map_err(te)?;
    raw.map(|r| r.check(path)).transpose()
}

/// The conflict counts of `journal`.
pub(crate) fn counts(conn: &Connection, journal: Uuid) -> rusqlite::Result<ConflictCounts> {
    conn.prepare_cached(
        "SELECT coalesce(sum(pending = 0), 0), coalesce(sum(pending <> 0), 0)
         FROM syncjournal_conflicts WHERE journal_id = ?1",
    )?
    .query_row([journal.to_string()], |r| {
        Ok(ConflictCounts {
            resolved: r.get::<_, i64>(0)?.max(0) as u64,
            pending: r.get::<_, i64>(1)?.max(0) as u64,
        })
    })
}

/// Marks the pending conflicts of entry `lsn` of `journal` settled as `resolution`.
pub(crate) fn settle(
    conn: &Connection,
    journal: Uuid,
    lsn: Lsn,
    resolution: &str,
) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "UPDATE syncjournal_conflicts SET pending = 0, resolution = ?3
         WHERE journal_id = ?1 AND lsn = ?2 AND pending <> 0",
    )?
    .execute((journal.to_string(), lsn as i64, resolution))
    .map(|n| n as u64)
}
