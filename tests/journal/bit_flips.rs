//! A single flipped bit in a record that a later record proves durable (journal-format.md 3.3,
//! 3.4, 9) is detected in every recovery mode: `AbsoluteConsistency` and `TolerateTornTail`
//! refuse with the damaged frame's position (damage in the middle is never silently cut),
//! `Salvage` replaces exactly that record with a gap record, and `inspect` reports it without
//! touching the files.
//!
//! Records are appended from one thread in `PersistMode::Sync`, so every record's synced-LSN
//! hint names its predecessor: only the last record of the journal is unproven.

use std::fs;
use std::path::PathBuf;

use crate::support::journal::*;
use crate::support::rng::Rng;
use syncjournal::format::{
    FRAME_CRC_OFFSET, FRAME_FLAGS_OFFSET, FRAME_HEADER_BYTES, FRAME_KIND_OFFSET, FRAME_LEN_OFFSET,
    FRAME_LSN_OFFSET, FRAME_PREV_CRC_OFFSET, FRAME_RESERVED_OFFSET, FRAME_SYNCED_LSN_OFFSET,
    KIND_GAP,
};
use syncjournal::{PersistMode, RecoveryMode};

/// A closed journal and the frames of each of its segments.
struct Template {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    /// `images[i]` is segment `i + 1`.
    images: Vec<Vec<u8>>,
    /// `frames[i]` are the frames of segment `i + 1`.
    frames: Vec<Vec<FrameLoc>>,
    payloads: Vec<Vec<u8>>,
}

impl Template {
    fn new(records: u64, payload: usize) -> Template {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("j");
        let payloads = write_journal_records(&dir, records, payload, PersistMode::Sync);
        let mut images = Vec::new();
        let mut frames = Vec::new();
        for (i, path) in segment_paths(&dir).iter().enumerate() {
            let image = fs::read(path).unwrap();
            frames.push(frames_of_segment(&image, i as u64 + 1));
            images.push(image);
        }
        let all: Vec<FrameLoc> = frames.iter().flatten().copied().collect();
        assert_eq!(all.len() as u64, records);
        for (i, f) in all.iter().enumerate() {
            assert_eq!(f.lsn, i as u64 + 1);
            // The premise of this file: each record proves its predecessor durable.
            assert_eq!(f.synced_lsn, f.lsn - 1, "synced-LSN hint of LSN {}", f.lsn);
        }
        Template {
            _tmp: tmp,
            dir,
            images,
            frames,
            payloads,
        }
    }

    fn records(&self) -> u64 {
        self.payloads.len() as u64
    }

    /// (segment seq, frame) of `lsn`.
    fn locate(&self, lsn: u64) -> (u64, FrameLoc) {
        for (i, fs) in self.frames.iter().enumerate() {
            if let Some(f) = fs.iter().find(|f| f.lsn == lsn) {
                return (i as u64 + 1, *f);
            }
        }
        panic!("LSN {lsn} not in the template");
    }

    /// The record whose frame holds byte `offset` of segment `seq`.
    fn frame_at(&self, seq: u64, offset: usize) -> Option<FrameLoc> {
        self.frames[seq as usize - 1]
            .iter()
            .find(|f| (f.offset..f.offset + f.len).contains(&offset))
            .copied()
    }
}

