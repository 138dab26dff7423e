//! Shared helpers for the torture suites (`power_loss`, `pipeline_kill9`, `fault_matrix`): a
//! seeded PRNG, a hang guard, a summary line written to the real stderr, child processes
//! re-executing the test binary, root-only guards (a tmpfs mount, `chattr +i`), loud skips,
//! and a NON-IDEMPOTENT counter event with the fold that checks it. Each suite uses a subset.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};
use syncjournal::{ApplyContext, ApplyError, JournalEvent, Lsn};

/// Runs `f` on a thread and panics if it has not finished after `secs` seconds. A hang guard
/// only: nothing is asserted about how long `f` takes.
pub fn with_timeout<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        let out = f();
        let _ = tx.send(());
        out
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(RecvTimeoutError::Timeout) => {
            panic!("hang guard: the test body did not finish within {secs} s (deadlock?)")
        }
    }
}

/// Writes one line to the process's real stderr (the test harness captures `eprintln!`, not
/// direct writes), so that a suite's summary shows in a plain `cargo test` run.
pub fn summary(line: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{line}");
    let _ = e.flush();
}

#[path = "../rng/mod.rs"]
mod rng;
#[allow(unused_imports)]
pub use rng::Rng;

/// FNV-1a, 64 bits.
pub fn digest(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// True when the effective user is root (from `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Skips a scenario LOUDLY (on the real stderr), and fails instead when the environment
/// variable `CI` is set: in CI every scenario must run.
pub fn skip_or_fail(what: &str, why: &str) {
    let msg = format!(
        "!!!!!!!!!!!!!!!! SKIPPED {what}: {why} — this scenario was NOT tested !!!!!!!!!!!!!!!!"
    );
    summary(&msg);
    assert!(
        std::env::var_os("CI").is_none(),
        "{msg} (CI is set: failing instead of skipping)"
    );
}

/// A temporary directory in `/dev/shm` (RAM) when it exists, else in the default place.
pub fn shm_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::Builder::new()
            .prefix("syncjournal-torture-")
            .tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().expect("temporary directory")
}

/// A command that re-runs this test binary with only the `#[ignore]`d test `name` (with its
/// output shown), with the environment variable `var` set to `value`.
pub fn child_test_command(name: &str, var: &str, value: &Path) -> Command {
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        name,
        "--nocapture",
        "--ignored",
        "--test-threads",
        "1",
    ])
    .env(var, value)
    .env("RUST_BACKTRACE", "1");
    cmd
}

/// A child process whose stdout lines arrive on a channel. Lines cut by a kill (no final
/// newline) are dropped: they promise nothing.
pub struct ChildLines {
    pub child: Child,
    pub rx: Receiver<String>,
    pump: Option<std::thread::JoinHandle<()>>,
}

impl ChildLines {
    /// Spawns `cmd` with stdout piped (stdin and stderr as the caller set them).
    pub fn spawn(mut cmd: Command) -> ChildLines {
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel::<String>();
        let pump = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if !line.ends_with('\n') => break,
                    Ok(_) => {
                        if tx.send(line.trim_end().to_owned()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        ChildLines {
            child,
            rx,
            pump: Some(pump),
        }
    }

    /// Waits (hang guard `max`) for a line containing `mark`; returns the text after it.
    /// Lines before it are passed to `other`. Panics if the child exits first.
    pub fn wait_for(
        &mut self,
        mark: &str,
        max: Duration,
        other: &mut dyn FnMut(&str),
    ) -> Result<String, String> {
        let deadline = Instant::now() + max;
        loop {
            match self
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => match l.find(mark) {
                    Some(i) => return Ok(l[i + mark.len()..].trim().to_owned()),
                    None => other(&l),
                },
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "hang guard: no {mark:?} from the child within {max:?}"
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    return Err(format!("the child exited before {mark:?}: {status:?}"));
                }
            }
        }
    }

    /// Waits for the stdout pump to end (after the child died) and returns the lines it had
    /// not delivered yet.
    pub fn drain(&mut self) -> Vec<String> {
        if let Some(p) = self.pump.take() {
            let _ = p.join();
        }
        self.rx.try_iter().collect()
    }
}

