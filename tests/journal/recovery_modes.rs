//! Recovery modes against the shapes of damage a crash leaves (journal-format.md 9, 9.1):
//! holes in an unsynced tail are torn tails (cut from the first hole, whatever valid frames
//! follow), holes in synced data are not; trailing garbage after the end of the data is cut by
//! `TolerateTornTail` and refused by `AbsoluteConsistency`; leftover `.tmp` files are removed
//! and reported.

use std::fs;
use std::path::Path;

use crate::support::journal::*;
use crate::support::rng::Rng;
use syncjournal::{DamageKind, Journal, PersistMode, RecoveryMode};

const PAYLOAD: usize = 100; // 136-byte frames
const SYNCED: u64 = 20;
const UNSYNCED: u64 = 200;

/// A Buffered journal: `SYNCED` records, an explicit `sync()`, then `UNSYNCED` records that
/// claim only `SYNCED` durable (close makes them durable on disk, but their hints still say
/// what was durable when they were written: that is what a crash image looks like).
fn buffered_journal(dir: &Path) -> (Vec<Vec<u8>>, Vec<u8>, Vec<FrameLoc>) {
    let j = Journal::open(
        dir,
        opts_with_mode(RecoveryMode::TolerateTornTail).persist_mode(PersistMode::Buffered),
    )
    .unwrap();
    let mut payloads = Vec::new();
    for lsn in 1..=SYNCED + UNSYNCED {
        let p = payload_for_lsn(lsn, PAYLOAD);
        assert_eq!(j.append(&p).unwrap(), lsn);
        payloads.push(p);
        if lsn == SYNCED {
            j.sync().unwrap();
        }
    }
    j.close().unwrap();
    // The crash this image stands for came before the unsynced records' sync: `HEAD` said
    // LSN SYNCED then.
    rewind_head(dir, SYNCED);
    let image = fs::read(segment_path(dir, 1)).unwrap();
    let frames = frames_of_segment(&image, 1);
    assert_eq!(frames.len() as u64, SYNCED + UNSYNCED);
    for f in &frames {
        let expected = if f.lsn <= SYNCED { 0 } else { SYNCED };
        assert_eq!(
            f.synced_lsn, expected,
            "premise: Buffered appends claim only what was synced (LSN {})",
            f.lsn
        );
    }
    (payloads, image, frames)
}

#[test]
fn a_hole_in_the_unsynced_tail_is_cut_from_the_hole_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (payloads, image, frames) = buffered_journal(dir);
    let synced_end = frames[SYNCED as usize - 1].offset + frames[SYNCED as usize - 1].len;
    let data_end = frames.last().unwrap().offset + frames.last().unwrap().len;
    // Lose one page in the middle of the unsynced part; the pages after it reached the disk.
    let page = 16384;
    assert!(page >= synced_end + 4096 && page + 4096 + 4096 <= data_end);
    check_unsynced_hole(dir, &payloads, &image, &frames, page..page + 4096);
}

#[test]
fn a_hole_starting_at_a_frame_boundary_in_the_unsynced_tail_is_cut_too() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (payloads, image, frames) = buffered_journal(dir);
    // Exactly frames 100..=110 lost: the hole starts with an all-zero frame header, which
    // looks like the end of the data, and valid frames follow it.
    let hole = frames[99].offset..frames[109].offset + frames[109].len;
    check_unsynced_hole(dir, &payloads, &image, &frames, hole);
}

