//! What a careless operator can do, and what it costs: a sync to the wrong database, a WAL
//! target, a directory or a device or a non-database file as the target (issue 10, finding 10).

use std::path::Path;
use std::sync::Arc;
use syncjournal::error::TargetError;

use crate::support::store::{Paths, SCHEMA, apply_items, open};
use crate::support::targets::{count_rows, create_target};
use syncjournal::{
    Error, Journal, JournalOptions, ReplayOptions, Replayer, StoreOptions, TargetOptions,
};

/// A closed journal of `n` entries over several 64 KiB segments, with default retention.
fn journal_of(paths: &Paths, n: i64) {
    let store = open(
        paths,
        StoreOptions::new()
            .journal(JournalOptions::new().segment_bytes_max(65536))
            .cache_schema(SCHEMA)
            .background_sync(false),
    );
    apply_items(&store, 1..=n);
}

/// A replayer of the open journal `j` to `target`, with default options.
fn replayer_of(j: &Arc<Journal>, target: &Path) -> Replayer {
    Replayer::new(
        Arc::clone(j),
        target,
        TargetOptions::new(),
        ReplayOptions::new(),
    )
}

fn replayer(paths: &Paths, target: &Path, opts: ReplayOptions) -> Replayer {
    let j = Arc::new(Journal::open(&paths.journal, JournalOptions::new()).unwrap());
    Replayer::new(j, target, TargetOptions::new(), opts.retry_attempts_max(0))
}

#[test]
fn a_sync_to_the_wrong_database_leaves_the_right_one_everything_it_needs() {
    let (dir, paths) = Paths::temp();
    journal_of(&paths, 1500);
    let (right, wrong) = (dir.path().join("right.db"), dir.path().join("wrong.db"));
    create_target(&right, SCHEMA);
    create_target(&wrong, SCHEMA);
    // The journal is first acknowledged against the right target, half way ...
    {
        let mut r = replayer(&paths, &right, ReplayOptions::new().batch_entries_max(700));
        r.sync_now(); // stops nowhere: batches of 700 until done
    }
    rusqlite::Connection::open(&right)
        .unwrap()
        .execute("DELETE FROM syncjournal_progress", [])
        .unwrap();
    rusqlite::Connection::open(&right)
        .unwrap()
        .execute("DELETE FROM items", [])
        .unwrap();
    // (the right target is now empty again: say it was restored from last night's backup)
    // ... then someone syncs to the wrong one: it gets the entries, the journal keeps them.
    let segments = Journal::open(&paths.journal, JournalOptions::new())
        .unwrap()
        .state()
        .segments;
    {
        let mut r = replayer(&paths, &wrong, ReplayOptions::new());
        let rep = r.sync_now();
        assert!(rep.error.is_none(), "{rep}");
        assert_eq!(count_rows(&wrong, "items"), 1500);
    }
    let st = Journal::open(&paths.journal, JournalOptions::new())
        .unwrap()
        .state();
    assert_eq!(
        st.segments, segments,
        "nothing retired for the wrong target"
    );
    // The right target still gets every entry: no replay gap.
    let mut r = replayer(&paths, &right, ReplayOptions::new());
    let rep = r.sync_now();
    assert!(rep.error.is_none(), "{rep}");
    assert_eq!(count_rows(&right, "items"), 1500);
}

#[test]
fn acknowledged_segments_are_kept_for_an_hour_by_default_and_at_once_when_asked() {
    let (dir, paths) = Paths::temp();
    journal_of(&paths, 1500);
    let target = dir.path().join("t.db");
    create_target(&target, SCHEMA);
    let j = Arc::new(Journal::open(&paths.journal, JournalOptions::new()).unwrap());
    let before = j.state().segments;
    let mut r: Replayer = replayer_of(&j, &target);
    assert!(r.sync_now().error.is_none());
    assert_eq!(j.state().acked_lsn, 1500);
    assert_eq!(
        j.state().segments,
        before,
        "kept: acknowledged a moment ago"
    );
    drop(r);
    drop(j);
    let j = Journal::open(&paths.journal, JournalOptions::new().retain_acked_ms(0)).unwrap();
    assert_eq!(
        j.state().segments,
        1,
        "every sealed, acknowledged segment removed"
    );
    drop(j);
    // A byte budget smaller than what is kept removes the oldest first.
    let (_dir, paths) = Paths::temp();
    journal_of(&paths, 1500);
    let j = Journal::open(
        &paths.journal,
        JournalOptions::new().retain_acked_bytes(2 * 65536),
    )
    .unwrap();
    let segments = j.state().segments;
    j.ack(1500).unwrap();
    let kept_sealed = j.state().segments - 1;
    assert_eq!(
        kept_sealed, 2,
        "of {segments}: two 64 KiB segments fit the budget"
    );
}

#[test]
fn a_replayer_of_another_target_does_not_acknowledge_unless_it_adopts_it() {
    let (dir, paths) = Paths::temp();
    journal_of(&paths, 100);
    let (first, second) = (dir.path().join("first.db"), dir.path().join("second.db"));
    create_target(&first, SCHEMA);
    create_target(&second, SCHEMA);
    let j = Arc::new(Journal::open(&paths.journal, JournalOptions::new()).unwrap());
    let mut r: Replayer = replayer_of(&j, &first);
    assert!(r.sync_now().error.is_none());
    assert_eq!(j.state().acked_lsn, 100);
    drop(r);
    drop(j);
    // The second target is replayed, not acknowledged.
    let j = Arc::new(Journal::open(&paths.journal, JournalOptions::new()).unwrap());
    let mut r: Replayer = replayer_of(&j, &second);
    assert!(r.sync_now().error.is_none());
    assert_eq!(count_rows(&second, "items"), 100);
    let st = r.state();
    assert_eq!(
        st.acknowledged_target.as_deref(),
        Some(std::path::absolute(&first).unwrap().to_str().unwrap())
    );
    drop(r);
    // Adopted: it is the journal's target now.
    let mut r: Replayer = Replayer::new(
        Arc::clone(&j),
        &second,
        TargetOptions::new(),
        ReplayOptions::new().adopt_target(true),
    );
    assert!(r.sync_now().error.is_none());
    assert_eq!(
        r.state().acknowledged_target.as_deref(),
        Some(std::path::absolute(&second).unwrap().to_str().unwrap())
    );
}

#[test]
fn a_target_that_is_no_database_is_a_configuration_error_not_an_outage() {
    let (dir, paths) = Paths::temp();
    journal_of(&paths, 3);
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "these are not the rows you are looking for").unwrap();
    let cases: Vec<(&Path, &str)> = vec![
        (dir.path(), "is a directory"),
        (Path::new("/dev/null"), "is a device"),
        (&text, "is not an SQLite database"),
    ];
    for (target, says) in cases {
        let mut r = replayer(&paths, target, ReplayOptions::new());
        let rep = r.sync_now();
        match &rep.error {
            Some(e @ Error::Target(TargetError::Unusable { reason, .. })) => {
                assert!(reason.contains(says), "{target:?}: {reason}");
                assert!(!e.is_transient(), "{e}");
                assert!(!e.to_string().contains("offline"), "{e}");
            }
            other => panic!("{target:?}: {other:?}"),
        }
        assert_eq!(rep.retries, 0, "not retried: {target:?}");
    }
    assert!(
        !Path::new("/dev/null-journal").exists(),
        "left /dev/null-journal behind"
    );
}
