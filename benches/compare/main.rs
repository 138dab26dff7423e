//! One-run comparison of syncjournal against the machine's raw limits and the naive
//! approaches it replaces, with every project target checked as a SAME-RUN ratio.
//!
//! The references follow the machine baseline kept in this repository,
//! `benches/results/machine-baseline.md` (its cases A1, A3, B, C). The machine drifts 10–20%
//! between runs (and the shared disk's flush latency from one second to the next), so both
//! sides of every claim are measured in the same repetition ("rep"), interleaved, and a
//! claim's ratio is the MEDIAN of the per-rep (paired) ratios. Rates are medians over reps,
//! printed with `[min..max]`.
//!
//! Groups (each case name can be given to `--only`, as can a group name or a name prefix):
//!
//! * `durable` — every case that waits for the disk, run in slices of ~0.1 s in rotating order
//!   inside each rep (fresh files every rep), so disk latency swings hit every side alike:
//!   raw `fdatasync` of 4 KiB (append / overwrite), raw mmap + CRC with `msync` per record and
//!   per 1000 records (128 B and 1 KiB payloads, 64 MiB `fallocate`d regions rotated like
//!   journal segments, rotation timed on both sides), the outbox (`sync_tracking` row per
//!   mutation, WAL, synchronous FULL / NORMAL, 1 thread; FULL with 8 threads, own connection
//!   each, busy_timeout), the field application's real approach (the cache row *and* its
//!   `sync_tracking` row in one transaction, WAL, synchronous FULL, 1 and 8 threads: what a
//!   change set through the store replaces), okaywal (128 B entry, commit each, 1 and 8
//!   threads), syncjournal `append` with `PersistMode::Sync` (1 and 8 threads), `append_batch`
//!   of 1000 × 128 B, and `Store::apply` of one ~128 B certificate upsert per change set (1 and
//!   8 threads).
//! * `nosync` — CPU-bound cases: raw mmap + CRC copy loop never synced, cold (first touch of a
//!   freshly `fallocate`d region, as a journal segment always is) and warm (second pass over
//!   mapped pages); syncjournal `Buffered` (1 and 8 threads, one 256 MiB segment: no rotation,
//!   like the raw loop) and `Batched` every 5 ms (1 and 8 threads, default segments).
//! * `replay` — the same upsert change sets into a fresh SQLite target (journal_mode=TRUNCATE,
//!   synchronous=FULL, 10,000 rows preloaded, ids spread over 0..20,000): the `Replayer`
//!   (batches of 1000), a raw loop of the same rows (prepared upsert, 1000 per transaction,
//!   watermark row updated in the same transaction), and a naive replay committing one
//!   entry (plus its watermark) per transaction.
//! * `scan` — `syncjournal::inspect::inspect` and `Journal::open` of a prepared journal of
//!   128 B records, page cache warm, in GB/s of valid frame bytes.
//! * `pull` — the change log's cost at replay (`sj_replay_log_on` against
//!   `sj_replay_log_off`), and a store's pull of the log into a fresh cache against a raw loop
//!   reading the same records and upserting them (`sj_pull_page1000` against
//!   `raw_pull_upsert_page1000`).
//! * `conflicts` — conflict detection's cost at replay without conflicts: the `replay` group's
//!   upserts, stamped as a store stamps them, replayed with detection on and off
//!   (`sj_replay_detect_on|off`, and `pg_sj_replay_detect_on|off` on a server of its own).
//! * `pull_backlog` — a store pulling a change log of `--backlog N` records (default
//!   5,000,000) into a fresh cache in a child process, its peak RSS against a 10× smaller log.
//! * `backlog` — the replay of a large backlog (`--backlog N`, default 5,000,000 change sets)
//!   in a CHILD process (this binary re-executed with a hidden flag); its peak RSS is read
//!   from `/proc/<pid>/status` (`VmHWM`) once it has finished, and compared with a 10×
//!   smaller backlog to show that it is flat. The child reports `VmHWM` after `Journal::open`
//!   and resets it (`/proc/self/clear_refs` = 5), so the open and the replay phases are shown
//!   apart; the claim is on the whole child's peak.
//! * `pg_replay` — the `replay` group's change sets into a fresh PostgreSQL database on a
//!   server this binary starts (a throwaway cluster, the tests' helper; the group is skipped
//!   with a printed reason where the server binaries are missing): the `Replayer` (batches of
//!   1000), a raw loop of the same `postgres` crate (one multi-row `INSERT … VALUES (…),(…)
//!   ON CONFLICT DO UPDATE` per batch of 1000 plus the watermark update, a transaction per
//!   batch), and a naive replay committing one entry (plus its watermark) per transaction.
//! * `pg_replay_fsync` — the same three against a server with `fsync=on` (as in production):
//!   the test cluster's `fsync=off` makes a commit nearly free, which flatters the naive case.
//! * `pg_backlog` — the `backlog` group's measurement with a PostgreSQL database as the
//!   target (`--pg-backlog N` or env `SYNCJOURNAL_BENCH_PG_BACKLOG`, default 5,000,000); the
//!   peak RSS is the replaying child's, not the server's.
//!
//! The table: one line per case (value = median rate over reps, `[min..max]`, `cpu` = CPU
//! cores the process kept busy, which tells CPU-bound cases from flush-bound ones), then one
//! continuation line per further reference. `ceiling_8t_x_msync_each` is derived: 8 × the raw
//! msync-per-record rate of the same rep, the most any group commit can reach with 8
//! closed-loop threads (at most 8 records per flush). The header prints the machine facts and
//! the source revision built (src/ may hold uncommitted changes).
//!
//! Usage: `cargo bench --bench compare -- [--quick] [--only a,b,c] [--dir PATH] [--backlog N]
//! [--pg-backlog N] [--reps N] [--secs S] [--scan-mib M] [--replay-entries N]`. The exit code is 0 whatever
//! the outcome: this is a measurement, not a test.
//!
//! Layout: `harness` (command line, tallies, threads, regions), `workload` (the certificate
//! rows and the target database), `pg_workload` (the server and its databases), `cases/` (one
//! file per family and per group), `report` (results, table, verdicts), `machine` (the facts
//! in the header); `cluster` is the tests' throwaway PostgreSQL cluster, shared, not copied.