/// Zeroes `hole` (inside the unsynced part of a `buffered_journal`) and checks that it is a
/// torn tail: refused when strict, cut from the hole to the end of the data by default.
fn check_unsynced_hole(
    dir: &Path,
    payloads: &[Vec<u8>],
    image: &[u8],
    frames: &[FrameLoc],
    hole: std::ops::Range<usize>,
) {
    let seg = segment_path(dir, 1);
    let data_end = frames.last().unwrap().offset + frames.last().unwrap().len;
    let mut holed = image.to_vec();
    holed[hole.clone()].fill(0);
    fs::write(&seg, &holed).unwrap();
    let first_hit = frames
        .iter()
        .find(|f| f.offset + f.len > hole.start)
        .unwrap();
    let last_hit = frames.iter().rev().find(|f| f.offset < hole.end).unwrap();
    let survivors = first_hit.lsn - 1;
    assert!(survivors >= SYNCED);
    assert!(
        last_hit.lsn < SYNCED + UNSYNCED,
        "valid frames follow the hole"
    );

    // inspect: one torn tail (later frames claim only LSN 20 durable).
    let ins = syncjournal::inspect::inspect(dir).unwrap();
    assert!(!ins.damage.is_empty());
    assert!(ins.damage[0].torn_tail, "{:?}", ins.damage);
    assert_eq!(ins.damage[0].offset, first_hit.offset as u64);

    // AbsoluteConsistency refuses it as a torn tail.
    let c = expect_corrupt(
        open_with_mode(dir, RecoveryMode::AbsoluteConsistency),
        "unsynced hole, strict",
    );
    assert!(c.torn_tail);
    assert_eq!(c.offset, first_hit.offset as u64);
    assert_eq!(fs::read(&seg).unwrap(), holed);

    // TolerateTornTail cuts from the hole to the end of the data.
    let j = open_with_mode(dir, RecoveryMode::TolerateTornTail)
        .expect("a hole in unsynced data must be cut, not refused");
    let r = j.recovery_report().clone();
    assert_eq!(r.cuts.len(), 1, "{:?}", r.cuts);
    let cut = &r.cuts[0];
    assert!(cut.torn_tail);
    assert_eq!(cut.segment, seg);
    assert_eq!(cut.offset, first_hit.offset as u64);
    assert_eq!(
        (cut.offset + cut.len) as usize,
        data_end,
        "the cut runs to the last non-zero byte"
    );
    assert_eq!(
        cut.records_dropped,
        SYNCED + UNSYNCED - last_hit.lsn,
        "valid records after the hole are dropped with it"
    );
    assert!(r.skipped.is_empty());
    assert_eq!(r.records, survivors);
    assert_eq!(r.next_lsn, survivors + 1);
    let side = cut.saved_to.as_ref().unwrap();
    assert_eq!(
        fs::read(side).unwrap(),
        &holed[first_hit.offset..data_end],
        "the cut bytes, including the valid frames after the hole, are kept"
    );
    let records = read_all(&j);
    assert_data_prefix(&records, payloads, survivors as usize, "after the cut");
    // Every record written before the last explicit sync() survived.
    assert!(records.iter().filter(|r| r.lsn <= SYNCED).count() == SYNCED as usize);
    let on_disk = fs::read(&seg).unwrap();
    assert!(on_disk[first_hit.offset..].iter().all(|&b| b == 0));
    assert_eq!(j.append(b"next").unwrap(), survivors + 1);
    drop(j);
    let j = open_with_mode(dir, RecoveryMode::AbsoluteConsistency).unwrap();
    assert!(j.recovery_report().cuts.is_empty());
    assert_eq!(j.recovery_report().next_lsn, survivors + 2);
}

#[test]
fn salvage_treats_an_unsynced_hole_as_a_torn_tail_too() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (payloads, image, frames) = buffered_journal(dir);
    let mut holed = image.clone();
    holed[20480..24576].fill(0);
    fs::write(segment_path(dir, 1), &holed).unwrap();
    let first_hit = frames.iter().find(|f| f.offset + f.len > 20480).unwrap();
    let j = open_with_mode(dir, RecoveryMode::Salvage).unwrap();
    let r = j.recovery_report().clone();
    assert!(
        r.skipped.is_empty(),
        "a torn tail is cut, not skipped: {r:?}"
    );
    assert!(r.gaps.is_empty());
    assert_eq!(r.cuts.len(), 1);
    assert!(r.cuts[0].torn_tail);
    assert_eq!(r.next_lsn, first_hit.lsn);
    assert_data_prefix(
        &read_all(&j),
        &payloads,
        first_hit.lsn as usize - 1,
        "salvage",
    );
}

#[test]
fn a_hole_in_synced_data_is_damage_in_the_middle() {
    // The same Buffered journal, but the lost bytes hold records 10 and 11, which every
    // record after LSN 20 claims durable: media damage, never a torn tail.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (payloads, image, frames) = buffered_journal(dir);
    let f10 = frames[9];
    let f12 = frames[11];
    let mut holed = image.clone();
    holed[f10.offset + 5..f12.offset].fill(0);
    fs::write(segment_path(dir, 1), &holed).unwrap();
    for mode in [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::AbsoluteConsistency,
    ] {
        let c = expect_corrupt(open_with_mode(dir, mode), "hole in synced data");
        assert!(!c.torn_tail, "{mode:?}");
        assert_eq!(c.offset, f10.offset as u64, "{mode:?}");
        assert_eq!(fs::read(segment_path(dir, 1)).unwrap(), holed);
    }
    let j = open_with_mode(dir, RecoveryMode::Salvage).unwrap();
    assert_eq!(j.recovery_report().skipped, vec![10..12]);
    assert_records_with_gaps(&read_all(&j), &payloads, &[(10, 12)]);
}

#[test]
fn losing_the_whole_unsynced_tail_keeps_every_synced_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (payloads, image, frames) = buffered_journal(dir);
    let synced_end = frames[SYNCED as usize - 1].offset + frames[SYNCED as usize - 1].len;
    let mut lost = image.clone();
    lost[synced_end..].fill(0);
    fs::write(segment_path(dir, 1), &lost).unwrap();
    let j = open_with_mode(dir, RecoveryMode::AbsoluteConsistency).unwrap();
    assert!(j.recovery_report().cuts.is_empty());
    assert_data_prefix(&read_all(&j), &payloads, SYNCED as usize, "synced");
    assert_eq!(j.append(b"x").unwrap(), SYNCED + 1);
}

