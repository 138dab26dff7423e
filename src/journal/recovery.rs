//! Opening a journal directory: list and verify every segment, classify each damaged region as
//! a torn tail or damage in the middle, act on it according to the [`RecoveryMode`], and report.
//!
//! The same examination, without repairs, serves `verify` ([`crate::inspect`]).

use crate::error::JournalError;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::error::{Corruption, DamageKind, Error, Result};
use crate::fault::{FaultInjector, IoOp};
use crate::format::Lsn;
use crate::format::{
    FRAME_HEADER_BYTES, KIND_GAP, LSN_MAX, Seed, SegmentHeader, frame_bytes, seal_frame,
};
use crate::journal::ack::AckFile;
use crate::journal::index::SparseIndex;
use crate::journal::listing::{self, SegmentFile, read_full_at};
use crate::journal::options::{JournalOptions, RecoveryMode};
use crate::journal::scan::{
    DamagedRegion, ScanInput, ScanPoint, SegmentScan, nonzero_span, scan_segment, scan_segment_with,
};
use crate::segment::{Access, FORENSICS_DIR, ReadMap, allocate, inject, open_segment_rw, sync_dir};

/// What `open` found and did. Logged through `tracing` at `info` (or `warn` if anything was
/// cut or skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// The journal's UUID.
    pub journal_id: Uuid,
    /// True if `open` created a new, empty journal.
    pub created: bool,
    /// Segments found (after recovery).
    pub segments: usize,
    /// Valid records found (gap records excluded).
    pub records: u64,
    /// Bytes of valid frames.
    pub bytes: u64,
    /// LSN of the first retained record (or of the next record, if there is none).
    pub first_lsn: Lsn,
    /// LSN the next append will get.
    pub next_lsn: Lsn,
    /// The acknowledged LSN read from `ACK`.
    pub acked_lsn: Lsn,
    /// Regions cut (torn tails) or replaced by gap records (salvage).
    pub cuts: Vec<Cut>,
    /// Total bytes cut or replaced.
    pub bytes_cut: u64,
    /// LSN ranges lost in this recovery (salvage only).
    pub skipped: Vec<Range<Lsn>>,
    /// Every gap in the journal, including ones left by earlier salvages.
    pub gaps: Vec<Range<Lsn>>,
    /// Leftover `.tmp` files of interrupted segment creations that were removed.
    pub removed_tmp_files: usize,
    /// Segments that someone had truncated and that salvage re-extended to their length.
    pub extended: Vec<PathBuf>,
    /// The highest LSN proven durable by something other than the records themselves (the
    /// acknowledgement, the owner's `HEAD`, the target's watermark), and which proof it was.
    pub proven_durable_lsn: Lsn,
    /// Time the recovery took.
    pub duration: Duration,
}

/// One region that recovery cut or replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cut {
    /// The segment file.
    pub segment: PathBuf,
    /// First byte of the region.
    pub offset: u64,
    /// Length of the region.
    pub len: u64,
    /// What was wrong at `offset`.
    pub kind: DamageKind,
    /// True for a torn tail (zeroed), false for damage in the middle (replaced by a gap record).
    pub torn_tail: bool,
    /// Complete records that lay inside the region and were dropped (a torn tail can contain
    /// records written after the torn one but never confirmed durable).
    pub records_dropped: u64,
    /// Where the original bytes were saved, if `keep_cut_bytes` is on.
    pub saved_to: Option<PathBuf>,
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "journal {}{}: {} segments, {} records ({} bytes), {}, acknowledged {}",
            self.journal_id,
            if self.created { " (new)" } else { "" },
            self.segments,
            self.records,
            self.bytes,
            if self.next_lsn > self.first_lsn {
                crate::error::lsn_span(&(self.first_lsn..self.next_lsn))
            } else {
                format!("no records (next LSN {})", self.next_lsn)
            },
            self.acked_lsn
        )?;
        if !self.cuts.is_empty() {
            write!(
                f,
                "; cut {} bytes in {} regions",
                self.bytes_cut,
                self.cuts.len()
            )?;
        }
        for r in &self.skipped {
            write!(f, "; {} lost (now a gap record)", crate::error::lsn_span(r))?;
        }
        if !self.extended.is_empty() {
            write!(
                f,
                "; re-extended {} truncated segment(s)",
                self.extended.len()
            )?;
        }
        write!(f, " in {:.1?}", self.duration)
    }
}

