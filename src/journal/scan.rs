//! The segment scanner: walks the frames of one segment's bytes, verifies each one, and
//! describes every damaged region. Pure (no I/O), so it is fuzzed directly; recovery, `verify`
//! and the reader all build on it.

use crate::error::DamageKind;
use crate::format::Lsn;
use crate::format::{
    FRAME_ALIGN, FRAME_HEADER_BYTES, FRAME_KIND_OFFSET, FRAME_LSN_OFFSET, FrameCheck, FrameFault,
    FrameHeader, KIND_GAP, LSN_MAX, SEGMENT_DATA_OFFSET, Seed, check_frame, gap_end, le_u64,
};
use crate::journal::index::SparseIndex;

/// What the scanner needs to know about a segment besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct ScanInput {
    /// The segment's checksum seed.
    pub seed: Seed,
    /// The header checksum: the first frame's `prev_crc`.
    pub header_crc: u32,
    /// The LSN of the segment's first record.
    pub first_lsn: Lsn,
}

/// What a sequential reader of a segment expects of the next frame: its LSN, and the checksum
/// it must chain to (`None` when that is unknown: after a gap record, after a damaged region,
/// or at a position found through the sparse index). Every reader — recovery's scanner, the
/// owner's reader, the offline reader — accepts frames only through [`Chain::accept`], so
/// that LSN continuity and the chain are checked the same way everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    /// The LSN the next frame must carry.
    pub next_lsn: Lsn,
    /// The checksum the next frame's `prev_crc` must equal, if known.
    pub last_crc: Option<u32>,
}

/// What a frame accepted by a [`Chain`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// A record: the chain now expects its LSN + 1.
    Record,
    /// A gap record standing for `[lsn, end)`: the chain now expects `end`.
    Gap {
        /// The first LSN after the gap.
        end: Lsn,
    },
}

impl Chain {
    /// The chain at the start of a segment whose first LSN is `first_lsn`.
    pub fn start(first_lsn: Lsn, header_crc: u32) -> Chain {
        Chain {
            next_lsn: first_lsn,
            last_crc: Some(header_crc),
        }
    }

    /// Checks a frame that verified (`check_frame` returned `Valid(h)`, `payload` its payload)
    /// against the chain, in this order: its LSN is the expected one, it chains to its
    /// predecessor (when that is known), and a gap record names a well-formed range. On
    /// success the chain advances past the frame.
    pub fn accept(&mut self, h: &FrameHeader, payload: &[u8]) -> Result<Link, DamageKind> {
        if h.lsn != self.next_lsn {
            return Err(DamageKind::LsnOutOfOrder {
                expected: self.next_lsn,
                found: h.lsn,
            });
        }
        if let Some(last) = self.last_crc
            && h.prev_crc != last
        {
            return Err(DamageKind::ChainBroken {
                expected: last,
                found: h.prev_crc,
            });
        }
        if h.kind == KIND_GAP {
            match gap_end(payload) {
                Some(end) if end >= h.lsn && end <= LSN_MAX + 1 => {
                    // The frame after a gap points at a record that no longer exists.
                    self.next_lsn = end;
                    self.last_crc = None;
                    Ok(Link::Gap { end })
                }
                _ => Err(DamageKind::FrameHeader {
                    reason: "malformed gap record",
                }),
            }
        } else {
            self.next_lsn = h.lsn + 1;
            self.last_crc = Some(h.crc);
            Ok(Link::Record)
        }
    }
}

/// The scanner's state at a point in the segment, so a tail cut can roll back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanPoint {
    /// Offset of the first byte not covered by a valid frame.
    pub end: usize,
    /// LSN expected at `end`.
    pub next_lsn: Lsn,
    /// Checksum of the last valid frame (or the header's).
    pub last_crc: u32,
    /// Valid data records (gap frames excluded) before `end`.
    pub records: u64,
    /// Bytes of valid frames before `end`.
    pub data_bytes: u64,
    index_len: usize,
    gaps_len: usize,
}

impl ScanPoint {
    /// The state at the start of an empty segment whose first LSN is `first_lsn`.
    pub fn start(first_lsn: Lsn, header_crc: u32) -> ScanPoint {
        ScanPoint {
            end: SEGMENT_DATA_OFFSET,
            next_lsn: first_lsn,
            last_crc: header_crc,
            records: 0,
            data_bytes: 0,
            index_len: 0,
            gaps_len: 0,
        }
    }
}

