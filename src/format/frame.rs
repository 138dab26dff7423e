//! The record frame: a 32-byte header, the payload, zero padding to 8 bytes.

use super::{Seed, le_u32, le_u64};

/// Offset of the frame checksum (`u32`).
pub const FRAME_CRC_OFFSET: usize = 0;
/// Offset of the payload length (`u32`).
pub const FRAME_LEN_OFFSET: usize = FRAME_CRC_OFFSET + 4;
/// Offset of the record's LSN (`u64`).
pub const FRAME_LSN_OFFSET: usize = FRAME_LEN_OFFSET + 4;
/// Offset of the synced-LSN hint (`u64`): the highest LSN that was durable when this record
/// was written.
pub const FRAME_SYNCED_LSN_OFFSET: usize = FRAME_LSN_OFFSET + 8;
/// Offset of the previous record's checksum (`u32`), the chain link.
pub const FRAME_PREV_CRC_OFFSET: usize = FRAME_SYNCED_LSN_OFFSET + 8;
/// Offset of the record kind (`u8`).
pub const FRAME_KIND_OFFSET: usize = FRAME_PREV_CRC_OFFSET + 4;
/// Offset of the frame flags (`u8`, zero in version 1).
pub const FRAME_FLAGS_OFFSET: usize = FRAME_KIND_OFFSET + 1;
/// Offset of the reserved field (`u16`, zero in version 1).
pub const FRAME_RESERVED_OFFSET: usize = FRAME_FLAGS_OFFSET + 1;
/// Length of a frame header.
pub const FRAME_HEADER_BYTES: usize = FRAME_RESERVED_OFFSET + 2;
/// Every frame starts at a multiple of this many bytes from the start of the file.
pub const FRAME_ALIGN: usize = 8;
/// The largest LSN: 2⁶³ − 2, so that every LSN, and the LSN after any record (at most
/// 2⁶³ − 1 = `i64::MAX`), fits the signed 64-bit integers that SQL databases store.
pub const LSN_MAX: u64 = i64::MAX as u64 - 1;
/// Kind of a gap frame, written by salvage where damaged records were removed. Its payload
/// starts with the `u64` LSN of the first record after the gap.
pub const KIND_GAP: u8 = 0xFF;
/// Kinds from this value up are reserved for the journal itself.
pub const KIND_RESERVED_MIN: u8 = 0xF0;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The stored checksum.
    pub crc: u32,
    /// Payload length in bytes (at least 1).
    pub payload_len: u32,
    /// The record's log sequence number (at least 1).
    pub lsn: u64,
    /// The highest LSN durable when the record was written (0: none).
    pub synced_lsn: u64,
    /// The previous frame's checksum, or the segment header's checksum for the first frame.
    pub prev_crc: u32,
    /// Record kind (never 0).
    pub kind: u8,
}

impl FrameHeader {
    /// Bytes the whole frame occupies, padding included.
    pub fn frame_bytes(&self) -> usize {
        frame_bytes(self.payload_len as usize)
    }
}

/// Bytes a frame with a payload of `payload_len` bytes occupies, padding included.
pub const fn frame_bytes(payload_len: usize) -> usize {
    align_frame(FRAME_HEADER_BYTES + payload_len)
}

/// Rounds `n` up to the frame alignment.
pub const fn align_frame(n: usize) -> usize {
    (n + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1)
}

/// Builds the 32-byte header of a frame, checksum included. The checksum covers the seed
/// (journal id and segment sequence), header bytes 4..32 and the payload.
pub fn seal_frame(
    seed: Seed,
    lsn: u64,
    synced_lsn: u64,
    prev_crc: u32,
    kind: u8,
    payload: &[u8],
) -> [u8; FRAME_HEADER_BYTES] {
    let mut frame = vec![0u8; frame_bytes(payload.len())];
    encode_frame_into(&mut frame, seed, lsn, synced_lsn, prev_crc, kind, payload);
    let mut h = [0u8; FRAME_HEADER_BYTES];
    h.copy_from_slice(&frame[..FRAME_HEADER_BYTES]);
    h
}

