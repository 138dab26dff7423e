//! Hostile and careless input to the store (issue 10):
//!
//! * payload size: whatever `Store::apply` accepts decodes, at the cache (reopen without the
//!   cache) and at the target; the one limit is the journal's record limit on encoded bytes,
//!   checked before anything is written;
//! * NaN and NULL keys are refused, at `apply` and at replay of a crafted record (SQLite binds
//!   NaN as NULL: the cache and the target would pick different rowids); NaN elsewhere is
//!   NULL on both sides;
//! * an `apply` that fails after the journal write reports the outcome as in doubt
//!   (`CacheError::AppliedInDoubt` with the LSN), never as a plain failure: an EIO from `msync`
//!   (durability unknown), `SQLITE_FULL` at the cache commit (durable, cache not updated);
//!   `status()` works on the poisoned store and `poisoned()` says why;
//! * `ApplyContext::lsn` is the entry's LSN at the cache (apply, catch-up) and the target;
//! * writes around the journal: virtual tables (FTS5, R*Tree) and DML in `cache_schema` are
//!   refused at open (and rolled back); a table another connection created and wrote is
//!   noticed at the next apply and refused at the next open, one it created empty is guarded;
//!   a restore over the open cache and a file renamed over it are noticed at the next apply;
//! * `SQLITE_FULL` with free space (issue 9 finding 8): the writer's statement journal never
//!   spills to a temporary file (SQLite's temp directory may be a small or full file system
//!   that is not the cache's), and 4 threads applying thousands of change sets, with SQLite's
//!   own error log installed, meet no `SQLITE_FULL`.

use std::sync::Arc;
use syncjournal::error::{CacheError, JournalError, TargetError};

use crate::support::events::now_ms;
use crate::support::journal::SEG_BYTES;
use crate::support::store::{
    Paths, SCHEMA, apply_items, dump_cache, dump_target, item, item_ids, local_opts, local_store,
    open, store_opts, tag,
};
use crate::support::targets::{copy_db, open_ro};
use syncjournal::event::{KIND_CHANGESET, decode_event, encode_event, encode_event_within};
use syncjournal::fault::{FaultPlan, IoOp};
use syncjournal::{
    ApplyContext, ApplyError, ChangeSet, Error, Journal, JournalEvent, JournalOptions,
    RejectPolicy, ReplayOptions, Replayer, Store, StoreOptions, TargetOptions, Value,
};

/// A change set of `n` small upserts into `items`.
fn many_upserts(n: i64) -> ChangeSet {
    (0..n).fold(ChangeSet::new(), |cs, i| {
        cs.upsert("items", [("id", i)], [("qty", i)])
    })
}

#[test]
fn a_change_set_of_300000_upserts_that_apply_accepts_replays_to_the_cache_and_the_target() {
    let (dir, paths) = Paths::temp();
    let opts = || store_opts(&paths.target, RejectPolicy::Stop).journal(JournalOptions::new());
    let cs = many_upserts(300_000);
    let encoded = encode_event(0, &cs).unwrap().len();
    assert!(
        encoded > 6_500_000,
        "{encoded} bytes: past the old threshold"
    );
    let store = open(&paths, opts());
    let lsn = store.apply(&cs).unwrap();
    let report = store.sync_now();
    assert!(report.error.is_none(), "{report}");
    assert_eq!(report.applied, 1);
    let cache = dump_cache(&store);
    assert_eq!(cache[0].len(), 300_000);
    assert_eq!(dump_target(&paths.target), cache);
    store.close().unwrap();

    // Without the cache, open rebuilds it from the journal: the record decodes.
    std::fs::remove_file(&paths.cache).unwrap();
    let _ = std::fs::remove_file(dir.path().join("cache.db-wal"));
    let _ = std::fs::remove_file(dir.path().join("cache.db-shm"));
    let store = open(&paths, opts());
    assert_eq!(dump_cache(&store), cache);
    assert_eq!(store.status().unwrap().cache_applied_lsn, Some(lsn));
}

