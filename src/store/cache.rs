//! The local cache: opening it (WAL, the guard triggers that refuse writes from any other
//! connection, the application's schema), checking it is still the one guarded, and catching
//! it up with the journal.

use crate::error::{CacheError, TargetError};
use std::path::Path;
use std::time::Duration;

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OptionalExtension};

use crate::apply::{ApplyContext, SchemaCache, quote_ident};
use crate::error::{Error, Result};
use crate::event::{JournalEvent, decode_event};
use crate::format::Lsn;
use crate::journal::Journal;

use crate::store::handle::cache_err;

/// Name of the SQL function that only the store's writer connection has.
pub(crate) const WRITER_FUNCTION: &str = "write_through_the_syncjournal_store";

/// Prefix of the guard triggers.
const GUARD_PREFIX: &str = "syncjournal_guard_";

/// Entries re-applied per cache transaction when catching up on open.
const CATCH_UP_BATCH: usize = 1000;

pub(crate) struct CacheWriter {
    pub(crate) conn: Connection,
    pub(crate) schema: SchemaCache,
    /// A cache transaction is open (holding applied but not yet committed entries).
    pub(crate) txn_open: bool,
    /// Highest LSN applied in the open transaction.
    pub(crate) txn_max: Lsn,
    /// Applied LSN of the last committed cache transaction.
    pub(crate) committed: Lsn,
    /// A thread is waiting for the open transaction's last entries to become durable in
    /// order to commit it: new entries wait (so that the transaction cannot keep growing).
    pub(crate) closing: bool,
    /// The cache file's identity (device, inode) at open: a file renamed over it is noticed.
    pub(crate) file_id: (u64, u64),
    /// `PRAGMA schema_version` after the guards were installed: a schema change by another
    /// connection makes the store check the guards again.
    pub(crate) schema_version: i64,
    /// The store clock's last value: the larger of the last one stamped on an event and the
    /// largest pulled (`sync-protocol.md` §4.1). Starts at 0: after a restart, the wall clock
    /// and the next pull bring it up again.
    pub(crate) hlc_last: u64,
}

/// The cache's WAL is checkpointed once it holds this many pages (SQLite's default is 1000):
/// a pull or a burst of applies rewrites the same pages again and again, and each checkpoint
/// copies every page once, however often it was written since the last. With 4 KiB pages the
/// WAL grows to about 40 MiB before a checkpoint; measured, a pull into a cache is 1.25× as
/// fast as with the default (`cargo bench --bench compare -- --only pull`).
pub(crate) const CACHE_WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;

pub(crate) fn open_cache_writer(
    path: &Path,
    journal: &Journal,
    schema: Option<&str>,
) -> Result<CacheWriter> {
    let ce = cache_err(path);
    let conn = Connection::open(path).map_err(&ce)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(&ce)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(&ce)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(cache = %path.display(), %mode, "cache could not switch to WAL");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(&ce)?;
    conn.pragma_update(None, "wal_autocheckpoint", CACHE_WAL_AUTOCHECKPOINT_PAGES)
        .map_err(&ce)?;
    // Statement journals (one per apply's savepoint) and temporary tables in memory: by
    // default SQLite moves a statement journal past 64 KiB to a file in its temporary
    // directory (SQLITE_TMPDIR, TMPDIR, /var/tmp, /usr/tmp, /tmp), another file system than
    // the cache's, whose being full made a cache write fail with SQLITE_FULL with free space
    // on the cache's disk. The memory is what the savepoint's old pages take.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(&ce)?;
    conn.create_scalar_function(WRITER_FUNCTION, 0, FunctionFlags::SQLITE_UTF8, |_| Ok(1i64))
        .map_err(&ce)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS syncjournal_cache (
            journal_id TEXT PRIMARY KEY,
            applied_lsn INTEGER NOT NULL
        );",
    )
    .map_err(&ce)?;
    conn.execute_batch(crate::store::pull::CREATE_CURSOR_TABLE)
        .map_err(&ce)?;
    // Rows in a table without guards did not come from the journal.
    refuse_unguarded(&conn, path)?;
    if let Some(sql) = schema {
        run_cache_schema(&conn, path, sql)?;
    }
    conn.execute_batch("BEGIN IMMEDIATE").map_err(&ce)?;
    let guarded = install_guards(&conn).map_err(&ce);
    let guarded = guarded.and_then(|()| conn.execute_batch("COMMIT").map_err(&ce));
    if let Err(e) = guarded {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e);
    }
    let schema_version: i64 = conn
        .query_row("PRAGMA schema_version", [], |r| r.get(0))
        .map_err(&ce)?;
    let file_id = file_identity(path)?;
    let row: Option<(String, i64)> = conn
        .query_row(
            "SELECT journal_id, applied_lsn FROM syncjournal_cache",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(&ce)?;
    let id = journal.id().to_string();
    let applied = match row {
        Some((found, applied)) if found == id => applied.max(0) as Lsn,
        Some((found, _)) => {
            return Err(Error::Cache(CacheError::Mismatch {
                path: path.to_path_buf(),
                expected: journal.id(),
                found,
            }));
        }
        None => {
            conn.execute(
                "INSERT INTO syncjournal_cache (journal_id, applied_lsn) VALUES (?1, 0)",
                [&id],
            )
            .map_err(&ce)?;
            0
        }
    };
    Ok(CacheWriter {
        conn,
        schema: SchemaCache::new(),
        txn_open: false,
        txn_max: applied,
        committed: applied,
        closing: false,
        file_id,
        schema_version,
        hlc_last: 0,
    })
}

