//! The change log's statements on a PostgreSQL server: its tables; the records a batch writes
//! before it commits — the head row locked first (`FOR UPDATE`, held to the commit), so that
//! sequence numbers follow the commit order and each row is read after every earlier record's
//! transaction committed — and a page read in one `REPEATABLE READ` snapshot.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use postgres::Client;
use uuid::Uuid;

use crate::apply::ApplyError;
use crate::error::Error;
use crate::journal::ack::now_ms;
use crate::mutation::{Columns, Mutation, Value};
use crate::target::changes::{
    ChangeBuffer, ChangePage, NewChange, RawChange, Touched, encode_columns, next_hlcs, page_of,
    sql_int,
};
use crate::target::retention::{
    AGE_SCAN_ROWS, ChangeLogRetention, PruneReport, age_floor, new_floor,
};
use crate::target::{RowSink, watermark_value};

use super::apply::{cell, lookup};
use super::batch::Cell;
use super::catalog::{Catalog, PgTable};

/// The change log's tables, in schema-qualified, quoted names `changes` and `head`.
pub(crate) fn create_sql(changes: &str, head: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {changes} (
            seq BIGINT PRIMARY KEY,
            hlc BIGINT NOT NULL,
            journal_id TEXT NOT NULL,
            lsn BIGINT NOT NULL,
            table_name TEXT NOT NULL,
            key BYTEA NOT NULL,
            row BYTEA,
            committed_at BIGINT NOT NULL,
            row_id BIGINT NOT NULL
         );
         CREATE INDEX IF NOT EXISTS syncjournal_changes_row ON {changes} (row_id, seq);
         CREATE TABLE IF NOT EXISTS {head} (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seq BIGINT NOT NULL,
            hlc BIGINT NOT NULL,
            floor_seq BIGINT NOT NULL
         );
         INSERT INTO {head} (id, seq, hlc, floor_seq) VALUES (1, 0, 0, 0) ON CONFLICT (id) DO NOTHING;"
    )
}

/// The cursors table, in its schema-qualified, quoted name.
pub(crate) fn create_cursors_sql(cursors: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {cursors} (
            journal_id TEXT PRIMARY KEY,
            seq BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
         );"
    )
}

/// Records `journal`'s reported cursor (one statement, its own transaction).
pub(crate) fn record_cursor(
    client: &mut Client,
    cursors: &str,
    journal: Uuid,
    seq: u64,
) -> Result<(), postgres::Error> {
    client.execute(
        &format!(
            "INSERT INTO {cursors} (journal_id, seq, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (journal_id) DO UPDATE SET seq = EXCLUDED.seq, updated_at = EXCLUDED.updated_at"
        ),
        &[
            &journal.to_string(),
            &sql_int(seq),
            &(now_ms() as i64),
        ],
    )?;
    Ok(())
}

