//! Exactly once under `kill -9` of the replaying process. The parent prepares a journal of
//! NON-IDEMPOTENT `Bump` events and a target; each cycle it starts a child (this test
//! binary re-executed to run only the ignored test `replay_kill9_child`) that opens the
//! journal and replays it with big batches to a slow target (every statement sleeps a little,
//! so that most of the time is spent inside target transactions), and kills it with SIGKILL at
//! a random moment. After each kill the parent checks the target through a fresh connection:
//! `PRAGMA integrity_check` is ok, and each counter equals the number of increments among the
//! LSNs up to the target's watermark — exactly the fold of the acknowledged prefix, never a
//! partial batch, never a duplicate — and the journal's acknowledgement is never ahead of the
//! watermark. At the end a final sync completes and every counter equals all its increments.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use crate::support::events::{Bump, COUNTER_SCHEMA, Ledger, target_counters, target_log_stats};
use crate::support::faults::SlowTarget;
use crate::support::process::{CHILD_WAIT, ChildLines, alongside, child_test_command, test_path};
use crate::support::rng::Rng;
use crate::support::targets::{TargetKind, TestTarget};
use syncjournal::{Journal, JournalOptions, Lsn, ReplayOptions, Replayer};

const ENV_DIR: &str = "SYNCJOURNAL_REPLAY_KILL9_DIR";
const ENV_KIND: &str = "SYNCJOURNAL_REPLAY_KILL9_TARGET_KIND";
const CHILD_TEST: &str = "replay_kill9_child";
const CYCLES: usize = 200;
/// Entries per target transaction in the child, by kind: a transaction takes some 150 ms on
/// either (a PostgreSQL entry costs a few round trips through the proxy), so that kills land
/// before, inside and after commits alike.
fn batch_entries(kind: TargetKind) -> usize {
    match kind {
        TargetKind::Sqlite => 250,
        #[cfg(feature = "postgres")]
        TargetKind::Postgres => 60,
    }
}
/// Each statement of the child's target transactions sleeps this long (a slow share).
const STATEMENT_SLEEP: Duration = Duration::from_micros(150);
/// The child sleeps this long between a commit and its acknowledgement.
const AFTER_COMMIT_SLEEP: Duration = Duration::from_millis(25);
/// Kills land this long (at most) after the child is ready.
const KILL_WITHIN_MS: u64 = 450;
/// The journal is topped up with this many increments when fewer than `TOP_UP_BELOW` are
/// pending, so that every cycle has work to be killed in.
const TOP_UP: u64 = 4000;
const TOP_UP_BELOW: u64 = 2000;

fn journal_opts() -> JournalOptions {
    // Small segments: acknowledgements retire segments while kills land. The other kill -9
    // suites of this binary spawn children concurrently: a child forked while this journal is
    // open inherits its lock until it execs. Wait that out.
    JournalOptions::new()
        .segment_bytes_max(256 << 10)
        .lock_wait_ms(5_000)
}

/// The journal and the target (of `kind`) of the test directory `dir`.
fn paths(dir: &Path, kind: TargetKind) -> (PathBuf, TestTarget) {
    (
        dir.join("journal"),
        TestTarget::named(kind, &dir.join("share"), "target.db"),
    )
}