/// A damaged region `[offset, end)` of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRegion {
    /// First damaged byte: where a valid frame should have started.
    pub offset: usize,
    /// End of the region: the start of the next valid frame (`resume_lsn` is then `Some`), or
    /// the 8-aligned end of the last non-zero byte of the segment.
    pub end: usize,
    /// What is wrong at `offset`.
    pub kind: DamageKind,
    /// The scanner's state just before the region.
    pub before: ScanPoint,
    /// LSN of the valid frame at `end`, if scanning resumed there.
    pub resume_lsn: Option<Lsn>,
    /// The highest `synced_lsn` claimed by any valid frame after this region in this segment.
    /// If it is at least `before.next_lsn`, the region held data that had been durable.
    pub claimed_after: Lsn,
}

impl DamagedRegion {
    /// True if a later record proves that the region held durable data: it cannot be a torn
    /// write (see `journal-format.md`, "Torn tail or damage in the middle").
    pub fn proven_durable(&self) -> bool {
        self.claimed_after >= self.before.next_lsn
    }
}

/// The result of scanning one segment.
#[derive(Debug, Clone)]
pub struct SegmentScan {
    /// Sparse LSN → offset index of the valid frames.
    pub index: SparseIndex,
    /// State after the last valid frame.
    pub tail: ScanPoint,
    /// Gap frames found, as `[first missing LSN, first LSN after the gap)`.
    pub gaps: Vec<(Lsn, Lsn)>,
    /// Damaged regions, in file order.
    pub regions: Vec<DamagedRegion>,
    /// Highest `synced_lsn` claim among all valid frames.
    pub max_synced_claim: Lsn,
}

impl SegmentScan {
    /// Forgets everything from region `i` on: the state becomes what it was just before it.
    pub fn truncate_at_region(&mut self, i: usize) {
        let p = self.regions[i].before;
        self.index.truncate(p.index_len);
        self.gaps.truncate(p.gaps_len);
        self.tail = p;
        self.regions.truncate(i);
    }
}

/// Scans `bytes` (a whole segment file, header included). Never panics, whatever the bytes.
pub fn scan_segment(bytes: &[u8], input: ScanInput) -> SegmentScan {
    scan_segment_with(bytes, input, &mut |_| {})
}

/// Bytes of progress between two calls of a scan's `passed` callback.
pub const SCAN_PROGRESS_BYTES: usize = 4 << 20;

