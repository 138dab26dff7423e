//! The workload of the store, replay and backlog cases: a stream of certificate rows (ids
//! spread over a range, so upserts mix inserts and updates), as change sets and as encoded
//! journal payloads, and the target database they are replayed into (the baseline's case C).

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;
use syncjournal::ChangeSet;
use syncjournal::event::encode_event;
use syncjournal::mutation::Value;

use crate::harness::mix;

/// Certificates: rows preloaded into each target, and the id range upserts spread over.
pub const PRELOADED_ROWS: u64 = 10_000;
pub const CERT_IDS: u64 = 20_000;
/// Body bytes of a certificate row (name ~17 B + body = ~128 B of row data).
pub const CERT_BODY: usize = 111;
/// The target schema (the baseline's C case).
pub const CERT_SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS certificates (id INTEGER PRIMARY KEY, name TEXT, body BLOB);";

/// Row `i` of the certificate stream: an id spread over 0..CERT_IDS, a name and a body.
pub fn cert_row(i: u64) -> (i64, String, Vec<u8>) {
    let id = mix(i) % CERT_IDS;
    let name = format!("cert-{id:05}-{:06x}", i & 0xff_ffff);
    let mut x = mix(i ^ 0x5555_5555) | 1;
    let body = (0..CERT_BODY)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    (id as i64, name, body)
}

/// Row `i` as a change set of one upsert.
pub fn cert_changeset(i: u64) -> ChangeSet {
    let (id, name, body) = cert_row(i);
    ChangeSet::new().upsert(
        "certificates",
        [("id", Value::Integer(id))],
        [("name", Value::Text(name)), ("body", Value::Blob(body))],
    )
}

/// Encoded store payload of row `i`.
pub fn cert_payload(i: u64) -> Vec<u8> {
    encode_event(1_700_000_000_000 + i, &cert_changeset(i)).expect("encode")
}

/// A fresh target database: the certificates table with `PRELOADED_ROWS` rows (even ids),
/// and a watermark table for the raw and naive loops (the replayer creates its own tables).
pub fn make_target(path: &Path) {
    let c = Connection::open(path).expect("create target");
    let _: String = c
        .query_row("PRAGMA journal_mode=TRUNCATE", [], |r| r.get(0))
        .expect("journal_mode");
    c.execute_batch(CERT_SCHEMA).expect("schema");
    c.execute_batch(
        "CREATE TABLE replay_watermark (journal_id TEXT PRIMARY KEY, lsn INTEGER NOT NULL);
         INSERT INTO replay_watermark VALUES ('bench', 0);",
    )
    .expect("watermark table");
    c.execute_batch("BEGIN").unwrap();
    {
        let mut s = c
            .prepare("INSERT INTO certificates (id, name, body) VALUES (?1, ?2, ?3)")
            .unwrap();
        for k in 0..PRELOADED_ROWS {
            let (_, name, body) = cert_row(k + (1 << 40));
            s.execute((k as i64 * 2, name, body)).unwrap();
        }
    }
    c.execute_batch("COMMIT").unwrap();
}

/// A target connection as the replayer opens one: TRUNCATE, synchronous=FULL.
pub fn open_target(path: &Path) -> Connection {
    let c = Connection::open(path).expect("open target");
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    let _: String = c
        .query_row("PRAGMA journal_mode=TRUNCATE", [], |r| r.get(0))
        .expect("journal_mode");
    c.pragma_update(None, "synchronous", "FULL").unwrap();
    c
}
