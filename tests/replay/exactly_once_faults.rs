//! Exactly once under injected faults, with a NON-IDEMPOTENT event (`Bump`: applying an
//! entry twice shows in its counter, and in the log of applications):
//!
//! * a fault at every statement index of every target transaction in turn (`BEGIN` = 0, 1, 2,
//!   … until a sync passes without the fault firing), as an I/O error and as "busy", over
//!   several batches: after the faulty sync and a clean retry, every counter equals exactly
//!   its number of increments, and the target's watermark is the last LSN; with retries
//!   enabled, one `sync_now` absorbs the fault;
//! * an in-doubt commit (the commit landed, the replayer is told it failed): no duplicate,
//!   the report counts the entries, acknowledgement = watermark — also when the target cannot
//!   be reached to verify it;
//! * transient errors mid-batch (I/O error, busy) retried inside one `sync_now`.

use crate::support::faults::Plan;
use crate::support::process::with_timeout;
use crate::support::replay::{Rig, replay_opts};
use crate::support::targets::TargetKind;
use syncjournal::Lsn;

const ENTRIES: u64 = 10;
const BATCH: usize = 3;

fn code_name(code: std::os::raw::c_int) -> &'static str {
    if code == rusqlite::ffi::SQLITE_BUSY {
        "SQLITE_BUSY"
    } else {
        "SQLITE_IOERR"
    }
}

#[test]
fn a_fault_at_every_statement_of_every_transaction_loses_and_duplicates_nothing() {
    for kind in TargetKind::all() {
        with_timeout(120, move || {
            let t0 = std::time::Instant::now();
            let mut scenarios = 0;
            for code in [rusqlite::ffi::SQLITE_IOERR, rusqlite::ffi::SQLITE_BUSY] {
                let mut txn = 0;
                loop {
                    let mut fired_in_txn = false;
                    let mut index = 0;
                    loop {
                        let what = format!(
                            "{} at statement {index} of transaction {txn}",
                            code_name(code)
                        );
                        let plan = Plan {
                            txn: Some(txn),
                            index: Some(index),
                            times: 1,
                            code,
                            ..Plan::default()
                        };

                        // The faulty sync stops at the fault; a clean one completes.
                        let rig = Rig::new(kind, ENTRIES);
                        let mut r = rig.replayer(replay_opts().batch_entries_max(BATCH));
                        rig.faults.arm(plan.clone());
                        let first = r.sync_now();
                        if rig.faults.hits() == 0 {
                            // This transaction has no statement `index`: the sync went through.
                            assert!(first.error.is_none(), "{what}: {first}");
                            assert_eq!(first.applied, ENTRIES, "{what}: {first}");
                            rig.check_complete(&what);
                            break;
                        }
                        fired_in_txn = true;
                        scenarios += 1;
                        let labels = rig.faults.last_txn_labels();
                        let e = first
                            .error
                            .as_ref()
                            .unwrap_or_else(|| panic!("{what} ({labels:?}): no error: {first}"));
                        assert!(e.is_transient(), "{what}: {e}");
                        let w = rig.check_prefix(&what);
                        assert_eq!(first.applied, w, "{what}: the report counts what committed");
                        assert_eq!(
                            first.transactions as usize,
                            txn.min(ENTRIES.div_ceil(BATCH as u64) as usize),
                            "{what}: {first}"
                        );
                        assert_eq!(first.pending, ENTRIES - w, "{what}");
                        rig.faults.disarm();
                        let second = r.sync_now();
                        assert!(second.error.is_none(), "{what}: retry: {second}");
                        assert_eq!(
                            first.applied + second.applied,
                            ENTRIES,
                            "{what}: every entry reported applied once"
                        );
                        rig.check_complete(&what);
                        assert_eq!(r.sync_now().applied, 0, "{what}: nothing left");
                        rig.check_complete(&what);

                        // With retries, one sync absorbs the same fault.
                        let rig = Rig::new(kind, ENTRIES);
                        let mut r = rig
                            .replayer(replay_opts().batch_entries_max(BATCH).retry_attempts_max(3));
                        rig.faults.arm(plan);
                        let rep = r.sync_now();
                        assert_eq!(rig.faults.hits(), 1, "{what}");
                        assert!(rep.error.is_none(), "{what} with retries: {rep}");
                        assert_eq!(rep.retries, 1, "{what}: {rep}");
                        assert_eq!(rep.applied, ENTRIES, "{what}: {rep}");
                        rig.check_complete(&what);

                        index += 1;
                        assert!(index < 100, "{what}: transactions never end?");
                    }
                    if !fired_in_txn {
                        break;
                    }
                    txn += 1;
                }
                // 10 entries in batches of 3: 4 batches, then the "caught up" check.
                assert!(
                    txn >= ENTRIES.div_ceil(BATCH as u64) as usize,
                    "{}: faults fired in only {txn} transactions",
                    code_name(code)
                );
            }
            eprintln!(
                "exactly once ({kind}): {scenarios} fault positions checked in {:?}",
                t0.elapsed()
            );
        });
    }
}

