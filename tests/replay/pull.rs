//! Many machines on one target, on both kinds (`sync-protocol.md` §2–§3):
//!
//! * every row change a batch applies is recorded in the target's change log in the batch's
//!   transaction, numbered in commit order, the row after the change or a tombstone;
//! * a store pulls the log into its cache, the cursor moved in the same cache transaction:
//!   another machine's inserts, updates and deletes reach every cache, exactly once;
//! * a remote change to a row changed locally and not yet on the target is held back until
//!   the local change is there, and the cache then equals the target (both changes merged);
//! * a local change the target refused (quarantined) is set back in every cache to what the
//!   target has;
//! * randomised edits of overlapping rows on three machines: once every journal is replayed
//!   and every cache has pulled, every cache equals the target;
//! * a damaged change-log record or a change the cache cannot take stops the pull with an
//!   error naming it, the cursor where it was.

use syncjournal::error::CacheError;
use syncjournal::{ChangeSet, ConflictPolicies, Error, RejectPolicy, ReplayOptions, Value};

use crate::support::inventory::host;
use crate::support::machines::{Machines, cache_rows, quiesce};
use crate::support::process::with_timeout;
use crate::support::rng::Rng;
use crate::support::targets::TargetKind;

#[test]
fn another_machines_inserts_updates_and_deletes_reach_every_cache() {
    for kind in TargetKind::all() {
        with_timeout(120, move || {
            let m = Machines::new(kind, 3);
            let s = m.open_all();
            for i in 1..=5 {
                s[0].apply(&host(i)).unwrap();
            }
            s[0].apply(
                &ChangeSet::new()
                    .update("hosts", [("id", 2)], [("os", "debian")])
                    .delete("hosts", [("id", 3)])
                    .insert(
                        "domains",
                        [("name", "example.org")],
                        [("host_id", Value::from(2))],
                    ),
            )
            .unwrap();
            let r = s[0].sync_now();
            assert!(r.error.is_none(), "{kind}: {:?}", r.error);
            // The log: one record per row the batch left changed (host 2 and 3 twice: once
            // each, as after the batch), numbered 1.. in order, host 3 a tombstone.
            let log = m.target.rows(
                "SELECT seq, table_name, lsn, row IS NULL FROM syncjournal_changes ORDER BY seq",
            );
            assert_eq!(log.len(), 6, "{kind}: {log:?}");
            let seqs: Vec<Value> = log.iter().map(|r| r[0].clone()).collect();
            assert_eq!(seqs, (1..=6).map(Value::Integer).collect::<Vec<_>>());
            let tombstones: Vec<&Vec<Value>> = log
                .iter()
                .filter(|r| r[3] == Value::Integer(1) || r[3] == Value::Text("t".into()))
                .collect();
            assert_eq!(
                tombstones.len(),
                1,
                "{kind}: one tombstone (host 3): {log:?}"
            );
            for (i, st) in s.iter().enumerate().skip(1) {
                let p = st.pull_now();
                assert!(p.error.is_none(), "{kind}: {:?}", p.error);
                assert_eq!(p.applied, 6, "{kind}: machine {i}");
                assert_eq!(p.cursor_seq, 6);
                assert_eq!(cache_rows(st), m.target_rows(), "{kind}: machine {i}");
                // Exactly once: nothing more to pull, the cursor is kept.
                let again = st.pull_now();
                assert_eq!(again.applied, 0);
                assert_eq!(st.pull_status().unwrap().cursor_seq, 6);
                assert_eq!(st.pull_status().unwrap().behind, Some(0));
            }
            // The origin pulls its own changes as the target has them: unchanged.
            let before = cache_rows(&s[0]);
            let p = s[0].pull_now();
            assert!(p.error.is_none());
            assert_eq!(cache_rows(&s[0]), before);
            assert_eq!(before, m.target_rows());
            // The cursor survives a restart, in the cache.
            drop(s);
            let again = m.open(1);
            assert_eq!(again.pull_status().unwrap().cursor_seq, 6);
            assert_eq!(again.pull_now().applied, 0);
        });
    }
}

