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
use syncjournal::error::TargetError;
use syncjournal::{Error, Lsn, TargetOptions, TargetSpec, Value};

/// A kind of target database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// An SQLite database file (on a share).
    Sqlite,
    /// A database on a PostgreSQL server (this test binary's shared cluster).
    #[cfg(feature = "postgres")]
    Postgres,
}

impl TargetKind {
    /// Every kind the target suites run against: SQLite, and PostgreSQL where its server is
    /// installed (else it is skipped saying so, and under `CI=1` that fails).
    pub fn all() -> Vec<TargetKind> {
        #[allow(unused_mut)]
        let mut kinds = vec![TargetKind::Sqlite];
        #[cfg(feature = "postgres")]
        if super::postgres::shared().is_some() {
            kinds.push(TargetKind::Postgres);
        }
        kinds
    }

    /// The kinds of the suites about what only a file has: a lock another process holds, a
    /// read-only file (a server has neither; its equivalents are tested in `tests/postgres`).
    pub fn sqlite_only() -> Vec<TargetKind> {
        vec![TargetKind::Sqlite]
    }

    /// The kind's name (in messages, and to hand a kind to a child process).
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Sqlite => "sqlite",
            #[cfg(feature = "postgres")]
            TargetKind::Postgres => "postgres",
        }
    }

    /// The kind named `name` (see [`TargetKind::name`]). It starts no server: a child
    /// process handed "sqlite" must not start a PostgreSQL cluster of its own.
    pub fn from_name(name: &str) -> Option<TargetKind> {
        TargetKind::COMPILED
            .iter()
            .copied()
            .find(|k| k.name() == name)
    }

    /// Every kind this build knows, whether its server is installed or not.
    const COMPILED: &'static [TargetKind] = &[
        TargetKind::Sqlite,
        #[cfg(feature = "postgres")]
        TargetKind::Postgres,
    ];

    /// The SQL of a schema written for SQLite, in this kind's dialect (PostgreSQL: `INTEGER`
    /// → `BIGINT`, `REAL` → `DOUBLE PRECISION`, `BLOB` → `BYTEA`, a column without a type →
    /// `TEXT`).
    pub fn dialect(self, sql: &str) -> String {
        match self {
            TargetKind::Sqlite => sql.to_string(),
            #[cfg(feature = "postgres")]
            TargetKind::Postgres => postgres_dialect(sql),
        }
    }
}

impl TargetKind {
    /// True if `e` says the target does not exist, as it must for this kind: SQLite, the file
    /// is missing (`TargetError::Missing`, transient: a share may be remounted); PostgreSQL,
    /// the database does not exist (SQLSTATE 3D000, permanent).
    pub fn is_missing(self, e: &Error) -> bool {
        match self {
            TargetKind::Sqlite => matches!(e, Error::Target(TargetError::Missing { .. })),
            #[cfg(feature = "postgres")]
            TargetKind::Postgres => matches!(
                e,
                Error::Target(TargetError::Server { sqlstate: Some(s), .. }) if s == "3D000"
            ),
        }
    }

    /// True if a missing target is a transient error for this kind (see
    /// [`TargetKind::is_missing`]).
    pub fn missing_is_transient(self) -> bool {
        self == TargetKind::Sqlite
    }

    /// True if `e` says the target is out of reach, as it must for this kind: SQLite, the
    /// file is missing (the share is gone); PostgreSQL, the connection failed (the server is
    /// gone).
    pub fn is_out_of_reach(self, e: &Error) -> bool {
        match self {
            TargetKind::Sqlite => matches!(e, Error::Target(TargetError::Missing { .. })),
            #[cfg(feature = "postgres")]
            TargetKind::Postgres => {
                matches!(e, Error::Target(TargetError::Server { sqlstate: None, .. }))
                    && e.to_string().contains("connection failure")
            }
        }
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
    /// The SQLite file (for PostgreSQL: where the test's target would be, naming it).
    path: PathBuf,
    #[cfg(feature = "postgres")]
    pg: Option<pg::PgTarget>,
}

impl TestTarget {
    /// The target `name` of a test, in the test's directory `dir` (an SQLite file
    /// `dir/<name>`; on PostgreSQL a database named after that path, reached through a proxy
    /// of this process), not created. Another process naming the same path names the same
    /// target.
    pub fn named(kind: TargetKind, dir: &Path, name: &str) -> TestTarget {
        let path = dir.join(name);
        TestTarget {
            kind,
            #[cfg(feature = "postgres")]
            pg: match kind {
                TargetKind::Postgres => Some(pg::PgTarget::named(&path)),
                TargetKind::Sqlite => None,
            },
            path,
        }
    }

