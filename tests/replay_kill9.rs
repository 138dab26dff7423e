//! Exactly once under `kill -9` of the replaying process. The parent prepares a journal of
//! NON-IDEMPOTENT `Increment` events and a target; each cycle it starts a child (this test
//! binary re-executed to run only the ignored test `replay_kill9_child`) that opens the
//! journal and replays it with big batches to a slow target (every statement sleeps a little,
//! so that most of the time is spent inside target transactions), and kills it with SIGKILL at
//! a random moment. After each kill the parent checks the target through a fresh connection:
//! `PRAGMA integrity_check` is ok, and each counter equals the number of increments among the
//! LSNs up to the target's watermark — exactly the fold of the acknowledged prefix, never a
//! partial batch, never a duplicate — and the journal's acknowledgement is never ahead of the
//! watermark. At the end a final sync completes and every counter equals all its increments.

mod replay_common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use replay_common::{
    COUNTER_SCHEMA, Increment, Ledger, Rng, counters_of, create_target, integrity, log_stats,
    open_target, target_watermark,
};
use syncjournal::replay::TargetFaults;
use syncjournal::{Journal, JournalOptions, Lsn, ReplayOptions, Replayer, TargetOptions};

const ENV_DIR: &str = "SYNCJOURNAL_REPLAY_KILL9_DIR";
const CHILD_TEST: &str = "replay_kill9_child";
const CYCLES: usize = 40;
/// Entries per target transaction in the child.
const BATCH: usize = 250;
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
/// Hang guard for the child's start.
const CHILD_WAIT: Duration = Duration::from_secs(30);

fn journal_opts() -> JournalOptions {
    // Small segments: acknowledgements retire segments while kills land.
    JournalOptions::new().segment_bytes_max(256 << 10)
}

fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("journal"), dir.join("share").join("target.db"))
}

/// The child's target: slow statements, and a line on stdout after each commit.
struct SlowTarget;

impl TargetFaults for SlowTarget {
    fn before_statement(&self, _index: usize, _label: &str) -> rusqlite::Result<()> {
        std::thread::sleep(STATEMENT_SLEEP);
        Ok(())
    }

    fn after_commit(&self) -> rusqlite::Result<()> {
        println!("COMMITTED");
        // Widen the window between the commit and the local acknowledgement, so that some
        // kills land there too.
        std::thread::sleep(AFTER_COMMIT_SLEEP);
        Ok(())
    }
}

/// The child: replays until killed. Does nothing unless started by `replay_kill9_cycles`.
#[test]
#[ignore = "child process of replay_kill9_cycles"]
fn replay_kill9_child() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let (jdir, target) = paths(Path::new(&dir));
    let journal = Arc::new(Journal::open(jdir, journal_opts()).expect("child: open journal"));
    let mut replayer: Replayer<Increment> = Replayer::new(
        journal,
        target,
        TargetOptions::new()
            .busy_timeout_ms(5000)
            .faults(Arc::new(SlowTarget)),
        ReplayOptions::new()
            .batch_entries_max(BATCH)
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
    errors: Vec<String>,
    caught_up: bool,
}

fn run_and_kill(dir: &Path, rng: &mut Rng) -> ChildOutput {
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            CHILD_TEST,
            "--nocapture",
            "--ignored",
            "--test-threads",
            "1",
        ])
        .env(ENV_DIR, dir)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Wait for READY (hang guard only). The test harness may print "test <name> ... " in
    // front of the child's first line.
    let deadline = std::time::Instant::now() + CHILD_WAIT;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(l) if l.ends_with("READY") => break,
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("hang guard: the child did not start within {CHILD_WAIT:?}");
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                panic!("the child exited before it was ready: {status}");
            }
        }
    }
    std::thread::sleep(Duration::from_millis(rng.range(0, KILL_WITHIN_MS)));
    child.kill().expect("SIGKILL the child");
    let status = child.wait().unwrap();
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "the child must die of SIGKILL, not exit on its own: {status}"
        );
    }
    reader.join().unwrap();
    let mut out = ChildOutput::default();
    for line in rx.try_iter() {
        if line.ends_with("COMMITTED") {
            out.commits += 1;
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
    let (mut rng, seed) = Rng::from_env_or_time("REPLAY_TEST_SEED");
    eprintln!("REPLAY_TEST_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    let (jdir, target) = paths(dir.path());
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    create_target(&target, COUNTER_SCHEMA);
    let hot_journal = PathBuf::from(format!("{}-journal", target.display()));

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
        let out = run_and_kill(dir.path(), &mut rng);
        batches += out.commits;
        for e in &out.errors {
            failures.push(format!("cycle {cycle}: the child's sync failed: {e}"));
        }

        // A non-empty rollback journal: the kill landed inside a target transaction.
        if std::fs::metadata(&hot_journal).is_ok_and(|m| m.len() > 0) {
            mid_transaction += 1;
        }
        let c = open_target(&target);
        let ic = integrity(&c);
        if ic != "ok" {
            failures.push(format!("cycle {cycle}: integrity_check: {ic}"));
        }
        drop(c);
        let w = target_watermark(&target, journal_id);
        let c = open_target(&target);
        let (d_lost, d_dup) = diff(&counters_of(&c), &ledger.fold(w));
        let (rows, dup_seqs) = log_stats(&c);
        drop(c);
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
    let mut r: Replayer<Increment> = Replayer::new(
        Arc::clone(&journal),
        &target,
        TargetOptions::new(),
        ReplayOptions::new().batch_entries_max(5000),
    );
    let report = r.sync_now();
    let w = target_watermark(&target, journal_id);
    let c = open_target(&target);
    let (d_lost, d_dup) = diff(&counters_of(&c), &ledger.fold(ledger.head()));
    let (rows, dup_seqs) = log_stats(&c);
    lost += d_lost;
    duplicated += d_dup + dup_seqs.len() as i64;
    eprintln!(
        "replay kill9: cycles {CYCLES}, batches committed {batches} (at least), kills inside a transaction {mid_transaction}, kills between commit and acknowledgement {ack_behind}, cycles with progress {progressed}, entries {}, lost {lost}, duplicated {duplicated}",
        ledger.head()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(report.error.is_none(), "final sync: {report}");
    assert_eq!(w, ledger.head(), "final watermark");
    assert_eq!(journal.state().acked_lsn, w, "final acknowledgement");
    assert_eq!(integrity(&c), "ok");
    assert_eq!(rows, ledger.head() as i64);
    assert_eq!((lost, duplicated), (0, 0));
    assert!(
        mid_transaction > 0,
        "no kill landed inside a target transaction: the test did not test anything"
    );
    assert!(progressed > 0, "the child never committed a batch");
}
