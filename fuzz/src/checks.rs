//! The property checks behind syncjournal's fuzz targets, and the input formats they decode.
//!
//! This file is compiled twice: as `syncjournal_fuzz::checks` for the libFuzzer targets in
//! `fuzz/fuzz_targets/`, and as a module of the integration test `tests/fuzz_corpus.rs`
//! (`#[path = "../fuzz/src/checks.rs"]`), which replays the committed corpus on stable. It must
//! therefore depend on nothing but syncjournal, std, tempfile and uuid.
//!
//! Every `check_*` function accepts arbitrary bytes and never panics except when a property of
//! the library does not hold; the message of the failed assertion names the property.
//!
//! Inputs of `scan_segment` and `recover_open` are small "programs" read by [`Bytes`]: a mode
//! byte, then the parameters of a generated segment ([`SegSpec`]: records, then mutations such
//! as bit flips, zeroed ranges, truncation). Missing bytes read as zero, so every input decodes.
//! The `encode` methods write the same format, for the seed corpus generator.

use std::path::Path;
use syncjournal::error::JournalError;

use syncjournal::format::{
    ACK_FILE_BYTES, ACK_MAGIC, ACK_SLOT_BYTES, ACK_SLOT_OFFSETS, AckSlot, AckSlotError,
    FRAME_CRC_OFFSET, FRAME_FLAGS_OFFSET, FRAME_HEADER_BYTES, FRAME_KIND_OFFSET, FRAME_LEN_OFFSET,
    FRAME_LSN_OFFSET, FRAME_PREV_CRC_OFFSET, FRAME_RESERVED_OFFSET, FRAME_SYNCED_LSN_OFFSET,
    FrameCheck, FrameFault, HEADER_LEN_OFFSET, HeaderError, KIND_GAP, LSN_MAX, SEGMENT_BYTES_ALIGN,
    SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_DATA_OFFSET, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC,
    SEGMENT_SEQ_MAX, Seed, SegmentHeader, VERSION_OFFSET, check_frame, decode_ack_file,
    frame_bytes, gap_end, le_u16, le_u32, le_u64, seal_frame,
};
use syncjournal::journal::scan::{DamagedRegion, ScanInput, SegmentScan, scan_segment};
use syncjournal::segment::{ACK_FILE, segment_file_name};
use syncjournal::{Error, Journal, JournalOptions, Lsn, Record, RecoveryMode};
use uuid::Uuid;

/// The journal id of every generated segment and acknowledgement file.
pub const FUZZ_JOURNAL_ID: [u8; 16] = *b"syncjournal-fuzz";
/// Size of the segments generated for `recover_open` (the smallest size the format allows).
pub const FUZZ_SEGMENT_BYTES: usize = 65536;
/// Most records in one generated segment.
pub const MAX_FRAMES: usize = 64;
/// Largest payload of a generated record.
pub const MAX_PAYLOAD: usize = 512;
/// Most mutations applied to one generated segment.
pub const MAX_MUTATIONS: usize = 8;
/// `recover_open` skips `Salvage` for a file whose header asks to be re-extended beyond this:
/// salvage would allocate (up to 1 GiB) of tmpfs for every such input.
pub const MAX_SALVAGE_EXTEND: u64 = 4 * FUZZ_SEGMENT_BYTES as u64;
/// With [`avoid_lsn_exhaustion`], generated first LSNs and acknowledged LSNs stay at or below
/// this.
pub const LSN_CAP: Lsn = 1 << 62;
/// Safety net against a reader that never reaches the end.
const MAX_RECORDS_READ: usize = 100_000;
/// Payload appended to every successfully recovered journal.
const APPENDED: &[u8] = b"appended after recovery";

/// True when `SYNCJOURNAL_FUZZ_AVOID_LSN_EXHAUSTION` is set (and not `0`): generated segments
/// and acknowledgement files then keep their LSNs at or below [`LSN_CAP`], far from `u64::MAX`.
/// Off by default. It exists to fuzz past the known crashes on LSN exhaustion (see
/// `fuzz/README.md`) while they are unfixed; inputs of the "raw" modes are unaffected.
pub fn avoid_lsn_exhaustion() -> bool {
    static AVOID: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVOID.get_or_init(|| {
        std::env::var_os("SYNCJOURNAL_FUZZ_AVOID_LSN_EXHAUSTION").is_some_and(|v| v != "0")
    })
}

fn cap_lsn(lsn: Lsn) -> Lsn {
    if avoid_lsn_exhaustion() {
        lsn.min(LSN_CAP)
    } else {
        lsn
    }
}

/// The fuzzing journal id.
pub fn fuzz_id() -> Uuid {
    Uuid::from_bytes(FUZZ_JOURNAL_ID)
}

/// The checksum seed of segment `seq` of the fuzzing journal.
pub fn fuzz_seed(seq: u64) -> Seed {
    Seed::new(fuzz_id(), seq)
}

// ---------------------------------------------------------------------------------------------
// Input decoding and encoding
// ---------------------------------------------------------------------------------------------

/// Reads little-endian integers from the fuzzer's bytes; past the end everything reads as zero.
#[derive(Debug, Clone)]
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }

    /// The next byte, or 0.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// The next `u64`.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

