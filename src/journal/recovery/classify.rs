//! Classifying damage: the segments are checked against each other (consecutive sequence
//! numbers, continuous LSNs, the first one no later than the acknowledgement allows) and every
//! damaged region is named a torn tail — a write that never completed, safe to cut — or damage
//! in the middle, which only salvage may replace by a gap record.
//!
//! The rule (`journal-format.md` section 9, step 4): a region is a torn tail iff it is in the
//! last segment and nothing proves that it held durable records. Proof comes from inside the
//! journal (a later valid frame's `synced_lsn` claims it) or from outside it ([`Evidence`]: the
//! acknowledgement, the owner's `HEAD`, the target's watermark). A crash leaves at most a torn
//! tail (section 9.1); records proven durable that are damaged or missing — a sealed segment
//! truncated and re-extended, a last segment that ends cleanly below the evidence — were lost
//! after they were written, and handing their LSNs to new appends would reuse LSNs that the
//! target may already hold.

use std::ops::Range;
use std::path::Path;

use uuid::Uuid;

use crate::error::{Corruption, DamageKind, Error, JournalError, Result};
use crate::format::{LSN_MAX, Lsn, frame_bytes};
use crate::journal::recovery::examine::Examined;
use crate::journal::scan::DamagedRegion;

/// A damaged region, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub segment: usize,
    pub region: DamagedRegion,
    pub torn_tail: bool,
    /// LSNs lost in the region (for damage in the middle).
    pub lost: Range<Lsn>,
}

impl Finding {
    pub(crate) fn to_error(&self, path: &Path) -> Error {
        Error::Journal(JournalError::Corrupt(Box::new(Corruption {
            segment: path.to_path_buf(),
            offset: self.region.offset as u64,
            kind: self.region.kind.clone(),
            torn_tail: self.torn_tail,
        })))
    }
}

/// Proof, from outside the records, that every LSN up to `lsn` was durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Evidence {
    /// The highest LSN proven durable (0: none).
    pub lsn: Lsn,
    /// What proves it.
    pub proof: &'static str,
}

impl Evidence {
    /// The strongest of the journal's own proofs: the acknowledgement (an acknowledged record
    /// was durable, invariant 6), the durable LSN its owner last published in `HEAD`, and a
    /// caller's (the target's watermark, which only durable records can reach).
    pub(crate) fn gather(dir: &Path, journal_id: Uuid, acked: Lsn, known: Lsn) -> Evidence {
        let head = crate::journal::head::read_head(dir, journal_id).map_or(0, |h| h.durable_lsn);
        [
            (acked, "the acknowledgement (ACK)"),
            (head, "the owner's published durable LSN (HEAD)"),
            (known, "the target's watermark"),
        ]
        .into_iter()
        .filter(|&(lsn, _)| lsn <= LSN_MAX)
        .max_by_key(|&(lsn, _)| lsn)
        .map_or(Evidence { lsn: 0, proof: "" }, |(lsn, proof)| Evidence {
            lsn,
            proof,
        })
    }
}

/// Checks the segments against each other and classifies every damaged region. A region is
/// a torn tail iff it is in the last segment and nothing proves it was durable: no later
/// record claims it, and its first LSN is beyond `evidence`. A journal whose records end at
/// or below `evidence` has lost records: that is damage too (a region at the end of the last
/// segment), never a place where new appends may reuse LSNs the evidence has seen.
pub(crate) fn classify(dir: &Path, segs: &[Examined], evidence: Evidence) -> Result<Vec<Finding>> {
    let acked = evidence.lsn;
    let mut missing_tails: Vec<(usize, DamagedRegion)> = Vec::new();
    for (w_index, w) in segs.windows(2).enumerate() {
        let (a, b) = (&w[0], &w[1]);
        if b.seq != a.seq + 1 {
            return Err(Error::Journal(JournalError::MissingSegment {
                dir: dir.to_path_buf(),
                seq: a.seq + 1,
                before: a.seq,
                after: b.seq,
            }));
        }
        let trailing = a
            .scan
            .regions
            .last()
            .is_some_and(|r| r.resume_lsn.is_none());
        let expected = a.scan.tail.next_lsn;
        if b.header.first_lsn > expected && !trailing {
            // The sealed segment ends cleanly, but records are missing after its end (it was
            // truncated by someone and re-extended by salvage, or zeroed): a damaged region of
            // its own, in the zero space after the last record.
            let end = (a.scan.tail.end + frame_bytes(8)).min(a.header.segment_bytes as usize);
            missing_tails.push((
                w_index,
                DamagedRegion {
                    offset: a.scan.tail.end,
                    end,
                    kind: DamageKind::SegmentDiscontinuity {
                        expected,
                        found: b.header.first_lsn,
                    },
                    before: a.scan.tail,
                    resume_lsn: None,
                    claimed_after: 0,
                },
            ));
        }
        if b.header.first_lsn < expected {
            return Err(Error::corrupt(
                &b.path,
                0,
                DamageKind::SegmentDiscontinuity {
                    expected,
                    found: b.header.first_lsn,
                },
            ));
        }
    }
    let mut findings = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        let extra = missing_tails
            .iter()
            .filter(|(j, _)| *j == i)
            .map(|(_, r)| r);
        for r in seg.scan.regions.iter().chain(extra) {
            let torn_tail = last && !r.proven_durable() && r.before.next_lsn > acked;
            let lost_end = match r.resume_lsn {
                Some(l) => l,
                None if !last => segs[i + 1].header.first_lsn,
                // Records up to the evidence existed: the region stands for them.
                None => r.before.next_lsn.max(acked.saturating_add(1)),
            };
            findings.push(Finding {
                segment: i,
                region: r.clone(),
                torn_tail,
                lost: r.before.next_lsn..lost_end.max(r.before.next_lsn),
            });
        }
    }
    // Records proven durable missing after the last valid record (and no damaged region
    // there to stand for them): lost, not a place to append.
    if let Some(seg) = segs.last() {
        let tail = seg.scan.tail;
        let trailing = seg
            .scan
            .regions
            .last()
            .is_some_and(|r| r.resume_lsn.is_none());
        if !trailing && tail.next_lsn <= acked {
            let end = (tail.end + frame_bytes(8)).min(seg.header.segment_bytes as usize);
            findings.push(Finding {
                segment: segs.len() - 1,
                region: DamagedRegion {
                    offset: tail.end,
                    end,
                    kind: DamageKind::MissingDurable {
                        next_lsn: tail.next_lsn,
                        durable_lsn: evidence.lsn,
                        proof: evidence.proof,
                    },
                    before: tail,
                    resume_lsn: None,
                    claimed_after: 0,
                },
                torn_tail: false,
                lost: tail.next_lsn..acked + 1,
            });
        }
    }
    Ok(findings)
}

/// Checks the first segment against the acknowledgement. Segments are removed only once
/// acknowledged: the first retained one starts at most one past the acknowledgement.
/// (Without a readable `ACK` there is nothing to compare; salvage recreates it at
/// `first_lsn - 1`.)
pub(crate) fn check_retained_start(segs: &[Examined], acked: Option<Lsn>) -> Result<()> {
    let (Some(acked), Some(first)) = (acked, segs.first()) else {
        return Ok(());
    };
    let first_lsn = first.header.first_lsn;
    if first_lsn > acked.saturating_add(1) {
        return Err(Error::corrupt(
            &first.path,
            0,
            DamageKind::SegmentDiscontinuity {
                expected: acked.saturating_add(1),
                found: first_lsn,
            },
        ));
    }
    Ok(())
}
