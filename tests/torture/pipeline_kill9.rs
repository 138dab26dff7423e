//! `kill -9` of the whole pipeline: journal, cache, background replay to a target.
//!
//! Each cycle starts a child (this test binary re-executed to run only the ignored test
//! `pipeline_kill9_child`) that opens a `Store<Bump>` on the same journal, cache and target,
//! with the BACKGROUND sync thread running (`sync_interval_ms` 5, small random batches, a
//! slightly slow target so that much of the time is spent inside target transactions), and
//! applies NON-IDEMPOTENT `Bump` events (`counters.n = n + 1`, plus a keyless log row) from two
//! threads, printing `APPLIED <lsn> <seq>` after each `apply` returned. The parent kills it
//! with SIGKILL at a random moment (during its start, while it applies and syncs, inside a
//! target transaction, between a commit and its acknowledgement), then checks, before anything
//! else touches the files:
//!
//! * the target (fresh connection, which rolls back a hot journal): `PRAGMA integrity_check`
//!   is ok; its watermark `W` is at most the journal's head; its counters and log are exactly
//!   the fold of journal entries `1..=W` — nothing applied twice, nothing partial;
//! * the journal (reopened): LSNs contiguous from 1 (retention is off so that the whole history
//!   stays checkable), every record seen in an earlier cycle unchanged, every reported entry
//!   present with its event (no acknowledged entry lost); its acknowledgement `≤ W` (never
//!   acknowledged without a commit);
//! * the cache (through the store's `read`, after reopening the store): integrity ok, applied
//!   LSN = the journal head, counters and log exactly the fold of the whole journal.
//!
//! At the end a final `sync_now` applies everything: target = cache = fold of the journal,
//! each entry exactly once, acknowledged.
//!
//! 200 cycles by default; soak with `SYNCJOURNAL_SOAK_CYCLES=10000`. Replay a run with
//! `SYNCJOURNAL_PIPELINE_SEED`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::events::{Bump, COUNTER_SCHEMA, counters_of, fold, logged_seqs};
use crate::support::faults::SlowTarget;
use crate::support::journal::keep_everything_opts;
use crate::support::process::{
    CHILD_WAIT, ChildLines, SOAK_ENV, alongside, child_test_command, count_from_env, summary,
    test_path, with_timeout,
};
use crate::support::rng::Rng;
use crate::support::store::files_on_share;
use crate::support::targets::{
    after_kill, create_target, integrity, open_target, watermark_failures, watermark_of,
};
use syncjournal::{Journal, JournalEvent, Lsn, ReplayOptions, Store, StoreOptions, TargetOptions};

const ENV_DIR: &str = "SYNCJOURNAL_PIPELINE_DIR";
const ENV_CYCLE: &str = "SYNCJOURNAL_PIPELINE_CYCLE";
const ENV_BATCH: &str = "SYNCJOURNAL_PIPELINE_BATCH";
const SEED_ENV: &str = "SYNCJOURNAL_PIPELINE_SEED";
const CHILD_TEST: &str = "pipeline_kill9_child";
const CYCLES_DEFAULT: u64 = 200;
const CHILD_THREADS: i64 = 2;
/// Each statement of the child's target transactions sleeps this long (a slow share).
const STATEMENT_SLEEP: Duration = Duration::from_micros(100);
/// The child sleeps this long between a commit and its acknowledgement.
const AFTER_COMMIT_SLEEP: Duration = Duration::from_millis(3);

/// The child: applies until killed. Does nothing unless started by `pipeline_kill9_cycles`.
#[test]
#[ignore = "child process of pipeline_kill9_cycles"]
fn pipeline_kill9_child() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let cycle: i64 = std::env::var(ENV_CYCLE).unwrap().parse().unwrap();
    let batch: usize = std::env::var(ENV_BATCH).unwrap().parse().unwrap();
    let (jdir, cache, target) = files_on_share(Path::new(&dir));
    let store: Store<Bump> = Store::open(
        &jdir,
        &cache,
        StoreOptions::new()
            .journal(keep_everything_opts().lock_wait_ms(5_000))
            .cache_schema(COUNTER_SCHEMA)
            .target(
                &target,
                SlowTarget {
                    statement_sleep: STATEMENT_SLEEP,
                    after_commit_sleep: AFTER_COMMIT_SLEEP,
                }
                .options(TargetOptions::new()),
            )
            .replay(
                ReplayOptions::new()
                    .sync_interval_ms(5)
                    .batch_entries_max(batch)
                    .retry_delay_ms(5)
                    .retry_delay_max_ms(50),
            )
            .background_sync(true),
    )
    .expect("child: open store");
    println!("READY");
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..CHILD_THREADS {
            let store = &store;
            s.spawn(move || {
                let mut i = 0i64;
                // Safety net only: the parent kills us long before this.
                while started.elapsed() < Duration::from_secs(20) && i < 100_000 {
                    let seq = cycle * 1_000_000 + t * 100_000 + i;
                    let lsn = store.apply(&Bump::new(seq)).expect("child: apply");
                    // `apply` returned: the entry is durable. Report it.
                    println!("APPLIED {lsn} {seq}");
                    i += 1;
                }
            });
        }
    });
    eprintln!("child: not killed within 20 s");
    std::process::exit(3);
}

