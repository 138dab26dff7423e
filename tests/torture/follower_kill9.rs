//! `kill -9` of a FOLLOWER while the owner rotates segments under it (issue 9: "never call an
//! entry applied that was not").
//!
//! The owner is this process: a `Store<WideBump>` without a target, on a journal of 64 KiB
//! segments (a `WideBump` is about 200 bytes: the journal rotates every few hundred entries),
//! appending NON-IDEMPOTENT events (`counters.n = n + 1`, plus a keyless log row; sequence
//! number = LSN) from a thread, continuously, at a pace that changes every cycle. The follower
//! is a CHILD process (this test binary re-executed to run only the ignored test
//! `follower_kill9_child`): `Replayer::follower` + `sync_now()` in a loop, with small batches
//! (1 to 64 entries) to a slightly slow target, so that kills land inside target transactions
//! and batches straddle segment boundaries. The parent kills it with SIGKILL at a random moment
//! (a delay, or just after its k-th commit), then checks, before anything else writes the
//! target:
//!
//! * `PRAGMA integrity_check` is ok (a fresh connection, which rolls back a hot journal);
//! * its watermark `W` never goes back, is at most the owner's durable head, and the owner's
//!   acknowledgement is at most `W`;
//! * its counters and log are exactly the fold of entries `1..=W`: nothing applied twice,
//!   nothing skipped. A lost range is reported with the segment boundaries it touches (the
//!   old follower lost ranges ending exactly on a segment's last LSN);
//! * the follower's watermark crossed segment boundaries (counted: the rotations it replayed
//!   across).
//!
//! At the end a follower sync applies everything: the target is the fold of the whole journal.
//!
//! 200 cycles by default; soak with `SYNCJOURNAL_SOAK_CYCLES=2000`. Replay a run with
//! `SYNCJOURNAL_FOLLOWER_SEED` (the owner's appends are timed, so a replay repeats the kill
//! schedule and batch sizes, not every interleaving).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::events::{
    COUNTER_SCHEMA, WideBump, counters_of, fold, log_shape, logged_seqs, not_the_fold, ranges_of,
};
use crate::support::faults::SlowTarget;
use crate::support::journal::{keep_everything_opts, segment_first_lsns, segment_last_lsns};
use crate::support::process::{
    CHILD_WAIT, ChildLines, SOAK_ENV, alongside, child_test_command, count_from_env, shm_tempdir,
    summary, test_path, with_timeout,
};
use crate::support::rng::Rng;
use crate::support::store::files_on_share;
use crate::support::targets::{
    after_kill, create_target, integrity, open_target, watermark_failures, watermark_of,
};
use syncjournal::{JournalEvent, Lsn, ReplayOptions, Replayer, Store, StoreOptions, TargetOptions};

const ENV_DIR: &str = "SYNCJOURNAL_FOLLOWER_KILL9_DIR";
const ENV_BATCH: &str = "SYNCJOURNAL_FOLLOWER_KILL9_BATCH";
const SEED_ENV: &str = "SYNCJOURNAL_FOLLOWER_SEED";
const CHILD_TEST: &str = "follower_kill9_child";
const CYCLES_DEFAULT: u64 = 200;
/// Each statement of the follower's target transactions sleeps this long (a slow share).
const STATEMENT_SLEEP: Duration = Duration::from_micros(60);
/// The owner pauses while the follower (as it last reported) lags by this many entries.
const BACKLOG_MAX: u64 = 900;

