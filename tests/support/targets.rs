//! Targets: the kinds of target database the replay suites run against ([`TargetKind`]), a
//! test target of one kind ([`TestTarget`]: create it, name it as a user would, read its
//! watermark and tables through a fresh connection, damage or take it away), and the SQLite
//! helpers behind it that the SQLite-only tests use directly.
//!
//! A suite that concerns the target runs its body once per kind of
//! [`TargetKind::all`]; checks that only make sense for one kind (WAL, file-level damage, a
//! read-only directory) stay in tests of their own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use syncjournal::{Lsn, TargetOptions, TargetSpec, Value};

/// A kind of target database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// An SQLite database file (on a share).
    Sqlite,
}

impl TargetKind {
    /// Every kind the target suites run against.
    pub fn all() -> [TargetKind; 1] {
        [TargetKind::Sqlite]
    }

    /// The kind's name (in messages, and to hand a kind to a child process).
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Sqlite => "sqlite",
        }
    }

    /// The kind named `name` (see [`TargetKind::name`]).
    pub fn from_name(name: &str) -> Option<TargetKind> {
        TargetKind::all().into_iter().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One target database of a test, of a given kind. Nothing is opened until asked: a
/// `TestTarget` may name a target that does not exist yet (the replayer creates it).
#[derive(Debug, Clone)]
pub struct TestTarget {
    kind: TargetKind,
    /// The SQLite file.
    path: PathBuf,
}

impl TestTarget {
    /// The target `name` of a test, in the test's directory `dir` (an SQLite file
    /// `dir/<name>`), not created.
    pub fn named(kind: TargetKind, dir: &Path, name: &str) -> TestTarget {
        TestTarget {
            kind,
            path: dir.join(name),
        }
    }

    /// [`TestTarget::named`], created with the application schema `schema`. The replayer's
    /// own bookkeeping (progress, quarantine) is created by the replayer on its first sync,
    /// with the options of [`TestTarget::options`].
    pub fn create(kind: TargetKind, dir: &Path, name: &str, schema: &str) -> TestTarget {
        let t = TestTarget::named(kind, dir, name);
        t.create_schema(schema);
        t
    }

    /// Runs `schema` on the target, creating it if it does not exist.
    pub fn create_schema(&self, schema: &str) {
        match self.kind {
            TargetKind::Sqlite => create_target(&self.path, schema),
        }
    }

    /// The target's kind.
    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    /// What a user passes as the target (to `Replayer::new`, `StoreOptions::target`,
    /// `--target`): for SQLite, the file's path.
    pub fn spec(&self) -> TargetSpec {
        match self.kind {
            TargetKind::Sqlite => TargetSpec::Sqlite(self.path.clone()),
        }
    }

    /// The SQLite file (for checks that only make sense for SQLite).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Target options that let the replayer create its bookkeeping on a target that exists
    /// (for SQLite: the defaults).
    pub fn options(&self) -> TargetOptions {
        match self.kind {
            TargetKind::Sqlite => TargetOptions::new(),
        }
    }

    /// Target options that create the target with `schema` on first use.
    pub fn options_creating(&self, schema: &str) -> TargetOptions {
        self.options().create_if_missing(true).create_schema(schema)
    }

    /// True if the target exists.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// A fresh connection, as an outsider opens it (never creating the target).
    pub fn connect(&self) -> Connection {
        open_target(&self.path)
    }

    /// A read-only connection that does not wait for locks (reads what is committed).
    pub fn read_only(&self) -> Connection {
        open_ro(&self.path)
    }

    /// The target's watermark for `journal_id` (0: no row, or no bookkeeping yet).
    pub fn watermark(&self, journal_id: uuid::Uuid) -> Lsn {
        watermark_of(&self.connect(), journal_id)
    }

    /// The highest watermark of any journal on the target (0 if none).
    pub fn max_watermark(&self) -> Lsn {
        max_watermark(&self.path)
    }

    /// Every progress row of the target: `(journal_id, lsn)`.
    pub fn progress_rows(&self) -> Vec<(String, i64)> {
        let c = self.connect();
        let mut s = c
            .prepare("SELECT journal_id, lsn FROM syncjournal_progress ORDER BY journal_id")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// `SELECT count(*) FROM table` (0 while the table does not exist).
    pub fn count_rows(&self, table: &str) -> i64 {
        count_rows(&self.path, table)
    }

    /// Every row of `table`, ordered by its first column.
    pub fn dump(&self, table: &str) -> Vec<Vec<Value>> {
        dump(&self.connect(), table)
    }

    /// The target's integrity check: `"ok"` when healthy.
    pub fn integrity(&self) -> String {
        integrity(&self.connect())
    }

    /// True if a killed writer left a transaction behind (SQLite: a non-empty rollback
    /// journal beside the file), which the next connection rolls back.
    pub fn interrupted_transaction(&self) -> bool {
        interrupted_transaction(&self.path)
    }

    /// Deletes the target (SQLite: the file).
    pub fn remove(&self) {
        std::fs::remove_file(&self.path).expect("remove the target");
    }

    /// Takes the target out of reach (SQLite: renames the file), as a share that went away;
    /// [`TestTarget::bring_back`] undoes it. Also callable from a fault hook.
    pub fn take_away(&self) {
        std::fs::rename(&self.path, self.away()).expect("take the target away");
    }

    /// Puts back a target taken away.
    pub fn bring_back(&self) {
        std::fs::rename(self.away(), &self.path).expect("bring the target back");
    }

    /// The same target while it is taken away (its data where it went).
    pub fn while_away(&self) -> TestTarget {
        TestTarget {
            kind: self.kind,
            path: self.away(),
        }
    }

    fn away(&self) -> PathBuf {
        self.path.with_extension("away")
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite.

/// A fresh connection to an SQLite target, as an outsider would open it (never creating it):
/// read-write, else read-only. A hot rollback journal left by a killed writer is rolled back by
/// this connection's first read.
pub fn open_target(path: &Path) -> Connection {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .or_else(|_| {
        Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    })
    .unwrap_or_else(|e| panic!("open target {}: {e}", path.display()));
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

/// True if a killed writer left a transaction behind on the SQLite target at `path` (a
/// non-empty rollback journal beside it), which the next connection rolls back.
pub fn interrupted_transaction(path: &Path) -> bool {
    let hot = PathBuf::from(format!("{}-journal", path.display()));
    std::fs::metadata(hot).is_ok_and(|m| m.len() > 0)
}

/// The SQLite target at `path` right after a kill, before anything else touches it: whether
/// the kill left a transaction behind, a fresh connection (whose first read rolled it back),
/// and the integrity check through it.
pub fn after_kill(path: &Path) -> (bool, Connection, String) {
    let interrupted = interrupted_transaction(path);
    let c = open_target(path);
    let ic = integrity(&c);
    (interrupted, c, ic)
}

/// What is wrong with a target's watermark `w` after a kill: beyond the journal's durable
/// `head`, below its acknowledgement `acked` (acknowledged without a commit), or back from
/// `last_w`, the watermark seen before (empty: nothing).
pub fn watermark_failures(w: Lsn, head: Lsn, acked: Lsn, last_w: Lsn) -> Vec<String> {
    let mut failures = Vec::new();
    if w > head {
        failures.push(format!(
            "target watermark {w} beyond the journal's durable head {head}"
        ));
    }
    if acked > w {
        failures.push(format!(
            "acknowledged {acked} but the target's watermark is {w}: acknowledged without a commit"
        ));
    }
    if w < last_w {
        failures.push(format!(
            "the target's watermark went back from {last_w} to {w}"
        ));
    }
    failures
}

/// A read-only connection to a database file (a target or a cache), no busy wait.
pub fn open_ro(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {} read-only: {e}", path.display()))
}

/// Creates an SQLite target file with `schema` (in the default `journal_mode=DELETE`, so no
/// `-journal` file is left).
pub fn create_target(path: &Path, schema: &str) {
    let c = Connection::open(path).expect("create target");
    c.execute_batch(schema).expect("target schema");
}

/// The watermark for `journal_id` read through `c` (0: no row, or no progress table yet).
pub fn watermark_of(c: &Connection, journal_id: uuid::Uuid) -> Lsn {
    let has: bool = c
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'syncjournal_progress')",
            [],
            |r| r.get(0),
        )
        .expect("read schema");
    if !has {
        return 0;
    }
    c.query_row(
        "SELECT lsn FROM syncjournal_progress WHERE journal_id = ?1",
        [journal_id.to_string()],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .expect("read watermark")
    .map_or(0, |l| l as Lsn)
}

/// The watermark of an SQLite target for `journal_id`, through a fresh connection.
pub fn target_watermark(path: &Path, journal_id: uuid::Uuid) -> Lsn {
    watermark_of(&open_target(path), journal_id)
}

/// The highest watermark of any journal on an SQLite target (0 if none, or no bookkeeping).
pub fn max_watermark(path: &Path) -> Lsn {
    open_target(path)
        .query_row("SELECT max(lsn) FROM syncjournal_progress", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .ok()
        .flatten()
        .map_or(0, |l| l as Lsn)
}

/// `SELECT count(*) FROM table` on an SQLite target (0 while the table does not exist yet).
pub fn count_rows(path: &Path, table: &str) -> i64 {
    open_target(path)
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap_or(0)
}

/// `PRAGMA integrity_check` through `c`.
pub fn integrity(c: &Connection) -> String {
    let mut s = c
        .prepare("PRAGMA integrity_check")
        .expect("integrity_check");
    let rows: Vec<String> = s
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
        .expect("integrity_check");
    rows.join("; ")
}

/// Every row of `table` ordered by `order`, all columns in declaration order.
pub fn dump_table(
    conn: &Connection,
    table: &str,
    order: &str,
) -> rusqlite::Result<Vec<Vec<Value>>> {
    let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\" ORDER BY {order}"))?;
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())?
        .collect()
}

/// Every row of `table`, ordered by its first column.
pub fn dump(c: &Connection, table: &str) -> Vec<Vec<Value>> {
    dump_table(c, table, "1").unwrap_or_else(|e| panic!("dump {table}: {e}"))
}

/// Copies a database file to `dst` through SQLite (`VACUUM INTO`), so that whatever sits in
/// its WAL is included. Works on the cache while the guards are installed (it only reads).
pub fn copy_db(src: &Path, dst: &Path) {
    let conn = Connection::open(src).expect("open database to copy");
    conn.execute("VACUUM INTO ?1", [dst.to_str().expect("utf-8 path")])
        .expect("VACUUM INTO");
}
