//! The SQLite target on a network share: how it is opened (never created by accident, never
//! in WAL), its progress and quarantine tables, the protocol's statements (`BEGIN IMMEDIATE`
//! takes the file's write lock), and reconnecting when the share misbehaves.

use crate::error::TargetError;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, MAIN_DB, OpenFlags, OptionalExtension};
use uuid::Uuid;

use crate::apply::{ApplyContext, ApplyError, SchemaCache, is_transient};
use crate::error::{Error, Result};
use crate::format::Lsn;
use crate::journal::ack::now_ms;
use crate::mutation::Columns;
use crate::target::changes::{
    CHANGE_HEAD_COLUMNS, CHANGE_HEAD_TABLE, CHANGES_COLUMNS, CHANGES_TABLE, ChangeBuffer,
    ChangePage, EntryClock,
};
use crate::target::conflicts::{
    CONFLICTS_COLUMNS, CONFLICTS_TABLE, ConflictCounts, ConflictRecord, ConflictRows, NewConflict,
    Probe, Remote,
};
use crate::target::lease::{Lease, LeaseError};
use crate::target::retention::{CURSORS_COLUMNS, CURSORS_TABLE, ChangeLogRetention, PruneReport};
use crate::target::sqlite_changes::{self, CREATE_CHANGE_TABLES};
use crate::target::sqlite_conflicts::{self, CREATE_CONFLICT_TABLE};
use crate::target::{
    Applied, BatchMode, Commit, EventDb, PROGRESS_COLUMNS, PROGRESS_TABLE, QuarantineRow,
    REJECTED_COLUMNS, REJECTED_TABLE, Rejected, RowSink, Settled, Target, TargetOptions,
    watermark_value,
};

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
    /// What the connection's database looks like, for checking row mutations; forgotten with
    /// the connection.
    schema: SchemaCache,
    /// Device and inode of the file the connection has open: if the path comes to name another
    /// file (a backup renamed into place), the connection is replaced.
    identity: Option<(u64, u64)>,
    /// The writer lease, held whenever the file is touched (`None`: turned off).
    lease: Option<Lease>,
    /// The rows the open batch touched, recorded in the change log before it commits.
    changes: ChangeBuffer,
    /// The lease's tenure the connection was opened under (see `hold_lease`).
    tenure: u64,
    /// The journal of the open batch.
    journal: Uuid,
}

/// A lease failure as the target's error.
fn lease_error(path: &Path, e: LeaseError) -> Error {
    let message = e.to_string();
    let path = path.to_path_buf();
    Error::Target(match e {
        LeaseError::Held { holder, .. } => TargetError::LeaseHeld {
            path,
            message,
            holder,
        },
        LeaseError::Lost(_) => TargetError::LeaseLost { path, message },
        LeaseError::Hostile(_) => TargetError::LeaseUnusable { path, message },
        LeaseError::Io(_, io) => {
            let hint = if not_writable(&io) {
                " (the target's directory is read-only or not writable: syncjournal keeps its writer lease file there, and SQLite its rollback journal; will retry)"
            } else if io.kind() == std::io::ErrorKind::NotFound {
                " (the target's directory does not exist: is the share mounted? will retry)"
            } else {
                " (the share may be offline; will retry)"
            };
            TargetError::Unavailable {
                path,
                message: format!("{message}{hint}"),
                transient: true,
                source: None,
            }
        }
    })
}