/// [`scan_segment`], calling `passed(offset)` every [`SCAN_PROGRESS_BYTES`] of progress: the
/// scan will not come back below `offset` except to look for the end of trailing non-zero
/// bytes, so a caller that maps the segment can release the pages behind it (keeping resident
/// memory flat however large the segment).
pub fn scan_segment_with(
    bytes: &[u8],
    input: ScanInput,
    passed: &mut dyn FnMut(usize),
) -> SegmentScan {
    let len = bytes.len();
    let mut next_report = SCAN_PROGRESS_BYTES;
    let mut index = SparseIndex::default();
    let mut gaps = Vec::new();
    let mut regions: Vec<DamagedRegion> = Vec::new();
    let mut pos = SEGMENT_DATA_OFFSET.min(len);
    let mut next_lsn = input.first_lsn;
    let mut last_crc = input.header_crc;
    let mut records = 0u64;
    let mut data_bytes = 0u64;
    let mut max_claim = 0;
    let mut claim_since_region = 0;
    // After a gap frame or a resume, the next frame's chain link is not checked: it points at
    // a record that no longer exists.
    let mut chain_unknown = false;
    let mut force_index = true;

    loop {
        if pos >= next_report {
            passed(pos);
            next_report = pos + SCAN_PROGRESS_BYTES;
        }
        let point = ScanPoint {
            end: pos,
            next_lsn,
            last_crc,
            records,
            data_bytes,
            index_len: index.len(),
            gaps_len: gaps.len(),
        };
        let damage = match check_frame(&bytes[pos..], input.seed) {
            FrameCheck::End => match nonzero_span_with(bytes, pos, passed) {
                None => break,
                // A frame may begin up to 7 bytes before its first non-zero byte.
                Some((first, last_end)) => Some((
                    DamageKind::TrailingGarbage {
                        len: (last_end - first) as u64,
                    },
                    first & !(FRAME_ALIGN - 1),
                )),
            },
            FrameCheck::Invalid(fault) => Some((fault_kind(fault), pos + FRAME_ALIGN)),
            FrameCheck::Valid(h) => {
                let fb = h.frame_bytes();
                let payload = &bytes
                    [pos + FRAME_HEADER_BYTES..pos + FRAME_HEADER_BYTES + h.payload_len as usize];
                let mut chain = Chain {
                    next_lsn,
                    last_crc: (!chain_unknown).then_some(last_crc),
                };
                match chain.accept(&h, payload) {
                    Err(kind) => Some((kind, pos + FRAME_ALIGN)),
                    Ok(link) => {
                        let gap = matches!(link, Link::Gap { .. });
                        index.note(h.lsn, pos, force_index || gap);
                        force_index = false;
                        if let Link::Gap { end } = link {
                            gaps.push((h.lsn, end));
                            force_index = true;
                        } else {
                            records += 1;
                        }
                        next_lsn = chain.next_lsn;
                        chain_unknown = chain.last_crc.is_none();
                        max_claim = max_claim.max(h.synced_lsn);
                        claim_since_region = claim_since_region.max(h.synced_lsn);
                        last_crc = h.crc;
                        data_bytes += fb as u64;
                        pos = (pos + fb).min(len);
                        None
                    }
                }
            }
        };
        let Some((kind, search_from)) = damage else {
            continue;
        };
        // Close the previous region's claim window.
        if let Some(prev) = regions.last_mut() {
            prev.claimed_after = claim_since_region;
        }
        claim_since_region = 0;
        let search_from = search_from.max(pos + FRAME_ALIGN);
        match find_resume(bytes, search_from, next_lsn, input.seed) {
            Some((q, lsn)) => {
                regions.push(DamagedRegion {
                    offset: pos,
                    end: q,
                    kind,
                    before: point,
                    resume_lsn: Some(lsn),
                    claimed_after: 0,
                });
                pos = q;
                chain_unknown = true;
                force_index = true;
                // The resumed frame must carry an LSN at least the expected one.
                next_lsn = lsn;
            }
            None => {
                let end = nonzero_span(bytes, pos)
                    .map_or(pos, |(_, last_end)| {
                        align_up(last_end, FRAME_ALIGN).min(len)
                    })
                    .max((pos + FRAME_ALIGN).min(len));
                regions.push(DamagedRegion {
                    offset: pos,
                    end,
                    kind,
                    before: point,
                    resume_lsn: None,
                    claimed_after: 0,
                });
                break;
            }
        }
    }
    if let Some(last) = regions.last_mut() {
        last.claimed_after = claim_since_region;
    }
    // Turn the per-window claims into "anything after this region" claims.
    let mut suffix = 0;
    for r in regions.iter_mut().rev() {
        suffix = suffix.max(r.claimed_after);
        r.claimed_after = suffix;
    }
    // The tail is the state after the last valid frame: if the scan ended in a region with no
    // resume, that is the state before it.
    let tail = match regions.last() {
        Some(r) if r.resume_lsn.is_none() => r.before,
        _ => ScanPoint {
            end: pos,
            next_lsn,
            last_crc,
            records,
            data_bytes,
            index_len: index.len(),
            gaps_len: gaps.len(),
        },
    };
    SegmentScan {
        index,
        tail,
        gaps,
        regions,
        max_synced_claim: max_claim,
    }
}

/// The damage a frame fault stands for.
pub(crate) fn fault_kind(fault: FrameFault) -> DamageKind {
    match fault {
        FrameFault::Truncated { available } => DamageKind::FrameTruncated {
            available: available as u64,
        },
        FrameFault::Header(reason) => DamageKind::FrameHeader { reason },
        FrameFault::LengthOutOfBounds { len, available } => DamageKind::LengthOutOfBounds {
            len: u64::from(len),
            available: available as u64,
        },
        FrameFault::Checksum { stored, computed } => {
            DamageKind::RecordChecksum { stored, computed }
        }
    }
}