fn put_u16(out: &mut Vec<u8>, x: u16) {
    out.extend_from_slice(&x.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, x: u32) {
    out.extend_from_slice(&x.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, x: u64) {
    out.extend_from_slice(&x.to_le_bytes());
}

/// One generated record: 5 input bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSpec {
    /// Payload length is `1 + len % MAX_PAYLOAD` (at least 8 for a gap record).
    pub len: u16,
    /// Record kind; 0 becomes `KIND_DATA`, `KIND_GAP` makes a gap record.
    pub kind: u8,
    /// Payload pattern; for a gap record, `fill % 4` is the number of LSNs it skips.
    pub fill: u8,
    /// Low 4 bits: synced-LSN lag (policy 2) or claim (policy 3). Bit 7: after a gap record,
    /// store a `prev_crc` that does not chain (allowed there).
    pub aux: u8,
}

impl FrameSpec {
    /// A data record with a payload of `payload_len` bytes.
    pub fn data(payload_len: usize, fill: u8) -> Self {
        FrameSpec {
            len: (payload_len.clamp(1, MAX_PAYLOAD) - 1) as u16,
            kind: 1,
            fill,
            aux: 0,
        }
    }

    /// A gap record skipping `skip` LSNs (0..=3).
    pub fn gap(skip: u8) -> Self {
        FrameSpec {
            len: 7,
            kind: KIND_GAP,
            fill: skip,
            aux: 0,
        }
    }

    fn payload_len(&self) -> usize {
        1 + usize::from(self.len) % MAX_PAYLOAD
    }

    fn decode(b: &mut Bytes<'_>) -> Self {
        FrameSpec {
            len: b.u16(),
            kind: b.u8(),
            fill: b.u8(),
            aux: b.u8(),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_u16(out, self.len);
        out.extend_from_slice(&[self.kind, self.fill, self.aux]);
    }
}

/// One mutation of a generated segment: 9 input bytes. Offsets are taken modulo the segment
/// length at the time the mutation is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mutation {
    /// `op % 6`: 0 flip bit `b % 8` at `a`; 1 zero `1 + b % 4096` bytes at `a`; 2 fill
    /// `1 + b % 512` bytes at `a` with byte `c`; 3 truncate to `a % (len + 1)`; 4 copy
    /// `1 + c % 1024` bytes from `a` to `b`; 5 set the byte at `a` to `b`.
    pub op: u8,
    /// First operand (an offset, or the new length).
    pub a: u32,
    /// Second operand.
    pub b: u16,
    /// Third operand.
    pub c: u16,
}

impl Mutation {
    /// Flips bit `bit` of the byte at `at`.
    pub fn flip(at: usize, bit: u8) -> Self {
        Mutation {
            op: 0,
            a: at as u32,
            b: u16::from(bit),
            c: 0,
        }
    }

    /// Zeroes `len` (1..=4096) bytes at `at`.
    pub fn zero(at: usize, len: usize) -> Self {
        Mutation {
            op: 1,
            a: at as u32,
            b: (len.clamp(1, 4096) - 1) as u16,
            c: 0,
        }
    }

    /// Fills `len` (1..=512) bytes at `at` with `byte`.
    pub fn fill(at: usize, len: usize, byte: u8) -> Self {
        Mutation {
            op: 2,
            a: at as u32,
            b: (len.clamp(1, 512) - 1) as u16,
            c: u16::from(byte),
        }
    }

    /// Truncates the file to `len` bytes.
    pub fn truncate(len: usize) -> Self {
        Mutation {
            op: 3,
            a: len as u32,
            b: 0,
            c: 0,
        }
    }

    /// Copies `len` (1..=1024) bytes from `from` to `to` (< 65536).
    pub fn copy(from: usize, to: usize, len: usize) -> Self {
        Mutation {
            op: 4,
            a: from as u32,
            b: to as u16,
            c: (len.clamp(1, 1024) - 1) as u16,
        }
    }

    /// Sets the byte at `at`.
    pub fn set(at: usize, byte: u8) -> Self {
        Mutation {
            op: 5,
            a: at as u32,
            b: u16::from(byte),
            c: 0,
        }
    }

    fn decode(b: &mut Bytes<'_>) -> Self {
        Mutation {
            op: b.u8(),
            a: b.u32(),
            b: b.u16(),
            c: b.u16(),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.op);
        put_u32(out, self.a);
        put_u16(out, self.b);
        put_u16(out, self.c);
    }

    /// Applies the mutation to a segment's bytes.
    pub fn apply(&self, bytes: &mut Vec<u8>) {
        let len = bytes.len();
        if len == 0 {
            return;
        }
        let at = self.a as usize % len;
        match self.op % 6 {
            0 => bytes[at] ^= 1 << (self.b % 8),
            1 => {
                let end = len.min(at + 1 + usize::from(self.b) % 4096);
                bytes[at..end].fill(0);
            }
            2 => {
                let end = len.min(at + 1 + usize::from(self.b) % 512);
                bytes[at..end].fill(self.c as u8);
            }
            3 => bytes.truncate(self.a as usize % (len + 1)),
            4 => {
                let to = usize::from(self.b) % len;
                let n = (1 + usize::from(self.c) % 1024).min(len - at).min(len - to);
                bytes.copy_within(at..at + n, to);
            }
            _ => bytes[at] = self.b as u8,
        }
    }
}

/// A generated segment: its first LSN, records, trailing zeros and mutations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegSpec {
    /// `policy % 4` chooses the synced-LSN hints: 0 every earlier record durable (`lsn - 1`),
    /// 1 none (0), 2 a lagging, non-decreasing hint, 3 arbitrary claims (may exceed the LSN).
    pub policy: u8,
    /// First LSN selector: `< 160` → 1; `< 224` → `1 + lsn_val % 1_000_000`;
    /// `< 248` → `max(lsn_val, 1)`; else `u64::MAX - lsn_val % 64`.
    pub lsn_sel: u8,
    /// Operand of `lsn_sel`.
    pub lsn_val: u64,
    /// Zero bytes after the records (`tail % 4096`; `scan_segment` only: `recover_open`
    /// segments are always `FUZZ_SEGMENT_BYTES` long).
    pub tail: u16,
    /// The records (at most `MAX_FRAMES`).
    pub frames: Vec<FrameSpec>,
    /// The mutations (at most `MAX_MUTATIONS`), applied in order.
    pub mutations: Vec<Mutation>,
}

impl SegSpec {
    /// A segment starting at `first_lsn` with the given records, synced-LSN policy 0.
    pub fn new(first_lsn: Lsn, frames: Vec<FrameSpec>) -> Self {
        let (lsn_sel, lsn_val) = if first_lsn <= 1 {
            (0, 0)
        } else {
            (224, first_lsn)
        };
        SegSpec {
            policy: 0,
            lsn_sel,
            lsn_val,
            tail: 64,
            frames,
            mutations: Vec::new(),
        }
    }

    /// The first LSN this spec selects.
    pub fn first_lsn(&self) -> Lsn {
        cap_lsn(match self.lsn_sel {
            0..160 => 1,
            160..224 => 1 + self.lsn_val % 1_000_000,
            224..248 => self.lsn_val.max(1),
            _ => u64::MAX - self.lsn_val % 64,
        })
    }

