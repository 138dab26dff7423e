//! What the replayer refuses or repairs about the target:
//!
//! * a target in WAL that cannot be switched back (another connection keeps it open) is
//!   refused with `TargetWal`;
//! * an entry for a table the target does not have: with `RejectPolicy::Stop`,
//!   `EntryRejected` naming the LSN, the entry and the table, in the status, and nothing after
//!   it applied; with `Quarantine`, recorded and skipped;
//! * syncjournal's own tables with the wrong columns: `SchemaMismatch`;
//! * a TAMPERED journal (change sets with SQL in table and column names, internal tables,
//!   undecodable payloads, unknown kinds) cannot inject SQL: those entries are rejected and
//!   every table of the target still exists with its contents intact;
//! * the target's watermark ahead of the local acknowledgement (a crash after a commit):
//!   nothing is applied twice and the acknowledgement catches up; a watermark beyond the
//!   journal's head is refused (`TargetAhead`);
//! * a target restored from an older backup: re-applied from its watermark while the entries
//!   are retained (exactly the missing ones), `ReplayGap` naming the range once they are
//!   retired.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use syncjournal::error::TargetError;

use crate::support::events::{
    Bump, COUNTER_SCHEMA, Ledger, assert_target_is_fold, target_counters,
};
use crate::support::inventory::{INVENTORY_SCHEMA, Inventory, dump_inventory, host};
use crate::support::process::with_timeout;
use crate::support::replay::{Rig, replay_opts};
use crate::support::targets::{
    TargetKind, TestTarget, create_target, integrity, open_target, target_watermark,
};
use syncjournal::event::{KIND_CHANGESET, encode_event};
use syncjournal::replay::REPLAY_STATE_FILE;
use syncjournal::{
    ChangeSet, Error, Journal, JournalEvent, JournalOptions, Lsn, Mutation, RejectPolicy, Replayer,
    Store, TargetOptions, Value,
};

#[test]
fn a_wal_target_is_refused_until_its_operator_switches_it() {
    with_timeout(60, || {
        let rig = Rig::new(TargetKind::Sqlite, 10);
        let other = rusqlite::Connection::open(rig.target.path()).unwrap();
        let mode: String = other
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        // The connection stays open: nobody else can leave WAL.
        let _: i64 = other
            .query_row("SELECT count(*) FROM counters", [], |r| r.get(0))
            .unwrap();

        let mut r = rig.replayer(replay_opts().retry_attempts_max(2));
        let rep = r.sync_now();
        match &rep.error {
            Some(Error::Target(TargetError::Wal { path, mode })) => {
                assert_eq!(path, rig.target.path());
                assert!(mode.eq_ignore_ascii_case("wal"), "{mode}");
            }
            other => panic!("a WAL target must be refused with TargetWal, got {other:?}"),
        }
        assert!(rep.error.as_ref().unwrap().to_string().contains("WAL"));
        assert_eq!(rep.applied, 0);
        assert_eq!(rig.acked(), 0);
        let last = r.state().last_error.clone().expect("last_error");
        assert!(last.message.contains("journal_mode"), "{last:?}");
        assert!(target_counters(&rig.target).is_empty());

        // Even once nobody here holds it in WAL, the replayer does not switch it behind its
        // users' backs (on a share, "nobody" cannot be known: another machine's locks are not
        // visible); it keeps refusing, with the command to run.
        drop(other);
        let rep = r.sync_now();
        assert!(
            matches!(rep.error, Some(Error::Target(TargetError::Wal { .. }))),
            "{rep}"
        );
        assert!(
            rep.error
                .as_ref()
                .unwrap()
                .to_string()
                .contains("PRAGMA journal_mode=TRUNCATE")
        );
        assert!(target_counters(&rig.target).is_empty());
        // The operator switches it: then it is used.
        let mode: String = rig
            .target
            .connect()
            .query_row("PRAGMA journal_mode=TRUNCATE", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "truncate");
        let rep = r.sync_now();
        assert!(rep.error.is_none(), "{rep}");
        rig.check_complete("after WAL was released");
        let mode: String = rig
            .target
            .connect()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert!(!mode.eq_ignore_ascii_case("wal"), "{mode}");
    });
}