/// The result of a successful recovery, handed to the writer.
pub(crate) struct Recovered {
    pub journal_id: Uuid,
    pub segments: Vec<RecoveredSegment>,
    pub ack: AckFile,
    pub report: RecoveryReport,
}

/// One segment after recovery.
pub(crate) struct RecoveredSegment {
    pub seq: u64,
    pub path: PathBuf,
    pub header: SegmentHeader,
    pub index: SparseIndex,
    pub tail: ScanPoint,
}

/// A segment file's bytes: mapped when nobody can write it, copied otherwise.
pub(crate) enum SegmentBytes {
    Mapped(ReadMap),
    Owned(Vec<u8>),
}

impl SegmentBytes {
    pub(crate) fn read(file: &File, path: &Path, len: u64, map: bool) -> Result<SegmentBytes> {
        if map {
            return ReadMap::open(file, len)
                .map(SegmentBytes::Mapped)
                .map_err(|e| Error::io("map segment", path, e));
        }
        let mut buf = vec![0u8; len as usize];
        read_full_at(file, &mut buf, 0).map_err(|e| Error::io("read segment", path, e))?;
        Ok(SegmentBytes::Owned(buf))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            SegmentBytes::Mapped(m) => m.bytes(),
            SegmentBytes::Owned(v) => v,
        }
    }
}

/// A segment whose header verified, with its scan.
pub(crate) struct Examined {
    pub seq: u64,
    pub path: PathBuf,
    pub header: SegmentHeader,
    pub scan: SegmentScan,
    pub bytes: SegmentBytes,
    /// The segment was shorter than its header says and was re-extended (salvage).
    pub extended: bool,
}

/// [`examine`] without a map and without repairs, reading the segment into `buf` (reused).
pub(crate) fn examine_into(
    seq: u64,
    path: &Path,
    expected_id: Option<Uuid>,
    buf: &mut Vec<u8>,
) -> Result<Examined> {
    examine_with(
        seq,
        path,
        expected_id,
        Read::Into(std::mem::take(buf)),
        false,
    )
}

/// How `examine` gets a segment's bytes.
enum Read {
    Map,
    Into(Vec<u8>),
}

/// Reads, verifies and scans one segment. `expected_id` is the journal's UUID if known.
/// With `extend_truncated`, a segment shorter than its header says is re-extended (salvage).
pub(crate) fn examine(
    seq: u64,
    path: &Path,
    expected_id: Option<Uuid>,
    map: bool,
    extend_truncated: bool,
) -> Result<Examined> {
    let how = if map {
        Read::Map
    } else {
        Read::Into(Vec::new())
    };
    examine_with(seq, path, expected_id, how, extend_truncated)
}