/// True if `e` says the target's directory cannot be written (read-only, no permission).
fn not_writable(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error().map(rustix::io::Errno::from_raw_os_error),
        Some(rustix::io::Errno::PERM | rustix::io::Errno::ACCESS | rustix::io::Errno::ROFS)
    )
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
        let lease = (opts.lease_ms > 0)
            .then(|| Lease::new(&path, None, opts.lease_ms, opts.lease_wait_ms).sweeping());
        SqliteTarget {
            lease,
            path,
            opts,
            conn: None,
            schema: SchemaCache::new(),
            identity: None,
            changes: ChangeBuffer::default(),
            tenure: 0,
            journal: Uuid::nil(),
        }
    }

    /// Takes the writer lease (or keeps it, renewing it when due) before the file is touched.
    /// With a lease taken anew (not kept), another machine may have written the file since
    /// this connection last read it, and the share's client may still cache pages from before
    /// (sshfs, like NFS's close-to-open consistency, drops them only when the file is opened):
    /// the file is opened once, which drops them, and SQLite's own cache is checked against
    /// the file's change counter at the next transaction. If that open fails, the connection
    /// is closed instead.
    fn hold_lease(&mut self) -> Result<()> {
        let Some(l) = &mut self.lease else {
            return Ok(());
        };
        l.acquire().map_err(|e| lease_error(&self.path, e))?;
        let tenure = l.tenure();
        if tenure != self.tenure {
            self.tenure = tenure;
            if self.conn.is_some() {
                let reopened = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&self.path);
                if let Err(e) = reopened {
                    tracing::debug!(target = %self.path.display(), error = %e, "lease taken anew and the file not reopened: the connection is closed");
                    self.drop_connection();
                }
            }
        }
        Ok(())
    }

    /// Renews the lease when due, inside a batch; fails if it is lost or about to run out.
    fn keep_lease(&mut self) -> Result<()> {
        let Some(l) = &mut self.lease else {
            return Ok(());
        };
        l.renew_if_due().map_err(|e| lease_error(&self.path, e))?;
        if !l.is_usable() {
            return Err(lease_error(
                &self.path,
                LeaseError::Lost("it is about to run out".into()),
            ));
        }
        Ok(())
    }

    /// Drops the connection. The next use reconnects.
    pub(crate) fn drop_connection(&mut self) {
        self.identity = None;
        self.schema.clear();
        if self.conn.take().is_some() {
            tracing::debug!(target = %self.path.display(), "target connection discarded");
        }
    }

    /// Opens the connection if there is none. Returns true if a new connection was opened
    /// (whatever was cached about the schema must then be forgotten).
    pub(crate) fn open_connection(&mut self) -> Result<bool> {
        // A missing target is reported as such, before a lease is taken beside it.
        if self.conn.is_none()
            && !self.opts.create_if_missing
            && let Err(e) = std::fs::metadata(&self.path)
            && e.kind() == std::io::ErrorKind::NotFound
        {
            return Err(Error::Target(TargetError::Missing {
                path: self.path.clone(),
            }));
        }
        self.hold_lease()?;
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
            self.drop_connection();
        }
        let conn = self.open()?;
        self.identity = file_identity(&self.path).ok();
        self.conn = Some(conn);
        Ok(true)
    }

    /// The connection, opening it if needed.
    fn conn(&mut self) -> Result<&Connection> {
        self.open_connection()?;
        self.in_batch()
    }

    /// The open connection (of the batch in progress).
    fn in_batch(&self) -> Result<&Connection> {
        open_conn(&self.conn, &self.path)
    }

    /// Runs one statement of the batch (single statements through the statement cache: no
    /// parsing per entry).
    fn exec(&self, what: &str, sql: &str) -> Result<()> {
        let conn = self.in_batch()?;
        let r = if sql.contains(';') {
            conn.execute_batch(sql)
        } else {
            conn.prepare_cached(sql)
                .and_then(|mut s| s.execute([]).map(|_| ()))
        };
        r.map_err(|e| self.unless_lease_ran_out(target_error(&self.path, what, e)))
    }

    /// `e`, or — if the lease can no longer be used (SQLite's progress handler interrupted the
    /// statement for it) — the lost lease, which is what stopped it.
    fn unless_lease_ran_out(&self, e: Error) -> Error {
        match &self.lease {
            Some(l) if !l.is_usable() => lease_error(
                &self.path,
                LeaseError::Lost(format!("it ran out during a statement ({e})")),
            ),
            _ => e,
        }
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
        let mut conn = match &self.opts.sqlite_vfs {
            Some(vfs) => Connection::open_with_flags_and_vfs(path, flags, vfs.as_str()),
            None => Connection::open_with_flags(path, flags),
        }
        .map_err(|e| target_error(path, "open", e))?;
        if let Some(lease) = &self.lease {
            // A statement stops (interrupted) once the lease could run out: the file is not
            // touched past it, however long the statement.
            let validity = lease.validity();
            conn.progress_handler(1000, Some(move || !validity.usable_now()))
                .map_err(|e| target_error(path, "install the lease check", e))?;
        }
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
        conn.pragma_update(None, "cache_size", -TARGET_CACHE_KIB)
            .map_err(|e| target_error(path, "set cache_size", e))?;
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
        if self.opts.create_if_missing
            && let Some(sql) = &self.opts.create_schema
        {
            // Run whenever the target holds no table yet, not only when this open created the
            // file: a process killed after SQLite created the empty file (before the schema
            // was in) must not leave a target without tables for good. One transaction, so
            // the schema is all there or not at all.
            let err = |e| target_error(path, "create schema", e);
            conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
            let tables: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                    [],
                    |r| r.get(0),
                )
                .map_err(err)?;
            let created = if tables == 0 {
                conn.execute_batch(sql)
            } else {
                Ok(())
            };
            match created.and_then(|()| conn.execute_batch("COMMIT")) {
                Ok(()) => {}
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(err(e));
                }
            }
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
        if self.opts.change_log
            && (has(CHANGES_TABLE)?.is_empty()
                || has(CHANGE_HEAD_TABLE)?.is_empty()
                || has(CONFLICTS_TABLE)?.is_empty()
                || has(CURSORS_TABLE)?.is_empty())
        {
            conn.execute_batch(CREATE_CHANGE_TABLES)
                .and_then(|()| conn.execute_batch(CREATE_CONFLICT_TABLE))
                .map_err(|e| target_error(&self.path, "create the change log", e))?;
        }
        let mut checks = vec![
            (PROGRESS_TABLE, &PROGRESS_COLUMNS[..], has(PROGRESS_TABLE)?),
            (REJECTED_TABLE, &REJECTED_COLUMNS[..], has(REJECTED_TABLE)?),
        ];
        if self.opts.change_log {
            checks.push((CHANGES_TABLE, &CHANGES_COLUMNS[..], has(CHANGES_TABLE)?));
            checks.push((
                CHANGE_HEAD_TABLE,
                &CHANGE_HEAD_COLUMNS[..],
                has(CHANGE_HEAD_TABLE)?,
            ));
            checks.push((
                CONFLICTS_TABLE,
                &CONFLICTS_COLUMNS[..],
                has(CONFLICTS_TABLE)?,
            ));
            checks.push((CURSORS_TABLE, &CURSORS_COLUMNS[..], has(CURSORS_TABLE)?));
        }
        for (table, want, found) in checks {
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

    /// Runs `f` in a write transaction of its own (outside any batch), under the lease, which
    /// must still be ours after the commit.
    fn own_transaction<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let path = self.path.clone();
        let te = |e| target_error(&path, what, e);
        let conn = self.conn()?;
        conn.execute_batch("BEGIN IMMEDIATE").map_err(te)?;
        let r = f(conn);
        let r = match r {
            Ok(v) => self.keep_lease().map(|()| v),
            Err(e) => Err(te(e)),
        };
        let conn = open_conn(&self.conn, &path)?;
        let v = match r {
            Ok(v) => v,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        conn.execute_batch("COMMIT")
            .map_err(|e| self.unless_lease_ran_out(te(e)))?;
        if let Some(l) = &mut self.lease
            && let Err(e) = l.check_after_commit()
        {
            tracing::error!(target = %path.display(), error = %e, "WRITER LEASE LOST across a commit");
            return Err(lease_error(&path, e));
        }
        Ok(v)
    }

    /// Writes the change-log records of the rows the batch touched, in the batch.
    fn record_changes(&mut self) -> Result<()> {
        if self.changes.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let conn = open_conn(&self.conn, &path)?;
        let records = sqlite_changes::images(conn, &mut self.schema, &self.changes, self.journal)
            .map_err(|e| match e {
            ApplyError::Transient(e) => {
                target_error(&path, "read rows for the change log", e.into_inner())
            }
            other => Error::Target(TargetError::Unusable {
                path: path.clone(),
                reason: format!("reading rows for the change log: {other}"),
            }),
        })?;
        self.changes.clear();
        sqlite_changes::write(conn, &records)
            .map_err(|e| self.unless_lease_ran_out(target_error(&path, "write the change log", e)))
    }

    /// The target's watermark for `journal_id`, read through a fresh query (0: nothing
    /// applied yet).
    fn read_now(&mut self, journal_id: Uuid) -> Result<Lsn> {
        let path = self.path.clone();
        let conn = self.conn()?;
        let raw = read_watermark(conn, journal_id)
            .map_err(|e| target_error(&path, "read watermark", e))?;
        watermark_value(&path, raw)
    }
}

