//! Conflicts between machines on one target, on both kinds (`sync-protocol.md` §4):
//!
//! * each entry carries its cache's pull cursor and its store's HLC; at replay, a row another
//!   journal changed after that cursor is a conflict, recorded on the target with both sides,
//!   the base and the resolution, and counted in the status;
//! * last writer wins by default (HLC, then journal id), and a deleted row stays deleted;
//!   delete against update, update against delete and insert against insert each settle as
//!   `sync-protocol.md` §4.3 says;
//! * per-table policies: target wins, reject (quarantined, pending until retried or
//!   discarded), and an application resolver that sees base, local and current rows;
//! * no conflict when the cache had pulled the other change first, none recorded when
//!   detection is off; every cache equals the target afterwards.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use syncjournal::{
    ChangeSet, ConflictCounts, ConflictPolicies, ConflictPolicy, ConflictRecord, RejectPolicy,
    ReplayOptions, Resolution, Store, Value,
};

use crate::support::faults::{Faults, Plan};
use crate::support::inventory::host;
use crate::support::machines::{Machines, cache_rows, quiesce};
use crate::support::process::with_timeout;
use crate::support::targets::TargetKind;

/// Machines whose stores settle conflicts by `policies`; machine 0 inserted hosts 1..=3, and
/// every cache has pulled them.
fn machines(kind: TargetKind, n: usize, policies: ConflictPolicies) -> (Machines, Vec<Store>) {
    let m = Machines::new(kind, n);
    let opts = m.options().replay(
        ReplayOptions::new()
            .reject_policy(RejectPolicy::Quarantine)
            .conflicts(policies),
    );
    let s: Vec<Store> = (0..n).map(|i| m.open_with(i, opts.clone())).collect();
    for i in 1..=3 {
        s[0].apply(&host(i)).unwrap();
    }
    quiesce(&s);
    (m, s)
}

fn set_os(id: i64, os: &str) -> ChangeSet {
    ChangeSet::new().update("hosts", [("id", id)], [("os", os)])
}

/// Lets the HLC move on (its milliseconds), so that "later" is later.
fn tick() {
    std::thread::sleep(Duration::from_millis(3));
}

fn synced(s: &Store) {
    let r = s.sync_now();
    assert!(r.error.is_none(), "sync: {:?}", r.error);
}

fn host_os(m: &Machines, id: i64) -> Vec<Vec<Value>> {
    m.target
        .rows(&format!("SELECT os FROM hosts WHERE id = {id}"))
}

fn only(list: Vec<ConflictRecord>) -> ConflictRecord {
    assert_eq!(list.len(), 1, "{list:#?}");
    list.into_iter().next().unwrap()
}

