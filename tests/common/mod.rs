//! Shared helpers for the damage and recovery tests (`torn_tail`, `bit_flips`, `salvage`,
//! `recovery_modes`, `segment_headers`). Each test binary uses a subset of them.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use syncjournal::error::JournalError;

use syncjournal::format::{
    FrameCheck, HEADER_CRC_OFFSET, JOURNAL_ID_OFFSET, KIND_GAP, SEGMENT_DATA_OFFSET, Seed,
    check_frame,
};
use syncjournal::{
    Corruption, Error, Journal, JournalOptions, Lsn, PersistMode, Record, RecoveryMode,
};

/// Segment size used by every damage test: the smallest allowed, so tests stay fast and a few
/// hundred records span several segments.
pub const SEG_BYTES: u64 = 65536;

/// Options with small segments and the given recovery mode (Sync persistence, cut bytes kept,
/// acknowledged segments removed at once: retention's timing is tested on its own).
pub fn opts_with_mode(mode: RecoveryMode) -> JournalOptions {
    JournalOptions::new()
        .segment_bytes_max(SEG_BYTES)
        .recovery_mode(mode)
        .retain_acked_ms(0)
}

/// Opens `dir` with small segments and the given recovery mode.
pub fn open_with_mode(dir: &Path, mode: RecoveryMode) -> syncjournal::Result<Journal> {
    Journal::open(dir, opts_with_mode(mode))
}

/// Rewrites the owner's published durable LSN in `dir/HEAD`, as it stood at a simulated crash:
/// a test that damages records a closed journal had synced must also take back the `HEAD` that
/// says they were durable, or recovery rightly calls the damage media corruption.
pub fn rewind_head(dir: &Path, durable_lsn: Lsn) {
    use std::os::unix::fs::FileExt;
    use syncjournal::format::Head;
    let path = dir.join("HEAD");
    let b = fs::read(&path).expect("HEAD");
    let mut h = Head::decode(&b).expect("a valid HEAD");
    h.durable_lsn = durable_lsn;
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&h.encode(), 0).unwrap();
}

/// Path of segment `seq` in `dir`.
pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.sjl"))
}

/// The deterministic payload of record `lsn`: `len` bytes, none of them zero (so zeroing any
/// part of a frame always changes it, and a frame's last payload byte is never zero).
pub fn payload_for_lsn(lsn: Lsn, len: usize) -> Vec<u8> {
    let mut x = lsn.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 255) as u8 + 1
        })
        .collect()
}

/// Creates a journal in `dir` and appends `count` records of `len`-byte payloads
/// ([`payload_for_lsn`]) with the given persist mode, from one thread, then closes it.
/// Returns the payloads, index `i` holding LSN `i + 1`.
pub fn write_journal_records(
    dir: &Path,
    count: u64,
    len: usize,
    persist: PersistMode,
) -> Vec<Vec<u8>> {
    let j = Journal::open(
        dir,
        opts_with_mode(RecoveryMode::TolerateTornTail).persist_mode(persist),
    )
    .expect("create journal");
    let mut out = Vec::new();
    for lsn in 1..=count {
        let p = payload_for_lsn(lsn, len);
        assert_eq!(j.append(&p).expect("append"), lsn);
        out.push(p);
    }
    j.close().expect("close");
    out
}

/// Every record a fresh reader returns from LSN 1, gap records included.
pub fn read_all_records(j: &Journal) -> Vec<Record> {
    j.reader(1)
        .expect("reader")
        .collect::<syncjournal::Result<Vec<_>>>()
        .expect("read records")
}

/// Asserts that `records` are exactly the data records `1..=count` with `payloads`.
pub fn assert_data_prefix(records: &[Record], payloads: &[Vec<u8>], count: usize, ctx: &str) {
    assert_eq!(
        records.len(),
        count,
        "{ctx}: expected {count} records, got LSNs {:?}",
        records.iter().map(|r| r.lsn).collect::<Vec<_>>()
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.lsn, i as u64 + 1, "{ctx}: LSN of record #{i}");
        assert_eq!(
            r.kind,
            syncjournal::KIND_DATA,
            "{ctx}: kind of LSN {}",
            r.lsn
        );
        assert_eq!(r.payload, payloads[i], "{ctx}: payload of LSN {}", r.lsn);
    }
}

