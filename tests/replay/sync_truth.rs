//! Nothing is called applied that was not: followers across rotation, LSN continuity in every
//! reader, and a status measured against the target (issue 9's findings, one test each).

use std::path::Path;
use syncjournal::error::{JournalError, TargetError};

use crate::support::journal::{frames_of_segment, segment_path, write_at};
use crate::support::store::{
    Paths, SCHEMA, apply_items, apply_items_until_segments, item, local_opts, local_store, open,
    store_opts, synced_store,
};
use crate::support::targets::{copy_db, count_rows, create_target, open_ro};
use syncjournal::{ReplayOptions, Replayer, TargetOptions};

fn follower(paths: &Paths) -> Replayer {
    Replayer::follower(
        &paths.journal,
        paths.target.path(),
        TargetOptions::new()
            .create_if_missing(true)
            .create_schema(SCHEMA),
        ReplayOptions::new().retry_attempts_max(0),
    )
    .expect("follower")
}

/// Finding 1: the follower read a cached window again after the owner had rotated, took its
/// stale zeros for the end of the segment, and skipped to the next segment.
#[test]
fn a_follower_applies_every_entry_when_the_owner_rotates_between_two_syncs() {
    let (_dir, paths, store) = local_store();
    apply_items(&store, 1..=10);
    let mut f = follower(&paths);
    let r = f.sync_now();
    assert!(r.error.is_none(), "{r}");
    assert_eq!(count_rows(paths.target.path(), "items"), 10);
    // Rotate at least twice, so that the follower's window into the first segment is stale.
    let first_segments = store.journal_state().segments;
    apply_items_until_segments(&store, 11, first_segments + 2);
    let head = store.journal_state().durable_lsn;
    let r = f.sync_now();
    assert!(r.error.is_none(), "{r}");
    let id = store.journal_state().journal_id;
    assert_eq!(paths.target.watermark(id), head);
    assert_eq!(
        count_rows(paths.target.path(), "items"),
        head as i64,
        "every entry up to the watermark is on the target"
    );
    assert_eq!(r.pending, 0);
}

// ---------------------------------------------------------------------------------------------
// Helpers for crafted journals and targets.

use std::fs;

use syncjournal::format::{Seed, seal_frame};
use syncjournal::replay::{PendingBasis, SyncState, offline_status};
use syncjournal::{
    ChangeSet, DamageKind, Error, Journal, JournalOptions, Lsn, PersistMode, RejectPolicy, Store,
};

const STALL: std::time::Duration = std::time::Duration::from_secs(300);

/// Re-seals frame `index` of segment `seq` after `edit` changed its header fields (lsn,
/// prev_crc), with a valid checksum: damage that only the chain and LSN checks can see.
fn reseal_frame(dir: &Path, seq: u64, index: usize, edit: impl FnOnce(&mut Lsn, &mut u32)) {
    let path = segment_path(dir, seq);
    let image = fs::read(&path).unwrap();
    let f = frames_of_segment(&image, seq)[index];
    let id = uuid::Uuid::from_slice(&image[16..32]).unwrap();
    let at = f.offset;
    let mut lsn = u64::from_le_bytes(image[at + 8..at + 16].try_into().unwrap());
    let mut prev = u32::from_le_bytes(image[at + 24..at + 28].try_into().unwrap());
    let kind = image[at + 28];
    edit(&mut lsn, &mut prev);
    let payload = &image[at + 32..at + 32 + f.payload_len];
    let h = seal_frame(Seed::new(id, seq), lsn, f.synced_lsn, prev, kind, payload);
    write_at(&path, at, &h);
}

/// A closed journal of `n` item inserts (one segment), its directory.
fn closed_journal(paths: &Paths, n: i64) {
    let store = open(paths, local_opts());
    apply_items(&store, 1..=n);
}

// ---------------------------------------------------------------------------------------------
// Finding 2: a target that is behind is TARGET BEHIND, not IN SYNC.