/// The child: follows the journal until killed. Does nothing unless started by
/// `a_killed_follower_loses_nothing_while_the_owner_rotates_segments`.
#[test]
#[ignore = "child process of a_killed_follower_loses_nothing_while_the_owner_rotates_segments"]
fn follower_kill9_child() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let batch: usize = std::env::var(ENV_BATCH).unwrap().parse().unwrap();
    let (jdir, _, target) = files_on_share(Path::new(&dir));
    let mut follower: Replayer<WideBump> = Replayer::follower(
        &jdir,
        &target,
        SlowTarget {
            statement_sleep: STATEMENT_SLEEP,
            after_commit_sleep: Duration::ZERO,
        }
        .options(TargetOptions::new()),
        ReplayOptions::new()
            .batch_entries_max(batch)
            .retry_attempts_max(3)
            .retry_delay_ms(2)
            .retry_delay_max_ms(20),
    )
    .expect("child: follow the journal");
    println!("READY");
    let started = Instant::now();
    // Safety net only: the parent kills us long before this.
    while started.elapsed() < Duration::from_secs(20) {
        let report = follower.sync_now();
        if let Some(e) = &report.error {
            println!("ERROR {e}");
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        if let Some(w) = follower.state().target_lsn {
            println!("SYNCED {w}");
        }
        if report.applied == 0 {
            // Caught up: poll again soon, while the owner keeps writing the same segment.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    eprintln!("child: not killed within 20 s");
    std::process::exit(3);
}

/// How the owner thread appends during a cycle: bursts of `1..=burst` entries, `pause` apart.
#[derive(Debug, Clone, Copy)]
struct Pace {
    burst: u64,
    pause: Duration,
}

const PACES: [Pace; 5] = [
    Pace {
        burst: 1,
        pause: Duration::from_millis(2),
    },
    Pace {
        burst: 4,
        pause: Duration::from_millis(3),
    },
    Pace {
        burst: 16,
        pause: Duration::from_millis(4),
    },
    Pace {
        burst: 64,
        pause: Duration::from_millis(8),
    },
    Pace {
        burst: 300,
        pause: Duration::from_millis(1),
    },
];

/// What the owner thread shares with the parent's checks.
struct Owner {
    /// Every event appended, in LSN order (`events[lsn - 1]`), pushed once `apply` returned.
    events: Mutex<Vec<WideBump>>,
    stop: AtomicBool,
    /// The follower's watermark as last reported (the owner stays within `BACKLOG_MAX`).
    follower_at: AtomicU64,
    /// Index into `PACES`.
    pace: AtomicU64,
    /// Why the owner stopped appending, if it failed.
    failed: Mutex<Option<String>>,
}

fn owner_loop(store: &Store<WideBump>, owner: &Owner, seed: u64) {
    let mut rng = Rng::new(seed ^ 0x6f77_6e65_7200_0001);
    let mut next = owner.events.lock().unwrap().len() as i64 + 1;
    while !owner.stop.load(Ordering::SeqCst) {
        let pace = PACES[owner.pace.load(Ordering::SeqCst) as usize];
        let lag = (next as u64 - 1).saturating_sub(owner.follower_at.load(Ordering::SeqCst));
        if lag >= BACKLOG_MAX {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        for _ in 0..rng.range(1, pace.burst + 1) {
            let ev = WideBump::new(next);
            match store.apply(&ev) {
                Ok(lsn) if lsn == next as Lsn => owner.events.lock().unwrap().push(ev),
                Ok(lsn) => {
                    *owner.failed.lock().unwrap() =
                        Some(format!("event #{next} was journaled as LSN {lsn}"));
                    return;
                }
                Err(e) => {
                    *owner.failed.lock().unwrap() = Some(format!("apply #{next}: {e}"));
                    return;
                }
            }
            next += 1;
        }
        std::thread::sleep(pace.pause);
    }
}

/// How the parent picks the moment of the kill.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// This long after the child said READY.
    After(Duration),
    /// This long after the child's `n`-th commit (inside or right after a batch).
    AfterCommit(u64, Duration),
}

/// What one child said before it was killed.
#[derive(Debug, Default)]
struct ChildReport {
    commits: u64,
    errors: Vec<String>,
    last_synced: Option<Lsn>,
}

fn parse(line: &str, out: &mut ChildReport, owner: &Owner) {
    if line.ends_with("COMMITTED") {
        out.commits += 1;
    } else if let Some(i) = line.find("SYNCED ") {
        if let Ok(w) = line[i + 7..].trim().parse::<Lsn>() {
            out.last_synced = Some(w);
            owner.follower_at.fetch_max(w, Ordering::SeqCst);
        }
    } else if let Some(i) = line.find("ERROR ") {
        out.errors.push(line[i + 6..].to_string());
    }
}

fn run_child(dir: &Path, cycle: u64, batch: usize, kill_at: KillAt, owner: &Owner) -> ChildReport {
    let stderr_path = dir.join("child.stderr");
    let mut cmd = child_test_command(&test_path(module_path!(), CHILD_TEST), ENV_DIR, dir);
    cmd.env(ENV_BATCH, batch.to_string());
    let mut child = ChildLines::spawn_logged(cmd, &stderr_path);
    let mut out = ChildReport::default();
    let died = |out: &ChildReport, why: String| -> ! {
        panic!(
            "cycle {cycle}: {why}; {} commits reported; child stderr:\n{}",
            out.commits,
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        )
    };
    if let Err(e) = child.wait_for("READY", CHILD_WAIT, &mut |l| parse(l, &mut out, owner)) {
        died(&out, e);
    }
    // Until the kill: read the child's lines as they come (the owner paces itself on them).
    let (deadline, commits) = match kill_at {
        KillAt::After(d) => (Some(Instant::now() + d), None),
        KillAt::AfterCommit(n, _) => (None, Some(n)),
    };
    let guard = Instant::now() + CHILD_WAIT;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d)
            || commits.is_some_and(|n| out.commits >= n)
        {
            break;
        }
        if Instant::now() >= guard {
            died(&out, format!("hang guard: {kill_at:?} not reached"));
        }
        let wait = deadline.map_or(Duration::from_millis(50), |d| {
            d.saturating_duration_since(Instant::now())
        });
        match child.rx.recv_timeout(wait) {
            Ok(l) => parse(&l, &mut out, owner),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.child.wait().ok();
                died(&out, format!("the child exited on its own: {status:?}"));
            }
        }
    }
    if let KillAt::AfterCommit(_, d) = kill_at {
        std::thread::sleep(d);
    }
    if let Err(why) = child.kill9(&mut |l| parse(l, &mut out, owner)) {
        died(&out, why);
    }
    out
}

