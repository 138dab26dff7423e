//! The `pg_replay` group: the replay group's upsert change sets into a fresh PostgreSQL
//! database (on a server the bench starts) by the `Replayer` in batches of 1000, by a raw loop
//! of the same `postgres` crate (one multi-row `INSERT … VALUES (…),(…) ON CONFLICT DO UPDATE`
//! per batch of 1000 plus the watermark update, a transaction per batch), and by a naive replay
//! of one entry (and its watermark) per transaction. `pg_replay_fsync` measures the same three
//! against a server that fsyncs its commits (`fsync=on`, as in production), where a transaction
//! per entry pays a WAL flush each.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use postgres::types::ToSql;
use postgres::{Client, NoTls, Statement};
use syncjournal::event::decode_event;
use syncjournal::mutation::{Mutation, Value};
use syncjournal::{ChangeSet, Journal};

use crate::cases::replay::{rep_journal, sj_replay};
use crate::harness::{Clock, Config, REPLAY_BATCH, Tally, settle};
use crate::pg_workload::{drop_pg_target, make_pg_target, start_server};
use crate::report::Results;
use crate::workload::{cert_payload, cert_row};

pub const PG_REPLAY_CASES: &[&str] = &[
    "pg_sj_replay_batch1000",
    "pg_raw_upsert_multirow1000_wm",
    "pg_naive_replay_1_per_txn",
];

/// The same cases against a durable server (`pg_replay_fsync`).
pub const PG_REPLAY_FSYNC_CASES: &[&str] = &[
    "pg_sj_replay_batch1000_fsync",
    "pg_raw_upsert_multirow1000_wm_fsync",
    "pg_naive_replay_1_per_txn_fsync",
];

const WATERMARK_SQL: &str = "UPDATE replay_watermark SET lsn = $1 WHERE journal_id = $2";

/// `INSERT … VALUES ($1,$2,$3),(…) ON CONFLICT (id) DO UPDATE` of `rows` rows.
fn multirow_upsert_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| format!("(${}, ${}, ${})", 3 * r + 1, 3 * r + 2, 3 * r + 3))
        .collect();
    format!(
        "INSERT INTO certificates (id, name, body) VALUES {}
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, body = excluded.body",
        values.join(", ")
    )
}

/// The raw reference: the same rows, 1000 per transaction, each batch one multi-row upsert
/// (prepared once per row count) plus the watermark update. One statement cannot update a row
/// twice, so each batch keeps the last row of every id (the same final state as applying them
/// in order); that deduplication is timed, and the rate counts every entry of the batch.
pub fn pg_raw_batched_upserts(url: &str, rows: &[(i64, String, Vec<u8>)]) -> Tally {
    let mut c = Client::connect(url, NoTls).expect("connect");
    let wm = c.prepare(WATERMARK_SQL).expect("prepare watermark");
    let mut upserts: HashMap<usize, Statement> = HashMap::new();
    let mut last: HashMap<i64, usize> = HashMap::with_capacity(REPLAY_BATCH);
    let mut keep: Vec<usize> = Vec::with_capacity(REPLAY_BATCH);
    let start = Clock::start();
    let mut lsn = 0i64;
    for chunk in rows.chunks(REPLAY_BATCH) {
        last.clear();
        for (i, r) in chunk.iter().enumerate() {
            last.insert(r.0, i);
        }
        keep.clear();
        keep.extend(last.values().copied());
        keep.sort_unstable();
        let k = keep.len();
        let upsert = upserts
            .entry(k)
            .or_insert_with(|| c.prepare(&multirow_upsert_sql(k)).expect("prepare upsert"));
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(3 * k);
        for &i in &keep {
            let (id, name, body) = &chunk[i];
            params.push(id);
            params.push(name);
            params.push(body);
        }
        lsn += chunk.len() as i64;
        let mut tx = c.transaction().expect("begin");
        tx.execute(&*upsert, &params).expect("upsert");
        tx.execute(&wm, &[&lsn, &"bench"]).expect("watermark");
        tx.commit().expect("commit");
    }
    start.tally(rows.len() as u64)
}