#[test]
fn a_target_restored_from_before_the_first_sync_is_target_behind_with_every_entry_pending() {
    let (dir, paths) = Paths::temp();
    create_target(paths.target.path(), SCHEMA);
    let backup = dir.path().join("backup.db");
    copy_db(paths.target.path(), &backup);
    let store = synced_store(&paths, 50);
    drop(store);
    fs::copy(&backup, paths.target.path()).unwrap(); // restored: same tables, no rows, no progress

    let st = offline_status(&paths.journal, Some(paths.target.path()), STALL).unwrap();
    let s = &st.status;
    assert_eq!((s.head_lsn, s.acked_lsn, s.target_lsn), (50, 50, Some(0)));
    assert_eq!(s.pending_entries, 50, "measured on the target");
    assert_eq!(s.pending_basis, PendingBasis::Target);
    assert_eq!(s.state, SyncState::TargetBehind);
    let b = s.target_behind.as_ref().expect("target behind");
    assert_eq!((b.entries, b.retained), (50, true));

    // The store sees it too when it opens (it reads the target), and a sync repairs it.
    let store = open(&paths, store_opts(&paths.target, RejectPolicy::Stop));
    assert_eq!(store.status().unwrap().state, SyncState::TargetBehind);
    let r = store.sync_now();
    assert!(r.error.is_none(), "{r}");
    assert_eq!((r.applied, r.pending), (50, 0));
    assert_eq!(store.status().unwrap().state, SyncState::InSync);
}

// ---------------------------------------------------------------------------------------------
// Finding 3: a sync that stops early reports what is left.

#[test]
fn a_sync_that_stops_at_a_refused_entry_reports_every_entry_still_ahead() {
    let (dir, paths) = Paths::temp();
    // Everything was synced (and acknowledged) to one database ...
    let store = open(&paths, store_opts(&paths.target, RejectPolicy::Stop));
    apply_items(&store, 1..=3);
    store
        .apply(&crate::support::store::tag("refused", 1.0))
        .unwrap();
    apply_items(&store, 4..=200);
    assert!(store.sync_now().error.is_none());
    let head = store.journal_state().durable_lsn;
    assert_eq!(store.journal_state().acked_lsn, head);
    drop(store);
    // ... and a sync to another one, which has no `tags` table, stops at the fourth entry:
    // what is left is measured on that target, not taken from the acknowledgement.
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL, data BLOB);",
        )
        .unwrap();
    let journal =
        std::sync::Arc::new(Journal::open(&paths.journal, JournalOptions::new()).unwrap());
    let mut r: Replayer = Replayer::new(
        journal,
        &other,
        TargetOptions::new(),
        ReplayOptions::new().retry_attempts_max(0),
    );
    let rep = r.sync_now();
    assert!(
        matches!(
            rep.error,
            Some(Error::Target(TargetError::EntryRejected { lsn: 4, .. }))
        ),
        "{rep}"
    );
    assert_eq!((rep.applied, rep.target_lsn), (3, Some(3)));
    assert_eq!(rep.pending, head - 3, "{rep}");
    assert!(
        rep.to_string().contains(&format!("{} pending", head - 3)),
        "{rep}"
    );
}

// ---------------------------------------------------------------------------------------------
// Finding 4: lost writes on the target are noticed, said and counted.

#[test]
fn a_watermark_that_went_back_between_two_commits_is_counted_as_lost_writes() {
    let (_dir, paths) = Paths::temp();
    let store = synced_store(&paths, 20);
    // As when a second machine wrote the file over a share that does not forward locks: the
    // progress row of this journal is gone.
    rusqlite::Connection::open(paths.target.path())
        .unwrap()
        .execute("DELETE FROM syncjournal_progress", [])
        .unwrap();
    apply_items(&store, 21..=25);
    let r = store.sync_now();
    let st = store.status().unwrap();
    assert_eq!(st.lost_writes, 1, "{st:?}");
    let l = st.last_lost_writes.as_ref().expect("the event");
    assert_eq!((l.expected_lsn, l.found_lsn), (20, 0));
    assert!(l.describe().contains("second machine"), "{}", l.describe());
    // The entries were applied again (inserts of rows that exist are refused: the effects
    // outlived the progress row — exactly why this is reported, not hidden).
    assert!(r.error.is_some() || r.applied == 25, "{r}");
    drop(store);
    // Counted durably: a restarted store and the offline status still say so.
    let st = offline_status(&paths.journal, Some(paths.target.path()), STALL).unwrap();
    assert_eq!(st.status.lost_writes, 1);
    let store = open(&paths, store_opts(&paths.target, RejectPolicy::Stop));
    assert_eq!(store.status().unwrap().lost_writes, 1);
}

