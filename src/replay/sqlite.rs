//! The SQLite target on a network share: how it is opened (never created by accident, never
//! in WAL), its progress and quarantine tables, and reconnecting when the share misbehaves.

use crate::error::TargetError;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, MAIN_DB, OpenFlags, OptionalExtension};
use uuid::Uuid;

use crate::apply::is_transient;
use crate::error::{Error, Result};
use crate::format::Lsn;
use crate::replay::options::TargetOptions;

/// Progress table: one row per journal, updated in the same transaction as the entries it
/// covers. The target's copy of "how far this journal has been applied" is the truth.
pub const PROGRESS_TABLE: &str = "syncjournal_progress";
/// Quarantine table: entries the target refused under the `Quarantine` policy.
pub const REJECTED_TABLE: &str = "syncjournal_rejected";

const CREATE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS syncjournal_progress (
    journal_id TEXT PRIMARY KEY,
    lsn INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS syncjournal_rejected (
    journal_id TEXT NOT NULL,
    lsn INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    payload BLOB NOT NULL,
    summary TEXT NOT NULL,
    error TEXT NOT NULL,
    rejected_at INTEGER NOT NULL,
    PRIMARY KEY (journal_id, lsn)
);";

/// A connection to the target, opened lazily and discarded after any error that may have
/// left it unusable (a connection that lived through a share outage keeps failing).
pub(crate) struct SqliteTarget {
    path: PathBuf,
    opts: TargetOptions,
    conn: Option<Connection>,
    /// Device and inode of the file the connection has open: if the path comes to name another
    /// file (a backup renamed into place), the connection is replaced.
    identity: Option<(u64, u64)>,
}

/// Maps an SQLite error on the target to [`TargetError::Unavailable`].
pub(crate) fn target_error(path: &Path, what: &str, e: rusqlite::Error) -> Error {
    let transient = is_transient(&e);
    let cannot_open = matches!(&e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::CannotOpen);
    let dir_read_only = cannot_open
        && path
            .parent()
            .map(|d| {
                if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                }
            })
            .is_some_and(|d| {
                d.is_dir() && rustix::fs::access(d, rustix::fs::Access::WRITE_OK).is_err()
            });
    let hint = match &e {
        _ if dir_read_only => {
            " (the target's directory is read-only or not writable: SQLite needs to create its rollback journal there; will retry)"
        }
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                " (another process holds the database lock; will retry)"
            }
            rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::PermissionDenied => {
                " (the target or its directory is not writable; will retry)"
            }
            rusqlite::ErrorCode::SystemIoFailure
            | rusqlite::ErrorCode::DatabaseCorrupt
            | rusqlite::ErrorCode::CannotOpen => {
                " (the share may be offline; the connection is discarded and the watermark re-read on reconnect)"
            }
            _ => "",
        },
        _ => "",
    };
    Error::Target(TargetError::Unavailable {
        path: path.to_path_buf(),
        message: format!("{what}: {e}{hint}"),
        transient,
        source: Some(e.into()),
    })
}

