//! A failed sync poisons the journal: the call that hit it fails, and every later call (and
//! every concurrent waiter) fails with `JournalError::Poisoned` until the journal is reopened. Records
//! acknowledged durable before the failure survive the reopen. A failed acknowledgement write
//! poisons too.

use std::io;
use std::path::Path;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::Duration;
use syncjournal::error::JournalError;

use crate::support::journal::{assert_contiguous, parse_payload, payload, read_all};
use crate::support::process::with_timeout;
use syncjournal::fault::{FaultInjector, FaultPlan, IoOp};
use syncjournal::{Error, Journal, JournalOptions, KIND_DATA, Lsn, PersistMode, Reader};

const EIO: i32 = 5;

fn opts(mode: PersistMode, segment_bytes: u64, plan: &Arc<FaultPlan>) -> JournalOptions {
    JournalOptions::new()
        .persist_mode(mode)
        .segment_bytes_max(segment_bytes)
        .fault_injector(plan.clone())
}

/// The call that hit the failed sync: the I/O error itself (EIO), or `Poisoned`.
fn assert_sync_failure(e: &Error, what: &str) {
    match e {
        Error::Journal(JournalError::Io { source, .. }) => assert_eq!(
            source.raw_os_error(),
            Some(EIO),
            "{what}: unexpected I/O error {e}"
        ),
        Error::Journal(JournalError::Poisoned { .. }) => {}
        other => panic!("{what}: expected the EIO of the failed sync, got {other:?}"),
    }
}

fn assert_poisoned<T: std::fmt::Debug>(r: syncjournal::Result<T>, what: &str) {
    match r {
        Err(Error::Journal(JournalError::Poisoned { reason })) => {
            assert!(!reason.is_empty(), "{what}: Poisoned without a reason")
        }
        other => panic!("{what}: expected Error::Journal(JournalError::Poisoned), got {other:?}"),
    }
}

/// Every public entry point of a poisoned journal fails with `Poisoned`.
fn assert_everything_poisoned(journal: &Journal, old_reader: &mut Reader, cause: &str) {
    for round in 0..2 {
        let w = |s: &str| format!("{s} (round {round}, after {cause})");
        assert_poisoned(journal.append(b"x"), &w("append"));
        assert_poisoned(journal.append_kind(7, b"x"), &w("append_kind"));
        assert_poisoned(journal.append_batch([b"x", b"y"]), &w("append_batch"));
        assert_poisoned(journal.write(KIND_DATA, b"x"), &w("write"));
        // Durability first: an LSN made durable before the poisoning is reported durable
        // (its writer must hear so); anything beyond it fails.
        let durable = journal.state().durable_lsn;
        if durable > 0 {
            journal
                .wait_durable(durable)
                .unwrap_or_else(|e| panic!("{}: {e}", w("wait_durable of a durable LSN")));
        }
        assert_poisoned(
            journal.wait_durable(durable + 1),
            &w("wait_durable beyond the durable LSN"),
        );
        assert_poisoned(journal.sync(), &w("sync"));
        assert_poisoned(journal.ack(1), &w("ack"));
        assert_poisoned(journal.reader(1).map(|_| ()), &w("reader creation"));
        assert_poisoned(journal.read(1), &w("read"));
        assert_poisoned(
            old_reader.next_record(),
            &w("next_record of an existing reader"),
        );
        assert_poisoned(
            old_reader.next_ref().map(|r| r.map(|r| r.lsn)),
            &w("next_ref of an existing reader"),
        );
        assert_poisoned(
            old_reader.next_timeout(Duration::from_millis(10)),
            &w("next_timeout of an existing reader"),
        );
        // `seek` only moves the position (it may or may not report the poison); what it
        // positions must not be readable.
        let _ = old_reader.seek(1);
        assert_poisoned(old_reader.next_record(), &w("next_record after seek"));
        let state = journal.state();
        assert!(
            state.poisoned.is_some(),
            "{}: state().poisoned is None",
            w("state")
        );
    }
}