/// The connection in `conn`, or the error of a batch whose connection was dropped (`path`
/// names the target). A free function, so that the caller can borrow other fields beside it.
fn open_conn<'a>(conn: &'a Option<Connection>, path: &Path) -> Result<&'a Connection> {
    conn.as_ref().ok_or_else(|| {
        Error::Target(TargetError::Unavailable {
            path: path.to_path_buf(),
            message: "no connection: the batch was ended".into(),
            transient: true,
            source: None,
        })
    })
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

/// The page cache of the target connection, in KiB (SQLite's default is 2000): a batch of
/// 1000 upserts over a table of some thousand pages dirties more than the default holds, and
/// each page spilled before the commit costs a sync of the rollback journal (on a share,
/// round trips). Measured, replay with the change log off goes from 0.76× to 0.90× the raw
/// upsert loop (`cargo bench --bench compare -- --only replay`); it is at most this much
/// memory per target connection.
pub(crate) const TARGET_CACHE_KIB: i64 = 16_384;

/// How long a read of the target outside a replayer waits for another holder of the writer
/// lease (see [`ReadLease`]).
pub(crate) const READ_LEASE_WAIT_MS: u64 = 10_000;

/// The writer lease, taken for a read of the target file outside a replayer: the store's peek
/// at open, a follower's acknowledgement, `status`, `check-target` (`sync-protocol.md` §1.3,
/// "Read"). On a share that does not forward locks, a read while another machine commits can
/// see pages of a transaction that is not committed yet (and may never be). Taken with the
/// defaults of [`TargetOptions`], released when dropped.
pub(crate) struct ReadLease {
    path: PathBuf,
    lease: Option<Lease>,
}

