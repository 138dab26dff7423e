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

use crate::cases::replay::write_changeset_journal;
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
    assert!(r.applied >= n, "pulled {} of {n}", r.applied);
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
    let names: Vec<&str> = PULL_CASES
        .iter()
        .copied()
        .filter(|n| cfg.wants("pull", n))
        .collect();
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
        let rep_dir = dir.join(format!("pull-{rep}"));
        std::fs::create_dir_all(&rep_dir).unwrap();
        let jdir = rep_dir.join("journal");
        write_changeset_journal(&jdir, payloads.iter().cloned());
        let j = Arc::new(
            Journal::open(
                &jdir,
                JournalOptions::new().retain_acked_segments(usize::MAX >> 1),
            )
            .expect("open journal"),
        );
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
        let mut line = format!("  rep {rep}:");
        for nm in &names {
            line.push_str(&format!(" {nm}={}", res.last(nm)));
        }
        println!("{line}");
    }
}
