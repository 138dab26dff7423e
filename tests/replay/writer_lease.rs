//! The writer lease on an SQLite target (`sync-protocol.md`, "Writer lease"): machines whose
//! share does not forward byte-range locks — stood for here by SQLite's `unix-none` VFS,
//! which takes no locks at all — never touch the target at the same time. Without the lease
//! the same run damages the target or loses writes; with it, each journal applies exactly
//! once and the file stays intact. A stopped holder's lease is taken over; a waiter is told
//! who holds the lease.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use syncjournal::error::TargetError;
use syncjournal::{Error, Journal, ReplayOptions, Replayer, TargetOptions};

use crate::support::events::{Bump, COUNTER_SCHEMA};
use crate::support::process::with_timeout;
use crate::support::targets::{TargetKind, TestTarget};
use crate::support::writers::{self, Outcome, two_writers};

/// Entries per journal.
const ENTRIES: i64 = 1500;

fn journal_of(dir: &Path, base: i64) -> Arc<Journal> {
    writers::journal_of(dir, base, ENTRIES)
}

/// Two journals (two machines) replay into one target at once, without locks, with `topts`.
fn two_machines(topts: TargetOptions) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let target = TestTarget::create(TargetKind::Sqlite, dir.path(), "target.db", COUNTER_SCHEMA);
    let path = target.path().to_path_buf();
    two_writers(
        dir.path(),
        [path.clone(), path],
        &target,
        topts,
        ENTRIES,
        20,
    )
}

fn no_locks() -> TargetOptions {
    TargetOptions::new()
        .sqlite_vfs("unix-none")
        .busy_timeout_ms(100)
}

#[test]
fn without_the_lease_two_machines_without_locks_damage_the_target_or_lose_writes() {
    with_timeout(300, || {
        // The failure is a race: a few rounds make it show.
        let mut seen = Vec::new();
        for round in 0..5 {
            let o = two_machines(no_locks().lease_ms(0));
            eprintln!("without the lease, round {round}: {}", o.describe());
            let intact = o.intact();
            seen.push(o);
            if !intact {
                return;
            }
        }
        panic!(
            "two writers without locks and without the lease left the target intact in {} rounds: this test shows nothing",
            seen.len()
        );
    });
}

#[test]
fn with_the_lease_two_machines_without_locks_apply_each_journal_once_and_keep_the_target_intact() {
    with_timeout(300, || {
        for round in 0..3 {
            let o = two_machines(no_locks().lease_ms(3_000));
            assert_eq!(o.integrity, "ok", "round {round}");
            assert!(
                o.counters_right,
                "round {round}: every increment exactly once"
            );
            assert_eq!((o.logged, o.duplicated), (2 * ENTRIES, 0), "round {round}");
            assert!(
                o.errors.iter().all(|e| e.contains("writer lease is held")),
                "round {round}: {:?}",
                o.errors
            );
        }
    });
}

#[test]
fn a_waiter_is_told_who_holds_the_lease_and_takes_over_from_a_holder_that_stopped() {
    with_timeout(120, || {
        let dir = tempfile::tempdir().unwrap();
        let target =
            TestTarget::create(TargetKind::Sqlite, dir.path(), "target.db", COUNTER_SCHEMA);
        // A holder that stops renewing without releasing (killed, cut off, paused): its
        // record, written the way a holder writes it, stays behind unchanged.
        let lease = syncjournal::target::lease_path(target.path());
        let mut rec = "syncjournal-lease 1\nholder 00000000-0000-4000-8000-000000000001\nhost elsewhere\npid 4242\njournal -\ncounter 9\nlease_ms 3000\nsince_unix_ms 1\nrenewed_unix_ms 1\n"
        .as_bytes()
        .to_vec();
        rec.resize(511, b' ');
        rec.push(b'\n');
        std::fs::write(&lease, &rec).unwrap();
        let holder = syncjournal::target::lease_holder(target.path())
            .unwrap()
            .unwrap();
        assert_eq!((holder.host.as_str(), holder.pid), ("elsewhere", 4242));

        let j = journal_of(&dir.path().join("j"), 0);
        // A short wait: the sync fails, transient, naming the holder.
        let mut r: Replayer<Bump> = Replayer::new(
            Arc::clone(&j),
            target.spec(),
            TargetOptions::new().lease_ms(3_000).lease_wait_ms(500),
            ReplayOptions::new().retry_attempts_max(0),
        );
        let rep = r.sync_now();
        match &rep.error {
            Some(
                e @ Error::Target(TargetError::LeaseHeld {
                    holder: Some(h), ..
                }),
            ) => {
                assert_eq!(h.pid, 4242);
                assert!(e.is_transient());
                assert!(e.to_string().contains("host elsewhere pid 4242"), "{e}");
            }
            other => panic!("expected LeaseHeld, got {other:?}"),
        }
        assert_eq!(rep.applied, 0);
        assert_eq!(target.watermark(j.id()), 0, "nothing touched");
        let waiting = r.state().lease_waiting_since_ms;
        assert!(waiting.is_some(), "the status says since when it waits");
        assert_eq!(r.sync_now().error.map(|e| e.is_transient()), Some(true));
        assert_eq!(
            r.state().lease_waiting_since_ms,
            waiting,
            "since the first failure"
        );

        // A waiter with time takes over once the record has not changed for longer than its
        // lease, then waits out the fence, then replays everything once and releases.
        let t = Instant::now();
        let mut r: Replayer<Bump> = Replayer::new(
            Arc::clone(&j),
            target.spec(),
            TargetOptions::new().lease_ms(3_000).lease_wait_ms(30_000),
            ReplayOptions::new().retry_attempts_max(0),
        );
        let rep = r.sync_now();
        assert!(rep.error.is_none(), "{rep}");
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(2 * 4_150),
            "taken over after {took:?}: before the expiry and the fence"
        );
        assert_eq!(rep.applied, ENTRIES as u64);
        assert_eq!(
            r.state().lease_waiting_since_ms,
            None,
            "cleared by the success"
        );
        assert_eq!(target.integrity(), "ok");
        assert!(!lease.exists(), "released after the sync");
    });
}