/// Prunes the log by `retention` at time `now`, in one transaction that holds the head row.
/// `tables`: the changes, head and cursors tables, qualified and quoted.
pub(crate) fn prune(
    client: &mut Client,
    (changes, head, cursors): (&str, &str, &str),
    retention: &ChangeLogRetention,
    now: u64,
) -> Result<PruneReport, postgres::Error> {
    let mut tx = client.transaction()?;
    let h = tx.query_one(
        &format!("SELECT seq, floor_seq FROM {head} WHERE id = 1 FOR UPDATE"),
        &[],
    )?;
    let (head_seq, floor) = (
        h.get::<_, i64>(0).max(0) as u64,
        h.get::<_, i64>(1).max(0) as u64,
    );
    let by_size = retention
        .keep_records_max
        .map(|_| retention.size_floor(head_seq));
    let by_age = match retention.keep_age_ms {
        None => None,
        Some(age) => {
            let sql = format!(
                "SELECT seq, committed_at FROM {changes} WHERE seq > $1 ORDER BY seq LIMIT $2"
            );
            Some(age_floor(floor, now.saturating_sub(age) as i64, |after| {
                let rows = tx.query(&sql, &[&(after as i64), &(AGE_SCAN_ROWS as i64)])?;
                Ok::<_, postgres::Error>(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            })?)
        }
    };
    let stale: Option<i64> = retention
        .cursor_stale_after_ms
        .map(|ms| now.saturating_sub(ms) as i64);
    let lowest = tx
        .query_opt(
            &format!(
                "SELECT journal_id, seq FROM {cursors}
                 WHERE $1::int8 IS NULL OR updated_at >= $1 ORDER BY seq LIMIT 1"
            ),
            &[&stale],
        )?
        .and_then(|r| {
            let j: String = r.get(0);
            Some((Uuid::parse_str(&j).ok()?, r.get::<_, i64>(1).max(0) as u64))
        });
    let (new, held_by) = new_floor(floor, by_size, by_age, lowest);
    let mut removed = 0;
    if new > floor {
        removed = tx.execute(
            &format!("DELETE FROM {changes} WHERE seq > $1 AND seq <= $2"),
            &[&(floor as i64), &(new as i64)],
        )?;
        tx.execute(
            &format!("UPDATE {head} SET floor_seq = $1 WHERE id = 1"),
            &[&(new as i64)],
        )?;
    }
    tx.commit()?;
    Ok(PruneReport {
        floor_seq: new,
        removed,
        held_by,
    })
}

/// How a column's value is read back: cast on the server to one of these.
enum Read {
    Int,
    Float,
    Bool,
    Bytes,
    Text,
}

fn read_as(typ: &str) -> (Read, &'static str) {
    match typ {
        "int2" | "int4" | "int8" => (Read::Int, "::int8"),
        "float4" | "float8" => (Read::Float, "::float8"),
        "bool" => (Read::Bool, "::bool"),
        "bytea" => (Read::Bytes, "::bytea"),
        _ => (Read::Text, "::text"),
    }
}

/// Locks the log's head (held until the batch ends), reads each touched row as it is now and
/// writes its record; moves the head.
pub(crate) fn record(
    client: &mut Client,
    catalog: &mut Catalog,
    schema: &str,
    tables: (&str, &str),
    buffer: &ChangeBuffer,
    journal_id: Uuid,
) -> std::result::Result<(), ApplyError> {
    let (changes_table, head_table) = tables;
    let head = client
        .query_one(
            &format!("SELECT seq, hlc FROM {head_table} WHERE id = 1 FOR UPDATE"),
            &[],
        )
        .map_err(super::apply::apply_error)?;
    let (seq, hlc): (i64, i64) = (head.get(0), head.get(1));
    let records = images(client, catalog, schema, buffer, journal_id)?;
    if records.is_empty() {
        return Ok(());
    }
    let inherited = inherited_hlcs(client, changes_table, &records)?;
    let clocks = records.iter().map(|c| {
        let mut clock = c.clock;
        if clock.inherit {
            let row = (c.table.clone(), encode_columns(&c.key));
            clock.hlc = Some(inherited.get(&row).copied().unwrap_or(0));
        }
        clock
    });
    let (hlcs, head_hlc) = next_hlcs(hlc as u64, clocks);
    let at = now_ms() as i64;
    let mut sql = format!(
        "INSERT INTO {changes_table} (seq, hlc, journal_id, lsn, table_name, key, row, committed_at, row_id) VALUES "
    );
    let journal = Cell::Text(journal_id.to_string()).literal();
    for (i, (c, h)) in records.iter().zip(&hlcs).enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        let row = match &c.row {
            Some(r) => Cell::Bytes(encode_columns(r)).literal(),
            None => "NULL".into(),
        };
        sql.push_str(&format!(
            "({}, {}, {journal}, {}, {}, {}, {row}, {at}, {})",
            seq + 1 + i as i64,
            *h as i64,
            c.lsn as i64,
            Cell::Text(c.table.clone()).literal(),
            Cell::Bytes(encode_columns(&c.key)).literal(),
            c.row_id(),
        ));
    }
    sql.push_str(&format!(
        "; UPDATE {head_table} SET seq = {}, hlc = {} WHERE id = 1",
        seq + records.len() as i64,
        head_hlc as i64
    ));
    client
        .batch_execute(&sql)
        .map_err(super::apply::apply_error)
}

/// The HLC of the latest record of each row whose record inherits it (`EntryClock::inherit`):
/// one query, only if there is such a row.
fn inherited_hlcs(
    client: &mut Client,
    changes_table: &str,
    records: &[NewChange],
) -> std::result::Result<HashMap<(String, Vec<u8>), u64>, ApplyError> {
    let ids: Vec<i64> = records
        .iter()
        .filter(|c| c.clock.inherit)
        .map(NewChange::row_id)
        .collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = client
        .query(
            &format!(
                "SELECT DISTINCT ON (row_id, table_name, key) table_name, key, hlc
                 FROM {changes_table}
                 WHERE row_id = ANY($1) ORDER BY row_id, table_name, key, seq DESC"
            ),
            &[&ids],
        )
        .map_err(super::apply::apply_error)?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                (r.get::<_, String>(0), r.get::<_, Vec<u8>>(1)),
                r.get::<_, i64>(2).max(0) as u64,
            )
        })
        .collect())
}

