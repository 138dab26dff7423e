//! What a journal directory holds: one listing of its entries (each name checked for its
//! type without following links), and each segment's header read and verified once when the
//! segment is opened. Recovery, the offline reader and `inspect` all start here.

use crate::error::JournalError;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::error::{DamageKind, Error, Result};
use crate::format::{
    FORMAT_VERSION, HeaderError, SEGMENT_DATA_OFFSET, SEGMENT_HEADER_BYTES, SegmentHeader,
};
use crate::segment::{
    ACK_FILE, Access, FORENSICS_DIR, HEAD_FILE, LOCK_FILE, REPLAY_STATE_FILE, file_type_name,
    is_own_tmp_name, is_replay_tmp_name, open_journal_file, parse_segment_file_name,
};

/// The files found in a journal directory.
#[derive(Debug)]
pub(crate) struct Listing {
    /// Segment files `(seq, path)`, sorted by sequence number.
    pub segments: Vec<(u64, PathBuf)>,
    /// Leftover temporary files of syncjournal's own (interrupted segment or `ACK` creations).
    pub tmp_files: Vec<PathBuf>,
    /// `ACK` exists.
    pub has_ack: bool,
    /// A file that is neither a journal file nor one syncjournal creates (for the
    /// foreign-directory check).
    pub foreign: Option<PathBuf>,
}

/// Lists `dir` once. Names of journal files that are symbolic links, or not of the type the
/// name stands for (a FIFO named like a segment, a directory named `ACK`), are refused here,
/// before anything opens them.
pub(crate) fn list(dir: &Path) -> Result<Listing> {
    let mut listing = Listing {
        segments: Vec::new(),
        tmp_files: Vec::new(),
        has_ack: false,
        foreign: None,
    };
    let rd = fs::read_dir(dir).map_err(|e| Error::io("list journal directory", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("list journal directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            listing.foreign.get_or_insert(entry.path());
            continue;
        };
        let want_dir = name == FORENSICS_DIR;
        let known = parse_segment_file_name(name).is_some()
            || is_own_tmp_name(name)
            || is_replay_tmp_name(name)
            || [ACK_FILE, LOCK_FILE, HEAD_FILE, REPLAY_STATE_FILE].contains(&name)
            || want_dir;
        if !known {
            listing.foreign.get_or_insert(entry.path());
            continue;
        }
        // The entry's own type: `file_type` does not follow a symbolic link.
        let t = entry
            .file_type()
            .map_err(|e| Error::io("list journal directory", dir, e))?;
        let ok = if want_dir { t.is_dir() } else { t.is_file() };
        if !ok {
            return Err(Error::Journal(JournalError::UnsafeFile {
                path: entry.path(),
                reason: format!(
                    "is {}, not {}",
                    file_type_name(&t),
                    if want_dir {
                        "a directory"
                    } else {
                        "a regular file"
                    }
                ),
            }));
        }
        if let Some(seq) = parse_segment_file_name(name) {
            listing.segments.push((seq, entry.path()));
        } else if is_own_tmp_name(name) {
            listing.tmp_files.push(entry.path());
        } else if name == ACK_FILE {
            listing.has_ack = true;
        }
    }
    listing.segments.sort();
    Ok(listing)
}

/// An open segment file whose header verified.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    /// Sequence number (from the file name, equal to the header's).
    pub seq: u64,
    /// The file.
    pub path: PathBuf,
    /// The open file.
    pub file: File,
    /// The file's length now.
    pub len: u64,
    /// The verified header.
    pub header: SegmentHeader,
    /// The header's checksum: the first frame's `prev_crc`.
    pub header_crc: u32,
}

impl SegmentFile {
    /// Opens segment `seq` at `path` (read only, or read-write for repairs), reads and verifies
    /// its header block (section 3.1 of the format: the header, then zeros up to
    /// `SEGMENT_DATA_OFFSET`), checks that it names `seq` and, if given, `expected_id`.
    /// The file's length is not compared with the header's here: see
    /// [`SegmentFile::check_length`].
    pub(crate) fn open(
        seq: u64,
        path: &Path,
        expected_id: Option<Uuid>,
        access: Access,
    ) -> Result<SegmentFile> {
        let file = open_journal_file(path, access, "open segment")?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat segment", path, e))?
            .len();
        let (header, header_crc) = read_header(&file, seq, path, len)?;
        if let Some(id) = expected_id
            && header.journal_id != id
        {
            return Err(Error::Journal(JournalError::ForeignSegment {
                path: path.to_path_buf(),
                expected: id,
                found: header.journal_id,
            }));
        }
        Ok(SegmentFile {
            seq,
            path: path.to_path_buf(),
            file,
            len,
            header,
            header_crc,
        })
    }

