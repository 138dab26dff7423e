//! The field failures of the original application (an infrastructure inventory of
//! certificates, hosts and domains kept in a local cache and synced to a database on a share),
//! one test each, on the inventory schema of `examples/inventory.rs`:
//!
//! * deleting certificates, hosts and domains in the cache never reached the share;
//! * the pending count was wrong (deletes were not counted) and did not return to 0;
//! * "force sync" reported 0 applied while entries were pending, without saying why;
//! * pending work was lost on restart;
//! * operations were acknowledged although the share's transaction had not committed;
//! * operations were marked synced without having been executed on the share.

use std::sync::Arc;
use syncjournal::error::{CacheError, TargetError};

use crate::support::faults::{Faults, Plan};
use crate::support::inventory::{INVENTORY_SCHEMA, Inventory, assert_in_sync, dump_inventory};
use crate::support::process::with_timeout;
use crate::support::replay::replay_opts;
use crate::support::rng::Rng;
use crate::support::targets::TargetKind;
use syncjournal::{ChangeSet, Error, Lsn, Store, StoreOptions, SyncReport, TargetOptions, Value};

/// A fresh inventory on an SQLite target.
fn paths() -> Inventory {
    Inventory::new(TargetKind::Sqlite)
}

fn target_opts(faults: Option<Arc<Faults>>) -> TargetOptions {
    let t = TargetOptions::new()
        .create_if_missing(true)
        .create_schema(INVENTORY_SCHEMA)
        .busy_timeout_ms(2000);
    match faults {
        Some(f) => t.faults(f),
        None => t,
    }
}

fn domain(i: i64) -> String {
    format!("web-{i:02}.example.org")
}

/// Host `i` with its domain and certificate, in one change set.
fn add_host(i: i64) -> ChangeSet {
    ChangeSet::new()
        .upsert(
            "hosts",
            [("id", i)],
            [
                ("name", Value::from(format!("web-{i:02}"))),
                ("address", format!("10.0.0.{i}").into()),
                ("os", "debian-12".into()),
            ],
        )
        .upsert(
            "domains",
            [("name", domain(i))],
            [("host_id", Value::from(i)), ("registrar", "acme".into())],
        )
        .upsert(
            "certificates",
            [("id", i)],
            [
                ("domain", Value::from(domain(i))),
                ("not_after", "2026-12-31".into()),
                ("pem", vec![0x30u8, 0x82, i as u8].into()),
            ],
        )
}

/// Host `i` with its domain and certificate removed, in one change set.
fn remove_host(i: i64) -> ChangeSet {
    ChangeSet::new()
        .delete("certificates", [("id", i)])
        .delete("domains", [("name", domain(i))])
        .delete("hosts", [("id", i)])
}

/// Adds hosts `1..=n` (one entry each) and returns the last LSN.
fn seed(store: &Store, n: i64) -> Lsn {
    let mut last = 0;
    for i in 1..=n {
        last = store.apply(&add_host(i)).unwrap();
    }
    last
}

/// Checks what every report must satisfy: no silent "0 applied" while entries are pending,
/// and no success while entries are pending.
fn check_report(report: &SyncReport) {
    if report.error.is_none() {
        assert_eq!(
            report.pending, 0,
            "a sync without error must leave nothing pending: {report}"
        );
    }
    if report.applied == 0 && report.pending > 0 {
        assert!(
            report.error.is_some(),
            "0 applied with {} pending and no error saying why: {report}",
            report.pending
        );
    }
}