impl ReadLease {
    /// Takes the lease of the target at `path`, waiting up to [`READ_LEASE_WAIT_MS`] for
    /// another holder. Where the lease file cannot be created because the directory is not
    /// writable (a read-only mount), the read goes ahead without it: say so in the log.
    pub(crate) fn take(path: &Path) -> Result<ReadLease> {
        let defaults = TargetOptions::new();
        let mut lease = Lease::new(path, None, defaults.lease_ms, READ_LEASE_WAIT_MS);
        match lease.acquire() {
            Ok(()) => Ok(ReadLease {
                path: path.to_path_buf(),
                lease: Some(lease),
            }),
            Err(LeaseError::Io(_, e)) if not_writable(&e) => {
                tracing::debug!(target = %path.display(), error = %e, "the target's directory is not writable: read without the writer lease");
                Ok(ReadLease {
                    path: path.to_path_buf(),
                    lease: None,
                })
            }
            Err(e) => Err(lease_error(path, e)),
        }
    }

    /// After the read: the lease must still have been ours all along, or what was read may
    /// be torn (another machine took the file over meanwhile).
    pub(crate) fn check(mut self) -> Result<()> {
        match &mut self.lease {
            Some(l) => l
                .check_after_commit()
                .map_err(|e| lease_error(&self.path, e)),
            None => Ok(()),
        }
    }
}

/// Reads a target's watermark and quarantine count for `journal_id`, read-only (the target
/// is not changed, and not created; a missing bookkeeping table counts as none), under the
/// writer lease ([`ReadLease`]).
pub(crate) fn peek(path: &Path, journal_id: Uuid) -> Result<(Lsn, u64)> {
    if !path.exists() {
        return Err(Error::Target(TargetError::Missing {
            path: path.to_path_buf(),
        }));
    }
    let lease = ReadLease::take(path)?;
    let read = peek_unleased(path, journal_id)?;
    lease.check()?;
    Ok(read)
}