    /// Reads a spec.
    pub fn decode(b: &mut Bytes<'_>) -> Self {
        let policy = b.u8();
        let lsn_sel = b.u8();
        let lsn_val = b.u64();
        let tail = b.u16();
        let n = usize::from(b.u8()) % (MAX_FRAMES + 1);
        let frames = (0..n).map(|_| FrameSpec::decode(b)).collect();
        let m = usize::from(b.u8()) % (MAX_MUTATIONS + 1);
        let mutations = (0..m).map(|_| Mutation::decode(b)).collect();
        SegSpec {
            policy,
            lsn_sel,
            lsn_val,
            tail,
            frames,
            mutations,
        }
    }

    /// Writes the spec in the format [`SegSpec::decode`] reads.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.policy);
        out.push(self.lsn_sel);
        put_u64(out, self.lsn_val);
        put_u16(out, self.tail);
        out.push(self.frames.len().min(MAX_FRAMES) as u8);
        for f in self.frames.iter().take(MAX_FRAMES) {
            f.encode(out);
        }
        out.push(self.mutations.len().min(MAX_MUTATIONS) as u8);
        for m in self.mutations.iter().take(MAX_MUTATIONS) {
            m.encode(out);
        }
    }
}

/// One record of a built segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltFrame {
    /// Offset of the frame.
    pub offset: usize,
    /// Offset after the frame (padding included).
    pub end: usize,
    /// The record's LSN.
    pub lsn: Lsn,
    /// The record's kind.
    pub kind: u8,
    /// The payload.
    pub payload: Vec<u8>,
    /// The synced-LSN hint.
    pub synced: Lsn,
    /// The stored checksum.
    pub crc: u32,
    /// For a gap record: the first LSN after the gap.
    pub gap_end: Option<Lsn>,
}

/// A segment built from a [`SegSpec`]: its clean bytes, the records in it, and the mutated
/// bytes.
#[derive(Debug, Clone)]
pub struct BuiltSegment {
    /// The segment header.
    pub header: SegmentHeader,
    /// The header checksum.
    pub header_crc: u32,
    /// The segment before mutation.
    pub clean: Vec<u8>,
    /// The segment after mutation.
    pub bytes: Vec<u8>,
    /// The records written.
    pub frames: Vec<BuiltFrame>,
    /// End of the written data.
    pub data_end: usize,
    /// The LSN after the last record; `None` if the segment breaks the format's LSN limits (a
    /// first LSN or a record LSN above `LSN_MAX`), so that it is not expected to scan clean.
    pub next_lsn: Option<Lsn>,
    /// Data records (gap records excluded).
    pub records: u64,
}

impl BuiltSegment {
    /// Builds segment `seq` of the fuzzing journal, starting at `first_lsn`. With `len`, the
    /// file has exactly that length (records that do not fit are dropped); otherwise it ends
    /// `spec.tail % 4096` bytes after the last record.
    pub fn build(spec: &SegSpec, seq: u64, first_lsn: Lsn, len: Option<usize>) -> Self {
        let max_len = len.unwrap_or(usize::MAX);
        // Pass 1: lay the records out (the header checksum, which the first record chains to,
        // covers the file length, so it is known only afterwards).
        let mut frames = Vec::new();
        let mut next = Some(first_lsn);
        let mut pos = SEGMENT_DATA_OFFSET;
        let mut records = 0;
        let mut synced_floor = 0;
        let mut breaks = Vec::new();
        for f in &spec.frames {
            let Some(lsn) = next else { break };
            let gap = f.kind == KIND_GAP;
            let kind = if f.kind == 0 { 1 } else { f.kind };
            let plen = if gap {
                f.payload_len().max(8)
            } else {
                f.payload_len()
            };
            let fb = frame_bytes(plen);
            if pos + fb > max_len {
                break;
            }
            let mut payload: Vec<u8> = (0..plen)
                .map(|i| f.fill.wrapping_add((i as u8).wrapping_mul(29)) ^ (i >> 8) as u8)
                .collect();
            let lag = u64::from(f.aux & 15);
            let (synced, gap_end) = if gap {
                let end = lsn.saturating_add(u64::from(f.fill % 4));
                payload.fill(0);
                payload[..8].copy_from_slice(&end.to_le_bytes());
                (0, Some(end))
            } else {
                let synced = match spec.policy % 4 {
                    0 => lsn - 1,
                    1 => 0,
                    2 => {
                        synced_floor = synced_floor.max(lsn.saturating_sub(1 + lag));
                        synced_floor
                    }
                    _ => first_lsn.saturating_add(lag),
                };
                (synced, None)
            };
            // After a gap record the chain link is not checked: maybe break it.
            let after_gap = frames
                .last()
                .is_some_and(|p: &BuiltFrame| p.gap_end.is_some());
            breaks.push(after_gap && f.aux & 0x80 != 0);
            frames.push(BuiltFrame {
                offset: pos,
                end: pos + fb,
                lsn,
                kind,
                payload,
                synced,
                crc: 0,
                gap_end,
            });
            pos += fb;
            next = match gap_end {
                Some(end) => Some(end),
                None => {
                    records += 1;
                    lsn.checked_add(1)
                }
            };
        }
        let frames_fit = frames.iter().all(|f: &BuiltFrame| f.lsn <= LSN_MAX);
        let len = len.unwrap_or(pos + usize::from(spec.tail) % 4096);
        let header = segment_header(seq, first_lsn, len as u64);
        let enc = header.encode();
        let header_crc = SegmentHeader::crc_of(&enc);
        // Pass 2: seal and write.
        let seed = fuzz_seed(seq);
        let mut clean = vec![0u8; len];
        clean[..SEGMENT_HEADER_BYTES].copy_from_slice(&enc);
        let mut prev_crc = header_crc;
        for (f, broken) in frames.iter_mut().zip(breaks) {
            if broken {
                prev_crc ^= 0xA5A5_A5A5;
            }
            let h = seal_frame(seed, f.lsn, f.synced, prev_crc, f.kind, &f.payload);
            f.crc = le_u32(&h, FRAME_CRC_OFFSET);
            prev_crc = f.crc;
            clean[f.offset..f.offset + FRAME_HEADER_BYTES].copy_from_slice(&h);
            let at = f.offset + FRAME_HEADER_BYTES;
            clean[at..at + f.payload.len()].copy_from_slice(&f.payload);
        }
        let mut bytes = clean.clone();
        for m in &spec.mutations {
            m.apply(&mut bytes);
        }
        BuiltSegment {
            header,
            header_crc,
            clean,
            bytes,
            frames,
            data_end: pos,
            next_lsn: next.filter(|_| first_lsn <= LSN_MAX && frames_fit),
            records,
        }
    }