    /// [`TestTarget::named`] on PostgreSQL, on the server `server` (not the shared one: one a
    /// test may stop and start), through a proxy of this process.
    #[cfg(feature = "postgres")]
    pub fn postgres_on(server: super::postgres::Server, dir: &Path, name: &str) -> TestTarget {
        let path = dir.join(name);
        TestTarget {
            kind: TargetKind::Postgres,
            pg: Some(pg::PgTarget::on(server, &path, false)),
            path,
        }
    }

    /// [`TestTarget::named`], created with the application schema `schema` (SQLite SQL; see
    /// [`TargetKind::dialect`]). The replayer's own bookkeeping (progress, quarantine) is
    /// created by the replayer on its first sync, with the options of
    /// [`TestTarget::options`].
    pub fn create(kind: TargetKind, dir: &Path, name: &str, schema: &str) -> TestTarget {
        let t = TestTarget::named(kind, dir, name);
        t.create_schema(schema);
        t
    }

    /// Runs `schema` (SQLite SQL, see [`TargetKind::dialect`]) on the target, creating it if
    /// it does not exist.
    pub fn create_schema(&self, schema: &str) {
        match self.kind {
            TargetKind::Sqlite => create_target(&self.path, schema),
            #[cfg(feature = "postgres")]
            TargetKind::Postgres => self.pg().create(&self.kind.dialect(schema)),
        }
    }

    /// Runs `sql` (in the target's own dialect) through a fresh connection.
    pub fn execute(&self, sql: &str) {
        match self.kind {
            TargetKind::Sqlite => self.connect().execute_batch(sql).expect(sql),
            #[cfg(feature = "postgres")]
            TargetKind::Postgres => self.pg().execute(sql),
        }
    }

    /// The target's kind.
    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    /// What a user passes as the target (to `Replayer::new`, `StoreOptions::target`,
    /// `--target`): for SQLite, the file's path; for PostgreSQL a connection string.
    pub fn spec(&self) -> TargetSpec {
        match self.kind {
            TargetKind::Sqlite => TargetSpec::Sqlite(self.path.clone()),
            #[cfg(feature = "postgres")]
            TargetKind::Postgres => TargetSpec::from(self.pg().url()),
        }
    }

    /// The connection string of this PostgreSQL target through another proxy's `port` (a
    /// machine of its own, whose link a test cuts alone).
    #[cfg(feature = "postgres")]
    pub fn url_through(&self, port: u16) -> String {
        let pg = self.pg();
        pg.url()
            .replace(&format!("port={} ", pg.port), &format!("port={port} "))
    }

    /// The SQLite file (for checks that only make sense for SQLite).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Environment variables a child process needs to reach this target (PostgreSQL: the
    /// shared server).
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        match self.kind {
            TargetKind::Sqlite => Vec::new(),
            #[cfg(feature = "postgres")]
            TargetKind::Postgres => vec![
                (
                    super::postgres::SHARED_SERVER_ENV,
                    self.pg().server.env_value(),
                ),
                (pg::PROXY_ENV, self.pg().proxy_env()),
            ],
        }
    }

    /// Target options that let the replayer create its bookkeeping on a target that exists
    /// (the defaults).
    pub fn options(&self) -> TargetOptions {
        TargetOptions::new()
    }

    /// Target options that create the target with `schema` (SQLite SQL, see
    /// [`TargetKind::dialect`]) on first use (PostgreSQL: the database, then the tables).
    pub fn options_creating(&self, schema: &str) -> TargetOptions {
        self.options()
            .create_if_missing(true)
            .create_schema(self.kind.dialect(schema))
    }