/// Reopens without faults and checks that LSNs are contiguous from 1 and that every
/// `(lsn, payload)` in `durable` is there.
fn reopen_and_check(jdir: &std::path::Path, durable: &[(Lsn, Vec<u8>)]) -> Journal {
    let journal = Journal::open(jdir, JournalOptions::new()).expect("reopen after poisoning");
    let state = journal.state();
    assert_eq!(state.poisoned, None, "a reopened journal is not poisoned");
    let records = read_all(&journal);
    assert_contiguous(&records, 1);
    for r in &records {
        parse_payload(r.lsn, &r.payload);
    }
    for (lsn, p) in durable {
        let r = records
            .get(*lsn as usize - 1)
            .unwrap_or_else(|| panic!("LSN {lsn}, durable before the fault, is gone"));
        assert!(&r.payload == p, "LSN {lsn}: payload differs after reopen");
    }
    let next = state.next_lsn;
    assert_eq!(
        journal
            .append(&payload(99, 0, 0, 20))
            .expect("append after reopen"),
        next
    );
    journal
}

/// A journal in a new directory: the directory (removed on drop), the journal's directory,
/// its fault plan, the journal, and `(lsn, payload)` of every record it was given.
type Faulty = (
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<FaultPlan>,
    Journal,
    Vec<(Lsn, Vec<u8>)>,
);

/// A journal in a new directory `j`, opened in `mode` with a fault plan of its own, holding
/// `n` records `payload(thread, seq, tag, len)` (`seq` from 0).
fn faulty_journal(
    mode: PersistMode,
    segment_bytes: u64,
    n: u32,
    (thread, tag, len): (u32, u64, usize),
) -> Faulty {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("j");
    let plan = Arc::new(FaultPlan::new());
    let journal = Journal::open(&jdir, opts(mode, segment_bytes, &plan)).unwrap();
    let mut durable = Vec::new();
    for seq in 0..n {
        let p = payload(thread, seq, tag, len);
        durable.push((journal.append(&p).unwrap(), p));
    }
    (dir, jdir, plan, journal, durable)
}

#[test]
fn failed_sync_poisons_every_later_call() {
    with_timeout(60, || {
        let (_dir, jdir, plan, journal, mut durable) =
            faulty_journal(PersistMode::Sync, 1 << 20, 10, (0, 1, 100));
        let mut old_reader = journal.reader(1).unwrap();
        assert_eq!(old_reader.next_record().unwrap().unwrap().lsn, 1);

        // The 5th sync from now fails, once: later syncs would succeed, so whatever fails after
        // it fails because the journal is poisoned, not because the fault persists.
        plan.fail(IoOp::SyncData, 4, Some(1), EIO);
        let mut seq = 10;
        let err = loop {
            let p = payload(0, seq, 1, 100);
            seq += 1;
            match journal.append(&p) {
                Ok(lsn) => durable.push((lsn, p)),
                Err(e) => break e,
            }
            assert!(seq < 100, "the injected sync failure never surfaced");
        };
        assert_eq!(
            durable.len(),
            14,
            "the 5th sync after arming the plan failed"
        );
        assert_sync_failure(&err, "the append whose sync failed");
        let reason = journal
            .state()
            .poisoned
            .expect("poisoned after a failed sync");
        assert!(reason.contains("os error 5"), "poison reason: {reason}");
        assert_eq!(
            journal.state().durable_lsn,
            14,
            "durable LSN must not move past the failed sync"
        );

        assert_everything_poisoned(&journal, &mut old_reader, "a failed data sync");
        drop(old_reader);
        drop(journal);
        reopen_and_check(&jdir, &durable);
    });
}

