//! Checking a target database without changing it (`syncjournal check-target`): its integrity,
//! its journal mode, syncjournal's bookkeeping tables, and the journals it has applied.
//!
//! The target is opened read-only and never created. A WAL-mode file is opened so that SQLite
//! creates no `-wal` or `-shm` file beside it (`immutable=1` when it has no `-wal` file);
//! the mode is read from the file's header, because a rollback journal mode (`DELETE`,
//! `TRUNCATE`) is chosen by each connection and not stored in the file.

use crate::error::TargetError;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::format::Lsn;
use crate::target::sqlite::{
    column_names, integrity_lines, progress_rows, table_exists, target_error,
};
use crate::target::{PROGRESS_COLUMNS, PROGRESS_TABLE, REJECTED_COLUMNS, REJECTED_TABLE};

/// Most lines of `PRAGMA integrity_check` kept: SQLite stops after this many problems.
pub const INTEGRITY_LINES_MAX: usize = 10;

/// Most journals (rows of the progress table) listed; the total is counted regardless.
pub const JOURNALS_LISTED_MAX: usize = 1000;

/// How long the check waits for a writer's lock before it reports the target busy.
const BUSY_TIMEOUT_MS: u64 = 5000;

/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Bytes of an SQLite database header.
const SQLITE_HEADER_BYTES: usize = 100;

/// What [`check_target`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TargetCheck {
    /// The target database.
    pub path: PathBuf,
    /// Its size in bytes.
    pub file_bytes: u64,
    /// The result of `PRAGMA integrity_check`, `None` if it could not be run without creating
    /// files beside the target (see [`TargetCheck::problems`]).
    pub integrity: Option<Integrity>,
    /// The journal mode stored in the file: `"wal"`, or `"rollback"` (the rollback journal
    /// modes, `DELETE` or `TRUNCATE`, are chosen by each connection; syncjournal uses
    /// `TRUNCATE`); `"unknown (…)"` for a header this check does not know.
    pub journal_mode: String,
    /// True if the file is in WAL mode, which syncjournal refuses for a target on a share.
    pub wal: bool,
    /// The progress table (one row per journal: its watermark).
    pub progress_table: TableCheck,
    /// The quarantine table (entries the target refused).
    pub rejected_table: TableCheck,
    /// The journals the progress table holds, by journal id (at most
    /// [`JOURNALS_LISTED_MAX`]).
    pub journals: Vec<JournalSeen>,
    /// How many rows the progress table holds.
    pub journals_total: u64,
    /// What stops syncjournal from using the target, other than damage: WAL, tables with
    /// other columns, values syncjournal did not write, a check that could not be run.
    pub problems: Vec<String>,
}

impl TargetCheck {
    /// True if the integrity check failed: the file is damaged.
    pub fn is_damaged(&self) -> bool {
        self.integrity.as_ref().is_some_and(|i| !i.ok)
    }

    /// True if the file passed its integrity check and nothing stops syncjournal from using
    /// it.
    pub fn is_healthy(&self) -> bool {
        self.integrity.as_ref().is_some_and(|i| i.ok) && self.problems.is_empty()
    }
}

/// The result of `PRAGMA integrity_check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Integrity {
    /// True if SQLite answered `ok`.
    pub ok: bool,
    /// What it answered: `ok`, or its first [`INTEGRITY_LINES_MAX`] problems (or the error
    /// that stopped the check, when the damage stops SQLite from reading the file).
    pub lines: Vec<String>,
    /// True if the check stopped before the end of the file: after
    /// [`INTEGRITY_LINES_MAX`] problems, or at damage that stops SQLite from reading on.
    pub stopped_early: bool,
}

/// One of syncjournal's tables on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCheck {
    /// The table's name.
    pub name: &'static str,
    /// True if the table exists (a target syncjournal has not written yet has neither table:
    /// the first sync creates them).
    pub exists: bool,
    /// Columns syncjournal needs that the table lacks.
    pub missing_columns: Vec<String>,
    /// Why the table could not be read, if it could not.
    pub error: Option<String>,
}