    /// True if the target exists and is in reach.
    pub fn exists(&self) -> bool {
        match self.kind {
            TargetKind::Sqlite => self.path.exists(),
            #[cfg(feature = "postgres")]
            TargetKind::Postgres => self.pg().exists(),
        }
    }

    /// A fresh connection, as an outsider opens it (never creating the target). SQLite only.
    pub fn connect(&self) -> Connection {
        self.sqlite_only("connect");
        open_target(&self.path)
    }

    /// A read-only connection that does not wait for locks (reads what is committed). SQLite
    /// only.
    pub fn read_only(&self) -> Connection {
        self.sqlite_only("read_only");
        open_ro(&self.path)
    }

    fn sqlite_only(&self, what: &str) {
        assert_eq!(
            self.kind,
            TargetKind::Sqlite,
            "TestTarget::{what} is for SQLite targets"
        );
    }

    /// Every row `sql` (in the target's own dialect; portable SQL works on both) returns,
    /// through a fresh connection, as values: integers (and booleans), reals, text, blobs,
    /// nulls.
    pub fn rows(&self, sql: &str) -> Vec<Vec<Value>> {
        match self.kind {
            TargetKind::Sqlite => {
                let c = self.connect();
                let mut s = c.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let n = s.column_count();
                s.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
                    .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
            #[cfg(feature = "postgres")]
            TargetKind::Postgres => self.pg().rows(sql),
        }
    }

    /// The integers of the first column of `sql`'s rows (a null is 0).
    pub fn ints(&self, sql: &str) -> Vec<i64> {
        self.rows(sql)
            .into_iter()
            .map(|r| match r.first() {
                Some(Value::Integer(i)) => *i,
                Some(Value::Null) | None => 0,
                Some(v) => panic!("{sql}: not an integer: {v:?}"),
            })
            .collect()
    }

    /// True if the target has a table `table` (in the schema entries may change).
    pub fn has_table(&self, table: &str) -> bool {
        let sql = match self.kind {
            TargetKind::Sqlite => format!(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '{table}'"
            ),
            #[cfg(feature = "postgres")]
            TargetKind::Postgres => format!(
                "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = '{table}'"
            ),
        };
        self.ints(&sql) == [1]
    }

    /// The target's watermark for `journal_id` (0: no row, or no bookkeeping yet).
    pub fn watermark(&self, journal_id: uuid::Uuid) -> Lsn {
        if !self.has_table("syncjournal_progress") {
            return 0;
        }
        self.ints(&format!(
            "SELECT lsn FROM syncjournal_progress WHERE journal_id = '{journal_id}'"
        ))
        .first()
        .map_or(0, |l| *l as Lsn)
    }

    /// The highest watermark of any journal on the target (0 if none, or no bookkeeping).
    pub fn max_watermark(&self) -> Lsn {
        if !self.has_table("syncjournal_progress") {
            return 0;
        }
        self.ints("SELECT max(lsn) FROM syncjournal_progress")
            .first()
            .map_or(0, |l| *l as Lsn)
    }

    /// Every progress row of the target: `(journal_id, lsn)`.
    pub fn progress_rows(&self) -> Vec<(String, i64)> {
        self.rows("SELECT journal_id, lsn FROM syncjournal_progress ORDER BY journal_id")
            .into_iter()
            .map(|r| match &r[..] {
                [Value::Text(id), Value::Integer(l)] => (id.clone(), *l),
                _ => panic!("a progress row: {r:?}"),
            })
            .collect()
    }

    /// `SELECT count(*) FROM table` (0 while the table does not exist).
    pub fn count_rows(&self, table: &str) -> i64 {
        if !self.has_table(table) {
            return 0;
        }
        self.ints(&format!("SELECT count(*) FROM {table}"))[0]
    }

    /// Every row of `table`, ordered by its first column.
    pub fn dump(&self, table: &str) -> Vec<Vec<Value>> {
        self.dump_ordered(table, "1")
    }

    /// Every row of `table` ordered by `order`, all columns in declaration order.
    pub fn dump_ordered(&self, table: &str, order: &str) -> Vec<Vec<Value>> {
        self.rows(&format!("SELECT * FROM \"{table}\" ORDER BY {order}"))
    }

    /// The target's integrity check: `"ok"` when healthy (PostgreSQL checks its own pages:
    /// `"ok"` when a fresh connection reads the catalog).
    pub fn integrity(&self) -> String {
        match self.kind {
            TargetKind::Sqlite => integrity(&self.connect()),
            #[cfg(feature = "postgres")]
            TargetKind::Postgres => {
                let _ = self.rows("SELECT count(*) FROM pg_class");
                "ok".to_string()
            }
        }
    }

    /// True if a killed writer left a transaction behind (SQLite: a non-empty rollback
    /// journal beside the file), which the next connection rolls back. PostgreSQL: the
    /// server rolls it back itself (see [`TestTarget::wait_for_other_sessions`]); false.
    pub fn interrupted_transaction(&self) -> bool {
        match self.kind {
            TargetKind::Sqlite => interrupted_transaction(&self.path),
            #[cfg(feature = "postgres")]
            TargetKind::Postgres => false,
        }
    }

    /// Waits (up to 30 s) until no other session is connected to the target (PostgreSQL: a
    /// killed client's backend notices it is gone, rolls back and ends); SQLite: at once.
    pub fn wait_for_other_sessions(&self) {
        #[cfg(feature = "postgres")]
        if self.kind == TargetKind::Postgres {
            self.pg().wait_alone();
        }
    }

    /// A backup of the target as it is now, in the file `to` (SQLite: a copy of the file;
    /// PostgreSQL: `pg_dump` in its custom format), for [`TestTarget::restore_in_place`] and
    /// [`TestTarget::restore_replacing`].
    pub fn backup(&self, to: &Path) {
        match self.kind {
            TargetKind::Sqlite => {
                std::fs::copy(&self.path, to).expect("back the target up");
            }
            #[cfg(feature = "postgres")]
            TargetKind::Postgres => self.pg().server.run_tool(
                "pg_dump",
                &self.pg().db,
                &["-Fc", "-f", to.to_str().expect("utf-8 path")],
            ),
        }
    }

    /// Restores the backup `from` into the target itself, while clients stay connected
    /// (SQLite: the backup's bytes copied over the file; PostgreSQL: `pg_restore --clean`
    /// into the same database, in one transaction).
    pub fn restore_in_place(&self, from: &Path) {
        match self.kind {
            TargetKind::Sqlite => {
                std::fs::copy(from, &self.path).expect("restore the target");
            }
            #[cfg(feature = "postgres")]
            TargetKind::Postgres => self.pg().server.run_tool(
                "pg_restore",
                &self.pg().db,
                &[
                    "--clean",
                    "--if-exists",
                    "--single-transaction",
                    from.to_str().expect("utf-8 path"),
                ],
            ),
        }
    }

    /// Restores the backup `from` as a new target under the same name (SQLite: a new file
    /// renamed over the target's path, clients still holding the old one; PostgreSQL: the
    /// database dropped, its sessions ended, created again and restored).
    pub fn restore_replacing(&self, from: &Path) {
        match self.kind {
            TargetKind::Sqlite => {
                let tmp = self.path.with_extension("restoring");
                std::fs::copy(from, &tmp).expect("copy the backup");
                std::fs::rename(&tmp, &self.path).expect("rename the backup over the target");
            }
            #[cfg(feature = "postgres")]
            TargetKind::Postgres => {
                let pg = self.pg();
                pg.drop_database();
                pg.create("");
                pg.server.run_tool(
                    "pg_restore",
                    &pg.db,
                    &["--single-transaction", from.to_str().expect("utf-8 path")],
                );
            }
        }
    }

    /// Deletes the target (SQLite: the file; PostgreSQL: the database).
    pub fn remove(&self) {
        match self.kind {
            TargetKind::Sqlite => std::fs::remove_file(&self.path).expect("remove the target"),
            #[cfg(feature = "postgres")]
            TargetKind::Postgres => self.pg().drop_database(),
        }
    }

    /// Takes the target out of reach (SQLite: renames the file, as a share that went away;
    /// PostgreSQL: the server's network goes away, connections cut); [`TestTarget::bring_back`]
    /// undoes it. Also callable from a fault hook.
    pub fn take_away(&self) {
        match self.kind {
            TargetKind::Sqlite => {
                std::fs::rename(&self.path, self.away()).expect("take the target away")
            }
            #[cfg(feature = "postgres")]
            TargetKind::Postgres => self.pg().own_proxy().down(),
        }
    }

    /// Puts back a target taken away.
    pub fn bring_back(&self) {
        match self.kind {
            TargetKind::Sqlite => {
                std::fs::rename(self.away(), &self.path).expect("bring the target back")
            }
            #[cfg(feature = "postgres")]
            TargetKind::Postgres => self.pg().own_proxy().up(),
        }
    }

    /// The same target while it is taken away (its data where it went).
    pub fn while_away(&self) -> TestTarget {
        TestTarget {
            path: self.away(),
            ..self.clone()
        }
    }

    fn away(&self) -> PathBuf {
        self.path.with_extension("away")
    }

    #[cfg(feature = "postgres")]
    fn pg(&self) -> &pg::PgTarget {
        self.pg.as_ref().expect("a PostgreSQL target")
    }
}

#[cfg(feature = "postgres")]
fn postgres_dialect(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 32);
    for (i, part) in sql.split(',').enumerate() {
        if i > 0 {
            out.push(',');
        }
        // A column declared without a type (`v,`): TEXT.
        let words: Vec<&str> = part.split_whitespace().collect();
        let typeless = words.len() == 1
            && words[0]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        out.push_str(part);
        if typeless {
            out.push_str(" TEXT");
        }
    }
    let mut res = String::with_capacity(out.len());
    let mut word = String::new();
    let flush = |word: &mut String, res: &mut String| {
        res.push_str(match word.as_str() {
            "INTEGER" => "BIGINT",
            "REAL" => "DOUBLE PRECISION",
            "BLOB" => "BYTEA",
            w => w,
        });
        word.clear();
    };
    for c in out.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut res);
            res.push(c);
        }
    }
    flush(&mut word, &mut res);
    res
}