/// How the parent picks the moment of the kill.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// A delay after spawning: maybe during the store's open (recovery, cache catch-up).
    Spawned(Duration),
    /// A delay after the child has reported this many applied entries.
    Applied(usize, Duration),
}

/// What one child said before it was killed.
#[derive(Default)]
struct ChildReport {
    applied: Vec<(Lsn, i64)>,
    commits: u64,
    ready: bool,
}

fn parse(line: &str, out: &mut ChildReport) {
    if let Some(i) = line.find("APPLIED ") {
        let mut it = line[i + 8..].split(' ');
        let lsn = it.next().and_then(|s| s.parse().ok()).expect("APPLIED lsn");
        let seq = it.next().and_then(|s| s.parse().ok()).expect("APPLIED seq");
        out.applied.push((lsn, seq));
    } else if line.ends_with("COMMITTED") {
        out.commits += 1;
    } else if line.ends_with("READY") {
        out.ready = true;
    }
}

fn run_child(dir: &Path, cycle: u64, batch: usize, kill_at: KillAt) -> ChildReport {
    let stderr_path = dir.join("child.stderr");
    let mut cmd = child_test_command(&test_path(module_path!(), CHILD_TEST), ENV_DIR, dir);
    cmd.env(ENV_CYCLE, cycle.to_string())
        .env(ENV_BATCH, batch.to_string());
    let mut child = ChildLines::spawn_logged(cmd, &stderr_path);
    let mut out = ChildReport::default();
    let died = |out: &ChildReport, why: String| -> ! {
        panic!(
            "cycle {cycle}: {why}; {} entries reported; child stderr:\n{}",
            out.applied.len(),
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        )
    };
    match kill_at {
        KillAt::Spawned(d) => std::thread::sleep(d),
        KillAt::Applied(n, d) => {
            while out.applied.len() < n {
                match child.wait_for("APPLIED ", CHILD_WAIT, &mut |l| parse(l, &mut out)) {
                    Ok(rest) => parse(&format!("APPLIED {rest}"), &mut out),
                    Err(e) => died(&out, e),
                }
            }
            std::thread::sleep(d);
        }
    }
    if let Err(why) = child.kill9(&mut |l| parse(l, &mut out)) {
        died(&out, why);
    }
    out
}

/// Totals over all cycles.
#[derive(Debug, Default)]
struct Totals {
    cycles: u64,
    applied: u64,
    reported: u64,
    lost: u64,
    duplicated: u64,
    mid_transaction: u64,
    ack_behind: u64,
    before_ready: u64,
    commits: u64,
    cuts: usize,
    progressed: u64,
}

fn seqs_of(events: &[Bump]) -> Vec<i64> {
    let mut v: Vec<i64> = events.iter().map(|e| e.seq).collect();
    v.sort_unstable();
    v
}

/// Entries applied more than once in a sorted list of logged sequence numbers.
fn duplicates(sorted: &[i64]) -> u64 {
    sorted.windows(2).filter(|w| w[0] == w[1]).count() as u64
}

