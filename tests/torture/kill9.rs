//! Crash consistency under `kill -9`: a child process (this test binary, re-executed to run
//! only the ignored test `kill9_child`) appends in `PersistMode::Sync` from several threads and
//! reports every LSN on stdout once `append`/`append_batch` has returned. The parent kills it
//! with SIGKILL at a random moment, reopens the journal and checks that every reported record is
//! there with its payload and that LSNs are contiguous from 1. Fifty cycles on the same
//! directory, with 64 KiB segments so that kills land around rotations too.
//!
//! A second scenario has the child also acknowledge records as it goes, so that kills land
//! around `ACK` writes and segment removals: the reopened journal must keep every reported
//! acknowledgement and every reported record that was not acknowledged.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use crate::support::journal::{
    digest, parse_payload, payload, read_from, segment_files, varied_len,
};
use crate::support::process::{
    CHILD_WAIT, ChildLines, alongside, child_test_command, test_path, with_timeout,
};
use crate::support::rng::Rng;
use syncjournal::{Journal, JournalOptions, Lsn, PersistMode};

const ENV_DIR: &str = "SYNCJOURNAL_KILL9_DIR";
const ENV_CYCLE: &str = "SYNCJOURNAL_KILL9_CYCLE";
const ENV_RETIRE: &str = "SYNCJOURNAL_KILL9_RETIRE";
/// With acknowledgements, the child acknowledges up to this many records behind the durable
/// end.
const ACK_LAG: u64 = 150;
const CYCLES: u64 = 50;
const CHILD_THREADS: u32 = 4;
const SEGMENT_BYTES: u64 = 64 << 10;
/// Payload lengths vary between 16 and 16 + SPREAD bytes (about 80 records per segment).
const SPREAD: usize = 1500;

fn opts() -> JournalOptions {
    JournalOptions::new()
        .persist_mode(PersistMode::Sync)
        .segment_bytes_max(SEGMENT_BYTES)
        .retain_acked_ms(0)
}

/// One reported append: what the child promised is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Acked {
    thread: u32,
    seq: u32,
    cycle: u64,
    len: usize,
    digest: u64,
}

