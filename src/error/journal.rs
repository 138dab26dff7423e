//! Errors of the journal layer: its files, its lock, its limits, and the damage it finds
//! (structured: [`Corruption`] with a [`DamageKind`], naming file, offset and what to run).

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::error::text::locked_text;
use crate::format::Lsn;

/// What can go wrong in the journal layer. Converts into [`crate::Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// An operating-system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`"open"`, `"msync"`, `"rename"`, …).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The error the operating system reported.
        #[source]
        source: io::Error,
    },

    /// The disk (or quota) is full. Nothing was lost: the journal is unchanged and consistent.
    #[error(
        "no space left while {op} {} ({bytes} bytes needed); free some space and retry — the journal is unchanged",
        path.display()
    )]
    DiskFull {
        /// What was being done.
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// How many bytes the operation needed.
        bytes: u64,
        /// The error the operating system reported.
        #[source]
        source: io::Error,
    },

    /// Another process (or another handle in this process) holds the journal's lock.
    #[error("{}", locked_text(dir, *holder_pid))]
    Locked {
        /// The journal directory.
        dir: PathBuf,
        /// The pid recorded in the lock file by the holder, when readable.
        holder_pid: Option<u32>,
    },

    /// The directory exists but holds no journal (no segment, no `ACK`) and `create_if_missing`
    /// is off.
    #[error("{} holds no journal (no segment files and no ACK file); check the path — is it the right directory, is its disk mounted?", dir.display())]
    NoJournal {
        /// The directory.
        dir: PathBuf,
    },

    /// The journal directory does not exist and `create_if_missing` is off.
    #[error("journal directory {} does not exist", dir.display())]
    NotFound {
        /// The journal directory.
        dir: PathBuf,
    },

    /// A sync failed earlier; the state of unsynced data is unknown, so every call fails until
    /// the journal is reopened (which re-verifies everything on disk).
    #[error("journal is poisoned by an earlier failed sync ({reason}); reopen it to recover")]
    Poisoned {
        /// The failure that poisoned the journal.
        reason: String,
    },

    /// A file in the journal directory is not one syncjournal may open: a symbolic link, a FIFO,
    /// a device or a directory where a file should be, or a file with several hard links where
    /// syncjournal would write.
    #[error("{} {reason}: syncjournal never follows links or opens special files in a journal directory; remove it (or move it aside) and retry", path.display())]
    UnsafeFile {
        /// The file.
        path: PathBuf,
        /// What it is.
        reason: String,
    },

    /// A file in the journal directory is not a syncjournal segment (wrong magic).
    #[error("{} is not a syncjournal segment (magic {found:02x?}); move foreign files out of the journal directory", path.display())]
    ForeignFile {
        /// The file.
        path: PathBuf,
        /// The first bytes found where the magic should be.
        found: Vec<u8>,
    },

    /// The directory holds files but no journal: syncjournal will not create a journal among
    /// someone else's files.
    #[error("{} is not a syncjournal directory (it contains {}); point the journal at an empty or dedicated directory", dir.display(), example.display())]
    ForeignDirectory {
        /// The directory.
        dir: PathBuf,
        /// One of the files found.
        example: PathBuf,
    },

    /// A segment belongs to another journal (different journal UUID).
    #[error("{} belongs to journal {found}, but this directory holds journal {expected}; segments from two journals are mixed", path.display())]
    ForeignSegment {
        /// The file.
        path: PathBuf,
        /// The UUID of the journal this directory holds.
        expected: uuid::Uuid,
        /// The UUID found in the file.
        found: uuid::Uuid,
    },

    /// A segment was written by a format version this build cannot read.
    #[error("{} has format version {found}, this build reads version {supported} ({})", path.display(), if *found > *supported { "written by a newer syncjournal: upgrade" } else { "written by an older, unsupported syncjournal" })]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found in the file.
        found: u16,
        /// The version this build reads and writes.
        supported: u16,
    },

    /// Damage was found in the journal. See [`Corruption`].
    #[error(transparent)]
    Corrupt(Box<Corruption>),

    /// A segment in the middle of the journal is missing.
    #[error("segment {seq} is missing from {} (segments {before} and {after} exist); the journal cannot be read past it", dir.display())]
    MissingSegment {
        /// The journal directory.
        dir: PathBuf,
        /// The missing sequence number.
        seq: u64,
        /// The segment before the hole.
        before: u64,
        /// The segment after the hole.
        after: u64,
    },

    /// A record's payload is larger than the configured limit or than a segment can hold.
    #[error("record payload of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// The payload length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A batch is larger than what one segment can hold (a batch is written into one segment).
    #[error(
        "batch of {bytes} bytes exceeds the {max} bytes one segment holds; split it or raise segment_bytes_max"
    )]
    BatchTooLarge {
        /// Bytes the batch's frames need.
        bytes: usize,
        /// Bytes of record space in a segment.
        max: usize,
    },

    /// `wait_durable` was asked for an LSN that has not been written.
    #[error("LSN {lsn} has not been written (the last written LSN is {written})")]
    NotWritten {
        /// The LSN asked for.
        lsn: Lsn,
        /// The last written LSN.
        written: Lsn,
    },

    /// Records must carry at least one byte of payload.
    #[error("record payload is empty; a record must carry at least one byte")]
    EmptyRecord,

    /// A record kind in the range reserved for the journal itself was used.
    #[error("record kind {kind:#04x} is reserved (application kinds are 0x01..=0xEF)")]
    ReservedKind {
        /// The kind that was refused.
        kind: u8,
    },

    /// An acknowledgement was asked for an LSN that is not durable yet.
    #[error("cannot acknowledge LSN {lsn}: the journal is only durable up to LSN {durable}")]
    AckBeyondDurable {
        /// The LSN to acknowledge.
        lsn: Lsn,
        /// The highest durable LSN.
        durable: Lsn,
    },

    /// The requested LSN's segment was removed by retention after it was acknowledged.
    #[error("LSN {lsn} is no longer retained (the oldest retained LSN is {first_retained})")]
    Retired {
        /// The requested LSN.
        lsn: Lsn,
        /// The oldest LSN still in the journal.
        first_retained: Lsn,
    },

    /// A limit of the format was reached (for example the largest segment sequence number).
    #[error("journal limit reached: {0}")]
    LimitReached(&'static str),

    /// A follower cannot learn how far the journal is durable: its owner publishes no `HEAD`.
    #[error("journal {} has no valid HEAD: its owner does not publish how far it is durable, so following it could replay records a power loss may still take back; stop the owner and sync as the owner", dir.display())]
    NoHead {
        /// The journal directory.
        dir: PathBuf,
    },

    /// A reader did not find the record that must come next: records are missing from the
    /// journal (or a reader would have skipped them).
    #[error("journal {}: expected LSN {expected} next, found {}; records are missing — run `syncjournal verify {}`", dir.display(), found.map_or_else(|| "no such record (the journal ends before it)".to_string(), |f| format!("LSN {f}")), dir.display())]
    Discontinuity {
        /// The journal directory.
        dir: PathBuf,
        /// The LSN that must come next.
        expected: Lsn,
        /// What came instead (`None`: nothing).
        found: Option<Lsn>,
    },
}