fn examine_with(
    seq: u64,
    path: &Path,
    expected_id: Option<Uuid>,
    how: Read,
    extend_truncated: bool,
) -> Result<Examined> {
    let SegmentFile {
        file,
        mut len,
        header,
        header_crc,
        ..
    } = SegmentFile::open(seq, path, expected_id, Access::Read)?;
    let mut extended = false;
    if len != header.segment_bytes {
        // The header's length was range-checked when it was decoded.
        if extend_truncated && len < header.segment_bytes {
            let rw = open_segment_rw(path)?;
            allocate(&rw, header.segment_bytes)
                .map_err(|e| Error::io("extend segment", path, e))?;
            rw.sync_all()
                .map_err(|e| Error::io("fsync segment", path, e))?;
            tracing::warn!(segment = %path.display(), from = len, to = header.segment_bytes, "re-extended a truncated segment");
            len = header.segment_bytes;
            extended = true;
        } else {
            return Err(Error::corrupt(
                path,
                0,
                DamageKind::SegmentLength {
                    expected: header.segment_bytes,
                    actual: len,
                },
            ));
        }
    }
    let bytes = match how {
        Read::Map => SegmentBytes::read(&file, path, len, true)?,
        Read::Into(mut buf) => {
            // Every byte is overwritten by the read (or zeroed past the end of the file).
            buf.resize(len as usize, 0);
            read_full_at(&file, &mut buf, 0).map_err(|e| Error::io("read segment", path, e))?;
            SegmentBytes::Owned(buf)
        }
    };
    let input = ScanInput {
        seed: Seed::new(header.journal_id, seq),
        header_crc,
        first_lsn: header.first_lsn,
    };
    let scan = match &bytes {
        // Drop the pages behind the scan: resident memory stays at a few MiB per segment.
        SegmentBytes::Mapped(map) => {
            let mut released = 0;
            let scan = scan_segment_with(map.bytes(), input, &mut |at| {
                map.release(released, at);
                released = at;
            });
            map.release(0, len as usize);
            scan
        }
        SegmentBytes::Owned(v) => scan_segment(v, input),
    };
    Ok(Examined {
        seq,
        path: path.to_path_buf(),
        header,
        scan,
        bytes,
        extended,
    })
}

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

/// A repair to make to a segment file.
enum Repair {
    Zero {
        seg: usize,
        offset: usize,
        end: usize,
    },
    Gap {
        seg: usize,
        offset: usize,
        end: usize,
        lsn: Lsn,
        end_lsn: Lsn,
        prev_crc: u32,
    },
}