impl SqliteTarget {
    pub(crate) fn new(path: PathBuf, opts: TargetOptions) -> Self {
        SqliteTarget {
            path,
            opts,
            conn: None,
            identity: None,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Drops the connection. The next use reconnects.
    pub(crate) fn discard(&mut self) {
        self.identity = None;
        if self.conn.take().is_some() {
            tracing::debug!(target = %self.path.display(), "target connection discarded");
        }
    }

    /// Opens the connection if there is none. Returns true if a new connection was opened
    /// (whatever was cached about the schema must then be forgotten).
    pub(crate) fn connect(&mut self) -> Result<bool> {
        if self.conn.is_some() {
            // The path may name another file now (replaced by a restore or a rename, or the
            // share was remounted): then this connection writes to a file nobody reads.
            match file_identity(&self.path) {
                Ok(id) if Some(id) == self.identity => return Ok(false),
                Ok(_) => {
                    tracing::warn!(target = %self.path.display(), "the target file was replaced; reconnecting");
                }
                Err(_) => {}
            }
            self.discard();
        }
        let conn = self.open()?;
        self.identity = file_identity(&self.path).ok();
        self.conn = Some(conn);
        Ok(true)
    }

    /// True if a connection is open.
    pub(crate) fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// The open connection. Call [`SqliteTarget::connect`] first.
    pub(crate) fn connection(&self) -> &Connection {
        self.conn.as_ref().expect("connect() before connection()")
    }

    /// The connection, opening it if needed.
    pub(crate) fn conn(&mut self) -> Result<&Connection> {
        self.connect()?;
        Ok(self.connection())
    }

    fn open(&self) -> Result<Connection> {
        let path = &self.path;
        let exists = match std::fs::metadata(path) {
            Ok(m) => {
                check_database_file(path, &m)?;
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                return Err(Error::Target(TargetError::Unavailable {
                    path: path.clone(),
                    message: format!("cannot reach the target file: {e} (is the share mounted?)"),
                    transient: true,
                    source: None,
                }));
            }
        };
        if !exists && !self.opts.create_if_missing {
            return Err(Error::Target(TargetError::Missing { path: path.clone() }));
        }
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if !exists {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn =
            Connection::open_with_flags(path, flags).map_err(|e| target_error(path, "open", e))?;
        conn.busy_timeout(Duration::from_millis(self.opts.busy_timeout_ms))
            .map_err(|e| target_error(path, "set busy timeout", e))?;
        // A target in WAL is refused as it is, never switched behind its users' backs (WAL's
        // index is shared memory, local to one machine: on a share it loses writes silently).
        let current: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| target_error(path, "read journal_mode", e))?;
        if current.eq_ignore_ascii_case("wal") {
            return Err(Error::Target(TargetError::Wal {
                path: path.clone(),
                mode: current,
            }));
        }
        let wanted = self.opts.journal_mode.pragma();
        let mode: String = conn
            .query_row(&format!("PRAGMA journal_mode={wanted}"), [], |r| r.get(0))
            .map_err(|e| target_error(path, "set journal_mode", e))?;
        if mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Target(TargetError::Wal {
                path: path.clone(),
                mode,
            }));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| target_error(path, "set synchronous=FULL", e))?;
        if conn
            .is_readonly(MAIN_DB)
            .map_err(|e| target_error(path, "check read-only", e))?
        {
            return Err(Error::Target(TargetError::Unavailable {
                path: path.clone(),
                message: "the target opened read-only: the file or its directory is not writable (will retry)".into(),
                transient: true,
                source: None,
            }));
        }
        if !exists && let Some(sql) = &self.opts.create_schema {
            conn.execute_batch(sql)
                .map_err(|e| target_error(path, "create schema", e))?;
        }
        self.ensure_tables(&conn)?;
        tracing::debug!(target = %path.display(), journal_mode = %mode, "target connected");
        Ok(conn)
    }

    fn ensure_tables(&self, conn: &Connection) -> Result<()> {
        let has = |t: &str| -> Result<Vec<String>> {
            let mut s = conn
                .prepare("SELECT name FROM pragma_table_info(?1)")
                .map_err(|e| target_error(&self.path, "read schema", e))?;
            let cols = s
                .query_map([t], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| target_error(&self.path, "read schema", e))?;
            Ok(cols)
        };
        let progress = has(PROGRESS_TABLE)?;
        let rejected = has(REJECTED_TABLE)?;
        if progress.is_empty() || rejected.is_empty() {
            conn.execute_batch(CREATE_TABLES)
                .map_err(|e| target_error(&self.path, "create syncjournal tables", e))?;
        }
        for (table, want, found) in [
            (
                PROGRESS_TABLE,
                &["journal_id", "lsn", "updated_at"][..],
                has(PROGRESS_TABLE)?,
            ),
            (
                REJECTED_TABLE,
                &[
                    "journal_id",
                    "lsn",
                    "kind",
                    "payload",
                    "summary",
                    "error",
                    "rejected_at",
                ][..],
                has(REJECTED_TABLE)?,
            ),
        ] {
            let missing: Vec<&str> = want
                .iter()
                .copied()
                .filter(|w| !found.iter().any(|f| f.eq_ignore_ascii_case(w)))
                .collect();
            if !missing.is_empty() {
                return Err(Error::Target(TargetError::SchemaMismatch {
                    path: self.path.clone(),
                    table: table.into(),
                    detail: format!("missing {}", missing.join(", ")),
                }));
            }
        }
        Ok(())
    }