/// True for "no space left on device" and "disk quota exceeded".
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error()
            || code == rustix::io::Errno::DQUOT.raw_os_error()
    )
}

/// Damage found in a segment: which file, where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Corruption {
    /// The segment file.
    pub segment: PathBuf,
    /// Byte offset of the damage in the segment file.
    pub offset: u64,
    /// What is wrong.
    pub kind: DamageKind,
    /// True when the damage is in the unsynced tail of the last segment (a torn write), false
    /// for damage in data that had been durable ("damage in the middle").
    pub torn_tail: bool,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == DamageKind::AckFile {
            return write!(
                f,
                "acknowledgement file {} is damaged (neither of its two slots is valid); run `syncjournal recover --mode salvage`, which recreates it at the first retained LSN − 1 (the target's watermark decides what is replayed, so nothing is applied twice)",
                self.segment.display()
            );
        }
        write!(
            f,
            "{} in {} at offset {}: {}; ",
            if self.torn_tail {
                "torn tail"
            } else {
                "damage in the middle of the journal"
            },
            self.segment.display(),
            self.offset,
            self.kind
        )?;
        if self.torn_tail {
            f.write_str(
                "open with RecoveryMode::TolerateTornTail (or run `syncjournal recover`) to cut it",
            )
        } else if matches!(self.kind, DamageKind::Unsalvageable { .. }) {
            f.write_str("move the segment aside and restore it from a backup, or copy out what `syncjournal dump` can read")
        } else {
            f.write_str("run `syncjournal verify` for a full report, then `syncjournal recover --mode salvage` to skip the damaged records")
        }
    }
}

impl std::error::Error for Corruption {}