#[test]
fn concurrent_updates_settle_last_writer_wins_and_are_recorded_and_counted() {
    for kind in TargetKind::all() {
        with_timeout(120, move || {
            let (m, s) = machines(kind, 2, ConflictPolicies::new());
            // Machine 0 edits first, machine 1 later; machine 1 reaches the target first.
            s[0].apply(&set_os(1, "debian")).unwrap();
            tick();
            s[1].apply(&set_os(1, "arch")).unwrap();
            synced(&s[1]);
            synced(&s[0]);
            assert_eq!(host_os(&m, 1), [[Value::from("arch")]], "{kind}");
            let c = only(s[0].conflicts(10).unwrap());
            assert_eq!(c.kind, "update/update", "{kind}");
            assert_eq!(
                c.resolution, "target",
                "{kind}: the older local edit is overridden"
            );
            assert!(!c.pending);
            assert_eq!(c.table, "hosts");
            assert_eq!(c.key, vec![("id".to_string(), Value::Integer(1))]);
            assert_eq!(c.remote_journal_id, s[1].status().unwrap().journal_id);
            assert!(c.remote_hlc > c.local_hlc, "{kind}: {c:?}");
            let col = |r: &Option<Vec<(String, Value)>>, n: &str| {
                r.as_ref()
                    .and_then(|cols| cols.iter().find(|(c, _)| c == n).map(|(_, v)| v.clone()))
            };
            assert_eq!(col(&c.local_row, "os"), Some(Value::from("debian")));
            assert_eq!(col(&c.target_row, "os"), Some(Value::from("arch")));
            let base = c.base_row.clone().expect("the log has the insert").unwrap();
            assert_eq!(
                col(&Some(base), "os"),
                Some(Value::Null),
                "{kind}: the base"
            );
            let counts = s[0].status().unwrap().conflicts;
            assert_eq!(
                counts,
                ConflictCounts {
                    resolved: 1,
                    pending: 0
                },
                "{kind}"
            );
            assert_eq!(s[1].status().unwrap().conflicts, ConflictCounts::default());
            quiesce(&s);
            for st in &s {
                assert_eq!(cache_rows(st), m.target_rows(), "{kind}: caches converge");
            }

            // The other way round: the later edit reaches the target second, and wins.
            s[0].apply(&set_os(2, "debian")).unwrap();
            tick();
            s[1].apply(&set_os(2, "arch")).unwrap();
            synced(&s[0]);
            synced(&s[1]);
            assert_eq!(host_os(&m, 2), [[Value::from("arch")]], "{kind}");
            let c = only(s[1].conflicts(10).unwrap());
            assert_eq!(
                (c.kind.as_str(), c.resolution.as_str()),
                ("update/update", "local")
            );
            quiesce(&s);
            for st in &s {
                assert_eq!(cache_rows(st), m.target_rows(), "{kind}");
            }
            // Every journal's conflicts, newest first.
            let all = {
                let mut r = syncjournal::Replayer::<ChangeSet>::follower(
                    m.journal(0),
                    m.target.spec(),
                    m.target.options(),
                    ReplayOptions::new(),
                )
                .unwrap();
                r.conflicts(10, true).unwrap()
            };
            assert_eq!(all.len(), 2, "{kind}");
            assert!(all[0].id > all[1].id);
        });
    }
}

