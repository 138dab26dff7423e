//! The segment header: the first 64 bytes of every segment file.

use uuid::Uuid;

use super::{le_u16, le_u32, le_u64};

/// The magic at offset 0 of every segment: ASCII `SYNCJRNL`.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SYNCJRNL";
/// The format version this build reads and writes.
pub const FORMAT_VERSION: u16 = 1;

/// Offset of the magic (8 bytes).
pub const MAGIC_OFFSET: usize = 0;
/// Offset of the format version (`u16`).
pub const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
/// Offset of the header length (`u16`): how many bytes the header checksum covers, plus 4.
pub const HEADER_LEN_OFFSET: usize = VERSION_OFFSET + 2;
/// Offset of the data offset (`u32`): where the first record frame starts.
pub const SEGMENT_DATA_OFFSET_OFFSET: usize = HEADER_LEN_OFFSET + 2;
/// Offset of the journal UUID (16 bytes).
pub const JOURNAL_ID_OFFSET: usize = SEGMENT_DATA_OFFSET_OFFSET + 4;
/// Offset of the segment sequence number (`u64`).
pub const SEGMENT_SEQ_OFFSET: usize = JOURNAL_ID_OFFSET + 16;
/// Offset of the first LSN of the segment (`u64`).
pub const SEGMENT_FIRST_LSN_OFFSET: usize = SEGMENT_SEQ_OFFSET + 8;
/// Offset of the segment file length (`u64`).
pub const SEGMENT_BYTES_OFFSET: usize = SEGMENT_FIRST_LSN_OFFSET + 8;
/// Offset of the header flags (`u32`, zero in version 1).
pub const HEADER_FLAGS_OFFSET: usize = SEGMENT_BYTES_OFFSET + 8;
/// Offset of the header checksum (`u32`).
pub const HEADER_CRC_OFFSET: usize = HEADER_FLAGS_OFFSET + 4;
/// Length of the version-1 segment header.
pub const SEGMENT_HEADER_BYTES: usize = HEADER_CRC_OFFSET + 4;
/// Where the first frame starts: the header has a 4 KiB block to itself, so that a torn write
/// of the first records can never damage the header's sector.
pub const SEGMENT_DATA_OFFSET: usize = 4096;

/// Smallest segment size: 64 KiB.
pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;
/// Largest segment size: 1 GiB (frame offsets stay far inside `u32`).
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
/// Segment sizes are multiples of this many bytes.
pub const SEGMENT_BYTES_ALIGN: u64 = 4096;
/// The largest segment sequence number: file names have 16 decimal digits.
pub const SEGMENT_SEQ_MAX: u64 = 9_999_999_999_999_999;

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The journal this segment belongs to.
    pub journal_id: Uuid,
    /// The segment's sequence number (also its file name).
    pub segment_seq: u64,
    /// LSN of the first record in this segment.
    pub first_lsn: u64,
    /// Length of the segment file, fixed at creation.
    pub segment_bytes: u64,
}

/// Why a header could not be decoded. Checked in this order: length, magic, header length,
/// checksum, and only then the fields the checksum protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than a header.
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// Not a syncjournal segment.
    BadMagic {
        /// The bytes found at offset 0.
        found: [u8; 8],
    },
    /// The header-length field is outside `16..=4096` or past the end of the bytes.
    BadHeaderLen {
        /// The value found.
        found: u16,
    },
    /// The checksum does not match.
    Checksum {
        /// Stored checksum.
        stored: u32,
        /// Computed checksum.
        computed: u32,
    },
    /// A checksummed header of a version this build cannot read.
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// A checksummed version-1 header with a field outside the range the format allows.
    OutOfRange {
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
    /// A checksummed version-1 header with a field value the format forbids.
    Field {
        /// Field name.
        field: &'static str,
        /// Value found.
        found: u64,
        /// Value expected.
        expected: u64,
    },
}