    /// What the scanner needs besides the bytes.
    pub fn input(&self) -> ScanInput {
        ScanInput {
            seed: fuzz_seed(self.header.segment_seq),
            header_crc: self.header_crc,
            first_lsn: self.header.first_lsn,
        }
    }

    /// The first offset at which the mutated bytes differ from the clean ones (a truncation
    /// counts from the new end), or `None` if the mutations changed nothing.
    pub fn first_diff(&self) -> Option<usize> {
        let n = self.clean.len().min(self.bytes.len());
        match (0..n).find(|&i| self.clean[i] != self.bytes[i]) {
            Some(i) => Some(i),
            None if self.clean.len() != self.bytes.len() => Some(n),
            None => None,
        }
    }

    /// The records that lie entirely before the first mutated byte, up to the first one the
    /// format refuses (an LSN above `LSN_MAX`).
    pub fn intact_frames(&self) -> &[BuiltFrame] {
        let d = self.first_diff().unwrap_or(usize::MAX);
        let k = self
            .frames
            .iter()
            .take_while(|f| f.end <= d && f.lsn <= LSN_MAX)
            .count();
        &self.frames[..k]
    }

    /// The records a reader returns for this segment (empty gap records are skipped).
    pub fn expected_records(&self) -> Vec<Record> {
        expected_records(&self.frames)
    }
}

fn expected_records(frames: &[BuiltFrame]) -> Vec<Record> {
    frames
        .iter()
        .filter(|f| f.gap_end.is_none_or(|end| end > f.lsn))
        .map(|f| Record {
            lsn: f.lsn,
            kind: f.kind,
            payload: f.payload.clone(),
        })
        .collect()
}

/// The header of segment `seq` of the fuzzing journal.
pub fn segment_header(seq: u64, first_lsn: Lsn, segment_bytes: u64) -> SegmentHeader {
    SegmentHeader {
        journal_id: fuzz_id(),
        segment_seq: seq,
        first_lsn,
        segment_bytes,
    }
}

/// A segment of `len` bytes (at least the 4096-byte header block) with a valid header and
/// `body` copied at offset 4096 (as much as fits).
pub fn header_plus_body(seq: u64, first_lsn: Lsn, body: &[u8], len: usize) -> Vec<u8> {
    let len = len.max(SEGMENT_DATA_OFFSET);
    let mut file = vec![0u8; len];
    file[..SEGMENT_HEADER_BYTES]
        .copy_from_slice(&segment_header(seq, first_lsn, len as u64).encode());
    let n = body.len().min(len - SEGMENT_DATA_OFFSET);
    file[SEGMENT_DATA_OFFSET..SEGMENT_DATA_OFFSET + n].copy_from_slice(&body[..n]);
    file
}

// ---------------------------------------------------------------------------------------------
// decode_record
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// scan_segment
// ---------------------------------------------------------------------------------------------

/// An input of the `scan_segment` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanCase {
    /// Mode 0: the bytes are the whole segment file. The scan input comes from its header if
    /// that decodes, else it is the fuzzing journal's segment 1 at LSN 1.
    Raw(Vec<u8>),
    /// Mode 1: a valid header (segment 1, LSN 1), zeros to 4096, then these bytes.
    HeaderBody(Vec<u8>),
    /// Modes 2 and 3: a generated segment.
    Built(SegSpec),
}

impl ScanCase {
    /// Reads a case.
    pub fn decode(data: &[u8]) -> Self {
        let mut b = Bytes::new(data);
        match b.u8() % 4 {
            0 => ScanCase::Raw(b.rest().to_vec()),
            1 => ScanCase::HeaderBody(b.rest().to_vec()),
            _ => ScanCase::Built(SegSpec::decode(&mut b)),
        }
    }

    /// Writes the case in the format [`ScanCase::decode`] reads.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            ScanCase::Raw(bytes) => {
                out.push(0);
                out.extend_from_slice(bytes);
            }
            ScanCase::HeaderBody(bytes) => {
                out.push(1);
                out.extend_from_slice(bytes);
            }
            ScanCase::Built(spec) => {
                out.push(2);
                spec.encode(&mut out);
            }
        }
        out
    }
}

/// The `scan_segment` target: scans a segment built from the input and checks the scanner's
/// invariants; for a generated segment also that a clean segment scans exactly, and that the
/// records before the first mutated byte are all found.
pub fn check_scan_segment(data: &[u8]) {
    match ScanCase::decode(data) {
        ScanCase::Raw(file) => {
            scan_with_invariants(&file, raw_scan_input(&file));
        }
        ScanCase::HeaderBody(body) => {
            let file = header_plus_body(1, 1, &body, SEGMENT_DATA_OFFSET + body.len());
            let crc = le_u32(&file, SEGMENT_HEADER_BYTES - 4);
            let input = ScanInput {
                seed: fuzz_seed(1),
                header_crc: crc,
                first_lsn: 1,
            };
            scan_with_invariants(&file, input);
        }
        ScanCase::Built(spec) => {
            let seg = BuiltSegment::build(&spec, 1, spec.first_lsn(), None);
            check_built_scan(&seg);
        }
    }
}

/// The scan input for an arbitrary file: from its header if that decodes.
pub fn raw_scan_input(file: &[u8]) -> ScanInput {
    match SegmentHeader::decode(file) {
        Ok((h, crc)) => ScanInput {
            seed: Seed::new(h.journal_id, h.segment_seq),
            header_crc: crc,
            first_lsn: h.first_lsn,
        },
        Err(_) => ScanInput {
            seed: fuzz_seed(1),
            header_crc: if file.len() >= SEGMENT_HEADER_BYTES {
                le_u32(file, SEGMENT_HEADER_BYTES - 4)
            } else {
                0
            },
            first_lsn: 1,
        },
    }
}