#[test]
fn the_counts_are_the_targets_after_a_commit_in_doubt_a_kill_and_a_decision_made_elsewhere() {
    for kind in TargetKind::all() {
        with_timeout(120, move || {
            let (m, mut s) = machines(kind, 3, ConflictPolicies::new());
            // Machine 0 again, with a commit that lands but reports an error (in doubt).
            drop(s.remove(0));
            let faults = Arc::new(Faults::new());
            let opts = m
                .options()
                .target(m.target.spec(), m.target.options().faults(faults.clone()))
                .replay(ReplayOptions::new().reject_policy(RejectPolicy::Quarantine));
            let s0 = m.open_with(0, opts);
            s0.apply(&set_os(1, "debian")).unwrap();
            tick();
            s[0].apply(&set_os(1, "arch")).unwrap();
            synced(&s[0]);
            faults.arm(Plan {
                after_commit: 1,
                ..Plan::default()
            });
            let rep = s0.sync_now();
            assert_eq!(faults.commit_hits(), 1, "{kind}");
            assert!(rep.error.is_none(), "{kind}: verified as landed: {rep}");
            assert_eq!(s0.conflicts(10).unwrap().len(), 1, "{kind}");
            assert_eq!(
                s0.status().unwrap().conflicts.resolved,
                1,
                "{kind}: counted although its batch's commit was in doubt"
            );
            // A process killed after a commit and before it saved its status: the saved
            // status is older than the target. The target's count wins at the next sync.
            let state = m.journal(0).join(syncjournal::replay::REPLAY_STATE_FILE);
            let saved = std::fs::read(&state).unwrap();
            s0.apply(&set_os(3, "debian")).unwrap();
            tick();
            s[0].apply(&set_os(3, "arch")).unwrap();
            synced(&s[0]);
            synced(&s0);
            assert_eq!(s0.status().unwrap().conflicts.resolved, 2, "{kind}");
            drop(s0);
            std::fs::write(&state, &saved).unwrap();
            let s0 = m.open_with(0, m.options());
            synced(&s0);
            assert_eq!(
                s0.status().unwrap().conflicts.resolved,
                2,
                "{kind}: the target's count after a sync"
            );
            // A conflict that waits for a decision, settled while its store is closed (an
            // operator's `syncjournal quarantine discard`): the reopened store's status
            // follows the target at its next sync, not what it had counted itself.
            let reject = || {
                m.options().replay(
                    ReplayOptions::new()
                        .reject_policy(RejectPolicy::Quarantine)
                        .conflicts(ConflictPolicies::new().table("hosts", ConflictPolicy::Reject)),
                )
            };
            drop(s);
            let s2 = m.open_with(2, reject());
            s2.apply(&set_os(2, "alpine")).unwrap();
            tick();
            s0.apply(&set_os(2, "arch")).unwrap();
            synced(&s0);
            synced(&s2);
            let waiting = ConflictCounts {
                resolved: 0,
                pending: 1,
            };
            assert_eq!(s2.status().unwrap().conflicts, waiting, "{kind}");
            let lsn = s2.quarantined().unwrap()[0].lsn;
            drop(s2);
            {
                let j =
                    syncjournal::Journal::open(m.journal(2), syncjournal::JournalOptions::new())
                        .unwrap();
                let mut r = syncjournal::Replayer::<ChangeSet>::new(
                    Arc::new(j),
                    m.target.spec(),
                    m.target.options(),
                    ReplayOptions::new(),
                );
                assert!(r.discard_quarantined(lsn).unwrap(), "{kind}");
            }
            let s2 = m.open_with(2, reject());
            synced(&s2);
            assert_eq!(
                s2.status().unwrap().conflicts,
                ConflictCounts {
                    resolved: 1,
                    pending: 0
                },
                "{kind}: the decision made elsewhere is counted"
            );
        });
    }
}

#[test]
fn deletes_and_inserts_take_part_in_conflicts() {
    for kind in TargetKind::all() {
        with_timeout(120, move || {
            let (m, s) = machines(kind, 2, ConflictPolicies::new());
            // delete (older) against update (newer, on the target first): the row stays.
            s[0].apply(&ChangeSet::new().delete("hosts", [("id", 1)]))
                .unwrap();
            tick();
            s[1].apply(&set_os(1, "arch")).unwrap();
            // update against delete: the deletion stands, even for a newer update.
            s[1].apply(&ChangeSet::new().delete("hosts", [("id", 2)]))
                .unwrap();
            tick();
            s[0].apply(&set_os(2, "debian")).unwrap();
            // insert against insert: the newer insert's columns win.
            s[1].apply(&ChangeSet::new().insert("hosts", [("id", 10)], [("name", "from-1")]))
                .unwrap();
            tick();
            s[0].apply(&ChangeSet::new().insert("hosts", [("id", 10)], [("name", "from-0")]))
                .unwrap();
            synced(&s[1]);
            synced(&s[0]);
            let hosts = m.target.rows("SELECT id, name, os FROM hosts ORDER BY id");
            assert_eq!(
                hosts,
                vec![
                    vec![Value::Integer(1), "web-01".into(), "arch".into()],
                    vec![Value::Integer(3), "web-03".into(), Value::Null],
                    vec![Value::Integer(10), "from-0".into(), Value::Null],
                ],
                "{kind}"
            );
            let mut seen: Vec<(String, String)> = s[0]
                .conflicts(10)
                .unwrap()
                .into_iter()
                .map(|c| (c.kind, c.resolution))
                .collect();
            seen.sort();
            assert_eq!(
                seen,
                [
                    ("delete/update".to_string(), "target".to_string()),
                    ("insert/insert".into(), "local".into()),
                    ("update/delete".into(), "target".into()),
                ],
                "{kind}"
            );
            let st = s[0].status().unwrap();
            assert_eq!(st.quarantined, 0, "{kind}: nothing needed a human");
            assert_eq!(st.conflicts.resolved, 3);
            quiesce(&s);
            for st in &s {
                assert_eq!(cache_rows(st), m.target_rows(), "{kind}");
            }
        });
    }
}