impl SegmentHeader {
    /// Encodes the header into its 64 bytes, checksum included.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES];
        b[MAGIC_OFFSET..MAGIC_OFFSET + 8].copy_from_slice(&SEGMENT_MAGIC);
        b[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[HEADER_LEN_OFFSET..HEADER_LEN_OFFSET + 2]
            .copy_from_slice(&(SEGMENT_HEADER_BYTES as u16).to_le_bytes());
        b[SEGMENT_DATA_OFFSET_OFFSET..SEGMENT_DATA_OFFSET_OFFSET + 4]
            .copy_from_slice(&(SEGMENT_DATA_OFFSET as u32).to_le_bytes());
        b[JOURNAL_ID_OFFSET..JOURNAL_ID_OFFSET + 16].copy_from_slice(self.journal_id.as_bytes());
        b[SEGMENT_SEQ_OFFSET..SEGMENT_SEQ_OFFSET + 8]
            .copy_from_slice(&self.segment_seq.to_le_bytes());
        b[SEGMENT_FIRST_LSN_OFFSET..SEGMENT_FIRST_LSN_OFFSET + 8]
            .copy_from_slice(&self.first_lsn.to_le_bytes());
        b[SEGMENT_BYTES_OFFSET..SEGMENT_BYTES_OFFSET + 8]
            .copy_from_slice(&self.segment_bytes.to_le_bytes());
        // flags stay zero
        let crc = crc32fast::hash(&b[..HEADER_CRC_OFFSET]);
        b[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The checksum stored in an encoded header; the seed of the record chain.
    pub fn crc_of(encoded: &[u8; SEGMENT_HEADER_BYTES]) -> u32 {
        le_u32(encoded, HEADER_CRC_OFFSET)
    }

    /// Decodes and verifies a header from the start of a segment. Never panics.
    ///
    /// Returns the header and its checksum (the first record's `prev_crc`).
    pub fn decode(bytes: &[u8]) -> Result<(SegmentHeader, u32), HeaderError> {
        // The magic, version and header length (bytes 0..12) are frozen across versions, so
        // that any version's header can be recognised and its checksum located.
        if bytes.len() < HEADER_LEN_OFFSET + 2 {
            return Err(HeaderError::TooShort { len: bytes.len() });
        }
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&bytes[..8]);
        if magic != SEGMENT_MAGIC {
            return Err(HeaderError::BadMagic { found: magic });
        }
        let header_len = le_u16(bytes, HEADER_LEN_OFFSET);
        if !(16..=4096).contains(&header_len) {
            return Err(HeaderError::BadHeaderLen { found: header_len });
        }
        let hl = usize::from(header_len);
        if bytes.len() < hl {
            return Err(HeaderError::TooShort { len: bytes.len() });
        }
        let stored = le_u32(bytes, hl - 4);
        let computed = crc32fast::hash(&bytes[..hl - 4]);
        if stored != computed {
            return Err(HeaderError::Checksum { stored, computed });
        }
        // From here on the fields are trusted.
        let version = le_u16(bytes, VERSION_OFFSET);
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion { found: version });
        }
        if hl != SEGMENT_HEADER_BYTES {
            return Err(HeaderError::Field {
                field: "header_len",
                found: hl as u64,
                expected: SEGMENT_HEADER_BYTES as u64,
            });
        }
        let data_offset = le_u32(bytes, SEGMENT_DATA_OFFSET_OFFSET);
        if data_offset as usize != SEGMENT_DATA_OFFSET {
            return Err(HeaderError::Field {
                field: "data_offset",
                found: u64::from(data_offset),
                expected: SEGMENT_DATA_OFFSET as u64,
            });
        }
        let flags = le_u32(bytes, HEADER_FLAGS_OFFSET);
        if flags != 0 {
            return Err(HeaderError::Field {
                field: "flags",
                found: u64::from(flags),
                expected: 0,
            });
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[JOURNAL_ID_OFFSET..JOURNAL_ID_OFFSET + 16]);
        let first_lsn = le_u64(bytes, SEGMENT_FIRST_LSN_OFFSET);
        if first_lsn == 0 || first_lsn > super::LSN_MAX {
            return Err(HeaderError::Field {
                field: "first_lsn",
                found: first_lsn,
                expected: 1,
            });
        }
        let segment_seq = le_u64(bytes, SEGMENT_SEQ_OFFSET);
        if !(1..=SEGMENT_SEQ_MAX).contains(&segment_seq) {
            return Err(HeaderError::OutOfRange {
                field: "segment_seq",
                found: segment_seq,
                min: 1,
                max: SEGMENT_SEQ_MAX,
                multiple_of: 1,
            });
        }
        // Every use of the length (mapping, reading, allocating) is bounded by this check,
        // never by the claim alone.
        let segment_bytes = le_u64(bytes, SEGMENT_BYTES_OFFSET);
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&segment_bytes)
            || !segment_bytes.is_multiple_of(SEGMENT_BYTES_ALIGN)
        {
            return Err(HeaderError::OutOfRange {
                field: "segment_bytes",
                found: segment_bytes,
                min: SEGMENT_BYTES_MIN,
                max: SEGMENT_BYTES_MAX,
                multiple_of: SEGMENT_BYTES_ALIGN,
            });
        }
        let header = SegmentHeader {
            journal_id: Uuid::from_bytes(id),
            segment_seq,
            first_lsn,
            segment_bytes,
        };
        Ok((header, stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentHeader {
        SegmentHeader {
            journal_id: Uuid::from_bytes([0xAB; 16]),
            segment_seq: 7,
            first_lsn: 1001,
            segment_bytes: 1 << 20,
        }
    }

    fn reseal(b: &mut [u8; SEGMENT_HEADER_BYTES]) {
        let crc = crc32fast::hash(&b[..HEADER_CRC_OFFSET]);
        b[HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn round_trip() {
        let h = sample();
        let enc = h.encode();
        let (dec, crc) = SegmentHeader::decode(&enc).unwrap();
        assert_eq!(dec, h);
        assert_eq!(crc, SegmentHeader::crc_of(&enc));
    }

    #[test]
    fn every_checksummed_byte_is_protected() {
        let enc = sample().encode();
        for i in 0..SEGMENT_HEADER_BYTES {
            let mut b = enc;
            b[i] ^= 0x01;
            assert!(
                SegmentHeader::decode(&b).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn corrupt_magic() {
        let mut b = sample().encode();
        b[0] = b'X';
        assert!(matches!(
            SegmentHeader::decode(&b),
            Err(HeaderError::BadMagic { .. })
        ));
    }

    #[test]
    fn corrupt_version_is_caught_by_the_checksum() {
        let mut b = sample().encode();
        b[VERSION_OFFSET] = 9;
        assert!(matches!(
            SegmentHeader::decode(&b),
            Err(HeaderError::Checksum { .. })
        ));
    }

    #[test]
    fn newer_and_older_versions_are_named() {
        for v in [0u16, 2, 77] {
            let mut b = sample().encode();
            b[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&v.to_le_bytes());
            reseal(&mut b);
            assert_eq!(
                SegmentHeader::decode(&b),
                Err(HeaderError::UnsupportedVersion { found: v })
            );
        }
    }

    #[test]
    fn corrupt_header_len() {
        let mut b = sample().encode();
        b[HEADER_LEN_OFFSET..HEADER_LEN_OFFSET + 2].copy_from_slice(&9000u16.to_le_bytes());
        assert!(matches!(
            SegmentHeader::decode(&b),
            Err(HeaderError::BadHeaderLen { found: 9000 })
        ));
        let mut b = sample().encode();
        b[HEADER_LEN_OFFSET..HEADER_LEN_OFFSET + 2].copy_from_slice(&200u16.to_le_bytes());
        assert!(matches!(
            SegmentHeader::decode(&b),
            Err(HeaderError::TooShort { .. })
        ));
    }

    #[test]
    fn corrupt_data_offset_flags_and_first_lsn_fields() {
        for (at, field) in [
            (SEGMENT_DATA_OFFSET_OFFSET, "data_offset"),
            (HEADER_FLAGS_OFFSET, "flags"),
        ] {
            let mut b = sample().encode();
            b[at] ^= 0x10;
            reseal(&mut b);
            assert!(
                matches!(SegmentHeader::decode(&b), Err(HeaderError::Field { field: f, .. }) if f == field)
            );
        }
        let mut b = sample().encode();
        b[SEGMENT_FIRST_LSN_OFFSET..SEGMENT_FIRST_LSN_OFFSET + 8].fill(0);
        reseal(&mut b);
        assert!(matches!(
            SegmentHeader::decode(&b),
            Err(HeaderError::Field {
                field: "first_lsn",
                ..
            })
        ));
    }

    #[test]
    fn corrupt_id_seq_first_lsn_length_and_crc() {
        for at in [
            JOURNAL_ID_OFFSET,
            SEGMENT_SEQ_OFFSET,
            SEGMENT_FIRST_LSN_OFFSET,
            SEGMENT_BYTES_OFFSET,
            HEADER_CRC_OFFSET,
        ] {
            let mut b = sample().encode();
            b[at] ^= 0x80;
            assert!(matches!(
                SegmentHeader::decode(&b),
                Err(HeaderError::Checksum { .. })
            ));
        }
    }

    #[test]
    fn segment_bytes_and_seq_outside_the_format_ranges_are_refused() {
        for (at, value, field) in [
            (SEGMENT_BYTES_OFFSET, 64u64, "segment_bytes"),
            (SEGMENT_BYTES_OFFSET, SEGMENT_BYTES_MIN + 1, "segment_bytes"),
            (
                SEGMENT_BYTES_OFFSET,
                SEGMENT_BYTES_MAX + 4096,
                "segment_bytes",
            ),
            (SEGMENT_BYTES_OFFSET, 64 << 30, "segment_bytes"),
            (SEGMENT_SEQ_OFFSET, 0, "segment_seq"),
            (SEGMENT_SEQ_OFFSET, SEGMENT_SEQ_MAX + 1, "segment_seq"),
        ] {
            let mut b = sample().encode();
            b[at..at + 8].copy_from_slice(&value.to_le_bytes());
            reseal(&mut b);
            assert!(
                matches!(SegmentHeader::decode(&b), Err(HeaderError::OutOfRange { field: f, found, .. }) if f == field && found == value),
                "{field} = {value}: {:?}",
                SegmentHeader::decode(&b)
            );
        }
    }

    #[test]
    fn a_newer_version_with_a_longer_header_is_named_as_a_version() {
        let mut b = vec![0u8; 4096];
        b[..SEGMENT_HEADER_BYTES].copy_from_slice(&sample().encode());
        b[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&2u16.to_le_bytes());
        b[HEADER_LEN_OFFSET..HEADER_LEN_OFFSET + 2].copy_from_slice(&128u16.to_le_bytes());
        let crc = crc32fast::hash(&b[..124]);
        b[124..128].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            SegmentHeader::decode(&b),
            Err(HeaderError::UnsupportedVersion { found: 2 })
        );
    }

    #[test]
    fn truncated_headers() {
        let enc = sample().encode();
        for n in 0..SEGMENT_HEADER_BYTES {
            assert!(matches!(
                SegmentHeader::decode(&enc[..n]),
                Err(HeaderError::TooShort { .. })
            ));
        }
    }
}