impl TableCheck {
    /// True if the table exists with every column syncjournal needs.
    pub fn is_usable(&self) -> bool {
        self.exists && self.missing_columns.is_empty() && self.error.is_none()
    }
}

/// A journal the target has applied entries of (a row of its progress table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalSeen {
    /// The journal's id as stored (a UUID when syncjournal wrote it).
    pub journal_id: String,
    /// The target's watermark for it: entries up to this LSN are applied (`None`: the stored
    /// value is not an LSN, see [`TargetCheck::problems`]).
    pub watermark: Option<Lsn>,
    /// When the watermark last moved, ms since the Unix epoch (`None`: not a time).
    pub updated_at_ms: Option<u64>,
    /// Entries of this journal in the quarantine table.
    pub quarantined: u64,
}

/// Checks the target `target` names without changing it: an SQLite file as
/// [`check_target`] does; a PostgreSQL server for syncjournal's tables, their columns and
/// the journals it has seen (the server checks its own pages: `integrity` then says so).
pub fn check_target_spec(target: &crate::target::TargetSpec) -> Result<TargetCheck> {
    match target {
        crate::target::TargetSpec::Sqlite(path) => check_target(path),
        #[cfg(feature = "postgres")]
        crate::target::TargetSpec::Postgres(conn) => check_server(conn),
        #[cfg(not(feature = "postgres"))]
        crate::target::TargetSpec::Postgres(conn) => Err(crate::target::no_postgres(conn)),
    }
}

#[cfg(feature = "postgres")]
fn check_server(conn: &crate::target::ConnString) -> Result<TargetCheck> {
    let found = crate::target::postgres::inspect(conn, JOURNALS_LISTED_MAX)?;
    let table = |name: &'static str, cols: &Option<Vec<String>>, want: &[&str]| TableCheck {
        name,
        exists: cols.is_some(),
        missing_columns: cols.as_ref().map_or(Vec::new(), |c| {
            want.iter()
                .filter(|w| !c.iter().any(|x| x == *w))
                .map(|w| w.to_string())
                .collect()
        }),
        error: None,
    };
    let progress_table = table(PROGRESS_TABLE, &found.progress_columns, &PROGRESS_COLUMNS);
    let rejected_table = table(REJECTED_TABLE, &found.rejected_columns, &REJECTED_COLUMNS);
    let mut problems = Vec::new();
    for t in [&progress_table, &rejected_table] {
        if t.exists && !t.missing_columns.is_empty() {
            problems.push(format!(
                "table {} lacks column(s) {}",
                t.name,
                t.missing_columns.join(", ")
            ));
        }
    }
    let journals = found
        .journals
        .iter()
        .map(|(id, lsn, at, q)| {
            let watermark = (0..=crate::format::LSN_MAX as i64)
                .contains(lsn)
                .then_some(*lsn as Lsn);
            if watermark.is_none() {
                problems.push(format!("journal {id}: watermark {lsn} is not an LSN"));
            }
            JournalSeen {
                journal_id: id.clone(),
                watermark,
                updated_at_ms: (*at >= 0).then_some(*at as u64),
                quarantined: (*q).max(0) as u64,
            }
        })
        .collect();
    Ok(TargetCheck {
        path: PathBuf::from(conn.redacted()),
        file_bytes: found.db_bytes,
        integrity: Some(Integrity {
            ok: true,
            lines: vec!["not checked from here: a PostgreSQL server checks its own pages (data checksums, amcheck)".into()],
            stopped_early: false,
        }),
        journal_mode: "server (PostgreSQL)".into(),
        wal: false,
        progress_table,
        rejected_table,
        journals,
        journals_total: found.journals_total,
        problems,
    })
}