/// An inventory whose target (of `kind`) lacks the `domains` table.
fn inv_without_domains(kind: TargetKind) -> Inventory {
    let inv = Inventory::new(kind);
    inv.target.create_schema(
        "CREATE TABLE hosts (id INTEGER PRIMARY KEY, name TEXT NOT NULL, address TEXT, os TEXT);
         CREATE TABLE certificates (id INTEGER PRIMARY KEY, domain TEXT NOT NULL, not_after TEXT NOT NULL, pem BLOB);",
    );
    inv
}

fn inv_store(inv: &Inventory, policy: RejectPolicy) -> Store {
    inv.store(inv.target.options(), replay_opts().reject_policy(policy))
}

fn hosts_on(target: &TestTarget) -> Vec<i64> {
    target.ints("SELECT id FROM hosts ORDER BY id")
}

/// An inventory whose target (of `kind`) lacks `domains`, its store with `policy`, and three
/// entries: host 1, a domain (the target refuses it: its LSN is returned), host 2.
fn with_a_refused_entry(kind: TargetKind, policy: RejectPolicy) -> (Inventory, Store, Lsn) {
    let inv = inv_without_domains(kind);
    let store = inv_store(&inv, policy);
    store.apply(&host(1)).unwrap();
    let bad = store
        .apply(&ChangeSet::new().upsert(
            "domains",
            [("name", "web-01.example.org")],
            [("host_id", 1)],
        ))
        .unwrap();
    store.apply(&host(2)).unwrap();
    (inv, store, bad)
}

#[test]
fn an_entry_for_a_table_missing_on_the_target_stops_replay() {
    for kind in TargetKind::all() {
        with_timeout(60, move || {
            let (inv, store, bad) = with_a_refused_entry(kind, RejectPolicy::Stop);
            store.apply(&host(3)).unwrap();
            assert_eq!(bad, 2);

            for attempt in 0..2 {
                let rep = store.sync_now();
                match &rep.error {
                    Some(Error::Target(TargetError::EntryRejected { lsn, entry, reason })) => {
                        assert_eq!(*lsn, bad, "attempt {attempt}");
                        assert!(entry.contains("domains"), "{entry}");
                        assert!(
                            reason.contains("domains") && reason.contains("no table"),
                            "{reason}"
                        );
                    }
                    other => panic!("attempt {attempt}: expected EntryRejected, got {other:?}"),
                }
                let msg = rep.error.as_ref().unwrap().to_string();
                assert!(msg.contains("LSN 2") && msg.contains("domains"), "{msg}");
                assert!(!rep.error.as_ref().unwrap().is_transient());
                assert_eq!(rep.applied, if attempt == 0 { 1 } else { 0 }, "{rep}");
                assert_eq!(rep.pending, 3);

                let st = store.status().unwrap();
                let last = st.last_error.expect("status shows the rejected entry");
                assert_eq!(last.lsn, Some(bad));
                assert!(
                    last.entry.as_deref().is_some_and(|e| e.contains("domains")),
                    "{last:?}"
                );
                assert!(last.message.contains("domains"), "{last:?}");
                assert!(!last.transient);
                assert_eq!(st.acked_lsn, bad - 1, "nothing after the rejected entry");
                assert_eq!(inv.target.watermark(st.journal_id), bad - 1);
                assert_eq!(
                    hosts_on(&inv.target),
                    vec![1],
                    "nothing after it is applied"
                );
            }

            // The target gets the table: the entry and everything after it apply.
            inv.target.execute(&kind.dialect(
                "CREATE TABLE domains (name TEXT PRIMARY KEY, host_id INTEGER, registrar TEXT)",
            ));
            let rep = store.sync_now();
            assert!(rep.error.is_none(), "{rep}");
            assert_eq!(rep.applied, 3);
            assert_eq!(hosts_on(&inv.target), vec![1, 2, 3]);
            let st = store.status().unwrap();
            assert!(st.last_error.is_none());
            assert_eq!(st.acked_lsn, 4);
        });
    }
}