#[test]
fn a_remote_change_to_a_row_changed_locally_waits_for_the_local_change() {
    for kind in TargetKind::all() {
        with_timeout(120, move || {
            let m = Machines::new(kind, 2);
            let s = m.open_all();
            s[0].apply(&host(1)).unwrap();
            quiesce(&s);
            // Machine 0 renames host 1 and syncs; machine 1 sets its os, not synced yet.
            s[0].apply(&ChangeSet::new().update("hosts", [("id", 1)], [("name", "renamed")]))
                .unwrap();
            assert!(s[0].sync_now().error.is_none());
            let local = s[1]
                .apply(&ChangeSet::new().update("hosts", [("id", 1)], [("os", "bsd")]))
                .unwrap();
            let p = s[1].pull_now();
            assert!(p.error.is_none(), "{kind}: {:?}", p.error);
            let held = p
                .held_back
                .expect("the remote rename waits for the local change");
            assert_eq!(held.table, "hosts");
            assert_eq!(held.local_lsn, local);
            assert_eq!(p.applied, 0);
            let name: String = s[1]
                .read(|c| {
                    c.query_row(
                        "SELECT name || '/' || os FROM hosts WHERE id = 1",
                        [],
                        |r| r.get(0),
                    )
                })
                .unwrap();
            assert_eq!(
                name, "web-01/bsd",
                "{kind}: the cache shows only what the target will have"
            );
            assert_eq!(s[1].pull_status().unwrap().held_back.as_ref(), Some(&held));
            // Once the local change is on the target, both changes are in every cache.
            quiesce(&s);
            let target = m.target.rows("SELECT name, os FROM hosts WHERE id = 1");
            assert_eq!(
                target,
                vec![vec![
                    Value::Text("renamed".into()),
                    Value::Text("bsd".into())
                ]]
            );
            for st in &s {
                assert_eq!(cache_rows(st), m.target_rows(), "{kind}");
            }
        });
    }
}

#[test]
fn a_local_change_the_target_refused_is_set_back_to_the_targets_row() {
    for kind in TargetKind::all() {
        with_timeout(120, move || {
            let m = Machines::new(kind, 2);
            // Without conflict detection (with it, this is an insert/insert conflict: see
            // `conflicts.rs`), the second insert of one key is refused.
            let blind = m.options().replay(
                ReplayOptions::new()
                    .reject_policy(RejectPolicy::Quarantine)
                    .conflicts(ConflictPolicies::new().detect(false)),
            );
            let s = [m.open(0), m.open_with(1, blind)];
            // Both insert host 7; machine 0's lands first, machine 1's is refused.
            s[0].apply(&ChangeSet::new().insert("hosts", [("id", 7)], [("name", "first")]))
                .unwrap();
            s[1].apply(&ChangeSet::new().insert("hosts", [("id", 7)], [("name", "second")]))
                .unwrap();
            assert!(s[0].sync_now().error.is_none());
            let r = s[1].sync_now();
            assert_eq!(r.quarantined, 1, "{kind}: {r:?}");
            quiesce(&s);
            for st in &s {
                let name: String = st
                    .read(|c| c.query_row("SELECT name FROM hosts WHERE id = 7", [], |r| r.get(0)))
                    .unwrap();
                assert_eq!(name, "first", "{kind}: every cache has the target's row");
                assert_eq!(cache_rows(st), m.target_rows());
            }
        });
    }
}