/// What the cycles of the follower add up to.
#[derive(Debug, Default)]
struct Totals {
    cycles: u64,
    entries: u64,
    commits: u64,
    rotations: u64,
    inside_batch: u64,
    progressed: u64,
    lost: u64,
    duplicated: u64,
    errors: u64,
}

/// What differs between the target and the fold of entries `1..=w`, described with the
/// segment boundaries (empty: nothing).
fn describe_divergence(
    tc: &rusqlite::Connection,
    w: Lsn,
    firsts: &BTreeMap<u64, Lsn>,
    t: &mut Totals,
) -> Vec<String> {
    let logged = logged_seqs(tc);
    let mut seen = vec![0u32; w as usize + 1];
    let mut beyond = Vec::new();
    for &s in &logged {
        if (1..=w as i64).contains(&s) {
            seen[s as usize] += 1;
        } else {
            beyond.push(s);
        }
    }
    let missing: Vec<i64> = (1..=w as i64).filter(|&s| seen[s as usize] == 0).collect();
    let doubled: Vec<i64> = (1..=w as i64).filter(|&s| seen[s as usize] > 1).collect();
    t.lost += missing.len() as u64;
    t.duplicated += seen
        .iter()
        .map(|&n| u64::from(n.saturating_sub(1)))
        .sum::<u64>();
    let lasts = segment_last_lsns(firsts);
    let mut out = Vec::new();
    for r in ranges_of(&missing) {
        let end = *r.end() as Lsn;
        let seg = firsts
            .iter()
            .rev()
            .find(|&(_, &f)| f <= end)
            .map(|(s, _)| *s);
        out.push(format!(
            "LOST LSNs {}..={} ({} entries) under watermark {w}: the range ends {} (segment {:?})",
            r.start(),
            r.end(),
            r.end() - r.start() + 1,
            if lasts.contains(&end) {
                "EXACTLY ON a segment's last LSN"
            } else {
                "inside a segment"
            },
            seg
        ));
    }
    if !doubled.is_empty() {
        out.push(format!(
            "APPLIED TWICE: {} entries, first {:?}",
            doubled.len(),
            &doubled[..doubled.len().min(10)]
        ));
    }
    if !beyond.is_empty() {
        out.push(format!(
            "APPLIED BEYOND THE WATERMARK {w}: {} entries, first {:?}",
            beyond.len(),
            &beyond[..beyond.len().min(10)]
        ));
    }
    out
}

