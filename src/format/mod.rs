//! The on-disk format as pure functions over bytes: segment header, record frame, checksums,
//! acknowledgement slots. No I/O happens here, so everything in this module is fuzzed directly.
//!
//! `journal-format.md` at the crate root is the specification; the constants below are pinned
//! against it by `tests/journal/format_constants.rs`.

/// A log sequence number: the position of a record in the journal. The first record is 1;
/// 0 means "none". LSNs are contiguous and strictly increasing across segments (a gap record
/// left by salvage is the only exception, and it names the LSNs it stands for).
pub type Lsn = u64;

mod ack;
mod checksum;
mod frame;
mod head;
mod header;

pub use ack::{
    ACK_ACKED_AT_MS_OFFSET, ACK_ACKED_LSN_OFFSET, ACK_CRC_OFFSET, ACK_FILE_BYTES,
    ACK_GENERATION_OFFSET, ACK_JOURNAL_ID_OFFSET, ACK_MAGIC, ACK_MAGIC_OFFSET, ACK_RESERVED_OFFSET,
    ACK_RESERVED2_OFFSET, ACK_SLOT_BYTES, ACK_SLOT_OFFSETS, ACK_VERSION_OFFSET, AckSlot,
    AckSlotError, decode_ack_file,
};
pub use checksum::Seed;
pub use frame::{
    FRAME_ALIGN, FRAME_CRC_OFFSET, FRAME_FLAGS_OFFSET, FRAME_HEADER_BYTES, FRAME_KIND_OFFSET,
    FRAME_LEN_OFFSET, FRAME_LSN_OFFSET, FRAME_PREV_CRC_OFFSET, FRAME_RESERVED_OFFSET,
    FRAME_SYNCED_LSN_OFFSET, FrameCheck, FrameFault, FrameHeader, KIND_GAP, KIND_RESERVED_MIN,
    LSN_MAX, align_frame, check_frame, encode_frame_into, frame_bytes, gap_end, parse_frame_header,
    seal_frame,
};
pub use head::{
    HEAD_BYTES, HEAD_CRC_OFFSET, HEAD_DURABLE_LSN_OFFSET, HEAD_FILE_BYTES, HEAD_JOURNAL_ID_OFFSET,
    HEAD_MAGIC, HEAD_PID_OFFSET, HEAD_RESERVED_OFFSET, HEAD_RESERVED2_OFFSET,
    HEAD_UPDATED_AT_MS_OFFSET, HEAD_VERSION_OFFSET, Head,
};
pub use header::{
    FORMAT_VERSION, HEADER_CRC_OFFSET, HEADER_FLAGS_OFFSET, HEADER_LEN_OFFSET, HeaderError,
    JOURNAL_ID_OFFSET, MAGIC_OFFSET, SEGMENT_BYTES_ALIGN, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
    SEGMENT_BYTES_OFFSET, SEGMENT_DATA_OFFSET, SEGMENT_DATA_OFFSET_OFFSET,
    SEGMENT_FIRST_LSN_OFFSET, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, SEGMENT_SEQ_MAX,
    SEGMENT_SEQ_OFFSET, SegmentHeader, VERSION_OFFSET,
};

/// Reads a little-endian `u16` at `at`. Panics if `b` is shorter than `at + 2`.
pub fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Reads a little-endian `u32` at `at`. Panics if `b` is shorter than `at + 4`.
pub fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads a little-endian `u64` at `at`. Panics if `b` is shorter than `at + 8`.
pub fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}
