//! The `scan_segment` target: `syncjournal::journal::scan::scan_segment` on raw files and on
//! generated, mutated segments.

use syncjournal::Lsn;
use syncjournal::format::{
    FrameCheck, SEGMENT_DATA_OFFSET, SEGMENT_HEADER_BYTES, Seed, SegmentHeader, check_frame, le_u32,
};
use syncjournal::journal::scan::{DamagedRegion, ScanInput, SegmentScan, scan_segment};

use crate::checks::common::{Bytes, fuzz_seed};
use crate::checks::segments::{BuiltFrame, BuiltSegment, SegSpec, header_plus_body};

/// An input of the `scan_segment` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanCase {
    /// Mode 0: the bytes are the whole segment file. The scan input comes from its header if
    /// that decodes, else it is the fuzzing journal's segment 1 at LSN 1.
    Raw(Vec<u8>),
    /// Mode 1: a valid header (segment 1, LSN 1), zeros to 4096, then these bytes.
    HeaderBody(Vec<u8>),
    /// Modes 2 and 3: a generated segment.
    Built(SegSpec),
}

impl ScanCase {
    /// Reads a case.
    pub fn decode(data: &[u8]) -> Self {
        let mut b = Bytes::new(data);
        match b.u8() % 4 {
            0 => ScanCase::Raw(b.rest().to_vec()),
            1 => ScanCase::HeaderBody(b.rest().to_vec()),
            _ => ScanCase::Built(SegSpec::decode(&mut b)),
        }
    }

    /// Writes the case in the format [`ScanCase::decode`] reads.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            ScanCase::Raw(bytes) => {
                out.push(0);
                out.extend_from_slice(bytes);
            }
            ScanCase::HeaderBody(bytes) => {
                out.push(1);
                out.extend_from_slice(bytes);
            }
            ScanCase::Built(spec) => {
                out.push(2);
                spec.encode(&mut out);
            }
        }
        out
    }
}

/// The `scan_segment` target: scans a segment built from the input and checks the scanner's
/// invariants; for a generated segment also that a clean segment scans exactly, and that the
/// records before the first mutated byte are all found.
pub fn check_scan_segment(data: &[u8]) {
    match ScanCase::decode(data) {
        ScanCase::Raw(file) => {
            scan_with_invariants(&file, raw_scan_input(&file));
        }
        ScanCase::HeaderBody(body) => {
            let file = header_plus_body(1, 1, &body, SEGMENT_DATA_OFFSET + body.len());
            let crc = le_u32(&file, SEGMENT_HEADER_BYTES - 4);
            let input = ScanInput {
                seed: fuzz_seed(1),
                header_crc: crc,
                first_lsn: 1,
            };
            scan_with_invariants(&file, input);
        }
        ScanCase::Built(spec) => {
            let seg = BuiltSegment::build(&spec, 1, spec.first_lsn(), None);
            check_built_scan(&seg);
        }
    }
}

/// The scan input for an arbitrary file: from its header if that decodes.
pub fn raw_scan_input(file: &[u8]) -> ScanInput {
    match SegmentHeader::decode(file) {
        Ok((h, crc)) => ScanInput {
            seed: Seed::new(h.journal_id, h.segment_seq),
            header_crc: crc,
            first_lsn: h.first_lsn,
        },
        Err(_) => ScanInput {
            seed: fuzz_seed(1),
            header_crc: if file.len() >= SEGMENT_HEADER_BYTES {
                le_u32(file, SEGMENT_HEADER_BYTES - 4)
            } else {
                0
            },
            first_lsn: 1,
        },
    }
}

