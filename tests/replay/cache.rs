//! The journaled cache (`src/store.rs`):
//!
//! * on open, journal entries after the cache's applied LSN are applied to it (a crash
//!   between the journal write and the cache commit), and a deleted cache is rebuilt;
//! * there is no way to write the cache around the journal: not through `Store::read`, not
//!   through a separate connection to the cache file (guard triggers), while reads work;
//! * a cache that does not belong to the journal's history is refused: another journal
//!   (`CacheMismatch`), ahead of the journal (`CacheAhead`), older than what the journal
//!   retains (`CacheBehind`);
//! * an application's own `JournalEvent` type goes through journal, cache and target; a
//!   consumer of another event type stops on its records instead of skipping them;
//! * concurrent `apply` from 8 threads: unique, contiguous LSNs, every row in the cache and
//!   (after a sync) the target;
//! * a refused change set returns `CacheError::ChangeRefused`, changes nothing and consumes no LSN.

use std::collections::BTreeMap;
use std::path::Path;
use syncjournal::error::{CacheError, TargetError};

use crate::support::events::now_ms;
use crate::support::journal::{SEG_BYTES, copy_dir};
use crate::support::store::{
    Paths, SCHEMA, apply_items, dump_all, dump_cache, dump_target, item, item_ids, local_opts,
    local_store, open, store_opts, tag,
};
use crate::support::targets::{copy_db, open_ro};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use syncjournal::event::{KIND_CHANGESET, decode_event, encode_event};
use syncjournal::{
    ApplyContext, ApplyError, ChangeSet, Error, Journal, JournalEvent, JournalOptions,
    RejectPolicy, ReplayOptions, Store, StoreOptions, TargetOptions, Value,
};

fn journal_opts() -> JournalOptions {
    JournalOptions::new()
        .segment_bytes_max(SEG_BYTES)
        .retain_acked_ms(0)
}

/// Every record of a closed journal: (LSN, kind, payload).
fn journal_records(dir: &Path) -> Vec<(u64, u8, Vec<u8>)> {
    let journal = Journal::open(dir, journal_opts()).expect("open journal");
    let first = journal.state().first_lsn;
    let records = journal
        .reader(first)
        .expect("reader")
        .map(|r| {
            let r = r.expect("record");
            (r.lsn, r.kind, r.payload.to_vec())
        })
        .collect();
    journal.close().expect("close journal");
    records
}

fn applied_lsn(store: &Store) -> Option<u64> {
    store.status().expect("status").cache_applied_lsn
}

#[test]
fn entries_journaled_but_not_committed_to_the_cache_are_applied_on_open() {
    let (_dir, paths) = Paths::temp();
    let opts = || store_opts(&paths.target, RejectPolicy::Stop);
    let store = open(&paths, opts());
    apply_items(&store, 1..=2);
    let journal_id = store.journal_state().journal_id;
    store.close().unwrap();

    // A crash after the journal write, before the cache commit: the records are in the
    // journal the cache knows, the cache does not have them.
    let missed = [
        ChangeSet::new().update("items", [("id", 1)], [("name", "renamed")]),
        ChangeSet::new().delete("items", [("id", 2)]),
        item(3),
        tag("x", 1.5).upsert(
            "pairs",
            [("a", Value::from("k")), ("b", Value::Integer(1))],
            [("v", Value::Blob(vec![0, 1]))],
        ),
    ];
    {
        let journal = Journal::open(&paths.journal, journal_opts()).unwrap();
        assert_eq!(journal.id(), journal_id);
        for cs in &missed {
            let payload = encode_event(now_ms(), cs).unwrap();
            journal.append_kind(KIND_CHANGESET, &payload).unwrap();
        }
        journal.close().unwrap();
    }
    let before = {
        let c = open_ro(&paths.cache);
        (item_ids(&c), dump_all(&c).unwrap())
    };
    assert_eq!(before.0, vec![1, 2], "the cache does not have them yet");

    let store = open(&paths, opts());
    assert_eq!(store.journal_state().durable_lsn, 6);
    assert_eq!(
        applied_lsn(&store),
        Some(6),
        "the cache caught up to the head"
    );
    let cache = dump_cache(&store);
    let items = &cache[0];
    assert_eq!(items.len(), 2);
    assert_eq!(items[0][0], Value::Integer(1));
    assert_eq!(items[0][1], Value::from("renamed"));
    assert_eq!(items[1][0], Value::Integer(3));
    assert_eq!(
        cache[1],
        vec![vec![
            Value::from("k"),
            Value::Integer(1),
            Value::Blob(vec![0, 1]),
            Value::Null
        ]]
    );
    assert_eq!(
        cache[2],
        vec![vec![Value::from("x"), Value::Real(1.5), Value::Null]]
    );
    // And the target gets the same, once.
    let report = store.sync_now();
    assert!(report.error.is_none(), "{report}");
    assert_eq!(report.applied, 6);
    assert_eq!(dump_target(&paths.target), cache);
    store.close().unwrap();

    // Reopening applies nothing twice.
    let store = open(&paths, opts());
    assert_eq!(applied_lsn(&store), Some(6));
    assert_eq!(dump_cache(&store), cache);
    store.close().unwrap();

    // A deleted cache is rebuilt from the journal (all six entries are still in the active
    // segment, which is never retired).
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{}{suffix}", paths.cache.display());
        let _ = std::fs::remove_file(p);
    }
    let store = open(&paths, opts());
    assert_eq!(applied_lsn(&store), Some(6));
    assert_eq!(dump_cache(&store), cache);
}

