//! The `HEAD` file: the journal owner's durable LSN, published for followers in other
//! processes (one checksummed 64-byte record, rewritten in place after every sync).

use uuid::Uuid;

use super::{le_u16, le_u32, le_u64};

/// Magic at the start of `HEAD`: ASCII `SJHEAD` and two zero bytes.
pub const HEAD_MAGIC: [u8; 8] = *b"SJHEAD\0\0";
/// Length of the `HEAD` record.
pub const HEAD_BYTES: usize = HEAD_CRC_OFFSET + 4;
/// Length of the `HEAD` file: one page, the record at offset 0 and zeros after it (the owner
/// maps the page and stores the record into it).
pub const HEAD_FILE_BYTES: usize = 4096;
/// Offset of the version (`u16`).
pub const HEAD_VERSION_OFFSET: usize = 8;
/// Offset of 6 reserved zero bytes.
pub const HEAD_RESERVED_OFFSET: usize = HEAD_VERSION_OFFSET + 2;
/// Offset of the journal UUID (16 bytes).
pub const HEAD_JOURNAL_ID_OFFSET: usize = HEAD_RESERVED_OFFSET + 6;
/// Offset of the durable LSN (`u64`).
pub const HEAD_DURABLE_LSN_OFFSET: usize = HEAD_JOURNAL_ID_OFFSET + 16;
/// Offset of the write time in ms since the Unix epoch (`u64`).
pub const HEAD_UPDATED_AT_MS_OFFSET: usize = HEAD_DURABLE_LSN_OFFSET + 8;
/// Offset of the owner's process id (`u32`).
pub const HEAD_PID_OFFSET: usize = HEAD_UPDATED_AT_MS_OFFSET + 8;
/// Offset of 8 reserved zero bytes.
pub const HEAD_RESERVED2_OFFSET: usize = HEAD_PID_OFFSET + 4;
/// Offset of the checksum (`u32`, CRC-32 of the bytes before it).
pub const HEAD_CRC_OFFSET: usize = HEAD_RESERVED2_OFFSET + 8;

/// The durable position published by the journal's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The journal.
    pub journal_id: Uuid,
    /// Every record up to this LSN is durable.
    pub durable_lsn: u64,
    /// When it was written, ms since the Unix epoch.
    pub updated_at_ms: u64,
    /// The owner's process id.
    pub pid: u32,
}

impl Head {
    /// Encodes the record, checksum included.
    pub fn encode(&self) -> [u8; HEAD_BYTES] {
        let mut b = [0u8; HEAD_BYTES];
        b[..8].copy_from_slice(&HEAD_MAGIC);
        b[HEAD_VERSION_OFFSET..HEAD_VERSION_OFFSET + 2].copy_from_slice(&1u16.to_le_bytes());
        b[HEAD_JOURNAL_ID_OFFSET..HEAD_JOURNAL_ID_OFFSET + 16]
            .copy_from_slice(self.journal_id.as_bytes());
        b[HEAD_DURABLE_LSN_OFFSET..HEAD_DURABLE_LSN_OFFSET + 8]
            .copy_from_slice(&self.durable_lsn.to_le_bytes());
        b[HEAD_UPDATED_AT_MS_OFFSET..HEAD_UPDATED_AT_MS_OFFSET + 8]
            .copy_from_slice(&self.updated_at_ms.to_le_bytes());
        b[HEAD_PID_OFFSET..HEAD_PID_OFFSET + 4].copy_from_slice(&self.pid.to_le_bytes());
        let crc = crc32fast::hash(&b[..HEAD_CRC_OFFSET]);
        b[HEAD_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies the record; `None` if it is not a valid version-1 `HEAD` (a torn
    /// or concurrent write: read again).
    pub fn decode(b: &[u8]) -> Option<Head> {
        if b.len() < HEAD_BYTES
            || b[..8] != HEAD_MAGIC
            || le_u32(b, HEAD_CRC_OFFSET) != crc32fast::hash(&b[..HEAD_CRC_OFFSET])
            || le_u16(b, HEAD_VERSION_OFFSET) != 1
        {
            return None;
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[HEAD_JOURNAL_ID_OFFSET..HEAD_JOURNAL_ID_OFFSET + 16]);
        Some(Head {
            journal_id: Uuid::from_bytes(id),
            durable_lsn: le_u64(b, HEAD_DURABLE_LSN_OFFSET),
            updated_at_ms: le_u64(b, HEAD_UPDATED_AT_MS_OFFSET),
            pid: le_u32(b, HEAD_PID_OFFSET),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_byte_protected() {
        let h = Head {
            journal_id: Uuid::from_bytes([4; 16]),
            durable_lsn: 77,
            updated_at_ms: 1_700_000_000_000,
            pid: 4242,
        };
        let b = h.encode();
        assert_eq!(Head::decode(&b), Some(h));
        for i in 0..HEAD_BYTES {
            let mut c = b;
            c[i] ^= 0x20;
            assert_eq!(Head::decode(&c), None, "flip at {i}");
        }
        assert_eq!(Head::decode(&b[..10]), None);
    }
}
