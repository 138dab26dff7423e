//! `RecoveryMode::Salvage` (journal-format.md 4 "Gap records", 9): every damaged region in
//! durable data is replaced by one gap record naming the LSNs lost, across segments; the result
//! is a valid journal (`AbsoluteConsistency` accepts it), appends continue after the last LSN,
//! and salvaging again changes nothing.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::support::journal::*;
use crate::support::rng::Rng;
use syncjournal::{Lsn, PersistMode, RecoveryMode};

const PAYLOAD: usize = 500; // 536-byte frames, 114 per 64 KiB segment

struct Journal4 {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    payloads: Vec<Vec<u8>>,
    frames: Vec<Vec<FrameLoc>>,
}

fn journal_of(records: u64) -> Journal4 {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let payloads = write_journal_records(&dir, records, PAYLOAD, PersistMode::Sync);
    let frames = segment_paths(&dir)
        .iter()
        .enumerate()
        .map(|(i, p)| frames_of_segment(&fs::read(p).unwrap(), i as u64 + 1))
        .collect();
    Journal4 {
        _tmp: tmp,
        dir,
        payloads,
        frames,
    }
}

impl Journal4 {
    fn locate(&self, lsn: Lsn) -> (u64, FrameLoc) {
        for (i, fs) in self.frames.iter().enumerate() {
            if let Some(f) = fs.iter().find(|f| f.lsn == lsn) {
                return (i as u64 + 1, *f);
            }
        }
        panic!("LSN {lsn} not found");
    }

    fn last_of(&self, seq: u64) -> FrameLoc {
        *self.frames[seq as usize - 1].last().unwrap()
    }
}

/// Applies `damage` to segment `seq` of `dir` in place.
fn damage_segment(dir: &Path, seq: u64, damage: impl FnOnce(&mut Vec<u8>)) {
    let path = segment_path(dir, seq);
    let mut image = fs::read(&path).unwrap();
    damage(&mut image);
    fs::write(&path, image).unwrap();
}

fn all_segment_bytes(dir: &Path) -> Vec<Vec<u8>> {
    segment_paths(dir)
        .iter()
        .map(|p| fs::read(p).unwrap())
        .collect()
}

