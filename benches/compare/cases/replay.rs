//! The `replay` group: the same upsert change sets into a fresh SQLite target (TRUNCATE,
//! synchronous=FULL, rows preloaded) by the `Replayer` in batches of 1000, by a raw loop of the
//! same rows (1000 per transaction, watermark in the same transaction), and by a naive replay
//! of one entry (and its watermark) per transaction.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use syncjournal::event::{KIND_CHANGESET, decode_event};
use syncjournal::mutation::Mutation;
use syncjournal::{
    ChangeSet, Journal, JournalOptions, PersistMode, ReplayOptions, Replayer, TargetOptions,
    TargetSpec,
};

use crate::harness::{Clock, Config, REPLAY_BATCH, Tally, settle};
use crate::report::Results;
use crate::workload::{cert_payload, cert_row, make_target, open_target};

/// A journal holding the encoded certificate change sets `payloads` (LSN i+1 = row i), closed.
pub fn write_changeset_journal(jdir: &Path, payloads: impl Iterator<Item = Vec<u8>>) {
    let j = Journal::open(
        jdir,
        JournalOptions::new().persist_mode(PersistMode::Buffered),
    )
    .expect("open journal");
    let mut batch = Vec::with_capacity(1000);
    for p in payloads {
        batch.push(p);
        if batch.len() == 1000 {
            j.append_batch_kind(KIND_CHANGESET, batch.drain(..))
                .expect("append_batch");
        }
    }
    if !batch.is_empty() {
        j.append_batch_kind(KIND_CHANGESET, batch.drain(..))
            .expect("append_batch");
    }
    j.close().expect("close");
}

/// A rep's directory `dir/<name>`, with a journal of `payloads` written into it and opened
/// (acknowledged segments kept, so that every rep replays the same entries), page cache
/// synced.
pub fn rep_journal(dir: &Path, name: &str, payloads: &[Vec<u8>]) -> (PathBuf, Arc<Journal>) {
    let rep_dir = dir.join(name);
    std::fs::create_dir_all(&rep_dir).unwrap();
    let jdir = rep_dir.join("journal");
    write_changeset_journal(&jdir, payloads.iter().cloned());
    let j = Arc::new(
        Journal::open(
            &jdir,
            JournalOptions::new().retain_acked_segments(usize::MAX >> 1),
        )
        .expect("open the rep's journal"),
    );
    rustix::fs::sync();
    (rep_dir, j)
}

/// The Replayer: every durable entry into a fresh target (an SQLite file or a PostgreSQL
/// database), batches of 1000 (the default).
/// The connection is made (and the replayer's tables created) before the clock starts.
pub fn sj_replay(j: &Arc<Journal>, target: impl Into<TargetSpec>, n: u64) -> Tally {
    sj_replay_with(j, target, TargetOptions::new(), n)
}

/// [`sj_replay`] with the target options `topts`.
pub fn sj_replay_with(
    j: &Arc<Journal>,
    target: impl Into<TargetSpec>,
    topts: TargetOptions,
    n: u64,
) -> Tally {
    let mut r: Replayer<ChangeSet> = Replayer::new(
        Arc::clone(j),
        target,
        topts,
        ReplayOptions::new().batch_entries_max(REPLAY_BATCH),
    );
    assert_eq!(r.target_watermark().expect("connect target"), 0);
    let start = Clock::start();
    let report = r.sync_now();
    let t = start.tally(report.applied);
    assert!(report.error.is_none(), "replay failed: {:?}", report.error);
    assert_eq!(report.applied, n, "replay applied {}", report.applied);
    t
}

/// The raw reference: the same rows, prepared upsert, 1000 per transaction, watermark updated
/// in the same transaction, same target settings.
pub fn raw_batched_upserts(target: &Path, rows: &[(i64, String, Vec<u8>)]) -> Tally {
    let c = open_target(target);
    let start = Clock::start();
    for (b, chunk) in rows.chunks(REPLAY_BATCH).enumerate() {
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        {
            let mut up = c
                .prepare_cached(
                    "INSERT INTO certificates (id, name, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, body = excluded.body",
                )
                .unwrap();
            for (id, name, body) in chunk {
                up.execute((id, name, body)).unwrap();
            }
            let mut wm = c
                .prepare_cached("UPDATE replay_watermark SET lsn = ?1 WHERE journal_id = ?2")
                .unwrap();
            wm.execute((((b + 1) * REPLAY_BATCH) as i64, "bench"))
                .unwrap();
        }
        c.execute_batch("COMMIT").unwrap();
    }
    start.tally(rows.len() as u64)
}