impl Drop for ChildLines {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A tmpfs mounted for the life of the guard (root only); unmounted on drop, lazily if busy.
pub struct TmpfsMount {
    pub path: PathBuf,
}

impl TmpfsMount {
    pub fn mount(at: &Path, size: &str) -> Result<TmpfsMount, String> {
        if !is_root() {
            return Err("needs root".into());
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(TmpfsMount {
            path: at.to_path_buf(),
        })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// `chattr +i` on some paths for the life of the guard; `chattr -i` on drop (in reverse
/// order). As root, `chmod` does not stop writes; the immutable attribute does.
pub struct Immutable {
    paths: Vec<PathBuf>,
}

fn chattr(flag: &str, path: &Path) -> Result<(), String> {
    let out = Command::new("chattr")
        .arg(flag)
        .arg(path)
        .output()
        .map_err(|e| format!("chattr: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "chattr {flag} {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Immutable {
    /// Makes every path immutable, or undoes what it did and reports why it could not.
    pub fn make(paths: &[&Path]) -> Result<Immutable, String> {
        if !is_root() {
            return Err("needs root".into());
        }
        let mut guard = Immutable { paths: Vec::new() };
        for p in paths {
            chattr("+i", p)?;
            guard.paths.push(p.to_path_buf());
        }
        Ok(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in self.paths.iter().rev() {
            if let Err(e) = chattr("-i", p) {
                summary(&format!("WARNING: could not undo chattr +i: {e}"));
            }
        }
    }
}

/// Schema of the counter tables, on the cache and on the target: one row per counter, and a
/// log of every application with no key, so that an entry applied twice shows as two rows.
pub const COUNTER_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS counters (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log (seq INTEGER NOT NULL, counter INTEGER NOT NULL);
";

/// Number of distinct counters.
pub const COUNTERS: i64 = 5;

/// A NON-IDEMPOTENT event: applying it twice increments its counter twice and logs it twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bump {
    pub counter: i64,
    /// Unique per event (logged, to name duplicates).
    pub seq: i64,
}

impl Bump {
    pub fn new(seq: i64) -> Bump {
        Bump {
            counter: ((seq as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as i64 % COUNTERS + 1,
            seq,
        }
    }
}

impl JournalEvent for Bump {
    const KIND: u8 = 0x42;

    fn apply(&self, db: &mut ApplyContext<'_>) -> Result<(), ApplyError> {
        db.conn().execute(
            "INSERT INTO counters (id, n) VALUES (?1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1",
            [self.counter],
        )?;
        db.conn().execute(
            "INSERT INTO log (seq, counter) VALUES (?1, ?2)",
            (self.seq, self.counter),
        )?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("bump counter {} (#{})", self.counter, self.seq)
    }
}

/// The counters after applying `events` (in order) once each.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a Bump>) -> BTreeMap<i64, i64> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(e.counter).or_insert(0) += 1;
    }
    m
}

/// The counters read through `c`.
pub fn counters_of(c: &Connection) -> BTreeMap<i64, i64> {
    let mut s = c
        .prepare("SELECT id, n FROM counters ORDER BY id")
        .expect("read counters");
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
        .expect("read counters")
}

/// Every logged sequence number, sorted (duplicates kept).
pub fn logged_seqs(c: &Connection) -> Vec<i64> {
    let mut s = c
        .prepare("SELECT seq FROM log ORDER BY seq")
        .expect("read log");
    s.query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
        .expect("read log")
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

/// A fresh connection to a target, as an outsider opens it (never creating it). A hot rollback
/// journal left by a killed writer is rolled back by this connection's first read.
pub fn open_target(path: &Path) -> Connection {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap_or_else(|e| panic!("open target {}: {e}", path.display()));
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

/// Creates a target file with `schema`.
pub fn create_target(path: &Path, schema: &str) {
    let c = Connection::open(path).expect("create target");
    c.execute_batch(schema).expect("target schema");
}

/// The target's watermark for `journal_id` (0: no row, or no progress table yet).
pub fn target_watermark(c: &Connection, journal_id: uuid::Uuid) -> Lsn {
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

/// A [`Bump`] carrying padding, so that a 64 KiB segment holds only a few hundred of them: a
/// journal of `WideBump`s rotates every few hundred entries. Applies exactly as its `Bump`
/// (NON-IDEMPOTENT).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WideBump {
    pub bump: Bump,
    pub pad: String,
}

/// Padding bytes per [`WideBump`]: about 200 bytes a record, about 300 records per 64 KiB
/// segment.
pub const WIDE_BUMP_PAD_BYTES: usize = 160;

impl WideBump {
    pub fn new(seq: i64) -> WideBump {
        WideBump {
            bump: Bump::new(seq),
            pad: "p".repeat(WIDE_BUMP_PAD_BYTES),
        }
    }
}

impl JournalEvent for WideBump {
    const KIND: u8 = 0x44;

    fn apply(&self, db: &mut ApplyContext<'_>) -> Result<(), ApplyError> {
        self.bump.apply(db)
    }

    fn describe(&self) -> String {
        self.bump.describe()
    }
}

/// The first LSN of every segment in the journal directory `dir` (by sequence number), read
/// from the segment headers. Segments whose header does not decode (one being created) are
/// left out.
pub fn segment_first_lsns(dir: &Path) -> BTreeMap<u64, Lsn> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".sjl")) else {
            continue;
        };
        let Ok(seq) = stem.parse::<u64>() else {
            continue;
        };
        let mut head = vec![0u8; syncjournal::format::SEGMENT_HEADER_BYTES];
        let read = std::fs::File::open(e.path())
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
        if read.is_err() {
            continue;
        }
        if let Ok((h, _)) = syncjournal::format::SegmentHeader::decode(&head) {
            out.insert(seq, h.first_lsn);
        }
    }
    out
}

/// The last LSN of every segment that has a successor: `first_lsn(next) - 1`.
pub fn segment_last_lsns(firsts: &BTreeMap<u64, Lsn>) -> std::collections::BTreeSet<Lsn> {
    firsts
        .values()
        .skip(1)
        .map(|&f| f.saturating_sub(1))
        .collect()
}

/// Sorted LSNs (or sequence numbers) as inclusive ranges of consecutive values.
pub fn ranges_of(sorted: &[i64]) -> Vec<std::ops::RangeInclusive<i64>> {
    let mut out: Vec<std::ops::RangeInclusive<i64>> = Vec::new();
    for &v in sorted {
        match out.last_mut() {
            Some(r) if *r.end() + 1 == v => *r = *r.start()..=v,
            Some(r) if *r.end() == v => {}
            _ => out.push(v..=v),
        }
    }
    out
}

/// `(rows, distinct sequence numbers, smallest, largest)` of the counter log, read through
/// `c` in one query. The log holds exactly the sequence numbers `1..=n` once each iff this is
/// `(n, n, 1, n)` (or `(0, 0, 0, 0)` for `n = 0`).
pub fn log_shape(c: &Connection) -> (i64, i64, i64, i64) {
    c.query_row(
        "SELECT count(*), count(DISTINCT seq), coalesce(min(seq), 0), coalesce(max(seq), 0) FROM log",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .expect("read log shape")
}