/// Checks the target database at `path` without changing it: `PRAGMA integrity_check`, the
/// journal mode, syncjournal's tables and their columns, and the journals it has seen. Damage
/// is reported in the result ([`TargetCheck::is_damaged`]), not as an error.
///
/// # Errors
///
/// [`TargetError::Missing`] if there is no file at `path` (an unmounted share looks like
/// this); [`TargetError::Unavailable`] if it is not a regular file, is not an SQLite database, cannot be
/// read (busy past a timeout, I/O error, a hot rollback journal that a read-only connection
/// cannot roll back).
pub fn check_target(path: &Path) -> Result<TargetCheck> {
    let fail = |message: String, transient: bool| {
        Error::Target(TargetError::Unavailable {
            path: path.to_path_buf(),
            message,
            transient,
            source: None,
        })
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Target(TargetError::Missing {
                path: path.to_path_buf(),
            }));
        }
        Err(e) => {
            return Err(fail(
                format!("cannot reach the target file: {e} (is the share mounted?)"),
                true,
            ));
        }
    };
    if !meta.is_file() {
        return Err(fail(
            "is not a regular file (a directory or a device): name the database file".into(),
            false,
        ));
    }
    let header = read_header(path).map_err(|e| fail(format!("read: {e}"), true))?;
    if !header.is_empty() && !header.starts_with(SQLITE_MAGIC) {
        let hex: Vec<String> = header.iter().take(16).map(|b| format!("{b:02x}")).collect();
        return Err(fail(
            format!(
                "is not an SQLite database: it begins with {} (an SQLite database begins with \"SQLite format 3\"); is it the right file?",
                hex.join(" ")
            ),
            false,
        ));
    }
    // Bytes 18 and 19: the file format's write and read versions, 1 rollback, 2 WAL.
    let (write_version, read_version) = if header.len() >= 20 {
        (header[18], header[19])
    } else {
        (1, 1) // an empty file: a new database, no mode stored yet
    };
    let wal = write_version == 2 || read_version == 2;
    let journal_mode = match (write_version, read_version) {
        (1, 1) => "rollback".to_string(),
        _ if wal => "wal".to_string(),
        (w, r) => format!("unknown (file format versions {w} and {r})"),
    };
    let mut check = TargetCheck {
        path: path.to_path_buf(),
        file_bytes: meta.len(),
        integrity: None,
        journal_mode,
        wal,
        progress_table: TableCheck::new(PROGRESS_TABLE),
        rejected_table: TableCheck::new(REJECTED_TABLE),
        journals: Vec::new(),
        journals_total: 0,
        problems: Vec::new(),
    };
    if wal {
        check.problems.push(
            "the target is in WAL mode: syncjournal refuses it (WAL's shared memory is local to each machine, so it does not work on a network share); switch it with `PRAGMA journal_mode=TRUNCATE` while nobody uses it".into(),
        );
    }
    // Under the writer lease: on a share, a read while another machine commits can see pages
    // of a transaction that is not committed.
    // A lease file that is not one (a planted link, a directory) is reported, and the file
    // checked without the lease: this is the tool that tells what is wrong.
    let lease = match crate::target::sqlite::ReadLease::take(path) {
        Ok(l) => Some(l),
        Err(Error::Target(TargetError::LeaseUnusable { message, .. })) => {
            check.problems.push(format!(
                "{message}; checked without the writer lease (another machine may be writing meanwhile)"
            ));
            None
        }
        Err(e) => return Err(e),
    };
    let check = inspect_database(path, wal, check)?;
    if let Some(l) = lease {
        l.check()?;
    }
    Ok(check)
}