/// Asserts what a reader from LSN 1 must return when the LSN ranges in `gaps` were replaced
/// by gap records: one gap record per range (its `lsn` the range start, `gap()` the range),
/// every other LSN `1..=payloads.len()` intact.
pub fn assert_records_with_gaps(records: &[Record], payloads: &[Vec<u8>], gaps: &[(Lsn, Lsn)]) {
    let mut expected: Vec<(Lsn, Option<Lsn>)> = Vec::new(); // (lsn, Some(gap end))
    let mut lsn = 1;
    while lsn <= payloads.len() as u64 {
        if let Some(&(a, b)) = gaps.iter().find(|&&(a, _)| a == lsn) {
            expected.push((a, Some(b)));
            lsn = b;
        } else {
            expected.push((lsn, None));
            lsn += 1;
        }
    }
    let got: Vec<(Lsn, Option<Lsn>)> = records
        .iter()
        .map(|r| (r.lsn, r.gap().map(|g| g.end)))
        .collect();
    assert_eq!(got, expected, "record sequence (lsn, gap end)");
    for r in records {
        if r.kind == KIND_GAP {
            assert!(r.gap().is_some());
        } else {
            assert_eq!(r.kind, syncjournal::KIND_DATA, "kind of LSN {}", r.lsn);
            assert_eq!(
                r.payload,
                payloads[r.lsn as usize - 1],
                "payload of LSN {}",
                r.lsn
            );
        }
    }
}

/// One valid frame found in a segment image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLoc {
    /// Offset of the frame in the segment file.
    pub offset: usize,
    /// Bytes the frame occupies, padding included.
    pub len: usize,
    /// The record's LSN.
    pub lsn: Lsn,
    /// Payload length.
    pub payload_len: usize,
    /// The frame's synced-LSN hint.
    pub synced_lsn: Lsn,
}

/// Walks the valid frames of an undamaged segment image (whose sequence number is `seq`) from
/// offset 4096 to the end marker, verifying each with `check_frame`. Panics on damage.
pub fn frames_of_segment(image: &[u8], seq: u64) -> Vec<FrameLoc> {
    let id = uuid::Uuid::from_slice(&image[JOURNAL_ID_OFFSET..JOURNAL_ID_OFFSET + 16]).unwrap();
    let seed = Seed::new(id, seq);
    let mut pos = SEGMENT_DATA_OFFSET;
    let mut out = Vec::new();
    loop {
        match check_frame(&image[pos..], seed) {
            FrameCheck::End => return out,
            FrameCheck::Valid(h) => {
                out.push(FrameLoc {
                    offset: pos,
                    len: h.frame_bytes(),
                    lsn: h.lsn,
                    payload_len: h.payload_len as usize,
                    synced_lsn: h.synced_lsn,
                });
                pos += h.frame_bytes();
            }
            FrameCheck::Invalid(f) => panic!("test image is damaged at {pos}: {f:?}"),
        }
    }
}

/// Sorted segment files (`*.sjl`) of `dir`.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sjl"))
        .collect();
    v.sort();
    v
}

/// Copies a closed journal (`ACK` and every segment) from `from` into the existing directory
/// `to`, so each damage case starts from the same bytes.
pub fn copy_journal_files(from: &Path, to: &Path) {
    fs::copy(from.join("ACK"), to.join("ACK")).unwrap();
    for seg in segment_files(from) {
        fs::copy(&seg, to.join(seg.file_name().unwrap())).unwrap();
    }
}

/// Files in `dir/forensics`, sorted (empty if the directory does not exist).
pub fn forensic_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir.join("forensics")) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// Flips bit `bit` of the byte at `offset` of `image`.
pub fn flip_bit_in(image: &mut [u8], offset: usize, bit: u32) {
    image[offset] ^= 1 << bit;
}

/// Recomputes the header checksum of a segment image (CRC-32 of bytes `[0, 60)`).
pub fn reseal_segment_header(image: &mut [u8]) {
    let crc = crc32fast::hash(&image[..HEADER_CRC_OFFSET]);
    image[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The `Corruption` of an `JournalError::Corrupt`, or a panic naming what came instead.
pub fn expect_corrupt(r: syncjournal::Result<Journal>, ctx: &str) -> Corruption {
    match r {
        Err(Error::Journal(JournalError::Corrupt(c))) => *c,
        Err(e) => panic!("{ctx}: expected Error::Journal(JournalError::Corrupt), got error {e:?}"),
        Ok(j) => panic!(
            "{ctx}: expected Error::Journal(JournalError::Corrupt), but the journal opened: {:?}",
            j.recovery_report()
        ),
    }
}

/// The error of a refused open, or a panic if it opened.
pub fn expect_open_error(r: syncjournal::Result<Journal>, ctx: &str) -> Error {
    match r {
        Err(e) => e,
        Ok(j) => panic!(
            "{ctx}: expected an error, but the journal opened: {:?}",
            j.recovery_report()
        ),
    }
}

/// A small deterministic PRNG (xorshift64*), so damage patterns are reproducible.
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> Self {
        TestRng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }
}