#[test]
fn per_table_policies_target_wins_reject_and_a_resolver() {
    for kind in TargetKind::all() {
        with_timeout(180, move || {
            let seen: Arc<Mutex<Vec<String>>> = Arc::default();
            let log = Arc::clone(&seen);
            let resolver: syncjournal::Resolver = Arc::new(move |c| {
                let current_ok = c.current.is_some();
                let base_ok = matches!(c.base, Some(Some(_)));
                log.lock().unwrap().push(format!(
                    "{} base={base_ok} current={current_ok} local={}",
                    c.kind,
                    c.local.is_some()
                ));
                Resolution::Write(vec![("not_after".into(), Value::from("2031-01-01"))])
            });
            let policies = ConflictPolicies::new()
                .table("HOSTS", ConflictPolicy::TargetWins)
                .table("domains", ConflictPolicy::Reject)
                .table("certificates", ConflictPolicy::Resolve(resolver));
            let (m, s) = machines(kind, 2, policies);
            s[0].apply(
                &ChangeSet::new()
                    .insert("domains", [("name", "example.org")], [("host_id", 1)])
                    .insert(
                        "certificates",
                        [("id", 1)],
                        [("domain", "example.org"), ("not_after", "2030-01-01")],
                    ),
            )
            .unwrap();
            quiesce(&s);
            // Machine 1 edits first and reaches the target first; machine 0's edits are later.
            s[1].apply(&set_os(1, "arch")).unwrap();
            s[1].apply(&ChangeSet::new().update(
                "domains",
                [("name", "example.org")],
                [("registrar", "one")],
            ))
            .unwrap();
            s[1].apply(&ChangeSet::new().update(
                "certificates",
                [("id", 1)],
                [("not_after", "2030-06-01")],
            ))
            .unwrap();
            tick();
            s[0].apply(&set_os(1, "debian")).unwrap();
            let rejected = s[0]
                .apply(&ChangeSet::new().update(
                    "domains",
                    [("name", "example.org")],
                    [("registrar", "zero")],
                ))
                .unwrap();
            s[0].apply(&ChangeSet::new().update(
                "certificates",
                [("id", 1)],
                [("pem", vec![1u8, 2])],
            ))
            .unwrap();
            synced(&s[1]);
            synced(&s[0]);
            // Target wins, though machine 0's edit is newer.
            assert_eq!(host_os(&m, 1), [[Value::from("arch")]], "{kind}");
            // Reject: quarantined, pending a decision; the target keeps machine 1's.
            assert_eq!(
                m.target
                    .rows("SELECT registrar FROM domains WHERE name = 'example.org'"),
                [[Value::from("one")]],
                "{kind}"
            );
            let q = s[0].quarantined().unwrap();
            assert_eq!(q.len(), 1, "{kind}");
            assert_eq!(q[0].lsn, rejected);
            assert!(q[0].error.contains("conflict"), "{kind}: {}", q[0].error);
            let st = s[0].status().unwrap();
            assert_eq!(
                st.conflicts,
                ConflictCounts {
                    resolved: 2,
                    pending: 1
                },
                "{kind}"
            );
            // The resolver saw all three rows and wrote its own.
            assert_eq!(
                *seen.lock().unwrap(),
                ["update/update base=true current=true local=true"],
                "{kind}"
            );
            assert_eq!(
                m.target
                    .rows("SELECT not_after FROM certificates WHERE id = 1"),
                [[Value::from("2031-01-01")]],
                "{kind}"
            );
            let by_kind: Vec<(String, String, bool)> = s[0]
                .conflicts(10)
                .unwrap()
                .into_iter()
                .map(|c| (c.table, c.resolution, c.pending))
                .collect();
            assert!(
                by_kind.contains(&("certificates".into(), "written".into(), false))
                    && by_kind.contains(&("domains".into(), "rejected".into(), true))
                    && by_kind.contains(&("hosts".into(), "target".into(), false)),
                "{kind}: {by_kind:?}"
            );
            // A human applies the rejected entry as it is: it is settled, nothing pending.
            s[0].retry_quarantined(rejected).unwrap();
            assert_eq!(
                m.target
                    .rows("SELECT registrar FROM domains WHERE name = 'example.org'"),
                [[Value::from("zero")]],
                "{kind}"
            );
            assert_eq!(
                s[0].status().unwrap().conflicts,
                ConflictCounts {
                    resolved: 3,
                    pending: 0
                },
                "{kind}"
            );
            quiesce(&s);
            for st in &s {
                assert_eq!(cache_rows(st), m.target_rows(), "{kind}");
            }
        });
    }
}