/// Flips bit `bit` of byte `at` of segment `seq` (inside the frame of a record other than the
/// last) and checks detection in every mode.
fn check_flip(t: &Template, seq: u64, at: usize, bit: u32) {
    let f = t
        .frame_at(seq, at)
        .unwrap_or_else(|| panic!("byte {at} of segment {seq} is not in a frame"));
    let lsn = f.lsn;
    assert!(
        lsn < t.records(),
        "the last record is a torn-tail case, not this file's"
    );
    let ctx = format!(
        "bit {bit} of byte {} of the frame of LSN {lsn} (segment {seq}, offset {at})",
        at - f.offset
    );
    let mut image = t.images[seq as usize - 1].clone();
    flip_bit_in(&mut image, at, bit);

    let case = tempfile::tempdir().unwrap();
    let dir = case.path();
    copy_journal_files(&t.dir, dir);
    let seg = segment_path(dir, seq);
    fs::write(&seg, &image).unwrap();
    let before = snapshot(dir, false);

    // inspect(): reported as damage in the middle, losing exactly this LSN; nothing changes.
    let ins = syncjournal::inspect::inspect(dir).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    assert_eq!(ins.damage.len(), 1, "{ctx}: {:?}", ins.damage);
    let d = &ins.damage[0];
    assert_eq!(d.segment, seg, "{ctx}");
    assert_eq!(d.offset, f.offset as u64, "{ctx}: inspect offset");
    assert!(!d.torn_tail, "{ctx}: inspect calls it a torn tail");
    assert_eq!(d.lost, lsn..lsn + 1, "{ctx}: inspect lost range");
    assert_eq!(
        snapshot(dir, false),
        before,
        "{ctx}: inspect modified the journal"
    );

    // AbsoluteConsistency and TolerateTornTail: the same error, nothing changed.
    for mode in [
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::TolerateTornTail,
    ] {
        let c = expect_corrupt(open_with_mode(dir, mode), &format!("{ctx}, {mode:?}"));
        assert!(
            !c.torn_tail,
            "{ctx}, {mode:?}: damage in the middle reported as a torn tail"
        );
        assert_eq!(c.segment, seg, "{ctx}, {mode:?}");
        assert_eq!(c.offset, f.offset as u64, "{ctx}, {mode:?}: offset");
        assert_eq!(
            snapshot(dir, false),
            before,
            "{ctx}, {mode:?}: refused open modified"
        );
        assert!(forensic_files(dir).is_empty(), "{ctx}, {mode:?}");
    }

    // Salvage: exactly this LSN is skipped and replaced by a gap record.
    let j = open_with_mode(dir, RecoveryMode::Salvage)
        .unwrap_or_else(|e| panic!("{ctx}: salvage failed: {e}"));
    let r = j.recovery_report().clone();
    assert_eq!(r.skipped, vec![lsn..lsn + 1], "{ctx}: skipped");
    assert_eq!(r.gaps, vec![lsn..lsn + 1], "{ctx}: gaps");
    assert_eq!(r.records, t.records() - 1, "{ctx}: records");
    assert_eq!(r.next_lsn, t.records() + 1, "{ctx}: next_lsn");
    assert_eq!(r.cuts.len(), 1, "{ctx}: {:?}", r.cuts);
    let cut = &r.cuts[0];
    assert!(!cut.torn_tail, "{ctx}");
    assert_eq!(cut.segment, seg, "{ctx}");
    assert_eq!(cut.offset, f.offset as u64, "{ctx}: cut offset");
    assert!(
        cut.len as usize <= f.len && cut.len >= 40,
        "{ctx}: cut len {}",
        cut.len
    );
    let followed = t.frames[seq as usize - 1].last().unwrap().lsn != lsn;
    if followed {
        assert_eq!(
            cut.len as usize, f.len,
            "{ctx}: the region is the damaged frame"
        );
    }
    let side = cut.saved_to.as_ref().expect("damaged bytes kept");
    assert_eq!(
        fs::read(side).unwrap(),
        &image[f.offset..f.offset + cut.len as usize],
        "{ctx}: side file"
    );
    let records = read_all(&j);
    assert_records_with_gaps(&records, &t.payloads, &[(lsn, lsn + 1)]);
    let gap = records.iter().find(|r| r.kind == KIND_GAP).unwrap();
    assert_eq!(gap.lsn, lsn, "{ctx}");
    assert_eq!(
        j.append(b"after salvage").unwrap(),
        t.records() + 1,
        "{ctx}"
    );
    j.close().unwrap();

    // Everything else in the files is untouched: other segments byte for byte.
    for (i, img) in t.images.iter().enumerate() {
        if i as u64 + 1 != seq && i + 1 != t.images.len() {
            assert_eq!(
                &fs::read(segment_path(dir, i as u64 + 1)).unwrap(),
                img,
                "{ctx}: salvage modified segment {}",
                i + 1
            );
        }
    }

    // The salvaged journal is consistent: a gap record is a valid record.
    let j = open_with_mode(dir, RecoveryMode::AbsoluteConsistency)
        .unwrap_or_else(|e| panic!("{ctx}: reopen after salvage: {e}"));
    let r = j.recovery_report();
    assert!(r.cuts.is_empty() && r.skipped.is_empty(), "{ctx}: {r:?}");
    assert_eq!(r.gaps, vec![lsn..lsn + 1], "{ctx}");
}

