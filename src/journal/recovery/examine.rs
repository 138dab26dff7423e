//! Examining a journal's segments: each listed segment is opened once (its header verified
//! against the journal's UUID, its length against the header's), its bytes mapped (recovery,
//! which holds the lock) or read into a buffer (`verify`, which does not), and scanned. With
//! salvage, a segment that someone truncated is re-extended to its header's length first, so
//! that the records missing from its end become a damaged region instead of a length error.

use std::fs::File;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::error::{DamageKind, Error, Result};
use crate::format::{Seed, SegmentHeader};
use crate::journal::listing::{SegmentFile, read_full_at};
use crate::journal::scan::{ScanInput, SegmentScan, scan_segment, scan_segment_with};
use crate::segment::{Access, ReadMap, allocate, open_segment_rw};

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

/// Examines every listed segment `(seq, path)` in order, mapped. Each one's UUID must be
/// `expected_id` (the acknowledgement's) or, without one, the first segment's. With
/// `salvage`, truncated segments are re-extended.
pub(crate) fn examine_all(
    segments: &[(u64, PathBuf)],
    expected_id: Option<Uuid>,
    salvage: bool,
) -> Result<Vec<Examined>> {
    let mut segs = Vec::with_capacity(segments.len());
    for (seq, path) in segments {
        let id = expected_id.or_else(|| segs.first().map(|s: &Examined| s.header.journal_id));
        segs.push(examine(*seq, path, id, true, salvage)?);
    }
    Ok(segs)
}