#[test]
fn an_entry_for_a_table_missing_on_the_target_is_quarantined_with_that_policy() {
    for kind in TargetKind::all() {
        with_timeout(60, move || {
            let (inv, store, bad) = with_a_refused_entry(kind, RejectPolicy::Quarantine);
            let rep = store.sync_now();
            assert!(rep.error.is_none(), "{rep}");
            assert_eq!(rep.quarantined, 1, "{rep}");
            assert_eq!(hosts_on(&inv.target), vec![1, 2]);
            let q = store.quarantined().unwrap();
            assert_eq!(q.len(), 1);
            assert_eq!(q[0].lsn, bad);
            assert_eq!(q[0].kind, KIND_CHANGESET);
            assert!(q[0].summary.contains("domains"), "{q:?}");
            assert!(q[0].error.contains("no table"), "{q:?}");
            let st = store.status().unwrap();
            assert_eq!(st.acked_lsn, 3);
            assert_eq!(st.quarantined, 1);
        });
    }
}

#[test]
fn syncjournal_tables_with_wrong_columns_are_a_schema_mismatch() {
    for kind in TargetKind::all() {
        with_timeout(60, move || {
            for (table, ddl, missing) in [
                (
                    "syncjournal_progress",
                    "CREATE TABLE syncjournal_progress (journal_id TEXT PRIMARY KEY, position INTEGER NOT NULL)",
                    "lsn",
                ),
                (
                    "syncjournal_rejected",
                    "CREATE TABLE syncjournal_rejected (journal_id TEXT NOT NULL, lsn INTEGER NOT NULL, PRIMARY KEY (journal_id, lsn))",
                    "payload",
                ),
            ] {
                let rig = Rig::new(kind, 5);
                rig.target.execute(&kind.dialect(ddl));
                let mut r = rig.replayer(replay_opts().retry_attempts_max(3));
                let rep = r.sync_now();
                match &rep.error {
                    Some(
                        e @ Error::Target(TargetError::SchemaMismatch {
                            table: t, detail, ..
                        }),
                    ) => {
                        assert_eq!(t, table);
                        assert!(detail.contains(missing), "{detail}");
                        assert!(!e.is_transient());
                    }
                    other => panic!("{table}: expected SchemaMismatch, got {other:?}"),
                }
                assert_eq!(rep.retries, 0, "a schema mismatch is not retried");
                assert_eq!(rep.applied, 0);
                assert_eq!(rig.acked(), 0);
                assert!(target_counters(&rig.target).is_empty());
                let last = r.state().last_error.clone().expect("last_error");
                assert!(last.message.contains(table), "{last:?}");
            }
        });
    }
}

/// Table names, column names and keys a tampered journal could carry, each as a change set
/// the applier must refuse without running any of its SQL.
fn evil_change_sets() -> Vec<(&'static str, ChangeSet)> {
    let m = |mutation: Mutation| ChangeSet::new().push(mutation);
    let s = |x: &str| x.to_string();
    let id = |i: i64| vec![(s("id"), Value::Integer(i))];
    vec![
        (
            "SQL in a table name",
            m(Mutation::Delete {
                table: s("hosts\"; DROP TABLE hosts; --"),
                key: id(1),
            }),
        ),
        (
            "SQL in a table name, unquoted",
            m(Mutation::Upsert {
                table: s("certificates; DROP TABLE certificates"),
                key: id(1),
                values: vec![(s("domain"), Value::Text(s("x")))],
            }),
        ),
        (
            "SQL in a column name",
            m(Mutation::Upsert {
                table: s("hosts"),
                key: id(1),
                values: vec![(
                    s("name\" = 'x'; DROP TABLE domains; --"),
                    Value::Text(s("y")),
                )],
            }),
        ),
        (
            "SQL in a key column name",
            m(Mutation::Delete {
                table: s("hosts"),
                key: vec![(s("id\" = \"id\" OR 1=1; --"), Value::Integer(1))],
            }),
        ),
        (
            "a NUL byte in a table name",
            m(Mutation::Delete {
                table: s("hosts\0\"; DROP TABLE hosts; --"),
                key: id(1),
            }),
        ),
        (
            "syncjournal's progress table",
            m(Mutation::Upsert {
                table: s("syncjournal_progress"),
                key: vec![(s("journal_id"), Value::Text(s("x")))],
                values: vec![
                    (s("lsn"), Value::Integer(1 << 40)),
                    (s("updated_at"), Value::Integer(0)),
                ],
            }),
        ),
        (
            "SQLite's schema table",
            m(Mutation::Delete {
                table: s("sqlite_master"),
                key: vec![(s("name"), Value::Text(s("hosts")))],
            }),
        ),
        (
            "a valid mutation, then a malicious one (all or none)",
            ChangeSet::new()
                .delete("hosts", [("id", 2)])
                .push(Mutation::Delete {
                    table: s("domains\"; DROP TABLE domains; --"),
                    key: vec![(s("name"), Value::Text(s("x")))],
                }),
        ),
    ]
}

