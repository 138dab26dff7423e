//! The fault matrix: one test per fault, each asserting the SPECIFIC error (variant, fields
//! and message) and that nothing is lost (every record or entry that was acknowledged before
//! the fault is still there, and applied exactly once where a target is involved).
//!
//! | fault | expected |
//! |---|---|
//! | ENOSPC while rotating (`FaultPlan`, `IoOp::Allocate`, errno 28) | `DiskFull` naming the new segment and its size; journal unchanged, not poisoned |
//! | ENOSPC on a real 1 MiB tmpfs (root) | `DiskFull` with the OS's ENOSPC, not SIGBUS |
//! | EIO on sync | `Io` (EIO) for the caller, then `Poisoned` for every call; reopen keeps every durable record |
//! | read-only target (`chattr +i` on the file and its directory) | transient `Target` error saying read-only, in the status; nothing acknowledged |
//! | target locked by another process for 30 s | transient busy `Target` error at every attempt, in the status; nothing acknowledged; then applied exactly once |
//! | schema mismatch on the target | `EntryRejected` naming the missing table / mismatched column; `SchemaMismatch` for a wrong progress table |
//! | foreign journal directory | `ForeignDirectory`, `ForeignFile`, `ForeignSegment` |
//! | a second process opening the journal | `Locked` with the holder's pid |
//! | a segment truncated while closed | `Corrupt` `SegmentLength` naming the file; salvage recovers the rest |
//!
//! The last test to finish prints the matrix summary, e.g.
//! `fault matrix: 9 faults, 9 specific errors, lost 0`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use syncjournal::error::{JournalError, TargetError};

use crate::support::events::{Bump, COUNTER_SCHEMA, counters_of, fold, logged_seqs};
use crate::support::journal::{payload_for_lsn, read_retained, tmp_files};
use crate::support::process::{
    ChildLines, Immutable, TmpfsMount, child_test_command, skip_or_fail, summary, test_path,
    with_timeout,
};
use crate::support::targets::{
    TargetKind, TestTarget, create_target, integrity, open_target, watermark_of,
};
use rusqlite::Connection;
use syncjournal::fault::{FaultPlan, IoOp};
use syncjournal::{
    ChangeSet, DamageKind, Error, Journal, JournalOptions, Lsn, PersistMode, RecoveryMode,
    ReplayOptions, Store, StoreOptions, TargetOptions, Value,
};

const ENOSPC: i32 = 28;
const EIO: i32 = 5;
const SEG: u64 = 64 << 10;
const FAULTS: usize = 9;

// ---------------------------------------------------------------------------------------------
// The matrix's summary.

#[derive(Debug)]
enum Status {
    Specific(String),
    Skipped(String),
    Failed,
}