/// The write is refused; returns the error message.
fn guard_refuses(conn: &Connection, sql: &str) -> String {
    match conn.execute(sql, []) {
        Ok(n) => panic!("{sql:?} went around the journal ({n} rows)"),
        Err(e) => e.to_string(),
    }
}

/// Through `other` (a connection of its own to the cache): the rows are `snapshot`, every
/// write of [`WRITES`] is refused by the guards, and the rows are still `snapshot`.
fn assert_writes_refused(other: &Connection, snapshot: &[Vec<Vec<Value>>]) {
    assert_eq!(dump_all(other).unwrap(), snapshot);
    for sql in WRITES {
        let message = guard_refuses(other, sql);
        assert!(
            message.contains("syncjournal"),
            "{sql:?} must be refused by the guards, not by {message:?}"
        );
    }
    assert_eq!(dump_all(other).unwrap(), snapshot);
}

fn fill(store: &Store) {
    apply_items(store, 1..=2);
    store.apply(&tag("t", 1.0)).unwrap();
    store
        .apply(&ChangeSet::new().upsert(
            "pairs",
            [("a", Value::from("p")), ("b", Value::Integer(1))],
            [("note", "n")],
        ))
        .unwrap();
}

const WRITES: [&str; 12] = [
    "INSERT INTO items (id, name) VALUES (100, 'sneaky')",
    "UPDATE items SET name = 'sneaky'",
    "DELETE FROM items",
    "REPLACE INTO items (id, name) VALUES (1, 'sneaky')",
    "INSERT INTO pairs (a, b) VALUES ('q', 2)",
    "UPDATE pairs SET note = 'sneaky'",
    "DELETE FROM pairs",
    "INSERT INTO tags (tag, weight) VALUES ('u', 2.0) ON CONFLICT (tag) DO UPDATE SET weight = 3.0",
    "UPDATE tags SET weight = 9.0",
    "DELETE FROM tags WHERE tag = 't'",
    "INSERT INTO tags (tag, weight) VALUES ('t', 2.0) ON CONFLICT (tag) DO UPDATE SET weight = 3.0",
    "INSERT OR REPLACE INTO tags (tag, weight) VALUES ('t', 5.0)",
];

#[test]
fn the_cache_cannot_be_written_around_the_journal() {
    let (_dir, paths, store) = local_store();
    fill(&store);
    let snapshot = dump_cache(&store);

    // Through the store's read connection: refused.
    for sql in WRITES {
        assert!(
            store.read(|c| c.execute(sql, [])).is_err(),
            "{sql:?} through Store::read"
        );
    }
    assert!(
        store
            .read(|c| c.execute_batch("CREATE TABLE side (x); DROP TABLE items;"))
            .is_err()
    );
    assert_eq!(dump_cache(&store), snapshot);

    // Through a separate connection to the cache file, while the store is open: reads work,
    // writes are refused by the guards.
    let other = Connection::open(&paths.cache).unwrap();
    assert_writes_refused(&other, &snapshot);
    assert_eq!(dump_cache(&store), snapshot);

    // The store itself still writes.
    store.apply(&item(3)).unwrap();
    assert_eq!(item_ids(&other), vec![1, 2, 3]);
    let snapshot = dump_cache(&store);
    store.close().unwrap();
    drop(other);

    // And with the store closed.
    let other = Connection::open(&paths.cache).unwrap();
    assert_writes_refused(&other, &snapshot);
    drop(other);
    let store = open(&paths, local_opts());
    assert_eq!(dump_cache(&store), snapshot);
    assert_eq!(applied_lsn(&store), Some(5));
}