#[test]
fn an_in_doubt_commit_that_landed_is_not_applied_again() {
    for kind in TargetKind::all() {
        with_timeout(60, move || {
            // The first commit, then every commit, is reported failed although it landed.
            for (what, n) in [("first commit", 1), ("every commit", usize::MAX)] {
                let rig = Rig::new(kind, ENTRIES);
                let mut r = rig.replayer(replay_opts().batch_entries_max(BATCH));
                rig.faults.arm(Plan {
                    after_commit: n,
                    ..Plan::default()
                });
                let rep = r.sync_now();
                assert!(rig.faults.commit_hits() >= 1, "{what}");
                assert!(rep.error.is_none(), "{what}: {rep}");
                assert_eq!(
                    rep.applied, ENTRIES,
                    "{what}: the report counts the entries"
                );
                assert_eq!(rep.transactions, 4, "{what}: {rep}");
                assert_eq!(rep.pending, 0);
                rig.check_complete(what);
                assert_eq!(r.target_watermark().unwrap(), ENTRIES);

                // The next sync applies nothing again; new entries once.
                let rep = r.sync_now();
                assert!(rep.error.is_none(), "{what}: {rep}");
                assert_eq!(rep.applied, 0, "{what}: no duplicate");
                rig.check_complete(what);
            }

            // More entries after an in-doubt commit, in a later sync.
            let mut rig = Rig::new(kind, ENTRIES);
            let mut r = rig.replayer(replay_opts().batch_entries_max(BATCH));
            rig.faults.arm(Plan {
                after_commit: 2,
                ..Plan::default()
            });
            assert!(r.sync_now().error.is_none());
            rig.ledger.append_increments(&rig.journal, 5);
            let rep = r.sync_now();
            assert!(rep.error.is_none(), "{rep}");
            assert_eq!(rep.applied, 5);
            rig.check_complete("after an in-doubt commit");
        });
    }
}

#[test]
fn an_in_doubt_commit_that_cannot_be_verified_is_resolved_by_the_next_sync() {
    for kind in TargetKind::all() {
        with_timeout(60, move || {
            // The first commit lands, then the share disappears before the replayer learns it.
            let rig = Rig::new(kind, ENTRIES);
            let target = rig.target.clone();
            rig.faults.on_in_doubt(move || target.take_away());
            rig.faults.arm(Plan {
                after_commit: 1,
                ..Plan::default()
            });
            let mut r = rig.replayer(replay_opts().batch_entries_max(BATCH));
            let rep = r.sync_now();
            assert_eq!(rig.faults.commit_hits(), 1);
            let e = rep.error.as_ref().expect("the commit cannot be verified");
            assert!(e.is_transient(), "{e}");
            assert_eq!(
                rep.applied, 0,
                "an unverified commit is not reported applied: {rep}"
            );
            assert_eq!(rig.acked(), 0, "an unverified commit is not acknowledged");
            assert!(!rig.target.exists());
            assert_eq!(
                rig.target.while_away().watermark(rig.journal.id()),
                BATCH as Lsn,
                "the commit did land"
            );

            // The share comes back: the landed batch is acknowledged, not applied again.
            rig.target.bring_back();
            rig.faults.disarm();
            let rep = r.sync_now();
            assert!(rep.error.is_none(), "{rep}");
            assert_eq!(
                rep.applied,
                ENTRIES - BATCH as u64,
                "only the entries after the landed batch: {rep}"
            );
            rig.check_complete("after the share came back");
        });
    }
}