/// [`peek`]'s reads, through a fresh read-only connection.
fn peek_unleased(path: &Path, journal_id: Uuid) -> Result<(Lsn, u64)> {
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

impl Target for SqliteTarget {
    fn connect(&mut self) -> Result<bool> {
        self.open_connection()
    }

    fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    fn discard(&mut self) {
        self.drop_connection();
    }

    fn begin(&mut self, journal: Uuid, _mode: BatchMode) -> Result<()> {
        if let Some(l) = &mut self.lease {
            l.name_journal(journal);
        }
        self.changes.clear();
        self.journal = journal;
        // Local statements cost no round trip: every batch goes entry by entry.
        self.open_connection()?;
        self.keep_lease()?;
        // The file's write lock, for the whole batch: no other writer (of any journal) can
        // move this journal's watermark until it ends.
        self.exec("BEGIN", "BEGIN IMMEDIATE")
    }

    fn read_watermark(&mut self, journal: Uuid) -> Result<Lsn> {
        let raw = read_watermark(self.in_batch()?, journal)
            .map_err(|e| target_error(&self.path, "read watermark", e))?;
        watermark_value(&self.path, raw)
    }

    fn savepoint(&mut self) -> Result<()> {
        self.exec("savepoint", "SAVEPOINT sj_entry")
    }

    fn apply(
        &mut self,
        lsn: Lsn,
        f: &mut dyn FnMut(EventDb<'_, '_>) -> std::result::Result<(), ApplyError>,
    ) -> Result<Applied> {
        // Per entry only the published state is read: the renewal thread renews, and BEGIN
        // and COMMIT check on their own.
        if let Some(l) = &self.lease
            && !l.usable_now()
        {
            return Err(lease_error(
                &self.path,
                LeaseError::Lost("it is about to run out".into()),
            ));
        }
        let path = self.path.clone();
        let conn = open_conn(&self.conn, &path)?;
        let mut ctx = ApplyContext::new(conn, &mut self.schema, lsn);
        let r = f(EventDb::Sqlite(&mut ctx));
        // An entry "refused" because the lease check interrupted it was not refused.
        if r.is_err()
            && let Some(l) = &self.lease
            && !l.is_usable()
        {
            return Err(lease_error(
                &path,
                LeaseError::Lost("it ran out while an entry was applied".into()),
            ));
        }
        match r {
            Ok(()) => Ok(Applied::Done),
            Err(ApplyError::Permanent { reason }) => Ok(Applied::Refused(reason)),
            Err(ApplyError::Unsupported { backend }) => Ok(Applied::Unsupported(backend)),
            Err(ApplyError::Transient(e)) => Err(target_error(
                &path,
                &format!("apply LSN {lsn}"),
                e.into_inner(),
            )),
            #[cfg(feature = "postgres")]
            Err(e @ ApplyError::Server(_)) => Err(Error::Target(TargetError::Unavailable {
                path,
                message: format!("apply LSN {lsn}: {e}"),
                transient: true,
                source: None,
            })),
        }
    }

    fn release(&mut self) -> Result<()> {
        self.exec("release", "RELEASE sj_entry")
    }

    fn rollback_to(&mut self) -> Result<()> {
        self.exec("rollback to", "ROLLBACK TO sj_entry; RELEASE sj_entry")
    }

    fn quarantine(&mut self, journal: Uuid, entry: &Rejected<'_>) -> Result<()> {
        self.in_batch()?
            .prepare_cached(
                "INSERT OR REPLACE INTO syncjournal_rejected
                 (journal_id, lsn, kind, payload, summary, error, rejected_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| {
                s.execute((
                    journal.to_string(),
                    entry.lsn as i64,
                    i64::from(entry.kind),
                    entry.payload,
                    entry.summary,
                    entry.reason,
                    now_ms() as i64,
                ))
            })
            .map(|_| ())
            .map_err(|e| target_error(&self.path, "quarantine", e))
    }

    fn set_watermark(&mut self, journal: Uuid, lsn: Lsn) -> Result<()> {
        self.in_batch()?
            .prepare_cached(
                "INSERT INTO syncjournal_progress (journal_id, lsn, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (journal_id) DO UPDATE SET lsn = excluded.lsn, updated_at = excluded.updated_at",
            )
            .and_then(|mut s| s.execute((journal.to_string(), lsn as i64, now_ms() as i64)))
            .map(|_| ())
            .map_err(|e| target_error(&self.path, "update watermark", e))
    }

    fn settle(&mut self) -> Result<Settled> {
        // Every statement already ran (entry by entry).
        Ok(Settled::Applied)
    }

    fn touch(&mut self, table: &str, key: &Columns, lsn: Lsn, clock: EntryClock) {
        if self.opts.change_log {
            self.changes.touch(table, key, lsn, clock);
        }
    }

    fn commit(&mut self) -> Commit {
        if let Err(e) = self.record_changes() {
            return Commit::Failed(e);
        }
        // Never commit under a lease that could run out before the commit has landed.
        if let Err(e) = self.keep_lease() {
            return Commit::Failed(e);
        }
        // On a share, a COMMIT that reports an error may still have landed: always in doubt.
        match self.exec("commit", "COMMIT") {
            Ok(()) => {}
            Err(e) => return Commit::InDoubt(e),
        }
        // The lease must still have been ours: if not, another machine may have written the
        // file while this commit did.
        match &mut self.lease {
            Some(l) => match l.check_after_commit() {
                Ok(()) => Commit::Landed,
                Err(e) => {
                    tracing::error!(target = %self.path.display(), error = %e, "WRITER LEASE LOST across a commit: verifying the commit and the file's integrity");
                    Commit::InDoubt(lease_error(&self.path, e))
                }
            },
            None => Commit::Landed,
        }
    }

    fn rollback(&mut self) {
        self.changes.clear();
        if let Some(c) = &self.conn
            && !c.is_autocommit()
        {
            let _ = c.execute_batch("ROLLBACK");
        }
    }

    fn watermark(&mut self, journal: Uuid) -> Result<Lsn> {
        let r = self.read_now(journal);
        if r.is_err() {
            self.drop_connection();
        }
        r
    }

    fn keeps_connection(&self, e: &Error) -> bool {
        e.sqlite().is_some_and(|s| s.is_busy())
    }

    fn is_damage(&self, e: &Error) -> bool {
        e.sqlite().is_some_and(|s| s.is_corrupt())
            || matches!(e, Error::Target(TargetError::LeaseLost { .. }))
    }

    fn integrity(&mut self) -> Result<Option<String>> {
        self.hold_lease()?;
        quick_check(&self.path)
    }

    fn changes_after(&mut self, journal: Uuid, after: u64, limit: usize) -> Result<ChangePage> {
        let path = self.path.clone();
        let r = self
            .conn()
            .and_then(|c| sqlite_changes::read_page(c, &path, journal, after, limit));
        if r.is_err() {
            self.drop_connection();
        }
        r
    }

    fn snapshot(
        &mut self,
        journal: Uuid,
        tables: &[String],
        sink: &mut RowSink<'_>,
    ) -> Result<(u64, Lsn)> {
        let path = self.path.clone();
        self.open_connection()?;
        let conn = open_conn(&self.conn, &path)?;
        let r = sqlite_changes::read_snapshot(conn, &mut self.schema, &path, journal, tables, sink);
        if r.is_err() {
            self.drop_connection();
        }
        r
    }

    fn idle(&mut self) {
        if let Some(l) = &mut self.lease {
            l.release();
        }
    }

    fn quarantined(&mut self, journal: Uuid) -> Result<Vec<QuarantineRow>> {
        let path = self.path.clone();
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT lsn, kind, payload, summary, error, rejected_at FROM syncjournal_rejected
                 WHERE journal_id = ?1 ORDER BY lsn",
            )
            .map_err(|e| target_error(&path, "list quarantine", e))?;
        stmt.query_map([journal.to_string()], quarantine_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| target_error(&path, "list quarantine", e))
    }

    fn quarantined_entry(&mut self, journal: Uuid, lsn: Lsn) -> Result<Option<QuarantineRow>> {
        self.in_batch()?
            .query_row(
                "SELECT lsn, kind, payload, summary, error, rejected_at FROM syncjournal_rejected
                 WHERE journal_id = ?1 AND lsn = ?2",
                (journal.to_string(), lsn as i64),
                quarantine_row,
            )
            .optional()
            .map_err(|e| target_error(&self.path, "read quarantine", e))
    }

    fn remove_quarantined(&mut self, journal: Uuid, lsn: Lsn) -> Result<u64> {
        let path = self.path.clone();
        let conn = self.conn()?;
        conn.execute(
            "DELETE FROM syncjournal_rejected WHERE journal_id = ?1 AND lsn = ?2",
            (journal.to_string(), lsn as i64),
        )
        .map(|n| n as u64)
        .map_err(|e| target_error(&path, "remove quarantined entry", e))
    }

    fn note_refused_again(&mut self, journal: Uuid, lsn: Lsn, reason: &str) -> Result<()> {
        let path = self.path.clone();
        self.conn()?
            .execute(
                "UPDATE syncjournal_rejected SET error = ?3, rejected_at = ?4 WHERE journal_id = ?1 AND lsn = ?2",
                (journal.to_string(), lsn as i64, reason, now_ms() as i64),
            )
            .map(|_| ())
            .map_err(|e| target_error(&path, "record the new refusal", e))
    }

    fn find_conflicts(&mut self, journal: Uuid, probes: &[Probe]) -> Result<Vec<Option<Remote>>> {
        if !self.opts.change_log || probes.is_empty() {
            return Ok(vec![None; probes.len()]);
        }
        sqlite_conflicts::find(self.in_batch()?, journal, probes).map_err(|e| {
            self.unless_lease_ran_out(target_error(&self.path, "look for conflicts", e))
        })
    }

    fn conflict_rows(&mut self, table: &str, key: &Columns, base_seq: u64) -> Result<ConflictRows> {
        let path = self.path.clone();
        let conn = open_conn(&self.conn, &path)?;
        sqlite_conflicts::rows(conn, &mut self.schema, table, key, base_seq).map_err(|e| match e {
            ApplyError::Transient(e) => {
                target_error(&path, "read a conflict's rows", e.into_inner())
            }
            other => Error::Target(TargetError::Unusable {
                path: path.clone(),
                reason: format!("reading a conflict's rows: {other}"),
            }),
        })
    }

    fn record_conflict(&mut self, c: &NewConflict<'_>) -> Result<()> {
        sqlite_conflicts::record(self.in_batch()?, c).map_err(|e| {
            self.unless_lease_ran_out(target_error(&self.path, "record a conflict", e))
        })
    }

    fn conflicts(&mut self, journal: Option<Uuid>, limit: usize) -> Result<Vec<ConflictRecord>> {
        let path = self.path.clone();
        let conn = self.conn()?;
        if !table_exists(conn, CONFLICTS_TABLE)
            .map_err(|e| target_error(&path, "list conflicts", e))?
        {
            return Ok(Vec::new());
        }
        sqlite_conflicts::list(conn, &path, journal, limit)
    }

    fn conflict(&mut self, id: u64) -> Result<Option<ConflictRecord>> {
        let path = self.path.clone();
        let conn = self.conn()?;
        if !table_exists(conn, CONFLICTS_TABLE)
            .map_err(|e| target_error(&path, "read a conflict", e))?
        {
            return Ok(None);
        }
        sqlite_conflicts::get(conn, &path, id)
    }

    fn conflict_counts(&mut self, journal: Uuid) -> Result<ConflictCounts> {
        let path = self.path.clone();
        let conn = self.conn()?;
        let te = |e| target_error(&path, "count conflicts", e);
        if !table_exists(conn, CONFLICTS_TABLE).map_err(te)? {
            return Ok(ConflictCounts::default());
        }
        sqlite_conflicts::counts(conn, journal).map_err(te)
    }

    fn settle_conflicts(&mut self, journal: Uuid, lsn: Lsn, resolution: &str) -> Result<u64> {
        let path = self.path.clone();
        let conn = self.conn()?;
        let te = |e| target_error(&path, "settle conflicts", e);
        if !table_exists(conn, CONFLICTS_TABLE).map_err(te)? {
            return Ok(0);
        }
        sqlite_conflicts::settle(conn, journal, lsn, resolution).map_err(te)
    }

    fn record_cursor(&mut self, journal: Uuid, seq: u64) -> Result<()> {
        if !self.opts.change_log {
            return Ok(());
        }
        self.own_transaction("record the cache's cursor", |c| {
            sqlite_changes::record_cursor(c, journal, seq)
        })
    }

    fn prune_changes(&mut self, retention: &ChangeLogRetention) -> Result<PruneReport> {
        if !self.opts.change_log || !retention.prunes() {
            return Ok(PruneReport::default());
        }
        let now = now_ms();
        self.own_transaction("prune the change log", |c| {
            sqlite_changes::prune(c, retention, now)
        })
    }

    fn quarantine_count(&mut self, journal: Uuid) -> Result<u64> {
        let path = self.path.clone();
        self.conn()?
            .query_row(
                "SELECT count(*) FROM syncjournal_rejected WHERE journal_id = ?1",
                [journal.to_string()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
            .map_err(|e| target_error(&path, "count quarantine", e))
    }
}

fn quarantine_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<QuarantineRow> {
    Ok(QuarantineRow {
        lsn: r.get::<_, i64>(0)? as Lsn,
        kind: r.get::<_, i64>(1)? as u8,
        payload: r.get(2)?,
        summary: r.get(3)?,
        error: r.get(4)?,
        rejected_at_ms: r.get::<_, i64>(5)? as u64,
    })
}

// ---------------------------------------------------------------------------------------------
// Read-only inspection of a target (`check_target`): queries only, on a connection the caller
// opened read-only.

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