/// [`check_target`]'s reads of a file that is an SQLite database: integrity, bookkeeping
/// tables, journals.
fn inspect_database(path: &Path, wal: bool, mut check: TargetCheck) -> Result<TargetCheck> {
    let Some(conn) = open_read_only(path, wal, &mut check.problems)? else {
        return Ok(check);
    };
    let err = |what: &str, e: rusqlite::Error| target_error(path, what, e);
    check.integrity = Some(match integrity_lines(&conn, INTEGRITY_LINES_MAX) {
        Ok(rows) => Integrity {
            ok: rows.len() == 1 && rows[0] == "ok",
            stopped_early: rows.len() >= INTEGRITY_LINES_MAX,
            // A row can hold several lines ("*** in database main ***\n…").
            lines: rows
                .iter()
                .flat_map(|r| r.lines())
                .map(String::from)
                .collect(),
        },
        Err(e) if is_damage(&e) => Integrity {
            ok: false,
            stopped_early: true,
            lines: vec![e.to_string()],
        },
        Err(e) => return Err(not_a_database(path, e).unwrap_or_else(|e| err("integrity check", e))),
    });
    check.progress_table.inspect(&conn, &PROGRESS_COLUMNS);
    check.rejected_table.inspect(&conn, &REJECTED_COLUMNS);
    for t in [&check.progress_table, &check.rejected_table] {
        if !t.missing_columns.is_empty() {
            check.problems.push(format!(
                "table {} lacks the column(s) {} that syncjournal needs: it was not created by syncjournal, and sync refuses this target",
                t.name,
                t.missing_columns.join(", ")
            ));
        }
        if let Some(e) = &t.error {
            check
                .problems
                .push(format!("table {} cannot be read: {e}", t.name));
        }
    }
    if check.progress_table.is_usable() {
        match progress_rows(&conn, check.rejected_table.is_usable(), JOURNALS_LISTED_MAX) {
            Ok((total, rows)) => {
                check.journals_total = total;
                for row in rows {
                    let seen = JournalSeen::from_row(&row);
                    if seen.watermark.is_none() {
                        check.problems.push(format!(
                            "journal {}: the watermark {} is not an LSN (0 to {}); it was not written by syncjournal",
                            seen.journal_id,
                            describe(&row.lsn),
                            crate::format::LSN_MAX
                        ));
                    }
                    check.journals.push(seen);
                }
            }
            Err(e) => {
                let e = e.to_string();
                check
                    .problems
                    .push(format!("table {PROGRESS_TABLE} cannot be read: {e}"));
                check.progress_table.error = Some(e);
            }
        }
    }
    Ok(check)
}

/// Reads a target's watermark for journal `journal_id` without changing the target (nor
/// creating it, nor syncjournal's tables): 0 if the target has applied nothing of it.
///
/// # Errors
///
/// [`TargetError::Missing`], [`TargetError::Unavailable`] if the target cannot be read,
/// [`TargetError::SchemaMismatch`] if the stored watermark is not an LSN.
pub fn read_target_watermark(
    target: impl Into<crate::target::TargetSpec>,
    journal_id: Uuid,
) -> Result<Lsn> {
    crate::target::peek(&target.into(), journal_id).map(|(wm, _)| wm)
}

impl TableCheck {
    fn new(name: &'static str) -> TableCheck {
        TableCheck {
            name,
            exists: false,
            missing_columns: Vec::new(),
            error: None,
        }
    }

    fn inspect(&mut self, conn: &Connection, want: &[&str]) {
        let found = table_exists(conn, self.name).and_then(|exists| {
            self.exists = exists;
            if exists {
                column_names(conn, self.name)
            } else {
                Ok(Vec::new())
            }
        });
        match found {
            Ok(cols) if self.exists => {
                self.missing_columns = want
                    .iter()
                    .filter(|w| !cols.iter().any(|c| c.eq_ignore_ascii_case(w)))
                    .map(|w| w.to_string())
                    .collect();
            }
            Ok(_) => {}
            Err(e) => self.error = Some(e.to_string()),
        }
    }
}

impl JournalSeen {
    fn from_row(row: &crate::target::sqlite::ProgressRow) -> JournalSeen {
        let as_u64 = |v: &SqlValue, max: u64| match v {
            SqlValue::Integer(i) if *i >= 0 && *i as u64 <= max => Some(*i as u64),
            _ => None,
        };
        JournalSeen {
            journal_id: match &row.journal_id {
                SqlValue::Text(t) => t.clone(),
                other => describe(other),
            },
            watermark: as_u64(&row.lsn, crate::format::LSN_MAX),
            updated_at_ms: as_u64(&row.updated_at, i64::MAX as u64),
            quarantined: row.quarantined.max(0) as u64,
        }
    }
}

/// A stored value in words, for messages.
fn describe(v: &SqlValue) -> String {
    match v {
        SqlValue::Null => "NULL".into(),
        SqlValue::Integer(i) => i.to_string(),
        SqlValue::Real(r) => r.to_string(),
        SqlValue::Text(t) => format!("{t:?}"),
        SqlValue::Blob(b) => format!("a blob of {} bytes", b.len()),
    }
}

