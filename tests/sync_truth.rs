//! Nothing is called applied that was not: followers across rotation, LSN continuity in every
//! reader, and a status measured against the target (issue 9's findings, one test each).

#[path = "store_common/mod.rs"]
mod store_common;

use std::path::Path;

use store_common::{Paths, SCHEMA, item, local_opts, open, target_watermark};
use syncjournal::{ReplayOptions, Replayer, TargetOptions};

fn follower(paths: &Paths) -> Replayer {
    Replayer::follower(
        &paths.journal,
        &paths.target,
        TargetOptions::new()
            .create_if_missing(true)
            .create_schema(SCHEMA),
        ReplayOptions::new().retry_attempts_max(0),
    )
    .expect("follower")
}

fn target_items(target: &Path) -> i64 {
    rusqlite::Connection::open(target)
        .unwrap()
        .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
        .unwrap()
}

/// Finding 1: the follower read a cached window again after the owner had rotated, took its
/// stale zeros for the end of the segment, and skipped to the next segment.
#[test]
fn a_follower_applies_every_entry_when_the_owner_rotates_between_two_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::in_dir(dir.path());
    let store = open(&paths, local_opts());
    for i in 1..=10 {
        store.apply(&item(i)).unwrap();
    }
    let mut f = follower(&paths);
    let r = f.sync_now();
    assert!(r.error.is_none(), "{r}");
    assert_eq!(target_items(&paths.target), 10);
    // Rotate at least twice, so that the follower's window into the first segment is stale.
    let first_segments = store.journal_state().segments;
    let mut i = 11;
    while store.journal_state().segments < first_segments + 2 {
        store.apply(&item(i)).unwrap();
        i += 1;
    }
    let head = store.journal_state().durable_lsn;
    let r = f.sync_now();
    assert!(r.error.is_none(), "{r}");
    let id = store.journal_state().journal_id;
    assert_eq!(target_watermark(&paths.target, id), head);
    assert_eq!(
        target_items(&paths.target),
        head as i64,
        "every entry up to the watermark is on the target"
    );
    assert_eq!(r.pending, 0);
}