/// Checks a generated segment's scans, clean and mutated.
pub fn check_built_scan(seg: &BuiltSegment) {
    let input = seg.input();
    let clean = scan_with_invariants(&seg.clean, input);
    if let Some(next) = seg.next_lsn {
        assert!(
            clean.regions.is_empty(),
            "damage reported in a clean segment: {:?}",
            clean.regions[0]
        );
        assert_eq!(
            clean.tail.records, seg.records,
            "records of a clean segment"
        );
        assert_eq!(clean.tail.next_lsn, next, "next LSN of a clean segment");
        assert_eq!(clean.tail.end, seg.data_end, "data end of a clean segment");
        assert_eq!(
            clean.tail.data_bytes,
            (seg.data_end - SEGMENT_DATA_OFFSET) as u64
        );
        assert_eq!(
            clean.tail.last_crc,
            seg.frames.last().map_or(seg.header_crc, |f| f.crc)
        );
        let gaps: Vec<(Lsn, Lsn)> = seg
            .frames
            .iter()
            .filter_map(|f| f.gap_end.map(|e| (f.lsn, e)))
            .collect();
        assert_eq!(clean.gaps, gaps, "gaps of a clean segment");
        let claim = seg.frames.iter().map(|f| f.synced).max().unwrap_or(0);
        assert_eq!(clean.max_synced_claim, claim);
        check_index(&clean, &seg.frames);
    }
    if seg.first_diff().is_none() {
        return;
    }
    let scan = scan_with_invariants(&seg.bytes, input);
    let intact = seg.intact_frames();
    let intact_end = intact.last().map_or(SEGMENT_DATA_OFFSET, |f| f.end);
    let intact_records = intact.iter().filter(|f| f.gap_end.is_none()).count() as u64;
    let before = scan.regions.first().map_or(scan.tail, |r| r.before);
    assert!(
        before.end >= intact_end.min(seg.bytes.len()) && before.records >= intact_records,
        "damage after the first {} records hides some of them: first damage {:?}, tail {:?}",
        intact.len(),
        scan.regions.first(),
        scan.tail
    );
    // A data record's LSN is never shared with a later frame, so its floor entry is at or
    // before it.
    for f in intact.iter().filter(|f| f.gap_end.is_none()) {
        assert!(
            scan.index
                .floor(f.lsn)
                .is_some_and(|(l, off)| l <= f.lsn && off <= f.offset),
            "intact record {} cannot be found through the index",
            f.lsn
        );
    }
}

/// Every record of a clean segment is found through the index: the floor entry of its LSN
/// names a record at or before it (or at the last record sharing its LSN: an empty gap record
/// shares its LSN with the record after it, and that one is indexed).
fn check_index(scan: &SegmentScan, frames: &[BuiltFrame]) {
    for f in frames {
        let Some((lsn, off)) = scan.index.floor(f.lsn) else {
            panic!("no index entry at or before LSN {}", f.lsn);
        };
        let last_same = frames
            .iter()
            .filter(|g| g.lsn == f.lsn)
            .map(|g| g.offset)
            .max()
            .unwrap_or(f.offset);
        assert!(
            lsn <= f.lsn && off <= last_same,
            "index entry past LSN {}",
            f.lsn
        );
        assert!(
            frames.iter().any(|g| g.offset == off && g.lsn == lsn),
            "index entry ({lsn}, {off}) names no record"
        );
    }
}