/// Encodes a whole frame into `buf` (exactly `frame_bytes(payload.len())` bytes: header,
/// payload, zero padding) and returns its checksum. The checksum is computed in one pass over
/// the bytes as written, so it equals [`seal_frame`]'s.
pub fn encode_frame_into(
    buf: &mut [u8],
    seed: Seed,
    lsn: u64,
    synced_lsn: u64,
    prev_crc: u32,
    kind: u8,
    payload: &[u8],
) -> u32 {
    let end = FRAME_HEADER_BYTES + payload.len();
    debug_assert_eq!(buf.len(), align_frame(end));
    buf[FRAME_LEN_OFFSET..FRAME_LEN_OFFSET + 4]
        .copy_from_slice(&(payload.len() as u32).to_le_bytes());
    buf[FRAME_LSN_OFFSET..FRAME_LSN_OFFSET + 8].copy_from_slice(&lsn.to_le_bytes());
    buf[FRAME_SYNCED_LSN_OFFSET..FRAME_SYNCED_LSN_OFFSET + 8]
        .copy_from_slice(&synced_lsn.to_le_bytes());
    buf[FRAME_PREV_CRC_OFFSET..FRAME_PREV_CRC_OFFSET + 4].copy_from_slice(&prev_crc.to_le_bytes());
    buf[FRAME_KIND_OFFSET] = kind;
    buf[FRAME_FLAGS_OFFSET..FRAME_HEADER_BYTES].fill(0);
    buf[FRAME_HEADER_BYTES..end].copy_from_slice(payload);
    buf[end..].fill(0);
    let mut hasher = seed.hasher();
    hasher.update(&buf[FRAME_LEN_OFFSET..end]);
    let crc = hasher.finalize();
    buf[FRAME_CRC_OFFSET..FRAME_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    crc
}

/// Why the bytes at a frame position are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFault {
    /// Fewer than 32 bytes left in the segment, and they are not all zero.
    Truncated {
        /// Bytes left.
        available: usize,
    },
    /// A header field holds a forbidden value.
    Header(&'static str),
    /// The payload length runs past the end of the segment.
    LengthOutOfBounds {
        /// Payload length found.
        len: u32,
        /// Bytes left after the header.
        available: usize,
    },
    /// The checksum does not match.
    Checksum {
        /// Stored checksum.
        stored: u32,
        /// Computed checksum.
        computed: u32,
    },
}

/// What lies at a frame position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCheck {
    /// An all-zero header (or fewer than 32 bytes left, all zero): the end of written data.
    End,
    /// A frame whose checksum verifies under the segment's seed. Its LSN and chain link are
    /// not checked here: that is the scanner's job.
    Valid(FrameHeader),
    /// Not a valid frame.
    Invalid(FrameFault),
}

/// Checks the 32 header bytes of a frame (`h`), with `available` bytes left in the segment
/// after them, in the order of `journal-format.md` §3.4: kind and LSN in range, flags and
/// reserved zero, payload length non-zero and within the segment. The checksum is not
/// verified here. The caller has already ruled out an all-zero header (the end marker).
pub fn parse_frame_header(h: &[u8], available: usize) -> Result<FrameHeader, FrameFault> {
    let kind = h[FRAME_KIND_OFFSET];
    let lsn = le_u64(h, FRAME_LSN_OFFSET);
    if kind == 0 {
        return Err(FrameFault::Header("kind is zero"));
    }
    if lsn == 0 {
        return Err(FrameFault::Header("LSN is zero"));
    }
    if lsn > LSN_MAX {
        return Err(FrameFault::Header("LSN is out of range"));
    }
    if h[FRAME_FLAGS_OFFSET] != 0
        || h[FRAME_RESERVED_OFFSET] != 0
        || h[FRAME_RESERVED_OFFSET + 1] != 0
    {
        return Err(FrameFault::Header("reserved bits are set"));
    }
    let payload_len = le_u32(h, FRAME_LEN_OFFSET);
    if payload_len == 0 {
        return Err(FrameFault::Header("payload length is zero"));
    }
    if payload_len as usize > available {
        return Err(FrameFault::LengthOutOfBounds {
            len: payload_len,
            available,
        });
    }
    Ok(FrameHeader {
        crc: le_u32(h, FRAME_CRC_OFFSET),
        payload_len,
        lsn,
        synced_lsn: le_u64(h, FRAME_SYNCED_LSN_OFFSET),
        prev_crc: le_u32(h, FRAME_PREV_CRC_OFFSET),
        kind,
    })
}

