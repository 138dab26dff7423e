//! The `decode_record` target: the pure codecs of `syncjournal::format` (frames, segment
//! headers, acknowledgement slots and files) on arbitrary bytes.

use syncjournal::format::{
    ACK_FILE_BYTES, ACK_MAGIC, ACK_SLOT_BYTES, ACK_SLOT_OFFSETS, AckSlot, AckSlotError,
    FRAME_CRC_OFFSET, FRAME_FLAGS_OFFSET, FRAME_HEADER_BYTES, FRAME_KIND_OFFSET, FRAME_LEN_OFFSET,
    FRAME_LSN_OFFSET, FRAME_PREV_CRC_OFFSET, FRAME_RESERVED_OFFSET, FRAME_SYNCED_LSN_OFFSET,
    FrameCheck, FrameFault, HEADER_LEN_OFFSET, HeaderError, KIND_GAP, LSN_MAX, SEGMENT_BYTES_ALIGN,
    SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, SEGMENT_SEQ_MAX,
    Seed, SegmentHeader, VERSION_OFFSET, check_frame, decode_ack_file, gap_end, le_u16, le_u32,
    le_u64, seal_frame,
};
use uuid::Uuid;

use crate::checks::common::{Bytes, fuzz_seed};

/// The `decode_record` target: arbitrary bytes through `check_frame` (under fixed seeds and a
/// seed read from the input), `SegmentHeader::decode`, `AckSlot::decode` and
/// `decode_ack_file`, with round-trip and consistency properties.
pub fn check_decode_record(data: &[u8]) {
    check_frame_properties(data, fuzz_seed(1));
    check_frame_properties(data, Seed::new(Uuid::nil(), 0));
    if data.len() >= 24 {
        // A seed chosen by the input: journal id (16 bytes) and segment sequence (8 bytes),
        // then the frame.
        let mut id = [0u8; 16];
        id.copy_from_slice(&data[..16]);
        let seed = Seed::new(Uuid::from_bytes(id), le_u64(data, 16));
        check_frame_properties(&data[24..], seed);
    }
    check_header_properties(data);
    check_ack_properties(data);
}

/// Properties of `check_frame(rest, seed)`, whatever the bytes.
pub fn check_frame_properties(rest: &[u8], seed: Seed) {
    let got = check_frame(rest, seed);
    assert_eq!(
        got,
        check_frame(rest, seed),
        "check_frame is not deterministic"
    );
    let zero = |b: &[u8]| b.iter().all(|&x| x == 0);
    match got {
        FrameCheck::End => assert!(
            zero(&rest[..rest.len().min(FRAME_HEADER_BYTES)]),
            "End reported for a non-zero header"
        ),
        FrameCheck::Invalid(FrameFault::Truncated { available }) => {
            assert!(rest.len() < FRAME_HEADER_BYTES && !zero(rest));
            assert_eq!(available, rest.len(), "Truncated reports the wrong length");
        }
        FrameCheck::Invalid(FrameFault::Header(reason)) => {
            assert!(rest.len() >= FRAME_HEADER_BYTES && !zero(&rest[..FRAME_HEADER_BYTES]));
            let h = &rest[..FRAME_HEADER_BYTES];
            let ok = match reason {
                "kind is zero" => h[FRAME_KIND_OFFSET] == 0,
                "LSN is zero" => le_u64(h, FRAME_LSN_OFFSET) == 0,
                "LSN is out of range" => le_u64(h, FRAME_LSN_OFFSET) > LSN_MAX,
                "reserved bits are set" => {
                    h[FRAME_FLAGS_OFFSET] != 0 || le_u16(h, FRAME_RESERVED_OFFSET) != 0
                }
                "payload length is zero" => le_u32(h, FRAME_LEN_OFFSET) == 0,
                "padding is not zero" => {
                    let end = FRAME_HEADER_BYTES + le_u32(h, FRAME_LEN_OFFSET) as usize;
                    end <= rest.len() && !zero(&rest[end..frame_bytes_clipped(end, rest.len())])
                }
                _ => false,
            };
            assert!(ok, "check_frame reason {reason:?} does not match the bytes");
        }
        FrameCheck::Invalid(FrameFault::LengthOutOfBounds { len, available }) => {
            assert!(rest.len() >= FRAME_HEADER_BYTES);
            assert_eq!(available, rest.len() - FRAME_HEADER_BYTES);
            assert_eq!(len, le_u32(rest, FRAME_LEN_OFFSET));
            assert!(
                len as usize > available,
                "in-bounds length reported out of bounds"
            );
        }
        FrameCheck::Invalid(FrameFault::Checksum { stored, computed }) => {
            assert_ne!(stored, computed, "checksum fault with matching checksums");
            assert_eq!(stored, le_u32(rest, FRAME_CRC_OFFSET));
            let len = le_u32(rest, FRAME_LEN_OFFSET) as usize;
            let resealed = seal_frame(
                seed,
                le_u64(rest, FRAME_LSN_OFFSET),
                le_u64(rest, FRAME_SYNCED_LSN_OFFSET),
                le_u32(rest, FRAME_PREV_CRC_OFFSET),
                rest[FRAME_KIND_OFFSET],
                &rest[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len],
            );
            assert_eq!(
                computed,
                le_u32(&resealed, FRAME_CRC_OFFSET),
                "check_frame and seal_frame compute different checksums"
            );
        }
        FrameCheck::Valid(h) => check_valid_frame(rest, seed, h),
    }
}