/// The next frame at or after `from` (8-aligned) that verifies under `seed` and carries an
/// LSN of at least `min_lsn`.
fn find_resume(bytes: &[u8], from: usize, min_lsn: Lsn, seed: Seed) -> Option<(usize, Lsn)> {
    let mut q = from;
    while q + FRAME_HEADER_BYTES <= bytes.len() {
        // Cheap filters before the checksum: a frame has a non-zero kind and a plausible LSN.
        if bytes[q + FRAME_KIND_OFFSET] != 0 {
            let lsn = le_u64(bytes, q + FRAME_LSN_OFFSET);
            if lsn >= min_lsn
                && let FrameCheck::Valid(h) = check_frame(&bytes[q..], seed)
            {
                return Some((q, h.lsn));
            }
        }
        q += FRAME_ALIGN;
    }
    None
}

/// [`nonzero_span`], examining the bytes in chunks and calling `passed` after each chunk that
/// is all zero (the pages behind can be released: the preallocated tail of a segment is most
/// of it).
fn nonzero_span_with(
    bytes: &[u8],
    from: usize,
    passed: &mut dyn FnMut(usize),
) -> Option<(usize, usize)> {
    let mut at = from;
    while at < bytes.len() {
        let end = (at + SCAN_PROGRESS_BYTES).min(bytes.len());
        if first_nonzero(&bytes[at..end]).is_some() {
            return nonzero_span(bytes, at);
        }
        passed(end);
        at = end;
    }
    None
}

/// The first non-zero byte at or after `from` and the end of the last non-zero byte of
/// `bytes`, or `None` if `bytes[from..]` is all zero.
pub fn nonzero_span(bytes: &[u8], from: usize) -> Option<(usize, usize)> {
    let rest = bytes.get(from..)?;
    let first = first_nonzero(rest)? + from;
    let last = last_nonzero(&bytes[first..]).map_or(first, |i| first + i) + 1;
    Some((first, last))
}

const ZERO_CHUNK: usize = 64;

fn first_nonzero(b: &[u8]) -> Option<usize> {
    let mut chunks = b.chunks_exact(ZERO_CHUNK);
    let mut at = 0;
    for c in chunks.by_ref() {
        if c.iter().fold(0u8, |a, &x| a | x) != 0 {
            return c.iter().position(|&x| x != 0).map(|i| at + i);
        }
        at += ZERO_CHUNK;
    }
    chunks
        .remainder()
        .iter()
        .position(|&x| x != 0)
        .map(|i| at + i)
}

fn last_nonzero(b: &[u8]) -> Option<usize> {
    let rem = b.len() % ZERO_CHUNK;
    let (head, tail) = b.split_at(b.len() - rem);
    if let Some(i) = tail.iter().rposition(|&x| x != 0) {
        return Some(head.len() + i);
    }
    let mut end = head.len();
    for c in head.rchunks_exact(ZERO_CHUNK) {
        end -= ZERO_CHUNK;
        if c.iter().fold(0u8, |a, &x| a | x) != 0 {
            return c.iter().rposition(|&x| x != 0).map(|i| end + i);
        }
    }
    None
}