/// The child: appends until killed, printing `DURABLE <lsn> <thread> <seq> <len> <digest>`
/// after each append returned (and, with acknowledgements, `ACKED <lsn>` after each `ack`
/// returned). Does nothing unless started by the tests below.
#[test]
#[ignore = "child process of kill9_cycles"]
fn kill9_child() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let cycle: u64 = std::env::var(ENV_CYCLE)
        .expect("cycle number")
        .parse()
        .expect("cycle number");
    let retire = std::env::var_os(ENV_RETIRE).is_some();
    // Both kill tests run in one process and spawn children concurrently: a child forked
    // while the other test's journal is open inherits its lock until it execs. Wait it out.
    let journal = Arc::new(
        Journal::open(PathBuf::from(dir), opts().lock_wait_ms(5_000)).expect("child: open"),
    );
    println!("READY");
    let started = Instant::now();
    let threads: Vec<_> = (0..CHILD_THREADS)
        .map(|t| {
            let journal = Arc::clone(&journal);
            std::thread::spawn(move || {
                let mut rng = Rng::new(cycle * 131 + u64::from(t) + 1);
                let mut seq = 0u32;
                // Safety net only: the parent kills us long before this.
                while started.elapsed() < Duration::from_secs(20) {
                    let n = if t == 0 { rng.range(1, 6) as u32 } else { 1 };
                    let batch: Vec<Vec<u8>> = (seq..seq + n)
                        .map(|s| payload(t, s, cycle, varied_len(t, s, SPREAD)))
                        .collect();
                    let first = if n == 1 {
                        journal.append(&batch[0]).expect("child: append")
                    } else {
                        journal
                            .append_batch(&batch)
                            .expect("child: append_batch")
                            .start
                    };
                    // The append has returned: the records are durable. Report them.
                    let mut out = std::io::stdout().lock();
                    for (i, p) in batch.iter().enumerate() {
                        writeln!(
                            out,
                            "DURABLE {} {t} {} {} {}",
                            first + i as u64,
                            seq + i as u32,
                            p.len(),
                            digest(p)
                        )
                        .expect("child: stdout");
                    }
                    out.flush().expect("child: stdout");
                    drop(out);
                    seq += n;
                    let durable = journal.state().durable_lsn;
                    if retire && t == 1 && seq.is_multiple_of(8) && durable > ACK_LAG {
                        let upto = durable - ACK_LAG;
                        journal.ack(upto).expect("child: ack");
                        println!("ACKED {upto}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("child thread");
    }
    eprintln!("child: not killed within 20 s");
    std::process::exit(3);
}

fn parse_durable(line: &str, cycle: u64) -> Option<(Lsn, Acked)> {
    let mut it = line.strip_prefix("DURABLE ")?.split(' ');
    let mut next = || it.next().expect("DURABLE line field");
    let lsn = next().parse().expect("lsn");
    let thread = next().parse().expect("thread");
    let seq = next().parse().expect("seq");
    let len = next().parse().expect("len");
    let digest = next().parse().expect("digest");
    Some((
        lsn,
        Acked {
            thread,
            seq,
            cycle,
            len,
            digest,
        },
    ))
}

fn parse_acked(line: &str) -> Option<Lsn> {
    line.strip_prefix("ACKED ")
        .map(|n| n.parse().expect("acked lsn"))
}

/// How the parent picks the moment of the kill.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// A random delay after spawning: maybe during the child's open (recovery) or first appends.
    Spawned(Duration),
    /// A random delay after the child reported the journal open.
    Ready(Duration),
    /// A random delay after the child has reported at least this many appends.
    Reported(usize, Duration),
}

/// What the child reported in one cycle.
struct Reports {
    durable: Vec<(Lsn, Acked)>,
    max_acked: Lsn,
}

fn run_cycle(dir: &Path, jdir: &Path, cycle: u64, kill_at: KillAt, retire: bool) -> Reports {
    let stderr_path = dir.join(format!("child-{cycle}.stderr"));
    let mut cmd = child_test_command(&test_path(module_path!(), "kill9_child"), ENV_DIR, jdir);
    cmd.env(ENV_CYCLE, cycle.to_string()).env(
        if retire {
            ENV_RETIRE
        } else {
            "SYNCJOURNAL_KILL9_UNUSED"
        },
        "1",
    );
    // Lines cut by the kill (no newline) promise nothing: the pump drops them.
    let mut child = ChildLines::spawn_logged(cmd, &stderr_path);
    let mut lines = Vec::new();
    let child_output = |lines: &Vec<String>| {
        format!(
            "stdout tail: {:?}\nstderr: {}",
            &lines[lines.len().saturating_sub(5)..],
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        )
    };
    // Collects lines until `enough(ready, acks)` holds (counted incrementally).
    let mut ready = false;
    let mut acks = 0usize;
    let mut wait_for = |lines: &mut Vec<String>, enough: &dyn Fn(bool, usize) -> bool| {
        while !enough(ready, acks) {
            match child.rx.recv_timeout(CHILD_WAIT) {
                Ok(l) => {
                    ready |= l.ends_with("READY");
                    acks += usize::from(l.starts_with("DURABLE "));
                    lines.push(l);
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "cycle {cycle}: child produced nothing for {CHILD_WAIT:?}\n{}",
                    child_output(lines)
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "cycle {cycle}: child exited before it was killed\n{}",
                    child_output(lines)
                ),
            }
        }
    };
    match kill_at {
        KillAt::Spawned(d) => std::thread::sleep(d),
        KillAt::Ready(d) => {
            wait_for(&mut lines, &|ready, _| ready);
            std::thread::sleep(d);
        }
        KillAt::Reported(n, d) => {
            wait_for(&mut lines, &|_, acks| acks >= n);
            std::thread::sleep(d);
        }
    }
    if let Err(why) = child.kill9(&mut |l| lines.push(l.to_owned())) {
        panic!("cycle {cycle}: {why}\n{}", child_output(&lines));
    }
    Reports {
        durable: lines
            .iter()
            .filter_map(|l| parse_durable(l, cycle))
            .collect(),
        max_acked: lines
            .iter()
            .filter_map(|l| parse_acked(l))
            .max()
            .unwrap_or(0),
    }
}

/// Totals over all cycles.
#[derive(Debug, Default)]
struct Totals {
    promised: usize,
    min_promised: usize,
    lost: usize,
    retired: usize,
    records: u64,
    cuts: usize,
    acked: Lsn,
}

fn run_cycles(cycles: u64, retire: bool, seed_rng: (Rng, u64)) -> Totals {
    let (mut rng, seed) = seed_rng;
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let mut promised: BTreeMap<Lsn, Acked> = BTreeMap::new();
    let mut max_acked = 0;
    let mut t = Totals::default();
    for cycle in 0..cycles {
        let kill_at = match rng.range(0, 100) {
            0..15 => KillAt::Spawned(Duration::from_millis(rng.range(0, 25))),
            15..30 => KillAt::Ready(Duration::from_millis(rng.range(0, 15))),
            _ => {
                let n = rng.range(1, 300) as usize;
                t.min_promised += n;
                KillAt::Reported(n, Duration::from_millis(rng.range(0, 30)))
            }
        };
        let what = format!("cycle {cycle} ({kill_at:?}, seed {seed})");
        let reports = run_cycle(dir.path(), &jdir, cycle, kill_at, retire);
        max_acked = max_acked.max(reports.max_acked);
        for (lsn, acked) in reports.durable {
            if let Some(before) = promised.insert(lsn, acked) {
                panic!(
                    "{what}: LSN {lsn} was reported durable twice: first {before:?}, now \
                     {acked:?} (an LSN was reused after a crash)"
                );
            }
        }

        // Reopen and check every promise made so far, in every cycle.
        let journal =
            Journal::open(&jdir, opts()).unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
        t.cuts += journal.recovery_report().cuts.len();
        let state = journal.state();
        assert!(
            state.acked_lsn >= max_acked,
            "{what}: the child's ack({max_acked}) returned, but the reopened journal has \
             acked_lsn {}",
            state.acked_lsn
        );
        assert!(
            state.first_lsn <= state.acked_lsn + 1,
            "{what}: first retained LSN {} but only {} acknowledged",
            state.first_lsn,
            state.acked_lsn
        );
        if !retire {
            assert_eq!(state.first_lsn, 1, "{what}: nothing was acknowledged");
        }
        let first = state.first_lsn;
        let all = read_from(&journal, first);
        for (i, r) in all.iter().enumerate() {
            assert_eq!(
                r.lsn,
                first + i as u64,
                "{what}: LSNs not contiguous from {first}"
            );
            parse_payload(r.lsn, &r.payload);
        }
        assert_eq!(state.next_lsn, first + all.len() as u64, "{what}: next_lsn");
        assert_eq!(state.durable_lsn, state.next_lsn - 1, "{what}: durable_lsn");
        t.lost = 0;
        t.retired = 0;
        let mut first_loss = None;
        for (&lsn, a) in &promised {
            if lsn < first {
                // Retired: allowed only because it was acknowledged (first <= acked + 1).
                t.retired += 1;
                continue;
            }
            let ok = all.get((lsn - first) as usize).is_some_and(|r| {
                r.payload.len() == a.len
                    && digest(&r.payload) == a.digest
                    && r.payload == payload(a.thread, a.seq, a.cycle, a.len)
            });
            if !ok {
                t.lost += 1;
                first_loss.get_or_insert((lsn, *a));
            }
        }
        if let Some((lsn, a)) = first_loss {
            let _ = writeln!(
                std::io::stderr(),
                "kill9: cycles {}, acked {}, lost {}",
                cycle + 1,
                promised.len(),
                t.lost
            );
            panic!(
                "{what}: {} reported records lost or changed; first: LSN {lsn} {a:?}; journal \
                 holds LSNs {first}..{}, found {:?}",
                t.lost,
                state.next_lsn,
                all.get((lsn - first) as usize)
                    .map(|r| (r.lsn, r.payload.len()))
            );
        }
        t.records = all.len() as u64;
        t.acked = state.acked_lsn;
        journal.close().expect("close");
    }
    t.promised = promised.len();
    assert!(
        t.promised >= t.min_promised,
        "the parent waited for {} reports but recorded only {}",
        t.min_promised,
        t.promised
    );
    let segments = segment_files(&jdir).len();
    if retire {
        assert!(t.retired > 0, "no segment was ever retired");
    } else {
        assert!(
            segments > 1,
            "no rotation happened: the test did not exercise it"
        );
    }
    t
}

#[test]
fn kill9_cycles() {
    let _load = alongside();
    with_timeout(240, || {
        let (rng, seed) = Rng::from_time();
        let t = run_cycles(CYCLES, false, (rng, seed));
        // Written to the real stderr (not `eprintln!`, which the test harness captures), so
        // that the summary shows in a plain `cargo test` run.
        let _ = writeln!(
            std::io::stderr(),
            "kill9: cycles {CYCLES}, acked {}, lost {} (records {}, torn tails cut {}, seed {seed})",
            t.promised,
            t.lost,
            t.records,
            t.cuts,
        );
    });
}

#[test]
fn kill9_cycles_with_acknowledgements() {
    let _load = alongside();
    with_timeout(240, || {
        const CYCLES_WITH_ACKS: u64 = 20;
        let (rng, seed) = Rng::from_time();
        let t = run_cycles(CYCLES_WITH_ACKS, true, (rng, seed));
        let _ = writeln!(
            std::io::stderr(),
            "kill9 with acks: cycles {CYCLES_WITH_ACKS}, acked {}, lost {}, retired {} \
             (acked_lsn {}, records retained {}, torn tails cut {}, seed {seed})",
            t.promised,
            t.lost,
            t.retired,
            t.acked,
            t.records,
            t.cuts,
        );
    });
}