/// The records of the touched rows, each as it is now: one query per table.
pub(crate) fn images(
    client: &mut Client,
    catalog: &mut Catalog,
    schema: &str,
    buffer: &ChangeBuffer,
    journal_id: Uuid,
) -> std::result::Result<Vec<NewChange>, ApplyError> {
    let mut by_table: Vec<(String, Vec<&Touched>)> = Vec::new();
    let mut ix: HashMap<String, usize> = HashMap::new();
    for t in buffer.rows() {
        let k = t.table.to_ascii_lowercase();
        let i = *ix.entry(k).or_insert_with(|| {
            by_table.push((t.table.clone(), Vec::new()));
            by_table.len() - 1
        });
        by_table[i].1.push(t);
    }
    let mut out = Vec::with_capacity(buffer.rows().len());
    for (name, rows) in by_table {
        let table = match catalog.get(&name) {
            Some(t) => t,
            None => match lookup(client, schema, &name) {
                Ok(t) => {
                    let t = Arc::new(t);
                    catalog.insert(&name, Arc::clone(&t));
                    t
                }
                // A table the target does not have (a quarantined entry's): nothing to record.
                Err(ApplyError::Permanent { .. }) => continue,
                Err(e) => return Err(e),
            },
        };
        out.extend(table_images(client, &table, &rows, journal_id)?);
    }
    Ok(out)
}

fn table_images(
    client: &mut Client,
    t: &PgTable,
    rows: &[&Touched],
    journal_id: Uuid,
) -> std::result::Result<Vec<NewChange>, ApplyError> {
    let pk: Vec<usize> = (0..t.columns.len())
        .filter(|&i| t.columns[i].in_pk)
        .collect();
    if pk.is_empty() {
        return Ok(Vec::new());
    }
    // Each row's key, as literals of the key columns' types; a key that is not exactly the
    // primary key names no row to record.
    let mut wanted: Vec<(&Touched, Vec<String>)> = Vec::new();
    'rows: for r in rows {
        if r.key.len() != pk.len() {
            continue;
        }
        let m = Mutation::Delete {
            table: r.table.clone(),
            key: r.key.clone(),
        };
        let mut lits = Vec::with_capacity(pk.len());
        for &p in &pk {
            let c = &t.columns[p];
            let Some((_, v)) = r.key.iter().find(|(n, _)| n.eq_ignore_ascii_case(&c.name)) else {
                continue 'rows;
            };
            match cell(t, c, &m, v) {
                Ok(cell) => lits.push(format!("{}::{}", cell.literal(), c.sql_type)),
                Err(_) => continue 'rows,
            }
        }
        wanted.push((r, lits));
    }
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let reads: Vec<(Read, &str)> = t.columns.iter().map(|c| read_as(&c.typ)).collect();
    let select: Vec<String> = t
        .columns
        .iter()
        .zip(&reads)
        .map(|(c, (_, cast))| format!("t.{}{cast}", c.quoted))
        .collect();
    let key_names: Vec<String> = (0..pk.len()).map(|i| format!("k{i}")).collect();
    let values: Vec<String> = wanted
        .iter()
        .enumerate()
        .map(|(i, (_, lits))| format!("({i}, {})", lits.join(", ")))
        .collect();
    let on: Vec<String> = pk
        .iter()
        .zip(&key_names)
        .map(|(&p, k)| format!("t.{} = v.{k}", t.columns[p].quoted))
        .collect();
    let sql = format!(
        "SELECT v.ord, t.ctid IS NOT NULL, {} FROM (VALUES {}) AS v(ord, {}) LEFT JOIN {} t ON {} ORDER BY v.ord",
        select.join(", "),
        values.join(", "),
        key_names.join(", "),
        t.qualified,
        on.join(" AND ")
    );
    let result = client.query(&sql, &[]).map_err(super::apply::apply_error)?;
    let mut out = Vec::with_capacity(wanted.len());
    for row in result {
        let ord: i32 = row.get(0);
        let present: bool = row.get(1);
        let Some((touched, _)) = wanted.get(ord as usize) else {
            continue;
        };
        let (key, rest) = if present {
            let mut key: Vec<Option<(String, Value)>> = vec![None; pk.len()];
            let mut rest = Columns::new();
            for (i, (c, (read, _))) in t.columns.iter().zip(&reads).enumerate() {
                let v = read_value(&row, i + 2, read)?;
                match pk.iter().position(|&p| p == i) {
                    Some(k) => key[k] = Some((c.name.clone(), v)),
                    None => rest.push((c.name.clone(), v)),
                }
            }
            (key.into_iter().flatten().collect(), Some(rest))
        } else {
            let key = pk
                .iter()
                .filter_map(|&p| {
                    let c = &t.columns[p];
                    touched
                        .key
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(&c.name))
                        .map(|(_, v)| (c.name.clone(), v.clone()))
                })
                .collect();
            (key, None)
        };
        out.push(NewChange {
            journal_id,
            lsn: touched.lsn,
            clock: touched.clock,
            table: t.name.clone(),
            key,
            row: rest,
        });
    }
    Ok(out)
}