#[test]
fn concurrent_appenders_and_followers_all_fail_none_hangs() {
    with_timeout(60, || {
        const THREADS: u32 = 6;
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        let plan = Arc::new(FaultPlan::new());
        let journal =
            Arc::new(Journal::open(&jdir, opts(PersistMode::Sync, 1 << 20, &plan)).unwrap());
        plan.fail(IoOp::SyncData, 40, Some(1), EIO);

        // A follower waiting for new records must be woken by the poisoning, not time out.
        let follower = {
            let journal = Arc::clone(&journal);
            std::thread::spawn(move || {
                let mut reader = journal.reader(1).unwrap();
                let mut seen = 0u64;
                loop {
                    match reader.next_timeout(Duration::from_secs(30)) {
                        Ok(Some(r)) => {
                            seen += 1;
                            assert_eq!(r.lsn, seen, "follower order");
                        }
                        Ok(None) => panic!("follower timed out instead of seeing the poison"),
                        Err(e) => return (seen, e),
                    }
                }
            })
        };

        let start = Arc::new(Barrier::new(THREADS as usize));
        let appenders: Vec<_> = (0..THREADS)
            .map(|t| {
                let journal = Arc::clone(&journal);
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    let mut ok = Vec::new();
                    for seq in 0.. {
                        let p = payload(t, seq, 2, 64 + (seq as usize % 200));
                        match journal.append(&p) {
                            Ok(lsn) => ok.push((lsn, p)),
                            Err(e) => return (ok, e),
                        }
                    }
                    unreachable!()
                })
            })
            .collect();

        let mut durable = Vec::new();
        let mut io_errors = 0;
        for h in appenders {
            let (ok, err) = h.join().expect("appender panicked");
            match &err {
                Error::Journal(JournalError::Io { .. }) => {
                    io_errors += 1;
                    assert_sync_failure(&err, "appender");
                }
                Error::Journal(JournalError::Poisoned { .. }) => {}
                other => panic!("appender: expected Poisoned or the EIO, got {other:?}"),
            }
            durable.extend(ok);
        }
        assert!(
            io_errors <= 1,
            "only the sync leader sees the raw I/O error; others get Poisoned ({io_errors})"
        );
        let (seen, err) = follower.join().expect("follower panicked");
        assert!(
            matches!(err, Error::Journal(JournalError::Poisoned { .. })),
            "follower: expected Poisoned, got {err:?}"
        );

        // An append that returned Ok was durable: no later than the last good sync.
        let durable_lsn = journal.state().durable_lsn;
        let max_ok = durable.iter().map(|(l, _)| *l).max().unwrap_or(0);
        assert!(
            max_ok <= durable_lsn,
            "append returned Ok for LSN {max_ok} but only {durable_lsn} was durable"
        );
        assert!(
            seen <= durable_lsn,
            "follower saw a record that was not durable"
        );
        assert!(!durable.is_empty(), "no append succeeded before the fault");

        assert_poisoned(
            journal.reader(1).map(|_| ()),
            "reader creation after the concurrent poisoning",
        );
        assert_poisoned(
            journal.append(b"late"),
            "append after the concurrent poisoning",
        );
        drop(journal);
        durable.sort_by_key(|(l, _)| *l);
        reopen_and_check(&jdir, &durable);
    });
}

#[test]
fn failed_sync_at_rotation_poisons() {
    with_timeout(60, || {
        let (_dir, jdir, plan, journal, durable) =
            faulty_journal(PersistMode::Buffered, 64 << 10, 10, (1, 3, 500));
        journal.sync().unwrap();
        let mut old_reader = journal.reader(1).unwrap();
        // Buffered: the next sync is the one of the rotation.
        plan.fail(IoOp::SyncData, 0, Some(1), EIO);
        let mut seq = 10;
        let err = loop {
            match journal.append(&payload(1, seq, 3, 500)) {
                Ok(_) => seq += 1,
                Err(e) => break e,
            }
            assert!(seq < 1000, "no rotation happened");
        };
        assert_sync_failure(&err, "the append whose rotation sync failed");
        assert_eq!(journal.state().segments, 1, "no segment was added");
        assert_everything_poisoned(&journal, &mut old_reader, "a failed rotation sync");
        drop(old_reader);
        drop(journal);
        reopen_and_check(&jdir, &durable);
    });
}

