//! Shared helpers for the replay tests (`seed_failures`, `exactly_once_faults`, `replay_kill9`,
//! `target_unavailable`, `target_guards`): the inventory schema of the seed application, a
//! non-idempotent counter event (applying an entry twice shows), a ledger of what the journal
//! holds, fresh-connection inspection of the target, a scriptable [`TargetFaults`], a
//! read-only guard and a hang guard. Each test binary uses a subset of them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};
use syncjournal::event::encode_event;
use syncjournal::replay::TargetFaults;
use syncjournal::{
    ApplyContext, ApplyError, Journal, JournalEvent, JournalOptions, Lsn, ReplayOptions, Replayer,
    TargetOptions, Value,
};

/// The seed application's schema (as in `examples/inventory.rs`).
pub const INVENTORY_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hosts (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, address TEXT, os TEXT);
CREATE TABLE IF NOT EXISTS domains (
    name TEXT PRIMARY KEY, host_id INTEGER, registrar TEXT);
CREATE TABLE IF NOT EXISTS certificates (
    id INTEGER PRIMARY KEY, domain TEXT NOT NULL, not_after TEXT NOT NULL, pem BLOB);
";

/// The inventory's tables.
pub const INVENTORY_TABLES: [&str; 3] = ["hosts", "domains", "certificates"];

/// Schema of the counter target: one row per counter, and a log of every application (no key:
/// a duplicate application shows as two log rows with the same `seq`).
pub const COUNTER_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS counters (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log (seq INTEGER NOT NULL, id INTEGER NOT NULL);
";

/// Number of distinct counters the ledger spreads increments over.
pub const COUNTERS: i64 = 7;

/// A NON-IDEMPOTENT event: applying it twice increments twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Increment {
    /// The counter.
    pub id: i64,
    /// A sequence number unique to this event (logged, to name duplicates).
    pub seq: u64,
}

impl JournalEvent for Increment {
    const KIND: u8 = 0x40;

    fn apply(&self, db: &mut ApplyContext<'_>) -> Result<(), ApplyError> {
        db.conn().execute(
            "INSERT INTO counters (id, n) VALUES (?1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1",
            [self.id],
        )?;
        db.conn().execute(
            "INSERT INTO log (seq, id) VALUES (?1, ?2)",
            (self.seq as i64, self.id),
        )?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("increment counter {} (#{})", self.id, self.seq)
    }
}

/// The counter incremented by the event with sequence number `seq`.
pub fn counter_for(seq: u64) -> i64 {
    (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) as i64 % COUNTERS + 1
}

/// What the journal holds, LSN by LSN: the counter each entry increments (`None` for entries
/// that are not increments).
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// `ids[lsn - 1]`.
    pub ids: Vec<Option<i64>>,
}

impl Ledger {
    /// Notes that `lsn` increments `id`. LSNs must be noted in order, from 1.
    pub fn note(&mut self, lsn: Lsn, id: Option<i64>) {
        assert_eq!(
            lsn,
            self.ids.len() as Lsn + 1,
            "ledger LSNs must be contiguous"
        );
        self.ids.push(id);
    }

    /// The last LSN noted.
    pub fn head(&self) -> Lsn {
        self.ids.len() as Lsn
    }

    /// The counters after applying exactly the entries `1..=upto`.
    pub fn fold(&self, upto: Lsn) -> BTreeMap<i64, i64> {
        let mut m = BTreeMap::new();
        for id in self.ids.iter().take(upto as usize).flatten() {
            *m.entry(*id).or_insert(0) += 1;
        }
        m
    }

    /// Appends `n` increments (one record each, durable when this returns) and notes them.
    pub fn append_increments(&mut self, journal: &Journal, n: u64) -> std::ops::Range<Lsn> {
        let first = self.head() + 1;
        for i in 0..n {
            let seq = first + i;
            let ev = Increment {
                id: counter_for(seq),
                seq,
            };
            let payload = encode_event(now_ms(), &ev).expect("encode");
            let lsn = journal
                .append_kind(Increment::KIND, &payload)
                .expect("append");
            self.note(lsn, Some(ev.id));
        }
        first..self.head() + 1
    }

