//! Target faults: a scriptable [`TargetFaults`] ([`Faults`], fired per a [`Plan`]), a slow
//! target for the kill -9 children ([`SlowTarget`]), and the SQLite errors they inject.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use syncjournal::TargetOptions;
use syncjournal::replay::TargetFaults;

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

/// A slow target for the kill -9 children: every statement sleeps `statement_sleep` (a slow
/// share, so that most of the time is spent inside target transactions); once a transaction
/// has begun (before its second statement) it prints `BEGIN` on stdout, after each commit `COMMITTED`, then sleeps `after_commit_sleep` (widening the window between
/// a commit and its acknowledgement, so that some kills land there too).
#[derive(Debug, Clone, Copy)]
pub struct SlowTarget {
    pub statement_sleep: Duration,
    pub after_commit_sleep: Duration,
}

impl SlowTarget {
    /// `base` with a 5 s busy timeout and this slow target: a kill -9 child's target options.
    pub fn options(self, base: TargetOptions) -> TargetOptions {
        base.busy_timeout_ms(5_000).faults(Arc::new(self))
    }
}

impl TargetFaults for SlowTarget {
    fn before_statement(&self, index: usize, _label: &str) -> rusqlite::Result<()> {
        if index == 1 {
            println!("BEGIN");
        }
        std::thread::sleep(self.statement_sleep);
        Ok(())
    }

    fn after_commit(&self) -> rusqlite::Result<()> {
        println!("COMMITTED");
        if !self.after_commit_sleep.is_zero() {
            std::thread::sleep(self.after_commit_sleep);
        }
        Ok(())
    }
}