fn file_identity(path: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
    Ok((m.dev(), m.ino()))
}

fn unguarded(path: &Path, table: Option<&str>, detail: String) -> Error {
    Error::Cache(CacheError::Unguarded {
        path: path.to_path_buf(),
        table: table.map(str::to_owned),
        detail,
    })
}

/// Runs the application's `cache_schema` in a transaction, refusing (and rolling back) one
/// that writes rows — they would be in the cache and never in the journal or the target —
/// or creates a virtual table, which cannot be guarded (see the module documentation).
fn run_cache_schema(conn: &Connection, path: &Path, sql: &str) -> Result<()> {
    let ce = cache_err(path);
    conn.execute_batch("BEGIN IMMEDIATE").map_err(&ce)?;
    let before = conn.total_changes();
    let checked = conn.execute_batch(sql).map_err(&ce).and_then(|()| {
        refuse_virtual_tables(conn, path)?;
        let rows = conn.total_changes() - before;
        if rows > 0 {
            return Err(unguarded(
                path,
                None,
                format!("cache_schema wrote {rows} rows; the cache is written only from its journal, so they would never reach the target: give cache_schema only CREATE … IF NOT EXISTS statements and journal seed data as events"),
            ));
        }
        Ok(())
    });
    match checked.and_then(|()| conn.execute_batch("COMMIT").map_err(&ce)) {
        Ok(()) => Ok(()),
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Err(e)
        }
    }
}

/// Refuses a cache holding a virtual table (FTS5, R*Tree…): SQLite cannot put triggers on
/// one, and its data lives in tables its module writes.
fn refuse_virtual_tables(conn: &Connection, path: &Path) -> Result<()> {
    let found: Option<(String, String)> = conn
        .query_row(
            "SELECT l.name, coalesce(s.sql, '') FROM pragma_table_list AS l
             LEFT JOIN sqlite_schema AS s ON s.name = l.name
             WHERE l.schema = 'main' AND l.type = 'virtual' ORDER BY l.name LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(cache_err(path))?;
    match found {
        None => Ok(()),
        Some((table, sql)) => Err(unguarded(
            path,
            Some(&table),
            format!(
                "table {table} is a virtual table ({sql}); the store guards every cache table with triggers against writes around the journal, and SQLite cannot put triggers on a virtual table (its data is written by its module, into tables of its own): keep full-text (FTS5) or R*Tree indexes out of the cache, in a database of their own built from the cache's rows"
            ),
        )),
    }
}

/// Refuses a cache table that holds rows but has none of the store's guards: it was created
/// (or its guards dropped) and written by another connection, around the journal.
/// syncjournal's bookkeeping table is checked against the journal instead.
fn refuse_unguarded(conn: &Connection, path: &Path) -> Result<()> {
    refuse_virtual_tables(conn, path)?;
    let ce = cache_err(path);
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema AS t WHERE type = 'table'
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT IN ('syncjournal_cache', 'syncjournal_pull')
             AND (SELECT count(*) FROM sqlite_schema AS g WHERE g.type = 'trigger'
                  AND g.tbl_name = t.name AND g.name LIKE 'syncjournal\\_guard\\_%' ESCAPE '\\') < 3",
        )
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(&ce)?;
    for t in tables {
        let rows: bool = conn
            .query_row(
                &format!("SELECT EXISTS (SELECT 1 FROM {})", quote_ident(&t)),
                [],
                |r| r.get(0),
            )
            .map_err(&ce)?;
        if rows {
            return Err(unguarded(
                path,
                Some(&t),
                format!(
                    "table {t} holds rows but not the store's guards: another connection created it (or dropped its guards) and wrote it around the journal, so the journal and the target do not have these rows; drop the table, or delete the cache to rebuild it from the journal"
                ),
            ));
        }
    }
    Ok(())
}