/// The module documentation promises a clear message to code that opens the cache file
/// directly: every write fails with "no such function: write_through_the_syncjournal_store"
/// (the guard calls a function only the store's connection has).
#[test]
fn a_write_around_the_journal_says_why_it_is_refused() {
    let (_dir, paths, store) = local_store();
    fill(&store);
    let other = Connection::open(&paths.cache).unwrap();
    for sql in WRITES {
        let message = guard_refuses(&other, sql);
        assert!(
            message.contains("write_through_the_syncjournal_store"),
            "{sql:?} was refused, but with {message:?} instead of the guard's message"
        );
    }
}

/// The store's own bookkeeping table in the cache (`syncjournal_cache`, the applied LSN) is
/// a table of the cache like the others: the module documentation says the guards are on
/// "every table of the cache". Rewinding it from outside would make the next open apply
/// entries twice.
#[test]
fn the_cache_bookkeeping_cannot_be_written_around_the_store() {
    let (_dir, paths, store) = local_store();
    fill(&store);
    let snapshot = dump_cache(&store);
    assert!(
        store
            .read(|c| c.execute("UPDATE syncjournal_cache SET applied_lsn = 0", []))
            .is_err()
    );
    store.close().unwrap();
    let other = Connection::open(&paths.cache).unwrap();
    let rewound = other.execute("UPDATE syncjournal_cache SET applied_lsn = 0", []);
    let deleted = other.execute("DELETE FROM syncjournal_cache", []);
    drop(other);
    // Whatever happened, the store must open on a consistent cache.
    let reopened = Store::<ChangeSet>::open(&paths.journal, &paths.cache, local_opts());
    assert!(
        rewound.is_err() && deleted.is_err(),
        "a separate connection rewrote the cache's applied LSN (update: {rewound:?}, delete: {deleted:?}); reopening then gives {:?}",
        reopened.as_ref().map(|_| "Ok")
    );
    let store = reopened.unwrap();
    assert_eq!(dump_cache(&store), snapshot);
}

#[test]
fn a_cache_from_another_journal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = Paths::in_dir(&dir.path().join("a"));
    let b = Paths::in_dir(&dir.path().join("b"));
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    let store_a = open(&a, local_opts());
    store_a.apply(&item(1)).unwrap();
    let id_a = store_a.journal_state().journal_id;
    store_a.close().unwrap();
    let store_b = open(&b, local_opts());
    let id_b = store_b.journal_state().journal_id;
    store_b.close().unwrap();
    assert_ne!(id_a, id_b);

    match Store::<ChangeSet>::open(&b.journal, &a.cache, local_opts()) {
        Err(Error::Cache(CacheError::Mismatch {
            path,
            expected,
            found,
        })) => {
            assert_eq!(path, a.cache);
            assert_eq!(expected, id_b);
            assert_eq!(found, id_a.to_string());
        }
        other => panic!("expected CacheMismatch, got {other:?}"),
    }
    // Nothing was changed: the cache still opens with its own journal.
    let store_a = open(&a, local_opts());
    assert_eq!(item_ids(&open_ro(&a.cache)), vec![1]);
    assert_eq!(applied_lsn(&store_a), Some(1));
}

#[test]
fn a_cache_ahead_of_the_journal_is_refused() {
    let (dir, paths, store) = local_store();
    apply_items(&store, 1..=2);
    store.close().unwrap();
    let old_journal = dir.path().join("journal-old");
    copy_dir(&paths.journal, &old_journal);

    let store = open(&paths, local_opts());
    apply_items(&store, 3..=5);
    store.close().unwrap();

    match Store::<ChangeSet>::open(&old_journal, &paths.cache, local_opts()) {
        Err(Error::Cache(CacheError::Ahead {
            path,
            cache_lsn,
            journal_lsn,
        })) => {
            assert_eq!(path, paths.cache);
            assert_eq!((cache_lsn, journal_lsn), (5, 2));
        }
        other => panic!("expected CacheAhead, got {other:?}"),
    }
    // The cache was not touched.
    assert_eq!(item_ids(&open_ro(&paths.cache)), vec![1, 2, 3, 4, 5]);
    let store = open(&paths, local_opts());
    assert_eq!(applied_lsn(&store), Some(5));
}