/// A change set (one upsert of item 1 with a blob) whose payload is exactly `len` bytes when
/// created now (the creation time takes 9 bytes, as for every time after 1970-02-19).
fn change_set_of_payload_bytes(len: usize) -> ChangeSet {
    let with_blob = |n: usize| {
        ChangeSet::new().upsert("items", [("id", 1)], [("data", Value::Blob(vec![7; n]))])
    };
    let probe = len - 64;
    let overhead = encode_event(now_ms(), &with_blob(probe)).unwrap().len() - probe;
    let cs = with_blob(len - overhead);
    assert_eq!(encode_event(now_ms(), &cs).unwrap().len(), len);
    cs
}

fn remove_cache(paths: &Paths) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = paths.cache.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn an_event_of_exactly_the_record_limit_is_applied_and_replays_and_one_byte_more_changes_nothing() {
    let (_dir, paths) = Paths::temp();
    let opts = || store_opts(&paths.target, RejectPolicy::Stop).journal(JournalOptions::new());
    let max = JournalOptions::new().payload_bytes_limit();
    assert_eq!(max, JournalOptions::RECORD_BYTES_DEFAULT);
    let store = open(&paths, opts());

    // The store's payload is the event's encoding and its stamp (`journal-format.md` §5.2).
    let stamp = syncjournal::event::STAMP_BYTES;
    let over = change_set_of_payload_bytes(max + 1 - stamp);
    match store.apply(&over) {
        Err(Error::Cache(CacheError::EventTooLarge { kind, len, max: m })) => {
            assert_eq!((kind, len, m), (KIND_CHANGESET, max + 1, max));
        }
        other => panic!("one byte over the limit: {other:?}"),
    }
    assert_eq!(store.journal_state().durable_lsn, 0, "nothing journaled");
    assert!(
        store.read(|c| Ok(item_ids(c))).unwrap().is_empty(),
        "cache unchanged"
    );

    let at = change_set_of_payload_bytes(max - stamp);
    let lsn = store.apply(&at).unwrap();
    let report = store.sync_now();
    assert!(report.error.is_none(), "{report}");
    let cache = dump_cache(&store);
    assert_eq!(dump_target(&paths.target), cache);
    store.close().unwrap();
    remove_cache(&paths);
    let store = open(&paths, opts());
    assert_eq!(dump_cache(&store), cache, "rebuilt from the journal");
    assert_eq!(store.status().unwrap().cache_applied_lsn, Some(lsn));
}

#[test]
fn encode_within_accepts_the_limit_and_refuses_one_byte_more_and_decoding_has_no_limit_of_its_own()
{
    let cs = change_set_of_payload_bytes(5000);
    let at = now_ms();
    let payload = encode_event_within(at, &cs, None, 5000).unwrap();
    assert_eq!(
        decode_event::<ChangeSet>(&payload).unwrap(),
        (at, cs.clone())
    );
    match encode_event_within(at, &cs, None, 4999) {
        Err(Error::Cache(CacheError::EventTooLarge {
            len: 5000,
            max: 4999,
            ..
        })) => {}
        other => panic!("{other:?}"),
    }
    // A journal configured with a larger record limit holds larger payloads: they decode too.
    let big = change_set_of_payload_bytes(JournalOptions::RECORD_BYTES_DEFAULT + 1);
    let payload = encode_event(now_ms(), &big).unwrap();
    assert_eq!(decode_event::<ChangeSet>(&payload).unwrap().1, big);
}

#[test]
fn a_nan_key_is_refused_naming_the_column_and_nothing_is_journaled() {
    let (_dir, paths) = Paths::temp();
    let store = open(&paths, store_opts(&paths.target, RejectPolicy::Stop));
    for cs in [
        ChangeSet::new().insert("items", [("id", f64::NAN)], [("name", "x")]),
        ChangeSet::new().upsert("items", [("id", f64::NAN)], [("qty", 1)]),
        ChangeSet::new().delete("items", [("id", f64::NAN)]),
        ChangeSet::new().upsert(
            "pairs",
            [("a", Value::from("k")), ("b", Value::Real(f64::NAN))],
            [("v", 1)],
        ),
    ] {
        match store.apply(&cs) {
            Err(Error::Cache(CacheError::ChangeRefused { reason })) => {
                assert!(reason.contains("is NaN"), "{reason}");
                assert!(
                    reason.contains("key column items.id") || reason.contains("key column pairs.b"),
                    "{reason}"
                );
            }
            other => panic!("{cs:?}: {other:?}"),
        }
    }
    assert_eq!(store.journal_state().durable_lsn, 0);
    assert!(store.read(|c| Ok(item_ids(c))).unwrap().is_empty());
}

