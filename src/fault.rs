//! Fault injection for tests and fuzzing: named I/O operations of the journal, and statements
//! of the replayer's target transactions, that a test can make fail on purpose.
//!
//! Public only with the cargo feature `fault-injection` (the crate's own tests and fuzzers turn
//! it on); without it the seams stay a branch on `None` and nothing here is in the API.

use std::fmt;
use std::io;
use std::path::Path;
#[cfg(feature = "fault-injection")]
use std::sync::Mutex;

/// An I/O operation a [`FaultInjector`] may fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IoOp {
    /// `msync`/`fdatasync` of segment data.
    SyncData,
    /// Reserving a new segment's space (`fallocate`).
    Allocate,
    /// `fsync` of the journal directory.
    SyncDir,
    /// Writing and syncing the acknowledgement file.
    WriteAck,
    /// Removing a retired segment.
    RemoveSegment,
    /// The store's commit of its cache transaction, after the journal write (`ENOSPC` is
    /// reported as SQLite's `SQLITE_FULL`, any other errno as `SQLITE_IOERR`). Checked by the
    /// store through its journal's injector.
    CacheCommit,
}

/// Decides whether an I/O operation fails. Implementations must be cheap and thread-safe.
pub trait FaultInjector: Send + Sync + fmt::Debug {
    /// Called before `op` on `path`; an `Err` is returned to the caller as if the operating
    /// system had reported it.
    fn check(&self, op: IoOp, path: &Path) -> io::Result<()>;
}

#[cfg(feature = "fault-injection")]
/// A simple [`FaultInjector`]: fail the `n`-th and later calls of an operation with an errno.
#[derive(Debug, Default)]
pub struct FaultPlan {
    rules: Mutex<Vec<Rule>>,
}

#[cfg(feature = "fault-injection")]
#[derive(Debug)]
struct Rule {
    op: IoOp,
    skip: u64,
    remaining: Option<u64>,
    errno: i32,
}

#[cfg(feature = "fault-injection")]
impl FaultPlan {
    /// An empty plan: nothing fails.
    pub fn new() -> Self {
        Self::default()
    }

    /// After `skip` successful calls of `op`, fail the following `times` calls (`None`: all of
    /// them) with the raw OS error `errno` (for example `libc`'s `EIO` = 5, `ENOSPC` = 28).
    pub fn fail(&self, op: IoOp, skip: u64, times: Option<u64>, errno: i32) -> &Self {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Rule {
                op,
                skip,
                remaining: times,
                errno,
            });
        self
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(feature = "fault-injection")]
impl FaultInjector for FaultPlan {
    fn check(&self, op: IoOp, _path: &Path) -> io::Result<()> {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        for rule in rules.iter_mut().filter(|r| r.op == op) {
            if rule.skip > 0 {
                rule.skip -= 1;
                continue;
            }
            match &mut rule.remaining {
                Some(0) => continue,
                Some(n) => *n -= 1,
                None => {}
            }
            return Err(io::Error::from_raw_os_error(rule.errno));
        }
        Ok(())
    }
}

/// A test seam: fail chosen statements of the replayer's target transactions.
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
pub trait TargetFaults: Send + Sync {
    /// Called before each statement the replayer runs on the target, with the statement's
    /// index within the current transaction (`BEGIN` is 0) and a short label; an error makes
    /// the statement fail with it. Statements inside an application event's `apply` count as
    /// one, labelled `event`.
    fn before_statement(&self, index: usize, label: &str) -> rusqlite::Result<()>;

    /// Called after a `COMMIT` succeeded; an error simulates an in-doubt commit: the batch
    /// landed but the replayer is told it failed.
    fn after_commit(&self) -> rusqlite::Result<()> {
        Ok(())
    }
}