/// The child: replays until killed. Does nothing unless started by `replay_kill9_cycles`.
#[test]
#[ignore = "child process of replay_kill9_cycles"]
fn replay_kill9_child() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let kind = std::env::var(ENV_KIND).expect("target kind");
    let kind = TargetKind::from_name(&kind).expect("a known target kind");
    let (jdir, target) = paths(Path::new(&dir), kind);
    let journal = Arc::new(Journal::open(jdir, journal_opts()).expect("child: open journal"));
    let mut replayer: Replayer<Bump> = Replayer::new(
        journal,
        target.spec(),
        SlowTarget {
            statement_sleep: STATEMENT_SLEEP,
            after_commit_sleep: AFTER_COMMIT_SLEEP,
        }
        .options(target.options()),
        ReplayOptions::new()
            .batch_entries_max(batch_entries(kind))
            .retry_attempts_max(3)
            .retry_delay_ms(5),
    );
    println!("READY");
    loop {
        let report = replayer.sync_now();

        match &report.error {
            Some(e) => {
                println!("ERROR {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            None => {
                println!("CAUGHT_UP");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// What one child said before it was killed.
#[derive(Default)]
struct ChildOutput {
    commits: u64,
    /// The last transaction it began had not committed (it printed `BEGIN` after its last
    /// `COMMITTED`): the kill landed inside a target transaction.
    in_transaction: bool,
    errors: Vec<String>,
    caught_up: bool,
}

fn run_and_kill(dir: &Path, target: &TestTarget, rng: &mut Rng) -> ChildOutput {
    let kind = target.kind();
    let mut cmd = child_test_command(&test_path(module_path!(), CHILD_TEST), ENV_DIR, dir);
    cmd.env(ENV_KIND, kind.name())
        .envs(target.child_env())
        .stderr(Stdio::inherit());
    let mut child = ChildLines::spawn(cmd);
    // Wait for READY (hang guard only). The test harness may print "test <name> ... " in
    // front of the child's first line.
    if let Err(e) = child.wait_for("READY", CHILD_WAIT, &mut |_| {}) {
        panic!("{e}");
    }
    std::thread::sleep(Duration::from_millis(rng.range(0, KILL_WITHIN_MS)));
    let mut rest = Vec::new();
    if let Err(why) = child.kill9(&mut |l| rest.push(l.to_owned())) {
        panic!("the child must die of SIGKILL, not exit on its own: {why}");
    }
    // PostgreSQL: the killed client's backend rolls back once it notices.
    target.wait_for_other_sessions();
    let mut out = ChildOutput::default();
    for line in rest {
        if line.ends_with("COMMITTED") {
            out.commits += 1;
            out.in_transaction = false;
        } else if line.ends_with("BEGIN") {
            out.in_transaction = true;
        } else if line.ends_with("CAUGHT_UP") {
            out.caught_up = true;
        } else if let Some((_, e)) = line.split_once("ERROR ") {
            out.errors.push(e.to_string());
        }
    }
    out
}

/// Differences between the target's counters and the fold of its prefix: `(lost, duplicated)`
/// increments.
fn diff(
    have: &std::collections::BTreeMap<i64, i64>,
    want: &std::collections::BTreeMap<i64, i64>,
) -> (i64, i64) {
    let mut lost = 0;
    let mut dup = 0;
    let ids: std::collections::BTreeSet<&i64> = have.keys().chain(want.keys()).collect();
    for id in ids {
        let h = have.get(id).copied().unwrap_or(0);
        let w = want.get(id).copied().unwrap_or(0);
        if h < w {
            lost += w - h;
        } else {
            dup += h - w;
        }
    }
    (lost, dup)
}

#[test]
fn replay_kill9_cycles() {
    let _load = alongside();
    for kind in TargetKind::all() {
        replay_kill9_cycles_on(kind);
    }
}

fn replay_kill9_cycles_on(kind: TargetKind) {
    let (mut rng, seed) = Rng::from_env_or_time("REPLAY_TEST_SEED");
    eprintln!("REPLAY_TEST_SEED={seed} (target: {kind})");
    let dir = tempfile::tempdir().unwrap();
    let (jdir, target) = paths(dir.path(), kind);
    std::fs::create_dir_all(dir.path().join("share")).unwrap();
    target.create_schema(COUNTER_SCHEMA);

    let mut ledger = Ledger::default();
    let journal_id = {
        let j = Journal::open(&jdir, journal_opts()).unwrap();
        ledger.append_increments_batched(&j, TOP_UP, 500);
        j.id()
    };

    let mut batches = 0u64;
    let mut mid_transaction = 0u64;
    let mut ack_behind = 0u64;
    let mut progressed = 0u64;
    let mut lost = 0i64;
    let mut duplicated = 0i64;
    let mut failures: Vec<String> = Vec::new();
    let mut last_w: Lsn = 0;
    for cycle in 0..CYCLES {
        if ledger.head() - last_w < TOP_UP_BELOW {
            let j = Journal::open(&jdir, journal_opts()).unwrap();
            ledger.append_increments_batched(&j, TOP_UP, 500);
        }
        let out = run_and_kill(dir.path(), &target, &mut rng);
        batches += out.commits;
        for e in &out.errors {
            failures.push(format!("cycle {cycle}: the child's sync failed: {e}"));
        }

        // The kill landed inside a target transaction (SQLite: a non-empty rollback journal;
        // any kind: the child said it began one and did not say it committed).
        if target.interrupted_transaction() || out.in_transaction {
            mid_transaction += 1;
        }
        let ic = target.integrity();
        if ic != "ok" {
            failures.push(format!("cycle {cycle}: integrity_check: {ic}"));
        }
        let w = target.watermark(journal_id);
        let (d_lost, d_dup) = diff(&target_counters(&target), &ledger.fold(w));
        let (rows, dup_seqs) = target_log_stats(&target);
        lost += d_lost;
        duplicated += d_dup;
        if d_lost != 0 || d_dup != 0 || !dup_seqs.is_empty() {
            failures.push(format!(
                "cycle {cycle}: watermark {w}: {d_lost} increments lost, {d_dup} duplicated, sequence numbers applied twice: {:?}",
                &dup_seqs[..dup_seqs.len().min(10)]
            ));
        }
        if rows != w as i64 {
            failures.push(format!(
                "cycle {cycle}: {rows} applications logged for watermark {w} (a partial batch?)"
            ));
        }
        if w < last_w {
            failures.push(format!(
                "cycle {cycle}: the watermark went back from {last_w} to {w}"
            ));
        }
        let st = Journal::open(&jdir, journal_opts()).unwrap().state();
        if st.acked_lsn > w {
            failures.push(format!(
                "cycle {cycle}: acknowledged {} but the target's watermark is {w}: acknowledged without a commit",
                st.acked_lsn
            ));
        }
        if st.acked_lsn < w {
            ack_behind += 1;
        }
        if w > st.durable_lsn {
            failures.push(format!(
                "cycle {cycle}: watermark {w} beyond the journal head {}",
                st.durable_lsn
            ));
        }
        if w > last_w {
            progressed += 1;
        }
        last_w = w;
    }

    // A final sync completes: every increment exactly once.
    let journal = Arc::new(Journal::open(&jdir, journal_opts()).unwrap());
    let mut r: Replayer<Bump> = Replayer::new(
        Arc::clone(&journal),
        target.spec(),
        target.options(),
        ReplayOptions::new().batch_entries_max(5000),
    );
    let report = r.sync_now();
    let w = target.watermark(journal_id);
    let (d_lost, d_dup) = diff(&target_counters(&target), &ledger.fold(ledger.head()));
    let (rows, dup_seqs) = target_log_stats(&target);
    lost += d_lost;
    duplicated += d_dup + dup_seqs.len() as i64;
    eprintln!(
        "replay kill9 ({kind}): cycles {CYCLES}, batches committed {batches} (at least), kills inside a transaction {mid_transaction}, kills between commit and acknowledgement {ack_behind}, cycles with progress {progressed}, entries {}, lost {lost}, duplicated {duplicated}",
        ledger.head()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(report.error.is_none(), "final sync: {report}");
    assert_eq!(w, ledger.head(), "final watermark");
    assert_eq!(journal.state().acked_lsn, w, "final acknowledgement");
    assert_eq!(target.integrity(), "ok");
    assert_eq!(rows, ledger.head() as i64);
    assert_eq!((lost, duplicated), (0, 0));
    assert!(
        mid_transaction > 0,
        "no kill landed inside a target transaction: the test did not test anything"
    );
    assert!(progressed > 0, "the child never committed a batch");
}