fn read_value(
    row: &postgres::Row,
    i: usize,
    read: &Read,
) -> std::result::Result<Value, ApplyError> {
    let e = super::apply::apply_error;
    Ok(match read {
        Read::Int => row.try_get::<_, Option<i64>>(i).map_err(e)?.into(),
        Read::Float => row.try_get::<_, Option<f64>>(i).map_err(e)?.into(),
        Read::Bool => row.try_get::<_, Option<bool>>(i).map_err(e)?.into(),
        Read::Bytes => row.try_get::<_, Option<Vec<u8>>>(i).map_err(e)?.into(),
        Read::Text => row.try_get::<_, Option<String>>(i).map_err(e)?.into(),
    })
}

/// A page of the log after `after`, with `journal`'s watermark, in one snapshot. `tables`:
/// the progress, changes and head tables, qualified and quoted.
pub(crate) fn read_page(
    client: &mut Client,
    name: &str,
    tables: (&str, &str, &str),
    journal: Uuid,
    after: u64,
    limit: usize,
) -> std::result::Result<ChangePage, PageError> {
    in_read_snapshot(client, |c| {
        read_in_snapshot(c, name, tables, journal, after, limit)
    })
}

/// Why a page could not be read.
pub(crate) enum PageError {
    Server(postgres::Error),
    Invalid(Error),
}

impl From<postgres::Error> for PageError {
    fn from(e: postgres::Error) -> Self {
        PageError::Server(e)
    }
}

impl From<Error> for PageError {
    fn from(e: Error) -> Self {
        PageError::Invalid(e)
    }
}

fn read_in_snapshot(
    client: &mut Client,
    name: &str,
    tables: (&str, &str, &str),
    journal: Uuid,
    after: u64,
    limit: usize,
) -> std::result::Result<ChangePage, PageError> {
    let (progress, changes, head) = tables;
    let path = Path::new(name);
    let id = journal.to_string();
    let wm = client
        .query_opt(
            &format!("SELECT lsn FROM {progress} WHERE journal_id = $1"),
            &[&id],
        )?
        .map(|r| r.get::<_, i64>(0));
    let watermark = watermark_value(path, wm)?;
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&head])?
        .get(0);
    if !exists {
        return Ok(ChangePage {
            watermark,
            ..ChangePage::default()
        });
    }
    let h = client.query_opt(
        &format!("SELECT seq, floor_seq FROM {head} WHERE id = 1"),
        &[],
    )?;
    let (head_seq, floor_seq): (i64, i64) = h.map_or((0, 0), |r| (r.get(0), r.get(1)));
    let rows = client.query(
        &format!(
            "SELECT seq, hlc, journal_id, lsn, table_name, key, row, committed_at,
                 journal_id = $3 AND EXISTS (SELECT 1 FROM {changes} l
                                             WHERE l.row_id = c.row_id AND l.seq > c.seq
                                               AND l.table_name = c.table_name AND l.key = c.key)
             FROM {changes} c WHERE seq > $1 ORDER BY seq LIMIT $2"
        ),
        &[&sql_int(after), &(limit as i64), &journal.to_string()],
    )?;
    let mut raws = Vec::with_capacity(rows.len());
    for r in rows {
        raws.push(RawChange {
            seq: r.try_get(0)?,
            hlc: r.try_get(1)?,
            journal_id: r.try_get(2)?,
            lsn: r.try_get(3)?,
            table: r.try_get(4)?,
            key: r.try_get(5)?,
            row: r.try_get(6)?,
            committed_at: r.try_get(7)?,
            superseded: r.try_get(8)?,
        });
    }
    Ok(page_of(path, watermark, (head_seq, floor_seq), raws)?)
}