/// Checks, at the start of a cache transaction, that the cache is still the one the store
/// guarded: the same file, the applied LSN the store committed, and — if another connection
/// changed the schema — every table guarded (new empty tables get their guards now).
pub(crate) fn check_unchanged(
    conn: &Connection,
    path: &Path,
    journal: &Journal,
    committed: Lsn,
    file_id: &(u64, u64),
    schema_version: &mut i64,
) -> Result<()> {
    let ce = cache_err(path);
    let now = file_identity(path)?;
    if now != *file_id {
        return Err(unguarded(
            path,
            None,
            "the cache file was replaced under the open store (another file was renamed or copied over it); nothing was journaled: reopen the store, which checks the cache at the path against the journal".into(),
        ));
    }
    let (id, applied): (String, i64) = conn
        .prepare_cached("SELECT journal_id, applied_lsn FROM syncjournal_cache")
        .and_then(|mut st| st.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(&ce)?;
    if id != journal.id().to_string() || applied != committed as i64 {
        return Err(unguarded(
            path,
            None,
            format!(
                "the cache was rewritten under the open store (it says journal {id}, applied LSN {applied}; the store committed LSN {committed} of journal {}): a restore over it? nothing was journaled: reopen the store, which checks the cache against the journal (delete the cache to rebuild it)",
                journal.id()
            ),
        ));
    }
    let version: i64 = conn
        .prepare_cached("PRAGMA schema_version")
        .and_then(|mut st| st.query_row([], |r| r.get(0)))
        .map_err(&ce)?;
    if version != *schema_version {
        refuse_unguarded(conn, path)?;
        install_guards(conn).map_err(&ce)?;
        *schema_version = conn
            .query_row("PRAGMA schema_version", [], |r| r.get(0))
            .map_err(&ce)?;
    }
    Ok(())
}

/// Installs, on every table of the cache, triggers that abort writes from any connection but
/// the store's. Runs inside the caller's transaction.
fn install_guards(conn: &Connection) -> rusqlite::Result<()> {
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table'
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut sql = String::new();
    for t in &tables {
        for op in ["INSERT", "UPDATE", "DELETE"] {
            let trig = quote_ident(&format!("{GUARD_PREFIX}{}_{t}", op.to_ascii_lowercase()));
            sql.push_str(&format!(
                "DROP TRIGGER IF EXISTS {trig};
                 CREATE TRIGGER {trig} BEFORE {op} ON {tbl}
                 BEGIN SELECT RAISE(ABORT, 'write through the syncjournal store: this cache is written only from its journal')
                 WHERE {WRITER_FUNCTION}() IS NOT 1; END;",
                tbl = quote_ident(t)
            ));
        }
    }
    conn.execute_batch(&sql)
}

/// Applies to the cache the journal entries after its applied LSN.
pub(crate) fn catch_up<E: JournalEvent>(
    path: &Path,
    journal: &Journal,
    w: &mut CacheWriter,
) -> Result<()> {
    let ce = cache_err(path);
    let st = journal.state();
    let head = st.durable_lsn;
    if w.committed > head {
        return Err(Error::Cache(CacheError::Ahead {
            path: path.to_path_buf(),
            cache_lsn: w.committed,
            journal_lsn: head,
        }));
    }
    if w.committed == head {
        return Ok(());
    }
    if w.committed + 1 < st.first_lsn {
        return Err(Error::Cache(CacheError::Behind {
            path: path.to_path_buf(),
            cache_lsn: w.committed,
            first_retained: st.first_lsn,
        }));
    }
    let from = w.committed + 1;
    let mut reader = journal.reader(from)?;
    let mut applied = 0u64;
    loop {
        w.conn.execute_batch("BEGIN IMMEDIATE").map_err(&ce)?;
        let mut last = w.committed;
        let mut n = 0;
        while n < CATCH_UP_BATCH {
            let Some(rec) = reader.next_ref()? else { break };
            n += 1;
            if let Some(gap) = rec.gap() {
                tracing::warn!(
                    from = gap.start,
                    to = gap.end,
                    "journal entries lost to damage are missing from the cache too"
                );
                last = gap.end - 1;
                continue;
            }
            if rec.kind != E::KIND {
                let _ = w.conn.execute_batch("ROLLBACK");
                return Err(Error::Target(TargetError::UnknownKind {
                    lsn: rec.lsn,
                    kind: rec.kind,
                    expected: E::KIND,
                }));
            }
            let (_, event) = decode_event::<E>(rec.payload).map_err(|reason| {
                Error::Cache(CacheError::Undecodable {
                    lsn: rec.lsn,
                    kind: rec.kind,
                    reason,
                })
            })?;
            if let Err(e) = event.apply(&mut ApplyContext::new(&w.conn, &mut w.schema, rec.lsn)) {
                let _ = w.conn.execute_batch("ROLLBACK");
                return Err(Error::Cache(CacheError::ChangeRefused {
                    reason: format!(
                        "re-applying LSN {} to the cache failed ({e}); the cache has diverged from the journal: delete it to rebuild",
                        rec.lsn
                    ),
                }));
            }
            last = rec.lsn;
        }
        if n == 0 {
            w.conn.execute_batch("ROLLBACK").map_err(&ce)?;
            break;
        }
        w.conn
            .execute(
                "UPDATE syncjournal_cache SET applied_lsn = ?1",
                [last as i64],
            )
            .and_then(|_| w.conn.execute_batch("COMMIT"))
            .map_err(&ce)?;
        applied += last - w.committed;
        w.committed = last;
        w.txn_max = last;
    }
    tracing::info!(cache = %path.display(), from, to = w.committed, applied, "cache caught up with the journal");
    Ok(())
}