    /// Runs the test hook for statement `index`.
    pub(crate) fn hook(&self, index: usize, label: &str) -> rusqlite::Result<()> {
        match &self.opts.faults {
            Some(f) => f.before_statement(index, label),
            None => Ok(()),
        }
    }

    /// Runs the after-commit test hook.
    pub(crate) fn after_commit_hook(&self) -> rusqlite::Result<()> {
        match &self.opts.faults {
            Some(f) => f.after_commit(),
            None => Ok(()),
        }
    }

    /// The target's watermark for `journal_id`, read through a fresh query (0: nothing
    /// applied yet).
    pub(crate) fn watermark(&mut self, journal_id: Uuid) -> Result<Lsn> {
        let path = self.path.clone();
        let conn = self.conn()?;
        let raw = read_watermark(conn, journal_id)
            .map_err(|e| target_error(&path, "read watermark", e))?;
        watermark_value(&path, raw)
    }
}

/// Reads the watermark row (the raw value: check it with [`watermark_value`]).
pub(crate) fn read_watermark(conn: &Connection, journal_id: Uuid) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT lsn FROM syncjournal_progress WHERE journal_id = ?1")?
        .query_row([journal_id.to_string()], |r| r.get(0))
        .optional()
}

/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Refuses, as a configuration error (retrying cannot help), a target that is a directory, a
/// device or any other non-regular file, or a file that is not an SQLite database: the path is
/// wrong, not the share offline.
fn check_database_file(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    let unusable = |reason: String| {
        Error::Target(TargetError::Unusable {
            path: path.to_path_buf(),
            reason,
        })
    };
    if !meta.is_file() {
        let what = crate::segment::file_type_name(&meta.file_type());
        return Err(unusable(format!("is {what}, not a database file")));
    }
    if meta.len() == 0 {
        return Ok(()); // an empty file is an empty database to SQLite
    }
    let mut head = [0u8; 16];
    let n = std::fs::File::open(path)
        .and_then(|f| {
            use std::os::unix::fs::FileExt;
            f.read_at(&mut head, 0)
        })
        .map_err(|e| {
            Error::Target(TargetError::Unavailable {
                path: path.to_path_buf(),
                message: format!("cannot read the target file: {e} (is the share mounted?)"),
                transient: true,
                source: None,
            })
        })?;
    if n < head.len() || &head != SQLITE_MAGIC {
        return Err(unusable(format!(
            "is not an SQLite database (it starts with {:02x?})",
            &head[..n]
        )));
    }
    Ok(())
}

/// Device and inode of the file at `path`.
fn file_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Reads a target's watermark and quarantine count for `journal_id`, read-only (the target
/// is not changed, and not created; a missing bookkeeping table counts as none).
pub(crate) fn peek(path: &Path, journal_id: Uuid) -> Result<(Lsn, u64)> {
    if !path.exists() {
        return Err(Error::Target(TargetError::Missing {
            path: path.to_path_buf(),
        }));
    }
    let err = |e: rusqlite::Error| target_error(path, "read", e);
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err)?;
    c.busy_timeout(Duration::from_secs(2)).map_err(err)?;
    let id = journal_id.to_string();
    let has = |t: &str| -> rusqlite::Result<bool> {
        c.query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [t],
            |r| r.get(0),
        )
    };
    let wm = if has(PROGRESS_TABLE).map_err(err)? {
        watermark_value(
            path,
            c.query_row(
                "SELECT lsn FROM syncjournal_progress WHERE journal_id = ?1",
                [&id],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(err)?,
        )?
    } else {
        0
    };
    let q = if has(REJECTED_TABLE).map_err(err)? {
        c.query_row(
            "SELECT count(*) FROM syncjournal_rejected WHERE journal_id = ?1",
            [&id],
            |r| r.get::<_, i64>(0),
        )
        .map_err(err)?
    } else {
        0
    };
    Ok((wm, q.max(0) as u64))
}

