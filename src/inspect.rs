//! Read-only examination of a journal directory: every segment header, every record and the
//! checksum chain, without modifying anything. Works while another process has the journal
//! open (segments are then copied with `pread` rather than mapped).

use crate::error::JournalError;
use std::ops::Range;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::error::{DamageKind, Error, Result};
use crate::format::AckSlot;
use crate::format::Lsn;
use crate::journal::ack::AckFile;
use crate::journal::recovery::{self, Examined};
use crate::segment::DirLock;

/// What [`inspect`] found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Inspection {
    /// The journal directory.
    pub dir: PathBuf,
    /// The journal's UUID (`None` for a directory without segments or acknowledgement).
    pub journal_id: Option<Uuid>,
    /// Pid of the process holding the journal open, if any (its unsynced tail may be a write
    /// in progress rather than a torn write).
    pub held_by: Option<Option<u32>>,
    /// The segments, in order.
    pub segments: Vec<SegmentSummary>,
    /// The acknowledgement, if the file is readable.
    pub ack: Option<AckSlot>,
    /// LSN of the oldest retained record.
    pub first_lsn: Lsn,
    /// LSN after the last valid record.
    pub next_lsn: Lsn,
    /// Valid records (gap records excluded).
    pub records: u64,
    /// Bytes of valid frames.
    pub bytes: u64,
    /// Every damaged region, in journal order.
    pub damage: Vec<Damage>,
    /// Every gap left by an earlier salvage.
    pub gaps: Vec<Range<Lsn>>,
}

/// One segment's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentSummary {
    /// Sequence number.
    pub seq: u64,
    /// File path.
    pub path: PathBuf,
    /// LSN of its first record.
    pub first_lsn: Lsn,
    /// LSN after its last valid record.
    pub next_lsn: Lsn,
    /// Valid records.
    pub records: u64,
    /// End of its valid data.
    pub data_end: u64,
    /// File length.
    pub segment_bytes: u64,
}

/// One damaged region.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Damage {
    /// The segment file.
    pub segment: PathBuf,
    /// Offset of the first damaged byte.
    pub offset: u64,
    /// Length of the region.
    pub len: u64,
    /// What is wrong.
    pub kind: DamageKind,
    /// A torn tail (an incomplete last write) rather than damage in durable data.
    pub torn_tail: bool,
    /// LSNs lost in the region (empty for a torn tail).
    pub lost: Range<Lsn>,
}

impl Inspection {
    /// True if no damage was found.
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }
}

/// Examines the journal in `dir` without modifying it.
///
/// # Errors
///
/// Problems that stop the examination itself: a missing directory, unreadable files, a
/// foreign or unsupported segment header, a missing segment. Damage to records is reported in
/// [`Inspection::damage`], not as an error.
pub fn inspect(dir: impl AsRef<Path>) -> Result<Inspection> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(Error::Journal(JournalError::NotFound {
            dir: dir.to_path_buf(),
        }));
    }
    let held_by = DirLock::is_held(dir)?;
    let listing = crate::journal::listing::list(dir)?;
    if listing.segments.is_empty() && !listing.has_ack {
        // Nothing to verify is not "verified".
        return Err(match listing.foreign {
            Some(foreign) => Error::Journal(JournalError::ForeignDirectory {
                dir: dir.to_path_buf(),
                example: foreign,
            }),
            None => Error::Journal(JournalError::NoJournal {
                dir: dir.to_path_buf(),
            }),
        });
    }
    let ack = AckFile::peek(dir)?;
    let mut segs: Vec<Examined> = Vec::with_capacity(listing.segments.len());
    // Segments are read with pread, never mapped: an application may open the journal and
    // write to it at any moment (inspect takes no lock, so as never to stop one starting).
    // One buffer is reused, so memory stays at one segment.
    let mut buf = Vec::new();
    for (seq, path) in &listing.segments {
        let id = ack
            .map(|a| a.journal_id)
            .or_else(|| segs.first().map(|s| s.header.journal_id));
        let mut e = recovery::examine_into(*seq, path, id, &mut buf)?;
        buf = match std::mem::replace(&mut e.bytes, recovery::SegmentBytes::Owned(Vec::new())) {
            recovery::SegmentBytes::Owned(v) => v,
            recovery::SegmentBytes::Mapped(_) => Vec::new(),
        };
        segs.push(e);
    }
    let evidence = match segs.first() {
        Some(s) => {
            recovery::Evidence::gather(dir, s.header.journal_id, ack.map_or(0, |a| a.acked_lsn), 0)
        }
        None => recovery::Evidence { lsn: 0, proof: "" },
    };
    let findings = recovery::classify(dir, &segs, evidence)?;
    let damage = findings
        .iter()
        .map(|f| Damage {
            segment: segs[f.segment].path.clone(),
            offset: f.region.offset as u64,
            len: (f.region.end - f.region.offset) as u64,
            kind: f.region.kind.clone(),
            torn_tail: f.torn_tail,
            lost: if f.torn_tail {
                f.lost.start..f.lost.start
            } else {
                f.lost.clone()
            },
        })
        .collect();
    let first_lsn = segs.first().map_or(1, |s| s.header.first_lsn);
    Ok(Inspection {
        dir: dir.to_path_buf(),
        journal_id: segs
            .first()
            .map(|s| s.header.journal_id)
            .or(ack.map(|a| a.journal_id)),
        held_by,
        segments: segs
            .iter()
            .map(|s| SegmentSummary {
                seq: s.seq,
                path: s.path.clone(),
                first_lsn: s.header.first_lsn,
                next_lsn: s.scan.tail.next_lsn,
                records: s.scan.tail.records,
                data_end: s.scan.tail.end as u64,
                segment_bytes: s.header.segment_bytes,
            })
            .collect(),
        ack,
        first_lsn,
        next_lsn: segs.last().map_or(first_lsn, |s| s.scan.tail.next_lsn),
        records: segs.iter().map(|s| s.scan.tail.records).sum(),
        bytes: segs.iter().map(|s| s.scan.tail.data_bytes).sum(),
        damage,
        gaps: segs
            .iter()
            .flat_map(|s| s.scan.gaps.iter().map(|&(a, b)| a..b))
            .filter(|r| !r.is_empty())
            .collect(),
    })
}