    /// Appends `n` increments in batches of `chunk` records (one sync per batch).
    pub fn append_increments_batched(
        &mut self,
        journal: &Journal,
        n: u64,
        chunk: u64,
    ) -> std::ops::Range<Lsn> {
        let first = self.head() + 1;
        let mut done = 0;
        while done < n {
            let k = chunk.min(n - done);
            let start = self.head() + 1;
            let evs: Vec<Increment> = (start..start + k)
                .map(|seq| Increment {
                    id: counter_for(seq),
                    seq,
                })
                .collect();
            let payloads: Vec<Vec<u8>> = evs
                .iter()
                .map(|e| encode_event(now_ms(), e).expect("encode"))
                .collect();
            let r = journal
                .append_batch_kind(Increment::KIND, &payloads)
                .expect("append batch");
            assert_eq!(r.start, start, "batch LSNs");
            for (lsn, e) in r.zip(&evs) {
                self.note(lsn, Some(e.id));
            }
            done += k;
        }
        first..self.head() + 1
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A fresh connection to the target, as an outsider would open it (never creating it). A hot
/// rollback journal left by a killed writer is rolled back by this connection.
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

/// The target's watermark for `journal_id`, read through a fresh connection (0: no row or no
/// progress table).
pub fn target_watermark(path: &Path, journal_id: uuid::Uuid) -> Lsn {
    let c = open_target(path);
    let has: bool = c
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'syncjournal_progress')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    if !has {
        return 0;
    }
    c.query_row(
        "SELECT lsn FROM syncjournal_progress WHERE journal_id = ?1",
        [journal_id.to_string()],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .unwrap()
    .map_or(0, |l| l as Lsn)
}

/// Every progress row of the target: `(journal_id, lsn)`.
pub fn progress_rows(path: &Path) -> Vec<(String, i64)> {
    let c = open_target(path);
    let mut s = c
        .prepare("SELECT journal_id, lsn FROM syncjournal_progress ORDER BY journal_id")
        .unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// The counters on the target, through a fresh connection (zero counters left out).
pub fn target_counters(path: &Path) -> BTreeMap<i64, i64> {
    let c = open_target(path);
    counters_of(&c)
}

/// The counters read through `c` (zero counters left out).
pub fn counters_of(c: &Connection) -> BTreeMap<i64, i64> {
    let mut s = c
        .prepare("SELECT id, n FROM counters WHERE n <> 0 ORDER BY id")
        .unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// `(log rows, sequence numbers applied more than once)` on the target.
pub fn log_stats(c: &Connection) -> (i64, Vec<i64>) {
    let rows: i64 = c
        .query_row("SELECT count(*) FROM log", [], |r| r.get(0))
        .unwrap();
    let mut s = c
        .prepare("SELECT seq FROM log GROUP BY seq HAVING count(*) > 1 ORDER BY seq")
        .unwrap();
    let dups = s
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    (rows, dups)
}

/// `PRAGMA integrity_check` through `c`.
pub fn integrity(c: &Connection) -> String {
    let mut s = c.prepare("PRAGMA integrity_check").unwrap();
    let rows: Vec<String> = s
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    rows.join("; ")
}

/// Asserts that the counter target holds exactly the fold of the entries up to its watermark,
/// with no duplicate, and returns the watermark.
pub fn assert_target_is_fold(path: &Path, journal_id: uuid::Uuid, ledger: &Ledger) -> Lsn {
    let w = target_watermark(path, journal_id);
    let c = open_target(path);
    assert_eq!(integrity(&c), "ok", "target integrity");
    assert_eq!(
        counters_of(&c),
        ledger.fold(w),
        "target counters must be the fold of LSNs 1..={w}"
    );
    let (rows, dups) = log_stats(&c);
    assert!(dups.is_empty(), "entries applied twice: {dups:?}");
    let increments = ledger.fold(w).values().sum::<i64>();
    assert_eq!(rows, increments, "log rows = increments up to {w}");
    w
}

/// All rows of `table`, ordered by its first column.
pub fn dump(c: &Connection, table: &str) -> Vec<Vec<Value>> {
    let mut s = c
        .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY 1"))
        .unwrap_or_else(|e| panic!("dump {table}: {e}"));
    let n = s.column_count();
    s.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// Every inventory table.
pub fn dump_inventory(c: &Connection) -> BTreeMap<&'static str, Vec<Vec<Value>>> {
    INVENTORY_TABLES.iter().map(|t| (*t, dump(c, t))).collect()
}

/// Creates a target file with `schema` (in `journal_mode=DELETE`, so no `-journal` file is left).
pub fn create_target(path: &Path, schema: &str) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(schema).unwrap();
    drop(c);
}

/// An SQLite error with a primary result code, as a failing statement would return it.
pub fn sqlite_err(code: std::os::raw::c_int) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some("injected".into()))
}

/// An injected transient I/O error.
pub fn ioerr() -> rusqlite::Error {
    sqlite_err(rusqlite::ffi::SQLITE_IOERR)
}

/// An injected "database is busy".
pub fn busy() -> rusqlite::Error {
    sqlite_err(rusqlite::ffi::SQLITE_BUSY)
}

/// Replay options for tests: tiny retry delays, no retries unless asked.
pub fn replay_opts() -> ReplayOptions {
    ReplayOptions::new()
        .retry_attempts_max(0)
        .retry_delay_ms(1)
        .retry_delay_max_ms(5)
}

/// When a [`Faults`] fires.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Only in the target transaction with this number (0 = the first `BEGIN` seen after
    /// arming); `None`: any.
    pub txn: Option<usize>,
    /// Only at this statement index; `None`: any index.
    pub index: Option<usize>,
    /// Only for statements with this label; `None`: any label.
    pub label: Option<String>,
    /// Let this many matching statements pass before firing.
    pub skip: usize,
    /// How many times to fire (`usize::MAX`: always).
    pub times: usize,
    /// The SQLite primary result code to fail with.
    pub code: std::os::raw::c_int,
    /// Fail `after_commit` this many times (in-doubt commits).
    pub after_commit: usize,
}

