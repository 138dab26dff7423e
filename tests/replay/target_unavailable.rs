//! The target cannot be written for a while, and then can again:
//!
//! * locked by another connection (`BEGIN EXCLUSIVE` held for a while): the sync reports a
//!   busy, transient error, or retries, and applies everything exactly once after the release;
//! * read-only (the file, and separately its directory): the status says "read-only" / "not
//!   writable", nothing is acknowledged, and once writable a sync applies everything. As root,
//!   `chmod` does not stop writes, so `chattr +i` is used as well (undone by a guard); where
//!   neither works the scenario is skipped LOUDLY (a failure when `CI` is set);
//! * the target gone and back (SQLite: the file moved away, `TargetMissing`; PostgreSQL: the
//!   server's network gone, connections cut, a connection failure): transient, retried, in
//!   the status; once back, the next sync applies and clears the error;
//! * a missing target (SQLite: the file or its directory; PostgreSQL: the database, SQLSTATE
//!   3D000) is never created when `create_if_missing` is off.
//!
//! The lock and read-only scenarios are SQLite's; the rest run on both kinds of target.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::inventory::{
    INVENTORY_SCHEMA, Inventory, assert_in_sync, dump_inventory, host,
};
use crate::support::process::{ReadOnly, skip_or_fail, with_timeout};
use crate::support::replay::{Rig, replay_opts};
use crate::support::targets::{TargetKind, TestTarget};
use syncjournal::{ChangeSet, Error, Store, SyncReport};

const ENTRIES: u64 = 20;

/// Takes `BEGIN EXCLUSIVE` on `target` in another thread and holds it until `release` says so
/// (or `max_hold` passes: a hang guard). Returns once the lock is held.
fn hold_exclusive(
    target: &TestTarget,
    max_hold: Duration,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (locked_tx, locked_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let target = target.clone();
    let h = std::thread::spawn(move || {
        let c = target.connect();
        c.execute_batch("BEGIN EXCLUSIVE").unwrap();
        // A write of its own, committed at the release.
        c.execute("INSERT INTO counters (id, n) VALUES (1000, 0)", [])
            .unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(max_hold);
        c.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    (release_tx, h)
}

fn is_busy_error(e: &Error) -> bool {
    let s = e.to_string();
    e.is_transient() && (s.contains("locked") || s.contains("busy"))
}

#[test]
fn a_target_locked_by_another_connection_is_retried_then_applied_once() {
    // Locks of a file on a share; a server has no such lock for another client to hold.
    for kind in TargetKind::sqlite_only() {
        with_timeout(60, move || {
            let rig = Rig::new(kind, ENTRIES);
            let topts = || rig.target_opts().busy_timeout_ms(50);
            let (release, holder) = hold_exclusive(&rig.target, Duration::from_secs(30));

            // While the lock is held: a busy error, transient, nothing acknowledged.
            let mut r0 = rig.replayer_with(topts(), replay_opts().retry_attempts_max(0));
            let rep = r0.sync_now();
            let e = rep.error.as_ref().expect("the target is locked");
            assert!(is_busy_error(e), "{e}");
            assert_eq!(rep.applied, 0);
            assert_eq!(rep.pending, ENTRIES);
            assert_eq!(rig.acked(), 0);
            let last = r0.state().last_error.clone().expect("last_error");
            assert!(last.transient, "{last:?}");
            drop(r0);

            // The lock is released 1.5 s from now; a sync with a longer retry budget retries,
            // then applies everything once.
            let released = Arc::new(AtomicBool::new(false));
            let timer = {
                let released = Arc::clone(&released);
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(1500));
                    released.store(true, Ordering::SeqCst);
                    release.send(()).unwrap();
                })
            };
            let mut r = rig.replayer_with(
                topts(),
                replay_opts()
                    .retry_attempts_max(100)
                    .retry_delay_ms(20)
                    .retry_delay_max_ms(100),
            );
            let started_while_locked = !released.load(Ordering::SeqCst);
            let rep = r.sync_now();
            timer.join().unwrap();
            holder.join().unwrap();
            assert!(rep.error.is_none(), "{rep}");
            if started_while_locked {
                assert!(rep.retries > 0, "the lock was still held: {rep}");
            }
            assert_eq!(rep.applied, ENTRIES, "{rep}");
            rig.check_complete("after the lock was released");
            assert!(r.state().last_error.is_none());
        });
    }
}