mod cases;
// The tests' helper: the bench uses part of it.
#[allow(dead_code)]
#[path = "../../tests/support/postgres.rs"]
mod cluster;
// What the cluster helper uses of the tests' process helpers.
mod harness;
mod machine;
mod pg_workload;
#[allow(dead_code)]
#[path = "../../tests/support/process.rs"]
mod process;
mod report;
mod workload;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cases::backlog::{CHILD_FLAG, backlog_child, group_backlog, group_pg_backlog};
use crate::cases::conflicts::group_conflicts;
use crate::cases::durable::group_durable;
use crate::cases::nosync::group_nosync;
use crate::cases::pg_replay::{group_pg_replay, group_pg_replay_fsync};
use crate::cases::pull::{PULL_CHILD_FLAG, group_pull, group_pull_backlog, pull_child};
use crate::cases::replay::group_replay;
use crate::cases::scan::group_scan;
use crate::harness::Config;
use crate::machine::print_facts;
use crate::report::{Results, print_report};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(CHILD_FLAG) {
        backlog_child(Path::new(&args[1]), &args[2]);
        return;
    }
    if args.first().map(String::as_str) == Some(PULL_CHILD_FLAG) {
        pull_child(Path::new(&args[1]), &args[2]);
        return;
    }
    let cfg = Config::from_args(&args);
    let began = Instant::now();
    std::fs::create_dir_all(&cfg.dir).expect("create bench dir");
    let tmp = tempfile::Builder::new()
        .prefix("syncjournal-compare-")
        .tempdir_in(&cfg.dir)
        .expect("tempdir");
    let dir = tmp.path();
    print_facts(&cfg, dir);
    let mut res = Results::default();
    type Group = fn(&Config, &Path, &mut Results);
    let groups: [(&str, Group); 11] = [
        ("durable", group_durable),
        ("nosync", group_nosync),
        ("replay", group_replay),
        ("pull", group_pull),
        ("conflicts", group_conflicts),
        ("scan", group_scan),
        ("backlog", group_backlog),
        ("pull_backlog", group_pull_backlog),
        ("pg_replay", group_pg_replay),
        ("pg_replay_fsync", group_pg_replay_fsync),
        ("pg_backlog", group_pg_backlog),
    ];
    for (name, g) in groups {
        let t = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g(&cfg, dir, &mut res)));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            res.note(format!("group {name} FAILED to run: {msg}"));
            println!("[{name}] FAILED: {msg}");
        } else if t.elapsed() > Duration::from_millis(50) {
            println!("[{name}] {:.1} s", t.elapsed().as_secs_f64());
        }
    }
    print_report(&res);
    println!();
    println!("total_wall_s={:.1}", began.elapsed().as_secs_f64());
    drop(tmp);
    std::process::exit(0);
}