#[test]
fn three_machines_editing_overlapping_rows_converge_on_the_target() {
    for kind in TargetKind::all() {
        let (mut rng, seed) = Rng::from_env_or_time("PULL_SEED");
        eprintln!("{kind}: PULL_SEED={seed}");
        with_timeout(300, move || {
            let m = Machines::new(kind, 3);
            let s = m.open_all();
            let mut edits = 0;
            for _round in 0..12 {
                for _ in 0..rng.urange(5, 25) {
                    let who = rng.urange(0, 3);
                    let id = rng.range(1, 12) as i64;
                    let cs = match rng.below(6) {
                        0 => ChangeSet::new().delete("hosts", [("id", id)]),
                        1 => ChangeSet::new().insert(
                            "hosts",
                            [("id", id)],
                            [("name", format!("ins-{who}-{id}"))],
                        ),
                        2 => ChangeSet::new().update(
                            "hosts",
                            [("id", id)],
                            [("os", format!("os-{who}-{}", rng.below(100)))],
                        ),
                        3 => ChangeSet::new().upsert(
                            "domains",
                            [("name", format!("d{}", id % 4))],
                            [("host_id", id)],
                        ),
                        4 => ChangeSet::new().delete("domains", [("name", format!("d{}", id % 4))]),
                        _ => ChangeSet::new()
                            .upsert("hosts", [("id", id)], [("name", format!("up-{who}-{id}"))])
                            .upsert(
                                "domains",
                                [("name", format!("d{}", id % 3))],
                                [("registrar", who as i64)],
                            ),
                    };
                    // A change the cache refuses (an insert of a row it has, an update of one
                    // it does not) is not journaled: that is the cache's rule, not the test's.
                    if s[who].apply(&cs).is_ok() {
                        edits += 1;
                    }
                }
                // Some machines sync, some pull, in a random order.
                for _ in 0..rng.urange(0, 5) {
                    let who = rng.urange(0, 3);
                    if rng.coin() {
                        let r = s[who].sync_now();
                        assert!(r.error.is_none(), "{kind} seed {seed}: sync {:?}", r.error);
                    } else {
                        let p = s[who].pull_now();
                        assert!(p.error.is_none(), "{kind} seed {seed}: pull {:?}", p.error);
                    }
                }
            }
            quiesce(&s);
            let target = m.target_rows();
            for (i, st) in s.iter().enumerate() {
                assert_eq!(
                    cache_rows(st),
                    target,
                    "{kind} seed {seed}: machine {i}'s cache equals the target after {edits} edits"
                );
                let status = st.status().unwrap();
                assert_eq!(status.pending_entries, 0);
            }
            assert_eq!(m.target.integrity(), "ok");
        });
    }
}

#[test]
fn a_damaged_record_or_a_change_the_cache_cannot_take_stops_the_pull_before_it() {
    for kind in TargetKind::all() {
        with_timeout(120, move || {
            let m = Machines::new(kind, 2);
            let s = m.open_all();
            s[0].apply(&host(1)).unwrap();
            assert!(s[0].sync_now().error.is_none());
            // A record whose key is not syncjournal's encoding.
            let blob = match kind {
                TargetKind::Sqlite => "x'fdffffffffffffff7f'",
                #[allow(unreachable_patterns)]
                _ => "'\\xfdffffffffffffff7f'::bytea",
            };
            m.target.execute(&format!(
                "INSERT INTO syncjournal_changes (seq, hlc, journal_id, lsn, table_name, key, row, committed_at, row_id)
                 VALUES (2, 1, '00000000-0000-0000-0000-000000000001', 1, 'hosts', {blob}, NULL, 0, 0)"
            ));
            let p = s[1].pull_now();
            assert_eq!(p.applied, 1, "{kind}: the record before it is applied");
            let e = p.error.expect("a damaged record is an error").to_string();
            assert!(e.contains("seq 2") && e.contains("key"), "{kind}: {e}");
            assert_eq!(s[1].pull_status().unwrap().cursor_seq, 1);
            assert!(s[1].pull_status().unwrap().last_error.is_some());
            // A record of a table the cache does not have.
            m.target
                .execute("DELETE FROM syncjournal_changes WHERE seq = 2");
            m.target.execute(
                "INSERT INTO syncjournal_changes (seq, hlc, journal_id, lsn, table_name, key, row, committed_at, row_id)
                 SELECT 2, hlc, journal_id, lsn, 'vanished', key, row, committed_at, row_id FROM syncjournal_changes WHERE seq = 1",
            );
            let p = s[1].pull_now();
            match &p.error {
                Some(Error::Cache(CacheError::PullRefused { seq: 2, reason })) => {
                    assert!(reason.contains("vanished"), "{kind}: {reason}");
                }
                other => panic!("{kind}: expected PullRefused for change 2, got {other:?}"),
            }
            assert_eq!(s[1].pull_status().unwrap().cursor_seq, 1);
        });
    }
}