    /// Fails unless the file is as long as its header says (someone truncated or extended it).
    pub(crate) fn check_length(&self) -> Result<()> {
        if self.len != self.header.segment_bytes {
            return Err(Error::corrupt(
                &self.path,
                0,
                DamageKind::SegmentLength {
                    expected: self.header.segment_bytes,
                    actual: self.len,
                },
            ));
        }
        Ok(())
    }
}

/// Reads `buf.len()` bytes at `at`, zero-filling past the end of the file.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], at + filled as u64) {
            Ok(0) => {
                buf[filled..].fill(0);
                break;
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads and verifies the header block of segment file `seq` (`len` bytes long): the header
/// (`header_len` bytes, as the header itself says, so that a newer version's longer header is
/// recognised as a version and not as damage), its checksum, the version-1 fields and their
/// ranges, the sequence number against the file name, and the zeros after the header up to
/// the first frame. Returns the header and its checksum.
pub(crate) fn read_header(
    file: &File,
    seq: u64,
    path: &Path,
    len: u64,
) -> Result<(SegmentHeader, u32)> {
    let mut block = vec![0u8; SEGMENT_DATA_OFFSET];
    let n = (len as usize).min(SEGMENT_DATA_OFFSET);
    read_full_at(file, &mut block[..n], 0)
        .map_err(|e| Error::io("read segment header", path, e))?;
    block.truncate(n);
    let (header, crc) = SegmentHeader::decode(&block).map_err(|e| header_error(path, e))?;
    if header.segment_seq != seq {
        return Err(Error::corrupt(
            path,
            0,
            DamageKind::SequenceMismatch {
                file_name: seq,
                header: header.segment_seq,
            },
        ));
    }
    if let Some(i) = block[SEGMENT_HEADER_BYTES.min(n)..]
        .iter()
        .position(|&b| b != 0)
    {
        let at = SEGMENT_HEADER_BYTES + i;
        return Err(Error::corrupt(
            path,
            at as u64,
            DamageKind::HeaderField {
                field: "reserved header block (must be zero)",
                found: u64::from(block[at]),
                expected: 0,
            },
        ));
    }
    Ok((header, crc))
}

fn header_error(path: &Path, e: HeaderError) -> Error {
    match e {
        HeaderError::TooShort { len } => {
            Error::corrupt(path, 0, DamageKind::HeaderTruncated { len: len as u64 })
        }
        HeaderError::BadMagic { found } => Error::Journal(JournalError::ForeignFile {
            path: path.to_path_buf(),
            found: found.to_vec(),
        }),
        HeaderError::BadHeaderLen { found } => Error::corrupt(
            path,
            0,
            DamageKind::HeaderField {
                field: "header_len",
                found: u64::from(found),
                expected: SEGMENT_HEADER_BYTES as u64,
            },
        ),
        HeaderError::Checksum { stored, computed } => {
            Error::corrupt(path, 0, DamageKind::HeaderChecksum { stored, computed })
        }
        HeaderError::UnsupportedVersion { found } => {
            Error::Journal(JournalError::UnsupportedVersion {
                path: path.to_path_buf(),
                found,
                supported: FORMAT_VERSION,
            })
        }
        HeaderError::Field {
            field,
            found,
            expected,
        } => Error::corrupt(
            path,
            0,
            DamageKind::HeaderField {
                field,
                found,
                expected,
            },
        ),
        HeaderError::OutOfRange {
            field,
            found,
            min,
            max,
            multiple_of,
        } => Error::corrupt(
            path,
            0,
            DamageKind::HeaderRange {
                field,
                found,
                min,
                max,
                multiple_of,
            },
        ),
    }
}
