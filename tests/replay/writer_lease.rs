//! The writer lease on an SQLite target (`sync-protocol.md`, "Writer lease"): machines whose
//! share does not forward byte-range locks — stood for here by SQLite's `unix-none` VFS,
//! which takes no locks at all — never touch the target at the same time. Without the lease
//! the same run damages the target or loses writes; with it, each journal applies exactly
//! once and the file stays intact. A stopped holder's lease is taken over; a waiter is told
//! who holds the lease.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use syncjournal::error::TargetError;
use syncjournal::{
    Error, Journal, JournalEvent, JournalOptions, ReplayOptions, Replayer, TargetOptions,
};

use crate::support::events::{Bump, COUNTER_SCHEMA, fold, target_counters, target_log_stats};
use crate::support::process::with_timeout;
use crate::support::targets::{TargetKind, TestTarget};

/// Entries per journal.
const ENTRIES: i64 = 1500;

fn journal_of(dir: &Path, base: i64) -> Arc<Journal> {
    let j = Arc::new(Journal::open(dir, JournalOptions::new()).unwrap());
    for seq in base..base + ENTRIES {
        let payload = syncjournal::event::encode_event(0, &Bump::new(seq)).unwrap();
        j.append_kind(Bump::KIND, &payload).unwrap();
    }
    j.sync().unwrap();
    j
}

/// What two machines replaying at once left on the target.
struct Outcome {
    integrity: String,
    counters_right: bool,
    logged: i64,
    duplicated: usize,
    errors: Vec<String>,
}

impl Outcome {
    fn intact(&self) -> bool {
        self.integrity == "ok"
            && self.counters_right
            && self.logged == 2 * ENTRIES
            && self.duplicated == 0
    }
}

/// Two journals (two machines) replay into one target at once, without locks, with `topts`.
fn two_machines(topts: TargetOptions) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let target = TestTarget::create(TargetKind::Sqlite, dir.path(), "target.db", COUNTER_SCHEMA);
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2i64)
        .map(|m| {
            let j = journal_of(&dir.path().join(format!("j{m}")), m * 1_000_000);
            let spec = target.spec();
            let topts = topts.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut r: Replayer<Bump> = Replayer::new(
                    j,
                    spec,
                    topts,
                    ReplayOptions::new()
                        .batch_entries_max(20)
                        .retry_attempts_max(50)
                        .retry_delay_ms(1)
                        .retry_delay_max_ms(20),
                );
                barrier.wait();
                let mut errors = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let rep = r.sync_now();
                    match rep.error {
                        None => break,
                        Some(e) => {
                            errors.push(e.to_string());
                            if Instant::now() > deadline || errors.len() > 50 {
                                break;
                            }
                        }
                    }
                }
                errors
            })
        })
        .collect();
    let errors: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let integrity = target.integrity();
    let mut want: BTreeMap<i64, i64> = fold(&(0..ENTRIES).map(Bump::new).collect::<Vec<_>>());
    for (k, v) in fold(
        &(1_000_000..1_000_000 + ENTRIES)
            .map(Bump::new)
            .collect::<Vec<_>>(),
    ) {
        *want.entry(k).or_insert(0) += v;
    }
    let (counters_right, logged, duplicated) = if integrity == "ok" {
        let (rows, dups) = target_log_stats(&target);
        (target_counters(&target) == want, rows, dups.len())
    } else {
        (false, 0, 0)
    };
    Outcome {
        integrity,
        counters_right,
        logged,
        duplicated,
        errors,
    }
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
            eprintln!(
                "without the lease, round {round}: integrity {:?}, counters right {}, {} applications logged of {}, {} applied twice, {} sync errors",
                o.integrity,
                o.counters_right,
                o.logged,
                2 * ENTRIES,
                o.duplicated,
                o.errors.len()
            );
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
        assert_eq!(target.integrity(), "ok");
        assert!(!lease.exists(), "released after the sync");
    });
}