#[test]
fn a_progress_row_lost_on_the_target_is_target_behind_for_the_status() {
    let (_dir, paths) = Paths::temp();
    let store = synced_store(&paths, 30);
    drop(store);
    rusqlite::Connection::open(paths.target.path())
        .unwrap()
        .execute("DELETE FROM syncjournal_progress", [])
        .unwrap();
    let st = offline_status(&paths.journal, Some(paths.target.path()), STALL).unwrap();
    assert_eq!(st.status.state, SyncState::TargetBehind, "{:?}", st.status);
    assert_eq!(st.status.pending_entries, 30);
}

// ---------------------------------------------------------------------------------------------
// Finding 5: another process's temporary files are not recovery's to remove.

#[test]
fn opening_a_store_leaves_another_processs_temporary_state_file_alone() {
    let (_dir, paths) = Paths::temp();
    closed_journal(&paths, 3);
    // A follower (pid 4242) is writing its state at this very moment; and an interrupted
    // segment creation of our own left a temporary file.
    let theirs = paths.journal.join("replay.json.4242.tmp");
    fs::write(&theirs, b"{}").unwrap();
    let ours = paths.journal.join("0000000000000009.sjl.tmp");
    fs::write(&ours, b"partial").unwrap();
    let store = open(&paths, local_opts());
    assert!(
        theirs.exists(),
        "another process's temporary file was removed"
    );
    assert!(!ours.exists(), "our own leftover was kept");
    drop(store);
}

// ---------------------------------------------------------------------------------------------
// Finding 6: an owner without a target acknowledges what its follower replayed.

#[test]
fn an_owner_without_a_target_acknowledges_what_its_follower_applied_and_retires_segments() {
    let (_dir, paths, store) = local_store();
    apply_items_until_segments(&store, 1, 4);
    let segments = store.journal_state().segments;
    let mut f = follower(&paths);
    assert!(f.sync_now().error.is_none());
    assert_eq!(
        store.journal_state().acked_lsn,
        0,
        "a follower never acknowledges"
    );
    let head = store.journal_state().durable_lsn;
    assert_eq!(store.acknowledge_followed().unwrap(), Some(head));
    let st = store.journal_state();
    assert_eq!(st.acked_lsn, head);
    assert!(
        st.segments < segments,
        "segments retired: {} → {}",
        segments,
        st.segments
    );
    // The status is measured on that target.
    let s = store.status().unwrap();
    assert_eq!((s.target_lsn, s.pending_entries), (Some(head), 0));
}