#[test]
fn busy_at_begin_on_a_live_connection_is_retried_within_one_sync() {
    // Locks of a file on a share; a server has no such lock for another client to hold.
    for kind in TargetKind::sqlite_only() {
        with_timeout(60, move || {
            let mut rig = Rig::new(kind, ENTRIES);
            let mut r = rig.replayer_with(
                rig.target_opts().busy_timeout_ms(100),
                replay_opts().retry_attempts_max(10).retry_delay_ms(5),
            );
            assert!(r.sync_now().error.is_none());
            rig.append(10);

            // The lock is held until the replayer's third BEGIN: two attempts fail for sure.
            let (release, holder) = hold_exclusive(&rig.target, Duration::from_secs(20));
            let release = std::sync::Mutex::new(Some(release));
            let begins = std::sync::atomic::AtomicUsize::new(0);
            rig.faults.on_statement(move |index, _| {
                if index == 0
                    && begins.fetch_add(1, Ordering::SeqCst) == 2
                    && let Some(tx) = release.lock().unwrap().take()
                {
                    let _ = tx.send(());
                }
            });
            let rep = r.sync_now();
            holder.join().unwrap();
            assert!(rep.error.is_none(), "{rep}");
            assert!(rep.retries >= 2, "{rep}");
            assert_eq!(rep.applied, 10, "{rep}");
            rig.check_complete("busy at BEGIN");
        });
    }
}

fn open_store(inv: &Inventory, retries: u32) -> Store {
    inv.store(
        inv.target
            .options()
            .create_if_missing(false)
            .busy_timeout_ms(200),
        replay_opts().retry_attempts_max(retries),
    )
}

fn add_hosts(store: &Store, ids: std::ops::RangeInclusive<i64>) -> u64 {
    let mut n = 0;
    for i in ids {
        store.apply(&host(i)).unwrap();
        n += 1;
    }
    store
        .apply(&ChangeSet::new().delete("hosts", [("id", 1)]))
        .unwrap();
    n + 1
}

/// The share comes back (the target is brought back): the next sync applies the `pending`
/// entries and the target is in sync.
fn share_back_applies(inv: &Inventory, store: &Store, pending: u64) {
    inv.target.bring_back();
    let rep = store.sync_now();
    assert!(rep.error.is_none(), "{rep}");
    assert_eq!(rep.applied, pending);
    assert_in_sync(store, &inv.target);
}

/// Runs the read-only scenario with `make_ro` making the target (file or directory)
/// read-only.
fn read_only_scenario(what: &str, ro_path: impl Fn(&Inventory) -> PathBuf) {
    let inv = Inventory::new(TargetKind::Sqlite);
    inv.target.create_schema(INVENTORY_SCHEMA);
    let store = open_store(&inv, 2);
    let pending = add_hosts(&store, 1..=5);
    let before = dump_inventory(&inv.target.connect());

    let Some(guard) = ReadOnly::make(&ro_path(&inv)) else {
        skip_or_fail(
            &format!("read-only target {what}"),
            "cannot be made read-only here",
        );
        return;
    };
    eprintln!("read-only target {what}: made read-only with {}", guard.how);
    let rep: SyncReport = store.sync_now();
    let e = rep
        .error
        .as_ref()
        .expect("a read-only target cannot be synced");
    assert!(e.is_transient(), "{what}: {e}");
    assert_eq!(rep.applied, 0, "{what}: {rep}");
    assert_eq!(
        rep.retries, 2,
        "{what}: read-only is transient: retried: {rep}"
    );
    let st = store.status().unwrap();
    let last = st.last_error.clone().expect("status.last_error");
    eprintln!(
        "read-only target {what}: status.last_error: {}",
        last.message
    );
    let msg = last.message.to_lowercase();
    assert!(
        msg.contains("read-only") || msg.contains("readonly") || msg.contains("not writable"),
        "{what}: the status must say the target is not writable: {:?}",
        last.message
    );
    assert!(last.transient);
    assert_eq!(st.acked_lsn, 0, "{what}: nothing acknowledged");
    assert_eq!(st.pending_entries, pending);
    drop(guard);
    assert_eq!(
        dump_inventory(&inv.target.connect()),
        before,
        "{what}: target unchanged"
    );
    assert_eq!(inv.target.watermark(st.journal_id), 0);

    // Writable again: everything is applied.
    let rep = store.sync_now();
    assert!(rep.error.is_none(), "{what}: {rep}");
    assert_eq!(rep.applied, pending, "{what}: {rep}");
    assert_in_sync(&store, &inv.target);
}

#[test]
fn a_read_only_target_file_is_reported_and_applied_once_writable() {
    with_timeout(60, || {
        read_only_scenario("file", |inv| inv.target.path().to_path_buf());
    });
}

#[test]
fn a_read_only_target_directory_is_reported_and_applied_once_writable() {
    with_timeout(60, || {
        read_only_scenario("directory", |inv| inv.share.clone());
    });
}

