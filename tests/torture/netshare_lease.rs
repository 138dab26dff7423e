//! The writer lease on a real share mounted twice: two machines whose mounts share no locks
//! (`sync-protocol.md` §1). Scenarios of `netshare.rs`'s run, on its share:
//!
//! * `two-mounts`: two machines replay journals of non-idempotent bumps into one file, each
//!   through its own mount. Without the lease the same run damages the file or loses writes
//!   (shown); with it, every bump lands exactly once and `integrity_check` is ok on the
//!   server's copy;
//! * `holder-stopped`: the holder (a child process) is stopped with SIGSTOP between two of its
//!   transactions, past its lease; the other machine takes over and replays; the holder, when
//!   continued, touches nothing under the lease it lost, takes it anew on a reopened connection
//!   (its mount may have cached pages from before the other machine's writes), and finishes;
//! * `holder-killed`: the holder is killed with SIGKILL at a random moment (inside a
//!   transaction or between two); the other machine takes over (a hot rollback journal is
//!   rolled back), and a new process finishes the dead one's journal: exactly once, intact;
//! * `holder-cut`: the holder's link alone is cut (the other machine's mount keeps working);
//!   its lease expires, the other machine takes over, and the holder's link is healed while
//!   the other machine still holds the lease: the healed holder writes nothing until it has
//!   taken the lease anew, then finishes: exactly once, intact.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use syncjournal::replay::TargetFaults;
use syncjournal::{ReplayOptions, Replayer, TargetOptions};

use crate::support::events::{Bump, COUNTER_SCHEMA};
use crate::support::netshare::{Fault, Share};
use crate::support::process::{ChildLines, child_test_command, test_path};
use crate::support::rng::Rng;
use crate::support::targets::{TargetKind, TestTarget};
use crate::support::writers::{journal_of, two_writers};

/// Entries per machine.
const ENTRIES: i64 = 240;
const ENV_DIR: &str = "SJNS_LEASE_CHILD";
const CHILD_TEST: &str = "netshare_lease_child";
/// The lease of these scenarios: short, so that a takeover takes seconds.
const LEASE_MS: u64 = 2_000;

fn lease_opts() -> TargetOptions {
    TargetOptions::new()
        .lease_ms(LEASE_MS)
        .lease_wait_ms(60_000)
}

/// A fresh target on the share: (its path through mount 1, through mount 2, the server's view).
fn fresh_target(share: &Share, name: &str) -> (PathBuf, PathBuf, TestTarget) {
    let through_1 = TestTarget::create(TargetKind::Sqlite, &share.mnt, name, COUNTER_SCHEMA);
    drop(through_1);
    (
        share.mnt.join(name),
        share.mnt2.join(name),
        TestTarget::named(TargetKind::Sqlite, &share.export, name),
    )
}

/// Without the lease: damage or lost writes (within a few rounds); with it: intact.
pub fn two_mounts(share: &Arc<Share>) -> String {
    let mut without = Vec::new();
    let mut damaged = false;
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, server) = fresh_target(share, &format!("nolease-{round}.db"));
        let o = two_writers(
            dir.path(),
            [a, b],
            &server,
            lease_opts().lease_ms(0),
            ENTRIES,
            10,
        );
        without.push(o.describe());
        if !o.intact() {
            damaged = true;
            break;
        }
    }
    assert!(
        damaged,
        "two machines on two mounts without the lease left the file intact every time: this shows nothing ({without:?})"
    );
    let dir = tempfile::tempdir().unwrap();
    let (a, b, server) = fresh_target(share, "lease.db");
    let t = Instant::now();
    let o = two_writers(dir.path(), [a, b], &server, lease_opts(), ENTRIES, 10);
    assert!(o.intact(), "with the lease: {}", o.describe());
    format!(
        "netshare two-mounts: without the lease, {} round(s): {}; with the lease: {} in {:.1} s",
        without.len(),
        without.last().unwrap(),
        o.describe(),
        t.elapsed().as_secs_f64()
    )
}

/// The child's hook: says when a batch begins and waits there a moment (the lease held, no
/// statement in flight), so that the parent can stop it between two transactions. At the
/// second batch it waits until it has been stopped and continued (a gap in its own clock),
/// then a little longer, so that its lease's renewal thread sees the lease gone first: the
/// child then takes the lease anew without an error, the case a kept connection got wrong.
struct Beginnings {
    n: AtomicUsize,
    /// Wait at the second batch until stopped and continued (the `holder-stopped` scenario).
    wait_for_stop: bool,
}