#[test]
fn transient_errors_mid_batch_are_retried_within_one_sync() {
    for kind in TargetKind::all() {
        with_timeout(60, move || {
            for code in [rusqlite::ffi::SQLITE_IOERR, rusqlite::ffi::SQLITE_BUSY] {
                let what = code_name(code);
                // The event of the second entry of the second batch (statement 6: BEGIN, read
                // watermark, then savepoint, event, release per entry) fails twice.
                let rig = Rig::new(kind, ENTRIES);
                let mut r =
                    rig.replayer(replay_opts().batch_entries_max(BATCH).retry_attempts_max(5));
                rig.faults.arm(Plan {
                    index: Some(6),
                    label: Some("event".into()),
                    skip: 1,
                    times: 2,
                    code,
                    ..Plan::default()
                });
                let rep = r.sync_now();
                assert_eq!(rig.faults.hits(), 2, "{what}");
                assert_eq!(
                    rig.faults.txns(),
                    7,
                    "{what}: 4 batches, 2 failed attempts, and the caught-up check"
                );
                assert!(rep.error.is_none(), "{what}: {rep}");
                assert_eq!(rep.retries, 2, "{what}: {rep}");
                assert_eq!(rep.applied, ENTRIES, "{what}: {rep}");
                assert_eq!(rep.transactions, 4, "{what}: {rep}");
                rig.check_complete(what);
                assert!(r.state().last_error.is_none());

                // A fault at every statement of every transaction, a few times in a row.
                let rig = Rig::new(kind, ENTRIES);
                let mut r =
                    rig.replayer(replay_opts().batch_entries_max(BATCH).retry_attempts_max(4));
                rig.faults.arm(Plan {
                    times: 4,
                    code,
                    ..Plan::default()
                });
                let rep = r.sync_now();
                assert!(rep.error.is_none(), "{what}: {rep}");
                assert_eq!(rep.retries, 4, "{what}: {rep}");
                rig.check_complete(what);

                // A fault that outlasts the retries: the sync says so; nothing is lost or doubled.
                let rig = Rig::new(kind, ENTRIES);
                let mut r =
                    rig.replayer(replay_opts().batch_entries_max(BATCH).retry_attempts_max(3));
                rig.faults.arm(Plan {
                    txn: None,
                    label: Some("event".into()),
                    times: usize::MAX,
                    code,
                    ..Plan::default()
                });
                let rep = r.sync_now();
                let e = rep.error.as_ref().expect("retries exhausted");
                assert!(e.is_transient(), "{what}: {e}");
                assert_eq!(rep.retries, 3, "{what}: {rep}");
                assert_eq!(rep.applied, 0);
                assert_eq!(rep.pending, ENTRIES);
                let last = r.state().last_error.clone().expect("last_error");
                assert!(last.transient);
                rig.check_prefix(what);
                rig.faults.disarm();
                let rep = r.sync_now();
                assert!(rep.error.is_none(), "{what}: {rep}");
                assert_eq!(rep.applied, ENTRIES);
                rig.check_complete(what);
                assert!(r.state().last_error.is_none());
            }
        });
    }
}
