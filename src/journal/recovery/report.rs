//! What recovery reports: the [`RecoveryReport`] of an open (what was found, cut, replaced,
//! re-extended and removed), each [`Cut`] region, and the report's one-line `Display` that
//! `Journal::open` logs.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::error::DamageKind;
use crate::format::Lsn;
use crate::journal::recovery::examine::Examined;

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

/// What the orchestrator learned on the way that the segments' scans do not say.
pub(crate) struct Outcome {
    pub journal_id: Uuid,
    pub acked_lsn: Lsn,
    pub cuts: Vec<Cut>,
    pub skipped: Vec<Range<Lsn>>,
    pub removed_tmp_files: usize,
    pub extended: Vec<PathBuf>,
    pub proven_durable_lsn: Lsn,
    pub started: Instant,
}

impl RecoveryReport {
    /// The report of a journal recovered from its segments (`segs`, after repairs: at least
    /// one): counts, LSNs and gaps come from their scans.
    pub(crate) fn recovered(segs: &[Examined], o: Outcome) -> RecoveryReport {
        let first_lsn = segs[0].header.first_lsn;
        let gaps: Vec<Range<Lsn>> = segs
            .iter()
            .flat_map(|s| s.scan.gaps.iter().map(|&(a, b)| a..b))
            .filter(|r| !r.is_empty())
            .collect();
        RecoveryReport {
            journal_id: o.journal_id,
            created: false,
            segments: segs.len(),
            records: segs.iter().map(|s| s.scan.tail.records).sum(),
            bytes: segs.iter().map(|s| s.scan.tail.data_bytes).sum(),
            first_lsn,
            next_lsn: segs.last().map_or(first_lsn, |s| s.scan.tail.next_lsn),
            acked_lsn: o.acked_lsn,
            bytes_cut: o.cuts.iter().map(|c| c.len).sum(),
            cuts: o.cuts,
            skipped: o.skipped,
            gaps,
            removed_tmp_files: o.removed_tmp_files,
            extended: o.extended,
            proven_durable_lsn: o.proven_durable_lsn,
            duration: o.started.elapsed(),
        }
    }

    /// The report of a new, empty journal.
    pub(crate) fn created(
        journal_id: Uuid,
        removed_tmp_files: usize,
        started: Instant,
    ) -> RecoveryReport {
        RecoveryReport {
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
        }
    }
}