#[test]
fn crafted_records_with_nan_or_null_keys_are_refused_at_the_cache_and_at_the_target() {
    for key in [Value::Real(f64::NAN), Value::Null] {
        let (_dir, paths) = Paths::temp();
        let opts = || store_opts(&paths.target, RejectPolicy::Stop);
        let store = open(&paths, opts());
        store.apply(&item(1)).unwrap();
        store.close().unwrap();
        {
            let journal = Journal::open(
                &paths.journal,
                JournalOptions::new().segment_bytes_max(SEG_BYTES),
            )
            .unwrap();
            let cs = ChangeSet::new().insert("items", [("id", key.clone())], [("name", "x")]);
            journal
                .append_kind(KIND_CHANGESET, &encode_event(now_ms(), &cs).unwrap())
                .unwrap();
            journal.close().unwrap();
        }
        // Opening the store refuses LSN 2, naming its key column.
        let open_is_refused = || {
            let e = Store::<ChangeSet>::open(&paths.journal, &paths.cache, opts())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("LSN 2") && e.contains("key column items.id"),
                "{e}"
            );
        };
        // The cache has applied LSN 1; catching up with LSN 2 refuses it.
        open_is_refused();
        // Without the cache: the same refusal when rebuilding it.
        remove_cache(&paths);
        open_is_refused();
        // A replayer of the journal (no cache involved) refuses it at the target.
        let mut replayer = Replayer::<ChangeSet>::new(
            Arc::new(
                Journal::open(
                    &paths.journal,
                    JournalOptions::new().segment_bytes_max(SEG_BYTES),
                )
                .unwrap(),
            ),
            paths.target.path(),
            TargetOptions::new()
                .create_if_missing(true)
                .create_schema(SCHEMA),
            ReplayOptions::new().retry_attempts_max(0),
        );
        let report = replayer.sync_now();
        match report.error {
            Some(Error::Target(TargetError::EntryRejected { lsn: 2, reason, .. })) => {
                assert!(reason.contains("key column items.id"), "{reason}")
            }
            other => panic!("{key:?}: {other:?}"),
        }
        assert_eq!(item_ids(&open_ro(paths.target.path())), vec![1]);
    }
}