/// A watermark read from the progress table, checked: a negative value, or one past the
/// largest LSN, was not written by syncjournal.
pub(crate) fn watermark_value(path: &Path, lsn: Option<i64>) -> Result<Lsn> {
    match lsn {
        None => Ok(0),
        Some(l) if (0..=crate::format::LSN_MAX as i64).contains(&l) => Ok(l as Lsn),
        Some(l) => Err(Error::Target(TargetError::SchemaMismatch {
            path: path.to_path_buf(),
            table: PROGRESS_TABLE.into(),
            detail: format!(
                "watermark {l} is not an LSN (0 to {})",
                crate::format::LSN_MAX
            ),
        })),
    }
}

/// `PRAGMA quick_check` through a fresh read-only connection: `Ok(None)` if the file passes,
/// `Ok(Some(what))` if it does not, `Err` if it cannot be checked (the share is unreachable).
pub(crate) fn quick_check(path: &Path) -> Result<Option<String>> {
    let err = |e: rusqlite::Error| target_error(path, "integrity check", e);
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err)?;
    c.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    let rows: rusqlite::Result<Vec<String>> = c
        .prepare("PRAGMA quick_check(20)")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect());
    match rows {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => Ok(None),
        Ok(rows) => Ok(Some(rows.join("; "))),
        Err(rusqlite::Error::SqliteFailure(f, m))
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
            ) =>
        {
            Ok(Some(m.unwrap_or_else(|| f.to_string())))
        }
        Err(e) => Err(err(e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Read-only inspection of a target (`check_target`): queries only, on a connection the caller
// opened read-only.

/// The columns syncjournal requires of [`PROGRESS_TABLE`] (as `ensure_tables` checks them).
pub(crate) const PROGRESS_COLUMNS: [&str; 3] = ["journal_id", "lsn", "updated_at"];
/// The columns syncjournal requires of [`REJECTED_TABLE`] (as `ensure_tables` checks them).
pub(crate) const REJECTED_COLUMNS: [&str; 7] = [
    "journal_id",
    "lsn",
    "kind",
    "payload",
    "summary",
    "error",
    "rejected_at",
];

/// The lines of `PRAGMA integrity_check(lines_max)`: `["ok"]` when the file passes; SQLite
/// stops after `lines_max` problems.
pub(crate) fn integrity_lines(
    conn: &Connection,
    lines_max: usize,
) -> rusqlite::Result<Vec<String>> {
    let mut s = conn.prepare(&format!("PRAGMA integrity_check({lines_max})"))?;
    let rows = s.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect()
}

/// True if `table` is a table (not a view, not missing) of the main schema.
pub(crate) fn table_exists(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get(0),
    )
}

/// The column names of `table`, in order.
pub(crate) fn column_names(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut s = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let rows = s.query_map([table], |r| r.get::<_, String>(0))?;
    rows.collect()
}

/// One row of the progress table, as stored (a hand-edited table may hold any type).
pub(crate) struct ProgressRow {
    pub journal_id: rusqlite::types::Value,
    pub lsn: rusqlite::types::Value,
    pub updated_at: rusqlite::types::Value,
    /// Rows of the quarantine table with this journal id (0 without that table).
    pub quarantined: i64,
}

/// The number of rows of the progress table, and its first `rows_max` rows by journal id,
/// each with its count of quarantined entries (`with_rejected`: the quarantine table exists
/// with its columns).
pub(crate) fn progress_rows(
    conn: &Connection,
    with_rejected: bool,
    rows_max: usize,
) -> rusqlite::Result<(u64, Vec<ProgressRow>)> {
    let total: i64 = conn.query_row("SELECT count(*) FROM syncjournal_progress", [], |r| {
        r.get(0)
    })?;
    let quarantined = if with_rejected {
        "(SELECT count(*) FROM syncjournal_rejected r WHERE r.journal_id = p.journal_id)"
    } else {
        "0"
    };
    let mut s = conn.prepare(&format!(
        "SELECT p.journal_id, p.lsn, p.updated_at, {quarantined}
         FROM syncjournal_progress p ORDER BY p.journal_id LIMIT ?1"
    ))?;
    let rows = s.query_map([rows_max as i64], |r| {
        Ok(ProgressRow {
            journal_id: r.get(0)?,
            lsn: r.get(1)?,
            updated_at: r.get(2)?,
            quarantined: r.get(3)?,
        })
    })?;
    Ok((total.max(0) as u64, rows.collect::<rusqlite::Result<_>>()?))
}