static OUTCOMES: Mutex<Vec<(&'static str, Status, u64)>> = Mutex::new(Vec::new());

/// What a fault's test found: the specific error, or why it was skipped; and how many records
/// or entries were lost (expected: 0, asserted by each test).
enum Found {
    Error(String, u64),
    Skipped(String),
}

/// Records a fault's outcome when the test ends (as failed if it panics); the last of the
/// matrix's tests to end prints the summary line.
struct Matrix {
    fault: &'static str,
    found: Option<Found>,
}

impl Matrix {
    fn run(fault: &'static str, secs: u64, body: fn() -> Found) {
        let mut m = Matrix { fault, found: None };
        m.found = Some(with_timeout(secs, body));
    }
}

impl Drop for Matrix {
    fn drop(&mut self) {
        let (status, lost) = match self.found.take() {
            _ if std::thread::panicking() => (Status::Failed, 0),
            Some(Found::Error(e, lost)) => (Status::Specific(e), lost),
            Some(Found::Skipped(why)) => (Status::Skipped(why), 0),
            None => (Status::Failed, 0),
        };
        let mut all = OUTCOMES.lock().unwrap_or_else(|e| e.into_inner());
        all.push((self.fault, status, lost));
        if all.len() == FAULTS {
            let specific = all
                .iter()
                .filter(|o| matches!(o.1, Status::Specific(_)))
                .count();
            let skipped = all
                .iter()
                .filter(|o| matches!(o.1, Status::Skipped(_)))
                .count();
            let failed = all.iter().filter(|o| matches!(o.1, Status::Failed)).count();
            let lost: u64 = all.iter().map(|o| o.2).sum();
            let details: Vec<String> = all
                .iter()
                .map(|(f, s, _)| match s {
                    Status::Specific(e) => format!("{f}: {e}"),
                    Status::Skipped(why) => format!("{f}: SKIPPED ({why})"),
                    Status::Failed => format!("{f}: FAILED"),
                })
                .collect();
            summary(&format!(
                "fault matrix: {FAULTS} faults, {specific} specific errors, lost {lost}{}{} [{}]",
                if skipped > 0 {
                    format!(", SKIPPED {skipped}")
                } else {
                    String::new()
                },
                if failed > 0 {
                    format!(", FAILED {failed}")
                } else {
                    String::new()
                },
                details.join("; ")
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Appends records of `len` bytes (`payload_for_lsn` of their index in `written`, where each
/// is noted once its append returned) until an append fails: its error. Panics if `max`
/// records went in first (`what` never filled up).
fn append_until_refused(
    j: &Journal,
    written: &mut Vec<Vec<u8>>,
    len: usize,
    max: usize,
    what: &str,
) -> Error {
    loop {
        let p = payload_for_lsn(written.len() as u64, len);
        match j.append(&p) {
            Ok(lsn) => {
                assert_eq!(lsn, written.len() as Lsn + 1);
                written.push(p);
            }
            Err(e) => return e,
        }
        assert!(written.len() < max, "{what} never filled up");
    }
}

/// How many of `expected` (LSN `i + 1` holds `expected[i]`) `records` (from LSN 1) do not hold
/// exactly.
fn missing(records: &[syncjournal::Record], expected: &[Vec<u8>]) -> u64 {
    let mut lost = 0;
    for (i, p) in expected.iter().enumerate() {
        if records
            .get(i)
            .is_none_or(|r| r.lsn != i as u64 + 1 || r.payload != *p)
        {
            lost += 1;
        }
    }
    lost
}

/// Records of `expected` (LSN `i + 1` holds `expected[i]`) that the journal in `dir` does not
/// hold exactly; also checks that the journal holds nothing else.
fn lost_records(dir: &Path, expected: &[Vec<u8>]) -> u64 {
    let j = Journal::open(dir, JournalOptions::new().lock_wait_ms(5_000)).expect("reopen");
    let records = read_retained(&j);
    let lost = missing(&records, expected);
    assert_eq!(lost, 0, "records lost after the fault");
    assert_eq!(records.len(), expected.len(), "unexpected extra records");
    lost
}

const HOSTS_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS hosts (id INTEGER PRIMARY KEY, name TEXT);";

fn host(i: i64) -> ChangeSet {
    ChangeSet::new().upsert(
        "hosts",
        [("id", i)],
        [("name", Value::from(format!("web-{i}")))],
    )
}

fn hosts_of(c: &Connection) -> Vec<(i64, String)> {
    let mut s = c.prepare("SELECT id, name FROM hosts ORDER BY id").unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// The hosts on a target of any kind.
fn hosts_on(target: &TestTarget) -> Vec<(i64, String)> {
    target
        .rows("SELECT id, name FROM hosts ORDER BY id")
        .into_iter()
        .map(|r| match &r[..] {
            [Value::Integer(id), Value::Text(name)] => (*id, name.clone()),
            other => panic!("a host row: {other:?}"),
        })
        .collect()
}

fn replay_opts() -> ReplayOptions {
    ReplayOptions::new()
        .retry_attempts_max(1)
        .retry_delay_ms(5)
        .retry_delay_max_ms(20)
}

/// A change-set store on `dir/journal` + `dir/cache.db` replaying (on demand) to `target`.
fn hosts_store(dir: &Path, target: &TestTarget) -> Store {
    Store::open(
        dir.join("journal"),
        dir.join("cache.db"),
        StoreOptions::new()
            .journal(JournalOptions::new().lock_wait_ms(5_000))
            .cache_schema(HOSTS_SCHEMA)
            .target(target.spec(), target.options().busy_timeout_ms(200))
            .replay(replay_opts())
            .background_sync(false),
    )
    .expect("open store")
}

// ---------------------------------------------------------------------------------------------
// 1. ENOSPC while rotating, through the fault seam.

#[test]
fn enospc_while_rotating_fault_plan() {
    Matrix::run("ENOSPC at rotation (fault plan)", 60, || {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        let plan = Arc::new(FaultPlan::new());
        let opts = JournalOptions::new()
            .segment_bytes_max(SEG)
            .fault_injector(plan.clone());
        let j = Journal::open(&jdir, opts).unwrap();
        plan.fail(IoOp::Allocate, 0, None, ENOSPC);
        let mut written: Vec<Vec<u8>> = Vec::new();
        let err = append_until_refused(&j, &mut written, 1000, 100, "the first segment");
        let text = err.to_string();
        match &err {
            Error::Journal(JournalError::DiskFull {
                op,
                path,
                bytes,
                source,
            }) => {
                assert_eq!(*bytes, SEG, "DiskFull names the bytes the segment needs");
                assert_eq!(source.raw_os_error(), Some(ENOSPC), "the OS error");
                assert_eq!(
                    path,
                    &jdir.join("0000000000000002.sjl.tmp"),
                    "DiskFull names the segment being created"
                );
                assert!(op.contains("segment"), "op: {op}");
            }
            other => panic!("expected DiskFull, got {other:?}"),
        }
        assert!(
            text.contains("no space left") && text.contains("the journal is unchanged"),
            "message: {text}"
        );
        assert!(err.is_transient(), "a full disk is worth retrying");
        // Every way of appending is refused the same way; nothing consumed, nothing poisoned.
        for r in [
            j.append(&payload_for_lsn(999, 1000)).map(|_| ()),
            j.append_batch([payload_for_lsn(998, 1000)]).map(|_| ()),
        ] {
            assert!(
                matches!(r, Err(Error::Journal(JournalError::DiskFull { .. }))),
                "{r:?}"
            );
        }
        let st = j.state();
        assert_eq!(st.poisoned, None, "DiskFull must not poison");
        assert_eq!(st.next_lsn, written.len() as Lsn + 1, "no LSN consumed");
        assert_eq!(st.durable_lsn, written.len() as Lsn);
        assert_eq!(st.segments, 1);
        assert!(tmp_files(&jdir).is_empty(), "{:?}", tmp_files(&jdir));
        // Space is back: appends continue, rotation works.
        plan.clear();
        for _ in 0..80 {
            let p = payload_for_lsn(written.len() as u64, 1000);
            assert_eq!(j.append(&p).unwrap(), written.len() as Lsn + 1);
            written.push(p);
        }
        assert!(j.state().segments >= 2);
        j.close().unwrap();
        let lost = lost_records(&jdir, &written);
        Found::Error(
            format!(
                "DiskFull (ENOSPC, {SEG} bytes, {})",
                "0000000000000002.sjl.tmp"
            ),
            lost,
        )
    });
}

// ---------------------------------------------------------------------------------------------
// 2. ENOSPC on a real, full 1 MiB tmpfs.

#[test]
fn enospc_on_a_real_full_tmpfs() {
    Matrix::run("ENOSPC at rotation (real 1 MiB tmpfs)", 60, || {
        let dir = tempfile::tempdir().unwrap();
        let mount = match TmpfsMount::mount(dir.path(), "1m") {
            Ok(m) => m,
            Err(why) => {
                skip_or_fail("ENOSPC on a real 1 MiB tmpfs", &why);
                return Found::Skipped(why);
            }
        };
        let jdir = mount.path.join("j");
        let opts = || {
            JournalOptions::new()
                .segment_bytes_max(256 << 10)
                .lock_wait_ms(5_000)
        };
        let mut written: Vec<Vec<u8>> = Vec::new();
        let err = {
            let j = Journal::open(&jdir, opts()).unwrap();
            let err = append_until_refused(&j, &mut written, 4000, 1000, "the 1 MiB tmpfs");
            match &err {
                Error::Journal(JournalError::DiskFull { source, path, .. }) => {
                    assert_eq!(source.raw_os_error(), Some(ENOSPC), "{err}");
                    assert!(path.starts_with(&jdir), "{}", path.display());
                }
                other => panic!("a full tmpfs at rotation: expected DiskFull, got {other:?}"),
            }
            assert!(written.len() >= 60, "not even one segment fit");
            assert_eq!(j.state().poisoned, None);
            assert!(tmp_files(&jdir).is_empty(), "{:?}", tmp_files(&jdir));
            j.close().expect("close on a full file system");
            err
        };
        // Reopened on the still-full file system: everything is there.
        let lost = lost_records(&jdir, &written);
        drop(mount);
        Found::Error(
            format!(
                "DiskFull (ENOSPC from the kernel after {} records)",
                written.len()
            ),
            lost + u64::from(!matches!(
                err,
                Error::Journal(JournalError::DiskFull { .. })
            )),
        )
    });
}

// ---------------------------------------------------------------------------------------------
// 3. EIO on sync: poisoned.

#[test]
fn eio_on_sync_poisons_the_journal() {
    Matrix::run("EIO on sync", 60, || {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        let plan = Arc::new(FaultPlan::new());
        let j = Journal::open(
            &jdir,
            JournalOptions::new()
                .persist_mode(PersistMode::Sync)
                .segment_bytes_max(SEG)
                .fault_injector(plan.clone()),
        )
        .unwrap();
        let mut durable: Vec<Vec<u8>> = Vec::new();
        for i in 0..20 {
            let p = payload_for_lsn(i, 300);
            j.append(&p).unwrap();
            durable.push(p);
        }
        plan.fail(IoOp::SyncData, 0, Some(1), EIO);
        let failed = payload_for_lsn(20, 300);
        let err = j.append(&failed).expect_err("the sync fails");
        match &err {
            Error::Journal(JournalError::Io { op, source, path }) => {
                assert_eq!(source.raw_os_error(), Some(EIO), "{err}");
                assert!(op.contains("msync"), "op: {op}");
                assert_eq!(
                    path,
                    &jdir.join("0000000000000001.sjl"),
                    "names the segment"
                );
            }
            other => panic!("the append whose sync failed: expected Io(EIO), got {other:?}"),
        }
        // The fault was one-shot: whatever fails now fails because the journal is poisoned.
        let poisoned = |r: syncjournal::Result<()>, what: &str| match r {
            Err(Error::Journal(JournalError::Poisoned { reason })) => assert!(
                reason.contains("os error 5") && reason.contains("msync"),
                "{what}: reason {reason}"
            ),
            other => panic!("{what}: expected Poisoned, got {other:?}"),
        };
        for round in 0..2 {
            poisoned(j.append(b"x").map(|_| ()), "append");
            poisoned(j.append_kind(9, b"x").map(|_| ()), "append_kind");
            poisoned(j.append_batch([b"x"]).map(|_| ()), "append_batch");
            poisoned(j.write(1, b"x").map(|_| ()), "write");
            poisoned(j.sync(), "sync");
            poisoned(j.ack(1), "ack");
            poisoned(j.reader(1).map(|_| ()), "reader");
            poisoned(j.read(1).map(|_| ()), "read");
            poisoned(j.wait_durable(21), "wait_durable beyond the durable LSN");
            let st = j.state();
            assert!(st.poisoned.is_some(), "round {round}: state().poisoned");
            assert_eq!(
                st.durable_lsn, 20,
                "nothing declared durable after the failure"
            );
        }
        drop(j);
        // Reopen: every durable record, and the failed one at most as the next LSN (it was in
        // the page cache; recovery verifies it and makes it durable).
        let j = Journal::open(&jdir, JournalOptions::new().lock_wait_ms(5_000)).unwrap();
        assert_eq!(j.state().poisoned, None);
        let records = read_retained(&j);
        let lost = missing(&records, &durable);
        assert_eq!(lost, 0, "durable records lost after the poisoning");
        assert!(records.len() <= 21);
        if let Some(r) = records.get(20) {
            assert_eq!(r.payload, failed, "LSN 21 can only be the failed append");
        }
        let next = records.len() as Lsn + 1;
        assert_eq!(j.append(b"after reopen").unwrap(), next);
        Found::Error(
            "Io (EIO, msync segment) then Poisoned for every call".into(),
            lost,
        )
    });
}

// ---------------------------------------------------------------------------------------------
// 4. A read-only target.

#[test]
fn read_only_target() {
    Matrix::run("read-only target", 60, || {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().join("share");
        std::fs::create_dir_all(&share).unwrap();
        let sqlite = TestTarget::create(TargetKind::Sqlite, &share, "inventory.db", HOSTS_SCHEMA);
        let target = sqlite.path().to_path_buf();
        let store = hosts_store(dir.path(), &sqlite);
        for i in 1..=5 {
            store.apply(&host(i)).unwrap();
        }
        let guard = match Immutable::make(&[&target, &share]) {
            Ok(g) => g,
            Err(why) => {
                skip_or_fail("read-only target (chattr +i)", &why);
                return Found::Skipped(why);
            }
        };
        // Premise: the target really cannot be written, not even by root.
        assert!(
            std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .is_err()
        );
        assert!(std::fs::File::create(share.join("probe")).is_err());

        let rep = store.sync_now();
        let err = rep
            .error
            .as_ref()
            .expect("a read-only target cannot be synced");
        let message = match err {
            Error::Target(TargetError::Unavailable {
                transient: true,
                message,
                path,
                ..
            }) => {
                assert_eq!(path, &target);
                message.clone()
            }
            other => panic!("expected a transient Target error, got {other:?}"),
        };
        assert!(
            message.contains("read-only") && message.contains("not writable"),
            "the error must say why: {message}"
        );
        assert_eq!(rep.applied, 0, "{rep}");
        assert_eq!(rep.retries, 1, "transient: retried: {rep}");
        // Meanwhile the store works: the journal and the cache take new entries.
        store.apply(&host(6)).unwrap();
        store.apply(&host(7)).unwrap();
        let st = store.status().unwrap();
        let last = st.last_error.clone().expect("status shows the error");
        assert!(last.transient, "{last:?}");
        assert!(last.message.contains("read-only"), "{last:?}");
        assert!(st.failing_since_ms.is_some());
        assert_eq!(st.acked_lsn, 0, "nothing acknowledged");
        assert_eq!(st.pending_entries, 7);
        drop(guard);

        let rep = store.sync_now();
        assert!(rep.error.is_none(), "writable again: {rep}");
        assert_eq!(rep.applied, 7, "{rep}");
        let cache = store.read(|c| Ok(hosts_of(c))).unwrap();
        let st = store.status().unwrap();
        assert!(st.last_error.is_none());
        assert_eq!(st.acked_lsn, 7);
        let tc = open_target(&target);
        let on_target = hosts_of(&tc);
        assert_eq!(watermark_of(&tc, st.journal_id), 7);
        let lost = cache.iter().filter(|h| !on_target.contains(h)).count() as u64;
        assert_eq!(on_target, cache, "target = cache");
        assert_eq!(cache.len(), 7);
        Found::Error(
            "Target (transient: \"the target opened read-only: ... not writable\")".into(),
            lost,
        )
    });
}

// ---------------------------------------------------------------------------------------------
// 5. The target locked by another process for 30 s.

const ENV_TARGET: &str = "SYNCJOURNAL_FAULT_MATRIX_TARGET";
const LOCK_HOLD: Duration = Duration::from_secs(30);

/// Child: opens the target, takes `BEGIN EXCLUSIVE`, writes a row of its own, reports
/// `LOCKED`, and holds the lock until the parent says `RELEASE` (or closes stdin); then
/// commits and reports `RELEASED`. Does nothing unless started by the test below.
#[test]
#[ignore = "child process of target_locked_by_another_process_for_30_s"]
fn fault_matrix_target_lock_holder() {
    let Some(target) = std::env::var_os(ENV_TARGET) else {
        return;
    };
    let c = Connection::open(PathBuf::from(target)).expect("holder: open target");
    c.execute_batch(
        "BEGIN EXCLUSIVE; CREATE TABLE IF NOT EXISTS holder (note TEXT);
         INSERT INTO holder (note) VALUES ('written while holding the lock');",
    )
    .expect("holder: lock");
    println!("LOCKED {}", std::process::id());
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    c.execute_batch("COMMIT").expect("holder: commit");
    println!("RELEASED");
}

#[test]
fn target_locked_by_another_process_for_30_s() {
    Matrix::run("target locked by another process (30 s)", 120, || {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().join("share");
        std::fs::create_dir_all(&share).unwrap();
        let target = share.join("counters.db");
        create_target(&target, COUNTER_SCHEMA);
        let store: Store<Bump> = Store::open(
            dir.path().join("journal"),
            dir.path().join("cache.db"),
            StoreOptions::new()
                .journal(JournalOptions::new().lock_wait_ms(5_000))
                .cache_schema(COUNTER_SCHEMA)
                .target(&target, TargetOptions::new().busy_timeout_ms(250))
                .replay(replay_opts())
                .background_sync(false),
        )
        .unwrap();
        let mut events: Vec<Bump> = Vec::new();
        fn apply(store: &Store<Bump>, events: &mut Vec<Bump>) {
            let e = Bump::new(events.len() as i64 + 1);
            assert_eq!(store.apply(&e).unwrap(), events.len() as Lsn + 1);
            events.push(e);
        }
        for _ in 0..10 {
            apply(&store, &mut events);
        }
        // A first sync while the target is free: the replayer holds a live connection when the
        // lock is taken.
        let rep = store.sync_now();
        assert!(rep.error.is_none() && rep.applied == 10, "{rep}");
        let acked_before = store.status().unwrap().acked_lsn;
        assert_eq!(acked_before, 10);

        let mut cmd = child_test_command(
            &test_path(module_path!(), "fault_matrix_target_lock_holder"),
            ENV_TARGET,
            &target,
        );
        cmd.stdin(Stdio::piped()).stderr(Stdio::inherit());
        let mut holder = ChildLines::spawn(cmd);
        holder
            .wait_for("LOCKED", Duration::from_secs(30), &mut |_| {})
            .unwrap_or_else(|e| panic!("lock holder: {e}"));

        // The lock is held until we say RELEASE: every attempt meanwhile must fail, busy.
        let started = Instant::now();
        let mut attempts = 0;
        let mut busy_message = String::new();
        loop {
            apply(&store, &mut events);
            let rep = store.sync_now();
            let err = rep
                .error
                .as_ref()
                .unwrap_or_else(|| panic!("attempt {attempts}: synced through the lock: {rep}"));
            match err {
                Error::Target(TargetError::Unavailable {
                    transient: true,
                    message,
                    source: Some(sqlite),
                    ..
                }) if sqlite.is_busy() => {
                    assert!(
                        message.contains("database is locked")
                            && message.contains("another process holds the database lock"),
                        "{message}"
                    );
                    busy_message.clone_from(message);
                }
                other => panic!("attempt {attempts}: expected busy, got {other:?}"),
            }
            assert_eq!(rep.applied, 0, "{rep}");
            assert_eq!(rep.transactions, 0, "{rep}");
            let st = store.status().unwrap();
            let last = st.last_error.clone().expect("status shows the error");
            assert!(
                last.transient && last.message.contains("locked"),
                "{last:?}"
            );
            assert!(st.failing_since_ms.is_some());
            assert_eq!(
                st.acked_lsn, acked_before,
                "nothing acknowledged while locked"
            );
            assert_eq!(st.pending_entries, events.len() as u64 - acked_before);
            attempts += 1;
            if started.elapsed() >= LOCK_HOLD {
                break;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        holder
            .child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"RELEASE\n")
            .unwrap();
        holder
            .wait_for("RELEASED", Duration::from_secs(30), &mut |_| {})
            .unwrap_or_else(|e| panic!("lock holder: {e}"));
        let status = holder.child.wait().unwrap();
        assert!(status.success(), "lock holder: {status:?}");

        // The other process is gone: everything applies, exactly once.
        let rep = store.sync_now();
        assert!(rep.error.is_none(), "after the release: {rep}");
        assert_eq!(rep.applied, events.len() as u64 - acked_before);
        let st = store.status().unwrap();
        assert!(st.last_error.is_none() && st.failing_since_ms.is_none());
        assert_eq!(st.acked_lsn, events.len() as Lsn);
        let tc = open_target(&target);
        assert_eq!(integrity(&tc), "ok");
        assert_eq!(watermark_of(&tc, st.journal_id), events.len() as Lsn);
        assert_eq!(counters_of(&tc), fold(&events), "each entry exactly once");
        let mut seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        seqs.sort_unstable();
        let logged = logged_seqs(&tc);
        let lost = seqs.iter().filter(|s| !logged.contains(s)).count() as u64;
        assert_eq!(logged, seqs, "each entry logged exactly once");
        let holder_rows: i64 = tc
            .query_row("SELECT count(*) FROM holder", [], |r| r.get(0))
            .unwrap();
        assert_eq!(holder_rows, 1, "the other process's own write survived");
        Found::Error(
            format!(
                "Target (transient, busy: \"{}\") at {attempts} attempts over {:?}",
                busy_message.split(" (").next().unwrap_or_default(),
                LOCK_HOLD
            ),
            lost,
        )
    });
}

// ---------------------------------------------------------------------------------------------
// 6. Schema mismatch on the target.

#[test]
fn schema_mismatch_on_the_target() {
    Matrix::run("schema mismatch on the target", 60, || {
        let lost = TargetKind::all().into_iter().map(schema_mismatch_on).sum();
        Found::Error(
            "EntryRejected (no table \"hosts\"; type mismatch hosts.name), SchemaMismatch \
             (syncjournal_progress: missing lsn, updated_at)"
                .into(),
            lost,
        )
    });
}

/// The schema mismatch cases on a target of `kind`; returns the entries lost.
fn schema_mismatch_on(kind: TargetKind) -> u64 {
    let mut lost = 0;
    // How each kind names the declared type of an INTEGER column.
    let integer = match kind {
        TargetKind::Sqlite => "INTEGER",
        #[cfg(feature = "postgres")]
        TargetKind::Postgres => "int8",
    };
    // (target DDL, what must be named, the fix)
    let cases: [(&str, &[&str], &str); 2] = [
        (
            "CREATE TABLE other (x INTEGER);",
            &["no table \"hosts\""],
            HOSTS_SCHEMA,
        ),
        (
            "CREATE TABLE hosts (id INTEGER PRIMARY KEY, name INTEGER);",
            &["type mismatch", "hosts.name", integer, "text"],
            "DROP TABLE hosts; CREATE TABLE hosts (id INTEGER PRIMARY KEY, name TEXT);",
        ),
    ];
    for (ddl, named, fix) in cases {
        let dir = tempfile::tempdir().unwrap();
        let target = TestTarget::create(kind, dir.path(), "target.db", ddl);
        let store = hosts_store(dir.path(), &target);
        store.apply(&host(1)).unwrap();
        store.apply(&host(2)).unwrap();
        let rep = store.sync_now();
        match &rep.error {
            Some(
                e @ Error::Target(TargetError::EntryRejected {
                    lsn: 1,
                    entry,
                    reason,
                }),
            ) => {
                assert!(entry.contains("hosts"), "{entry}");
                for n in named {
                    assert!(
                        reason.contains(n),
                        "{ddl}: the reason must name {n}: {reason}"
                    );
                }
                assert!(!e.is_transient(), "a rejected entry is permanent");
            }
            other => panic!("{ddl}: expected EntryRejected for LSN 1, got {other:?}"),
        }
        assert_eq!(rep.applied, 0);
        assert_eq!(rep.retries, 0, "a permanent rejection is not retried");
        let st = store.status().unwrap();
        let last = st.last_error.clone().unwrap();
        assert_eq!(last.lsn, Some(1), "{last:?}");
        assert!(!last.transient);
        assert_eq!(st.acked_lsn, 0);
        // Fixed: everything applies.
        target.execute(&kind.dialect(fix));
        let rep = store.sync_now();
        assert!(rep.error.is_none(), "{ddl}: after the fix: {rep}");
        let cache = store.read(|c| Ok(hosts_of(c))).unwrap();
        let on_target = hosts_on(&target);
        lost += cache.iter().filter(|h| !on_target.contains(h)).count() as u64;
        assert_eq!(on_target, cache);
        assert_eq!(store.status().unwrap().acked_lsn, 2);
    }

    // syncjournal's own progress table with the wrong columns.
    let dir = tempfile::tempdir().unwrap();
    let target = TestTarget::create(
        kind,
        dir.path(),
        "target.db",
        &format!(
            "{HOSTS_SCHEMA} CREATE TABLE syncjournal_progress \
             (journal_id TEXT PRIMARY KEY, position INTEGER NOT NULL);"
        ),
    );
    let store = hosts_store(dir.path(), &target);
    store.apply(&host(1)).unwrap();
    let rep = store.sync_now();
    match &rep.error {
        Some(
            e @ Error::Target(TargetError::SchemaMismatch {
                table,
                detail,
                path,
                ..
            }),
        ) => {
            assert_eq!(table, "syncjournal_progress");
            assert_eq!(path, Path::new(&target.spec().name()));
            assert!(
                detail.contains("lsn") && detail.contains("updated_at"),
                "{detail}"
            );
            assert!(e.to_string().contains("syncjournal_progress"), "{e}");
            assert!(!e.is_transient());
        }
        other => panic!("expected SchemaMismatch, got {other:?}"),
    }
    assert_eq!(rep.retries, 0);
    assert_eq!(store.status().unwrap().acked_lsn, 0);
    target.execute("DROP TABLE syncjournal_progress;");
    let rep = store.sync_now();
    assert!(rep.error.is_none(), "{rep}");
    let on_target = hosts_on(&target);
    lost += u64::from(on_target != vec![(1, "web-1".to_owned())]);
    assert_eq!(on_target, vec![(1, "web-1".to_owned())]);
    lost
}

// ---------------------------------------------------------------------------------------------
// 7. A foreign journal directory.

fn journal_with(dir: &Path, records: u64) -> (uuid::Uuid, Vec<Vec<u8>>) {
    let j = Journal::open(
        dir,
        JournalOptions::new()
            .segment_bytes_max(SEG)
            .lock_wait_ms(5_000),
    )
    .unwrap();
    let mut written = Vec::new();
    for i in 0..records {
        let p = payload_for_lsn(i + 1000 * records, 2000);
        j.append(&p).unwrap();
        written.push(p);
    }
    let id = j.id();
    j.close().unwrap();
    (id, written)
}

fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn foreign_journal_directory() {
    Matrix::run("foreign journal directory", 60, || {
        let tmp = tempfile::tempdir().unwrap();
        let mut lost = 0;

        // Someone else's files: refused, and left exactly as they were.
        let foreign = tmp.path().join("photos");
        std::fs::create_dir_all(&foreign).unwrap();
        std::fs::write(foreign.join("holiday.jpg"), b"not a journal").unwrap();
        let before = listing(&foreign);
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Salvage] {
            match Journal::open(&foreign, JournalOptions::new().recovery_mode(mode)) {
                Err(e @ Error::Journal(JournalError::ForeignDirectory { .. })) => {
                    let text = e.to_string();
                    let Error::Journal(JournalError::ForeignDirectory { dir, example }) = e else {
                        unreachable!()
                    };
                    assert_eq!(dir, foreign);
                    assert_eq!(example, foreign.join("holiday.jpg"));
                    assert!(text.contains("is not a syncjournal directory"), "{text}");
                }
                other => panic!("{mode:?}: expected ForeignDirectory, got {other:?}"),
            }
        }
        let after = listing(&foreign);
        lost += u64::from(after != before);
        assert_eq!(after, before, "a refused open must not touch foreign files");

        // A file with a segment's name that is not a segment.
        let a = tmp.path().join("a");
        let (a_id, a_written) = journal_with(&a, 50);
        let segs = listing(&a)
            .into_iter()
            .filter(|(n, _)| n.ends_with(".sjl"))
            .count() as u64;
        assert!(segs >= 2, "premise: several segments");
        let intruder = a.join(format!("{:016}.sjl", segs + 1));
        std::fs::write(&intruder, b"#!/bin/sh\necho definitely not a segment\n").unwrap();
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Salvage] {
            match Journal::open(&a, JournalOptions::new().recovery_mode(mode)) {
                Err(Error::Journal(JournalError::ForeignFile { path, found })) => {
                    assert_eq!(path, intruder);
                    assert_eq!(found, b"#!/bin/s".to_vec());
                }
                other => panic!("{mode:?}: expected ForeignFile, got {other:?}"),
            }
        }
        std::fs::remove_file(&intruder).unwrap();
        lost += lost_records(&a, &a_written);

        // A segment of another journal mixed in.
        let b = tmp.path().join("b");
        let (b_id, _) = journal_with(&b, 100);
        assert_ne!(a_id, b_id);
        let stray = format!("{:016}.sjl", segs + 1);
        assert!(b.join(&stray).exists(), "premise: b has segment {stray}");
        std::fs::copy(b.join(&stray), a.join(&stray)).unwrap();
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Salvage] {
            match Journal::open(&a, JournalOptions::new().recovery_mode(mode)) {
                Err(e @ Error::Journal(JournalError::ForeignSegment { .. })) => {
                    let text = e.to_string();
                    let Error::Journal(JournalError::ForeignSegment {
                        path,
                        expected,
                        found,
                    }) = e
                    else {
                        unreachable!()
                    };
                    assert_eq!(path, a.join(&stray));
                    assert_eq!((expected, found), (a_id, b_id));
                    assert!(
                        text.contains("segments from two journals are mixed"),
                        "{text}"
                    );
                }
                other => panic!("{mode:?}: expected ForeignSegment, got {other:?}"),
            }
        }
        std::fs::remove_file(a.join(&stray)).unwrap();
        lost += lost_records(&a, &a_written);
        Found::Error("ForeignDirectory, ForeignFile, ForeignSegment".into(), lost)
    });
}

// ---------------------------------------------------------------------------------------------
// 8. A second process opens the same journal.

const ENV_JOURNAL: &str = "SYNCJOURNAL_FAULT_MATRIX_JOURNAL";

/// Child: opens the journal, appends five records, reports `HOLDING`, and keeps the journal
/// open until stdin closes. Does nothing unless started by the test below.
#[test]
#[ignore = "child process of a_second_process_opening_the_journal_is_locked_out"]
fn fault_matrix_journal_holder() {
    let Some(dir) = std::env::var_os(ENV_JOURNAL) else {
        return;
    };
    let j = Journal::open(
        PathBuf::from(dir),
        JournalOptions::new().lock_wait_ms(5_000),
    )
    .expect("holder: open");
    for i in 0..5u64 {
        j.append(&payload_for_lsn(500 + i, 100))
            .expect("holder: append");
    }
    println!("HOLDING {}", std::process::id());
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
    j.close().expect("holder: close");
    println!("CLOSED");
}

#[test]
fn a_second_process_opening_the_journal_is_locked_out() {
    Matrix::run("second process opens the journal", 60, || {
        let tmp = tempfile::tempdir().unwrap();
        let jdir = tmp.path().join("j");
        let (_, mut written) = journal_with(&jdir, 10);
        let mut cmd = child_test_command(
            &test_path(module_path!(), "fault_matrix_journal_holder"),
            ENV_JOURNAL,
            &jdir,
        );
        cmd.stdin(Stdio::piped()).stderr(Stdio::inherit());
        let mut holder = ChildLines::spawn(cmd);
        let pid: u32 = holder
            .wait_for("HOLDING", Duration::from_secs(30), &mut |_| {})
            .unwrap_or_else(|e| panic!("holder: {e}"))
            .parse()
            .unwrap();
        assert_eq!(pid, holder.child.id());
        for what in ["Journal::open", "Store::open"] {
            let r = if what == "Journal::open" {
                Journal::open(&jdir, JournalOptions::new()).map(|_| ())
            } else {
                // (Without waiting for the lock: a store waits 10 s by default.)
                Store::<ChangeSet>::open(
                    &jdir,
                    tmp.path().join("cache.db"),
                    StoreOptions::new().journal(JournalOptions::new()),
                )
                .map(|_| ())
            };
            match r {
                Err(e @ Error::Journal(JournalError::Locked { .. })) => {
                    let text = e.to_string();
                    let Error::Journal(JournalError::Locked { dir, holder_pid }) = e else {
                        unreachable!()
                    };
                    assert_eq!(dir, jdir, "{what}");
                    assert_eq!(holder_pid, Some(pid), "{what}: the holder's pid");
                    assert!(
                        text.contains(&format!("locked by pid {pid}")),
                        "{what}: {text}"
                    );
                }
                other => panic!("{what}: expected Locked, got {other:?}"),
            }
        }
        drop(holder.child.stdin.take());
        holder
            .wait_for("CLOSED", Duration::from_secs(30), &mut |_| {})
            .unwrap_or_else(|e| panic!("holder: {e}"));
        assert!(holder.child.wait().unwrap().success());
        written.extend((0..5u64).map(|i| payload_for_lsn(500 + i, 100)));
        let lost = lost_records(&jdir, &written);
        Found::Error(format!("Locked (holder pid {pid})"), lost)
    });
}

// ---------------------------------------------------------------------------------------------
// 9. A segment truncated by someone else while the journal was closed.

#[test]
fn a_segment_truncated_while_closed() {
    Matrix::run("segment truncated while closed", 60, || {
        let tmp = tempfile::tempdir().unwrap();
        let jdir = tmp.path().join("j");
        // 2000-byte payloads: 2032-byte frames, 30 per segment.
        let (_, written) = journal_with(&jdir, 150);
        let seg1 = jdir.join("0000000000000001.sjl");
        let seg2 = jdir.join("0000000000000002.sjl");
        const CUT_AT: u64 = 40_000;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg1)
            .unwrap()
            .set_len(CUT_AT)
            .unwrap();
        let truncated = std::fs::read(&seg1).unwrap();
        let frame = 32 + 2000;
        let frame = (frame + 7) & !7;
        let survivors = ((CUT_AT as usize - 4096) / frame) as Lsn;
        let seg2_first =
            u64::from_le_bytes(std::fs::read(&seg2).unwrap()[40..48].try_into().unwrap());
        assert!(survivors + 1 < seg2_first, "premise: the cut loses records");

        for mode in [
            RecoveryMode::TolerateTornTail,
            RecoveryMode::AbsoluteConsistency,
        ] {
            match Journal::open(&jdir, JournalOptions::new().recovery_mode(mode)) {
                Err(Error::Journal(JournalError::Corrupt(c))) => {
                    assert_eq!(c.segment, seg1, "{mode:?}: names the file");
                    assert_eq!(
                        c.kind,
                        DamageKind::SegmentLength {
                            expected: SEG,
                            actual: CUT_AT
                        },
                        "{mode:?}"
                    );
                    let text = Error::Journal(JournalError::Corrupt(c)).to_string();
                    assert!(
                        text.contains("0000000000000001.sjl")
                            && text.contains("truncated or extended by someone else"),
                        "{mode:?}: {text}"
                    );
                }
                other => panic!("{mode:?}: expected Corrupt(SegmentLength), got {other:?}"),
            }
            assert_eq!(
                std::fs::read(&seg1).unwrap(),
                truncated,
                "{mode:?}: a refused open must not change the segment"
            );
        }

        // Salvage re-extends it and marks the lost LSNs with a gap; everything else is there.
        let j = Journal::open(
            &jdir,
            JournalOptions::new().recovery_mode(RecoveryMode::Salvage),
        )
        .expect("salvage");
        let report = j.recovery_report().clone();
        assert_eq!(
            report.skipped,
            vec![survivors + 1..seg2_first],
            "{report:?}"
        );
        assert_eq!(std::fs::metadata(&seg1).unwrap().len(), SEG, "re-extended");
        let records = read_retained(&j);
        let mut lost = 0;
        let mut gaps = 0;
        let mut it = records.iter();
        let mut lsn = 1;
        while lsn <= written.len() as Lsn {
            let r = it
                .next()
                .unwrap_or_else(|| panic!("salvage: LSN {lsn} missing"));
            if let Some(g) = r.gap() {
                assert_eq!(g, survivors + 1..seg2_first, "the gap names the lost LSNs");
                gaps += 1;
                lsn = g.end;
                continue;
            }
            assert_eq!(r.lsn, lsn);
            if r.payload != written[lsn as usize - 1] {
                lost += 1;
            }
            lsn += 1;
        }
        assert!(it.next().is_none());
        assert_eq!(gaps, 1);
        assert_eq!(lost, 0, "records outside the truncated bytes lost");
        Found::Error(
            format!(
                "Corrupt (SegmentLength {SEG} vs {CUT_AT}, 0000000000000001.sjl); salvage: gap \
                 for LSNs {}..{seg2_first}",
                survivors + 1
            ),
            lost,
        )
    });
}