/// Checks every invariant after a kill; returns what went wrong (empty: all good).
fn check_cycle(
    dir: &Path,
    ledger: &mut Vec<Bump>,
    reported: &[(Lsn, i64)],
    t: &mut Totals,
    last_w: &mut Lsn,
) -> Vec<String> {
    let (jdir, cache, target) = files_on_share(dir);
    let mut failures = Vec::new();

    // 1. The target, before anything else touches it.
    let (interrupted, tc, ic) = after_kill(&target);
    t.mid_transaction += u64::from(interrupted);
    if ic != "ok" {
        failures.push(format!("target integrity_check: {ic}"));
    }

    // 2. The journal: contiguous, earlier records unchanged, reported entries present.
    let journal = Journal::open(&jdir, keep_everything_opts().lock_wait_ms(5_000))
        .unwrap_or_else(|e| panic!("reopen the journal: {e}"));
    t.cuts += journal.recovery_report().cuts.len();
    let st = journal.state();
    let w = watermark_of(&tc, st.journal_id);
    if st.first_lsn != 1 {
        failures.push(format!(
            "first retained LSN {} (retention is off)",
            st.first_lsn
        ));
    }
    let mut reader = journal.reader(1).unwrap();
    let mut lsn = 0;
    while let Some(r) = reader.next_ref().unwrap() {
        lsn += 1;
        if r.lsn != lsn {
            failures.push(format!(
                "journal LSNs not contiguous: {} after {}",
                r.lsn,
                lsn - 1
            ));
            break;
        }
        if r.kind != Bump::KIND {
            failures.push(format!("LSN {lsn} has kind {:#x}", r.kind));
            break;
        }
        let (_, ev): (u64, Bump) = syncjournal::event::decode_event(r.payload)
            .unwrap_or_else(|e| panic!("decode LSN {lsn}: {e}"));
        match ledger.get(lsn as usize - 1) {
            Some(seen) if *seen != ev => failures.push(format!(
                "LSN {lsn} changed: it held {seen:?} in an earlier cycle, now {ev:?}"
            )),
            Some(_) => {}
            None => ledger.push(ev),
        }
    }
    if (ledger.len() as Lsn) > lsn {
        failures.push(format!(
            "the journal ends at LSN {lsn}, but LSNs up to {} were seen durable before",
            ledger.len()
        ));
    }
    let head = st.durable_lsn;
    if head != lsn {
        failures.push(format!("durable LSN {head} but {lsn} records readable"));
    }
    let mut lost = 0;
    for &(lsn, seq) in reported {
        let ok = ledger
            .get(lsn as usize - 1)
            .is_some_and(|e| e.seq == seq && lsn <= head);
        if !ok {
            lost += 1;
            if lost <= 5 {
                failures.push(format!(
                    "reported entry LSN {lsn} (seq {seq}) lost: the journal holds {:?}",
                    ledger.get(lsn as usize - 1)
                ));
            }
        }
    }
    t.lost += lost;
    failures.extend(watermark_failures(w, head, st.acked_lsn, *last_w));
    if st.acked_lsn < w {
        t.ack_behind += 1;
    }
    if w > *last_w {
        t.progressed += 1;
    }
    *last_w = w;
    drop(reader);
    journal.close().expect("close the journal");

    // 3. The target is the fold of exactly the entries up to its watermark.
    let upto = &ledger[..(w as usize).min(ledger.len())];
    let (have, want) = (counters_of(&tc), fold(upto));
    let logged = logged_seqs(&tc);
    let dups = duplicates(&logged);
    t.duplicated += dups;
    if have != want || logged != seqs_of(upto) {
        failures.push(format!(
            "target is not the fold of LSNs 1..={w}: counters {have:?}, expected {want:?}; {} \
             log rows for {} entries, {dups} applied twice",
            logged.len(),
            upto.len()
        ));
    }
    drop(tc);

    // 4. The cache, through the store: the fold of the whole journal.
    let store: Store<Bump> = Store::open(
        &jdir,
        &cache,
        StoreOptions::new()
            .journal(keep_everything_opts().lock_wait_ms(5_000))
            .cache_schema(COUNTER_SCHEMA),
    )
    .unwrap_or_else(|e| panic!("reopen the store: {e}"));
    let status = store.status().unwrap();
    if status.cache_applied_lsn != Some(head) {
        failures.push(format!(
            "cache applied LSN {:?}, journal head {head}",
            status.cache_applied_lsn
        ));
    }
    let (ic, counters, logged) = store
        .read(|c| Ok((integrity(c), counters_of(c), logged_seqs(c))))
        .unwrap();
    if ic != "ok" {
        failures.push(format!("cache integrity_check: {ic}"));
    }
    let dups = duplicates(&logged);
    t.duplicated += dups;
    if counters != fold(ledger.iter()) || logged != seqs_of(ledger) {
        failures.push(format!(
            "cache is not the fold of the journal (LSNs 1..={}): counters {counters:?}, \
             expected {:?}; {} log rows, {dups} applied twice",
            ledger.len(),
            fold(ledger.iter()),
            logged.len()
        ));
    }
    store.close().unwrap();
    failures
}