/// Stops a batch before its `COMMIT` for a while, once, saying so.
struct PauseBeforeCommit {
    tx: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

impl syncjournal::replay::TargetFaults for PauseBeforeCommit {
    fn before_statement(&self, _index: usize, label: &str) -> rusqlite::Result<()> {
        if label == "commit"
            && let Some(tx) = self.tx.lock().unwrap().take()
        {
            let _ = tx.send(());
            std::thread::sleep(Duration::from_millis(1500));
        }
        Ok(())
    }
}

#[test]
fn reads_outside_the_replayer_wait_for_the_writer_lease_and_never_see_a_batch_in_flight() {
    with_timeout(120, || {
        let dir = tempfile::tempdir().unwrap();
        let target =
            TestTarget::create(TargetKind::Sqlite, dir.path(), "target.db", COUNTER_SCHEMA);
        let path = target.path().to_path_buf();
        let j = journal_of(&dir.path().join("j"), 0);
        let id = j.id();
        let (tx, rx) = std::sync::mpsc::channel();
        let faults = Arc::new(PauseBeforeCommit {
            tx: std::sync::Mutex::new(Some(tx)),
        });
        let writer_path = path.clone();
        let writer = std::thread::spawn(move || {
            let mut r: Replayer<Bump> = Replayer::new(
                j,
                writer_path,
                TargetOptions::new().faults(faults),
                ReplayOptions::new().batch_entries_max(ENTRIES as usize),
            );
            r.sync_now()
        });
        // The writer holds the lease, its batch of every entry applied and not committed.
        rx.recv_timeout(Duration::from_secs(60)).unwrap();
        // SQLite's own locks would let this read the committed state (nothing) at once; the
        // lease makes it wait for the commit and read what the batch committed.
        let wm = syncjournal::replay::read_target_watermark(path.clone(), id).unwrap();
        assert_eq!(wm, ENTRIES as u64, "read after the commit, under the lease");
        let check = syncjournal::replay::check_target(&path).unwrap();
        assert_eq!(check.journals.len(), 1);
        let rep = writer.join().unwrap();
        assert!(rep.error.is_none(), "{rep}");
        assert_eq!(rep.applied, ENTRIES as u64);
    });
}

#[test]
fn check_target_reports_a_planted_lease_file_and_still_checks_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let target = TestTarget::create(TargetKind::Sqlite, dir.path(), "target.db", COUNTER_SCHEMA);
    let path = target.path().to_path_buf();
    std::os::unix::fs::symlink("/etc/passwd", syncjournal::target::lease_path(&path)).unwrap();
    let check = syncjournal::replay::check_target(&path).unwrap();
    assert!(
        check.integrity.as_ref().is_some_and(|i| i.ok),
        "the target was checked: {check:?}"
    );
    assert!(
        check
            .problems
            .iter()
            .any(|p| p.contains("symbolic link") && p.contains("without the writer lease")),
        "{:?}",
        check.problems
    );
    // A read that is not a diagnosis refuses it.
    let e =
        syncjournal::replay::read_target_watermark(path.clone(), uuid::Uuid::new_v4()).unwrap_err();
    assert!(
        matches!(e, Error::Target(TargetError::LeaseUnusable { .. })),
        "{e}"
    );
}
