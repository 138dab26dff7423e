//! The offline reader: records of a journal directory in LSN order without taking its lock,
//! each one checked as recovery checks it (checksum, LSN continuity, chain, zeros after the end
//! of a complete segment, segment length) and returned only if it is the one that must come
//! next; damage is named a torn tail only where recovery would name it so.

use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::error::{Corruption, DamageKind, Error, JournalError, Result};
use crate::format::{
    FRAME_ALIGN, FRAME_HEADER_BYTES, FrameCheck, Lsn, align_frame, check_frame, parse_frame_header,
};
use crate::journal::ack::AckFile;
use crate::journal::listing::{self, SegmentFile, read_full_at};
use crate::journal::offline::facts::journal_id_of;
use crate::journal::offline::window::{Stream, WINDOW_BYTES};
use crate::journal::reader::{Record, RecordRef};
use crate::journal::recovery::Evidence;
use crate::journal::scan::{Link, ScanInput, fault_kind, scan_segment};
use crate::segment::Access;

/// How far an [`OfflineReader`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Up to this LSN, which the journal's owner published as durable: the reader never uses a
    /// byte past that record's segment position unless its segment is complete.
    Durable(Lsn),
    /// To the end of a journal that nobody has open: every byte is checked, including the
    /// zeros after the last record.
    End,
}

/// What lies at the reader's position.
enum Here {
    /// A frame that verified and continues the chain (the chain has advanced past it).
    Frame { lsn: Lsn, kind: u8, end_lsn: Lsn },
    /// The end of the written data of this segment.
    End,
    /// Damage at `offset`.
    Damage { offset: u64, kind: DamageKind },
}

/// A reader of a journal directory that does not take the journal's lock. Records come out in
/// LSN order with strictly contiguous LSNs (a gap record stands for the LSNs it names), or the
/// reader fails with an error naming the damage or the LSN it expected.
pub struct OfflineReader {
    dir: PathBuf,
    journal_id: Uuid,
    /// Segment files from the last listing, and their first LSNs once their header was read.
    segs: Vec<(u64, PathBuf, Option<Lsn>)>,
    next_lsn: Lsn,
    until: Until,
    /// LSNs up to here are proven durable (acknowledged, or published in `HEAD`): damage at or
    /// below it is never a torn tail, and a journal that ends before it has lost records.
    evidence: Evidence,
    cur: Option<Stream>,
    /// The frame of the record last returned.
    frame: Vec<u8>,
}

impl std::fmt::Debug for OfflineReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfflineReader")
            .field("dir", &self.dir)
            .field("next_lsn", &self.next_lsn)
            .field("until", &self.until)
            .finish_non_exhaustive()
    }
}