#[test]
fn the_share_gone_and_back_before_the_first_connection() {
    for kind in TargetKind::all() {
        with_timeout(60, move || {
            let inv = Inventory::new(kind);
            inv.target.create_schema(INVENTORY_SCHEMA);
            let store = open_store(&inv, 3);
            let pending = add_hosts(&store, 1..=6);
            inv.target.take_away();

            let rep = store.sync_now();
            let e = rep.error.as_ref().expect("the target is gone");
            assert!(kind.is_out_of_reach(e), "{kind}: the target is gone: {rep}");
            assert!(e.is_transient(), "{kind}: {e}");
            assert_eq!(rep.retries, 3, "{kind}: out of reach is retried: {rep}");
            assert_eq!(rep.applied, 0);
            let st = store.status().unwrap();
            let last = st.last_error.expect("status.last_error");
            let says = match kind {
                TargetKind::Sqlite => "does not exist",
                #[cfg(feature = "postgres")]
                TargetKind::Postgres => "connection failure",
            };
            assert!(
                last.transient && last.message.contains(says),
                "{kind}: {last:?}"
            );
            assert_eq!(st.acked_lsn, 0);
            assert!(
                !inv.target.exists(),
                "{kind}: nothing created in place of the target"
            );

            share_back_applies(&inv, &store, pending);
        });
    }
}

#[test]
fn the_share_gone_and_back_while_connected() {
    for kind in TargetKind::all() {
        with_timeout(60, move || {
            let inv = Inventory::new(kind);
            inv.target.create_schema(INVENTORY_SCHEMA);
            let store = open_store(&inv, 3);
            add_hosts(&store, 1..=3);
            let r = store.sync_now();
            assert!(r.error.is_none(), "{r}");
            let acked = store.status().unwrap().acked_lsn;

            // The target disappears while the replayer has a connection to it.
            let pending = add_hosts(&store, 4..=8);
            inv.target.take_away();
            let rep = store.sync_now();
            let st = store.status().unwrap();
            let moved = inv.target.while_away();
            assert!(
                rep.error.as_ref().is_some_and(|e| kind.is_out_of_reach(e)),
                "{kind}: the target is gone, yet the sync reported {rep}; the target taken away now has watermark {} (acknowledged {})",
                moved.watermark(st.journal_id),
                st.acked_lsn
            );
            assert_eq!(
                st.acked_lsn, acked,
                "{kind}: nothing acknowledged while the target is gone"
            );
            assert_eq!(
                moved.watermark(st.journal_id),
                acked,
                "{kind}: nothing committed"
            );
            assert!(st.last_error.is_some());

            share_back_applies(&inv, &store, pending);
        });
    }
}

#[test]
fn a_missing_target_is_never_created_without_create_if_missing() {
    for kind in TargetKind::all() {
        with_timeout(60, move || {
            // The file is missing from an existing directory, and the directory is missing too.
            for (what, make_share) in [("file", true), ("directory", false)] {
                if kind != TargetKind::Sqlite && !make_share {
                    continue; // A server has no directory to lose.
                }
                let inv = Inventory::new(kind);
                if !make_share {
                    std::fs::remove_dir(&inv.share).unwrap();
                }
                let store = open_store(&inv, 1);
                let pending = add_hosts(&store, 1..=3);
                for _ in 0..2 {
                    let rep = store.sync_now();
                    assert!(
                        rep.error.as_ref().is_some_and(|e| kind.is_missing(e)),
                        "{kind} {what}: {rep}"
                    );
                    assert_eq!(rep.pending, pending);
                }
                assert!(
                    !inv.target.exists(),
                    "{kind} {what}: the target was created"
                );
                if kind == TargetKind::Sqlite {
                    assert!(
                        !PathBuf::from(format!("{}-journal", inv.target.path().display())).exists(),
                        "{what}: a rollback journal was created"
                    );
                    assert_eq!(inv.share.exists(), make_share, "{what}");
                }
                assert_eq!(store.status().unwrap().acked_lsn, 0);

                // The replayer API refuses the same way.
                drop(store);
                let journal =
                    Arc::new(syncjournal::Journal::open(&inv.journal, Default::default()).unwrap());
                let mut r: syncjournal::Replayer = syncjournal::Replayer::new(
                    journal,
                    inv.target.spec(),
                    inv.target.options(),
                    replay_opts(),
                );
                let e = r.target_watermark().expect_err("no target");
                assert!(kind.is_missing(&e), "{kind} {what}: {e}");
                let rep = r.sync_now();
                assert!(
                    rep.error.as_ref().is_some_and(|e| kind.is_missing(e)),
                    "{kind} {what}: {rep}"
                );
                assert!(
                    !inv.target.exists(),
                    "{kind} {what}: the target was created"
                );
            }
        });
    }
}
