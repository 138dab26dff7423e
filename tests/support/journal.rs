//! Journals: options and fixtures of the journal tests, deterministic payloads and their
//! checks, reading every record back, segment files and their frames, and damage (bit flips,
//! resealed headers, a rewound `HEAD`).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use syncjournal::error::JournalError;
use syncjournal::format::{
    FrameCheck, HEADER_CRC_OFFSET, JOURNAL_ID_OFFSET, KIND_GAP, SEGMENT_DATA_OFFSET,
    SEGMENT_HEADER_BYTES, Seed, SegmentHeader, check_frame,
};
use syncjournal::segment::parse_segment_file_name;
use syncjournal::{
    Corruption, Error, Journal, JournalOptions, Lsn, PersistMode, Record, RecoveryMode,
};

// ---------------------------------------------------------------------------------------------
// Options and fixtures.

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

/// 64 KiB segments and every acknowledged segment kept, so that the whole history (and every
/// segment boundary) stays readable for the checks.
pub fn keep_everything_opts() -> JournalOptions {
    JournalOptions::new()
        .segment_bytes_max(64 << 10)
        .retain_acked_segments(usize::MAX)
}

/// Opens `dir` with small segments and the given recovery mode.
pub fn open_with_mode(dir: &Path, mode: RecoveryMode) -> syncjournal::Result<Journal> {
    Journal::open(dir, opts_with_mode(mode))
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

// ---------------------------------------------------------------------------------------------
// Payloads.

/// Bytes at the start of every [`payload`]: thread (u32), sequence (u32), tag (u64).
pub const PAYLOAD_HEADER: usize = 16;

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

/// FNV-1a, 64 bits: a digest of a payload for compact comparisons.
pub fn digest(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A payload that encodes `(thread, seq, tag)` in its first 16 bytes, followed by filler
/// derived from the same values, `len` bytes in all (at least 16).
pub fn payload(thread: u32, seq: u32, tag: u64, len: usize) -> Vec<u8> {
    let len = len.max(PAYLOAD_HEADER);
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&thread.to_le_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend_from_slice(&tag.to_le_bytes());
    let mut x = u64::from(thread) << 40 ^ u64::from(seq) << 8 ^ tag ^ 0x9e37_79b9_7f4a_7c15;
    while p.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.push(x as u8);
    }
    p
}

/// A payload length that varies with `(thread, seq)`: between 16 and `16 + spread`.
pub fn varied_len(thread: u32, seq: u32, spread: usize) -> usize {
    PAYLOAD_HEADER
        + (digest(&[thread.to_le_bytes(), seq.to_le_bytes()].concat()) as usize) % (spread + 1)
}

/// Decodes `(thread, seq, tag)` from a payload made by [`payload`] and checks that the rest of
/// it is intact. Panics (naming the LSN) otherwise.
pub fn parse_payload(lsn: Lsn, p: &[u8]) -> (u32, u32, u64) {
    assert!(
        p.len() >= PAYLOAD_HEADER,
        "LSN {lsn}: payload of {} bytes is too short to be a test payload",
        p.len()
    );
    let thread = u32::from_le_bytes(p[0..4].try_into().unwrap());
    let seq = u32::from_le_bytes(p[4..8].try_into().unwrap());
    let tag = u64::from_le_bytes(p[8..16].try_into().unwrap());
    let expected = payload(thread, seq, tag, p.len());
    assert!(
        expected == p,
        "LSN {lsn}: payload of (thread {thread}, seq {seq}, tag {tag}) has damaged filler"
    );
    (thread, seq, tag)
}

// ---------------------------------------------------------------------------------------------
// Reading records back.

/// Every record readable from LSN 1 (or the first retained one), in order, gap records
/// included.
pub fn read_all(journal: &Journal) -> Vec<Record> {
    read_from(journal, 1)
}

/// Every record readable from `lsn`, in order.
pub fn read_from(journal: &Journal, lsn: Lsn) -> Vec<Record> {
    let mut reader = journal.reader(lsn).expect("create reader");
    let mut out = Vec::new();
    while let Some(r) = reader.next_record().expect("read record") {
        out.push(r);
    }
    out
}

/// Every record from the first retained LSN on, in order.
pub fn read_retained(journal: &Journal) -> Vec<Record> {
    read_from(journal, journal.state().first_lsn)
}

/// Asserts that `records` carry the contiguous LSNs `first..first + len`.
pub fn assert_contiguous(records: &[Record], first: Lsn) {
    for (i, r) in records.iter().enumerate() {
        assert_eq!(
            r.lsn,
            first + i as u64,
            "LSNs are not contiguous: record #{i} has LSN {} (expected {})",
            r.lsn,
            first + i as u64
        );
    }
}

/// Records by LSN.
pub fn by_lsn(records: &[Record]) -> HashMap<Lsn, &Record> {
    records.iter().map(|r| (r.lsn, r)).collect()
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

// ---------------------------------------------------------------------------------------------
// Files of a journal directory.

/// Path of segment `seq` in `dir`.
pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.sjl"))
}

/// Segment files in `dir`: (sequence number, path), in order.
pub fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .expect("list journal directory")
        .filter_map(|e| {
            let e = e.ok()?;
            let seq = parse_segment_file_name(e.file_name().to_str()?)?;
            Some((seq, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The paths of the segment files in `dir`, in order.
pub fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    segment_files(dir).into_iter().map(|(_, p)| p).collect()
}

/// The header of a segment file, if its first bytes decode as one (not while it is being
/// created).
pub fn segment_header(path: &Path) -> Option<SegmentHeader> {
    let mut head = vec![0u8; SEGMENT_HEADER_BYTES];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .ok()?;
    SegmentHeader::decode(&head).ok().map(|(h, _)| h)
}

/// The `first_lsn` in a segment's header.
pub fn first_lsn_of(segment: &Path) -> Lsn {
    segment_header(segment)
        .unwrap_or_else(|| panic!("{} has no valid header", segment.display()))
        .first_lsn
}

/// Segment files in `dir` with the `first_lsn` of their headers: (seq, first_lsn), in order.
/// Every header must be valid and name its file's sequence number.
pub fn segments_with_first_lsn(dir: &Path) -> Vec<(u64, Lsn)> {
    segment_files(dir)
        .into_iter()
        .map(|(seq, path)| {
            let h = segment_header(&path)
                .unwrap_or_else(|| panic!("segment {} has no valid header", path.display()));
            assert_eq!(
                h.segment_seq,
                seq,
                "segment {} header names another seq",
                path.display()
            );
            (seq, h.first_lsn)
        })
        .collect()
}

/// The first LSN of every segment in the journal directory `dir` (by sequence number), read
/// from the segment headers. Segments whose header does not decode (one being created) are
/// left out; so is a directory that cannot be listed.
pub fn segment_first_lsns(dir: &Path) -> BTreeMap<u64, Lsn> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let seq = parse_segment_file_name(e.file_name().to_str()?)?;
            Some((seq, segment_header(&e.path())?.first_lsn))
        })
        .collect()
}

/// The last LSN of every segment that has a successor: `first_lsn(next) - 1`.
pub fn segment_last_lsns(firsts: &BTreeMap<u64, Lsn>) -> std::collections::BTreeSet<Lsn> {
    firsts
        .values()
        .skip(1)
        .map(|&f| f.saturating_sub(1))
        .collect()
}

/// Files in `dir` whose name ends with `.tmp`.
pub fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .expect("list journal directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect()
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

/// Copies a closed journal (`ACK` and every segment) from `from` into the existing directory
/// `to`, so each damage case starts from the same bytes.
pub fn copy_journal_files(from: &Path, to: &Path) {
    fs::copy(from.join("ACK"), to.join("ACK")).unwrap();
    for seg in segment_paths(from) {
        fs::copy(&seg, to.join(seg.file_name().unwrap())).unwrap();
    }
}

/// Copies a directory's files (recursively) into `dst` (created if missing).
pub fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).expect("create copy directory");
    for e in fs::read_dir(src).expect("read directory") {
        let e = e.expect("directory entry");
        let to = dst.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).expect("copy file");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Frames and damage.

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

/// The frames of an undamaged segment file (see [`frames_of_segment`]).
pub fn frames(segment: &Path) -> Vec<FrameLoc> {
    let seq = segment
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_segment_file_name)
        .unwrap_or_else(|| panic!("{} is not named like a segment", segment.display()));
    frames_of_segment(&fs::read(segment).expect("read segment"), seq)
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

/// Writes `bytes` at `offset` of `file` (and syncs it).
pub fn write_at(file: &Path, offset: usize, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .write(true)
        .open(file)
        .expect("open for damage");
    f.write_all_at(bytes, offset as u64).expect("write damage");
    f.sync_all().unwrap();
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

// ---------------------------------------------------------------------------------------------
// Proving that nothing changed.

/// Every file and directory under `dir` (recursively) with its bytes (a directory's: none),
/// by path. `LOCK` is left out unless `with_lock`: opening a journal writes its holder there.
pub fn snapshot(dir: &Path, with_lock: bool) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read dir") {
            let p = e.expect("directory entry").path();
            if p.is_dir() {
                out.insert(p.clone(), Vec::new());
                stack.push(p);
            } else if with_lock || p.file_name().is_none_or(|n| n != "LOCK") {
                let b = fs::read(&p).expect("read file");
                out.insert(p, b);
            }
        }
    }
    out
}

/// Panics, naming the files that differ, unless two snapshots are equal.
#[track_caller]
pub fn assert_same_files(
    before: &BTreeMap<PathBuf, Vec<u8>>,
    after: &BTreeMap<PathBuf, Vec<u8>>,
    what: &str,
) {
    let names = |m: &BTreeMap<PathBuf, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(before),
        names(after),
        "{what}: files were added or removed"
    );
    for (p, b) in before {
        assert!(after[p] == *b, "{what}: {} was modified", p.display());
    }
}