#[test]
fn trailing_garbage_is_cut_by_default_and_refused_when_strict() {
    for (case, garbage_at, len) in [("mid segment", 500usize, 20usize), ("last byte", 0, 1)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("j");
        let payloads = write_journal_records(&dir, 10, PAYLOAD, PersistMode::Sync);
        let seg = segment_path(&dir, 1);
        let image = fs::read(&seg).unwrap();
        let frames = frames_of_segment(&image, 1);
        let data_end = frames.last().unwrap().offset + frames.last().unwrap().len;
        let at = if garbage_at == 0 {
            image.len() - len
        } else {
            data_end + garbage_at
        };
        let mut dirty = image.clone();
        let mut rng = Rng::mixed(5);
        rng.fill(&mut dirty[at..at + len]);
        dirty[at + len - 1] |= 1; // the last garbage byte is non-zero
        dirty[at] |= 0x80;
        fs::write(&seg, &dirty).unwrap();
        let ctx = format!("trailing garbage ({case})");

        let c = expect_corrupt(
            open_with_mode(&dir, RecoveryMode::AbsoluteConsistency),
            &ctx,
        );
        assert!(c.torn_tail, "{ctx}: nothing after it claims durability");
        assert!(
            matches!(c.kind, DamageKind::TrailingGarbage { .. }),
            "{ctx}: {:?}",
            c.kind
        );
        assert_eq!(c.segment, seg);
        assert!(
            (data_end as u64..=at as u64).contains(&c.offset),
            "{ctx}: offset {} outside [{data_end}, {at}]",
            c.offset
        );
        assert_eq!(
            fs::read(&seg).unwrap(),
            dirty,
            "{ctx}: strict open modified"
        );

        let j = open_with_mode(&dir, RecoveryMode::TolerateTornTail).unwrap();
        let r = j.recovery_report().clone();
        assert_eq!(r.cuts.len(), 1, "{ctx}");
        let cut = &r.cuts[0];
        assert!(cut.torn_tail);
        assert!(matches!(cut.kind, DamageKind::TrailingGarbage { .. }));
        assert!(cut.offset as usize >= data_end && cut.offset as usize <= at);
        assert!(
            (cut.offset + cut.len) as usize >= at + len,
            "{ctx}: {cut:?}"
        );
        assert_eq!(cut.records_dropped, 0);
        assert_eq!(
            fs::read(cut.saved_to.as_ref().unwrap()).unwrap(),
            &dirty[cut.offset as usize..(cut.offset + cut.len) as usize]
        );
        assert_eq!(r.records, 10, "{ctx}: every record survives");
        assert_eq!(r.next_lsn, 11);
        assert_data_prefix(&read_all(&j), &payloads, 10, &ctx);
        assert_eq!(
            fs::read(&seg).unwrap(),
            image,
            "{ctx}: the garbage is zeroed, nothing else changed"
        );
        assert_eq!(j.append(b"eleven").unwrap(), 11);
        drop(j);
        let j = open_with_mode(&dir, RecoveryMode::AbsoluteConsistency).unwrap();
        assert!(j.recovery_report().cuts.is_empty(), "{ctx}");
        assert_eq!(j.recovery_report().records, 11);
    }
}

#[test]
fn leftover_tmp_files_are_removed_on_open_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let payloads = write_journal_records(&dir, 5, PAYLOAD, PersistMode::Sync);
    // An interrupted creation of segment 2 (partly written) and of the ACK file.
    let seg_tmp = dir.join("0000000000000002.sjl.tmp");
    fs::write(&seg_tmp, b"SYNCJRNL partial").unwrap();
    let ack_tmp = dir.join("ACK.tmp");
    fs::write(&ack_tmp, vec![0u8; 100]).unwrap();

    // inspect() is read-only: it leaves them.
    syncjournal::inspect::inspect(&dir).unwrap();
    assert!(
        seg_tmp.exists() && ack_tmp.exists(),
        "inspect removed files"
    );

    let j = open_with_mode(&dir, RecoveryMode::AbsoluteConsistency).unwrap();
    let r = j.recovery_report().clone();
    assert_eq!(r.removed_tmp_files, 2, "{r:?}");
    assert!(!seg_tmp.exists(), "segment .tmp file left behind");
    assert!(!ack_tmp.exists(), "ACK.tmp left behind");
    assert!(r.cuts.is_empty());
    assert_eq!(r.segments, 1);
    assert_data_prefix(&read_all(&j), &payloads, 5, "after tmp removal");
    assert_eq!(j.append(b"6").unwrap(), 6);
    drop(j);

    let j = open_with_mode(&dir, RecoveryMode::AbsoluteConsistency).unwrap();
    assert_eq!(j.recovery_report().removed_tmp_files, 0);
}

#[test]
fn a_directory_holding_only_a_tmp_file_gets_a_new_journal() {
    // A crash while creating the very first segment.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let seg_tmp = dir.join("0000000000000001.sjl.tmp");
    fs::write(&seg_tmp, vec![7u8; 4096]).unwrap();
    let j = open_with_mode(dir, RecoveryMode::TolerateTornTail).unwrap();
    let r = j.recovery_report();
    assert_eq!(r.removed_tmp_files, 1);
    assert!(r.created);
    assert!(!seg_tmp.exists());
    assert_eq!(j.append(b"first").unwrap(), 1);
}