fn frame_bytes_clipped(end: usize, len: usize) -> usize {
    syncjournal::format::align_frame(end).min(len)
}

fn check_valid_frame(rest: &[u8], seed: Seed, h: syncjournal::format::FrameHeader) {
    let len = h.payload_len as usize;
    assert!(
        h.kind != 0 && (1..=LSN_MAX).contains(&h.lsn) && len >= 1,
        "invalid fields accepted: {h:?}"
    );
    assert!(FRAME_HEADER_BYTES + len <= rest.len());
    assert_eq!(h.crc, le_u32(rest, FRAME_CRC_OFFSET));
    assert_eq!(h.payload_len, le_u32(rest, FRAME_LEN_OFFSET));
    assert_eq!(h.lsn, le_u64(rest, FRAME_LSN_OFFSET));
    assert_eq!(h.synced_lsn, le_u64(rest, FRAME_SYNCED_LSN_OFFSET));
    assert_eq!(h.prev_crc, le_u32(rest, FRAME_PREV_CRC_OFFSET));
    assert_eq!(h.kind, rest[FRAME_KIND_OFFSET]);
    assert_eq!(rest[FRAME_FLAGS_OFFSET], 0);
    assert_eq!(le_u16(rest, FRAME_RESERVED_OFFSET), 0);
    let fb = h.frame_bytes();
    assert!(fb >= 40 && fb.is_multiple_of(8) && fb - FRAME_HEADER_BYTES - len < 8);
    let payload = &rest[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len];
    let sealed = seal_frame(seed, h.lsn, h.synced_lsn, h.prev_crc, h.kind, payload);
    assert_eq!(
        sealed[..],
        rest[..FRAME_HEADER_BYTES],
        "re-sealing a valid frame's fields does not reproduce its header"
    );
    // Bytes after the frame do not matter; padding cut off at the end of the data does not
    // matter either.
    let own = &rest[..fb.min(rest.len())];
    assert_eq!(check_frame(own, seed), FrameCheck::Valid(h));
    assert_eq!(
        check_frame(&rest[..FRAME_HEADER_BYTES + len], seed),
        FrameCheck::Valid(h)
    );
    let mut padded = own.to_vec();
    padded.resize(fb + 64, 0);
    assert_eq!(check_frame(&padded, seed), FrameCheck::Valid(h));
    // A frame verifies under one seed only (CRC-32 with different initial states never agrees
    // on the same message).
    let other = Seed::new(Uuid::from_u128(0x5eed), h.lsn);
    if other != seed {
        assert!(
            !matches!(check_frame(own, other), FrameCheck::Valid(_)),
            "a frame verifies under two seeds"
        );
    }
    if let Some(end) = (h.kind == KIND_GAP).then(|| gap_end(payload)).flatten() {
        assert_eq!(end, le_u64(payload, 0));
    }
    // Any single flipped bit outside the length field is detected (CRC-32 detects every
    // single-bit error; the padding is checked for zeros; the length field is left out, since a
    // different length checksums a different message).
    let mut g = own.to_vec();
    let positions = (0..own.len())
        .filter(|i| !(FRAME_LEN_OFFSET..FRAME_LEN_OFFSET + 4).contains(i))
        .filter(|&i| i < FRAME_HEADER_BYTES || i + 1 == own.len() || i % 61 == 7);
    for i in positions {
        let bit = 1u8 << ((i + usize::from(own[i])) % 8);
        g[i] ^= bit;
        assert!(
            !matches!(check_frame(&g, seed), FrameCheck::Valid(_)),
            "flipping bit {bit:#04x} of byte {i} of a valid frame went unnoticed"
        );
        g[i] ^= bit;
    }
}