const fn align_up(n: usize, a: usize) -> usize {
    (n + a - 1) & !(a - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{SegmentHeader, frame_bytes, seal_frame};
    use uuid::Uuid;

    struct Seg {
        bytes: Vec<u8>,
        input: ScanInput,
        offsets: Vec<usize>,
    }

    /// A segment with `n` records of `plen` bytes; record i claims `synced(i)`.
    fn segment(n: u64, plen: usize, synced: impl Fn(u64) -> u64) -> Seg {
        let header = SegmentHeader {
            journal_id: Uuid::from_bytes([5; 16]),
            segment_seq: 3,
            first_lsn: 10,
            segment_bytes: 65536,
        };
        let enc = header.encode();
        let mut bytes = vec![0u8; 65536];
        bytes[..enc.len()].copy_from_slice(&enc);
        let seed = Seed::new(header.journal_id, header.segment_seq);
        let mut prev = SegmentHeader::crc_of(&enc);
        let mut pos = SEGMENT_DATA_OFFSET;
        let mut offsets = vec![];
        for i in 0..n {
            let lsn = 10 + i;
            let payload = vec![(i % 251) as u8 + 1; plen];
            let h = seal_frame(seed, lsn, synced(lsn), prev, 1, &payload);
            prev = crate::format::le_u32(&h, 0);
            bytes[pos..pos + 32].copy_from_slice(&h);
            bytes[pos + 32..pos + 32 + plen].copy_from_slice(&payload);
            offsets.push(pos);
            pos += frame_bytes(plen);
        }
        Seg {
            bytes,
            input: ScanInput {
                seed,
                header_crc: SegmentHeader::crc_of(&enc),
                first_lsn: 10,
            },
            offsets,
        }
    }

    #[test]
    fn clean_segment() {
        let s = segment(100, 20, |l| l - 1);
        let scan = scan_segment(&s.bytes, s.input);
        assert!(scan.regions.is_empty());
        assert_eq!(scan.tail.records, 100);
        assert_eq!(scan.tail.next_lsn, 110);
        assert_eq!(scan.tail.end, s.offsets[99] + frame_bytes(20));
        assert_eq!(scan.index.floor(75), Some((74, s.offsets[64])));
    }

    #[test]
    fn flip_in_the_middle_is_proven_durable() {
        let mut s = segment(100, 20, |l| l - 1);
        s.bytes[s.offsets[50] + 40] ^= 1;
        let scan = scan_segment(&s.bytes, s.input);
        assert_eq!(scan.regions.len(), 1);
        let r = &scan.regions[0];
        assert_eq!(r.offset, s.offsets[50]);
        assert_eq!(r.end, s.offsets[51]);
        assert_eq!(r.resume_lsn, Some(61));
        assert!(r.proven_durable());
        assert_eq!(scan.tail.records, 99);
    }

    #[test]
    fn unsynced_hole_is_not_proven_durable() {
        // records from LSN 60 on claim only LSN 40 durable: a hole at 60 is a torn tail
        let mut s = segment(100, 20, |l| l.min(41) - 1);
        let at = s.offsets[50];
        s.bytes[at..at + 60].fill(0);
        let scan = scan_segment(&s.bytes, s.input);
        assert_eq!(scan.regions.len(), 1);
        assert!(!scan.regions[0].proven_durable());
        assert!(matches!(
            scan.regions[0].kind,
            DamageKind::TrailingGarbage { .. }
        ));
    }

    #[test]
    fn torn_last_record_has_no_resume() {
        let mut s = segment(10, 100, |l| l - 1);
        let at = s.offsets[9];
        s.bytes[at + 70..at + 132].fill(0);
        let scan = scan_segment(&s.bytes, s.input);
        assert_eq!(scan.regions.len(), 1);
        let r = &scan.regions[0];
        assert_eq!(r.resume_lsn, None);
        assert_eq!(r.offset, at);
        assert_eq!(scan.tail.records, 9);
        assert_eq!(scan.tail.end, at);
    }

    #[test]
    fn garbage_after_the_end() {
        let mut s = segment(3, 8, |l| l - 1);
        s.bytes[60_000] = 7;
        let scan = scan_segment(&s.bytes, s.input);
        assert_eq!(scan.regions.len(), 1);
        assert_eq!(scan.regions[0].end, 60_008);
        assert_eq!(scan.tail.records, 3);
    }

    #[test]
    fn truncate_at_region_rolls_back() {
        let mut s = segment(100, 20, |l| l.min(41) - 1);
        s.bytes[s.offsets[50] + 40] ^= 1;
        let mut scan = scan_segment(&s.bytes, s.input);
        assert_eq!(scan.tail.records, 99);
        scan.truncate_at_region(0);
        assert_eq!(scan.tail.records, 50);
        assert_eq!(scan.tail.next_lsn, 60);
        assert_eq!(scan.tail.end, s.offsets[50]);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let s = segment(5, 8, |l| l - 1);
        for len in [0, 1, 31, 4096, 4097, 4128, 5000] {
            let _ = scan_segment(&s.bytes[..len.min(s.bytes.len())], s.input);
            let junk: Vec<u8> = (0..len).map(|i| (i * 31 % 256) as u8).collect();
            let _ = scan_segment(&junk, s.input);
        }
    }

    #[test]
    fn nonzero_span_finds_both_ends() {
        let mut b = vec![0u8; 1000];
        assert_eq!(nonzero_span(&b, 0), None);
        b[130] = 1;
        b[700] = 2;
        assert_eq!(nonzero_span(&b, 0), Some((130, 701)));
        assert_eq!(nonzero_span(&b, 131), Some((700, 701)));
        assert_eq!(nonzero_span(&b, 2000), None);
    }
}