#[test]
fn failed_background_sync_poisons_batched_mode() {
    with_timeout(60, || {
        let mode = PersistMode::Batched {
            interval: Duration::from_millis(2),
        };
        let (_dir, jdir, plan, journal, durable) = faulty_journal(mode, 1 << 20, 5, (2, 4, 100));
        journal.sync().unwrap();
        let mut old_reader = journal.reader(1).unwrap();
        plan.fail(IoOp::SyncData, 0, Some(1), EIO);
        // Appends return before the background sync; keep appending until the flusher's
        // failure surfaces (the hang guard bounds this).
        let mut last_ok = 0;
        let err = loop {
            match journal.append(&payload(2, 1000 + last_ok as u32, 4, 100)) {
                Ok(lsn) => last_ok = lsn,
                Err(e) => break e,
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert!(
            matches!(err, Error::Journal(JournalError::Poisoned { .. })),
            "after a failed background sync: expected Poisoned, got {err:?}"
        );
        // Waiting for a record that the failed sync should have covered fails, never hangs.
        assert_poisoned(
            journal.wait_durable(last_ok),
            "wait_durable of an unsynced LSN",
        );
        assert_everything_poisoned(&journal, &mut old_reader, "a failed background sync");
        drop(old_reader);
        drop(journal);
        reopen_and_check(&jdir, &durable);
    });
}

#[test]
fn failed_ack_write_poisons() {
    with_timeout(60, || {
        let (_dir, jdir, plan, journal, durable) =
            faulty_journal(PersistMode::Sync, 1 << 20, 8, (3, 5, 100));
        journal.ack(2).unwrap();
        let mut old_reader = journal.reader(1).unwrap();
        plan.fail(IoOp::WriteAck, 0, Some(1), EIO);
        let err = journal.ack(5).expect_err("ack whose write fails");
        assert_sync_failure(&err, "the failed ack");
        assert!(
            journal.state().poisoned.is_some(),
            "a failed ack write poisons"
        );
        assert_everything_poisoned(&journal, &mut old_reader, "a failed ack write");
        drop(old_reader);
        drop(journal);
        let journal = reopen_and_check(&jdir, &durable);
        let acked = journal.state().acked_lsn;
        assert!(
            acked == 2 || acked == 5,
            "acked LSN after a failed ack write must be the old or the new value, got {acked}"
        );
    });
}

/// A fault injector that stops the next data sync until the test says whether it fails.
#[derive(Debug, Default)]
struct SyncGate {
    state: Mutex<GateState>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    armed: bool,
    holding: bool,
    verdict: Option<bool>,
}

impl SyncGate {
    fn arm(&self) {
        self.state.lock().unwrap().armed = true;
    }

    fn wait_until_holding(&self) {
        let mut s = self.state.lock().unwrap();
        while !s.holding {
            s = self.cv.wait(s).unwrap();
        }
    }

    fn release(&self, fail: bool) {
        self.state.lock().unwrap().verdict = Some(fail);
        self.cv.notify_all();
    }
}

impl FaultInjector for SyncGate {
    fn check(&self, op: IoOp, _path: &Path) -> io::Result<()> {
        if op != IoOp::SyncData {
            return Ok(());
        }
        let mut s = self.state.lock().unwrap();
        if !s.armed {
            return Ok(());
        }
        s.armed = false;
        s.holding = true;
        self.cv.notify_all();
        while s.verdict.is_none() {
            s = self.cv.wait(s).unwrap();
        }
        match s.verdict {
            Some(true) => Err(io::Error::from_raw_os_error(EIO)),
            _ => Ok(()),
        }
    }
}

/// A sync fails while another thread is inside `append_batch` (holding the writer lock, past
/// its poison check); the batch then needs a rotation. The rotation must not sync again and
/// declare durable what the failed sync covered: after a failed `msync` the kernel may have
/// dropped those pages, and a retried sync can succeed without writing them
/// (journal-format.md sections 8 and 10). So the durable LSN must not move after the
/// poisoning, and waiting for the record whose sync failed must fail.
#[test]
fn rotation_inside_a_batch_after_poisoning_does_not_declare_failed_records_durable() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        let gate = Arc::new(SyncGate::default());
        let journal = Arc::new(
            Journal::open(
                &jdir,
                JournalOptions::new()
                    .persist_mode(PersistMode::Sync)
                    .segment_bytes_max(64 << 10)
                    .fault_injector(gate.clone()),
            )
            .unwrap(),
        );
        let mut durable = Vec::new();
        for seq in 0..3 {
            let p = payload(4, seq, 6, 1000);
            durable.push((journal.append(&p).unwrap(), p));
        }

        // C appends one record; its sync (C leads it) is held at the gate.
        gate.arm();
        let c = {
            let journal = Arc::clone(&journal);
            std::thread::spawn(move || journal.append(&payload(4, 3, 6, 100)))
        };
        gate.wait_until_holding();
        let c_lsn = journal.state().next_lsn - 1;
        let durable_before = journal.state().durable_lsn;
        assert_eq!(durable_before, 3);

        // B appends a batch. While B holds the writer lock (inside the batch's iterator), C's
        // sync fails and poisons the journal; then B's one record needs a new segment.
        let max = journal.options().payload_bytes_limit();
        let mut durable_at_poison = None;
        let mut yielded = false;
        let batch = std::iter::from_fn(|| {
            if yielded {
                return None;
            }
            yielded = true;
            gate.release(true);
            while journal.state().poisoned.is_none() {
                std::thread::sleep(Duration::from_millis(1));
            }
            durable_at_poison = Some(journal.state().durable_lsn);
            Some(payload(4, 4, 6, max))
        });
        let b = journal.append_batch(batch);
        let c = c.join().expect("appender C");

        assert_sync_failure(&c.expect_err("C's sync failed"), "C");
        assert_eq!(durable_at_poison, Some(durable_before));
        assert!(
            b.is_err(),
            "the batch completed on a poisoned journal: {b:?}"
        );
        assert_eq!(
            journal.state().durable_lsn,
            durable_before,
            "the durable LSN moved after the journal was poisoned (a rotation re-synced what a \
             failed sync covered)"
        );
        assert_poisoned(
            journal.wait_durable(c_lsn),
            "wait_durable of the record whose sync failed",
        );
        drop(journal);
        reopen_and_check(&jdir, &durable);
    });
}

