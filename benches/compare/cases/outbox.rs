//! The application's own approaches in SQLite (WAL): the naive outbox (the baseline's case B:
//! one `sync_tracking` row per mutation, autocommit), and the field application's real one —
//! the cache row and its `sync_tracking` row written in one transaction, synchronous=FULL —
//! which is what a change set through the store replaces.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::cases::durable::Case;
use crate::harness::{P128, Tally, base_payload, repeat_for, run_threads, stamp};
use crate::workload::{CERT_IDS, CERT_SCHEMA, cert_row};

/// Case B, the naive outbox: one `sync_tracking` row per mutation, autocommit, WAL.
pub struct Outbox {
    pub conns: Vec<Mutex<Connection>>,
    pub n: AtomicU64,
}

impl Outbox {
    pub fn new(dir: &Path, full: bool, threads: usize) -> Self {
        let path = dir.join("outbox.db");
        let conns = (0..threads)
            .map(|t| {
                let c = Connection::open(&path).expect("open outbox");
                c.busy_timeout(Duration::from_secs(5)).unwrap();
                if t == 0 {
                    let mode: String = c
                        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                        .unwrap();
                    assert!(
                        mode.eq_ignore_ascii_case("wal"),
                        "outbox not in WAL: {mode}"
                    );
                    c.execute_batch(
                        "CREATE TABLE IF NOT EXISTS sync_tracking (
                             id INTEGER PRIMARY KEY,
                             table_name TEXT NOT NULL,
                             record_id INTEGER NOT NULL,
                             operation TEXT NOT NULL,
                             payload BLOB NOT NULL,
                             ts INTEGER NOT NULL)",
                    )
                    .unwrap();
                }
                c.pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" })
                    .unwrap();
                Mutex::new(c)
            })
            .collect();
        Outbox {
            conns,
            n: AtomicU64::new(0),
        }
    }
}

impl Case for Outbox {
    fn run(&mut self, d: Duration) -> Tally {
        let (conns, counter) = (&self.conns, &self.n);
        run_threads(conns.len(), |t, start| {
            let c = conns[t].lock().unwrap();
            let mut stmt = c
                .prepare_cached(
                    "INSERT INTO sync_tracking (table_name, record_id, operation, payload, ts)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .unwrap();
            let mut payload = base_payload::<P128>(200 + t as u64);
            repeat_for(start, d, |_| {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                stamp(&mut payload, i);
                stmt.execute((
                    "certificates",
                    (i % CERT_IDS) as i64,
                    "upsert",
                    &payload[..],
                    i as i64,
                ))
                .expect("outbox insert");
            })
        })
    }
}

/// The field application's real approach: in one transaction (`BEGIN IMMEDIATE`, WAL,
/// synchronous=FULL) the cache row is upserted and its `sync_tracking` row (the row's data as
/// payload) inserted, so the cache and the outbox commit together with one WAL flush. This is
/// what the store replaces with a cache transaction plus a journal record: the like-for-like
/// reference for a change set through the store. Same rows as the store's cases (certificate
/// `i`, ids spread over the range, an empty table at the start); 8 threads have a connection
/// each (busy_timeout), as the outbox's do.
pub struct FieldApp {
    pub conns: Vec<Mutex<Connection>>,
    pub n: AtomicU64,
}

impl FieldApp {
    pub fn new(dir: &Path, threads: usize) -> Self {
        let path = dir.join("field-app.db");
        let conns = (0..threads)
            .map(|t| {
                let c = Connection::open(&path).expect("open field app database");
                c.busy_timeout(Duration::from_secs(5)).unwrap();
                if t == 0 {
                    let mode: String = c
                        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                        .unwrap();
                    assert!(
                        mode.eq_ignore_ascii_case("wal"),
                        "field app database not in WAL: {mode}"
                    );
                    c.execute_batch(CERT_SCHEMA).unwrap();
                    c.execute_batch(
                        "CREATE TABLE IF NOT EXISTS sync_tracking (
                             id INTEGER PRIMARY KEY,
                             table_name TEXT NOT NULL,
                             record_id INTEGER NOT NULL,
                             operation TEXT NOT NULL,
                             payload BLOB NOT NULL,
                             ts INTEGER NOT NULL)",
                    )
                    .unwrap();
                }
                c.pragma_update(None, "synchronous", "FULL").unwrap();
                Mutex::new(c)
            })
            .collect();
        FieldApp {
            conns,
            n: AtomicU64::new(0),
        }
    }
}

impl Case for FieldApp {
    fn run(&mut self, d: Duration) -> Tally {
        let (conns, counter) = (&self.conns, &self.n);
        run_threads(conns.len(), |t, start| {
            let mut c = conns[t].lock().unwrap();
            let mut payload = Vec::with_capacity(P128);
            repeat_for(start, d, |_| {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let (id, name, body) = cert_row(i);
                payload.clear();
                payload.extend_from_slice(name.as_bytes());
                payload.extend_from_slice(&body);
                // Rolled back on drop if a statement fails (the expect below then panics).
                let tx = c
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .expect("begin");
                tx.prepare_cached(
                    "INSERT INTO certificates (id, name, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, body = excluded.body",
                )
                .and_then(|mut s| s.execute((id, &name, &body)))
                .expect("cache upsert");
                tx.prepare_cached(
                    "INSERT INTO sync_tracking (table_name, record_id, operation, payload, ts)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut s| s.execute(("certificates", id, "upsert", &payload, i as i64)))
                .expect("sync_tracking insert");
                tx.commit().expect("commit");
            })
        })
    }
}
