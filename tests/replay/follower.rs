//! A follower replays a journal owned by someone else: only what the owner made durable (its
//! published `HEAD`), never acknowledging, and never applying an entry twice alongside the
//! owner's own replayer.

use std::sync::Arc;
use syncjournal::error::JournalError;

use crate::support::targets::count_rows;

use syncjournal::event::{KIND_CHANGESET, encode_event};
use syncjournal::{
    ChangeSet, Journal, JournalOptions, PersistMode, ReplayOptions, Replayer, TargetOptions,
};

const SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS counters (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);";

fn entry(i: i64) -> Vec<u8> {
    encode_event(
        1,
        &ChangeSet::new().insert("counters", [("id", i)], [("n", i)]),
    )
    .unwrap()
}

fn target_opts() -> TargetOptions {
    TargetOptions::new()
        .create_if_missing(true)
        .create_schema(SCHEMA)
}

#[test]
fn a_follower_replays_only_durable_records_and_never_acknowledges() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let target = dir.path().join("share.db");
    let journal = Arc::new(
        Journal::open(
            &jdir,
            JournalOptions::new().persist_mode(PersistMode::Buffered),
        )
        .unwrap(),
    );
    for i in 1..=10 {
        journal.append_kind(KIND_CHANGESET, &entry(i)).unwrap();
    }
    journal.sync().unwrap();
    for i in 11..=15 {
        journal.append_kind(KIND_CHANGESET, &entry(i)).unwrap(); // written, not durable
    }

    let mut follower: Replayer =
        Replayer::follower(&jdir, &target, target_opts(), ReplayOptions::new()).unwrap();
    assert!(follower.is_follower());
    let report = follower.sync_now();
    assert!(report.error.is_none(), "{report}");
    assert_eq!(report.applied, 10, "only the durable records");
    assert_eq!(count_rows(&target, "counters"), 10);
    assert_eq!(
        journal.state().acked_lsn,
        0,
        "a follower never writes the owner's ACK"
    );

    // Once durable, the rest follows.
    journal.sync().unwrap();
    let report = follower.sync_now();
    assert_eq!(report.applied, 5, "{report}");
    assert_eq!(count_rows(&target, "counters"), 15);

    // The owner's own replayer finds the target ahead of its acknowledgement: it acknowledges,
    // and applies nothing twice.
    let mut owner: Replayer = Replayer::new(
        Arc::clone(&journal),
        &target,
        target_opts(),
        ReplayOptions::new(),
    );
    let report = owner.sync_now();
    assert!(report.error.is_none(), "{report}");
    assert_eq!(report.applied, 0);
    assert_eq!(count_rows(&target, "counters"), 15);
    assert_eq!(journal.state().acked_lsn, 15);
}

#[test]
fn owner_and_follower_interleaved_apply_every_entry_once() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let target = dir.path().join("share.db");
    let journal = Arc::new(Journal::open(&jdir, JournalOptions::new()).unwrap());
    let mut owner: Replayer = Replayer::new(
        Arc::clone(&journal),
        &target,
        target_opts(),
        ReplayOptions::new().batch_entries_max(3),
    );
    let mut follower: Replayer = Replayer::follower(
        &jdir,
        &target,
        target_opts(),
        ReplayOptions::new().batch_entries_max(2),
    )
    .unwrap();
    let mut next = 1;
    for round in 0..20 {
        for _ in 0..(round % 4 + 1) {
            journal.append_kind(KIND_CHANGESET, &entry(next)).unwrap();
            next += 1;
        }
        // Whichever runs, a duplicate insert would be refused by the primary key and stop the
        // replay with an error.
        let report = if round % 2 == 0 {
            follower.sync_now()
        } else {
            owner.sync_now()
        };
        assert!(report.error.is_none(), "round {round}: {report}");
    }
    let report = owner.sync_now();
    assert!(report.error.is_none(), "{report}");
    assert_eq!(count_rows(&target, "counters"), next - 1);
    assert_eq!(journal.state().acked_lsn, next as u64 - 1);
}

#[test]
fn a_follower_of_a_journal_without_head_says_why_it_cannot_follow() {
    // A journal whose HEAD is missing (an owner of an older version, or deleted): the follower
    // cannot know what is durable, so it applies nothing rather than guess — and says so,
    // instead of reporting "0 pending".
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let target = dir.path().join("share.db");
    {
        let journal = Journal::open(&jdir, JournalOptions::new()).unwrap();
        journal.append_kind(KIND_CHANGESET, &entry(1)).unwrap();
    }
    std::fs::remove_file(jdir.join("HEAD")).unwrap();
    let mut follower: Replayer =
        Replayer::follower(&jdir, &target, target_opts(), ReplayOptions::new()).unwrap();
    let report = follower.sync_now();
    assert_eq!(report.applied, 0);
    assert!(
        matches!(
            report.error,
            Some(syncjournal::Error::Journal(JournalError::NoHead { .. }))
        ),
        "{report}"
    );
}