/// A callback run before every statement, with its index and label.
type StatementHook = Box<dyn FnMut(usize, &str) + Send>;

/// A scriptable [`TargetFaults`]: fires per its [`Plan`] while armed, counts transactions,
/// hits and statements, and can sleep before every statement (a slow target).
#[derive(Default)]
pub struct Faults {
    plan: Mutex<Plan>,
    armed: AtomicBool,
    /// `BEGIN`s seen since arming.
    txns: AtomicUsize,
    /// Faults fired since arming.
    hits: AtomicUsize,
    /// Matching statements let pass since arming.
    skipped: AtomicUsize,
    /// After-commit faults fired since arming.
    commit_hits: AtomicUsize,
    /// Statements seen (whatever the arming).
    statements: AtomicUsize,
    /// Microseconds to sleep before each statement.
    sleep_us: AtomicUsize,
    /// Labels seen, by index, in the last transaction.
    last_txn: Mutex<Vec<String>>,
    /// Run in `after_commit` before an in-doubt failure is reported.
    on_in_doubt: Mutex<Option<Box<dyn FnMut() + Send>>>,
    /// Run before every statement, with its index and label.
    on_statement: Mutex<Option<StatementHook>>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("plan", &self.plan)
            .field("hits", &self.hits)
            .finish_non_exhaustive()
    }
}

impl Faults {
    /// A disarmed fault injector.
    pub fn new() -> Faults {
        Faults::default()
    }