/// Checks a generated segment's scans, clean and mutated.
pub fn check_built_scan(seg: &BuiltSegment) {
    let input = seg.input();
    let clean = scan_with_invariants(&seg.clean, input);
    if let Some(next) = seg.next_lsn {
        assert!(
            clean.regions.is_empty(),
            "damage reported in a clean segment: {:?}",
            clean.regions[0]
        );
        assert_eq!(
            clean.tail.records, seg.records,
            "records of a clean segment"
        );
        assert_eq!(clean.tail.next_lsn, next, "next LSN of a clean segment");
        assert_eq!(clean.tail.end, seg.data_end, "data end of a clean segment");
        assert_eq!(
            clean.tail.data_bytes,
            (seg.data_end - SEGMENT_DATA_OFFSET) as u64
        );
        assert_eq!(
            clean.tail.last_crc,
            seg.frames.last().map_or(seg.header_crc, |f| f.crc)
        );
        let gaps: Vec<(Lsn, Lsn)> = seg
            .frames
            .iter()
            .filter_map(|f| f.gap_end.map(|e| (f.lsn, e)))
            .collect();
        assert_eq!(clean.gaps, gaps, "gaps of a clean segment");
        let claim = seg.frames.iter().map(|f| f.synced).max().unwrap_or(0);
        assert_eq!(clean.max_synced_claim, claim);
        check_index(&clean, &seg.frames);
    }
    if seg.first_diff().is_none() {
        return;
    }
    let scan = scan_with_invariants(&seg.bytes, input);
    let intact = seg.intact_frames();
    let intact_end = intact.last().map_or(SEGMENT_DATA_OFFSET, |f| f.end);
    let intact_records = intact.iter().filter(|f| f.gap_end.is_none()).count() as u64;
    let before = scan.regions.first().map_or(scan.tail, |r| r.before);
    assert!(
        before.end >= intact_end.min(seg.bytes.len()) && before.records >= intact_records,
        "damage after the first {} records hides some of them: first damage {:?}, tail {:?}",
        intact.len(),
        scan.regions.first(),
        scan.tail
    );
    // A data record's LSN is never shared with a later frame, so its floor entry is at or
    // before it.
    for f in intact.iter().filter(|f| f.gap_end.is_none()) {
        assert!(
            scan.index
                .floor(f.lsn)
                .is_some_and(|(l, off)| l <= f.lsn && off <= f.offset),
            "intact record {} cannot be found through the index",
            f.lsn
        );
    }
}

/// Every record of a clean segment is found through the index: the floor entry of its LSN
/// names a record at or before it (or at the last record sharing its LSN: an empty gap record
/// shares its LSN with the record after it, and that one is indexed).
fn check_index(scan: &SegmentScan, frames: &[BuiltFrame]) {
    for f in frames {
        let Some((lsn, off)) = scan.index.floor(f.lsn) else {
            panic!("no index entry at or before LSN {}", f.lsn);
        };
        let last_same = frames
            .iter()
            .filter(|g| g.lsn == f.lsn)
            .map(|g| g.offset)
            .max()
            .unwrap_or(f.offset);
        assert!(
            lsn <= f.lsn && off <= last_same,
            "index entry past LSN {}",
            f.lsn
        );
        assert!(
            frames.iter().any(|g| g.offset == off && g.lsn == lsn),
            "index entry ({lsn}, {off}) names no record"
        );
    }
}

/// Scans `bytes` and checks the invariants that hold whatever the bytes. Returns the scan.
pub fn scan_with_invariants(bytes: &[u8], input: ScanInput) -> SegmentScan {
    let scan = scan_segment(bytes, input);
    let len = bytes.len();
    let start = SEGMENT_DATA_OFFSET.min(len);
    let t = scan.tail;
    assert!(
        t.end >= start && t.end <= len,
        "tail end {} outside [{start}, {len}]",
        t.end
    );
    assert!(
        t.data_bytes <= (t.end - start) as u64 + 7,
        "{} bytes of valid frames before offset {}",
        t.data_bytes,
        t.end
    );
    assert!(
        t.records * 40 <= t.data_bytes,
        "{} records in {} bytes",
        t.records,
        t.data_bytes
    );
    let mut prev_end = start;
    let mut prev_lsn = input.first_lsn;
    let mut prev_claim = u64::MAX;
    for (i, r) in scan.regions.iter().enumerate() {
        assert!(
            r.offset >= prev_end && r.offset < r.end && r.end <= len,
            "region {i} [{}, {}) overlaps, is empty or ends past {len} (previous end {prev_end})",
            r.offset,
            r.end
        );
        assert_eq!(r.offset % 8, 0, "unaligned damaged region at {}", r.offset);
        assert_eq!(
            r.before.end, r.offset,
            "region {i} does not start at the scan point"
        );
        assert!(
            r.before.next_lsn >= prev_lsn,
            "LSNs go backwards at region {i}"
        );
        assert!(r.claimed_after <= prev_claim && r.claimed_after <= scan.max_synced_claim);
        match r.resume_lsn {
            Some(lsn) => {
                assert!(lsn >= r.before.next_lsn, "resumed at a lower LSN");
                assert!(
                    matches!(check_frame(&bytes[r.end..], input.seed), FrameCheck::Valid(h) if h.lsn == lsn),
                    "region {i} resumes at {} where there is no valid frame with LSN {lsn}",
                    r.end
                );
            }
            None => assert_eq!(
                i + 1,
                scan.regions.len(),
                "only the last region may end without a resume point"
            ),
        }
        prev_end = r.end;
        prev_lsn = r.before.next_lsn;
        prev_claim = r.claimed_after;
    }
    match scan.regions.last() {
        Some(r) if r.resume_lsn.is_none() => {
            assert_eq!(
                t, r.before,
                "the tail must be the state before the trailing damage"
            )
        }
        Some(r) => assert!(t.end >= r.end && t.records >= r.before.records),
        None => {}
    }
    for &(a, b) in &scan.gaps {
        assert!(b >= a, "gap ({a}, {b}) ends before it starts");
    }
    // Rolling back to a region gives the state before it.
    for i in [0, scan.regions.len().saturating_sub(1)] {
        if i < scan.regions.len() {
            let mut s = scan.clone();
            s.truncate_at_region(i);
            assert_eq!(s.tail, scan.regions[i].before);
            assert_eq!(s.regions.len(), i);
        }
    }
    check_cut_rescans(bytes, input, &scan);
    scan
}