impl TargetFaults for Beginnings {
    fn before_statement(&self, index: usize, label: &str) -> rusqlite::Result<()> {
        if index == 0 && label == "BEGIN" {
            let n = self.n.fetch_add(1, Ordering::Relaxed);
            println!("sjns-begin {n}");
            if n == 1 && self.wait_for_stop {
                let start = Instant::now();
                let mut tick = Instant::now();
                while start.elapsed() < Duration::from_secs(30) {
                    std::thread::sleep(Duration::from_millis(50));
                    let gap = tick.elapsed();
                    tick = Instant::now();
                    if gap > Duration::from_secs(1) {
                        std::thread::sleep(Duration::from_millis(2 * LEASE_MS));
                        break;
                    }
                }
            } else {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

/// The child: replays the journal in `$SJNS_LEASE_CHILD/journal` to the target path in
/// `$SJNS_LEASE_CHILD/target` until it is all applied, printing each sync's outcome.
#[test]
#[ignore = "child process of replay_to_a_real_network_share"]
fn netshare_lease_child() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let target = PathBuf::from(std::fs::read_to_string(dir.join("target")).unwrap());
    let j = Arc::new(
        syncjournal::Journal::open(dir.join("journal"), syncjournal::JournalOptions::new())
            .unwrap(),
    );
    let mut r: Replayer<Bump> = Replayer::new(
        j,
        target,
        lease_opts().faults(Arc::new(Beginnings {
            n: Default::default(),
            wait_for_stop: dir.join("wait-for-stop").exists(),
        })),
        ReplayOptions::new()
            .batch_entries_max(10)
            .retry_attempts_max(0),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rep = r.sync_now();
        match rep.error {
            None => {
                println!("sjns-done {}", rep.applied);
                return;
            }
            Some(e) => println!("sjns-error {e}"),
        }
        assert!(Instant::now() < deadline, "the child never finished");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_child(dir: &Path) -> ChildLines {
    let name = test_path(module_path!(), CHILD_TEST);
    ChildLines::spawn_logged(
        child_test_command(&name, ENV_DIR, dir),
        &dir.join("child.stderr"),
    )
}

fn signal(child: &ChildLines, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// Machine 0 (this process, mount 1) and machine 1 (a child, mount 2) on a fresh target;
/// `disturb` does to the child what the scenario does, while machine 0 replays (with the
/// hooks `faults`, if given).
fn holder_scenario(
    share: &Share,
    name: &str,
    stop: bool,
    faults: Option<Arc<dyn TargetFaults>>,
    disturb: &mut dyn FnMut(&mut ChildLines),
) -> (String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, server) = fresh_target(share, name);
    let j0 = journal_of(&dir.path().join("j0"), 0, ENTRIES);
    let child_dir = dir.path().join("child");
    std::fs::create_dir_all(&child_dir).unwrap();
    drop(journal_of(&child_dir.join("journal"), 1_000_000, ENTRIES));
    std::fs::write(child_dir.join("target"), b.to_string_lossy().as_bytes()).unwrap();
    if stop {
        std::fs::write(child_dir.join("wait-for-stop"), b"").unwrap();
    }
    let mut child = start_child(&child_dir);
    // The child holds the lease once it begins its second batch.
    child
        .wait_for("sjns-begin 1", Duration::from_secs(60), &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    disturb(&mut child);
    // Machine 0 replays everything: it must wait out the child's lease first.
    let t = Instant::now();
    let opts = match faults {
        Some(f) => lease_opts().faults(f),
        None => lease_opts(),
    };
    let mut r: Replayer<Bump> =
        Replayer::new(j0, a, opts, ReplayOptions::new().batch_entries_max(10));
    let rep = r.sync_now();
    assert!(rep.error.is_none(), "machine 0: {rep}");
    let took_over = t.elapsed();
    (
        format!(
            "machine 0 took over and replayed in {:.1} s",
            took_over.as_secs_f64()
        ),
        finish(child, &child_dir, &server),
    )
}

/// Lets the child (or a new one, if it died) finish, and checks the target.
fn finish(mut child: ChildLines, child_dir: &Path, server: &TestTarget) -> Vec<String> {
    let mut lines = Vec::new();
    let alive = matches!(child.child.try_wait(), Ok(None));
    if !alive {
        lines.extend(child.drain());
        child = start_child(child_dir);
    }
    let done = child.wait_for("sjns-done", Duration::from_secs(120), &mut |l| {
        lines.push(l.to_owned())
    });
    if let Err(e) = done {
        let err = std::fs::read_to_string(child_dir.join("child.stderr")).unwrap_or_default();
        panic!("{e}; child lines {lines:?}; stderr {err}");
    }
    let _ = child.child.wait();
    assert_eq!(server.integrity(), "ok", "the server's copy");
    let (logged, dups) = crate::support::events::target_log_stats(server);
    assert_eq!(
        (logged, dups.len()),
        (2 * ENTRIES, 0),
        "every bump exactly once"
    );
    lines
}

pub fn holder_stopped(share: &Arc<Share>) -> String {
    let (took_over, lines) = holder_scenario(share, "stopped.db", true, None, &mut |child| {
        signal(child, "-STOP");
        // Continue it once machine 0 has certainly taken over (its lease long expired).
        let pid = child.child.id().to_string();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(6 * LEASE_MS));
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid])
                .status();
        });
    });
    // Continued, it touched nothing under the lease it had lost: it took the lease anew (once
    // machine 0 had released it), on a reopened connection, and finished. Before the reopen,
    // its kept connection read pages its mount had cached before machine 0's writes, and
    // the file was damaged ("wrong # of entries in index").
    let errors: Vec<&String> = lines.iter().filter(|l| l.contains("sjns-error")).collect();
    format!(
        "netshare holder-stopped: SIGSTOP past the lease ({LEASE_MS} ms, at least 3000); {took_over}; continued, the child took the lease anew and finished ({} sync errors: {errors:?}); integrity ok, every bump once",
        errors.len()
    )
}

pub fn holder_killed(share: &Arc<Share>) -> String {
    let (mut rng, seed) = Rng::from_env_or_time("SJNS_LEASE_SEED");
    let delay_ms = rng.below(300);
    let (took_over, _) = holder_scenario(share, "killed.db", false, None, &mut |child| {
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill9(&mut |_| {}).unwrap();
    });
    format!(
        "netshare holder-killed: SIGKILL {delay_ms} ms after a batch began (SJNS_LEASE_SEED={seed}); {took_over}; a new process finished the journal; integrity ok, every bump once"
    )
}

/// Machine 0's hook in `holder-cut`: at its fourth batch (it holds the lease it took over from
/// the cut holder) it heals the holder's link, then goes on slowly, so that the healed holder
/// tries to write for a while under machine 0's lease.
struct HealWhileHeld {
    share: Arc<Share>,
    n: AtomicUsize,
}

impl TargetFaults for HealWhileHeld {
    fn before_statement(&self, index: usize, label: &str) -> rusqlite::Result<()> {
        if index == 0 && label == "BEGIN" {
            let n = self.n.fetch_add(1, Ordering::Relaxed);
            if n == 3 {
                self.share.heal().expect("heal the holder's link");
            }
            if n >= 3 {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }
}

pub fn holder_cut(share: &Arc<Share>) -> String {
    let heal = Arc::new(HealWhileHeld {
        share: Arc::clone(share),
        n: AtomicUsize::new(0),
    });
    let (took_over, lines) = holder_scenario(
        share,
        "cut.db",
        false,
        Some(heal.clone() as Arc<dyn TargetFaults>),
        &mut |_| {
            share
                .inject(Fault::CutMount2)
                .expect("cut the holder's link")
        },
    );
    assert!(
        heal.n.load(Ordering::Relaxed) > 3,
        "machine 0 replayed in fewer than four batches: the holder's link was never healed under its lease"
    );
    // The holder noticed: its statements failed on the cut link, or its lease ran out.
    let errors: Vec<&String> = lines.iter().filter(|l| l.contains("sjns-error")).collect();
    assert!(
        !errors.is_empty(),
        "the cut holder reported no error: {lines:?}"
    );
    format!(
        "netshare holder-cut: the holder's link alone cut ({LEASE_MS} ms lease); {took_over}, healing the holder's link at its fourth batch; the healed holder wrote nothing under the lease it lost ({} sync errors, first: {:?}), took it anew and finished; integrity ok, every bump once",
        errors.len(),
        errors.first()
    )
}

/// What the lease costs per batch at a 2 ms round trip (1 ms each way through the relay):
/// the same journal replayed through one mount with and without the lease, alternating,
/// three times each. In the steady state: the time between two batches' ends within a sync
/// (the first batch, which takes the lease, and the release after the last are left out),
/// medians over every batch; and per whole sync. Printed, not asserted (a time is not a test
/// result); the figure goes to the closing note and `sync-protocol.md` §1.6. A round trip is
/// measured too: one uncached read (`O_DIRECT`) of a small file on the mount, which is one SFTP
/// request.
pub fn lease_cost(share: &Arc<Share>) -> String {
    const ENTRIES: i64 = 400;
    const BATCH: usize = 10;
    const REPS: usize = 3;
    let batches = ENTRIES as u32 / BATCH as u32;
    share.set_delay_ms(1).expect("set the latency");
    std::thread::sleep(Duration::from_millis(500));
    let round_trip = round_trip(&share.mnt);
    // (per-batch steady-state times, whole syncs), without and with the lease
    let mut runs: [(Vec<Duration>, Vec<Duration>); 2] = Default::default();
    for rep in 0..REPS {
        for lease in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (a, _, server) = fresh_target(share, &format!("cost-{rep}-{lease}.db"));
            let j = journal_of(&dir.path().join("j"), 0, ENTRIES);
            let opts = if lease {
                TargetOptions::new()
            } else {
                TargetOptions::new().lease_ms(0)
            };
            let mut r: Replayer<Bump> =
                Replayer::new(j, a, opts, ReplayOptions::new().batch_entries_max(BATCH));
            let t = Instant::now();
            let mut ends = Vec::new();
            let report = r.sync_now_with(&mut |_| ends.push(Instant::now()));
            let took = t.elapsed();
            assert!(report.error.is_none(), "lease {lease}: {report}");
            assert_eq!(report.applied, ENTRIES as u64, "{report}");
            drop(r);
            assert_eq!(server.integrity(), "ok");
            let run = &mut runs[usize::from(lease)];
            run.0.extend(ends.windows(2).map(|w| w[1] - w[0]));
            run.1.push(took);
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1000.0
    };
    // File-system calls the lease makes, counted: a sync of N batches and one of 2N, so that
    // taking and releasing the lease once per sync cancel out.
    let calls_of = |entries: i64, name: &str| {
        let dir = tempfile::tempdir().unwrap();
        let (a, _, _) = fresh_target(share, name);
        let j = journal_of(&dir.path().join("j"), 0, entries);
        let mut r: Replayer<Bump> = Replayer::new(
            j,
            a,
            TargetOptions::new(),
            ReplayOptions::new().batch_entries_max(BATCH),
        );
        let before = syncjournal::target::lease_file_calls();
        let t = Instant::now();
        let report = r.sync_now();
        let took = t.elapsed();
        let after = syncjournal::target::lease_file_calls();
        assert!(report.error.is_none(), "{report}");
        (after.0 - before.0, after.1 - before.1, took)
    };
    let (short, _, _) = calls_of(ENTRIES, "calls-short.db");
    let (long, renewal, long_took) = calls_of(2 * ENTRIES, "calls-long.db");
    let calls_per_batch = (long as f64 - short as f64) / f64::from(batches);
    let [mut without, mut with] = runs;
    let (batch_wo, batch_w) = (median(&mut without.0), median(&mut with.0));
    let per_sync = (median(&mut with.1) - median(&mut without.1)) / f64::from(batches);
    let rt_ms = round_trip.as_secs_f64() * 1000.0;
    format!(
        "netshare lease-cost: 2 ms round trip (one uncached read: {rt_ms:.2} ms); batches of {BATCH} entries, medians over {REPS} syncs of {batches} batches each: steady state {batch_wo:.1} ms per batch without the lease, {batch_w:.1} ms with it: the lease adds {:.1} ms = {:.2} round trips per batch; per whole sync (taking and releasing the lease included) it adds {per_sync:.1} ms = {:.2} round trips per batch. Counted: {calls_per_batch:.2} file-system calls on the share per batch on the replaying thread ({short} in a sync of {batches} batches, {long} in one of {}), and {renewal} on the renewal thread in {:.1} s (renewals every third of the lease, off the batch's path)",
        batch_w - batch_wo,
        (batch_w - batch_wo) / rt_ms,
        per_sync / rt_ms,
        2 * batches,
        long_took.as_secs_f64()
    )
}

/// One round trip to the share: the median of 20 uncached reads (`O_DIRECT`: one SFTP read
/// each) of a small file.
fn round_trip(dir: &Path) -> Duration {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let path = dir.join("round-trip-probe");
    std::fs::write(&path, [7u8; 512]).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(&path)
        .unwrap();
    let mut buf = [0u8; 512];
    let mut times: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            f.read_at(&mut buf, 0).unwrap();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}