    /// Arms `plan` (resetting the counters).
    pub fn arm(&self, plan: Plan) {
        *self.plan.lock().unwrap() = plan;
        self.txns.store(0, Ordering::SeqCst);
        self.hits.store(0, Ordering::SeqCst);
        self.skipped.store(0, Ordering::SeqCst);
        self.commit_hits.store(0, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Stops firing.
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }

    /// Faults fired since the last `arm`.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// After-commit faults fired since the last `arm`.
    pub fn commit_hits(&self) -> usize {
        self.commit_hits.load(Ordering::SeqCst)
    }

    /// Transactions begun since the last `arm`.
    pub fn txns(&self) -> usize {
        self.txns.load(Ordering::SeqCst)
    }

    /// Statements seen in total.
    pub fn statements(&self) -> usize {
        self.statements.load(Ordering::SeqCst)
    }

    /// The labels of the last transaction's statements, by index.
    pub fn last_txn_labels(&self) -> Vec<String> {
        self.last_txn.lock().unwrap().clone()
    }

    /// Runs `f` when an in-doubt commit is simulated (after the commit landed, before the
    /// replayer is told it failed).
    pub fn on_in_doubt(&self, f: impl FnMut() + Send + 'static) {
        *self.on_in_doubt.lock().unwrap() = Some(Box::new(f));
    }

    /// Runs `f` before every statement (whatever the arming), with its index and label.
    pub fn on_statement(&self, f: impl FnMut(usize, &str) + Send + 'static) {
        *self.on_statement.lock().unwrap() = Some(Box::new(f));
    }

    /// Sleep this long before every statement.
    pub fn set_sleep(&self, d: Duration) {
        self.sleep_us
            .store(d.as_micros() as usize, Ordering::SeqCst);
    }
}

impl TargetFaults for Faults {
    fn before_statement(&self, index: usize, label: &str) -> rusqlite::Result<()> {
        self.statements.fetch_add(1, Ordering::SeqCst);
        {
            let mut l = self.last_txn.lock().unwrap();
            if index == 0 {
                l.clear();
            }
            l.push(label.to_string());
        }
        if let Some(f) = self.on_statement.lock().unwrap().as_mut() {
            f(index, label);
        }
        let sleep = self.sleep_us.load(Ordering::SeqCst);
        if sleep > 0 {
            std::thread::sleep(Duration::from_micros(sleep as u64));
        }
        if !self.armed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let txn = if index == 0 {
            self.txns.fetch_add(1, Ordering::SeqCst)
        } else {
            self.txns.load(Ordering::SeqCst).saturating_sub(1)
        };
        let plan = self.plan.lock().unwrap();
        let matches = plan.txn.is_none_or(|t| t == txn)
            && plan.index.is_none_or(|i| i == index)
            && plan.label.as_deref().is_none_or(|l| l == label);
        if matches && self.skipped.load(Ordering::SeqCst) < plan.skip {
            self.skipped.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        if matches && self.hits.load(Ordering::SeqCst) < plan.times {
            self.hits.fetch_add(1, Ordering::SeqCst);
            return Err(sqlite_err(plan.code));
        }
        Ok(())
    }

    fn after_commit(&self) -> rusqlite::Result<()> {
        if !self.armed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let plan = self.plan.lock().unwrap();
        if self.commit_hits.load(Ordering::SeqCst) < plan.after_commit {
            self.commit_hits.fetch_add(1, Ordering::SeqCst);
            if let Some(f) = self.on_in_doubt.lock().unwrap().as_mut() {
                f();
            }
            return Err(ioerr());
        }
        Ok(())
    }
}

/// Runs `f` on a thread and panics if it does not finish within `secs` (a hang guard, not a
/// timing assertion).
pub fn with_timeout<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        let out = f();
        let _ = tx.send(());
        out
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("hang guard: the test body did not finish within {secs} s (deadlock?)")
        }
    }
}

#[path = "../rng/mod.rs"]
mod rng;
#[allow(unused_imports)]
pub use rng::Rng;

/// How a path was made read-only, and how to undo it.
#[derive(Debug)]
pub struct ReadOnly {
    path: PathBuf,
    mode: u32,
    immutable: bool,
    /// How the path was made read-only, for messages.
    pub how: String,
}

/// True if `path` (a file) can be opened for writing, or (a directory) can get a new entry.
pub fn writable(path: &Path) -> bool {
    if path.is_dir() {
        let probe = path.join(".replay-test-write-probe");
        match std::fs::File::create(&probe) {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                true
            }
            Err(_) => false,
        }
    } else {
        std::fs::OpenOptions::new().write(true).open(path).is_ok()
    }
}