/// What recovery relies on: zeroing from a damaged region to the end of the segment (a tail
/// cut) leaves a segment that scans clean up to exactly the state before that region.
fn check_cut_rescans(bytes: &[u8], input: ScanInput, scan: &SegmentScan) {
    let Some(first) = scan.regions.first() else {
        return;
    };
    let mut cut = bytes.to_vec();
    cut[first.offset..].fill(0);
    let again = scan_segment(&cut, input);
    assert!(
        again.regions.is_empty(),
        "damage left after cutting at the first damaged region {}: {:?}",
        first.offset,
        again.regions[0]
    );
    assert_eq!(again.tail, first.before, "cutting at the first region");
    // Cutting only a trailing region keeps every earlier region as it was (unless the trailing
    // region starts at the previous region's resume point, which the cut destroys).
    let n = scan.regions.len();
    let last = &scan.regions[n - 1];
    if n < 2 || last.resume_lsn.is_some() || last.offset == scan.regions[n - 2].end {
        return;
    }
    let mut cut = bytes.to_vec();
    cut[last.offset..].fill(0);
    let again = scan_segment(&cut, input);
    assert_eq!(again.tail, last.before, "cutting the trailing region");
    assert_eq!(again.regions.len(), n - 1, "cutting the trailing region");
    for (a, b) in again.regions.iter().zip(&scan.regions) {
        assert!(
            same_region(a, b),
            "cutting the trailing region changed an earlier one: {b:?} became {a:?}"
        );
    }
}

/// Same region, except for its kind: a damaged frame's length may reach past the trailing
/// region, so zeroing that changes what is wrong with the frame (the computed checksum, or a
/// padding fault that becomes a checksum fault).
fn same_region(a: &DamagedRegion, b: &DamagedRegion) -> bool {
    a.offset == b.offset
        && a.end == b.end
        && a.before == b.before
        && a.resume_lsn == b.resume_lsn
        && a.claimed_after == b.claimed_after
}

// ---------------------------------------------------------------------------------------------
// recover_open
// ---------------------------------------------------------------------------------------------

/// The acknowledgement file of a `recover_open` case: `sel % 6` chooses 0 none; 1 valid,
/// acknowledged up to the LSN before the first segment; 2 valid, acknowledged up to `val`;
/// 3 two valid slots, the newer one `val % 16` further; 4 like 1 with bit `val >> 13 & 7` of byte
/// `val % 8192` flipped; 5 like 1 but for another journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckSpec {
    /// Selector.
    pub sel: u8,
    /// Operand.
    pub val: u64,
}

impl AckSpec {
    /// The `ACK` file bytes, if any, for a journal whose first LSN is `first_lsn`.
    pub fn file(&self, journal_id: Uuid, first_lsn: Lsn) -> Option<Vec<u8>> {
        let base = first_lsn.saturating_sub(1);
        let slot = |generation: u64, acked_lsn: Lsn, journal_id: Uuid| AckSlot {
            journal_id,
            generation,
            acked_lsn,
            acked_at_ms: 1_700_000_000_000,
        };
        let slots = match self.sel % 6 {
            0 => return None,
            1 | 4 => vec![slot(1, base, journal_id)],
            2 => vec![slot(1, cap_lsn(self.val), journal_id)],
            3 => vec![
                slot(1, base, journal_id),
                slot(2, base.saturating_add(self.val % 16), journal_id),
            ],
            _ => vec![slot(1, base, Uuid::from_u128(0xf0_4e16))],
        };
        let mut file = vec![0u8; ACK_FILE_BYTES];
        for s in slots {
            file[s.offset()..s.offset() + ACK_SLOT_BYTES].copy_from_slice(&s.encode());
        }
        if self.sel % 6 == 4 {
            file[(self.val % ACK_FILE_BYTES as u64) as usize] ^= 1 << ((self.val >> 13) & 7);
        }
        Some(file)
    }

    /// The acknowledged LSN, if the file is valid and of this journal.
    fn acked(&self, first_lsn: Lsn) -> Option<Lsn> {
        let base = first_lsn.saturating_sub(1);
        match self.sel % 6 {
            0 => Some(0),
            1 => Some(base),
            2 => Some(cap_lsn(self.val)),
            3 => Some(base.saturating_add(self.val % 16)),
            _ => None,
        }
    }
}

/// The files of a `recover_open` case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoverLayout {
    /// Layout 0: one segment of 64 KiB with a valid header and these bytes at offset 4096.
    HeaderBody(Vec<u8>),
    /// Layout 1: one segment file with exactly these bytes.
    Raw(Vec<u8>),
    /// Layout 2: one generated segment.
    One(SegSpec),
    /// Layout 3: two generated segments (the second's first LSN follows the first's records).
    Two(SegSpec, SegSpec),
}

/// An input of the `recover_open` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverCase {
    /// The acknowledgement file.
    pub ack: AckSpec,
    /// The segment files.
    pub layout: RecoverLayout,
}

impl RecoverCase {
    /// Reads a case.
    pub fn decode(data: &[u8]) -> Self {
        let mut b = Bytes::new(data);
        let layout = b.u8() % 4;
        let ack = AckSpec {
            sel: b.u8(),
            val: b.u64(),
        };
        let layout = match layout {
            0 => RecoverLayout::HeaderBody(b.rest().to_vec()),
            1 => RecoverLayout::Raw(b.rest().to_vec()),
            2 => RecoverLayout::One(SegSpec::decode(&mut b)),
            _ => {
                let first = SegSpec::decode(&mut b);
                RecoverLayout::Two(first, SegSpec::decode(&mut b))
            }
        };
        RecoverCase { ack, layout }
    }

    /// Writes the case in the format [`RecoverCase::decode`] reads.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![match self.layout {
            RecoverLayout::HeaderBody(_) => 0,
            RecoverLayout::Raw(_) => 1,
            RecoverLayout::One(_) => 2,
            RecoverLayout::Two(..) => 3,
        }];
        out.push(self.ack.sel);
        put_u64(&mut out, self.ack.val);
        match &self.layout {
            RecoverLayout::HeaderBody(b) | RecoverLayout::Raw(b) => out.extend_from_slice(b),
            RecoverLayout::One(s) => s.encode(&mut out),
            RecoverLayout::Two(a, b) => {
                a.encode(&mut out);
                b.encode(&mut out);
            }
        }
        out
    }
}

/// A `recover_open` case made concrete: the files, and what is known about them.
struct Materialized {
    files: Vec<(String, Vec<u8>)>,
    /// The generated segments (structured layouts only).
    segs: Vec<BuiltSegment>,
    /// The records every recovery mode must return: set when the generated segments are
    /// unmutated and the acknowledgement file is consistent with them.
    clean: Option<(Vec<Record>, Lsn)>,
    /// False when salvage would re-extend a file to an absurd size.
    salvage_safe: bool,
}