/// A sync that fails with ENOSPC poisons like any failed sync (section 8). It must then not be
/// reported as `JournalError::DiskFull`, whose contract is "nothing was lost: the journal is unchanged
/// and consistent ... free some space and retry": the journal is poisoned, and what the failed
/// sync covered may be lost.
#[test]
fn enospc_from_a_sync_poisons_and_is_not_a_retryable_disk_full() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        let plan = Arc::new(FaultPlan::new());
        let journal = Journal::open(&jdir, opts(PersistMode::Sync, 1 << 20, &plan)).unwrap();
        let p = payload(6, 0, 7, 100);
        let durable = vec![(journal.append(&p).unwrap(), p)];
        let mut old_reader = journal.reader(1).unwrap();
        plan.fail(IoOp::SyncData, 0, Some(1), 28);
        let err = journal
            .append(&payload(6, 1, 7, 100))
            .expect_err("the sync failed");
        assert!(journal.state().poisoned.is_some(), "a failed sync poisons");
        assert_everything_poisoned(&journal, &mut old_reader, "an ENOSPC sync failure");
        assert!(
            !matches!(err, Error::Journal(JournalError::DiskFull { .. })),
            "a failed sync that poisoned the journal was reported as DiskFull (\"{err}\"), \
             which promises the journal is unchanged and a retry will work"
        );
        drop(old_reader);
        drop(journal);
        reopen_and_check(&jdir, &durable);
    });
}