#[test]
fn a_cache_older_than_the_retained_journal_is_refused_or_reseeded() {
    let (dir, paths) = Paths::temp();
    let opts = || store_opts(&paths.target, RejectPolicy::Stop);
    let store = open(&paths, opts());
    apply_items(&store, 1..=2);
    store.close().unwrap();
    let old_cache = dir.path().join("cache-old.db");
    copy_db(&paths.cache, &old_cache);

    // Fill several small segments, sync: the target acknowledges them and they are retired.
    let store = open(&paths, opts());
    for i in 0..16i64 {
        store
            .apply(&ChangeSet::new().upsert(
                "items",
                [("id", 10 + i)],
                [("data", Value::Blob(vec![i as u8; 20_000]))],
            ))
            .unwrap();
    }
    let report = store.sync_now();
    assert!(report.error.is_none(), "{report}");
    let js = store.journal_state();
    assert_eq!(js.acked_lsn, 18);
    assert!(
        js.first_lsn > 3,
        "segments holding LSNs 1..3 were retired (first retained: {})",
        js.first_lsn
    );
    let first_retained = js.first_lsn;
    store.close().unwrap();

    match Store::<ChangeSet>::open(&paths.journal, &old_cache, opts().reseed_when_needed(false)) {
        Err(Error::Cache(CacheError::Behind {
            path,
            cache_lsn,
            first_retained: f,
        })) => {
            assert_eq!(path, old_cache);
            assert_eq!((cache_lsn, f), (2, first_retained));
        }
        other => panic!("expected CacheBehind, got {other:?}"),
    }
    assert_eq!(item_ids(&open_ro(&old_cache)), vec![1, 2], "not touched");
    // The current cache is fine.
    let store = open(&paths, opts());
    assert_eq!(applied_lsn(&store), Some(18));
    store.close().unwrap();
    // By default the old cache is rebuilt from the target (which holds every entry) at open.
    let store = Store::<ChangeSet>::open(&paths.journal, &old_cache, opts()).unwrap();
    assert_eq!(applied_lsn(&store), Some(18));
    let ids: Vec<i64> = store
        .read(|c| {
            c.prepare("SELECT id FROM items ORDER BY id")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
        .unwrap();
    let mut want = vec![1, 2];
    want.extend(10..26);
    assert_eq!(ids, want, "reseeded from the target");
    assert_eq!(
        store.pull_status().unwrap().cursor_seq,
        18,
        "the cursor at the log's head"
    );
}

// ---------------------------------------------------------------------------------------------
// An application's own event type.
// ---------------------------------------------------------------------------------------------

const CERT_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS certificates (
    id INTEGER PRIMARY KEY, domain TEXT NOT NULL, not_after TEXT NOT NULL,
    renewals INTEGER NOT NULL DEFAULT 0);
";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CertEvent {
    Issued {
        id: i64,
        domain: String,
        not_after: String,
    },
    CertificateRenewed {
        id: i64,
        not_after: String,
    },
    Revoked {
        id: i64,
    },
}

impl JournalEvent for CertEvent {
    const KIND: u8 = 0x40;

    fn apply(&self, db: &mut ApplyContext<'_>) -> Result<(), ApplyError> {
        let (n, id) = match self {
            CertEvent::Issued {
                id,
                domain,
                not_after,
            } => (
                db.conn().execute(
                    "INSERT INTO certificates (id, domain, not_after) VALUES (?1, ?2, ?3)",
                    (id, domain, not_after),
                )?,
                id,
            ),
            // Not idempotent on purpose: applied twice, the count would show it.
            CertEvent::CertificateRenewed { id, not_after } => (
                db.conn().execute(
                    "UPDATE certificates SET not_after = ?1, renewals = renewals + 1 WHERE id = ?2",
                    (not_after, id),
                )?,
                id,
            ),
            CertEvent::Revoked { id } => (
                db.conn()
                    .execute("DELETE FROM certificates WHERE id = ?1", [id])?,
                id,
            ),
        };
        if n == 0 {
            return Err(ApplyError::permanent(format!("no certificate {id}")));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

fn cert_opts(target: &Path) -> StoreOptions {
    StoreOptions::new()
        .journal(journal_opts())
        .cache_schema(CERT_SCHEMA)
        .target(
            target,
            TargetOptions::new()
                .create_if_missing(true)
                .create_schema(CERT_SCHEMA),
        )
        .replay(ReplayOptions::new().retry_attempts_max(0))
        .background_sync(false)
}

fn dump_certs(c: &Connection) -> rusqlite::Result<Vec<(i64, String, String, i64)>> {
    c.prepare("SELECT id, domain, not_after, renewals FROM certificates ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect()
}

#[test]
fn an_application_event_type_goes_through_journal_cache_and_target() {
    let (dir, paths) = Paths::temp();
    let issued = |id: i64| CertEvent::Issued {
        id,
        domain: format!("host-{id}.example.org"),
        not_after: "2026-01-01".into(),
    };
    let renewed = |id: i64, until: &str| CertEvent::CertificateRenewed {
        id,
        not_after: until.into(),
    };
    let store: Store<CertEvent> =
        Store::open(&paths.journal, &paths.cache, cert_opts(paths.target.path())).unwrap();
    let events = [
        issued(1),
        issued(2),
        renewed(1, "2027-01-01"),
        renewed(1, "2028-01-01"),
        CertEvent::Revoked { id: 2 },
        issued(3),
    ];
    for (i, e) in events.iter().enumerate() {
        assert_eq!(store.apply(e).unwrap(), i as u64 + 1);
    }
    // Refused by the cache: an error, nothing journaled.
    for bad in [
        renewed(99, "2030-01-01"),
        issued(1),
        CertEvent::Revoked { id: 2 },
    ] {
        match store.apply(&bad) {
            Err(Error::Cache(CacheError::ChangeRefused { .. })) => {}
            other => panic!("{bad:?}: expected Rejected, got {other:?}"),
        }
    }
    assert_eq!(store.journal_state().next_lsn, 7);
    let expected = vec![
        (
            1,
            "host-1.example.org".to_string(),
            "2028-01-01".to_string(),
            2,
        ),
        (
            3,
            "host-3.example.org".to_string(),
            "2026-01-01".to_string(),
            0,
        ),
    ];
    assert_eq!(store.read(dump_certs).unwrap(), expected);
    let report = store.sync_now();
    assert!(report.error.is_none(), "{report}");
    assert_eq!(report.applied, 6);
    assert_eq!(dump_certs(&open_ro(paths.target.path())).unwrap(), expected);
    store.close().unwrap();

    // The journal holds the events, in order, under the application's kind.
    let records = journal_records(&paths.journal);
    assert_eq!(records.len(), 6);
    for ((lsn, kind, payload), (i, e)) in records.iter().zip(events.iter().enumerate()) {
        assert_eq!(*lsn, i as u64 + 1);
        assert_eq!(*kind, 0x40);
        let (_, back): (u64, CertEvent) = decode_event(payload).unwrap();
        assert_eq!(&back, e);
    }

    // Reopen: nothing applied twice, anywhere (the renewal counts would show it).
    let store: Store<CertEvent> =
        Store::open(&paths.journal, &paths.cache, cert_opts(paths.target.path())).unwrap();
    assert_eq!(store.read(dump_certs).unwrap(), expected);
    store.apply(&renewed(3, "2029-01-01")).unwrap();
    assert!(store.sync_now().error.is_none());
    let mut expected = expected;
    expected[1].2 = "2029-01-01".into();
    expected[1].3 = 1;
    assert_eq!(store.read(dump_certs).unwrap(), expected);
    assert_eq!(dump_certs(&open_ro(paths.target.path())).unwrap(), expected);
    store.close().unwrap();

    // A fresh cache is rebuilt from the application's events too.
    let fresh = dir.path().join("fresh.db");
    let store: Store<CertEvent> =
        Store::open(&paths.journal, &fresh, cert_opts(paths.target.path())).unwrap();
    assert_eq!(store.read(dump_certs).unwrap(), expected);
    store.close().unwrap();

    // A store of another event type refuses these records instead of skipping them.
    let other = dir.path().join("other.db");
    match Store::<ChangeSet>::open(
        &paths.journal,
        &other,
        StoreOptions::new()
            .journal(journal_opts())
            .cache_schema(SCHEMA),
    ) {
        Err(Error::Target(TargetError::UnknownKind {
            lsn,
            kind,
            expected,
        })) => {
            assert_eq!((kind, expected), (0x40, KIND_CHANGESET));
            assert_eq!(lsn, 1);
        }
        other => panic!("expected UnknownKind, got {other:?}"),
    }
}

#[test]
fn concurrent_applies_get_unique_contiguous_lsns_and_all_land() {
    const THREADS: i64 = 8;
    const PER_THREAD: i64 = 25;
    let (_dir, paths) = Paths::temp();
    let store = open(&paths, store_opts(&paths.target, RejectPolicy::Stop));
    let name = |t: i64, i: i64| format!("thread-{t}-row-{i}");
    let per_thread: Vec<Vec<(u64, i64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = &store;
                s.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| {
                            let id = t * 1000 + i;
                            let cs = ChangeSet::new()
                                .upsert("items", [("id", id)], [("name", name(t, i))])
                                .upsert("items", [("id", id)], [("qty", i)]);
                            (store.apply(&cs).expect("apply"), id)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total = (THREADS * PER_THREAD) as u64;
    // Each thread's LSNs increase; all of them together are 1..=total, each once.
    for lsns in &per_thread {
        assert!(lsns.windows(2).all(|w| w[0].0 < w[1].0), "{lsns:?}");
    }
    let by_lsn: BTreeMap<u64, i64> = per_thread.iter().flatten().copied().collect();
    assert_eq!(by_lsn.len() as u64, total, "LSNs are unique");
    assert_eq!(
        by_lsn.keys().copied().collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>(),
        "LSNs are contiguous"
    );
    let st = store.status().unwrap();
    assert_eq!((st.head_lsn, st.cache_applied_lsn), (total, Some(total)));

    let mut expected: Vec<(i64, String, i64)> = (0..THREADS)
        .flat_map(|t| (0..PER_THREAD).map(move |i| (t * 1000 + i, name(t, i), i)))
        .collect();
    expected.sort();
    let rows = |c: &Connection| -> rusqlite::Result<Vec<(i64, String, i64)>> {
        c.prepare("SELECT id, name, qty FROM items ORDER BY id")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect()
    };
    assert_eq!(store.read(rows).unwrap(), expected);
    let report = store.sync_now();
    assert!(report.error.is_none(), "{report}");
    assert_eq!(report.applied, total);
    assert_eq!(rows(&open_ro(paths.target.path())).unwrap(), expected);
    store.close().unwrap();

    // The record at each LSN is the change set that apply returned that LSN for.
    let records = journal_records(&paths.journal);
    assert_eq!(records.len() as u64, total);
    for (lsn, kind, payload) in records {
        assert_eq!(kind, KIND_CHANGESET);
        let (_, cs): (u64, ChangeSet) = decode_event(&payload).unwrap();
        assert_eq!(
            cs.mutations[0].key()[0].1,
            Value::Integer(by_lsn[&lsn]),
            "LSN {lsn}"
        );
    }
}

#[test]
fn a_refused_change_set_changes_nothing_and_consumes_no_lsn() {
    let (_dir, paths) = Paths::temp();
    let store = open(&paths, store_opts(&paths.target, RejectPolicy::Stop));
    assert_eq!(store.apply(&item(1)).unwrap(), 1);
    let snapshot = dump_cache(&store);
    let refused = [
        // valid mutations first, then one that fails
        item(2).update("items", [("id", 99)], [("name", "x")]),
        ChangeSet::new()
            .update("items", [("id", 1)], [("name", "changed")])
            .delete("items", [("id", 1)])
            .insert("items", [("id", 5)], [("name", "five")])
            .insert("items", [("id", 5)], [("name", "five again")]),
        tag("t", 1.0).upsert("tags", [("tag", "u")], [("raw", 1)]), // weight is NOT NULL
        item(3).upsert("nope", [("id", 1)], [("x", 1)]),
        item(4).upsert("items", [("id", 4)], [("qty", "four")]),
        item(1),
    ];
    for cs in &refused {
        match store.apply(cs) {
            Err(Error::Cache(CacheError::ChangeRefused { reason })) => assert!(!reason.is_empty()),
            other => panic!("{cs:?}: expected Rejected, got {other:?}"),
        }
        assert_eq!(dump_cache(&store), snapshot, "no trace of {cs:?}");
        let js = store.journal_state();
        assert_eq!((js.durable_lsn, js.next_lsn), (1, 2));
        assert_eq!(applied_lsn(&store), Some(1));
    }
    assert_eq!(store.apply(&item(2)).unwrap(), 2, "the next LSN");
    let report = store.sync_now();
    assert!(report.error.is_none(), "{report}");
    assert_eq!(item_ids(&open_ro(paths.target.path())), vec![1, 2]);
    assert_eq!(dump_target(&paths.target), dump_cache(&store));
    store.close().unwrap();
    let records = journal_records(&paths.journal);
    let decoded: Vec<ChangeSet> = records
        .iter()
        .map(|(_, _, p)| decode_event::<ChangeSet>(p).unwrap().1)
        .collect();
    assert_eq!(
        decoded,
        vec![item(1), item(2)],
        "nothing refused was journaled"
    );
}
