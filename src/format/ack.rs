//! The acknowledgement file: two checksummed slots, written alternately, so that an update is
//! all-or-nothing even if the write tears.

use uuid::Uuid;

use super::{le_u16, le_u32, le_u64};

/// Magic at the start of each acknowledgement slot: ASCII `SJACKSLT`.
pub const ACK_MAGIC: [u8; 8] = *b"SJACKSLT";
/// Length of one slot.
pub const ACK_SLOT_BYTES: usize = ACK_CRC_OFFSET + 4;
/// Byte offsets of the two slots. They are a page apart so that one torn sector never damages
/// both.
pub const ACK_SLOT_OFFSETS: [usize; 2] = [0, 4096];
/// Length of the acknowledgement file.
pub const ACK_FILE_BYTES: usize = 8192;

/// Offset of a slot's magic (8 bytes).
pub const ACK_MAGIC_OFFSET: usize = 0;
/// Offset of a slot's version (`u16`).
pub const ACK_VERSION_OFFSET: usize = ACK_MAGIC_OFFSET + 8;
/// Offset of 6 reserved zero bytes.
pub const ACK_RESERVED_OFFSET: usize = ACK_VERSION_OFFSET + 2;
/// Offset of the journal UUID (16 bytes).
pub const ACK_JOURNAL_ID_OFFSET: usize = ACK_RESERVED_OFFSET + 6;
/// Offset of the generation (`u64`).
pub const ACK_GENERATION_OFFSET: usize = ACK_JOURNAL_ID_OFFSET + 16;
/// Offset of the acknowledged LSN (`u64`).
pub const ACK_ACKED_LSN_OFFSET: usize = ACK_GENERATION_OFFSET + 8;
/// Offset of the write time in ms since the Unix epoch (`u64`).
pub const ACK_ACKED_AT_MS_OFFSET: usize = ACK_ACKED_LSN_OFFSET + 8;
/// Offset of 4 reserved zero bytes.
pub const ACK_RESERVED2_OFFSET: usize = ACK_ACKED_AT_MS_OFFSET + 8;
/// Offset of the slot checksum (`u32`, CRC-32 of the bytes before it).
pub const ACK_CRC_OFFSET: usize = ACK_RESERVED2_OFFSET + 4;

const VERSION_AT: usize = ACK_VERSION_OFFSET;
const ID_AT: usize = ACK_JOURNAL_ID_OFFSET;
const GENERATION_AT: usize = ACK_GENERATION_OFFSET;
const ACKED_LSN_AT: usize = ACK_ACKED_LSN_OFFSET;
const ACKED_AT_MS_AT: usize = ACK_ACKED_AT_MS_OFFSET;
const CRC_AT: usize = ACK_CRC_OFFSET;

/// One acknowledgement slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckSlot {
    /// The journal the acknowledgement belongs to.
    pub journal_id: Uuid,
    /// Incremented by every write; the valid slot with the highest generation is current.
    pub generation: u64,
    /// Every record up to and including this LSN is acknowledged (0: none).
    pub acked_lsn: u64,
    /// When the acknowledgement was written, in milliseconds since the Unix epoch.
    pub acked_at_ms: u64,
}

/// Why a slot does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckSlotError {
    /// Too few bytes.
    TooShort,
    /// All zero: never written.
    Empty,
    /// Wrong magic.
    BadMagic,
    /// Checksum mismatch.
    Checksum,
    /// Unknown version.
    UnsupportedVersion(u16),
    /// Reserved bytes are not zero, or the LSN is beyond `LSN_MAX`.
    Field,
}

