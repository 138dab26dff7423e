//! Generated journal files: a [`SegSpec`] (first LSN, records, mutations) read from the
//! fuzzer's bytes and built into a segment file with valid checksums ([`BuiltSegment`]), with
//! what is known about it (its records, where the first mutated byte is); and acknowledgement
//! files ([`AckSpec`]).

use syncjournal::format::{
    ACK_FILE_BYTES, ACK_SLOT_BYTES, AckSlot, FRAME_CRC_OFFSET, FRAME_HEADER_BYTES, KIND_GAP,
    LSN_MAX, SEGMENT_DATA_OFFSET, SEGMENT_HEADER_BYTES, SegmentHeader, frame_bytes, le_u32,
    seal_frame,
};
use syncjournal::journal::scan::ScanInput;
use syncjournal::{Lsn, Record};
use uuid::Uuid;

use crate::checks::common::{Bytes, fuzz_id, fuzz_seed, put_u16, put_u32, put_u64};

/// Size of the segments generated for `recover_open` and `journal_dir` (the smallest size the
/// format allows).
pub const FUZZ_SEGMENT_BYTES: usize = 65536;
/// Most records in one generated segment.
pub const MAX_FRAMES: usize = 64;
/// Largest payload of a generated record.
pub const MAX_PAYLOAD: usize = 512;
/// Most mutations applied to one generated segment.
pub const MAX_MUTATIONS: usize = 8;
/// With [`avoid_lsn_exhaustion`], generated first LSNs and acknowledged LSNs stay at or below
/// this.
pub const LSN_CAP: Lsn = 1 << 62;

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

/// `lsn`, capped at [`LSN_CAP`] under [`avoid_lsn_exhaustion`].
pub fn cap_lsn(lsn: Lsn) -> Lsn {
    if avoid_lsn_exhaustion() {
        lsn.min(LSN_CAP)
    } else {
        lsn
    }
}

/// Chooses a data record's kind and payload from its spec and LSN (see
/// [`BuiltSegment::build_with`]).
pub type RecordHook = dyn Fn(&FrameSpec, Lsn) -> Option<(u8, Vec<u8>)>;

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
        Self::build_with(spec, seq, first_lsn, len, &|_, _| None)
    }

    /// Like [`BuiltSegment::build`], with the kind and payload of each data record chosen by
    /// `record(frame, lsn)` (`None`, or an empty payload: the spec's kind and pattern). Gap
    /// records are never replaced.
    pub fn build_with(
        spec: &SegSpec,
        seq: u64,
        first_lsn: Lsn,
        len: Option<usize>,
        record: &RecordHook,
    ) -> Self {
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
            let chosen = if gap {
                None
            } else {
                record(f, lsn).filter(|(_, p)| !p.is_empty())
            };
            let (kind, mut payload) = chosen.unwrap_or_else(|| {
                let plen = if gap {
                    f.payload_len().max(8)
                } else {
                    f.payload_len()
                };
                let pattern = (0..plen)
                    .map(|i| f.fill.wrapping_add((i as u8).wrapping_mul(29)) ^ (i >> 8) as u8)
                    .collect();
                (if f.kind == 0 { 1 } else { f.kind }, pattern)
            });
            let fb = frame_bytes(payload.len());
            if pos + fb > max_len {
                break;
            }
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

/// The records a reader returns for these frames (empty gap records are skipped).
pub fn expected_records(frames: &[BuiltFrame]) -> Vec<Record> {
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

/// A generated acknowledgement file (`recover_open`, `journal_dir`): `sel % 6` chooses 0 none; 1 valid,
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
    pub fn acked(&self, first_lsn: Lsn) -> Option<Lsn> {
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