impl OfflineReader {
    /// A reader of the journal in `dir`, positioned at `lsn` (the first record at or after it),
    /// reading as far as `until` says.
    pub fn open(dir: impl AsRef<Path>, lsn: Lsn, until: Until) -> Result<OfflineReader> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::Journal(JournalError::NotFound { dir }));
        }
        let journal_id = journal_id_of(&dir)?;
        let acked = AckFile::peek(&dir)?.map_or(0, |a| a.acked_lsn);
        let evidence = Evidence::gather(&dir, journal_id, acked, 0);
        let mut r = OfflineReader {
            dir,
            journal_id,
            segs: Vec::new(),
            next_lsn: lsn.max(1),
            until,
            evidence,
            cur: None,
            frame: Vec::new(),
        };
        r.relist()?;
        r.note_until();
        Ok(r)
    }

    /// The journal's UUID.
    pub fn journal_id(&self) -> Uuid {
        self.journal_id
    }

    /// The LSN the reader returns next.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Records after `limit` are not returned: the owner has published `limit` as durable.
    pub fn set_limit(&mut self, limit: Lsn) {
        self.until = Until::Durable(limit);
        self.note_until();
    }

    fn note_until(&mut self) {
        if let Until::Durable(l) = self.until
            && l > self.evidence.lsn
        {
            self.evidence = Evidence {
                lsn: l,
                proof: "the owner's published durable LSN (HEAD)",
            };
        }
    }

    /// Repositions the reader.
    pub fn seek(&mut self, lsn: Lsn) {
        self.next_lsn = lsn.max(1);
        self.cur = None;
    }

    /// Lists the directory again (new segments appear at the end, retired ones disappear from
    /// the front), keeping what is known of the segments still there.
    fn relist(&mut self) -> Result<()> {
        let listing = listing::list(&self.dir)?;
        let old = std::mem::take(&mut self.segs);
        self.segs = listing
            .segments
            .into_iter()
            .map(|(seq, path)| {
                let first = old.iter().find(|s| s.0 == seq).and_then(|s| s.2);
                (seq, path, first)
            })
            .collect();
        Ok(())
    }

    /// Opens the `i`-th listed segment and remembers its first LSN.
    fn open_seg(&mut self, i: usize) -> Result<SegmentFile> {
        let (seq, path, _) = &self.segs[i];
        let seg = SegmentFile::open(*seq, path, Some(self.journal_id), Access::Read)?;
        seg.check_length()?;
        self.segs[i].2 = Some(seg.header.first_lsn);
        Ok(seg)
    }

    fn first_lsn_of(&mut self, i: usize) -> Result<Lsn> {
        match self.segs[i].2 {
            Some(l) => Ok(l),
            None => Ok(self.open_seg(i)?.header.first_lsn),
        }
    }

    /// Positions `cur` on the segment holding `next_lsn` (found by binary search over the
    /// headers, each read at most once). `Ok(false)` if the journal has no segment.
    fn locate(&mut self) -> Result<bool> {
        for _ in 0..3 {
            match self.try_locate() {
                // Retired between the listing and the open: list again.
                Err(Error::Journal(JournalError::Io { source, .. }))
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    self.relist()?;
                }
                other => return other,
            }
        }
        self.try_locate()
    }

    fn try_locate(&mut self) -> Result<bool> {
        if self.segs.is_empty() {
            return Ok(false);
        }
        let first = self.first_lsn_of(0)?;
        if self.next_lsn < first {
            return Err(Error::Journal(JournalError::Retired {
                lsn: self.next_lsn,
                first_retained: first,
            }));
        }
        // The last segment whose first LSN is at or below `next_lsn`.
        let (mut lo, mut hi) = (0, self.segs.len());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.first_lsn_of(mid)? <= self.next_lsn {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let seg = self.open_seg(lo)?;
        self.cur = Some(Stream::new(seg));
        Ok(true)
    }

    /// True if a segment after the current one is in the listing.
    fn has_next_segment(&self, seq: u64) -> bool {
        self.segs.last().is_some_and(|s| s.0 > seq)
    }

    /// The LSN up to which a window read now may be trusted.
    fn trust_now(&self, seq: u64) -> Lsn {
        match self.until {
            Until::End => Lsn::MAX,
            // A later segment exists: this one was complete, and synced, before it was created.
            Until::Durable(_) if self.has_next_segment(seq) => Lsn::MAX,
            Until::Durable(l) => l,
        }
    }

    /// Examines the frame at the current position.
    fn here(&mut self) -> Result<Here> {
        let seq = self.cur.as_ref().expect("positioned").seg.seq;
        let trust = self.trust_now(seq);
        let cur = self.cur.as_mut().expect("positioned");
        if cur.chain.next_lsn > cur.win_trusted {
            // The window was read before this record was known durable: read it again.
            cur.forget_window();
        }
        let pos = cur.pos;
        let avail = (cur.seg.len - pos) as usize;
        let head = cur.load(pos, FRAME_HEADER_BYTES, trust)?;
        if head.len() < FRAME_HEADER_BYTES || head.iter().all(|&b| b == 0) {
            return Ok(if head.iter().all(|&b| b == 0) {
                Here::End
            } else {
                Here::Damage {
                    offset: pos,
                    kind: DamageKind::FrameTruncated {
                        available: head.len() as u64,
                    },
                }
            });
        }
        let header = match parse_frame_header(head, avail - FRAME_HEADER_BYTES) {
            Ok(h) => h,
            Err(fault) => {
                return Ok(Here::Damage {
                    offset: pos,
                    kind: fault_kind(fault),
                });
            }
        };
        let fb = align_frame(FRAME_HEADER_BYTES + header.payload_len as usize).min(avail);
        if fb > WINDOW_BYTES && !cur.verify_in_pieces(fb, trust)? {
            // A large frame that does not verify: report it without reading it whole.
            return Ok(Here::Damage {
                offset: pos,
                kind: DamageKind::FrameHeader {
                    reason: "large record does not verify (checksum or padding)",
                },
            });
        }
        let seed = cur.seed;
        let mut chain = cur.chain;
        let bytes = cur.load(pos, fb, trust)?;
        let h = match check_frame(bytes, seed) {
            FrameCheck::Valid(h) => h,
            FrameCheck::End => return Ok(Here::End),
            FrameCheck::Invalid(fault) => {
                return Ok(Here::Damage {
                    offset: pos,
                    kind: fault_kind(fault),
                });
            }
        };
        let payload = &bytes[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + h.payload_len as usize];
        match chain.accept(&h, payload) {
            Err(kind) => Ok(Here::Damage { offset: pos, kind }),
            Ok(link) => {
                self.frame.clear();
                self.frame
                    .extend_from_slice(&bytes[..h.frame_bytes().min(bytes.len())]);
                cur.chain = chain;
                cur.pos = pos + fb as u64;
                Ok(Here::Frame {
                    lsn: h.lsn,
                    kind: h.kind,
                    end_lsn: match link {
                        Link::Gap { end } => end,
                        Link::Record => h.lsn + 1,
                    },
                })
            }
        }
    }

    /// The current segment ended at the position: every byte after it must be zero.
    fn check_zeros_to_end(&mut self) -> Result<()> {
        let cur = self.cur.as_mut().expect("positioned");
        match cur.nonzero_to_end()? {
            None => Ok(()),
            Some((first, last_end)) => {
                let offset = first & !(FRAME_ALIGN as u64 - 1);
                Err(self.damage(
                    offset,
                    DamageKind::TrailingGarbage {
                        len: last_end - first,
                    },
                ))
            }
        }
    }

    /// Moves from the complete current segment to the next one, checking that it is the next
    /// sequence number and continues the LSNs.
    fn next_segment(&mut self) -> Result<()> {
        let (seq, expected) = {
            let cur = self.cur.as_ref().expect("positioned");
            (cur.seg.seq, cur.chain.next_lsn)
        };
        let i = self
            .segs
            .iter()
            .position(|s| s.0 > seq)
            .expect("a next segment is listed");
        if self.segs[i].0 != seq + 1 {
            return Err(Error::Journal(JournalError::MissingSegment {
                dir: self.dir.clone(),
                seq: seq + 1,
                before: seq,
                after: self.segs[i].0,
            }));
        }
        let seg = self.open_seg(i)?;
        if seg.header.first_lsn != expected {
            return Err(Error::corrupt(
                &seg.path,
                0,
                DamageKind::SegmentDiscontinuity {
                    expected,
                    found: seg.header.first_lsn,
                },
            ));
        }
        self.cur = Some(Stream::new(seg));
        Ok(())
    }

    /// The error for damage at `offset` of the current segment, named as a torn tail only if
    /// nothing proves that the damaged records had been durable (as recovery classifies it).
    fn damage(&self, offset: u64, kind: DamageKind) -> Error {
        let cur = self.cur.as_ref().expect("positioned");
        let mut torn_tail = false;
        if self.until == Until::End
            && !self.has_next_segment(cur.seg.seq)
            && cur.chain.next_lsn > self.evidence.lsn
        {
            // The last segment of a closed journal: a later valid frame that claims the damaged
            // records durable makes it damage in the middle, as in recovery.
            let mut bytes = vec![0u8; cur.seg.len as usize];
            if read_full_at(&cur.seg.file, &mut bytes, 0).is_ok() {
                let scan = scan_segment(
                    &bytes,
                    ScanInput {
                        seed: cur.seed,
                        header_crc: cur.seg.header_crc,
                        first_lsn: cur.seg.header.first_lsn,
                    },
                );
                torn_tail = scan
                    .regions
                    .iter()
                    .find(|r| r.offset as u64 <= offset && offset < r.end.max(r.offset + 1) as u64)
                    .is_some_and(|r| !r.proven_durable());
            }
        }
        Error::Journal(JournalError::Corrupt(Box::new(Corruption {
            segment: cur.seg.path.clone(),
            offset,
            kind,
            torn_tail,
        })))
    }

    /// The next record, borrowed; `Ok(None)` when there is none (yet) within the bound. Gap
    /// records are returned too ([`RecordRef::gap`]).
    ///
    /// # Errors
    ///
    /// [`JournalError::Corrupt`] for damage (a torn tail is named as such), with the segment and the
    /// offset; [`JournalError::Discontinuity`] if a record the owner published as durable is not
    /// there; [`JournalError::MissingSegment`], [`JournalError::Retired`], foreign and unsafe files, I/O.
    pub fn next_ref(&mut self) -> Result<Option<RecordRef<'_>>> {
        loop {
            if let Until::Durable(l) = self.until
                && self.next_lsn > l
            {
                return Ok(None);
            }
            if self.cur.is_none() && !self.locate()? {
                return Ok(None);
            }
            match self.here()? {
                Here::Frame { lsn, kind, end_lsn } => {
                    if end_lsn <= self.next_lsn {
                        continue; // before the position asked for
                    }
                    self.next_lsn = end_lsn;
                    let plen = crate::format::le_u32(&self.frame, 4) as usize;
                    return Ok(Some(RecordRef {
                        lsn,
                        kind,
                        payload: &self.frame[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + plen],
                    }));
                }
                Here::Damage { offset, kind } => return Err(self.damage(offset, kind)),
                Here::End => {
                    let seq = self.cur.as_ref().expect("positioned").seg.seq;
                    if !self.has_next_segment(seq) {
                        // A record may have gone to a segment created since the listing.
                        self.relist()?;
                    }
                    if self.has_next_segment(seq) {
                        let cur = self.cur.as_mut().expect("positioned");
                        if cur.win_trusted != Lsn::MAX {
                            // Read before the segment was known complete: read it again.
                            cur.forget_window();
                            continue;
                        }
                        self.check_zeros_to_end()?;
                        self.next_segment()?;
                        continue;
                    }
                    let expected = self.cur.as_ref().expect("positioned").chain.next_lsn;
                    return match self.until {
                        Until::End => {
                            self.check_zeros_to_end()?;
                            if expected <= self.evidence.lsn {
                                // The journal ends before records proven durable.
                                let pos = self.cur.as_ref().expect("positioned").pos;
                                return Err(self.damage(
                                    pos,
                                    DamageKind::MissingDurable {
                                        next_lsn: expected,
                                        durable_lsn: self.evidence.lsn,
                                        proof: self.evidence.proof,
                                    },
                                ));
                            }
                            Ok(None)
                        }
                        // HEAD says the record is durable, yet it is not there.
                        Until::Durable(l) if expected <= l => {
                            Err(Error::Journal(JournalError::Discontinuity {
                                dir: self.dir.clone(),
                                expected,
                                found: None,
                            }))
                        }
                        Until::Durable(_) => Ok(None),
                    };
                }
            }
        }
    }

    /// The next record, owned.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        Ok(self.next_ref()?.map(|r| r.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_record_is_returned_once_with_its_range() {
        // Exercised end to end by the salvage and CLI tests; here: the bound is respected.
        let dir = tempfile::tempdir().unwrap();
        let j = crate::journal::Journal::open(dir.path(), crate::journal::JournalOptions::new())
            .unwrap();
        for i in 0..5u8 {
            j.append(&[i + 1]).unwrap();
        }
        let mut r = OfflineReader::open(dir.path(), 1, Until::Durable(3)).unwrap();
        let mut seen = vec![];
        while let Some(rec) = r.next_ref().unwrap() {
            seen.push(rec.lsn);
        }
        assert_eq!(seen, [1, 2, 3]);
        r.set_limit(5);
        while let Some(rec) = r.next_ref().unwrap() {
            seen.push(rec.lsn);
        }
        assert_eq!(seen, [1, 2, 3, 4, 5]);
        drop(j);
        let mut r = OfflineReader::open(dir.path(), 2, Until::End).unwrap();
        assert_eq!(r.next_ref().unwrap().unwrap().lsn, 2);
    }
}