/// Byte offsets (within a frame) covering every header field, the first and last payload
/// bytes, `payload_samples` payload bytes between, and the padding.
fn frame_positions(f: &FrameLoc, rng: &mut Rng, payload_samples: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..FRAME_HEADER_BYTES).collect();
    v.push(FRAME_HEADER_BYTES);
    v.push(FRAME_HEADER_BYTES + f.payload_len - 1);
    for _ in 0..payload_samples {
        v.push(FRAME_HEADER_BYTES + rng.below(f.payload_len as u64) as usize);
    }
    v.extend(FRAME_HEADER_BYTES + f.payload_len..f.len);
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn every_byte_of_a_durable_frame_is_protected() {
    // 45-byte payloads: 80-byte frames with 3 bytes of padding.
    let t = Template::new(24, 45);
    assert_eq!(t.images.len(), 1);
    for lsn in [1, 12, 23] {
        let (seq, f) = t.locate(lsn);
        assert_eq!(f.len, 80);
        for i in 0..f.len {
            check_flip(&t, seq, f.offset + i, (i % 8) as u32);
        }
    }
}

#[test]
fn every_bit_of_every_header_field_is_protected() {
    let t = Template::new(6, 45);
    let (seq, f) = t.locate(3);
    for field in [
        FRAME_CRC_OFFSET,
        FRAME_LEN_OFFSET,
        FRAME_LSN_OFFSET,
        FRAME_SYNCED_LSN_OFFSET,
        FRAME_PREV_CRC_OFFSET,
        FRAME_KIND_OFFSET,
        FRAME_FLAGS_OFFSET,
        FRAME_RESERVED_OFFSET,
    ] {
        for bit in 0..8 {
            check_flip(&t, seq, f.offset + field, bit);
        }
    }
    // The high byte of the length and of the LSN too (a huge length must not be trusted).
    for bit in 0..8 {
        check_flip(&t, seq, f.offset + FRAME_LEN_OFFSET + 3, bit);
        check_flip(&t, seq, f.offset + FRAME_LSN_OFFSET + 7, bit);
    }
}

#[test]
fn flips_sampled_across_the_data_area_are_detected() {
    let t = Template::new(40, 45);
    let mut rng = Rng::mixed(11);
    let frames = &t.frames[0];
    let last = frames.last().unwrap();
    let start = frames[0].offset;
    let end = last.offset; // every frame before the last one
    let mut at = start;
    while at < end {
        check_flip(&t, 1, at, rng.below(8) as u32);
        at += 1 + rng.below(17) as usize;
    }
}

#[test]
fn flips_in_sealed_segments_are_damage_in_the_middle() {
    // 500-byte payloads: 536-byte frames, 114 per 64 KiB segment: three segments.
    let t = Template::new(300, 500);
    assert_eq!(t.images.len(), 3);
    let first_of = |seq: usize| t.frames[seq - 1].first().unwrap().lsn;
    let last_of = |seq: usize| t.frames[seq - 1].last().unwrap().lsn;
    let mut rng = Rng::mixed(3);
    let lsns = [
        first_of(1),
        (first_of(1) + last_of(1)) / 2,
        // The last record of a sealed segment: nothing after it in its segment claims it, but
        // a sealed segment is durable as a whole (invariant 4), so this is never a torn tail.
        last_of(1),
        first_of(2),
        last_of(2),
        // The active segment, in the middle.
        (first_of(3) + last_of(3)) / 2,
    ];
    for lsn in lsns {
        let (seq, f) = t.locate(lsn);
        for i in frame_positions(&f, &mut rng, 6) {
            check_flip(&t, seq, f.offset + i, rng.below(8) as u32);
        }
    }
}