#[cfg(feature = "postgres")]
mod pg {
    //! The PostgreSQL side of [`super::TestTarget`]: a database of the shared cluster.

    use std::hash::{Hash, Hasher};
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use postgres::types::Type;
    use syncjournal::Value;

    use crate::support::postgres::{Proxy, Server, shared};

    #[derive(Debug, Clone)]
    pub(super) struct PgTarget {
        pub(super) server: Server,
        pub(super) db: String,
        /// The proxy this process started; `None` in a child process that reaches the
        /// database through its parent's (see [`PROXY_ENV`]).
        pub(super) proxy: Option<Arc<Proxy>>,
        /// The port of the proxy in front of the server.
        pub(super) port: u16,
    }

    /// Names the proxy of a parent process to its children (`<database>=<port>`), so that a
    /// child reaches the database through the same connection string as its parent: one
    /// target, one name (and the parent's `take_away` reaches the child's connections too).
    pub(super) const PROXY_ENV: &str = "SYNCJOURNAL_TEST_PG_PROXY";

    impl PgTarget {
        pub(super) fn named(path: &Path) -> PgTarget {
            let server = shared().expect("a PostgreSQL server").clone();
            PgTarget::on(server, path, true)
        }

        /// The database named after `path` on `server`, through a proxy of this process (or,
        /// if `inherit`, its parent's, see [`PROXY_ENV`]).
        pub(super) fn on(server: Server, path: &Path, inherit: bool) -> PgTarget {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            path.hash(&mut h);
            let db = format!("sj_{:016x}", h.finish());
            let parents = std::env::var(PROXY_ENV)
                .ok()
                .filter(|_| inherit)
                .and_then(|v| {
                    let (name, port) = v.split_once('=')?;
                    (name == db).then(|| port.parse::<u16>().ok())?
                });
            let (proxy, port) = match parents {
                Some(port) => (None, port),
                None => {
                    let p = Proxy::start(server.port);
                    let port = p.port();
                    (Some(Arc::new(p)), port)
                }
            };
            PgTarget {
                server,
                db,
                proxy,
                port,
            }
        }