#[test]
fn salvage_replaces_each_damaged_region_with_one_gap_across_segments() {
    let j = journal_of(400);
    assert_eq!(j.frames.len(), 4, "four segments");
    let dir = &j.dir;
    let mut rng = Rng::mixed(42);
    assert_eq!(j.last_of(1).lsn, 114);
    assert_eq!(j.last_of(2).lsn, 228);

    // D1: one flipped bit in the middle of sealed segment 1.
    let (s1, f40) = j.locate(40);
    damage_segment(dir, s1, |b| flip_bit_in(b, f40.offset + 200, 3));
    // D2: garbage over the last two records of sealed segment 1 (damage at its very end).
    let (_, f113) = j.locate(113);
    let end1 = j.last_of(1).offset + j.last_of(1).len;
    damage_segment(dir, 1, |b| rng.fill(&mut b[f113.offset + 100..end1]));
    // D3: garbage spanning four records of sealed segment 2, from inside LSN 150 to inside 153.
    let (s2, f150) = j.locate(150);
    let (_, f153) = j.locate(153);
    damage_segment(dir, s2, |b| {
        rng.fill(&mut b[f150.offset + 200..f153.offset + 300])
    });
    // D4: two whole frames zeroed in sealed segment 3 (a lost page run, not a torn write: the
    // segment is sealed, and later records in it claim them durable).
    let (s3, f261) = j.locate(261);
    let (_, f262) = j.locate(262);
    damage_segment(dir, s3, |b| b[f261.offset..f262.offset + f262.len].fill(0));
    // D5: a flipped bit in the active segment, proven durable by the records after it.
    let (s4, f380) = j.locate(380);
    assert_eq!(s4, 4);
    damage_segment(dir, s4, |b| flip_bit_in(b, f380.offset + 9, 0));

    let lost: Vec<Range<Lsn>> = vec![40..41, 113..115, 150..154, 261..263, 380..381];
    let lost_count: u64 = lost.iter().map(|r| r.end - r.start).sum();
    let damaged = all_segment_bytes(dir);
    let offsets: Vec<(u64, usize)> = vec![
        (1, f40.offset),
        (1, f113.offset),
        (2, f150.offset),
        (3, f261.offset),
        (4, f380.offset),
    ];

    // The default mode refuses (the first region is damage in the middle).
    let c = expect_corrupt(
        open_with_mode(dir, RecoveryMode::TolerateTornTail),
        "default mode",
    );
    assert!(!c.torn_tail);
    assert_eq!(c.segment, segment_path(dir, 1));
    assert_eq!(c.offset, f40.offset as u64);
    // inspect() lists all five regions with their lost LSNs.
    let ins = syncjournal::inspect::inspect(dir).unwrap();
    let seen: Vec<(PathBuf, u64, Range<Lsn>, bool)> = ins
        .damage
        .iter()
        .map(|d| (d.segment.clone(), d.offset, d.lost.clone(), d.torn_tail))
        .collect();
    let want: Vec<(PathBuf, u64, Range<Lsn>, bool)> = offsets
        .iter()
        .zip(&lost)
        .map(|(&(seq, off), l)| (segment_path(dir, seq), off as u64, l.clone(), false))
        .collect();
    assert_eq!(seen, want, "inspect damage");
    assert_eq!(
        all_segment_bytes(dir),
        damaged,
        "inspect modified the journal"
    );

    // Salvage.
    let jr = open_with_mode(dir, RecoveryMode::Salvage).expect("salvage");
    let r = jr.recovery_report().clone();
    assert_eq!(r.skipped, lost, "skipped");
    assert_eq!(r.gaps, lost, "gaps");
    assert_eq!(r.records, 400 - lost_count);
    assert_eq!(r.next_lsn, 401);
    assert_eq!(r.segments, 4);
    let cut_at: Vec<(PathBuf, u64, bool)> = r
        .cuts
        .iter()
        .map(|c| (c.segment.clone(), c.offset, c.torn_tail))
        .collect();
    let want_cuts: Vec<(PathBuf, u64, bool)> = offsets
        .iter()
        .map(|&(seq, off)| (segment_path(dir, seq), off as u64, false))
        .collect();
    assert_eq!(cut_at, want_cuts, "cuts");
    assert_eq!(r.bytes_cut, r.cuts.iter().map(|c| c.len).sum::<u64>());
    // The spanning region runs from LSN 150's frame to LSN 154's.
    let (_, f154) = j.locate(154);
    assert_eq!(r.cuts[2].len as usize, f154.offset - f150.offset);
    // Every replaced region is kept in forensics/, byte for byte.
    let mut sides = Vec::new();
    for c in &r.cuts {
        let side = c.saved_to.clone().expect("side file");
        let seq: usize = c
            .segment
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let orig = &damaged[seq - 1][c.offset as usize..(c.offset + c.len) as usize];
        assert_eq!(fs::read(&side).unwrap(), orig, "side file of {c:?}");
        sides.push(side);
    }
    sides.sort();
    assert_eq!(forensic_files(dir), sides);

    let records = read_all(&jr);
    let gaps: Vec<(Lsn, Lsn)> = lost.iter().map(|r| (r.start, r.end)).collect();
    assert_records_with_gaps(&records, &j.payloads, &gaps);
    // Reading from inside the journal after a gap works too.
    let from: Vec<Lsn> = jr
        .reader(154)
        .unwrap()
        .map(|r| r.unwrap().lsn)
        .take(3)
        .collect();
    assert_eq!(from, vec![154, 155, 156]);

    // New appends continue after the last LSN.
    assert_eq!(jr.append(b"first after salvage").unwrap(), 401);
    assert_eq!(jr.append(b"second after salvage").unwrap(), 402);
    jr.close().unwrap();

    // The salvaged journal is valid: AbsoluteConsistency opens it and lists the gaps.
    let ja = open_with_mode(dir, RecoveryMode::AbsoluteConsistency).expect("reopen strictly");
    let r = ja.recovery_report().clone();
    assert!(r.cuts.is_empty(), "{:?}", r.cuts);
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    assert_eq!(r.gaps, lost);
    assert_eq!(r.records, 402 - lost_count);
    assert_eq!(r.next_lsn, 403);
    let records = read_all(&ja);
    assert_eq!(records.last().unwrap().payload, b"second after salvage");
    drop(ja);
    let salvaged = all_segment_bytes(dir);

    // Salvage is idempotent: a second salvage finds nothing new and writes nothing.
    let js = open_with_mode(dir, RecoveryMode::Salvage).expect("salvage again");
    let r = js.recovery_report().clone();
    assert!(
        r.skipped.is_empty(),
        "second salvage skipped {:?}",
        r.skipped
    );
    assert!(r.cuts.is_empty(), "second salvage cut {:?}", r.cuts);
    assert_eq!(r.gaps, lost);
    drop(js);
    assert_eq!(all_segment_bytes(dir), salvaged, "second salvage modified");
    assert_eq!(forensic_files(dir).len(), 5);
    let ins = syncjournal::inspect::inspect(dir).unwrap();
    assert!(ins.is_clean(), "{:?}", ins.damage);
    assert_eq!(ins.gaps, lost);
}