/// Properties of `SegmentHeader::decode`, and a round trip through a header built from the
/// input.
pub fn check_header_properties(data: &[u8]) {
    match SegmentHeader::decode(data) {
        Ok((h, crc)) => {
            let enc = h.encode();
            assert_eq!(
                enc[..],
                data[..SEGMENT_HEADER_BYTES],
                "a decoded header does not re-encode to the same 64 bytes"
            );
            assert_eq!(crc, SegmentHeader::crc_of(&enc));
            assert!((1..=LSN_MAX).contains(&h.first_lsn));
        }
        Err(HeaderError::TooShort { len }) => {
            assert_eq!(len, data.len());
            assert!(len < 12 || len < usize::from(le_u16(data, HEADER_LEN_OFFSET)));
        }
        Err(HeaderError::BadMagic { found }) => {
            assert_eq!(found[..], data[..8]);
            assert_ne!(found, SEGMENT_MAGIC);
        }
        Err(HeaderError::BadHeaderLen { found }) => {
            assert_eq!(found, le_u16(data, HEADER_LEN_OFFSET));
            assert!(!(16..=4096).contains(&found));
        }
        Err(HeaderError::Checksum { stored, computed }) => assert_ne!(stored, computed),
        Err(HeaderError::UnsupportedVersion { found }) => {
            assert_ne!(found, 1);
            assert_eq!(found, le_u16(data, VERSION_OFFSET));
        }
        Err(HeaderError::Field {
            found, expected, ..
        }) => assert_ne!(found, expected),
        Err(HeaderError::OutOfRange {
            found,
            min,
            max,
            multiple_of,
            ..
        }) => assert!(!(min..=max).contains(&found) || !found.is_multiple_of(multiple_of)),
    }
    // Round trip of a header whose fields come from the input (in the ranges the format
    // allows).
    let mut b = Bytes::new(data);
    let mut id = [0u8; 16];
    id.iter_mut().for_each(|x| *x = b.u8());
    let h = SegmentHeader {
        journal_id: Uuid::from_bytes(id),
        segment_seq: b.u64().clamp(1, SEGMENT_SEQ_MAX),
        first_lsn: b.u64().clamp(1, LSN_MAX),
        segment_bytes: (b.u64() % (SEGMENT_BYTES_MAX / SEGMENT_BYTES_ALIGN) * SEGMENT_BYTES_ALIGN)
            .max(SEGMENT_BYTES_MIN),
    };
    let enc = h.encode();
    let crc = SegmentHeader::crc_of(&enc);
    assert_eq!(
        SegmentHeader::decode(&enc),
        Ok((h, crc)),
        "header round trip"
    );
    let mut longer = enc.to_vec();
    longer.extend_from_slice(data);
    assert_eq!(SegmentHeader::decode(&longer), Ok((h, crc)));
    for n in [0, 11, 12, SEGMENT_HEADER_BYTES - 1] {
        assert!(matches!(
            SegmentHeader::decode(&enc[..n]),
            Err(HeaderError::TooShort { .. })
        ));
    }
    let mut g = enc;
    for i in 0..SEGMENT_HEADER_BYTES * 8 {
        g[i / 8] ^= 1 << (i % 8);
        assert!(
            SegmentHeader::decode(&g).is_err(),
            "flipping bit {} of header byte {} went unnoticed",
            i % 8,
            i / 8
        );
        g[i / 8] ^= 1 << (i % 8);
    }
}