#[test]
fn the_background_thread_of_an_owner_without_a_target_acknowledges_the_followers_progress() {
    let (_dir, paths) = Paths::temp();
    let store = open(
        &paths,
        local_opts()
            .background_sync(true)
            .replay(ReplayOptions::new().sync_interval_ms(20)),
    );
    apply_items(&store, 1..=40);
    assert!(follower(&paths).sync_now().error.is_none());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.journal_state().acked_lsn < 40 {
        assert!(std::time::Instant::now() < deadline, "never acknowledged");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// Finding 7: the offline reader (dump, status, followers) applies the format's checks.

/// Reads every record of a closed journal offline; the error if one stops it.
fn read_offline(dir: &Path) -> (Vec<Lsn>, Option<Error>) {
    use syncjournal::journal::Until;
    use syncjournal::journal::offline::OfflineReader;
    let mut r = OfflineReader::open(dir, 1, Until::End).unwrap();
    let mut lsns = Vec::new();
    loop {
        match r.next_ref() {
            Ok(Some(rec)) => lsns.push(rec.lsn),
            Ok(None) => return (lsns, None),
            Err(e) => return (lsns, Some(e)),
        }
    }
}

fn corrupt_kind(e: &Option<Error>) -> DamageKind {
    match e {
        Some(Error::Journal(JournalError::Corrupt(c))) => c.kind.clone(),
        other => panic!("expected damage, got {other:?}"),
    }
}

#[test]
fn a_frame_resealed_with_a_broken_chain_stops_the_offline_reader() {
    let (_dir, paths) = Paths::temp();
    closed_journal(&paths, 40);
    reseal_frame(&paths.journal, 1, 19, |_, prev| *prev ^= 1);
    let (lsns, e) = read_offline(&paths.journal);
    assert_eq!(lsns, (1..=19).collect::<Vec<_>>());
    assert!(matches!(corrupt_kind(&e), DamageKind::ChainBroken { .. }));
    let st = offline_status(&paths.journal, None, STALL).unwrap();
    assert!(
        st.journal_error.is_some(),
        "status must not say IN SYNC: {st:?}"
    );
}

#[test]
fn a_frame_resealed_with_another_lsn_is_refused_not_returned_under_it() {
    for (delta, name) in [(1i64, "as LSN 21"), (-1, "as LSN 19")] {
        let (_dir, paths) = Paths::temp();
        closed_journal(&paths, 40);
        reseal_frame(&paths.journal, 1, 19, |lsn, _| {
            *lsn = (*lsn as i64 + delta) as u64
        });
        let (lsns, e) = read_offline(&paths.journal);
        assert_eq!(lsns, (1..=19).collect::<Vec<_>>(), "{name}");
        assert_eq!(
            corrupt_kind(&e),
            DamageKind::LsnOutOfOrder {
                expected: 20,
                found: (20 + delta) as u64
            },
            "{name}"
        );
    }
}

#[test]
fn a_zeroed_record_in_the_middle_is_damage_not_the_end_of_the_journal() {
    let (_dir, paths) = Paths::temp();
    closed_journal(&paths, 40);
    let seg = segment_path(&paths.journal, 1);
    let image = fs::read(&seg).unwrap();
    let f = frames_of_segment(&image, 1)[37]; // LSN 38; 39 and 40 follow
    let zeros = vec![0u8; f.len];
    write_at(&seg, f.offset, &zeros);
    let (lsns, e) = read_offline(&paths.journal);
    assert_eq!(lsns.last(), Some(&37));
    assert!(
        matches!(corrupt_kind(&e), DamageKind::TrailingGarbage { .. }),
        "records 39 and 40 follow the hole: {e:?}"
    );
}

#[test]
fn a_truncated_segment_is_damage_for_the_offline_reader() {
    let (_dir, paths, store) = local_store();
    apply_items_until_segments(&store, 1, 2);
    drop(store);
    let seg = segment_path(&paths.journal, 1);
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(32 << 10)
        .unwrap();
    let (_, e) = read_offline(&paths.journal);
    assert!(
        matches!(corrupt_kind(&e), DamageKind::SegmentLength { .. }),
        "{e:?}"
    );
}

#[test]
fn a_torn_last_record_is_named_a_torn_tail_by_the_offline_reader() {
    let (_dir, paths) = Paths::temp();
    closed_journal(&paths, 10);
    crate::support::journal::rewind_head(&paths.journal, 9); // the crash came before its sync
    let seg = segment_path(&paths.journal, 1);
    let f = frames_of_segment(&fs::read(&seg).unwrap(), 1)[9];
    write_at(&seg, f.offset + f.len - 16, &[0xAB; 16]);
    let (lsns, e) = read_offline(&paths.journal);
    assert_eq!(lsns.len(), 9);
    match e {
        Some(Error::Journal(JournalError::Corrupt(c))) => {
            assert!(c.torn_tail, "{c:?}");
            assert!(c.to_string().starts_with("torn tail"), "{c}");
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Finding 9: an acknowledgement beyond the records is damage.

fn write_ack(dir: &Path, acked: Lsn) {
    use syncjournal::format::{ACK_SLOT_OFFSETS, AckSlot};
    let b = fs::read(dir.join("ACK")).unwrap();
    let cur = [0, 1]
        .iter()
        .filter_map(|&i| AckSlot::decode(&b[ACK_SLOT_OFFSETS[i]..]).ok())
        .max_by_key(|s| s.generation)
        .unwrap();
    let next = AckSlot {
        generation: cur.generation + 1,
        acked_lsn: acked,
        ..cur
    };
    write_at(&dir.join("ACK"), next.offset(), &next.encode());
}

#[test]
fn an_acknowledgement_beyond_the_records_is_refused_and_nothing_is_retired() {
    let (_dir, paths, store) = local_store();
    apply_items_until_segments(&store, 1, 3);
    let head = store.journal_state().durable_lsn;
    drop(store);
    write_ack(&paths.journal, head + 994);
    let before: Vec<_> = crate::support::journal::segment_paths(&paths.journal);

    let ins = syncjournal::inspect::inspect(&paths.journal).unwrap();
    assert!(!ins.is_clean(), "verify must not say OK");
    assert!(matches!(
        ins.damage[0].kind,
        DamageKind::MissingDurable { .. }
    ));
    let st = offline_status(&paths.journal, None, STALL).unwrap();
    assert!(st.journal_error.is_some());
    assert_eq!(
        st.status.head_lsn, head,
        "the head is the last record, not the ACK"
    );
    match Journal::open(&paths.journal, JournalOptions::new()) {
        Err(Error::Journal(JournalError::Corrupt(c))) => {
            assert!(matches!(c.kind, DamageKind::MissingDurable { .. }))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        crate::support::journal::segment_paths(&paths.journal),
        before,
        "segments deleted"
    );
    assert!(Store::<ChangeSet>::open(&paths.journal, &paths.cache, local_opts()).is_err());
}

// ---------------------------------------------------------------------------------------------
// Finding 10: the background sync repairs a target restored to an older state.

#[test]
fn the_background_sync_repairs_a_target_restored_behind_the_acknowledgement() {
    let (dir, paths) = Paths::temp();
    let opts = store_opts(&paths.target, RejectPolicy::Stop)
        .background_sync(true)
        .replay(ReplayOptions::new().sync_interval_ms(20));
    let store = open(&paths, opts);
    apply_items(&store, 1..=5);
    assert!(
        store
            .wait_synced(5, std::time::Duration::from_secs(10))
            .unwrap()
    );
    let backup = dir.path().join("five.db");
    copy_db(paths.target.path(), &backup);
    apply_items(&store, 6..=10);
    assert!(
        store
            .wait_synced(10, std::time::Duration::from_secs(10))
            .unwrap()
    );
    // Restored in place (the same file, older contents), no new write follows.
    fs::write(paths.target.path(), fs::read(&backup).unwrap()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n: i64 = open_ro(paths.target.path())
            .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
            .unwrap();
        if n == 10 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {n} rows");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Finding 11: recovery uses the evidence that a record was durable.

#[test]
fn a_damaged_record_that_head_published_as_durable_is_not_cut_as_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("j");
    let j = Journal::open(
        &jdir,
        JournalOptions::new().persist_mode(PersistMode::Buffered),
    )
    .unwrap();
    for i in 1..=20u8 {
        j.append(&[i; 40]).unwrap();
    }
    j.sync().unwrap(); // `sync()` returned for all 20: HEAD says so
    drop(j);
    let seg = segment_path(&jdir, 1);
    let f = frames_of_segment(&fs::read(&seg).unwrap(), 1)[4]; // LSN 5
    let b = fs::read(&seg).unwrap()[f.offset + 40];
    write_at(&seg, f.offset + 40, &[b ^ 1]);
    match Journal::open(&jdir, JournalOptions::new()) {
        Err(Error::Journal(JournalError::Corrupt(c))) => assert!(!c.torn_tail, "{c}"),
        Ok(j) => panic!("records 5..=20 were cut: {}", j.recovery_report()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_damaged_last_record_the_target_holds_is_not_cut_and_its_lsn_never_reused() {
    let (_dir, paths) = Paths::temp();
    let store = synced_store(&paths, 10);
    drop(store);
    // A crash before the acknowledgement (ACK 5, target 10), HEAD lost, and record 10 damaged.
    write_ack(&paths.journal, 5);
    fs::remove_file(paths.journal.join("HEAD")).unwrap();
    let seg = segment_path(&paths.journal, 1);
    let f = frames_of_segment(&fs::read(&seg).unwrap(), 1)[9];
    write_at(&seg, f.offset + f.len - 8, &[0xEE; 8]);
    // The store reads the target's watermark before recovery: record 10 was durable.
    match Store::<ChangeSet>::open(
        &paths.journal,
        &paths.cache,
        store_opts(&paths.target, RejectPolicy::Stop),
    ) {
        Err(Error::Journal(JournalError::Corrupt(c))) => assert!(!c.torn_tail, "{c}"),
        Ok(s) => panic!("opened; next LSN {}", s.journal_state().next_lsn),
        Err(e) => panic!("{e}"),
    }
    // Salvage keeps LSN 10 taken (a gap record): the next append gets 11.
    let j = Journal::open(
        &paths.journal,
        JournalOptions::new()
            .recovery_mode(syncjournal::RecoveryMode::Salvage)
            .known_durable_lsn(10),
    )
    .unwrap();
    assert_eq!(j.state().next_lsn, 11, "{}", j.recovery_report());
}

// ---------------------------------------------------------------------------------------------
// Finding 12: LSNs fit every target's integers.

#[test]
fn lsns_beyond_what_a_signed_64_bit_column_holds_are_invalid_everywhere() {
    use syncjournal::format::{FrameCheck, LSN_MAX, check_frame, frame_bytes};
    assert_eq!(LSN_MAX, i64::MAX as u64 - 1);
    let seed = Seed::new(uuid::Uuid::from_bytes([9; 16]), 1);
    for lsn in [LSN_MAX + 1, 1 << 63, u64::MAX - 1] {
        let payload = [1u8; 8];
        let h = seal_frame(seed, lsn, 0, 0, 1, &payload);
        let mut f = h.to_vec();
        f.extend_from_slice(&payload);
        f.resize(frame_bytes(8), 0);
        assert!(
            !matches!(check_frame(&f, seed), FrameCheck::Valid(_)),
            "LSN {lsn}"
        );
    }
    // A gap record claiming an end past LSN_MAX + 1 is malformed.
    let mut chain = syncjournal::journal::scan::Chain::start(5, 0);
    let payload = (LSN_MAX + 2).to_le_bytes();
    let h = seal_frame(seed, 5, 0, 0, syncjournal::format::KIND_GAP, &payload);
    let mut f = h.to_vec();
    f.extend_from_slice(&payload);
    let FrameCheck::Valid(hdr) = check_frame(&f, seed) else {
        panic!("the frame itself verifies")
    };
    assert!(chain.accept(&hdr, &payload).is_err());
    // Nor may a caller claim such an LSN as evidence.
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Journal::open(
            dir.path(),
            JournalOptions::new().known_durable_lsn(LSN_MAX + 1)
        ),
        Err(Error::InvalidOption {
            name: "known_durable_lsn",
            ..
        })
    ));
}

// ---------------------------------------------------------------------------------------------
// Finding 13: informational files inform; they never make a figure look better.

#[test]
fn a_replay_state_that_claims_the_target_is_ahead_changes_no_figure() {
    let (_dir, paths) = Paths::temp();
    closed_journal(&paths, 25);
    fs::write(
        paths.journal.join("replay.json"),
        br#"{"target": "/nowhere.db", "target_lsn": 999999, "target_read_at_ms": 1, "quarantined": 0}"#,
    )
    .unwrap();
    let st = offline_status(&paths.journal, None, STALL).unwrap();
    assert_eq!(
        st.status.pending_entries, 25,
        "counted from the acknowledgement"
    );
    assert_eq!(st.status.pending_basis, PendingBasis::Acknowledgement);
    assert_ne!(st.status.state, SyncState::InSync);
    assert_eq!(st.last_seen.target_lsn, Some(999999), "shown as what it is");
}

#[test]
fn a_huge_replay_state_is_ignored_without_being_read_whole() {
    let (_dir, paths) = Paths::temp();
    closed_journal(&paths, 3);
    let f = fs::File::create(paths.journal.join("replay.json")).unwrap();
    f.set_len(1 << 30).unwrap(); // 1 GiB, sparse
    let t = std::time::Instant::now();
    let st = offline_status(&paths.journal, None, STALL).unwrap();
    assert_eq!(st.status.pending_entries, 3);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "hang guard only: reading 1 GiB would take far longer on a debug build"
    );
}

#[test]
fn a_directory_named_replay_json_is_refused_by_name_instead_of_swallowing_errors() {
    let (_dir, paths) = Paths::temp();
    closed_journal(&paths, 3);
    fs::create_dir(paths.journal.join("replay.json")).unwrap();
    match Store::<ChangeSet>::open(
        &paths.journal,
        &paths.cache,
        store_opts(&paths.target, RejectPolicy::Stop),
    ) {
        Err(Error::Journal(JournalError::UnsafeFile { path, reason })) => {
            assert!(path.ends_with("replay.json"), "{path:?}");
            assert!(reason.contains("directory"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_record_created_in_the_future_does_not_disable_stall_detection() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("j");
    let j = Journal::open(&jdir, JournalOptions::new()).unwrap();
    let future = crate::support::events::now_ms() + 10 * 365 * 24 * 3600 * 1000;
    let payload = syncjournal::event::encode_event(future, &item(1)).expect("encodes");
    j.append_kind(syncjournal::event::KIND_CHANGESET, &payload)
        .unwrap();
    drop(j);
    let st = offline_status(&jdir, None, std::time::Duration::ZERO).unwrap();
    let s = &st.status;
    assert_eq!(
        s.oldest_pending_ms, None,
        "a creation time in the future is not believed"
    );
    let since = s.stalled_since_ms.expect("pending");
    assert!(
        since <= crate::support::events::now_ms(),
        "stalled since {since}: in the future"
    );
    assert_eq!(s.state, SyncState::Stalled);
}