/// Examines the bytes at a frame position. `rest` runs from the frame position to the end of
/// the segment (or at least to the end of the frame and its padding). Never panics, whatever
/// the bytes.
///
/// Checks, in order: room for a header; all-zero header (end of data); the header fields
/// ([`parse_frame_header`]); padding zero; checksum.
pub fn check_frame(rest: &[u8], seed: Seed) -> FrameCheck {
    if rest.len() < FRAME_HEADER_BYTES {
        return if rest.iter().all(|&b| b == 0) {
            FrameCheck::End
        } else {
            FrameCheck::Invalid(FrameFault::Truncated {
                available: rest.len(),
            })
        };
    }
    let h = &rest[..FRAME_HEADER_BYTES];
    if h.iter().all(|&b| b == 0) {
        return FrameCheck::End;
    }
    let header = match parse_frame_header(h, rest.len() - FRAME_HEADER_BYTES) {
        Ok(header) => header,
        Err(fault) => return FrameCheck::Invalid(fault),
    };
    let payload_len = header.payload_len;
    // Padding is not checksummed, so it is checked for zeros instead: a flip anywhere in a
    // frame is detected. (At the very end of a segment the padding may be cut off.)
    let end = FRAME_HEADER_BYTES + payload_len as usize;
    let padded = align_frame(end).min(rest.len());
    if rest[end..padded].iter().any(|&b| b != 0) {
        return FrameCheck::Invalid(FrameFault::Header("padding is not zero"));
    }
    let mut hasher = seed.hasher();
    hasher.update(&h[FRAME_LEN_OFFSET..]);
    hasher.update(&rest[FRAME_HEADER_BYTES..end]);
    let computed = hasher.finalize();
    if header.crc != computed {
        return FrameCheck::Invalid(FrameFault::Checksum {
            stored: header.crc,
            computed,
        });
    }
    FrameCheck::Valid(header)
}