/// Every row of `tables` (each looked up afresh in `schema`) and the log's head and
/// `journal`'s watermark, in one `REPEATABLE READ` snapshot, rows streamed to `sink`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn read_snapshot(
    client: &mut Client,
    name: &str,
    schema: &str,
    bookkeeping: (&str, &str, &str),
    journal: Uuid,
    tables: &[String],
    sink: &mut RowSink<'_>,
) -> std::result::Result<(u64, crate::format::Lsn), PageError> {
    in_read_snapshot(client, |c| {
        snapshot_in(c, name, schema, bookkeeping, journal, tables, sink)
    })
}

/// Runs `f` in a `REPEATABLE READ READ ONLY` transaction: one snapshot.
fn in_read_snapshot<T>(
    client: &mut Client,
    f: impl FnOnce(&mut Client) -> std::result::Result<T, PageError>,
) -> std::result::Result<T, PageError> {
    client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
    let r = f(client);
    let end = client.batch_execute(if r.is_ok() { "COMMIT" } else { "ROLLBACK" });
    let out = r?;
    end?;
    Ok(out)
}

fn snapshot_in(
    client: &mut Client,
    name: &str,
    schema: &str,
    bookkeeping: (&str, &str, &str),
    journal: Uuid,
    tables: &[String],
    sink: &mut RowSink<'_>,
) -> std::result::Result<(u64, crate::format::Lsn), PageError> {
    use postgres::fallible_iterator::FallibleIterator;
    let page = read_in_snapshot(client, name, bookkeeping, journal, u64::MAX, 0)?;
    for t in tables {
        let table = match lookup(client, schema, t) {
            Ok(table) => table,
            Err(ApplyError::Server(e)) => return Err(PageError::Server(e.into_inner())),
            Err(e) => {
                return Err(PageError::Invalid(Error::Target(
                    crate::error::TargetError::Unusable {
                        path: name.into(),
                        reason: format!(
                            "the cache's table {t:?} cannot be read from the target: {e}"
                        ),
                    },
                )));
            }
        };
        let pk: Vec<usize> = (0..table.columns.len())
            .filter(|&i| table.columns[i].in_pk)
            .collect();
        if pk.is_empty() {
            return Err(PageError::Invalid(Error::Target(
                crate::error::TargetError::Unusable {
                    path: name.into(),
                    reason: format!("table {t:?} has no primary key on the target"),
                },
            )));
        }
        let reads: Vec<(Read, &str)> = table.columns.iter().map(|c| read_as(&c.typ)).collect();
        let select: Vec<String> = table
            .columns
            .iter()
            .zip(&reads)
            .map(|(c, (_, cast))| format!("{}{cast}", c.quoted))
            .collect();
        let sql = format!("SELECT {} FROM {}", select.join(", "), table.qualified);
        let mut rows = client.query_raw(
            &sql,
            std::iter::empty::<&(dyn postgres::types::ToSql + Sync)>(),
        )?;
        while let Some(row) = rows.next()? {
            let mut key: Vec<Option<(String, Value)>> = vec![None; pk.len()];
            let mut rest = Columns::new();
            for (i, (c, (read, _))) in table.columns.iter().zip(&reads).enumerate() {
                let v = read_value(&row, i, read).map_err(|e| match e {
                    ApplyError::Server(e) => PageError::Server(e.into_inner()),
                    other => {
                        PageError::Invalid(Error::Target(crate::error::TargetError::Unusable {
                            path: name.into(),
                            reason: other.to_string(),
                        }))
                    }
                })?;
                match pk.iter().position(|&p| p == i) {
                    Some(k) => key[k] = Some((c.name.clone(), v)),
                    None => rest.push((c.name.clone(), v)),
                }
            }
            sink(&table.name, key.into_iter().flatten().collect(), rest)?;
        }
    }
    Ok((page.head_seq, page.watermark))
}