#[test]
fn nan_outside_the_key_is_null_at_the_cache_and_at_the_target_and_infinities_are_kept() {
    let (_dir, paths) = Paths::temp();
    let store = open(&paths, store_opts(&paths.target, RejectPolicy::Stop));
    store
        .apply(
            &ChangeSet::new()
                .insert("items", [("id", 1)], [("price", f64::NAN)])
                .insert("items", [("id", 2)], [("price", f64::INFINITY)])
                .insert("items", [("id", 3)], [("price", f64::NEG_INFINITY)])
                .upsert(
                    "pairs",
                    [("a", Value::from("k")), ("b", 1.into())],
                    [("v", f64::NAN)],
                ),
        )
        .unwrap();
    // A NOT NULL column refuses NaN as it refuses NULL.
    match store.apply(&tag("t", f64::NAN)) {
        Err(Error::Cache(CacheError::ChangeRefused { reason })) => {
            assert!(reason.contains("NOT NULL"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(store.sync_now().error.is_none());
    let cache = dump_cache(&store);
    let prices: Vec<&Value> = cache[0].iter().map(|r| &r[3]).collect();
    assert_eq!(
        prices,
        [
            &Value::Null,
            &Value::Real(f64::INFINITY),
            &Value::Real(f64::NEG_INFINITY)
        ]
    );
    assert_eq!(cache[1][0][2], Value::Null);
    assert_eq!(dump_target(&paths.target), cache);
}

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

fn faulty_opts(paths: &Paths, plan: &Arc<FaultPlan>) -> syncjournal::StoreOptions {
    store_opts(&paths.target, RejectPolicy::Stop).journal(
        JournalOptions::new()
            .segment_bytes_max(SEG_BYTES)
            .fault_injector(plan.clone()),
    )
}

/// A store (of [`faulty_opts`]) in a new directory that applied item 1, and the error of
/// applying item 2 with the next `op` failing with `errno`: (directory, paths, plan, store,
/// error).
fn second_apply_failing(
    op: IoOp,
    errno: i32,
) -> (tempfile::TempDir, Paths, Arc<FaultPlan>, Store, Error) {
    let (dir, paths) = Paths::temp();
    let plan = Arc::new(FaultPlan::new());
    let store = open(&paths, faulty_opts(&paths, &plan));
    store.apply(&item(1)).unwrap();
    plan.fail(op, 0, Some(1), errno);
    let e = store.apply(&item(2)).unwrap_err();
    (dir, paths, plan, store, e)
}

#[test]
fn an_msync_failure_after_the_journal_write_is_in_doubt_and_the_reopened_store_says_what_became_of_it()
 {
    let (_dir, paths, plan, store, e) = second_apply_failing(IoOp::SyncData, EIO);
    match &e {
        Error::Cache(CacheError::AppliedInDoubt {
            lsn: 2,
            durable: false,
            cause,
        }) => {
            assert!(
                matches!(
                    **cause,
                    Error::Journal(JournalError::Io { .. })
                        | Error::Journal(JournalError::Poisoned { .. })
                ),
                "{cause:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("journaled as LSN 2") && text.contains("durable is unknown"),
        "{text}"
    );
    // The store says it is poisoned, and its status still works.
    assert!(store.poisoned().is_some());
    assert!(store.journal_state().poisoned.is_some());
    let status = store.status().expect("status of a poisoned store");
    assert_eq!(status.cache_applied_lsn, Some(1));
    assert_eq!((status.head_lsn, status.pending_entries), (1, 1));
    assert!(matches!(
        store.apply(&item(3)),
        Err(Error::Journal(JournalError::Poisoned { .. }))
    ));
    drop(store);

    // What the error says to do: reopen, and look at the durable LSN.
    plan.clear();
    let store = open(&paths, faulty_opts(&paths, &plan));
    assert!(
        store.journal_state().durable_lsn >= 2,
        "the journal kept LSN 2"
    );
    assert_eq!(store.read(|c| Ok(item_ids(c))).unwrap(), vec![1, 2]);
    assert!(store.sync_now().error.is_none());
    assert_eq!(item_ids(&open_ro(paths.target.path())), vec![1, 2]);
}

#[test]
fn sqlite_full_at_the_cache_commit_is_in_doubt_durable_and_reaches_cache_and_target_once() {
    let (_dir, paths, plan, store, e) = second_apply_failing(IoOp::CacheCommit, ENOSPC);
    match &e {
        Error::Cache(CacheError::AppliedInDoubt {
            lsn: 2,
            durable: true,
            cause,
        }) => {
            let Error::Cache(CacheError::Sqlite { source, .. }) = &**cause else {
                panic!("{cause:?}")
            };
            assert_eq!(source.code(), Some(rusqlite::ffi::SQLITE_FULL));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("journaled durably as LSN 2"), "{e}");
    let why = store.poisoned().expect("the store is poisoned");
    assert!(why.contains("full"), "{why}");
    assert!(
        store.journal_state().poisoned.is_none(),
        "the journal is fine"
    );
    let status = store.status().expect("status of a poisoned store");
    assert_eq!(status.cache_applied_lsn, Some(1));
    assert_eq!(store.read(|c| Ok(item_ids(c))).unwrap(), vec![1]);
    drop(store);

    let store = open(&paths, faulty_opts(&paths, &plan));
    assert_eq!(store.read(|c| Ok(item_ids(c))).unwrap(), vec![1, 2]);
    assert!(store.sync_now().error.is_none());
    assert_eq!(item_ids(&open_ro(paths.target.path())), vec![1, 2]);
    assert_eq!(store.journal_state().durable_lsn, 2, "applied once");
}

#[test]
fn under_four_threads_every_journaled_event_is_reported_as_applied_or_in_doubt() {
    for op in [IoOp::CacheCommit, IoOp::SyncData] {
        let (_dir, paths) = Paths::temp();
        let plan = Arc::new(FaultPlan::new());
        let store = Arc::new(open(&paths, faulty_opts(&paths, &plan)));
        plan.fail(
            op,
            40,
            Some(1),
            if op == IoOp::SyncData { EIO } else { ENOSPC },
        );
        let outcomes: Vec<(i64, Result<u64, Error>)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4i64)
                .map(|t| {
                    let store = Arc::clone(&store);
                    s.spawn(move || {
                        (0..100)
                            .map(|i| {
                                let id = t * 1000 + i;
                                (id, store.apply(&item(id)))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert!(
            outcomes.iter().any(|(_, r)| r.is_err()),
            "{op:?}: the fault fired"
        );
        drop(store);
        plan.clear();
        let store = open(&paths, faulty_opts(&paths, &plan));
        let in_cache = store.read(|c| Ok(item_ids(c))).unwrap();
        for (id, r) in &outcomes {
            let present = in_cache.contains(id);
            match r {
                Ok(_) => assert!(present, "{op:?}: item {id} acknowledged but missing"),
                Err(Error::Cache(CacheError::AppliedInDoubt { durable: true, .. })) => {
                    assert!(present, "{op:?}: item {id} durable but missing")
                }
                Err(Error::Cache(CacheError::AppliedInDoubt { .. })) => {}
                Err(e) => assert!(!present, "{op:?}: item {id} failed plainly ({e}) but is in"),
            }
        }
    }
}

/// An application event that records the LSN it is applied as (an audit row).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Audited {
    what: String,
}

impl JournalEvent for Audited {
    const KIND: u8 = 0x41;
    fn apply(&self, db: &mut ApplyContext<'_>) -> Result<(), ApplyError> {
        db.conn().execute(
            "INSERT INTO audit (lsn, what) VALUES (?1, ?2)",
            (db.lsn() as i64, &self.what),
        )?;
        Ok(())
    }
    fn describe(&self) -> String {
        format!("audit {}", self.what)
    }
}

const AUDIT: &str =
    "CREATE TABLE IF NOT EXISTS audit (lsn INTEGER PRIMARY KEY, what TEXT NOT NULL);";

fn audit_rows(c: &rusqlite::Connection) -> rusqlite::Result<Vec<(u64, String)>> {
    c.prepare("SELECT lsn, what FROM audit ORDER BY lsn")?
        .query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?
        .collect()
}

#[test]
fn apply_context_lsn_is_the_journal_lsn_at_the_cache_on_catch_up_and_at_the_target() {
    let (_dir, paths) = Paths::temp();
    let opts = || {
        StoreOptions::new()
            .journal(JournalOptions::new().segment_bytes_max(SEG_BYTES))
            .cache_schema(AUDIT)
            .target(
                paths.target.path(),
                TargetOptions::new()
                    .create_if_missing(true)
                    .create_schema(AUDIT),
            )
            .replay(ReplayOptions::new().retry_attempts_max(0))
            .background_sync(false)
    };
    let store: Store<Audited> = Store::open(&paths.journal, &paths.cache, opts()).unwrap();
    let applied: Vec<(u64, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let store = &store;
                s.spawn(move || {
                    (0..50)
                        .map(|i| {
                            let what = format!("{t}-{i}");
                            let lsn = store.apply(&Audited { what: what.clone() }).unwrap();
                            (lsn, what)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut expected = applied;
    expected.sort();
    assert_eq!(store.read(audit_rows).unwrap(), expected, "at the cache");
    assert!(store.sync_now().error.is_none());
    assert_eq!(
        audit_rows(&open_ro(paths.target.path())).unwrap(),
        expected,
        "at the target"
    );
    store.close().unwrap();
    remove_cache(&paths);
    let store: Store<Audited> = Store::open(&paths.journal, &paths.cache, opts()).unwrap();
    assert_eq!(
        store.read(audit_rows).unwrap(),
        expected,
        "after catching up"
    );
}

fn unguarded_table(r: syncjournal::Result<Store>) -> (Option<String>, String) {
    match r {
        Err(Error::Cache(CacheError::Unguarded { table, detail, .. })) => (table, detail),
        other => panic!("expected CacheUnguarded, got {other:?}"),
    }
}

#[test]
fn virtual_tables_in_cache_schema_are_refused_naming_the_table_and_nothing_is_created() {
    for (vtab, name) in [
        (
            "CREATE VIRTUAL TABLE IF NOT EXISTS notes USING fts5(body);",
            "notes",
        ),
        (
            "CREATE VIRTUAL TABLE IF NOT EXISTS boxes USING rtree(id, minx, maxx);",
            "boxes",
        ),
    ] {
        let (_dir, paths) = Paths::temp();
        let opts = local_opts().cache_schema(format!("{SCHEMA}{vtab}"));
        let (table, detail) = unguarded_table(Store::open(&paths.journal, &paths.cache, opts));
        assert_eq!(table.as_deref(), Some(name));
        assert!(
            detail.contains("virtual table") && detail.contains("triggers"),
            "{detail}"
        );
        let c = open_ro(&paths.cache);
        let n: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name LIKE ?1",
                [format!("{name}%")],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0, "{name}: the schema was rolled back");
        drop(c);
        // Without it, the same cache opens.
        open(&paths, local_opts());
    }
}

#[test]
fn dml_in_cache_schema_is_refused_and_rolled_back() {
    let (_dir, paths) = Paths::temp();
    let opts = local_opts().cache_schema(format!(
        "{SCHEMA} INSERT OR IGNORE INTO items (id, name) VALUES (1, 'seed');"
    ));
    let (_, detail) = unguarded_table(Store::open(&paths.journal, &paths.cache, opts));
    assert!(detail.contains("cache_schema wrote 1 rows"), "{detail}");
    let store = open(&paths, local_opts());
    assert!(store.read(|c| Ok(item_ids(c))).unwrap().is_empty());
}

#[test]
fn a_table_another_connection_creates_and_writes_is_refused_and_one_it_creates_empty_is_guarded() {
    let (_dir, paths, store) = local_store();
    store.apply(&item(1)).unwrap();
    {
        let c = rusqlite::Connection::open(&paths.cache).unwrap();
        c.execute_batch("CREATE TABLE empty_one (id INTEGER PRIMARY KEY, v TEXT);")
            .unwrap();
    }
    // The store notices the schema change and guards the new, empty table.
    store.apply(&item(2)).unwrap();
    {
        let c = rusqlite::Connection::open(&paths.cache).unwrap();
        let e = c
            .execute("INSERT INTO empty_one VALUES (1, 'x')", [])
            .unwrap_err();
        assert!(e.to_string().contains("syncjournal"), "{e}");
        c.execute_batch(
            "CREATE TABLE sneaky (id INTEGER PRIMARY KEY); INSERT INTO sneaky VALUES (7);",
        )
        .unwrap();
    }
    // Rows written around the journal: refused at the next apply, nothing journaled…
    match store.apply(&item(3)) {
        Err(Error::Cache(CacheError::Unguarded { table, .. })) => {
            assert_eq!(table.as_deref(), Some("sneaky"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.journal_state().durable_lsn, 2);
    assert!(store.poisoned().is_some());
    drop(store);
    // …and at the next open.
    let (table, detail) = unguarded_table(Store::open(&paths.journal, &paths.cache, local_opts()));
    assert_eq!(table.as_deref(), Some("sneaky"));
    assert!(detail.contains("around the journal"), "{detail}");
}

#[test]
fn a_restore_over_the_open_cache_is_noticed_and_the_reopened_store_catches_up() {
    let (dir, paths, store) = local_store();
    store.apply(&item(1)).unwrap();
    let old = dir.path().join("old.db");
    copy_db(&paths.cache, &old);
    apply_items(&store, 2..=3);
    // `sqlite3 cache.db ".restore old.db"`: the backup API writes pages, no trigger fires.
    {
        let mut c = rusqlite::Connection::open(&paths.cache).unwrap();
        c.restore(
            rusqlite::MAIN_DB,
            &old,
            None::<fn(rusqlite::backup::Progress)>,
        )
        .unwrap();
    }
    match store.apply(&item(4)) {
        Err(Error::Cache(CacheError::Unguarded { detail, .. })) => {
            assert!(
                detail.contains("rewritten under the open store"),
                "{detail}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.journal_state().durable_lsn, 3, "nothing journaled");
    drop(store);
    let store = open(&paths, local_opts());
    assert_eq!(store.read(|c| Ok(item_ids(c))).unwrap(), vec![1, 2, 3]);
}

#[test]
fn a_cache_file_renamed_over_the_open_cache_is_noticed() {
    let (dir, paths, store) = local_store();
    store.apply(&item(1)).unwrap();
    let copy = dir.path().join("copy.db");
    copy_db(&paths.cache, &copy);
    std::fs::rename(&copy, &paths.cache).unwrap();
    match store.apply(&item(2)) {
        Err(Error::Cache(CacheError::Unguarded { detail, .. })) => {
            assert!(detail.contains("replaced"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.journal_state().durable_lsn, 1);
}

/// Deleted files this process holds open in SQLite's temporary directories (SQLite's
/// temporary files: `/proc/self/fd` shows them as `/var/tmp/#<inode> (deleted)`).
fn sqlite_temp_files() -> Vec<String> {
    let mut dirs: Vec<String> = ["SQLITE_TMPDIR", "TMPDIR"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .collect();
    dirs.extend(["/var/tmp", "/usr/tmp", "/tmp"].map(String::from));
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|p| p.display().to_string())
                .filter(|p| {
                    p.ends_with(" (deleted)")
                        && p.rsplit_once('/').is_some_and(|(parent, _)| {
                            dirs.iter().any(|d| d.trim_end_matches('/') == parent)
                        })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Fills `items` with rows, or rewrites every row and reports the temporary files open
/// meanwhile (inside the apply's savepoint, while its statement journal holds the old pages).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Bulk {
    Fill(i64),
    RewriteAll,
}

static TEMP_FILES_SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

impl JournalEvent for Bulk {
    const KIND: u8 = 0x42;
    fn apply(&self, db: &mut ApplyContext<'_>) -> Result<(), ApplyError> {
        match self {
            Bulk::Fill(n) => {
                for i in 0..*n {
                    db.conn().execute(
                        "INSERT INTO items (id, name) VALUES (?1, ?2)",
                        (i, "x".repeat(200)),
                    )?;
                }
            }
            Bulk::RewriteAll => {
                db.conn()
                    .execute("UPDATE items SET name = name || '!'", [])?;
                TEMP_FILES_SEEN
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(sqlite_temp_files());
            }
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

#[test]
fn the_cache_writers_statement_journal_never_spills_to_a_temporary_file() {
    let (_dir, paths) = Paths::temp();
    let store: Store<Bulk> = Store::open(&paths.journal, &paths.cache, local_opts()).unwrap();
    store.apply(&Bulk::Fill(5000)).unwrap(); // about 1.2 MB of pages
    // The pages existed before the savepoint: rewriting them fills its statement journal with
    // about 1.2 MB of old pages, past the 64 KiB SQLite keeps in memory by default before it
    // moves the statement journal to a file in its temporary directory.
    store.apply(&Bulk::RewriteAll).unwrap();
    let seen = TEMP_FILES_SEEN.lock().unwrap().clone();
    assert!(
        seen.is_empty(),
        "SQLite opened temporary files during the apply: {seen:?}"
    );
}

#[test]
fn four_threads_applying_thousands_of_change_sets_meet_no_sqlite_full() {
    // Any SQLITE_FULL (from the cache, its statement journals or the target) surfaces as an
    // error of `apply` or of the sync.
    for with_target in [false, true] {
        let (_dir, paths) = Paths::temp();
        let opts = if with_target {
            store_opts(&paths.target, RejectPolicy::Stop).background_sync(true)
        } else {
            local_opts()
        };
        let store = open(&paths, opts);
        std::thread::scope(|s| {
            for t in 0..4i64 {
                let store = &store;
                s.spawn(move || {
                    for i in 0..750i64 {
                        let id = t * 100_000 + i;
                        // Mostly small change sets, and every 50th a large one whose
                        // statement journal passes 64 KiB.
                        let cs = if i % 50 == 49 {
                            (0..150).fold(item(id), |cs, k| {
                                cs.upsert(
                                    "items",
                                    [("id", id * 1000 + k)],
                                    [("name", "y".repeat(300))],
                                )
                            })
                        } else {
                            item(id).update("items", [("id", id)], [("qty", i)])
                        };
                        if let Err(e) = store.apply(&cs) {
                            panic!("thread {t}, change set {i} (target: {with_target}): {e}");
                        }
                    }
                });
            }
        });
        if with_target {
            let report = store.sync_now();
            assert!(report.error.is_none(), "{report}");
        }
    }
}