/// Checks every invariant after a kill; returns what went wrong (empty: all good).
fn check_cycle(
    dir: &Path,
    store: &Store<WideBump>,
    owner: &Owner,
    t: &mut Totals,
    last_w: &mut Lsn,
) -> Vec<String> {
    let (jdir, _, target) = files_on_share(dir);
    let mut failures = Vec::new();
    let acked = store.journal_state().acked_lsn;
    let (interrupted, tc, ic) = after_kill(&target);
    t.inside_batch += u64::from(interrupted);
    if ic != "ok" {
        failures.push(format!("target integrity_check: {ic}"));
    }
    let id = store.journal_state().journal_id;
    let w = watermark_of(&tc, id);
    let head = store.journal_state().durable_lsn;
    failures.extend(watermark_failures(w, head, acked, *last_w));
    // Every event up to `w` is in `events` once its `apply` returned (it is durable already).
    let guard = Instant::now() + Duration::from_secs(10);
    let upto: Vec<_> = loop {
        let events = owner.events.lock().unwrap();
        if events.len() as Lsn >= w {
            break events[..w as usize].iter().map(|e| e.bump).collect();
        }
        drop(events);
        if Instant::now() >= guard {
            failures.push(format!(
                "the watermark {w} covers entries the owner never reported as appended"
            ));
            return failures;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let firsts = segment_first_lsns(&jdir);
    if let Some(why) = not_the_fold(&tc, &upto) {
        failures.push(why);
        failures.extend(describe_divergence(&tc, w, &firsts, t));
    }
    // Rotations the follower replayed across since the last check: segments whose first LSN
    // it newly covers.
    t.rotations += firsts
        .values()
        .filter(|&&f| f > 1 && f > *last_w && f <= w)
        .count() as u64;
    if w > *last_w {
        t.progressed += 1;
    }
    *last_w = w;
    owner.follower_at.fetch_max(w, Ordering::SeqCst);
    failures
}

fn run(cycles: u64, rng: &mut Rng, seed: u64) -> Totals {
    let dir = shm_tempdir();
    let (jdir, cache, target) = files_on_share(dir.path());
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    create_target(&target, COUNTER_SCHEMA);
    let store: Store<WideBump> = Store::open(
        &jdir,
        &cache,
        StoreOptions::new()
            .journal(keep_everything_opts())
            .cache_schema(COUNTER_SCHEMA),
    )
    .expect("open the owner's store");
    let owner = Owner {
        events: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        follower_at: AtomicU64::new(0),
        pace: AtomicU64::new(0),
        failed: Mutex::new(None),
    };
    let mut t = Totals::default();
    let mut last_w = 0;
    std::thread::scope(|s| {
        let appender = s.spawn(|| owner_loop(&store, &owner, seed));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for cycle in 0..cycles {
                owner
                    .pace
                    .store(rng.range(0, PACES.len() as u64), Ordering::SeqCst);
                let batch = [1, 2, 5, 17, 64][rng.urange(0, 5)];
                let kill_at = if rng.one_in(3) {
                    KillAt::AfterCommit(rng.range(1, 40), Duration::from_micros(rng.range(0, 1500)))
                } else {
                    KillAt::After(Duration::from_millis(rng.range(5, 220)))
                };
                let report = run_child(dir.path(), cycle, batch, kill_at, &owner);
                t.cycles += 1;
                t.commits += report.commits;
                t.errors += report.errors.len() as u64;
                let mut failures = check_cycle(dir.path(), &store, &owner, &mut t, &mut last_w);
                for e in &report.errors {
                    failures.push(format!("the follower's sync failed: {e}"));
                }
                if let Some(e) = owner.failed.lock().unwrap().clone() {
                    failures.push(format!("the owner failed: {e}"));
                }
                if !failures.is_empty() {
                    summary(&format!(
                        "follower kill9: FAILED at cycle {cycle} ({kill_at:?}, batch {batch}, \
                         watermark {last_w}): cycles {}, entries {}, rotations {}, kills inside a \
                         batch {}, lost {}, duplicated {}, seed {seed}",
                        t.cycles,
                        owner.events.lock().unwrap().len(),
                        t.rotations,
                        t.inside_batch,
                        t.lost,
                        t.duplicated
                    ));
                    panic!(
                        "cycle {cycle} ({kill_at:?}, batch {batch}; {SEED_ENV}={seed} to replay \
                         the schedule):\n{}",
                        failures.join("\n")
                    );
                }
            }
        }));
        owner.stop.store(true, Ordering::SeqCst);
        appender.join().expect("owner thread");
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    });
    if let Some(e) = owner.failed.lock().unwrap().clone() {
        panic!("the owner failed: {e}");
    }

    // A final follower sync applies everything, exactly once.
    let events = owner.events.into_inner().unwrap();
    let head = store.journal_state().durable_lsn;
    assert_eq!(head, events.len() as Lsn, "every appended event is durable");
    let mut follower: Replayer<WideBump> = Replayer::follower(
        &jdir,
        &target,
        TargetOptions::new(),
        ReplayOptions::new().batch_entries_max(2000),
    )
    .expect("final follower");
    let report = follower.sync_now();
    assert!(report.error.is_none(), "final follower sync: {report}");
    let tc = open_target(&target);
    let id = store.journal_state().journal_id;
    assert_eq!(integrity(&tc), "ok");
    let w = watermark_of(&tc, id);
    assert_eq!(w, head, "final watermark");
    let firsts = segment_first_lsns(&jdir);
    t.rotations += firsts
        .values()
        .filter(|&&f| f > 1 && f > last_w && f <= w)
        .count() as u64;
    let bumps: Vec<_> = events.iter().map(|e| e.bump).collect();
    let divergence = describe_divergence(&tc, w, &firsts, &mut t);
    assert!(divergence.is_empty(), "final: {}", divergence.join("\n"));
    assert_eq!(
        log_shape(&tc),
        (w as i64, w as i64, 1, w as i64),
        "final log: every entry once"
    );
    assert_eq!(counters_of(&tc), fold(bumps.iter()), "final counters");
    assert!(
        firsts.len() > 2,
        "the journal never rotated: {} segments",
        firsts.len()
    );
    t.entries = head;
    drop(tc);
    store.close().unwrap();
    t
}