impl RecoverCase {
    fn materialize(&self) -> Materialized {
        let mut segs = Vec::new();
        let (segment_files, first_lsn, id) = match &self.layout {
            RecoverLayout::HeaderBody(body) => (
                vec![header_plus_body(1, 1, body, FUZZ_SEGMENT_BYTES)],
                1,
                fuzz_id(),
            ),
            RecoverLayout::Raw(file) => {
                let (first, id) = SegmentHeader::decode(file)
                    .map_or((1, fuzz_id()), |(h, _)| (h.first_lsn, h.journal_id));
                (vec![file.clone()], first, id)
            }
            RecoverLayout::One(spec) => {
                segs.push(BuiltSegment::build(
                    spec,
                    1,
                    spec.first_lsn(),
                    Some(FUZZ_SEGMENT_BYTES),
                ));
                (vec![segs[0].bytes.clone()], spec.first_lsn(), fuzz_id())
            }
            RecoverLayout::Two(a, b) => {
                let first = BuiltSegment::build(a, 1, a.first_lsn(), Some(FUZZ_SEGMENT_BYTES));
                // If the first segment's LSNs ran out, the second starts (wrongly) at 1.
                let second_lsn = first.next_lsn.unwrap_or(1);
                segs.push(first);
                segs.push(BuiltSegment::build(
                    b,
                    2,
                    second_lsn,
                    Some(FUZZ_SEGMENT_BYTES),
                ));
                (
                    segs.iter().map(|s| s.bytes.clone()).collect(),
                    a.first_lsn(),
                    fuzz_id(),
                )
            }
        };
        let salvage_safe = segment_files.iter().all(|f| {
            SegmentHeader::decode(f).map_or(true, |(h, _)| {
                h.segment_bytes <= MAX_SALVAGE_EXTEND || h.segment_bytes <= f.len() as u64
            })
        });
        let mut files: Vec<(String, Vec<u8>)> = segment_files
            .into_iter()
            .enumerate()
            .map(|(i, f)| (segment_file_name(i as u64 + 1), f))
            .collect();
        if let Some(ack) = self.ack.file(id, first_lsn) {
            files.push((ACK_FILE.to_owned(), ack));
        }
        let unmutated = !segs.is_empty() && segs.iter().all(|s| s.first_diff().is_none());
        let lsns_fit = segs.iter().all(|s| s.next_lsn.is_some());
        let next = segs.last().and_then(|s| s.next_lsn).unwrap_or(first_lsn);
        // An acknowledgement of records the journal does not hold proves records were lost
        // (journal-format.md §9 step 4): not a clean journal.
        let acked_ok = self
            .ack
            .acked(first_lsn)
            .is_some_and(|acked| acked >= first_lsn - 1 && acked < next && acked <= LSN_MAX);
        let clean = (unmutated && lsns_fit && acked_ok).then(|| {
            let frames: Vec<BuiltFrame> = segs.iter().flat_map(|s| s.frames.clone()).collect();
            (expected_records(&frames), next)
        });
        Materialized {
            files,
            segs,
            clean,
            salvage_safe,
        }
    }
}

/// A fresh temporary directory, on `/dev/shm` when there is one (much faster syncs).
pub fn fresh_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::Builder::new()
            .prefix("syncjournal-fuzz-")
            .tempdir_in(shm)
    {
        return d;
    }
    tempfile::Builder::new()
        .prefix("syncjournal-fuzz-")
        .tempdir()
        .expect("create a temporary directory")
}

fn options(mode: RecoveryMode) -> JournalOptions {
    JournalOptions::new()
        .recovery_mode(mode)
        .segment_bytes_max(FUZZ_SEGMENT_BYTES as u64)
}

/// The `recover_open` target: writes the case's files into a fresh directory and opens it with
/// each recovery mode (each on a fresh copy). Whenever `open` succeeds, every record reads back
/// with contiguous LSNs, the records before the first mutated byte are intact, closing and
/// reopening with `AbsoluteConsistency` succeeds with the same records, and an append after
/// that survives another reopen. Across modes: what `AbsoluteConsistency` opens, the other
/// modes open identically; what `TolerateTornTail` opens, `Salvage` opens identically.
pub fn check_recover_open(data: &[u8]) {
    recover_open_outcomes(data);
}

/// What `open` gave in each mode (`AbsoluteConsistency`, `TolerateTornTail`, `Salvage`): the
/// records read back, or the error. `None`: the mode was skipped (see [`MAX_SALVAGE_EXTEND`]).
pub type Outcomes = [Option<Result<Vec<Record>, String>>; 3];

/// Runs every check of [`check_recover_open`] and returns the outcome of each mode.
pub fn recover_open_outcomes(data: &[u8]) -> Outcomes {
    let case = RecoverCase::decode(data).materialize();
    let modes = [
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::TolerateTornTail,
        RecoveryMode::Salvage,
    ];
    let outcomes: Outcomes = modes.map(|mode| {
        if mode == RecoveryMode::Salvage && !case.salvage_safe {
            return None;
        }
        let dir = fresh_dir();
        for (name, bytes) in &case.files {
            std::fs::write(dir.path().join(name), bytes).expect("write a journal file");
        }
        Some(open_and_check(dir.path(), mode, &case))
    });
    let [absolute, tolerate, salvage] = [&outcomes[0], &outcomes[1], &outcomes[2]];
    if let Some((records, _)) = &case.clean {
        match absolute {
            Some(Ok(got)) => {
                let first = got.first().map_or(u64::MAX, |r| r.lsn);
                let want: Vec<&Record> = records.iter().filter(|r| r.lsn >= first).collect();
                assert!(
                    got.iter().eq(want.iter().copied()),
                    "a clean journal reads back different records"
                );
            }
            other => panic!("a clean journal does not open with AbsoluteConsistency: {other:?}"),
        }
    }
    if let Some(Ok(a)) = absolute {
        assert_eq!(
            tolerate,
            &Some(Ok(a.clone())),
            "AbsoluteConsistency opened it, TolerateTornTail differs"
        );
        if salvage.is_some() {
            assert_eq!(
                salvage,
                &Some(Ok(a.clone())),
                "AbsoluteConsistency opened it, Salvage differs"
            );
        }
    }
    if let (Some(Ok(t)), Some(s)) = (tolerate, salvage) {
        assert_eq!(
            s,
            &Ok(t.clone()),
            "TolerateTornTail opened it, Salvage differs"
        );
    }
    outcomes
}