        /// The proxy, which only the process that started it controls.
        pub(super) fn own_proxy(&self) -> &Proxy {
            self.proxy
                .as_deref()
                .expect("the proxy is the parent process's: take the target away there")
        }

        /// What a child process needs to reach this database through this proxy.
        pub(super) fn proxy_env(&self) -> String {
            format!("{}={}", self.db, self.port)
        }

        /// The connection string through the proxy (TCP, no TLS).
        pub(super) fn url(&self) -> String {
            format!(
                "host=127.0.0.1 port={} user=postgres dbname={} sslmode=disable connect_timeout=5",
                self.port, self.db
            )
        }

        fn client(&self) -> postgres::Client {
            self.server
                .client_of(&self.db)
                .unwrap_or_else(|e| panic!("connect to {}: {e}", self.db))
        }

        fn database_exists(&self) -> bool {
            let mut c = self.server.client().expect("connect to the server");
            c.query_one(
                "SELECT count(*) FROM pg_database WHERE datname = $1",
                &[&self.db],
            )
            .expect("read pg_database")
            .get::<_, i64>(0)
                == 1
        }

        pub(super) fn exists(&self) -> bool {
            self.proxy.as_ref().is_none_or(|p| p.is_up()) && self.database_exists()
        }

        pub(super) fn create(&self, schema: &str) {
            if !self.database_exists() {
                let mut c = self.server.client().expect("connect to the server");
                c.batch_execute(&format!("CREATE DATABASE {}", self.db))
                    .unwrap_or_else(|e| panic!("create database {}: {e}", self.db));
            }
            self.execute(schema);
        }