#[test]
fn a_killed_follower_loses_nothing_while_the_owner_rotates_segments() {
    let _load = alongside();
    assert_eq!(
        WideBump::KIND,
        0x44,
        "the follower and the owner agree on the kind"
    );
    let cycles: u64 = count_from_env(SOAK_ENV, CYCLES_DEFAULT);
    with_timeout(300 + cycles * 3, move || {
        let (mut rng, seed) = Rng::from_env_or_time(SEED_ENV);
        let t = run(cycles, &mut rng, seed);
        summary(&format!(
            "follower kill9: cycles {}, entries {}, rotations {}, kills inside a batch {}, lost {}, \
             duplicated {}, seed {seed} (commits seen {}, cycles with progress {}, follower \
             errors {})",
            t.cycles,
            t.entries,
            t.rotations,
            t.inside_batch,
            t.lost,
            t.duplicated,
            t.commits,
            t.progressed,
            t.errors,
        ));
        assert_eq!((t.lost, t.duplicated), (0, 0));
        if cycles >= 50 {
            assert!(
                t.inside_batch > 0,
                "no kill landed inside a target transaction: the test did not test that"
            );
            assert!(
                t.rotations >= cycles / 10,
                "the follower crossed only {} segment boundaries: the test did not test rotation",
                t.rotations
            );
            assert!(t.progressed > 0, "the follower never progressed");
        }
    });
}