fn count(c: &rusqlite::Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn deletions_of_certificates_hosts_and_domains_reach_the_target() {
    with_timeout(60, || {
        let p = paths();
        let store = p.store(target_opts(None), replay_opts());
        seed(&store, 20);
        let r = store.sync_now();
        check_report(&r);
        assert!(r.error.is_none(), "{r}");
        assert_in_sync(&store, &p.target);

        // Decommission: each kind deleted on its own, and all three together.
        store
            .apply(&ChangeSet::new().delete("certificates", [("id", 5)]))
            .unwrap();
        store
            .apply(&ChangeSet::new().delete("domains", [("name", domain(6))]))
            .unwrap();
        store
            .apply(&ChangeSet::new().delete("hosts", [("id", 7)]))
            .unwrap();
        for i in [3i64, 13, 17] {
            store.apply(&remove_host(i)).unwrap();
        }
        // Before the sync the rows are gone from the cache only.
        let t = p.target.connect();
        assert_eq!(count(&t, "SELECT count(*) FROM hosts"), 20);
        drop(t);

        let r = store.sync_now();
        check_report(&r);
        assert!(r.error.is_none(), "{r}");
        assert_eq!(r.applied, 6, "{r}");

        let t = p.target.connect();
        for (sql, want) in [
            (
                "SELECT count(*) FROM certificates WHERE id IN (3, 5, 13, 17)",
                0,
            ),
            (
                "SELECT count(*) FROM domains WHERE name IN ('web-03.example.org', 'web-06.example.org', 'web-13.example.org', 'web-17.example.org')",
                0,
            ),
            ("SELECT count(*) FROM hosts WHERE id IN (3, 7, 13, 17)", 0),
            ("SELECT count(*) FROM hosts", 16),
            ("SELECT count(*) FROM domains", 16),
            ("SELECT count(*) FROM certificates", 16),
        ] {
            assert_eq!(count(&t, sql), want, "{sql}");
        }
        drop(t);
        assert_in_sync(&store, &p.target);
    });
}

#[test]
fn pending_count_is_exact_after_deletes_and_zero_after_sync() {
    with_timeout(60, || {
        let p = paths();
        let store = p.store(target_opts(None), replay_opts());
        let seeded = seed(&store, 10);
        let st = store.status().unwrap();
        assert_eq!(st.pending_entries, seeded);
        assert_eq!(st.head_lsn, seeded);
        assert_eq!(st.cache_applied_lsn, Some(seeded));
        let r = store.sync_now();
        assert!(r.error.is_none(), "{r}");
        let st = store.status().unwrap();
        assert_eq!(st.pending_entries, 0);
        assert_eq!(st.pending_bytes, 0);
        assert_eq!(st.oldest_pending_ms, None);
        assert_eq!(st.stalled_since_ms, None);

        // Deletes, one by one: the count follows each of them.
        let mut pending = 0;
        for i in 1..=4i64 {
            store
                .apply(&ChangeSet::new().delete("certificates", [("id", i)]))
                .unwrap();
            store
                .apply(&ChangeSet::new().delete("domains", [("name", domain(i))]))
                .unwrap();
            store
                .apply(&ChangeSet::new().delete("hosts", [("id", i)]))
                .unwrap();
            pending += 3;
            let st = store.status().unwrap();
            assert_eq!(st.pending_entries, pending, "after deleting host {i}");
            assert_eq!(st.head_lsn - st.acked_lsn, pending);
            assert!(st.pending_bytes > 0);
            assert!(st.oldest_pending_ms.is_some());
            assert!(st.stalled_since_ms.is_some());
        }
        // Deleting a row that does not exist is still an entry (it changes nothing).
        store
            .apply(&ChangeSet::new().delete("hosts", [("id", 999)]))
            .unwrap();
        pending += 1;
        assert_eq!(store.status().unwrap().pending_entries, pending);

        let r = store.sync_now();
        check_report(&r);
        assert!(r.error.is_none(), "{r}");
        assert_eq!(r.applied, pending);
        assert_eq!(r.pending, 0);
        let st = store.status().unwrap();
        assert_eq!(st.pending_entries, 0);
        assert_eq!(st.pending_bytes, 0);
        assert_eq!(st.oldest_pending_ms, None);
        assert_eq!(st.target_lsn, Some(st.head_lsn));
        assert_in_sync(&store, &p.target);
    });
}

#[test]
fn force_sync_applies_and_reports_the_exact_count() {
    with_timeout(60, || {
        let p = paths();
        let store = p.store(target_opts(None), replay_opts().batch_entries_max(4));
        seed(&store, 10);
        for i in [2i64, 4, 6] {
            store
                .apply(&ChangeSet::new().update(
                    "certificates",
                    [("id", i)],
                    [("not_after", "2027-12-31")],
                ))
                .unwrap();
        }
        store
            .apply(&ChangeSet::new().delete("hosts", [("id", 9)]))
            .unwrap();
        // 14 entries, batches of 4: 4 transactions.
        let r = store.sync_now();
        check_report(&r);
        assert!(r.error.is_none(), "{r}");
        assert_eq!(r.applied, 14, "{r}");
        assert_eq!(r.transactions, 4, "{r}");
        assert_eq!(r.quarantined, 0);
        assert_eq!(r.pending, 0);
        assert_in_sync(&store, &p.target);

        // Nothing pending: 0 applied, and that is a success, not an unexplained 0.
        let r = store.sync_now();
        check_report(&r);
        assert!(r.error.is_none(), "{r}");
        assert_eq!((r.applied, r.transactions, r.pending), (0, 0, 0));

        // One more: exactly one applied.
        store
            .apply(&ChangeSet::new().delete("certificates", [("id", 1)]))
            .unwrap();
        let r = store.sync_now();
        check_report(&r);
        assert_eq!((r.applied, r.transactions), (1, 1), "{r}");
        assert_in_sync(&store, &p.target);
    });
}

#[test]
fn force_sync_never_reports_zero_applied_without_saying_why() {
    with_timeout(60, || {
        let p = paths();
        // The share is not there (not mounted): the target must not be created.
        let store = p.store(
            TargetOptions::new().create_if_missing(false),
            replay_opts().retry_attempts_max(2),
        );
        let last = seed(&store, 5);
        store
            .apply(&ChangeSet::new().delete("hosts", [("id", 2)]))
            .unwrap();
        let pending = last + 1;

        let r = store.sync_now();
        check_report(&r);
        assert_eq!(r.applied, 0);
        assert_eq!(r.pending, pending, "{r}");
        assert!(
            matches!(r.error, Some(Error::Target(TargetError::Missing { .. }))),
            "the report must say why nothing was applied: {r}"
        );
        assert_eq!(r.retries, 2, "TargetMissing is transient: retried: {r}");
        assert!(r.to_string().contains("does not exist"), "{r}");

        let st = store.status().unwrap();
        assert_eq!(st.pending_entries, pending, "pending unchanged");
        assert_eq!(st.acked_lsn, 0);
        let err = st.last_error.expect("status.last_error must say why");
        assert!(err.message.contains("does not exist"), "{err:?}");
        assert!(err.transient, "{err:?}");
        assert!(st.stalled_since_ms.is_some());
        assert!(!p.target.exists(), "a missing target is never created");

        // A store without a target says so, too.
        drop(store);
        let bare: Store = Store::open(
            &p.journal,
            &p.cache,
            StoreOptions::new().cache_schema(INVENTORY_SCHEMA),
        )
        .unwrap();
        let r = bare.sync_now();
        check_report(&r);
        assert_eq!(r.pending, pending);
        assert!(
            matches!(r.error, Some(Error::Target(TargetError::NoTarget))),
            "{r}"
        );
        drop(bare);

        // The share comes back: everything is applied, and the error is cleared.
        p.target.create_schema(INVENTORY_SCHEMA);
        let store = p.store(TargetOptions::new().create_if_missing(false), replay_opts());
        let r = store.sync_now();
        check_report(&r);
        assert!(r.error.is_none(), "{r}");
        assert_eq!(r.applied, pending);
        assert_in_sync(&store, &p.target);
    });
}

#[test]
fn pending_work_survives_a_restart() {
    with_timeout(60, || {
        let p = paths();
        let store = p.store(target_opts(None), replay_opts());
        seed(&store, 8);
        assert!(store.sync_now().error.is_none());
        for i in [1i64, 4, 8] {
            store.apply(&remove_host(i)).unwrap();
        }
        store
            .apply(&ChangeSet::new().update("hosts", [("id", 2)], [("os", "debian-13")]))
            .unwrap();
        let before = store.status().unwrap();
        assert_eq!(before.pending_entries, 4);
        let cache_before = store.read(|c| Ok(dump_inventory(c))).unwrap();
        drop(store); // no sync

        let store = p.store(target_opts(None), replay_opts());
        let after = store.status().unwrap();
        assert_eq!(after.pending_entries, before.pending_entries);
        assert_eq!(after.head_lsn, before.head_lsn);
        assert_eq!(after.acked_lsn, before.acked_lsn);
        assert_eq!(after.pending_bytes, before.pending_bytes);
        assert_eq!(after.oldest_pending_ms, before.oldest_pending_ms);
        assert_eq!(
            store.read(|c| Ok(dump_inventory(c))).unwrap(),
            cache_before,
            "the cache survives the restart"
        );
        let r = store.sync_now();
        check_report(&r);
        assert!(r.error.is_none(), "{r}");
        assert_eq!(r.applied, 4);
        let t = p.target.connect();
        assert_eq!(
            count(&t, "SELECT count(*) FROM hosts WHERE id IN (1, 4, 8)"),
            0
        );
        drop(t);
        assert_in_sync(&store, &p.target);

        // A failure's explanation survives a restart too (it is durable status).
        let faults = Arc::new(Faults::new());
        faults.arm(Plan {
            times: usize::MAX,
            code: rusqlite::ffi::SQLITE_IOERR,
            ..Plan::default()
        });
        drop(store);
        let store = p.store(target_opts(Some(Arc::clone(&faults))), replay_opts());
        store
            .apply(&ChangeSet::new().delete("hosts", [("id", 2)]))
            .unwrap();
        let r = store.sync_now();
        check_report(&r);
        assert!(r.error.is_some(), "{r}");
        let err = store.status().unwrap().last_error.expect("last_error");
        drop(store);
        let store = p.store(target_opts(None), replay_opts());
        let st = store.status().unwrap();
        assert_eq!(st.pending_entries, 1);
        assert_eq!(
            st.last_error.as_ref(),
            Some(&err),
            "last_error survives a restart"
        );
        let r = store.sync_now();
        assert!(r.error.is_none(), "{r}");
        assert_eq!(r.applied, 1);
        assert_in_sync(&store, &p.target);
    });
}

#[test]
fn nothing_is_acknowledged_unless_the_target_transaction_committed() {
    with_timeout(60, || {
        // By label, and by index: with batches of 3 entries the statements are BEGIN (0),
        // read watermark (1), 3 per entry (savepoint, event, release: 2..=10), update
        // watermark (11), settle (12: SQLite has nothing left to send), COMMIT (13).
        for (how, plan) in [
            (
                "label",
                Plan {
                    label: Some("commit".into()),
                    times: usize::MAX,
                    code: rusqlite::ffi::SQLITE_IOERR,
                    ..Plan::default()
                },
            ),
            (
                "index",
                Plan {
                    index: Some(13),
                    times: usize::MAX,
                    code: rusqlite::ffi::SQLITE_IOERR,
                    ..Plan::default()
                },
            ),
        ] {
            let p = paths();
            let faults = Arc::new(Faults::new());
            let store = p.store(
                target_opts(Some(Arc::clone(&faults))),
                replay_opts().batch_entries_max(3),
            );
            seed(&store, 4);
            assert!(store.sync_now().error.is_none());
            let acked = store.status().unwrap().acked_lsn;
            assert_eq!(acked, 4);
            let target_before = dump_inventory(&p.target.connect());

            for i in 1..=4i64 {
                store
                    .apply(&ChangeSet::new().delete("certificates", [("id", i)]))
                    .unwrap();
            }
            store
                .apply(&ChangeSet::new().delete("hosts", [("id", 1)]))
                .unwrap();
            store
                .apply(&ChangeSet::new().delete("domains", [("name", domain(1))]))
                .unwrap();
            faults.arm(plan);
            let r = store.sync_now();
            check_report(&r);
            assert!(faults.hits() > 0, "{how}: the fault never fired");
            assert_eq!(
                faults.last_txn_labels().last().map(String::as_str),
                Some("commit"),
                "{how}: the failed statement is the COMMIT"
            );
            assert!(r.error.is_some(), "{how}: {r}");
            assert_eq!(r.applied, 0, "{how}: {r}");
            let st = store.status().unwrap();
            assert_eq!(st.acked_lsn, acked, "{how}: nothing acknowledged");
            assert_eq!(st.pending_entries, 6, "{how}");
            assert!(st.last_error.is_some(), "{how}");
            assert_eq!(
                p.target.watermark(st.journal_id),
                acked,
                "{how}: watermark unchanged"
            );
            assert_eq!(
                dump_inventory(&p.target.connect()),
                target_before,
                "{how}: target unchanged"
            );

            // Without the fault: everything, once.
            faults.disarm();
            let r = store.sync_now();
            check_report(&r);
            assert!(r.error.is_none(), "{how}: {r}");
            assert_eq!(r.applied, 6, "{how}: {r}");
            assert_eq!(r.transactions, 2, "{how}: {r}");
            assert_in_sync(&store, &p.target);
        }

        // The COMMIT of the second transaction fails: the first batch is acknowledged, the
        // second is not.
        let p = paths();
        let faults = Arc::new(Faults::new());
        let store = p.store(
            target_opts(Some(Arc::clone(&faults))),
            replay_opts().batch_entries_max(3),
        );
        seed(&store, 7);
        faults.arm(Plan {
            txn: Some(1),
            label: Some("commit".into()),
            times: usize::MAX,
            code: rusqlite::ffi::SQLITE_IOERR,
            ..Plan::default()
        });
        let r = store.sync_now();
        check_report(&r);
        assert!(r.error.is_some(), "{r}");
        assert_eq!((r.applied, r.transactions), (3, 1), "{r}");
        let st = store.status().unwrap();
        assert_eq!(st.acked_lsn, 3);
        assert_eq!(p.target.watermark(st.journal_id), 3);
        assert_eq!(
            count(&p.target.connect(), "SELECT count(*) FROM hosts"),
            3,
            "exactly the first batch is on the target"
        );
        faults.disarm();
        let r = store.sync_now();
        assert!(r.error.is_none(), "{r}");
        assert_eq!(r.applied, 4, "{r}");
        assert_in_sync(&store, &p.target);
    });
}

/// A random inventory operation that the cache accepts, or `None` if the cache refused it.
fn random_op(store: &Store, rng: &mut Rng) -> Option<Lsn> {
    let i = rng.range(1, 16) as i64;
    let cs = match rng.range(0, 7) {
        0 | 1 => add_host(i),
        2 => ChangeSet::new().delete("certificates", [("id", i)]),
        3 => ChangeSet::new().delete("domains", [("name", domain(i))]),
        4 => ChangeSet::new().delete("hosts", [("id", i)]),
        5 => ChangeSet::new().update(
            "certificates",
            [("id", i)],
            [("not_after", format!("2030-01-{:02}", rng.range(1, 29)))],
        ),
        _ => ChangeSet::new()
            .delete("certificates", [("id", i)])
            .delete("domains", [("name", domain(i))])
            .delete("hosts", [("id", i)]),
    };
    match store.apply(&cs) {
        Ok(lsn) => Some(lsn),
        Err(Error::Cache(CacheError::ChangeRefused { .. })) => None,
        Err(e) => panic!("apply: {e}"),
    }
}

#[test]
fn operations_are_never_marked_synced_without_being_executed() {
    with_timeout(120, || {
        let (mut rng, seed_) = Rng::from_env_or_time("REPLAY_TEST_SEED");
        eprintln!("REPLAY_TEST_SEED={seed_}");
        let p = paths();
        let faults = Arc::new(Faults::new());
        let store = p.store(
            target_opts(Some(Arc::clone(&faults))),
            replay_opts().batch_entries_max(3),
        );
        // snapshots[lsn] = the cache after entry `lsn`: the fold of 1..=lsn.
        let mut snapshots = vec![store.read(|c| Ok(dump_inventory(c))).unwrap()];
        let codes = [
            rusqlite::ffi::SQLITE_IOERR,
            rusqlite::ffi::SQLITE_BUSY,
            rusqlite::ffi::SQLITE_CORRUPT,
        ];
        let mut failed = 0;
        for round in 0..40 {
            for _ in 0..rng.range(1, 8) {
                if let Some(lsn) = random_op(&store, &mut rng) {
                    assert_eq!(lsn as usize, snapshots.len());
                    snapshots.push(store.read(|c| Ok(dump_inventory(c))).unwrap());
                }
            }
            if rng.range(0, 3) > 0 {
                faults.arm(Plan {
                    txn: Some(rng.range(0, 3) as usize),
                    index: Some(rng.range(0, 14) as usize),
                    times: 1,
                    code: codes[rng.range(0, 3) as usize],
                    ..Plan::default()
                });
            } else {
                faults.disarm();
            }
            let r = store.sync_now();
            check_report(&r);
            failed += usize::from(r.error.is_some());
            let st = store.status().unwrap();
            let w = p.target.watermark(st.journal_id);
            assert_eq!(
                w, st.acked_lsn,
                "round {round}: target watermark = acknowledgement ({r})"
            );
            assert_eq!(
                dump_inventory(&p.target.connect()),
                snapshots[w as usize],
                "round {round}: the target must be exactly the fold of LSNs 1..={w} ({r})"
            );
            if r.error.is_none() {
                assert_in_sync(&store, &p.target);
            } else {
                assert!(st.last_error.is_some(), "round {round}");
            }
        }
        faults.disarm();
        let r = store.sync_now();
        assert!(r.error.is_none(), "{r}");
        assert_in_sync(&store, &p.target);
        eprintln!("never marked synced: 40 rounds, {failed} failed syncs, all checked");
    });
}