/// Runs `cycles` kill cycles (numbered from `first_cycle`) on a fresh pipeline, then a final
/// sync, and checks everything after each. Returns the journal's final head.
fn run_round(first_cycle: u64, cycles: u64, rng: &mut Rng, seed: u64, t: &mut Totals) -> Lsn {
    let dir = tempfile::tempdir().unwrap();
    let (jdir, cache, target) = files_on_share(dir.path());
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    create_target(&target, COUNTER_SCHEMA);

    let mut ledger: Vec<Bump> = Vec::new();
    let mut last_w = 0;
    for cycle in first_cycle..first_cycle + cycles {
        let kill_at = if rng.one_in(10) {
            KillAt::Spawned(Duration::from_millis(rng.range(0, 25)))
        } else {
            KillAt::Applied(rng.urange(0, 150), Duration::from_millis(rng.range(0, 60)))
        };
        let batch = [1, 5, 20, 100][rng.urange(0, 4)];
        let report = run_child(dir.path(), cycle, batch, kill_at);
        t.cycles += 1;
        t.reported += report.applied.len() as u64;
        t.commits += report.commits;
        t.before_ready += u64::from(!report.ready);
        let failures = check_cycle(dir.path(), &mut ledger, &report.applied, t, &mut last_w);
        if !failures.is_empty() {
            summary(&format!(
                "pipeline kill9: FAILED at cycle {cycle} ({kill_at:?}, batch {batch}, seed \
                 {seed}): crash cycles {}, acked entries {}, lost {}, duplicated {}",
                t.cycles, t.reported, t.lost, t.duplicated
            ));
            panic!(
                "cycle {cycle} ({kill_at:?}, batch {batch}; {SEED_ENV}={seed} to replay):\n{}",
                failures.join("\n")
            );
        }
    }

    // A final sync applies everything, exactly once.
    let store: Store<Bump> = Store::open(
        &jdir,
        &cache,
        StoreOptions::new()
            .journal(keep_everything_opts())
            .cache_schema(COUNTER_SCHEMA)
            .target(&target, TargetOptions::new())
            .replay(ReplayOptions::new().batch_entries_max(5000))
            .background_sync(false),
    )
    .unwrap();
    let rep = store.sync_now();
    assert!(rep.error.is_none(), "final sync: {rep}");
    let st = store.status().unwrap();
    let head = st.head_lsn;
    assert_eq!(head, ledger.len() as Lsn, "final head");
    assert_eq!(st.acked_lsn, head, "final acknowledgement");
    assert_eq!(st.pending_entries, 0);
    let cache_counters = store.read(|c| Ok(counters_of(c))).unwrap();
    store.close().unwrap();
    let tc = open_target(&target);
    assert_eq!(watermark_of(&tc, st.journal_id), head, "final watermark");
    assert_eq!(integrity(&tc), "ok");
    let logged = logged_seqs(&tc);
    t.duplicated += duplicates(&logged);
    assert_eq!(
        counters_of(&tc),
        fold(ledger.iter()),
        "final target counters"
    );
    assert_eq!(cache_counters, fold(ledger.iter()), "final cache counters");
    assert_eq!(
        logged,
        seqs_of(&ledger),
        "final target log: every entry once"
    );
    let increments: i64 = counters_of(&tc).values().sum();
    assert_eq!(increments as Lsn, head, "final increments");
    t.applied += increments as u64;
    head
}

/// Cycles per pipeline: the checks read the whole history after every kill, so a soak runs
/// rounds of fresh pipelines to stay linear.
const ROUND_CYCLES: u64 = 200;

#[test]
fn pipeline_kill9_cycles() {
    let _load = alongside();
    let cycles: u64 = count_from_env(SOAK_ENV, CYCLES_DEFAULT);
    with_timeout(300 + cycles * 3, move || {
        let (mut rng, seed) = Rng::from_env_or_time(SEED_ENV);
        let mut t = Totals::default();
        let mut entries = 0;
        let mut rounds = 0;
        while t.cycles < cycles {
            let n = ROUND_CYCLES.min(cycles - t.cycles);
            entries += run_round(t.cycles, n, &mut rng, seed, &mut t);
            rounds += 1;
        }
        summary(&format!(
            "pipeline kill9: crash cycles {}, acked entries {} (reported after apply returned), \
             journal entries {entries}, applied on the target {}, lost {}, duplicated {}; kills \
             inside a target transaction {}, after a commit before its acknowledgement {}, before \
             the store was ready {}; cycles with target progress {}, commits seen {}, torn tails \
             cut {}; {rounds} pipeline(s); seed {seed}",
            t.cycles,
            t.reported,
            t.applied,
            t.lost,
            t.duplicated,
            t.mid_transaction,
            t.ack_behind,
            t.before_ready,
            t.progressed,
            t.commits,
            t.cuts,
        ));
        assert_eq!((t.lost, t.duplicated), (0, 0));
        assert_eq!(t.applied, entries, "every journal entry applied once");
        if cycles >= 50 {
            assert!(
                t.mid_transaction > 0,
                "no kill landed inside a target transaction: the test did not test that"
            );
            assert!(t.progressed > 0, "the target never progressed");
            assert!(t.reported > 0, "no entry was ever reported");
        }
    });
}