/// The legitimate entries: three hosts with domains and certificates, and a row whose values
/// look like SQL (values are data: stored verbatim).
fn legit_prefix() -> Vec<ChangeSet> {
    (1..=3i64)
        .map(|i| {
            host(i)
                .upsert(
                    "domains",
                    [("name", format!("web-{i:02}.example.org"))],
                    [("host_id", i)],
                )
                .upsert(
                    "certificates",
                    [("id", i)],
                    [
                        ("domain", Value::from(format!("web-{i:02}.example.org"))),
                        ("not_after", "2026-12-31".into()),
                    ],
                )
        })
        .chain([ChangeSet::new().upsert(
            "hosts",
            [("id", 9)],
            [
                ("name", "'); DROP TABLE hosts; --"),
                ("os", "\"; DELETE FROM hosts; --"),
            ],
        )])
        .collect()
}

fn legit_suffix() -> ChangeSet {
    host(10)
}

/// A tampered record: a change set, undecodable bytes, or a record of another kind.
enum Tampered {
    ChangeSet(ChangeSet),
    Garbage,
    OtherKind,
}

fn append(journal: &Journal, rec: &Tampered) -> Lsn {
    match rec {
        Tampered::ChangeSet(cs) => journal
            .append_kind(KIND_CHANGESET, &encode_event(0, cs).unwrap())
            .unwrap(),
        Tampered::Garbage => journal
            .append_kind(KIND_CHANGESET, &[0x01, 0x05, 0xff, 0xff, 0xff, 0x00, 0x07])
            .unwrap(),
        Tampered::OtherKind => journal
            .append_kind(
                Bump::KIND,
                &encode_event(0, &Bump { counter: 1, seq: 1 }).unwrap(),
            )
            .unwrap(),
    }
}

/// What the target holds after replaying only `entries` (a reference run).
fn reference_state(
    entries: &[ChangeSet],
) -> std::collections::BTreeMap<&'static str, Vec<Vec<Value>>> {
    let dir = tempfile::tempdir().unwrap();
    let journal =
        Arc::new(Journal::open(dir.path().join("journal"), JournalOptions::new()).unwrap());
    for cs in entries {
        append(&journal, &Tampered::ChangeSet(cs.clone()));
    }
    let target = dir.path().join("ref.db");
    create_target(&target, INVENTORY_SCHEMA);
    let mut r: Replayer = Replayer::new(journal, &target, TargetOptions::new(), replay_opts());
    let rep = r.sync_now();
    assert!(rep.error.is_none(), "reference: {rep}");
    dump_inventory(&open_target(&target))
}

