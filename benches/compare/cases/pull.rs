//! The `pull` group: a target filled by the `Replayer` from a journal of certificate upserts,
//! with its change log on (`sj_replay_log_on`) and off (`sj_replay_log_off`, the same entries
//! into another fresh target: what recording the log costs); then the change log pulled into a
//! fresh cache by a `Store` (`sj_pull_page1000`) and by a raw loop that reads the same records
//! by sequence, 1000 per page, and upserts them into an SQLite cache with its cursor in the
//! same cache transaction (`raw_pull_upsert_page1000`).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rusqlite::Connection;
use syncjournal::mutation::Value;
use syncjournal::{
    ChangeSet, Journal, JournalOptions, ReplayOptions, Replayer, Store, StoreOptions, TargetOptions,
};

use crate::cases::replay::rep_journal;
use crate::harness::{Clock, Config, REPLAY_BATCH, Tally, settle};
use crate::report::Results;
use crate::workload::{CERT_SCHEMA, cert_payload, make_target, open_target};

pub const PULL_CASES: &[&str] = &[
    "sj_replay_log_on",
    "sj_replay_log_off",
    "sj_pull_page1000",
    "raw_pull_upsert_page1000",
];

/// The Replayer into `target` with the change log `on` or off.
fn replay(j: &Arc<Journal>, target: &Path, n: u64, on: bool) -> Tally {
    let mut r: Replayer<ChangeSet> = Replayer::new(
        Arc::clone(j),
        target,
        TargetOptions::new().change_log(on),
        ReplayOptions::new().batch_entries_max(REPLAY_BATCH),
    );
    assert_eq!(r.target_watermark().expect("connect target"), 0);
    let start = Clock::start();
    let report = r.sync_now();
    let t = start.tally(report.applied);
    assert!(report.error.is_none(), "replay failed: {:?}", report.error);
    assert_eq!(report.applied, n);
    t
}

/// A store with an empty journal pulls the whole log into a fresh cache.
fn sj_pull(dir: &Path, target: &Path, n: u64) -> Tally {
    let store: Store = Store::open(
        dir.join("pull-journal"),
        dir.join("pull-cache.db"),
        StoreOptions::new()
            .cache_schema(CERT_SCHEMA)
            .target(target, TargetOptions::new())
            .background_sync(false),
    )
    .expect("open store");
    let start = Clock::start();
    let r = store.pull_now();
    let t = start.tally(r.applied);
    assert!(r.error.is_none(), "pull failed: {:?}", r.error);
    // A row touched twice in one batch is one record: the log holds fewer than `n`.
    assert!(
        r.applied > 0 && r.applied <= n && r.cursor_seq == r.head_seq,
        "pulled {} of at most {n}, to {} of {}",
        r.applied,
        r.cursor_seq,
        r.head_seq
    );
    store.close().expect("close");
    t
}

type Cols = Vec<(String, Value)>;

fn decode(b: &[u8]) -> Cols {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .expect("decode")
        .0
}