/// Properties of `AckSlot::decode` and `decode_ack_file`.
pub fn check_ack_properties(data: &[u8]) {
    check_ack_slot(data);
    check_ack_file(data);
    // A compact form: the two slots from the first 128 input bytes, at their file offsets.
    let mut file = vec![0u8; ACK_FILE_BYTES];
    for (i, &at) in ACK_SLOT_OFFSETS.iter().enumerate() {
        let from = (i * ACK_SLOT_BYTES).min(data.len());
        let to = ((i + 1) * ACK_SLOT_BYTES).min(data.len());
        file[at..at + to - from].copy_from_slice(&data[from..to]);
    }
    check_ack_slot(&file[ACK_SLOT_OFFSETS[1]..]);
    check_ack_file(&file);
    // Round trip of slots whose fields come from the input; the newer generation wins.
    let mut b = Bytes::new(data);
    let mut id = [0u8; 16];
    id.iter_mut().for_each(|x| *x = b.u8());
    // (An acknowledged LSN beyond LSN_MAX is refused on decode: keep it in range.)
    let slot = AckSlot {
        journal_id: Uuid::from_bytes(id),
        generation: b.u64(),
        acked_lsn: b.u64().min(LSN_MAX),
        acked_at_ms: b.u64(),
    };
    assert_eq!(
        AckSlot::decode(&slot.encode()),
        Ok(slot),
        "ack slot round trip"
    );
    let newer = AckSlot {
        generation: slot.generation.wrapping_add(1),
        acked_lsn: b.u64().min(LSN_MAX),
        ..slot
    };
    let mut file = vec![0u8; ACK_FILE_BYTES];
    for s in [slot, newer] {
        file[s.offset()..s.offset() + ACK_SLOT_BYTES].copy_from_slice(&s.encode());
    }
    let want = if newer.generation > slot.generation {
        newer
    } else {
        slot
    };
    assert_eq!(decode_ack_file(&file), Ok(want), "the newest slot must win");
    // A torn newest slot falls back to the other one.
    file[want.offset() + 40] ^= 0x10;
    let other = if want == newer { slot } else { newer };
    assert_eq!(decode_ack_file(&file), Ok(other), "torn slot fallback");
}

fn check_ack_slot(data: &[u8]) {
    match AckSlot::decode(data) {
        Ok(s) => {
            let enc = s.encode();
            // The reserved bytes (10..16 and 56..60) are covered by the checksum but not
            // checked for zero, so only the fields are compared.
            assert_eq!(enc[..10], data[..10]);
            assert_eq!(enc[16..56], data[16..56]);
            // Reserved bytes are checked to be zero, so a decoded slot re-encodes exactly.
            assert_eq!(
                enc[..],
                data[..ACK_SLOT_BYTES],
                "a decoded ack slot does not re-encode to the same 64 bytes"
            );
            assert_eq!(AckSlot::decode(&enc), Ok(s));
        }
        Err(AckSlotError::TooShort) => assert!(data.len() < ACK_SLOT_BYTES),
        Err(AckSlotError::Empty) => assert!(data[..ACK_SLOT_BYTES].iter().all(|&x| x == 0)),
        Err(AckSlotError::BadMagic) => assert_ne!(data[..8], ACK_MAGIC),
        Err(AckSlotError::Checksum) => assert_eq!(data[..8], ACK_MAGIC),
        Err(AckSlotError::UnsupportedVersion(v)) => {
            assert_ne!(v, 1);
            assert_eq!(v, le_u16(data, 8));
        }
        Err(AckSlotError::Field) => {
            let reserved_zero = data[10..16].iter().chain(&data[56..60]).all(|&x| x == 0);
            assert!(!reserved_zero || le_u64(data, 40) > syncjournal::format::LSN_MAX);
        }
        Err(_) => {}
    }
}

fn check_ack_file(file: &[u8]) {
    let slot = |at: usize| {
        file.get(at..)
            .map_or(Err(AckSlotError::TooShort), AckSlot::decode)
    };
    let (a, b) = (slot(ACK_SLOT_OFFSETS[0]), slot(ACK_SLOT_OFFSETS[1]));
    match decode_ack_file(file) {
        Ok(s) => {
            let want = match (a, b) {
                (Ok(a), Ok(b)) => {
                    if b.generation > a.generation {
                        b
                    } else {
                        a
                    }
                }
                (Ok(a), Err(_)) => a,
                (Err(_), Ok(b)) => b,
                (Err(_), Err(_)) => {
                    panic!("decode_ack_file returned {s:?} though neither slot decodes")
                }
            };
            assert_eq!(
                s, want,
                "decode_ack_file did not pick the newest valid slot"
            );
        }
        Err([ea, eb]) => {
            assert_eq!(
                Err(ea),
                a,
                "decode_ack_file reports the wrong error for slot 0"
            );
            assert_eq!(
                Err(eb),
                b,
                "decode_ack_file reports the wrong error for slot 1"
            );
        }
    }
}