/// A value as a `postgres` parameter.
fn param(v: &Value) -> Box<dyn ToSql + Sync> {
    match v {
        Value::Null => Box::new(None::<i64>),
        Value::Integer(i) => Box::new(*i),
        Value::Real(f) => Box::new(*f),
        Value::Text(s) => Box::new(s.clone()),
        Value::Blob(b) => Box::new(b.clone()),
    }
}

/// The naive replay: read each entry from the journal, decode it, and apply it (prepared
/// upsert) with its watermark update in a transaction of its own, for `d`.
pub fn pg_naive_replay(j: &Journal, url: &str, d: Duration) -> Tally {
    let mut c = Client::connect(url, NoTls).expect("connect");
    let wm = c.prepare(WATERMARK_SQL).expect("prepare watermark");
    let mut stmts: HashMap<String, Statement> = HashMap::new();
    let mut reader = j.reader(1).expect("reader");
    let mut n = 0u64;
    let start = Clock::start();
    while start.elapsed() < d {
        let Some(rec) = reader.next_ref().expect("read") else {
            break;
        };
        let (_, cs) = decode_event::<ChangeSet>(rec.payload).expect("decode");
        let mut tx = c.transaction().expect("begin");
        for m in &cs.mutations {
            let Mutation::Upsert { table, key, values } = m else {
                unreachable!("the bench journals upserts only")
            };
            let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
            let cols: Vec<String> = key.iter().chain(values).map(|(c, _)| q(c)).collect();
            let marks: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
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
            if !stmts.contains_key(&sql) {
                let st = tx.prepare(&sql).expect("prepare upsert");
                stmts.insert(sql.clone(), st);
            }
            let boxed: Vec<Box<dyn ToSql + Sync>> =
                key.iter().chain(values).map(|(_, v)| param(v)).collect();
            let params: Vec<&(dyn ToSql + Sync)> = boxed.iter().map(|b| b.as_ref()).collect();
            tx.execute(&stmts[&sql], &params).expect("upsert");
        }
        tx.execute(&wm, &[&(rec.lsn as i64), &"bench"])
            .expect("watermark");
        tx.commit().expect("commit");
        n += 1;
    }
    start.tally(n)
}

pub fn group_pg_replay(cfg: &Config, dir: &Path, res: &mut Results) {
    run_group("pg_replay", PG_REPLAY_CASES, false, cfg, dir, res);
}

pub fn group_pg_replay_fsync(cfg: &Config, dir: &Path, res: &mut Results) {
    run_group(
        "pg_replay_fsync",
        PG_REPLAY_FSYNC_CASES,
        true,
        cfg,
        dir,
        res,
    );
}

fn run_group(
    group: &str,
    cases: &[&'static str],
    durable: bool,
    cfg: &Config,
    dir: &Path,
    res: &mut Results,
) {
    let names: Vec<&str> = cfg.wanted(group, cases);
    if names.is_empty() {
        return;
    }
    let Some(cluster) = start_server(group, durable, res) else {
        return;
    };
    let n = cfg.replay_entries;
    let t = Instant::now();
    let payloads: Vec<Vec<u8>> = (0..n).map(cert_payload).collect();
    let rows: Vec<(i64, String, Vec<u8>)> = (0..n).map(cert_row).collect();
    println!(
        "[{group}] {n} entries per rep, {} reps; payloads encoded in {:.1?}",
        cfg.reps,
        t.elapsed()
    );
    for rep in 0..cfg.reps {
        let (rep_dir, j) = rep_journal(dir, &format!("{group}-{rep}"), &payloads);
        let k = names.len();
        for o in 0..k {
            let name = names[(rep + o) % k];
            let db = format!("r{rep}_{name}");
            let url = make_pg_target(&cluster, &db);
            let t = match name.trim_end_matches("_fsync") {
                "pg_sj_replay_batch1000" => sj_replay(&j, url.as_str(), n),
                "pg_raw_upsert_multirow1000_wm" => pg_raw_batched_upserts(&url, &rows),
                _ => pg_naive_replay(&j, &url, cfg.duration()),
            };
            res.push_tally(name, &t);
            drop_pg_target(&cluster, &db);
        }
        drop(j);
        settle(&rep_dir);
        res.print_rep(rep, &names);
    }
}