/// Recovers the journal in `dir` (whose lock the caller holds).
pub(crate) fn recover(dir: &Path, opts: &JournalOptions) -> Result<Recovered> {
    let started = Instant::now();
    let faults = opts.faults.as_deref();
    let mode = opts.recovery_mode;
    let listing = listing::list(dir)?;
    let removed_tmp_files = listing.tmp_files.len();
    for tmp in &listing.tmp_files {
        match fs::remove_file(tmp) {
            Ok(()) => {}
            // Gone already: nothing to remove.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove leftover temporary file", tmp, e)),
        }
    }
    if removed_tmp_files > 0 {
        sync_dir(dir, faults)?;
    }

    let ack = if listing.has_ack {
        match AckFile::open(dir) {
            Ok(a) => a,
            Err(e) if mode == RecoveryMode::Salvage && e.is_corruption() => {
                tracing::warn!(error = %e, "acknowledgement file unreadable; recreating it");
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };

    if listing.segments.is_empty() {
        return create_fresh(dir, opts, ack, removed_tmp_files, started);
    }

    let expected_id = ack.as_ref().map(|a| a.current().journal_id);
    let mut segs = Vec::with_capacity(listing.segments.len());
    for (seq, path) in &listing.segments {
        let id = expected_id.or_else(|| segs.first().map(|s: &Examined| s.header.journal_id));
        segs.push(examine(
            *seq,
            path,
            id,
            true,
            mode == RecoveryMode::Salvage,
        )?);
    }
    let journal_id = segs[0].header.journal_id;
    let extended: Vec<PathBuf> = segs
        .iter()
        .filter(|s| s.extended)
        .map(|s| s.path.clone())
        .collect();
    let acked = ack.as_ref().map_or(0, |a| a.current().acked_lsn);
    let evidence = Evidence::gather(dir, journal_id, acked, opts.known_durable_lsn);
    let findings = classify(dir, &segs, evidence)?;
    // Only damaged segments' bytes are needed again (for repairs): unmap the others now.
    for (i, seg) in segs.iter_mut().enumerate() {
        if !findings.iter().any(|f| f.segment == i) {
            seg.bytes = SegmentBytes::Owned(Vec::new());
        }
    }

    let first_lsn = segs[0].header.first_lsn;
    // Segments are removed only once acknowledged: the first retained one starts at most one
    // past the acknowledgement. (Without a readable ACK there is nothing to compare; salvage
    // recreates it at `first_lsn - 1` below.)
    if ack.is_some() && first_lsn > acked.saturating_add(1) {
        return Err(Error::corrupt(
            &segs[0].path,
            0,
            DamageKind::SegmentDiscontinuity {
                expected: acked.saturating_add(1),
                found: first_lsn,
            },
        ));
    }

    // Decide.
    let mut repairs = Vec::new();
    let mut skipped = Vec::new();
    let mut cuts = Vec::new();
    let mut handled_tail = false;
    for f in &findings {
        let seg = &segs[f.segment];
        if mode == RecoveryMode::AbsoluteConsistency
            || (mode == RecoveryMode::TolerateTornTail && !f.torn_tail)
        {
            return Err(f.to_error(&seg.path));
        }
        if f.torn_tail {
            if handled_tail {
                continue;
            }
            handled_tail = true;
            let bytes = seg.bytes.bytes();
            let end = nonzero_span(bytes, f.region.offset).map_or(f.region.end, |(_, e)| {
                ((e + 7) & !7).min(bytes.len()).max(f.region.end)
            });
            cuts.push(Cut {
                segment: seg.path.clone(),
                offset: f.region.offset as u64,
                len: (end - f.region.offset) as u64,
                kind: f.region.kind.clone(),
                torn_tail: true,
                records_dropped: seg.scan.tail.records - f.region.before.records,
                saved_to: None,
            });
            repairs.push(Repair::Zero {
                seg: f.segment,
                offset: f.region.offset,
                end,
            });
        } else {
            // Salvage of damage in the middle.
            let r = &f.region;
            // After a region with nothing valid behind it in its segment, everything is zero:
            // a gap record may run past the region's end if the region is too short for one.
            let end = if r.resume_lsn.is_none() {
                r.end
                    .max(r.offset + frame_bytes(8))
                    .min(seg.header.segment_bytes as usize)
            } else {
                r.end
            };
            if f.lost.is_empty() && r.resume_lsn.is_none() {
                repairs.push(Repair::Zero {
                    seg: f.segment,
                    offset: r.offset,
                    end: r.end,
                });
            } else {
                if end - r.offset < frame_bytes(8) {
                    return Err(Error::corrupt(
                        &seg.path,
                        r.offset as u64,
                        DamageKind::Unsalvageable {
                            len: (end - r.offset) as u64,
                        },
                    ));
                }
                repairs.push(Repair::Gap {
                    seg: f.segment,
                    offset: r.offset,
                    end,
                    lsn: f.lost.start,
                    end_lsn: f.lost.end,
                    prev_crc: r.before.last_crc,
                });
                if !f.lost.is_empty() {
                    skipped.push(f.lost.clone());
                }
            }
            cuts.push(Cut {
                segment: seg.path.clone(),
                offset: r.offset as u64,
                len: (end - r.offset) as u64,
                kind: r.kind.clone(),
                torn_tail: false,
                records_dropped: 0,
                saved_to: None,
            });
        }
    }

    // Keep the bytes we are about to overwrite, then repair.
    if !repairs.is_empty() {
        for (cut, repair) in cuts.iter_mut().zip(&repairs) {
            let (seg, offset, end) = match *repair {
                Repair::Zero { seg, offset, end }
                | Repair::Gap {
                    seg, offset, end, ..
                } => (seg, offset, end),
            };
            if opts.keep_cut_bytes {
                let s = &segs[seg];
                cut.saved_to = Some(save_cut(
                    dir,
                    s.seq,
                    offset,
                    &s.bytes.bytes()[offset..end],
                    faults,
                )?);
            }
        }
        let touched: Vec<usize> = {
            let mut v: Vec<usize> = repairs
                .iter()
                .map(|r| match r {
                    Repair::Zero { seg, .. } | Repair::Gap { seg, .. } => *seg,
                })
                .collect();
            v.dedup();
            v
        };
        // Drop the read maps of the segments we write, then write with pwrite.
        for &i in &touched {
            segs[i].bytes = SegmentBytes::Owned(Vec::new());
        }
        for repair in &repairs {
            apply_repair(&segs, repair, faults)?;
        }
        for &i in &touched {
            let s = &segs[i];
            let again = examine(s.seq, &s.path, Some(journal_id), true, false)?;
            if let Some(r) = again.scan.regions.first() {
                return Err(Error::corrupt(&s.path, r.offset as u64, r.kind.clone()));
            }
            segs[i] = again;
        }
    }

    // Everything recovered is made durable before it is used: a previous writer may have
    // crashed before syncing its last records.
    let last = segs.last().expect("at least one segment");
    let file = open_segment_rw(&last.path)?;
    allocate(&file, last.header.segment_bytes)
        .map_err(|e| Error::io("reserve segment space", &last.path, e))?;
    inject(faults, IoOp::SyncData, &last.path)
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::io_unmapped("fsync segment", &last.path, e))?;

    let ack = match ack {
        Some(a) => a,
        None => {
            tracing::warn!(dir = %dir.display(), "acknowledgement file missing; recreating it at LSN {}", first_lsn - 1);
            AckFile::create(dir, journal_id, first_lsn - 1, faults)?
        }
    };

    let gaps: Vec<Range<Lsn>> = segs
        .iter()
        .flat_map(|s| s.scan.gaps.iter().map(|&(a, b)| a..b))
        .filter(|r| !r.is_empty())
        .collect();
    let report = RecoveryReport {
        journal_id,
        created: false,
        segments: segs.len(),
        records: segs.iter().map(|s| s.scan.tail.records).sum(),
        bytes: segs.iter().map(|s| s.scan.tail.data_bytes).sum(),
        first_lsn,
        next_lsn: segs.last().map_or(first_lsn, |s| s.scan.tail.next_lsn),
        acked_lsn: ack.current().acked_lsn,
        bytes_cut: cuts.iter().map(|c| c.len).sum(),
        cuts,
        skipped,
        gaps,
        removed_tmp_files,
        extended,
        proven_durable_lsn: evidence.lsn,
        duration: started.elapsed(),
    };
    let segments = segs
        .into_iter()
        .map(|s| RecoveredSegment {
            seq: s.seq,
            path: s.path,
            header: s.header,
            index: s.scan.index,
            tail: s.scan.tail,
        })
        .collect();
    Ok(Recovered {
        journal_id,
        segments,
        ack,
        report,
    })
}

fn create_fresh(
    dir: &Path,
    opts: &JournalOptions,
    ack: Option<AckFile>,
    removed_tmp_files: usize,
    started: Instant,
) -> Result<Recovered> {
    let faults = opts.faults.as_deref();
    let ack = match ack {
        Some(a) if a.current().acked_lsn > 0 => {
            return Err(Error::Journal(JournalError::MissingSegment {
                dir: dir.to_path_buf(),
                seq: 0,
                before: 0,
                after: 0,
            }));
        }
        Some(a) => a,
        None => AckFile::create(dir, Uuid::new_v4(), 0, faults)?,
    };
    let journal_id = ack.current().journal_id;
    let header = SegmentHeader {
        journal_id,
        segment_seq: 1,
        first_lsn: 1,
        segment_bytes: opts.segment_bytes_max,
    };
    let (path, _file) = crate::segment::create_segment(dir, &header, faults)?;
    let header_crc = SegmentHeader::crc_of(&header.encode());
    let report = RecoveryReport {
        journal_id,
        created: true,
        segments: 1,
        records: 0,
        bytes: 0,
        first_lsn: 1,
        next_lsn: 1,
        acked_lsn: 0,
        cuts: Vec::new(),
        bytes_cut: 0,
        skipped: Vec::new(),
        gaps: Vec::new(),
        removed_tmp_files,
        extended: Vec::new(),
        proven_durable_lsn: 0,
        duration: started.elapsed(),
    };
    Ok(Recovered {
        journal_id,
        segments: vec![RecoveredSegment {
            seq: 1,
            path,
            header,
            index: SparseIndex::default(),
            tail: ScanPoint::start(1, header_crc),
        }],
        ack,
        report,
    })
}

/// Copies `bytes` to `forensics/<seq>-<offset>-<ms>.cut`, durably. The directory is opened
/// without following a link planted in its place, and the file is created new (`O_EXCL`,
/// never through a link): recovery, often run as root, writes only where it means to.
fn save_cut(
    dir: &Path,
    seq: u64,
    offset: usize,
    bytes: &[u8],
    faults: Option<&dyn FaultInjector>,
) -> Result<PathBuf> {
    use rustix::fs::{Mode, OFlags};
    let fdir = dir.join(FORENSICS_DIR);
    match fs::create_dir(&fdir) {
        Ok(()) => sync_dir(dir, faults)?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create forensics directory", &fdir, e)),
    }
    let unsafe_dir = |reason: &str| {
        Error::Journal(JournalError::UnsafeFile {
            path: fdir.clone(),
            reason: reason.into(),
        })
    };
    let dfd = rustix::fs::open(
        &fdir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP => unsafe_dir("is a symbolic link"),
        rustix::io::Errno::NOTDIR => unsafe_dir("is not a directory"),
        e => Error::io("open forensics directory", &fdir, e.into()),
    })?;
    let stamp = crate::journal::ack::now_ms();
    let mut attempt = 0u32;
    let (path, file) = loop {
        let name = match attempt {
            0 => format!("{seq:016}-{offset:010}-{stamp}.cut"),
            n => format!("{seq:016}-{offset:010}-{stamp}-{n}.cut"),
        };
        let path = fdir.join(&name);
        match rustix::fs::openat(
            &dfd,
            name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => break (path, File::from(fd)),
            Err(rustix::io::Errno::EXIST) if attempt < 100 => attempt += 1,
            Err(e) => return Err(Error::io("create side file", &path, e.into())),
        }
    };
    file.write_all_at(bytes, 0)
        .map_err(|e| Error::io("write side file", &path, e))?;
    file.sync_all()
        .map_err(|e| Error::io("fsync side file", &path, e))?;
    inject(faults, IoOp::SyncDir, &fdir)
        .and_then(|()| File::from(dfd).sync_all())
        .map_err(|e| Error::io("fsync directory", &fdir, e))?;
    Ok(path)
}