/// The naive replay: read each entry from the journal, decode it, and apply it with its
/// watermark update in a transaction of its own, for `d`.
pub fn naive_replay(j: &Journal, target: &Path, d: Duration) -> Tally {
    let c = open_target(target);
    let mut reader = j.reader(1).expect("reader");
    let mut n = 0u64;
    let start = Clock::start();
    while start.elapsed() < d {
        let Some(rec) = reader.next_ref().expect("read") else {
            break;
        };
        let (_, cs) = decode_event::<ChangeSet>(rec.payload).expect("decode");
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        for m in &cs.mutations {
            let Mutation::Upsert { table, key, values } = m else {
                unreachable!("the bench journals upserts only")
            };
            let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
            let cols: Vec<String> = key.iter().chain(values).map(|(c, _)| q(c)).collect();
            let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
            let keys: Vec<String> = key.iter().map(|(c, _)| q(c)).collect();
            let set: Vec<String> = values
                .iter()
                .map(|(c, _)| format!("{0} = excluded.{0}", q(c)))
                .collect();
            let sql = format!(
                "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}",
                q(table),
                cols.join(", "),
                marks.join(", "),
                keys.join(", "),
                set.join(", ")
            );
            c.prepare_cached(&sql)
                .unwrap()
                .execute(rusqlite::params_from_iter(
                    key.iter().chain(values).map(|(_, v)| v),
                ))
                .unwrap();
        }
        c.prepare_cached("UPDATE replay_watermark SET lsn = ?1 WHERE journal_id = ?2")
            .unwrap()
            .execute((rec.lsn as i64, "bench"))
            .unwrap();
        c.execute_batch("COMMIT").unwrap();
        n += 1;
    }
    start.tally(n)
}

pub const REPLAY_CASES: &[&str] = &[
    "sj_replay_batch1000",
    "sj_replay_batch1000_nolog",
    "raw_sqlite_upsert_batch1000_wm",
    "naive_replay_1_per_txn",
];

pub fn group_replay(cfg: &Config, dir: &Path, res: &mut Results) {
    let names: Vec<&str> = cfg.wanted("replay", REPLAY_CASES);
    if names.is_empty() {
        return;
    }
    let n = cfg.replay_entries;
    let t = Instant::now();
    let payloads: Vec<Vec<u8>> = (0..n).map(cert_payload).collect();
    let rows: Vec<(i64, String, Vec<u8>)> = (0..n).map(cert_row).collect();
    let avg = payloads.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    let row_bytes = rows.iter().map(|r| r.1.len() + r.2.len()).sum::<usize>() as f64 / n as f64;
    res.note(format!(
        "replay entries: {n} upsert change sets, journal payload {avg:.0} B, row data (name+body) {row_bytes:.0} B"
    ));
    println!(
        "[replay] {n} entries per rep, {} reps; payloads encoded in {:.1?}",
        cfg.reps,
        t.elapsed()
    );
    for rep in 0..cfg.reps {
        let (rep_dir, j) = rep_journal(dir, &format!("replay-{rep}"), &payloads);
        let k = names.len();
        for o in 0..k {
            let name = names[(rep + o) % k];
            let target = rep_dir.join(format!("{name}.db"));
            make_target(&target);
            rustix::fs::sync();
            let t = match name {
                "sj_replay_batch1000" => sj_replay(&j, &target, n),
                // One machine: no change log (nothing pulls), so no conflict detection either.
                "sj_replay_batch1000_nolog" => {
                    sj_replay_with(&j, &target, TargetOptions::new().change_log(false), n)
                }
                "raw_sqlite_upsert_batch1000_wm" => raw_batched_upserts(&target, &rows),
                _ => naive_replay(&j, &target, cfg.duration()),
            };
            res.push_tally(name, &t);
        }
        drop(j);
        settle(&rep_dir);
        res.print_rep(rep, &names);
    }
}