impl AckSlot {
    /// Encodes the slot, checksum included.
    pub fn encode(&self) -> [u8; ACK_SLOT_BYTES] {
        let mut b = [0u8; ACK_SLOT_BYTES];
        b[..8].copy_from_slice(&ACK_MAGIC);
        b[VERSION_AT..VERSION_AT + 2].copy_from_slice(&1u16.to_le_bytes());
        b[ID_AT..ID_AT + 16].copy_from_slice(self.journal_id.as_bytes());
        b[GENERATION_AT..GENERATION_AT + 8].copy_from_slice(&self.generation.to_le_bytes());
        b[ACKED_LSN_AT..ACKED_LSN_AT + 8].copy_from_slice(&self.acked_lsn.to_le_bytes());
        b[ACKED_AT_MS_AT..ACKED_AT_MS_AT + 8].copy_from_slice(&self.acked_at_ms.to_le_bytes());
        let crc = crc32fast::hash(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies one slot. Never panics.
    pub fn decode(b: &[u8]) -> Result<AckSlot, AckSlotError> {
        if b.len() < ACK_SLOT_BYTES {
            return Err(AckSlotError::TooShort);
        }
        let b = &b[..ACK_SLOT_BYTES];
        if b.iter().all(|&x| x == 0) {
            return Err(AckSlotError::Empty);
        }
        if b[..8] != ACK_MAGIC {
            return Err(AckSlotError::BadMagic);
        }
        if le_u32(b, CRC_AT) != crc32fast::hash(&b[..CRC_AT]) {
            return Err(AckSlotError::Checksum);
        }
        let version = le_u16(b, VERSION_AT);
        if version != 1 {
            return Err(AckSlotError::UnsupportedVersion(version));
        }
        if b[ACK_RESERVED_OFFSET..ACK_JOURNAL_ID_OFFSET]
            .iter()
            .any(|&x| x != 0)
            || b[ACK_RESERVED2_OFFSET..ACK_CRC_OFFSET]
                .iter()
                .any(|&x| x != 0)
            || le_u64(b, ACKED_LSN_AT) > super::LSN_MAX
        {
            return Err(AckSlotError::Field);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[ID_AT..ID_AT + 16]);
        Ok(AckSlot {
            journal_id: Uuid::from_bytes(id),
            generation: le_u64(b, GENERATION_AT),
            acked_lsn: le_u64(b, ACKED_LSN_AT),
            acked_at_ms: le_u64(b, ACKED_AT_MS_AT),
        })
    }

    /// Offset of the slot a write with this generation goes to.
    pub fn offset(&self) -> usize {
        ACK_SLOT_OFFSETS[(self.generation % 2) as usize]
    }
}

/// Decodes the whole acknowledgement file: the valid slot with the highest generation, or the
/// errors of both slots if neither is valid.
pub fn decode_ack_file(file: &[u8]) -> Result<AckSlot, [AckSlotError; 2]> {
    let slot = |i: usize| {
        let at = ACK_SLOT_OFFSETS[i];
        file.get(at..)
            .map_or(Err(AckSlotError::TooShort), AckSlot::decode)
    };
    match (slot(0), slot(1)) {
        (Ok(a), Ok(b)) => Ok(if b.generation > a.generation { b } else { a }),
        (Ok(a), Err(_)) => Ok(a),
        (Err(_), Ok(b)) => Ok(b),
        (Err(a), Err(b)) => Err([a, b]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(generation: u64, lsn: u64) -> AckSlot {
        AckSlot {
            journal_id: Uuid::from_bytes([9; 16]),
            generation,
            acked_lsn: lsn,
            acked_at_ms: 1_700_000_000_000,
        }
    }

    fn file(slots: &[AckSlot]) -> Vec<u8> {
        let mut f = vec![0u8; ACK_FILE_BYTES];
        for s in slots {
            let at = s.offset();
            f[at..at + ACK_SLOT_BYTES].copy_from_slice(&s.encode());
        }
        f
    }

    #[test]
    fn round_trip_and_newest_wins() {
        let f = file(&[slot(1, 10), slot(2, 20)]);
        assert_eq!(decode_ack_file(&f).unwrap(), slot(2, 20));
        let f = file(&[slot(4, 40), slot(3, 30)]);
        assert_eq!(decode_ack_file(&f).unwrap(), slot(4, 40));
    }

    #[test]
    fn torn_newest_slot_falls_back_to_the_older() {
        let mut f = file(&[slot(1, 10), slot(2, 20)]);
        let at = slot(2, 0).offset() + ACKED_LSN_AT;
        f[at] ^= 0xFF;
        assert_eq!(decode_ack_file(&f).unwrap(), slot(1, 10));
    }

    #[test]
    fn corrupt_each_field() {
        for at in [
            0,
            VERSION_AT,
            ID_AT,
            GENERATION_AT,
            ACKED_LSN_AT,
            ACKED_AT_MS_AT,
            CRC_AT,
        ] {
            let mut b = slot(1, 1).encode();
            b[at] ^= 0x01;
            assert!(AckSlot::decode(&b).is_err(), "flip at {at}");
        }
        assert_eq!(
            AckSlot::decode(&[0u8; ACK_SLOT_BYTES]),
            Err(AckSlotError::Empty)
        );
        assert_eq!(AckSlot::decode(&[1u8; 10]), Err(AckSlotError::TooShort));
    }

    #[test]
    fn reserved_bytes_and_lsn_range_are_checked() {
        for at in [
            ACK_RESERVED_OFFSET,
            ACK_RESERVED_OFFSET + 5,
            ACK_RESERVED2_OFFSET,
        ] {
            let mut b = slot(1, 1).encode();
            b[at] = 1;
            let crc = crc32fast::hash(&b[..CRC_AT]);
            b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(AckSlot::decode(&b), Err(AckSlotError::Field), "byte {at}");
        }
        let b = slot(1, u64::MAX).encode();
        assert_eq!(AckSlot::decode(&b), Err(AckSlotError::Field));
    }

    #[test]
    fn no_valid_slot() {
        assert!(decode_ack_file(&[0u8; ACK_FILE_BYTES]).is_err());
        assert!(decode_ack_file(&[]).is_err());
    }
}