#[test]
fn salvage_of_the_last_records_of_a_sealed_segment_joins_the_next_segment() {
    let j = journal_of(250);
    let dir = &j.dir;
    let last1 = j.last_of(1);
    // One bit in the last record of segment 1: nothing after it in the segment, but the
    // segment is sealed, so it was durable: a gap up to segment 2's first LSN.
    damage_segment(dir, 1, |b| flip_bit_in(b, last1.offset + 40, 6));
    for mode in [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::AbsoluteConsistency,
    ] {
        let c = expect_corrupt(open_with_mode(dir, mode), "sealed segment end");
        assert!(
            !c.torn_tail,
            "{mode:?}: the end of a sealed segment is never a torn tail"
        );
        assert_eq!(c.offset, last1.offset as u64);
    }
    let jr = open_with_mode(dir, RecoveryMode::Salvage).unwrap();
    let r = jr.recovery_report().clone();
    assert_eq!(r.skipped, vec![last1.lsn..last1.lsn + 1]);
    let records = read_all(&jr);
    assert_records_with_gaps(&records, &j.payloads, &[(last1.lsn, last1.lsn + 1)]);
    assert_eq!(jr.append(b"x").unwrap(), 251);
    drop(jr);
    let ja = open_with_mode(dir, RecoveryMode::AbsoluteConsistency).unwrap();
    assert_eq!(ja.recovery_report().gaps, vec![last1.lsn..last1.lsn + 1]);
}

#[test]
fn salvage_cuts_a_torn_tail_and_gaps_durable_damage_in_the_same_segment() {
    let j = journal_of(60);
    let dir = &j.dir;
    assert_eq!(j.frames.len(), 1);
    let (_, f20) = j.locate(20);
    let (_, f60) = j.locate(60);
    damage_segment(dir, 1, |b| {
        flip_bit_in(b, f20.offset + 77, 1);
        // The last record torn: nothing proves it durable (the crash came before its sync
        // was published in HEAD).
        b[f60.offset + 50..f60.offset + f60.len].fill(0);
    });
    rewind_head(dir, 59);
    let jr = open_with_mode(dir, RecoveryMode::Salvage).unwrap();
    let r = jr.recovery_report().clone();
    assert_eq!(r.skipped, vec![20..21], "the torn tail is cut, not skipped");
    assert_eq!(r.gaps, vec![20..21]);
    assert_eq!(r.cuts.len(), 2, "{:?}", r.cuts);
    assert!(!r.cuts[0].torn_tail);
    assert_eq!(r.cuts[0].offset, f20.offset as u64);
    assert!(r.cuts[1].torn_tail);
    assert_eq!(r.cuts[1].offset, f60.offset as u64);
    assert_eq!(r.next_lsn, 60, "the torn record's LSN is reused");
    let records = read_all(&jr);
    assert_records_with_gaps(&records, &j.payloads[..59], &[(20, 21)]);
    assert_eq!(jr.append(b"reused").unwrap(), 60);
    drop(jr);
    let ja = open_with_mode(dir, RecoveryMode::AbsoluteConsistency).unwrap();
    assert_eq!(ja.recovery_report().gaps, vec![20..21]);
    assert_eq!(ja.read(60).unwrap().unwrap().payload, b"reused");
}