fn chattr(flag: &str, path: &Path) -> bool {
    std::process::Command::new("chattr")
        .arg(flag)
        .arg(path)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl ReadOnly {
    /// Makes `path` read-only: `chmod` (0444 for a file, 0555 for a directory) and, where
    /// that does not stop writes (root), `chattr +i`. `None` if nothing works: the caller
    /// skips loudly (or fails under `CI`).
    pub fn make(path: &Path) -> Option<ReadOnly> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        let ro = if path.is_dir() { 0o555 } else { 0o444 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(ro)).unwrap();
        let mut guard = ReadOnly {
            path: path.to_path_buf(),
            mode,
            immutable: false,
            how: format!("chmod {ro:o}"),
        };
        if !writable(path) {
            return Some(guard);
        }
        if chattr("+i", path) {
            guard.immutable = true;
            guard.how = format!("chmod {ro:o} (ineffective: running as root) and chattr +i");
            if !writable(path) {
                return Some(guard);
            }
        }
        None
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.immutable {
            chattr("-i", &self.path);
        }
        let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(self.mode));
    }
}

/// Skips a scenario that this environment cannot set up: loudly, and as a failure when the
/// environment variable `CI` is set.
pub fn skip_or_fail(what: &str) {
    let msg = format!(
        "!!!!!!!! SKIPPED: {what} — this environment cannot set it up; the scenario was NOT tested !!!!!!!!"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg} (CI is set: failing instead of skipping)");
    }
    eprintln!("{msg}");
}

/// A journal of increments, a counter target and a fault injector, in a temporary directory.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub journal: Arc<Journal>,
    pub target: PathBuf,
    pub faults: Arc<Faults>,
    pub ledger: Ledger,
}

impl Rig {
    /// `entries` increments in a journal of 64 KiB segments; the target created with
    /// [`COUNTER_SCHEMA`].
    pub fn new(entries: u64) -> Rig {
        Rig::with_journal(JournalOptions::new().segment_bytes_max(64 << 10), entries)
    }

    /// `entries` increments in a journal opened with `opts`.
    pub fn with_journal(opts: JournalOptions, entries: u64) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(dir.path().join("journal"), opts).unwrap());
        let mut ledger = Ledger::default();
        ledger.append_increments(&journal, entries);
        let share = dir.path().join("share");
        std::fs::create_dir_all(&share).unwrap();
        let target = share.join("target.db");
        create_target(&target, COUNTER_SCHEMA);
        Rig {
            dir,
            journal,
            target,
            faults: Arc::new(Faults::new()),
            ledger,
        }
    }

    /// Default target options (1 s busy timeout) with the rig's fault injector.
    pub fn target_opts(&self) -> TargetOptions {
        TargetOptions::new()
            .busy_timeout_ms(1000)
            .faults(Arc::clone(&self.faults) as Arc<dyn TargetFaults>)
    }

    /// A replayer to the rig's target, with the rig's fault injector.
    pub fn replayer(&self, opts: ReplayOptions) -> Replayer<Increment> {
        self.replayer_with(self.target_opts(), opts)
    }

    /// A replayer to the rig's target with the given target options.
    pub fn replayer_with(&self, topts: TargetOptions, opts: ReplayOptions) -> Replayer<Increment> {
        Replayer::new(Arc::clone(&self.journal), &self.target, topts, opts)
    }

    /// Appends `n` more increments.
    pub fn append(&mut self, n: u64) -> std::ops::Range<Lsn> {
        let j = Arc::clone(&self.journal);
        self.ledger.append_increments(&j, n)
    }

    /// The journal's acknowledged LSN.
    pub fn acked(&self) -> Lsn {
        self.journal.state().acked_lsn
    }

    /// The target is the fold of its prefix up to its watermark, and the acknowledgement is
    /// that watermark. Returns the watermark.
    pub fn check_prefix(&self, what: &str) -> Lsn {
        let w = assert_target_is_fold(&self.target, self.journal.id(), &self.ledger);
        assert_eq!(
            self.acked(),
            w,
            "{what}: acknowledgement = target watermark"
        );
        w
    }

    /// Everything applied exactly once.
    pub fn check_complete(&self, what: &str) {
        let w = self.check_prefix(what);
        assert_eq!(w, self.ledger.head(), "{what}: watermark = last LSN");
    }
}