#[test]
fn a_change_the_cache_had_pulled_is_no_conflict_and_detection_can_be_off() {
    for kind in TargetKind::all() {
        with_timeout(120, move || {
            let (m, s) = machines(kind, 2, ConflictPolicies::new());
            s[1].apply(&set_os(1, "arch")).unwrap();
            synced(&s[1]);
            let p = s[0].pull_now();
            assert!(p.error.is_none());
            s[0].apply(&set_os(1, "debian")).unwrap();
            synced(&s[0]);
            assert!(s[0].conflicts(10).unwrap().is_empty(), "{kind}");
            assert_eq!(host_os(&m, 1), [[Value::from("debian")]]);
            drop(s);

            let (m, s) = machines(kind, 2, ConflictPolicies::new().detect(false));
            s[0].apply(&set_os(1, "debian")).unwrap();
            tick();
            s[1].apply(&set_os(1, "arch")).unwrap();
            synced(&s[1]);
            synced(&s[0]);
            assert!(s[0].conflicts(10).unwrap().is_empty(), "{kind}");
            assert_eq!(
                host_os(&m, 1),
                [[Value::from("debian")]],
                "{kind}: without detection the last replayed wins"
            );
            quiesce(&s);
            for st in &s {
                assert_eq!(cache_rows(st), m.target_rows(), "{kind}");
            }
        });
    }
}

#[test]
fn a_dropped_change_does_not_lend_its_clock_to_the_value_that_won() {
    for kind in TargetKind::all() {
        with_timeout(120, move || {
            let (m, s) = machines(kind, 3, ConflictPolicies::new());
            // Edits made in the order 0, 2, 1; replayed in the order 1, 0, 2.
            s[0].apply(&set_os(1, "zero")).unwrap();
            tick();
            s[2].apply(&set_os(1, "two")).unwrap();
            tick();
            s[1].apply(&set_os(1, "one")).unwrap();
            synced(&s[1]);
            synced(&s[0]);
            // Machine 0's older edit is dropped; its record holds machine 1's value, with
            // machine 1's clock. Machine 2's edit is older than that value: it loses too.
            synced(&s[2]);
            assert_eq!(host_os(&m, 1), [[Value::from("one")]], "{kind}");
            for i in [0, 2] {
                let c = only(s[i].conflicts(10).unwrap());
                assert_eq!(c.resolution, "target", "{kind}: machine {i}: {c:?}");
            }
            let c2 = only(s[2].conflicts(10).unwrap());
            assert_eq!(
                c2.remote_journal_id,
                s[0].status().unwrap().journal_id,
                "{kind}: the latest record is machine 0's"
            );
            assert!(c2.remote_hlc > c2.local_hlc, "{kind}: {c2:?}");
            quiesce(&s);
            for st in &s {
                assert_eq!(cache_rows(st), m.target_rows(), "{kind}");
            }
        });
    }
}