#[test]
fn garbage_after_the_end_of_a_sealed_segment_is_damage_salvage_clears() {
    let j = journal_of(130);
    let dir = &j.dir;
    assert_eq!(j.frames.len(), 2);
    let end1 = j.last_of(1).offset + j.last_of(1).len;
    damage_segment(dir, 1, |b| {
        b[end1 + 77] = 0x5A;
        b[65_530] = 0xA5;
    });
    // Not a torn tail (segment 1 is sealed): the default mode refuses it.
    let c = expect_corrupt(
        open_with_mode(dir, RecoveryMode::TolerateTornTail),
        "garbage in a sealed segment",
    );
    assert!(!c.torn_tail);
    assert_eq!(c.segment, segment_path(dir, 1));
    // The region starts at the end of the written data or at the garbage, never before the
    // end of the last record.
    assert!(
        (end1 as u64..=(end1 + 77) as u64).contains(&c.offset),
        "offset {} outside [{end1}, {}]",
        c.offset,
        end1 + 77
    );
    assert!(
        matches!(c.kind, syncjournal::DamageKind::TrailingGarbage { .. }),
        "{:?}",
        c.kind
    );
    let jr = open_with_mode(dir, RecoveryMode::Salvage).unwrap();
    let r = jr.recovery_report().clone();
    assert!(r.skipped.is_empty(), "no LSN was lost: {:?}", r.skipped);
    assert_eq!(r.records, 130);
    assert_eq!(r.cuts.len(), 1);
    let cut = &r.cuts[0];
    assert!(!cut.torn_tail);
    assert!(
        cut.offset as usize <= end1 + 77 && (cut.offset + cut.len) as usize > 65_530,
        "cut {cut:?} does not cover the garbage"
    );
    assert_data_prefix(&read_all(&jr), &j.payloads, 130, "after salvage");
    drop(jr);
    let seg1 = fs::read(segment_path(dir, 1)).unwrap();
    assert!(
        seg1[end1..].iter().all(|&b| b == 0),
        "garbage left after salvage"
    );
    let ja = open_with_mode(dir, RecoveryMode::AbsoluteConsistency).unwrap();
    assert!(ja.recovery_report().gaps.is_empty());
    assert_eq!(ja.recovery_report().records, 130);
}

#[test]
fn a_torn_gap_record_is_salvaged_again() {
    // journal-format.md 9.1: a crash while writing a gap record leaves a damaged region that
    // the next salvage replaces again.
    let j = journal_of(60);
    let dir = &j.dir;
    let (_, f20) = j.locate(20);
    damage_segment(dir, 1, |b| flip_bit_in(b, f20.offset + 300, 2));
    let damaged = fs::read(segment_path(dir, 1)).unwrap();
    let jr = open_with_mode(dir, RecoveryMode::Salvage).unwrap();
    assert_eq!(jr.recovery_report().skipped, vec![20..21]);
    drop(jr);
    let salvaged = fs::read(segment_path(dir, 1)).unwrap();
    let region = f20.offset..f20.offset + f20.len;

    // (a) zeros and header written, the old bytes still in the second half of the region;
    // (b) zeros written, the gap header not yet.
    let partial_a = {
        let mut b = salvaged.clone();
        b[region.start + 100..region.end].copy_from_slice(&damaged[region.start + 100..region.end]);
        b
    };
    let partial_b = {
        let mut b = salvaged.clone();
        b[region.clone()].fill(0);
        b
    };
    for (name, image) in [
        ("rest not zeroed", partial_a),
        ("header missing", partial_b),
    ] {
        fs::write(segment_path(dir, 1), &image).unwrap();
        let c = expect_corrupt(open_with_mode(dir, RecoveryMode::TolerateTornTail), name);
        assert!(!c.torn_tail, "{name}");
        assert_eq!(c.offset, f20.offset as u64, "{name}");
        let jr = open_with_mode(dir, RecoveryMode::Salvage)
            .unwrap_or_else(|e| panic!("{name}: salvage again: {e}"));
        let r = jr.recovery_report().clone();
        assert_eq!(r.skipped, vec![20..21], "{name}");
        assert_eq!(r.gaps, vec![20..21], "{name}");
        assert_records_with_gaps(&read_all(&jr), &j.payloads, &[(20, 21)]);
        drop(jr);
        let ja = open_with_mode(dir, RecoveryMode::AbsoluteConsistency).unwrap();
        assert_eq!(ja.recovery_report().gaps, vec![20..21], "{name}");
    }
}