/// What kind of damage was found. Every variant names the bad value and the expected one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DamageKind {
    /// The segment header's checksum does not match its bytes.
    HeaderChecksum {
        /// Checksum stored in the header.
        stored: u32,
        /// Checksum computed over the header bytes.
        computed: u32,
    },
    /// The file is shorter than its segment header.
    HeaderTruncated {
        /// Bytes present.
        len: u64,
    },
    /// A header field holds a value the format does not allow.
    HeaderField {
        /// Field name.
        field: &'static str,
        /// Value found.
        found: u64,
        /// Value expected.
        expected: u64,
    },
    /// A header field lies outside the range the format allows.
    HeaderRange {
        /// Field name.
        field: &'static str,
        /// Value found.
        found: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
        /// The value must be a multiple of this (1: any).
        multiple_of: u64,
    },
    /// The file's length differs from the length recorded in its header (someone truncated or
    /// extended it).
    SegmentLength {
        /// Length recorded in the header.
        expected: u64,
        /// Length of the file.
        actual: u64,
    },
    /// A record's checksum does not match its bytes.
    RecordChecksum {
        /// Checksum stored in the frame.
        stored: u32,
        /// Checksum computed over the frame.
        computed: u32,
    },
    /// A frame header is malformed (zero kind or LSN, reserved bits set, empty payload).
    FrameHeader {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A frame's length runs past the end of the segment.
    LengthOutOfBounds {
        /// Payload length found.
        len: u64,
        /// Bytes left in the segment after the frame header.
        available: u64,
    },
    /// A frame would start so close to the end of the segment that its header cannot fit.
    FrameTruncated {
        /// Bytes left in the segment.
        available: u64,
    },
    /// A valid record's LSN is not the one that should follow its predecessor.
    LsnOutOfOrder {
        /// LSN expected at this position.
        expected: Lsn,
        /// LSN found.
        found: Lsn,
    },
    /// A valid record does not chain to its predecessor's checksum.
    ChainBroken {
        /// Checksum of the previous record.
        expected: u32,
        /// Value found in the record's previous-checksum field.
        found: u32,
    },
    /// Non-zero bytes after the end of the written data.
    TrailingGarbage {
        /// Length of the non-zero region.
        len: u64,
    },
    /// Two adjacent segments do not continue each other's LSNs.
    SegmentDiscontinuity {
        /// LSN the segment should start with.
        expected: Lsn,
        /// LSN recorded in its header.
        found: Lsn,
    },
    /// A segment's sequence number in its header differs from its file name.
    SequenceMismatch {
        /// Sequence number from the file name.
        file_name: u64,
        /// Sequence number in the header.
        header: u64,
    },
    /// The acknowledgement file has no valid slot.
    AckFile,
    /// The journal's records end before an LSN that something else proves was durable: records
    /// were lost (media damage, files restored from an older copy), or the proof is wrong.
    MissingDurable {
        /// The LSN after the last record found.
        next_lsn: Lsn,
        /// The highest LSN proven durable.
        durable_lsn: Lsn,
        /// What proves it (the acknowledgement, `HEAD`, the target's watermark).
        proof: &'static str,
    },
    /// A damaged region too small to hold a gap record: salvage cannot mark the loss.
    Unsalvageable {
        /// Length of the region.
        len: u64,
    },
}

impl fmt::Display for DamageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DamageKind::HeaderChecksum { stored, computed } => write!(
                f,
                "segment header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            DamageKind::HeaderTruncated { len } => {
                write!(f, "file is {len} bytes, shorter than a segment header")
            }
            DamageKind::HeaderField {
                field,
                found,
                expected,
            } => write!(
                f,
                "segment header field {field} is {found}, expected {expected}"
            ),
            DamageKind::HeaderRange {
                field,
                found,
                min,
                max,
                multiple_of,
            } => {
                write!(
                    f,
                    "segment header field {field} is {found}, expected {}{min} to {max}",
                    if *multiple_of > 1 {
                        format!("a multiple of {multiple_of} from ")
                    } else {
                        String::new()
                    }
                )
            }
            DamageKind::SegmentLength { expected, actual } => write!(
                f,
                "segment is {actual} bytes but its header says {expected} (truncated or extended by someone else)"
            ),
            DamageKind::RecordChecksum { stored, computed } => write!(
                f,
                "record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            DamageKind::FrameHeader { reason } => write!(f, "malformed record header: {reason}"),
            DamageKind::LengthOutOfBounds { len, available } => write!(
                f,
                "record length {len} runs past the end of the segment ({available} bytes left)"
            ),
            DamageKind::FrameTruncated { available } => write!(
                f,
                "only {available} bytes left in the segment, too few for a record header"
            ),
            DamageKind::LsnOutOfOrder { expected, found } => {
                write!(f, "record has LSN {found}, expected {expected}")
            }
            DamageKind::ChainBroken { expected, found } => write!(
                f,
                "record does not chain to its predecessor (previous checksum {expected:#010x}, recorded {found:#010x})"
            ),
            DamageKind::TrailingGarbage { len } => {
                write!(f, "{len} non-zero bytes after the end of the written data")
            }
            DamageKind::SegmentDiscontinuity { expected, found } => write!(
                f,
                "segment starts at LSN {found}, but the previous segment ends before LSN {expected}"
            ),
            DamageKind::SequenceMismatch { file_name, header } => write!(
                f,
                "file name says segment {file_name} but the header says {header}"
            ),
            DamageKind::AckFile => f.write_str("acknowledgement file has no valid slot"),
            DamageKind::MissingDurable {
                next_lsn,
                durable_lsn,
                proof,
            } => write!(
                f,
                "the journal's records end before LSN {next_lsn}, but {proof} says every LSN up to {durable_lsn} was durable: records were lost (or that proof is wrong); new records must never reuse those LSNs"
            ),
            DamageKind::Unsalvageable { len } => write!(
                f,
                "damaged region of {len} bytes is too small to hold a gap record, so salvage cannot mark the loss"
            ),
        }
    }
}
