//! Backward compatibility: a journal written by format version 1 with change-set payloads of
//! schema version 1 (kind 0x10), checked in under `tests/fixtures/changeset-v1/`, must always
//! decode to the same change sets and replay to the same target state. When the model grows,
//! add a fixture for the new version; never regenerate an old one.
//!
//! The fixture was produced by the ignored test `regenerate_fixture_v1` (run it only to create
//! a fixture for a new version, under a new directory name).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::support::journal::copy_dir;
use crate::support::targets::dump_table;
use syncjournal::event::{KIND_CHANGESET, decode_event, encode_event};
use syncjournal::{
    ChangeSet, Journal, JournalOptions, Mutation, ReplayOptions, Replayer, TargetOptions, Value,
};

const SCHEMA: &str = "
CREATE TABLE hosts (id INTEGER PRIMARY KEY, name TEXT NOT NULL, address TEXT, weight REAL, pem BLOB);
CREATE TABLE domains (name TEXT PRIMARY KEY, host_id INTEGER);
CREATE TABLE grants (host_id INTEGER, role TEXT, level INTEGER, PRIMARY KEY (host_id, role));
";

/// Creation times written into the fixture (fixed, so the payloads are reproducible).
const CREATED_AT_MS: u64 = 1_767_225_600_000;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/changeset-v1/journal")
}

/// The change sets in the fixture: every mutation and every value variant, composite keys,
/// negative and large integers, non-ASCII text, empty and non-empty blobs.
fn change_sets() -> Vec<ChangeSet> {
    vec![
        ChangeSet::new()
            .insert(
                "hosts",
                [("id", 1)],
                [
                    ("name", Value::from("web-1")),
                    ("address", "10.0.0.1".into()),
                    ("weight", 0.5.into()),
                    ("pem", vec![0x30u8, 0x82, 0x01].into()),
                ],
            )
            .insert(
                "hosts",
                [("id", 2)],
                [("name", Value::from("db-1")), ("pem", Value::Blob(vec![]))],
            )
            .insert("domains", [("name", "web-1.example.org")], [("host_id", 1)]),
        ChangeSet::new()
            .upsert(
                "hosts",
                [("id", i64::MAX)],
                [
                    ("name", Value::from("größter-host")),
                    ("weight", (-1.25e-3).into()),
                ],
            )
            .upsert(
                "grants",
                [("host_id", Value::from(1)), ("role", "admin".into())],
                [("level", Value::from(-7))],
            )
            .upsert(
                "grants",
                [("host_id", Value::from(2)), ("role", "read".into())],
                [("level", Value::Null)],
            ),
        ChangeSet::new()
            .update(
                "hosts",
                [("id", 2)],
                [("address", Value::from("10.0.0.2")), ("weight", 2.0.into())],
            )
            .upsert(
                "grants",
                [("host_id", Value::from(1)), ("role", "admin".into())],
                [("level", Value::from(9))],
            ),
        ChangeSet::new()
            .delete("domains", [("name", "web-1.example.org")])
            .delete(
                "grants",
                [("host_id", Value::from(2)), ("role", "read".into())],
            )
            .delete("hosts", [("id", 404)]),
        ChangeSet::new().update("hosts", [("id", 1)], [("address", Value::Null)]),
    ]
}

/// The target's rows after replaying the fixture, per table, ordered by primary key.
fn expected_rows() -> Vec<(&'static str, Vec<Vec<Value>>)> {
    vec![
        (
            "hosts",
            vec![
                vec![
                    Value::Integer(1),
                    "web-1".into(),
                    Value::Null,
                    0.5.into(),
                    Value::Blob(vec![0x30, 0x82, 0x01]),
                ],
                vec![
                    Value::Integer(2),
                    "db-1".into(),
                    "10.0.0.2".into(),
                    2.0.into(),
                    Value::Blob(vec![]),
                ],
                vec![
                    Value::Integer(i64::MAX),
                    "größter-host".into(),
                    Value::Null,
                    (-1.25e-3).into(),
                    Value::Null,
                ],
            ],
        ),
        ("domains", vec![]),
        (
            "grants",
            vec![vec![Value::Integer(1), "admin".into(), Value::Integer(9)]],
        ),
    ]
}

#[test]
fn fixture_v1_decodes_to_the_same_change_sets() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    copy_dir(&fixture_dir(), &dir);
    let journal = Journal::open(
        &dir,
        JournalOptions::new().recovery_mode(syncjournal::RecoveryMode::AbsoluteConsistency),
    )
    .expect("the fixture opens without any repair");
    let records: Vec<_> = journal
        .reader(1)
        .unwrap()
        .collect::<syncjournal::Result<_>>()
        .unwrap();
    let expected = change_sets();
    assert_eq!(records.len(), expected.len());
    for (rec, cs) in records.iter().zip(&expected) {
        assert_eq!(rec.kind, KIND_CHANGESET);
        let (at, decoded): (u64, ChangeSet) = decode_event(&rec.payload).unwrap();
        assert_eq!(at, CREATED_AT_MS);
        assert_eq!(&decoded, cs, "LSN {}", rec.lsn);
        // The encoding is stable: today's encoder writes the same bytes.
        assert_eq!(encode_event(CREATED_AT_MS, cs).unwrap(), rec.payload);
    }
    assert!(
        expected
            .iter()
            .flat_map(|c| &c.mutations)
            .any(|m| matches!(m, Mutation::Insert { .. }))
            && expected
                .iter()
                .flat_map(|c| &c.mutations)
                .any(|m| matches!(m, Mutation::Update { .. }))
            && expected
                .iter()
                .flat_map(|c| &c.mutations)
                .any(|m| matches!(m, Mutation::Upsert { .. }))
            && expected
                .iter()
                .flat_map(|c| &c.mutations)
                .any(|m| matches!(m, Mutation::Delete { .. })),
        "the fixture covers every mutation"
    );
}

#[test]
fn fixture_v1_replays_to_the_same_target_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    copy_dir(&fixture_dir(), &dir);
    let target = tmp.path().join("target.db");
    let journal = Arc::new(Journal::open(&dir, JournalOptions::new()).unwrap());
    let mut replayer: Replayer = Replayer::new(
        Arc::clone(&journal),
        &target,
        TargetOptions::new()
            .create_if_missing(true)
            .create_schema(SCHEMA),
        ReplayOptions::new().batch_entries_max(2),
    );
    let report = replayer.sync_now();
    assert!(report.error.is_none(), "{report}");
    assert_eq!(report.applied, change_sets().len() as u64);
    let conn = rusqlite::Connection::open(&target).unwrap();
    for (table, want) in expected_rows() {
        assert_eq!(
            dump_table(&conn, table, "1, 2").unwrap(),
            want,
            "table {table}"
        );
    }
}

/// Writes the fixture. Run only to create a fixture for a NEW version (change the directory).
#[test]
#[ignore]
fn regenerate_fixture_v1() {
    let dir = fixture_dir();
    assert!(
        !dir.exists(),
        "{} exists: fixtures are never regenerated",
        dir.display()
    );
    let journal = Journal::open(&dir, JournalOptions::new().segment_bytes_max(64 << 10)).unwrap();
    for cs in change_sets() {
        journal
            .append_kind(KIND_CHANGESET, &encode_event(CREATED_AT_MS, &cs).unwrap())
            .unwrap();
    }
    journal.close().unwrap();
    let _ = std::fs::remove_file(dir.join("LOCK"));
}