/// Opens `dir` with `mode` and checks the recovered journal; returns its records, or the error.
fn open_and_check(
    dir: &Path,
    mode: RecoveryMode,
    case: &Materialized,
) -> Result<Vec<Record>, String> {
    let journal = match Journal::open(dir, options(mode)) {
        Ok(j) => j,
        Err(e) => {
            assert!(
                !matches!(
                    e,
                    Error::Journal(JournalError::Io { .. })
                        | Error::Journal(JournalError::DiskFull { .. })
                        | Error::Journal(JournalError::Locked { .. })
                        | Error::InvalidOption { .. }
                        | Error::Journal(JournalError::Poisoned { .. })
                ),
                "{mode:?} open failed with an operational error: {e}"
            );
            return Err(e.to_string());
        }
    };
    let report = journal.recovery_report().clone();
    match mode {
        RecoveryMode::AbsoluteConsistency => assert!(
            report.cuts.is_empty() && report.skipped.is_empty(),
            "AbsoluteConsistency repaired something: {report:?}"
        ),
        RecoveryMode::TolerateTornTail => assert!(
            report.cuts.iter().all(|c| c.torn_tail) && report.skipped.is_empty(),
            "TolerateTornTail repaired damage in the middle: {report:?}"
        ),
        _ => {}
    }
    let state = journal.state();
    assert_eq!(state.next_lsn, report.next_lsn, "state and report disagree");
    let records = read_all(&journal, mode);
    check_lsn_sequence(&records, state.first_lsn, state.next_lsn, mode);
    if state.segments == report.segments {
        let data = records.iter().filter(|r| r.gap().is_none()).count() as u64;
        assert_eq!(
            data, report.records,
            "{mode:?}: records read and reported differ"
        );
    }
    if let Some((_, next)) = &case.clean {
        assert_eq!(
            state.next_lsn, *next,
            "{mode:?}: next LSN of a clean journal"
        );
    }
    for seg in &case.segs {
        for f in seg.intact_frames().iter().filter(|f| f.gap_end.is_none()) {
            if f.lsn < state.first_lsn {
                continue;
            }
            assert!(
                records
                    .iter()
                    .any(|r| r.lsn == f.lsn && r.kind == f.kind && r.payload == f.payload),
                "{mode:?}: record {} of segment {} lay before any damage but was not recovered",
                f.lsn,
                seg.header.segment_seq
            );
        }
    }
    journal
        .close()
        .unwrap_or_else(|e| panic!("{mode:?}: close after recovery failed: {e}"));

    // Recovery must leave a clean journal.
    let again =
        Journal::open(dir, options(RecoveryMode::AbsoluteConsistency)).unwrap_or_else(|e| {
            panic!("reopening with AbsoluteConsistency after a {mode:?} recovery failed: {e}")
        });
    let r = again.recovery_report();
    assert!(
        r.cuts.is_empty() && r.skipped.is_empty(),
        "reopen after {mode:?} recovery repaired something"
    );
    assert_eq!(
        again.state().next_lsn,
        state.next_lsn,
        "reopen after {mode:?}: next LSN"
    );
    let reread = read_all(&again, mode);
    assert_eq!(reread, records, "reopen after {mode:?}: records differ");

    // And one that accepts appends, or refuses them cleanly once LSNs are exhausted.
    let appended = again.append(APPENDED);
    if state.next_lsn > LSN_MAX {
        assert!(
            matches!(appended, Err(Error::Journal(JournalError::LimitReached(_)))),
            "append at LSN {} after {mode:?} recovery: {appended:?}",
            state.next_lsn
        );
        again
            .close()
            .unwrap_or_else(|e| panic!("close after a refused append failed: {e}"));
        let last =
            Journal::open(dir, options(RecoveryMode::AbsoluteConsistency)).unwrap_or_else(|e| {
                panic!("reopen after a refused append (LSNs exhausted) failed: {e}")
            });
        assert_eq!(
            read_all(&last, mode),
            records,
            "records after a refused append"
        );
        return Ok(records);
    }
    let lsn = appended.unwrap_or_else(|e| panic!("append after {mode:?} recovery failed: {e}"));
    assert_eq!(
        lsn, state.next_lsn,
        "append after {mode:?} recovery got the wrong LSN"
    );
    again
        .close()
        .unwrap_or_else(|e| panic!("close after append failed: {e}"));
    let last = Journal::open(dir, options(RecoveryMode::AbsoluteConsistency))
        .unwrap_or_else(|e| panic!("reopen after {mode:?} recovery and an append failed: {e}"));
    let mut want = records.clone();
    want.push(Record {
        lsn,
        kind: syncjournal::KIND_DATA,
        payload: APPENDED.to_vec(),
    });
    let first = last.state().first_lsn;
    want.retain(|r| r.lsn >= first);
    let got = read_all(&last, mode);
    assert_eq!(got, want, "records after {mode:?} recovery and an append");
    drop(last);
    Ok(records)
}

/// All records from the first retained one.
fn read_all(journal: &Journal, mode: RecoveryMode) -> Vec<Record> {
    let first = journal.state().first_lsn;
    let reader = journal
        .reader(first)
        .unwrap_or_else(|e| panic!("{mode:?}: reader({first}) of a recovered journal: {e}"));
    let mut out = Vec::new();
    for r in reader {
        out.push(r.unwrap_or_else(|e| panic!("{mode:?}: reading a recovered journal: {e}")));
        assert!(
            out.len() <= MAX_RECORDS_READ,
            "{mode:?}: the reader does not stop"
        );
    }
    out
}

/// LSNs are contiguous from `first` to `next`: each record continues the previous one, and a
/// gap record stands for the LSNs it names.
fn check_lsn_sequence(records: &[Record], first: Lsn, next: Lsn, mode: RecoveryMode) {
    let mut expect = first;
    for r in records {
        assert_eq!(
            r.lsn, expect,
            "{mode:?}: LSNs of the recovered journal are not contiguous"
        );
        expect = match r.gap() {
            Some(g) => {
                assert!(g.end > g.start, "{mode:?}: empty gap record returned");
                g.end
            }
            None => r.lsn.saturating_add(1),
        };
    }
    assert_eq!(expect, next, "{mode:?}: records end before the next LSN");
}