/// The first LSN after a gap, read from a gap frame's payload; `None` if the payload is too
/// short to hold it.
pub fn gap_end(payload: &[u8]) -> Option<u64> {
    (payload.len() >= 8).then(|| le_u64(payload, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn seed() -> Seed {
        Seed::new(Uuid::from_bytes([3; 16]), 5)
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let h = seal_frame(seed(), 12, 11, 0xDEAD_BEEF, 1, payload);
        let mut v = h.to_vec();
        v.extend_from_slice(payload);
        v.resize(frame_bytes(payload.len()), 0);
        v
    }

    #[test]
    fn round_trip() {
        let f = frame(b"hello world");
        match check_frame(&f, seed()) {
            FrameCheck::Valid(h) => {
                assert_eq!(h.lsn, 12);
                assert_eq!(h.synced_lsn, 11);
                assert_eq!(h.prev_crc, 0xDEAD_BEEF);
                assert_eq!(h.kind, 1);
                assert_eq!(h.payload_len, 11);
                assert_eq!(h.frame_bytes(), 48);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn in_place_encoding_equals_seal_frame() {
        for len in [1usize, 7, 8, 9, 128, 1000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            let mut buf = vec![0xEEu8; frame_bytes(len)];
            let crc = encode_frame_into(&mut buf, seed(), 12, 11, 0xDEAD_BEEF, 1, &payload);
            let mut want = seal_frame(seed(), 12, 11, 0xDEAD_BEEF, 1, &payload).to_vec();
            want.extend_from_slice(&payload);
            want.resize(frame_bytes(len), 0);
            assert_eq!(buf, want, "len {len}");
            assert_eq!(crc, le_u32(&want, 0));
        }
    }

    #[test]
    fn all_zero_is_the_end_and_never_a_frame() {
        assert_eq!(check_frame(&[0u8; 64], seed()), FrameCheck::End);
        assert_eq!(check_frame(&[0u8; 7], seed()), FrameCheck::End);
        assert_eq!(check_frame(&[], seed()), FrameCheck::End);
    }

    #[test]
    fn frame_from_another_segment_or_journal_never_validates() {
        let f = frame(b"payload");
        assert!(matches!(
            check_frame(&f, Seed::new(Uuid::from_bytes([3; 16]), 6)),
            FrameCheck::Invalid(FrameFault::Checksum { .. })
        ));
        assert!(matches!(
            check_frame(&f, Seed::new(Uuid::from_bytes([4; 16]), 5)),
            FrameCheck::Invalid(FrameFault::Checksum { .. })
        ));
    }

    #[test]
    fn corrupt_crc() {
        let mut f = frame(b"abc");
        f[FRAME_CRC_OFFSET] ^= 1;
        assert!(matches!(
            check_frame(&f, seed()),
            FrameCheck::Invalid(FrameFault::Checksum { .. })
        ));
    }

    #[test]
    fn corrupt_len() {
        let mut f = frame(b"abcdefgh");
        f[FRAME_LEN_OFFSET] = 7; // the last payload byte now lands in the padding
        assert_eq!(
            check_frame(&f, seed()),
            FrameCheck::Invalid(FrameFault::Header("padding is not zero"))
        );
        let mut f = frame(b"abcdefgh");
        f[FRAME_LEN_OFFSET] = 1;
        assert!(matches!(
            check_frame(&f, seed()),
            FrameCheck::Invalid(FrameFault::Header("padding is not zero"))
        ));
        let mut f = frame(b"abcdefghijklmnop");
        f[FRAME_LEN_OFFSET] = 9;
        assert!(matches!(
            check_frame(&f, seed()),
            FrameCheck::Invalid(FrameFault::Header("padding is not zero"))
        ));
        let mut f = frame(&[0u8; 16]);
        f[FRAME_LEN_OFFSET] = 9; // padding happens to be zero: the checksum catches it
        assert!(matches!(
            check_frame(&f, seed()),
            FrameCheck::Invalid(FrameFault::Checksum { .. })
        ));
        let mut f = frame(b"abcdefgh");
        f[FRAME_LEN_OFFSET + 3] = 0x80;
        assert!(matches!(
            check_frame(&f, seed()),
            FrameCheck::Invalid(FrameFault::LengthOutOfBounds { .. })
        ));
        let mut f = frame(b"abcdefgh");
        f[FRAME_LEN_OFFSET..FRAME_LEN_OFFSET + 4].fill(0);
        assert_eq!(
            check_frame(&f, seed()),
            FrameCheck::Invalid(FrameFault::Header("payload length is zero"))
        );
    }

    #[test]
    fn corrupt_lsn() {
        let mut f = frame(b"abc");
        f[FRAME_LSN_OFFSET] ^= 2;
        assert!(matches!(
            check_frame(&f, seed()),
            FrameCheck::Invalid(FrameFault::Checksum { .. })
        ));
        let mut f = frame(b"abc");
        f[FRAME_LSN_OFFSET..FRAME_LSN_OFFSET + 8].fill(0);
        assert_eq!(
            check_frame(&f, seed()),
            FrameCheck::Invalid(FrameFault::Header("LSN is zero"))
        );
    }

    #[test]
    fn corrupt_synced_lsn_and_prev_crc() {
        for at in [FRAME_SYNCED_LSN_OFFSET, FRAME_PREV_CRC_OFFSET] {
            let mut f = frame(b"abc");
            f[at] ^= 4;
            assert!(matches!(
                check_frame(&f, seed()),
                FrameCheck::Invalid(FrameFault::Checksum { .. })
            ));
        }
    }

    #[test]
    fn corrupt_kind_flags_reserved() {
        let mut f = frame(b"abc");
        f[FRAME_KIND_OFFSET] = 0;
        assert_eq!(
            check_frame(&f, seed()),
            FrameCheck::Invalid(FrameFault::Header("kind is zero"))
        );
        let mut f = frame(b"abc");
        f[FRAME_KIND_OFFSET] = 2;
        assert!(matches!(
            check_frame(&f, seed()),
            FrameCheck::Invalid(FrameFault::Checksum { .. })
        ));
        for at in [
            FRAME_FLAGS_OFFSET,
            FRAME_RESERVED_OFFSET,
            FRAME_RESERVED_OFFSET + 1,
        ] {
            let mut f = frame(b"abc");
            f[at] = 1;
            assert_eq!(
                check_frame(&f, seed()),
                FrameCheck::Invalid(FrameFault::Header("reserved bits are set"))
            );
        }
    }

    #[test]
    fn corrupt_payload_every_bit() {
        let f = frame(b"0123456789");
        for i in FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + 10 {
            for bit in 0..8 {
                let mut g = f.clone();
                g[i] ^= 1 << bit;
                assert!(matches!(check_frame(&g, seed()), FrameCheck::Invalid(_)));
            }
        }
    }

    #[test]
    fn corrupt_padding() {
        let mut f = frame(b"abc");
        assert_eq!(f.len(), 40);
        f[39] = 1;
        assert_eq!(
            check_frame(&f, seed()),
            FrameCheck::Invalid(FrameFault::Header("padding is not zero"))
        );
    }

    #[test]
    fn truncated_frames() {
        let f = frame(b"0123456789abcdef");
        for n in 1..f.len() - 1 {
            let got = check_frame(&f[..n], seed());
            // the padding at the end is not covered; everything before must be refused
            if n < FRAME_HEADER_BYTES + 16 {
                assert!(matches!(got, FrameCheck::Invalid(_)), "len {n}: {got:?}");
            }
        }
    }

    #[test]
    fn alignment() {
        assert_eq!(frame_bytes(1), 40);
        assert_eq!(frame_bytes(8), 40);
        assert_eq!(frame_bytes(9), 48);
        assert_eq!(frame_bytes(128), 160);
    }
}