fn schema_objects(target: &Path) -> Vec<(String, String)> {
    let c = open_target(target);
    let mut s = c
        .prepare("SELECT type, name FROM sqlite_schema ORDER BY type, name")
        .unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[test]
fn a_tampered_journal_cannot_inject_sql() {
    with_timeout(60, || {
        let prefix = legit_prefix();
        let after_prefix = reference_state(&prefix);
        let mut all_legit = prefix.clone();
        all_legit.push(legit_suffix());
        let after_all = reference_state(&all_legit);
        assert!(
            after_prefix["hosts"].len() == 4,
            "reference state: {after_prefix:?}"
        );

        let mut tampered: Vec<(&str, Tampered)> = evil_change_sets()
            .into_iter()
            .map(|(what, cs)| (what, Tampered::ChangeSet(cs)))
            .collect();
        tampered.push(("an undecodable change set", Tampered::Garbage));
        tampered.push(("a record of another kind", Tampered::OtherKind));

        // Stop: each tampered entry on its own stops replay, naming its LSN.
        for (what, rec) in &tampered {
            let dir = tempfile::tempdir().unwrap();
            let journal =
                Arc::new(Journal::open(dir.path().join("journal"), JournalOptions::new()).unwrap());
            for cs in &prefix {
                append(&journal, &Tampered::ChangeSet(cs.clone()));
            }
            let evil = append(&journal, rec);
            append(&journal, &Tampered::ChangeSet(legit_suffix()));
            let target = dir.path().join("target.db");
            create_target(&target, INVENTORY_SCHEMA);
            let schema = schema_objects(&target);
            let mut r: Replayer = Replayer::new(
                Arc::clone(&journal),
                &target,
                TargetOptions::new(),
                replay_opts(),
            );
            let rep = r.sync_now();
            match (&rep.error, rec) {
                (Some(Error::Target(TargetError::EntryRejected { lsn, .. })), _) => {
                    assert_eq!(*lsn, evil, "{what}")
                }
                // A kind this replayer does not apply stops it too, but it is no refusal.
                (
                    Some(Error::Target(TargetError::UnknownKind { lsn, .. })),
                    Tampered::OtherKind,
                ) => {
                    assert_eq!(*lsn, evil, "{what}")
                }
                (other, _) => panic!("{what}: expected EntryRejected, got {other:?} ({rep})"),
            }
            assert_eq!(
                r.state().last_error.as_ref().and_then(|e| e.lsn),
                Some(evil)
            );
            let c = open_target(&target);
            assert_eq!(integrity(&c), "ok");
            drop(c);
            let mut now = schema_objects(&target);
            now.retain(|(_, n)| {
                !n.starts_with("syncjournal_") && !n.starts_with("sqlite_autoindex_syncjournal")
            });
            assert_eq!(
                now, schema,
                "{what}: every table still exists, nothing added"
            );
            assert_eq!(
                dump_inventory(&open_target(&target)),
                after_prefix,
                "{what}: contents intact"
            );
            assert_eq!(target_watermark(&target, journal.id()), evil - 1, "{what}");
            assert_eq!(journal.state().acked_lsn, evil - 1, "{what}");
        }

        // Quarantine: all of them in one journal, each recorded, the rest applied — except a
        // record of another kind, which stops replay even under Quarantine (quarantining it
        // would move the watermark past an entry that the application's own replayer applies).
        tampered.retain(|(_, rec)| !matches!(rec, Tampered::OtherKind));
        let dir = tempfile::tempdir().unwrap();
        let journal =
            Arc::new(Journal::open(dir.path().join("journal"), JournalOptions::new()).unwrap());
        for cs in &prefix {
            append(&journal, &Tampered::ChangeSet(cs.clone()));
        }
        let evil: Vec<Lsn> = tampered
            .iter()
            .map(|(_, rec)| append(&journal, rec))
            .collect();
        append(&journal, &Tampered::ChangeSet(legit_suffix()));
        let sqlite = TestTarget::create(
            TargetKind::Sqlite,
            dir.path(),
            "target.db",
            INVENTORY_SCHEMA,
        );
        let target = sqlite.path().to_path_buf();
        let mut r: Replayer = Replayer::new(
            Arc::clone(&journal),
            &target,
            TargetOptions::new(),
            replay_opts().reject_policy(RejectPolicy::Quarantine),
        );
        let rep = r.sync_now();
        assert!(rep.error.is_none(), "{rep}");
        assert_eq!(rep.quarantined, tampered.len() as u64, "{rep}");
        let q = r.quarantined().unwrap();
        assert_eq!(q.iter().map(|e| e.lsn).collect::<Vec<_>>(), evil);
        assert_eq!(
            dump_inventory(&open_target(&target)),
            after_all,
            "every table intact, the legitimate entries applied"
        );
        assert_eq!(integrity(&open_target(&target)), "ok");
        let head = journal.state().durable_lsn;
        assert_eq!(target_watermark(&target, journal.id()), head);
        assert_eq!(
            sqlite.progress_rows(),
            vec![(journal.id().to_string(), head as i64)],
            "the progress table holds only this journal's row"
        );
    });
}

#[test]
fn a_target_watermark_ahead_of_the_local_acknowledgement_is_not_applied_twice() {
    for kind in TargetKind::all() {
        with_timeout(60, move || {
            let dir = tempfile::tempdir().unwrap();
            let jdir = dir.path().join("journal");
            let target = TestTarget::create(kind, dir.path(), "target.db", COUNTER_SCHEMA);
            // One segment: nothing is retired, so an old ACK stays consistent with the segments.
            let opts = JournalOptions::new().segment_bytes_max(1 << 20);
            let mut ledger = Ledger::default();
            let journal = Arc::new(Journal::open(&jdir, opts.clone()).unwrap());
            ledger.append_increments(&journal, 12);
            let id = journal.id();
            let old_ack = std::fs::read(jdir.join("ACK")).unwrap();
            let mut r: Replayer<Bump> = Replayer::new(
                Arc::clone(&journal),
                target.spec(),
                target.options(),
                replay_opts().batch_entries_max(5),
            );
            assert!(r.sync_now().error.is_none());
            assert_eq!(journal.state().acked_lsn, 12);
            drop(r);
            drop(journal);

            // As after a crash between the commit and the acknowledgement: the local ACK is older
            // than the target's watermark, and the replayer's state is gone.
            std::fs::write(jdir.join("ACK"), &old_ack).unwrap();
            let _ = std::fs::remove_file(jdir.join(REPLAY_STATE_FILE));
            let journal = Arc::new(Journal::open(&jdir, opts).unwrap());
            assert_eq!(journal.state().acked_lsn, 0, "the simulated lag");
            assert_eq!(target.watermark(id), 12);
            ledger.append_increments(&journal, 4);

            let mut r: Replayer<Bump> = Replayer::new(
                Arc::clone(&journal),
                target.spec(),
                target.options(),
                replay_opts().batch_entries_max(5),
            );
            let rep = r.sync_now();
            assert!(rep.error.is_none(), "{rep}");
            assert_eq!(
                rep.applied, 4,
                "only the entries after the watermark: {rep}"
            );
            let w = assert_target_is_fold(&target, id, &ledger);
            assert_eq!(w, 16);
            assert_eq!(
                journal.state().acked_lsn,
                16,
                "the acknowledgement caught up"
            );

            // Caught up with nothing new: the acknowledgement catches up without applying.
            drop(r);
            let rep = Replayer::<Bump>::new(
                Arc::clone(&journal),
                target.spec(),
                target.options(),
                replay_opts(),
            )
            .sync_now();
            assert!(rep.error.is_none());
            assert_eq!(rep.applied, 0);
        });
    }
}

#[test]
fn a_target_watermark_beyond_the_journal_head_is_refused() {
    for kind in TargetKind::all() {
        with_timeout(60, move || {
            let rig = Rig::new(kind, 6);
            let mut r = rig.replayer(replay_opts());
            assert!(r.sync_now().error.is_none());
            let before = target_counters(&rig.target);
            rig.target.execute(&format!(
                "UPDATE syncjournal_progress SET lsn = 11 WHERE journal_id = '{}'",
                rig.journal.id()
            ));
            let mut rig = rig;
            rig.append(2);
            let rep = r.sync_now();
            match &rep.error {
                Some(
                    e @ Error::Target(TargetError::Ahead {
                        target_lsn, head, ..
                    }),
                ) => {
                    assert_eq!((*target_lsn, *head), (11, 8));
                    assert!(!e.is_transient());
                }
                other => panic!("expected TargetAhead, got {other:?}"),
            }
            assert_eq!(rep.applied, 0);
            assert_eq!(rig.acked(), 6, "nothing acknowledged");
            assert_eq!(target_counters(&rig.target), before, "nothing applied");
        });
    }
}

/// A journal of small segments, `first` increments synced to a target of `kind`, a backup
/// of the target, then `second` more synced. Returns the rig and the backup's path.
fn restore_rig(
    kind: TargetKind,
    retain: usize,
    first: u64,
    second: u64,
) -> (Rig, Replayer<Bump>, PathBuf) {
    let mut rig = Rig::with_journal(
        kind,
        JournalOptions::new()
            .segment_bytes_max(64 << 10)
            .retain_acked_segments(retain)
            .retain_acked_ms(0),
        0,
    );
    let j = Arc::clone(&rig.journal);
    rig.ledger.append_increments_batched(&j, first, 200);
    let mut r = rig.replayer(replay_opts().batch_entries_max(1000));
    assert!(r.sync_now().error.is_none());
    let backup = rig.dir.path().join("backup.db");
    rig.target.backup(&backup);
    rig.ledger.append_increments_batched(&j, second, 200);
    assert!(r.sync_now().error.is_none());
    rig.check_complete("before the restore");
    (rig, r, backup)
}

#[test]
fn a_target_restored_from_an_older_backup_is_replayed_from_its_watermark() {
    for kind in TargetKind::all() {
        with_timeout(60, move || {
            let (rig, mut r, backup) = restore_rig(kind, 1000, 1500, 1500);
            assert_eq!(rig.journal.state().first_lsn, 1, "everything retained");
            // Restore: the backup's contents put into the target.
            rig.target.restore_in_place(&backup);
            assert_eq!(rig.target.watermark(rig.journal.id()), 1500);
            let rep = r.sync_now();
            assert!(rep.error.is_none(), "{rep}");
            assert_eq!(rep.applied, 1500, "exactly the missing entries: {rep}");
            rig.check_complete("after the restore");
        });
    }
}

#[test]
fn a_target_restored_by_replacing_its_file_is_replayed_from_its_watermark() {
    for kind in TargetKind::all() {
        with_timeout(60, move || {
            let (rig, mut r, backup) = restore_rig(kind, 1000, 1500, 1500);
            // Restore: the backup as a new target of the same name (a new file at the same path;
            // a new database of the same name), while the replayer is connected to the old one.
            rig.target.restore_replacing(&backup);
            assert_eq!(rig.target.watermark(rig.journal.id()), 1500);
            let rep = r.sync_now();
            assert!(rep.error.is_none(), "{rep}");
            assert_eq!(
                rig.target.watermark(rig.journal.id()),
                3000,
                "the file at the target's path must get the missing entries ({rep})"
            );
            assert_eq!(rep.applied, 1500, "exactly the missing entries: {rep}");
            rig.check_complete("after the restore");
        });
    }
}

#[test]
fn a_target_restored_after_its_entries_were_retired_is_a_replay_gap() {
    for kind in TargetKind::all() {
        with_timeout(60, move || {
            let (rig, mut r, backup) = restore_rig(kind, 0, 1500, 1500);
            let first = rig.journal.state().first_lsn;
            assert!(
                first > 1501,
                "the backup's missing entries are retired (first {first})"
            );
            rig.target.restore_in_place(&backup);
            let rep = r.sync_now();
            match &rep.error {
                Some(
                    e @ Error::Target(TargetError::ReplayGap {
                        target_lsn,
                        first_retained,
                        ..
                    }),
                ) => {
                    assert_eq!((*target_lsn, *first_retained), (1500, first));
                    let msg = e.to_string();
                    assert!(msg.contains(&format!("LSNs 1501..{first}")), "{msg}");
                    assert!(!e.is_transient());
                }
                other => panic!("expected ReplayGap, got {other:?}"),
            }
            assert_eq!(rep.applied, 0);
            assert_eq!(
                target_counters(&rig.target),
                rig.ledger.fold(1500),
                "the restored target is left as it is"
            );
            assert_eq!(rig.target.watermark(rig.journal.id()), 1500);
            let last = r.state().last_error.clone().expect("last_error");
            assert!(last.message.contains("1501"), "{last:?}");
        });
    }
}

/// (The counter event's kind must differ from the change sets'.)
const _: () = assert!(Bump::KIND != KIND_CHANGESET);
