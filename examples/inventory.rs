//! The seed application in miniature: an infrastructure inventory (certificates, hosts,
//! domains) kept in a local SQLite cache and synced to a database on a "share".
//!
//! Run: `cargo run --example inventory [DIR]` (default: a new temporary directory). Point DIR's
//! `share.db` at a real network share to see the real thing.
//!
//! It adds hosts, domains and certificates, edits and deletes some (the deletions that, in the
//! original application, never reached the share), prints the status while entries are
//! pending, forces a sync, checks that the share equals the cache, and prints the status again.

use std::path::PathBuf;

use syncjournal::{ChangeSet, Store, StoreOptions, TargetOptions, Value};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hosts (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, address TEXT, os TEXT);
CREATE TABLE IF NOT EXISTS domains (
    name TEXT PRIMARY KEY, host_id INTEGER, registrar TEXT);
CREATE TABLE IF NOT EXISTS certificates (
    id INTEGER PRIMARY KEY, domain TEXT NOT NULL, not_after TEXT NOT NULL, pem BLOB);
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir: PathBuf = match std::env::args().nth(1) {
        Some(d) => d.into(),
        None => tempfile::Builder::new()
            .prefix("syncjournal-inventory-")
            .tempdir()?
            .keep(),
    };
    std::fs::create_dir_all(&dir)?;
    let share = dir.join("share.db");
    let store: Store = Store::open(
        dir.join("journal"),
        dir.join("cache.db"),
        StoreOptions::new()
            .cache_schema(SCHEMA)
            .target(
                &share,
                // The example creates the "share" database; against a real share, leave this
                // off so that an unmounted share is an error, not a new empty local file.
                TargetOptions::new()
                    .create_if_missing(true)
                    .create_schema(SCHEMA),
            )
            // Applications normally keep the background sync thread (the default with a
            // target); it is off here so that the pending entries and the force sync show.
            .background_sync(false),
    )?;

    // Inventory: 20 hosts, a domain and a certificate on each.
    for i in 1..=20i64 {
        let name = format!("web-{i:02}");
        let domain = format!("{name}.example.org");
        store.apply(
            &ChangeSet::new()
                .upsert(
                    "hosts",
                    [("id", i)],
                    [
                        ("name", Value::from(name.as_str())),
                        ("address", format!("10.0.0.{i}").into()),
                        ("os", "debian-12".into()),
                    ],
                )
                .upsert(
                    "domains",
                    [("name", domain.as_str())],
                    [("host_id", Value::from(i)), ("registrar", "acme".into())],
                )
                .upsert(
                    "certificates",
                    [("id", i)],
                    [
                        ("domain", Value::from(domain.as_str())),
                        ("not_after", "2026-12-31".into()),
                        ("pem", vec![0x30u8, 0x82, i as u8].into()),
                    ],
                ),
        )?;
    }
    // Renew some certificates, move a host, decommission three hosts with their domains and
    // certificates: the deletions must reach the share.
    for i in [2i64, 4, 6] {
        store.apply(&ChangeSet::new().update(
            "certificates",
            [("id", i)],
            [("not_after", "2027-12-31")],
        ))?;
    }
    store.apply(&ChangeSet::new().update("hosts", [("id", 7)], [("address", "10.0.1.7")]))?;
    for i in [3i64, 13, 17] {
        store.apply(
            &ChangeSet::new()
                .delete("certificates", [("id", i)])
                .delete("domains", [("name", format!("web-{i:02}.example.org"))])
                .delete("hosts", [("id", i)]),
        )?;
    }
    // A change the cache refuses is an error, and nothing is journaled.
    let refused = store.apply(&ChangeSet::new().update("hosts", [("id", 999)], [("os", "plan9")]));
    println!("refused as expected: {}", refused.unwrap_err());

    let before = store.status()?;
    println!(
        "before sync: head {} acknowledged {} pending {} entries ({} bytes)",
        before.head_lsn, before.acked_lsn, before.pending_entries, before.pending_bytes
    );
    let report = store.sync_now();
    println!("force sync: {report}");
    if let Some(e) = report.error {
        return Err(e.into());
    }

    // The share now holds exactly what the cache holds.
    let target = rusqlite::Connection::open(&share)?;
    for table in ["hosts", "domains", "certificates"] {
        let q = format!("SELECT * FROM {table} ORDER BY 1");
        let dump = |c: &rusqlite::Connection| -> rusqlite::Result<Vec<Vec<Value>>> {
            let mut s = c.prepare(&q)?;
            let n = s.column_count();
            s.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())?
                .collect()
        };
        let cache_rows = store.read(dump)?;
        let share_rows = dump(&target)?;
        assert_eq!(
            cache_rows, share_rows,
            "{table} differs between cache and share"
        );
        println!("{table}: {} rows, share equals cache", share_rows.len());
    }
    let after = store.status()?;
    println!(
        "after sync: head {} acknowledged {} pending {}; last error: {}",
        after.head_lsn,
        after.acked_lsn,
        after.pending_entries,
        after
            .last_error
            .as_ref()
            .map_or("none", |e| e.message.as_str())
    );
    println!("files: {}", dir.display());
    Ok(())
}