        pub(super) fn execute(&self, sql: &str) {
            self.client()
                .batch_execute(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }

        pub(super) fn drop_database(&self) {
            let mut c = self.server.client().expect("connect to the server");
            c.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.db))
                .unwrap_or_else(|e| panic!("drop database {}: {e}", self.db));
        }

        pub(super) fn wait_alone(&self) {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut c = self.server.client().expect("connect to the server");
            loop {
                let n: i64 = c
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                        &[&self.db],
                    )
                    .expect("read pg_stat_activity")
                    .get(0);
                if n == 0 {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{n} sessions still on {} after 30 s",
                    self.db
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }

        pub(super) fn rows(&self, sql: &str) -> Vec<Vec<Value>> {
            let mut c = self.client();
            let rows = c.simple_query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            // The simple protocol gives text; the types come from a prepared description.
            let types: Vec<Type> = c
                .prepare(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .columns()
                .iter()
                .map(|c| c.type_().clone())
                .collect();
            rows.into_iter()
                .filter_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(r) => Some(r),
                    _ => None,
                })
                .map(|r| (0..r.len()).map(|i| value(r.get(i), &types[i])).collect())
                .collect()
        }
    }

    /// A cell in the text format as a value of its column's type.
    fn value(text: Option<&str>, ty: &Type) -> Value {
        let Some(t) = text else { return Value::Null };
        match *ty {
            Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => {
                Value::Integer(t.parse().expect("an integer"))
            }
            Type::NUMERIC => Value::Integer(t.parse().expect("an integral numeric")),
            Type::BOOL => Value::Integer((t == "t") as i64),
            Type::FLOAT4 | Type::FLOAT8 => Value::Real(t.parse().expect("a real")),
            Type::BYTEA => Value::Blob(
                (2..t.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&t[i..i + 2], 16).expect("hex"))
                    .collect(),
            ),
            _ => Value::Text(t.to_string()),
        }
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

/// `PRAGMA integrity_check` through `c`: its lines, or — if the file is too damaged for the
/// check to run at all ("database disk image is malformed") — that error, which is not "ok".
pub fn integrity(c: &Connection) -> String {
    let rows = c.prepare("PRAGMA integrity_check").and_then(|mut s| {
        s.query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
    });
    match rows {
        Ok(rows) => rows.join("; "),
        Err(e) => format!("integrity_check failed: {e}"),
    }
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