/// The raw reference: pages of 1000 records by sequence from the target, decoded, upserted
/// into a cache (WAL, synchronous=NORMAL, as the store's) with the cursor in the same cache
/// transaction.
fn raw_pull(dir: &Path, target: &Path) -> Tally {
    let t = open_target(target);
    let c = Connection::open(dir.join("raw-cache.db")).expect("cache");
    let _: String = c
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    c.pragma_update(None, "synchronous", "NORMAL").unwrap();
    c.execute_batch(CERT_SCHEMA).unwrap();
    c.execute_batch("CREATE TABLE cursor (seq INTEGER NOT NULL); INSERT INTO cursor VALUES (0);")
        .unwrap();
    let start = Clock::start();
    let mut cursor = 0i64;
    let mut n = 0u64;
    loop {
        t.execute_batch("BEGIN").unwrap();
        let page: Vec<(i64, Vec<u8>, Option<Vec<u8>>)> = t
            .prepare_cached(
                "SELECT seq, key, row FROM syncjournal_changes WHERE seq > ?1 ORDER BY seq LIMIT 1000",
            )
            .unwrap()
            .query_map([cursor], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        t.execute_batch("COMMIT").unwrap();
        if page.is_empty() {
            break;
        }
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        {
            let mut up = c
                .prepare_cached(
                    "INSERT INTO certificates (id, name, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, body = excluded.body",
                )
                .unwrap();
            let mut del = c
                .prepare_cached("DELETE FROM certificates WHERE id = ?1")
                .unwrap();
            for (seq, key, row) in &page {
                let key = decode(key);
                match row {
                    Some(row) => {
                        let row = decode(row);
                        up.execute((&key[0].1, &row[0].1, &row[1].1)).unwrap();
                    }
                    None => {
                        del.execute([&key[0].1]).unwrap();
                    }
                }
                cursor = *seq;
                n += 1;
            }
            c.execute("UPDATE cursor SET seq = ?1", [cursor]).unwrap();
        }
        c.execute_batch("COMMIT").unwrap();
    }
    start.tally(n)
}

pub fn group_pull(cfg: &Config, dir: &Path, res: &mut Results) {
    let names: Vec<&str> = cfg.wanted("pull", PULL_CASES);
    if names.is_empty() {
        return;
    }
    let n = cfg.replay_entries;
    let t = Instant::now();
    let payloads: Vec<Vec<u8>> = (0..n).map(cert_payload).collect();
    println!(
        "[pull] {n} entries per rep, {} reps; payloads encoded in {:.1?}",
        cfg.reps,
        t.elapsed()
    );
    for rep in 0..cfg.reps {
        let (rep_dir, j) = rep_journal(dir, &format!("pull-{rep}"), &payloads);
        let on_target = rep_dir.join("log-on.db");
        let off_target = rep_dir.join("log-off.db");
        make_target(&on_target);
        make_target(&off_target);
        rustix::fs::sync();
        // Alternate which replay goes first.
        let order = if rep % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for on in order {
            let tally = if on {
                replay(&j, &on_target, n, true)
            } else {
                replay(&j, &off_target, n, false)
            };
            res.push_tally(
                if on {
                    "sj_replay_log_on"
                } else {
                    "sj_replay_log_off"
                },
                &tally,
            );
        }
        drop(j);
        rustix::fs::sync();
        let order = if rep % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for sj in order {
            let sub = rep_dir.join(if sj { "sj" } else { "raw" });
            std::fs::create_dir_all(&sub).unwrap();
            let tally = if sj {
                sj_pull(&sub, &on_target, n)
            } else {
                raw_pull(&sub, &on_target)
            };
            res.push_tally(
                if sj {
                    "sj_pull_page1000"
                } else {
                    "raw_pull_upsert_page1000"
                },
                &tally,
            );
        }
        settle(&rep_dir);
        res.print_rep(rep, &names);
    }
}

/// Hidden flag: run as the pull-backlog child.
pub const PULL_CHILD_FLAG: &str = "--pull-child";

/// The child: open a store (empty journal, fresh cache) on the target and pull its whole
/// change log; report on stdout, then wait for the parent (which reads our `VmHWM`) to close
/// stdin.
pub fn pull_child(dir: &Path, target: &str) {
    let store: Store = Store::open(
        dir.join("journal"),
        dir.join("cache.db"),
        StoreOptions::new()
            .cache_schema(CERT_SCHEMA)
            .target(target, TargetOptions::new())
            .background_sync(false),
    )
    .expect("child: open store");
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let start = Instant::now();
    let r = store.pull_now();
    let secs = start.elapsed().as_secs_f64();
    let err = r
        .error
        .map_or_else(|| "none".to_string(), |e| e.to_string().replace(' ', "_"));
    println!(
        "done applied={} pull_secs={secs:.3} reset={reset} error={err}",
        r.applied
    );
    std::io::Write::flush(&mut std::io::stdout()).unwrap();
    let mut s = String::new();
    let _ = std::io::stdin().read_line(&mut s);
}

/// A target whose change log holds `n` certificate records (written directly, in the log's
/// format), so that a backlog of millions costs seconds to build.
fn make_log_target(path: &Path, n: u64) {
    make_target(path);
    // The replayer's tables, as it creates them.
    let mut r: Replayer<ChangeSet> = Replayer::new(
        Arc::new(
            Journal::open(path.with_extension("journal"), JournalOptions::new()).expect("journal"),
        ),
        path,
        TargetOptions::new(),
        ReplayOptions::new(),
    );
    r.target_watermark().expect("create the bookkeeping");
    let c = open_target(path);
    c.pragma_update(None, "synchronous", "OFF").unwrap();
    c.execute_batch("BEGIN").unwrap();
    {
        let mut ins = c
            .prepare(
                "INSERT INTO syncjournal_changes (seq, hlc, journal_id, lsn, table_name, key, row, committed_at, row_id)
                 VALUES (?1, ?2, '00000000-0000-0000-0000-000000000001', ?1, 'certificates', ?3, ?4, 0, ?5)",
            )
            .unwrap();
        let enc = |c: &Cols| bincode::serde::encode_to_vec(c, bincode::config::standard()).unwrap();
        for i in 0..n {
            let (id, name, body) = crate::workload::cert_row(i);
            let key: Cols = vec![("id".into(), Value::Integer(id))];
            let row: Cols = vec![
                ("name".into(), Value::Text(name)),
                ("body".into(), Value::Blob(body)),
            ];
            let seq = i as i64 + 1;
            // The pull reads `row_id` only for its own records (this journal is another's),
            // and every lookup by it compares the row too: the key stands in for the hash.
            ins.execute((seq, seq << 16, enc(&key), enc(&row), id))
                .unwrap();
        }
    }
    c.execute(
        "UPDATE syncjournal_change_head SET seq = ?1, hlc = ?2",
        (n as i64, (n as i64) << 16),
    )
    .unwrap();
    c.execute_batch("COMMIT").unwrap();
}

/// Pulls a backlog of `n` changes in a child process; returns (applied, seconds, peak KiB).
fn run_pull_backlog(dir: &Path, n: u64) -> (u64, f64, u64, String) {
    use std::io::BufRead;
    let bdir = dir.join(format!("pull-backlog-{n}"));
    std::fs::create_dir_all(&bdir).unwrap();
    let target = bdir.join("target.db");
    let t = Instant::now();
    make_log_target(&target, n);
    rustix::fs::sync();
    println!(
        "  change log of {n} records written in {:.1?}; pulling in a child process",
        t.elapsed()
    );
    let child_dir = bdir.join("puller");
    std::fs::create_dir_all(&child_dir).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg(PULL_CHILD_FLAG)
        .arg(&child_dir)
        .arg(&target)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn child");
    let pid = child.id().to_string();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("child report");
    let hwm = crate::cases::backlog::status_kib(&pid, "VmHWM").unwrap_or(0);
    drop(child.stdin.take());
    let _ = child.wait();
    let field = |k: &str| -> String {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .unwrap_or("")
            .to_string()
    };
    settle(&bdir);
    let _ = std::fs::remove_dir_all(&bdir);
    (
        field("applied").parse().unwrap_or(0),
        field("pull_secs").parse().unwrap_or(f64::NAN),
        hwm,
        field("error"),
    )
}

/// The `pull_backlog` group: a change log of `--backlog N` records (default 5,000,000) and
/// one 10× smaller, each pulled into a fresh cache by a child process, its peak RSS read from
/// `/proc` once it has finished.
pub fn group_pull_backlog(cfg: &Config, dir: &Path, res: &mut Results) {
    if !cfg.wants("pull_backlog", "sj_pull_backlog") {
        return;
    }
    let big = cfg.backlog;
    let small = (big / 10).max(1000);
    println!("[pull_backlog] {small} then {big} changes, pulled by a child process each");
    let mut peaks = Vec::new();
    for n in [small, big] {
        let (applied, secs, hwm, err) = run_pull_backlog(dir, n);
        let mib = hwm as f64 / 1024.0;
        println!(
            "  {n} changes: applied {applied} in {secs:.1} s ({} changes/s); peak RSS {mib:.1} MiB; error={err}",
            crate::harness::fmt_num(applied as f64 / secs)
        );
        if applied != n || err != "none" {
            res.note(format!(
                "WARNING: pull_backlog {n}: applied {applied} of {n} (error {err})"
            ));
        }
        peaks.push(mib);
    }
    res.note(format!(
        "pull_backlog: peak RSS {:.1} MiB pulling {big} changes (bar <= 64 MiB), {:.1} MiB pulling {small}: {:.2}x",
        peaks[1],
        peaks[0],
        peaks[1] / peaks[0]
    ));
}
