//! The recovery of a journal at open, step by step (`journal-format.md` section 9): the
//! directory's one listing, leftover temporary files removed, `ACK` read; every segment
//! examined; the damage classified; repaired as the mode allows; the last segment made durable;
//! a missing `ACK` recreated; the report. A directory without segments becomes a new journal.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use uuid::Uuid;

use crate::error::{Error, JournalError, Result};
use crate::fault::{FaultInjector, IoOp};
use crate::format::SegmentHeader;
use crate::journal::ack::AckFile;
use crate::journal::index::SparseIndex;
use crate::journal::listing::{self, Listing};
use crate::journal::options::{JournalOptions, RecoveryMode};
use crate::journal::recovery::classify::{Evidence, Finding, check_retained_start, classify};
use crate::journal::recovery::examine::{Examined, SegmentBytes, examine_all};
use crate::journal::recovery::repair;
use crate::journal::recovery::report::{Outcome, RecoveryReport};
use crate::journal::scan::ScanPoint;
use crate::segment::{allocate, inject, open_segment_rw, sync_dir};

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

/// Recovers the journal in `dir` (whose lock the caller holds).
pub(crate) fn recover(dir: &Path, opts: &JournalOptions) -> Result<Recovered> {
    let started = Instant::now();
    let faults = opts.faults.as_deref();
    let mode = opts.recovery_mode;
    let listing = listing::list(dir)?;
    let removed_tmp_files = remove_tmp_files(dir, &listing, faults)?;
    let ack = open_ack(dir, &listing, mode)?;
    if listing.segments.is_empty() {
        return create_fresh(dir, opts, ack, removed_tmp_files, started);
    }

    let expected_id = ack.as_ref().map(|a| a.current().journal_id);
    let mut segs = examine_all(
        &listing.segments,
        expected_id,
        mode == RecoveryMode::Salvage,
    )?;
    let journal_id = segs[0].header.journal_id;
    let extended: Vec<PathBuf> = segs
        .iter()
        .filter(|s| s.extended)
        .map(|s| s.path.clone())
        .collect();
    let acked = ack.as_ref().map(|a| a.current().acked_lsn);
    let evidence = Evidence::gather(dir, journal_id, acked.unwrap_or(0), opts.known_durable_lsn);
    let findings = classify(dir, &segs, evidence)?;
    release_undamaged(&mut segs, &findings);
    check_retained_start(&segs, acked)?;

    let mut plan = repair::plan(&segs, &findings, mode)?;
    repair::apply(
        dir,
        &mut segs,
        &mut plan,
        journal_id,
        opts.keep_cut_bytes,
        faults,
    )?;
    make_last_durable(&segs, faults)?;
    let ack = match ack {
        Some(a) => a,
        None => {
            let first_lsn = segs[0].header.first_lsn;
            tracing::warn!(dir = %dir.display(), "acknowledgement file missing; recreating it at LSN {}", first_lsn - 1);
            AckFile::create(dir, journal_id, first_lsn - 1, faults)?
        }
    };

    let report = RecoveryReport::recovered(
        &segs,
        Outcome {
            journal_id,
            acked_lsn: ack.current().acked_lsn,
            cuts: plan.cuts,
            skipped: plan.skipped,
            removed_tmp_files,
            extended,
            proven_durable_lsn: evidence.lsn,
            started,
        },
    );
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

/// Removes the leftover `.tmp` files of interrupted creations the listing found, and syncs the
/// directory if there were any. Returns how many there were.
fn remove_tmp_files(
    dir: &Path,
    listing: &Listing,
    faults: Option<&dyn FaultInjector>,
) -> Result<usize> {
    for tmp in &listing.tmp_files {
        match fs::remove_file(tmp) {
            Ok(()) => {}
            // Gone already: nothing to remove.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove leftover temporary file", tmp, e)),
        }
    }
    if !listing.tmp_files.is_empty() {
        sync_dir(dir, faults)?;
    }
    Ok(listing.tmp_files.len())
}

/// The acknowledgement file, if the listing found one. Salvage treats an `ACK` with no valid
/// slot as missing (it is recreated later); the other modes refuse it.
fn open_ack(dir: &Path, listing: &Listing, mode: RecoveryMode) -> Result<Option<AckFile>> {
    if !listing.has_ack {
        return Ok(None);
    }
    match AckFile::open(dir) {
        Ok(a) => Ok(a),
        Err(e) if mode == RecoveryMode::Salvage && e.is_corruption() => {
            tracing::warn!(error = %e, "acknowledgement file unreadable; recreating it");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Only damaged segments' bytes are needed again (for repairs): unmaps the others now.
fn release_undamaged(segs: &mut [Examined], findings: &[Finding]) {
    for (i, seg) in segs.iter_mut().enumerate() {
        if !findings.iter().any(|f| f.segment == i) {
            seg.bytes = SegmentBytes::Owned(Vec::new());
        }
    }
}

/// Everything recovered is made durable before it is used: a previous writer may have crashed
/// before syncing its last records. The last segment is also reserved again in full, so that a
/// hole punched by someone else can never fault the map.
fn make_last_durable(segs: &[Examined], faults: Option<&dyn FaultInjector>) -> Result<()> {
    let last = segs.last().expect("at least one segment");
    let file = open_segment_rw(&last.path)?;
    allocate(&file, last.header.segment_bytes)
        .map_err(|e| Error::io("reserve segment space", &last.path, e))?;
    inject(faults, IoOp::SyncData, &last.path)
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::io_unmapped("fsync segment", &last.path, e))
}

/// A new journal: its first, empty segment, and `ACK` at 0 (created, or kept if it already
/// says 0). An `ACK` that acknowledges records whose segments are all gone is a missing segment.
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
    let report = RecoveryReport::created(journal_id, removed_tmp_files, started);
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