/// The first bytes of the file (at most an SQLite header).
fn read_header(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut b = Vec::with_capacity(SQLITE_HEADER_BYTES);
    std::fs::File::open(path)?
        .take(SQLITE_HEADER_BYTES as u64)
        .read_to_end(&mut b)?;
    Ok(b)
}

/// Opens the target read-only without creating anything beside it. `Ok(None)` (with the
/// reason in `problems`) if that is impossible: a WAL file whose `-wal` file holds frames but
/// has no `-shm` index, which SQLite would create.
fn open_read_only(
    path: &Path,
    wal: bool,
    problems: &mut Vec<String>,
) -> Result<Option<Connection>> {
    let side = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        std::fs::metadata(PathBuf::from(p)).ok()
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if wal && side("-wal").is_none_or(|m| m.len() == 0) {
        // No WAL frames: the file alone is the database. `immutable=1` reads it without the
        // `-wal` and `-shm` files a read-only WAL connection would otherwise create.
        Connection::open_with_flags(immutable_uri(path), flags | OpenFlags::SQLITE_OPEN_URI)
    } else if wal && side("-shm").is_none() {
        problems.push(format!(
            "not checked: {}-wal holds transactions not yet in the database file, and reading them would create {}-shm; check it where it is in use, or after its last user has closed it",
            path.display(),
            path.display()
        ));
        return Ok(None);
    } else {
        Connection::open_with_flags(path, flags)
    }
    .map_err(|e| target_error(path, "open read-only", e))?;
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))
        .map_err(|e| target_error(path, "set busy timeout", e))?;
    Ok(Some(conn))
}

/// `file:PATH?mode=ro&immutable=1`, with the characters that end or escape a URI path
/// percent-encoded.
fn immutable_uri(path: &Path) -> PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut uri = b"file:".to_vec();
    for &b in path.as_os_str().as_bytes() {
        if matches!(b, b'%' | b'?' | b'#') {
            uri.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            uri.push(b);
        }
    }
    uri.extend_from_slice(b"?mode=ro&immutable=1");
    PathBuf::from(std::ffi::OsString::from_vec(uri))
}

/// True for the errors SQLite gives when the file's content is damaged.
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DatabaseCorrupt)
}

/// The error for a file SQLite does not take for a database (`Ok`), or `e` back (`Err`); and
/// for a hot rollback journal, which a read-only connection cannot roll back.
fn not_a_database(path: &Path, e: rusqlite::Error) -> std::result::Result<Error, rusqlite::Error> {
    let message = match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
            format!("is not an SQLite database ({e}); is it the right file?")
        }
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_READONLY_ROLLBACK =>
        {
            format!(
                "{}-journal is a hot rollback journal (a writer stopped in the middle of a transaction): a read-only check cannot roll it back; the next sync (or any read-write connection) does",
                path.display()
            )
        }
        _ => return Err(e),
    };
    Ok(Error::Target(TargetError::Unavailable {
        path: path.to_path_buf(),
        message,
        transient: false,
        source: Some(e.into()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_characters_in_the_path_are_percent_encoded() {
        assert_eq!(
            immutable_uri(Path::new("/mnt/a?b#c%d.db")),
            PathBuf::from("file:/mnt/a%3Fb%23c%25d.db?mode=ro&immutable=1")
        );
    }

    #[test]
    fn a_wal_target_under_an_odd_name_is_checked_without_side_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("share?#%");
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("t.db");
        {
            let c = Connection::open(&path).unwrap();
            c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))
                .unwrap();
            c.execute_batch("CREATE TABLE x (a)").unwrap();
        }
        let check = check_target(&path).unwrap();
        assert!(check.wal && check.journal_mode == "wal");
        assert_eq!(check.integrity.as_ref().map(|i| i.ok), Some(true));
        assert!(!check.is_healthy() && !check.is_damaged());
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["t.db"]);
    }
}