#[test]
fn a_reseed_builds_the_cache_from_the_target_and_keeps_the_local_entries_not_on_it() {
    for kind in TargetKind::all() {
        with_timeout(120, move || {
            let m = Machines::new(kind, 2);
            // Rows the target had before any change log: no pull brings them.
            m.target
                .execute("INSERT INTO hosts (id, name) VALUES (100, 'before-the-log')");
            let s = m.open_all();
            for i in 1..=3 {
                s[0].apply(&host(i)).unwrap();
            }
            quiesce(&s);
            assert_ne!(
                cache_rows(&s[1]),
                m.target_rows(),
                "{kind}: the old row is missing"
            );
            // Machine 1 changes host 2 and adds host 9, not synced yet; then reseeds.
            s[1].apply(&ChangeSet::new().update("hosts", [("id", 2)], [("os", "mine")]))
                .unwrap();
            s[1].apply(&host(9)).unwrap();
            let r = s[1].reseed().unwrap();
            assert_eq!(r.rows, 4, "{kind}: {r:?}");
            assert_eq!(r.local_reapplied, 2);
            assert_eq!(r.local_refused, 0);
            assert_eq!(r.cursor_seq, 3);
            assert_eq!(s[1].pull_status().unwrap().cursor_seq, 3);
            let mine: Vec<String> = s[1]
                .read(|c| {
                    c.prepare("SELECT name || ':' || coalesce(os, '') FROM hosts ORDER BY id")?
                        .query_map([], |r| r.get(0))?
                        .collect()
                })
                .unwrap();
            assert_eq!(
                mine,
                [
                    "web-01:",
                    "web-02:mine",
                    "web-03:",
                    "web-09:",
                    "before-the-log:"
                ],
                "{kind}: the target's rows with the local changes on top"
            );
            // After quiescence every cache but machine 0's (which never saw the old row)
            // equals the target; machine 0 reseeds too.
            quiesce(&s);
            assert_eq!(cache_rows(&s[1]), m.target_rows(), "{kind}");
            s[0].reseed().unwrap();
            assert_eq!(cache_rows(&s[0]), m.target_rows(), "{kind}");
            // The reseeded cache survives a restart as it is.
            drop(s);
            let again = m.open(1);
            assert_eq!(cache_rows(&again), m.target_rows());
            assert_eq!(again.pull_now().applied, 0);
        });
    }
}

#[test]
fn an_own_record_a_later_one_supersedes_never_brings_back_an_older_row() {
    for kind in TargetKind::all() {
        with_timeout(120, move || {
            let m = Machines::new(kind, 1);
            let s = m.open(0);
            let synced = |s: &syncjournal::Store| {
                let r = s.sync_now();
                assert!(r.error.is_none(), "{kind}: {:?}", r.error);
            };
            // Three batches: host 1 (seq 1), host 2 (seq 2), host 1 deleted (seq 3).
            s.apply(&host(1)).unwrap();
            synced(&s);
            s.apply(&host(2)).unwrap();
            synced(&s);
            s.apply(&ChangeSet::new().delete("hosts", [("id", 1)]))
                .unwrap();
            synced(&s);
            // Host 2 changed locally and not replayed: the pull stops at its record (seq 2),
            // after seq 1, whose image of host 1 is older than the cache's (deleted).
            s.apply(&ChangeSet::new().update("hosts", [("id", 2)], [("os", "bsd")]))
                .unwrap();
            let p = s.pull_now();
            assert!(p.error.is_none(), "{kind}: {:?}", p.error);
            assert_eq!(p.held_back.as_ref().map(|h| h.seq), Some(2), "{kind}");
            assert_eq!(
                p.cursor_seq, 1,
                "{kind}: the cursor passes the superseded record"
            );
            let ids: Vec<i64> = s
                .read(|c| {
                    c.prepare("SELECT id FROM hosts ORDER BY id")?
                        .query_map([], |r| r.get(0))?
                        .collect()
                })
                .unwrap();
            assert_eq!(ids, [2], "{kind}: host 1 stays deleted in the cache");
            synced(&s);
            quiesce(std::slice::from_ref(&s));
            assert_eq!(cache_rows(&s), m.target_rows(), "{kind}");
        });
    }
}