/// Scans `bytes` and checks the invariants that hold whatever the bytes. Returns the scan.
pub fn scan_with_invariants(bytes: &[u8], input: ScanInput) -> SegmentScan {
    let scan = scan_segment(bytes, input);
    let len = bytes.len();
    let start = SEGMENT_DATA_OFFSET.min(len);
    let t = scan.tail;
    assert!(
        t.end >= start && t.end <= len,
        "tail end {} outside [{start}, {len}]",
        t.end
    );
    assert!(
        t.data_bytes <= (t.end - start) as u64 + 7,
        "{} bytes of valid frames before offset {}",
        t.data_bytes,
        t.end
    );
    assert!(
        t.records * 40 <= t.data_bytes,
        "{} records in {} bytes",
        t.records,
        t.data_bytes
    );
    let mut prev_end = start;
    let mut prev_lsn = input.first_lsn;
    let mut prev_claim = u64::MAX;
    for (i, r) in scan.regions.iter().enumerate() {
        assert!(
            r.offset >= prev_end && r.offset < r.end && r.end <= len,
            "region {i} [{}, {}) overlaps, is empty or ends past {len} (previous end {prev_end})",
            r.offset,
            r.end
        );
        assert_eq!(r.offset % 8, 0, "unaligned damaged region at {}", r.offset);
        assert_eq!(
            r.before.end, r.offset,
            "region {i} does not start at the scan point"
        );
        assert!(
            r.before.next_lsn >= prev_lsn,
            "LSNs go backwards at region {i}"
        );
        assert!(r.claimed_after <= prev_claim && r.claimed_after <= scan.max_synced_claim);
        match r.resume_lsn {
            Some(lsn) => {
                assert!(lsn >= r.before.next_lsn, "resumed at a lower LSN");
                assert!(
                    matches!(check_frame(&bytes[r.end..], input.seed), FrameCheck::Valid(h) if h.lsn == lsn),
                    "region {i} resumes at {} where there is no valid frame with LSN {lsn}",
                    r.end
                );
            }
            None => assert_eq!(
                i + 1,
                scan.regions.len(),
                "only the last region may end without a resume point"
            ),
        }
        prev_end = r.end;
        prev_lsn = r.before.next_lsn;
        prev_claim = r.claimed_after;
    }
    match scan.regions.last() {
        Some(r) if r.resume_lsn.is_none() => {
            assert_eq!(
                t, r.before,
                "the tail must be the state before the trailing damage"
            )
        }
        Some(r) => assert!(t.end >= r.end && t.records >= r.before.records),
        None => {}
    }
    for &(a, b) in &scan.gaps {
        assert!(b >= a, "gap ({a}, {b}) ends before it starts");
    }
    // Rolling back to a region gives the state before it.
    for i in [0, scan.regions.len().saturating_sub(1)] {
        if i < scan.regions.len() {
            let mut s = scan.clone();
            s.truncate_at_region(i);
            assert_eq!(s.tail, scan.regions[i].before);
            assert_eq!(s.regions.len(), i);
        }
    }
    check_cut_rescans(bytes, input, &scan);
    scan
}

/// What recovery relies on: zeroing from a damaged region to the end of the segment (a tail
/// cut) leaves a segment that scans clean up to exactly the state before that region.
fn check_cut_rescans(bytes: &[u8], input: ScanInput, scan: &SegmentScan) {
    let Some(first) = scan.regions.first() else {
        return;
    };
    let mut cut = bytes.to_vec();
    cut[first.offset..].fill(0);
    let again = scan_segment(&cut, input);
    assert!(
        again.regions.is_empty(),
        "damage left after cutting at the first damaged region {}: {:?}",
        first.offset,
        again.regions[0]
    );
    assert_eq!(again.tail, first.before, "cutting at the first region");
    // Cutting only a trailing region keeps every earlier region as it was (unless the trailing
    // region starts at the previous region's resume point, which the cut destroys).
    let n = scan.regions.len();
    let last = &scan.regions[n - 1];
    if n < 2 || last.resume_lsn.is_some() || last.offset == scan.regions[n - 2].end {
        return;
    }
    let mut cut = bytes.to_vec();
    cut[last.offset..].fill(0);
    let again = scan_segment(&cut, input);
    assert_eq!(again.tail, last.before, "cutting the trailing region");
    assert_eq!(again.regions.len(), n - 1, "cutting the trailing region");
    for (a, b) in again.regions.iter().zip(&scan.regions) {
        assert!(
            same_region(a, b),
            "cutting the trailing region changed an earlier one: {b:?} became {a:?}"
        );
    }
}

/// Same region, except for its kind: a damaged frame's length may reach past the trailing
/// region, so zeroing that changes what is wrong with the frame (the computed checksum, or a
/// padding fault that becomes a checksum fault).
fn same_region(a: &DamagedRegion, b: &DamagedRegion) -> bool {
    a.offset == b.offset
        && a.end == b.end
        && a.before == b.before
        && a.resume_lsn == b.resume_lsn
        && a.claimed_after == b.claimed_after
}