fn apply_repair(
    segs: &[Examined],
    repair: &Repair,
    faults: Option<&dyn FaultInjector>,
) -> Result<()> {
    let (seg, offset, end) = match *repair {
        Repair::Zero { seg, offset, end }
        | Repair::Gap {
            seg, offset, end, ..
        } => (seg, offset, end),
    };
    let s = &segs[seg];
    let file = open_segment_rw(&s.path)?;
    let zeros = vec![0u8; (end - offset).min(1 << 20)];
    let mut at = offset;
    while at < end {
        let n = (end - at).min(zeros.len());
        file.write_all_at(&zeros[..n], at as u64)
            .map_err(|e| Error::io("zero damaged bytes", &s.path, e))?;
        at += n;
    }
    if let Repair::Gap {
        lsn,
        end_lsn,
        prev_crc,
        ..
    } = *repair
    {
        let mut payload = vec![0u8; end - offset - FRAME_HEADER_BYTES];
        payload[..8].copy_from_slice(&end_lsn.to_le_bytes());
        debug_assert_eq!(frame_bytes(payload.len()), end - offset);
        let seed = Seed::new(s.header.journal_id, s.seq);
        let header = seal_frame(seed, lsn, 0, prev_crc, KIND_GAP, &payload);
        file.write_all_at(&header, offset as u64)
            .and_then(|()| file.write_all_at(&payload, (offset + FRAME_HEADER_BYTES) as u64))
            .map_err(|e| Error::io("write gap record", &s.path, e))?;
    }
    inject(faults, IoOp::SyncData, &s.path)
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::io("fsync repaired segment", &s.path, e))
}
