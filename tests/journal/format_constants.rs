//! Pins every constant and byte offset that `journal-format.md` states against the code, in
//! both directions: a constant the document names must exist with that value, and every
//! constant listed here must appear in the document. Byte-level facts the document states in
//! prose (the `HEAD` page, gap frames, damaged regions, resynchronisation, side-file names,
//! `ACK` outside its slots, varints) are checked below against files the crate itself writes.

use std::collections::BTreeMap;

use syncjournal::JournalOptions;
use syncjournal::format::*;
use syncjournal::journal::INDEX_STRIDE;
use syncjournal::segment::*;

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/journal-format.md"))
        .expect("journal-format.md at the crate root")
}

fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(|c| c.trim().trim_matches('`').to_string())
        .collect()
}

/// Every markdown table: its header cells and rows.
fn tables(doc: &str) -> Vec<(Vec<String>, Vec<Vec<String>>)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = doc.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_start().starts_with('|')
            && lines.get(i + 1).is_some_and(|l| l.contains("---"))
        {
            let header = cells(lines[i]);
            let mut rows = Vec::new();
            i += 2;
            while i < lines.len() && lines[i].trim_start().starts_with('|') {
                rows.push(cells(lines[i]));
                i += 1;
            }
            out.push((header, rows));
        } else {
            i += 1;
        }
    }
    out
}

fn offsets() -> BTreeMap<&'static str, usize> {
    BTreeMap::from([
        ("MAGIC_OFFSET", MAGIC_OFFSET),
        ("VERSION_OFFSET", VERSION_OFFSET),
        ("HEADER_LEN_OFFSET", HEADER_LEN_OFFSET),
        ("SEGMENT_DATA_OFFSET_OFFSET", SEGMENT_DATA_OFFSET_OFFSET),
        ("JOURNAL_ID_OFFSET", JOURNAL_ID_OFFSET),
        ("SEGMENT_SEQ_OFFSET", SEGMENT_SEQ_OFFSET),
        ("SEGMENT_FIRST_LSN_OFFSET", SEGMENT_FIRST_LSN_OFFSET),
        ("SEGMENT_BYTES_OFFSET", SEGMENT_BYTES_OFFSET),
        ("HEADER_FLAGS_OFFSET", HEADER_FLAGS_OFFSET),
        ("HEADER_CRC_OFFSET", HEADER_CRC_OFFSET),
        ("FRAME_CRC_OFFSET", FRAME_CRC_OFFSET),
        ("FRAME_LEN_OFFSET", FRAME_LEN_OFFSET),
        ("FRAME_LSN_OFFSET", FRAME_LSN_OFFSET),
        ("FRAME_SYNCED_LSN_OFFSET", FRAME_SYNCED_LSN_OFFSET),
        ("FRAME_PREV_CRC_OFFSET", FRAME_PREV_CRC_OFFSET),
        ("FRAME_KIND_OFFSET", FRAME_KIND_OFFSET),
        ("FRAME_FLAGS_OFFSET", FRAME_FLAGS_OFFSET),
        ("FRAME_RESERVED_OFFSET", FRAME_RESERVED_OFFSET),
        ("FRAME_HEADER_BYTES", FRAME_HEADER_BYTES),
        ("ACK_MAGIC_OFFSET", ACK_MAGIC_OFFSET),
        ("ACK_VERSION_OFFSET", ACK_VERSION_OFFSET),
        ("ACK_RESERVED_OFFSET", ACK_RESERVED_OFFSET),
        ("ACK_JOURNAL_ID_OFFSET", ACK_JOURNAL_ID_OFFSET),
        ("ACK_GENERATION_OFFSET", ACK_GENERATION_OFFSET),
        ("ACK_ACKED_LSN_OFFSET", ACK_ACKED_LSN_OFFSET),
        ("ACK_ACKED_AT_MS_OFFSET", ACK_ACKED_AT_MS_OFFSET),
        ("ACK_RESERVED2_OFFSET", ACK_RESERVED2_OFFSET),
        ("ACK_CRC_OFFSET", ACK_CRC_OFFSET),
        ("HEAD_MAGIC_OFFSET", 0),
        ("HEAD_VERSION_OFFSET", HEAD_VERSION_OFFSET),
        ("HEAD_RESERVED_OFFSET", HEAD_RESERVED_OFFSET),
        ("HEAD_JOURNAL_ID_OFFSET", HEAD_JOURNAL_ID_OFFSET),
        ("HEAD_DURABLE_LSN_OFFSET", HEAD_DURABLE_LSN_OFFSET),
        ("HEAD_UPDATED_AT_MS_OFFSET", HEAD_UPDATED_AT_MS_OFFSET),
        ("HEAD_PID_OFFSET", HEAD_PID_OFFSET),
        ("HEAD_RESERVED2_OFFSET", HEAD_RESERVED2_OFFSET),
        ("HEAD_CRC_OFFSET", HEAD_CRC_OFFSET),
    ])
}

fn constants() -> BTreeMap<&'static str, String> {
    let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    BTreeMap::from([
        ("SEGMENT_MAGIC", s(&SEGMENT_MAGIC)),
        ("FORMAT_VERSION", FORMAT_VERSION.to_string()),
        ("SEGMENT_HEADER_BYTES", SEGMENT_HEADER_BYTES.to_string()),
        ("SEGMENT_DATA_OFFSET", SEGMENT_DATA_OFFSET.to_string()),
        ("FRAME_HEADER_BYTES", FRAME_HEADER_BYTES.to_string()),
        ("FRAME_ALIGN", FRAME_ALIGN.to_string()),
        ("KIND_DATA", syncjournal::KIND_DATA.to_string()),
        (
            "KIND_CHANGESET",
            syncjournal::event::KIND_CHANGESET.to_string(),
        ),
        ("KIND_RESERVED_MIN", KIND_RESERVED_MIN.to_string()),
        ("KIND_GAP", KIND_GAP.to_string()),
        ("ACK_MAGIC", s(&ACK_MAGIC)),
        ("ACK_SLOT_BYTES", ACK_SLOT_BYTES.to_string()),
        ("ACK_FILE_BYTES", ACK_FILE_BYTES.to_string()),
        ("ACK_SLOT_1_OFFSET", ACK_SLOT_OFFSETS[1].to_string()),
        ("INDEX_STRIDE", INDEX_STRIDE.to_string()),
        ("LSN_MAX", LSN_MAX.to_string()),
        ("SEGMENT_SEQ_MAX", SEGMENT_SEQ_MAX.to_string()),
        (
            "SEGMENT_BYTES_MIN",
            JournalOptions::SEGMENT_BYTES_MIN.to_string(),
        ),
        (
            "SEGMENT_BYTES_MAX",
            JournalOptions::SEGMENT_BYTES_MAX.to_string(),
        ),
        (
            "SEGMENT_BYTES_DEFAULT",
            JournalOptions::SEGMENT_BYTES_DEFAULT.to_string(),
        ),
        (
            "RECORD_BYTES_DEFAULT",
            JournalOptions::RECORD_BYTES_DEFAULT.to_string(),
        ),
        (
            "PAYLOAD_DEPTH_MAX",
            syncjournal::event::DEPTH_MAX.to_string(),
        ),
        ("STAMP_TAG", syncjournal::event::STAMP_TAG.to_string()),
        ("STAMP_BYTES", syncjournal::event::STAMP_BYTES.to_string()),
        ("SEGMENT_EXTENSION", SEGMENT_EXTENSION.to_string()),
        ("LOCK_FILE", LOCK_FILE.to_string()),
        ("HEAD_FILE", HEAD_FILE.to_string()),
        ("HEAD_BYTES", HEAD_BYTES.to_string()),
        ("HEAD_FILE_BYTES", HEAD_FILE_BYTES.to_string()),
        ("ACK_FILE", ACK_FILE.to_string()),
        ("FORENSICS_DIR", FORENSICS_DIR.to_string()),
        (
            "REPLAY_STATE_BYTES_MAX",
            syncjournal::replay::REPLAY_STATE_BYTES_MAX.to_string(),
        ),
        ("SEGMENT_BYTES_ALIGN", SEGMENT_BYTES_ALIGN.to_string()),
        ("REPLAY_STATE_FILE", REPLAY_STATE_FILE.to_string()),
    ])
}

#[test]
fn byte_tables_match_the_code_and_are_contiguous() {
    let doc = doc();
    let known = offsets();
    let mut seen = Vec::new();
    for (header, rows) in tables(&doc) {
        let Some(ci) = header.iter().position(|h| h == "constant") else {
            continue;
        };
        let oi = header.iter().position(|h| h == "offset").unwrap();
        let si = header.iter().position(|h| h == "size").unwrap();
        let mut expected_next: Option<usize> = None;
        for row in rows {
            let name = row[ci].as_str();
            let Ok(offset) = row[oi].parse::<usize>() else {
                continue; // e.g. "32 + payload_len"
            };
            if let Some(next) = expected_next {
                assert_eq!(
                    offset, next,
                    "table row {name} does not follow its predecessor"
                );
            }
            expected_next = row[si].parse::<usize>().ok().map(|s| offset + s);
            if name == "–" || name == "-" {
                continue;
            }
            let value = known
                .get(name)
                .unwrap_or_else(|| panic!("document names unknown constant {name}"));
            assert_eq!(
                offset, *value,
                "{name}: document says {offset}, code says {value}"
            );
            seen.push(name.to_string());
        }
    }
    for name in known.keys() {
        assert!(
            seen.iter().any(|s| s == name),
            "{name} is not stated in any byte table"
        );
    }
}

#[test]
fn constants_table_matches_the_code() {
    let doc = doc();
    let code = constants();
    let (_, rows) = tables(&doc)
        .into_iter()
        .find(|(h, _)| h == &["name", "value"])
        .expect("a `| name | value |` constants table");
    let mut stated = BTreeMap::new();
    for row in rows {
        stated.insert(row[0].clone(), row[1].clone());
    }
    for (name, value) in &code {
        assert_eq!(
            stated.get(*name),
            Some(value),
            "constant {name}: document vs code"
        );
    }
    for name in stated.keys() {
        assert!(
            code.contains_key(name.as_str()),
            "document states {name}, unknown to the test"
        );
    }
}

#[test]
fn header_and_frame_sizes_are_what_the_diagrams_say() {
    assert_eq!(SEGMENT_HEADER_BYTES, 64);
    assert_eq!(FRAME_HEADER_BYTES, 32);
    assert_eq!(ACK_SLOT_BYTES, 64);
    assert_eq!(frame_bytes(1), 40, "the smallest frame");
    assert_eq!(ACK_SLOT_OFFSETS, [0, 4096]);
    assert_eq!(HEAD_MAGIC, *b"SJHEAD\0\0");
}

#[test]
fn crc_is_crc32_iso_hdlc() {
    assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
}

#[test]
fn bincode_example_in_the_document_is_what_bincode_writes() {
    let expected = hex_after(&doc(), "encodes as");
    let value = (300u32, -2i64, "hi", Some(7u8), vec![1u8, 2]);
    let got = bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap();
    assert_eq!(got, expected);
}

/// The hex bytes in the last backticks of the two lines from the one holding `marker`.
fn hex_after(doc: &str, marker: &str) -> Vec<u8> {
    let line = doc
        .lines()
        .skip_while(|l| !l.contains(marker))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let hex = line
        .split('`')
        .rev()
        .nth(1)
        .unwrap_or_else(|| panic!("hex bytes in backticks after {marker:?}"));
    hex.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

#[test]
fn change_set_examples_in_the_document_are_what_the_store_writes() {
    use syncjournal::event::{decode_event, encode_event};
    use syncjournal::{ChangeSet, Value};
    let doc = doc();
    let first = ChangeSet::new()
        .upsert(
            "hosts",
            [("id", 7)],
            [("name", Value::from("web")), ("port", Value::Null)],
        )
        .delete("certificates", [("id", -1)]);
    let bytes = hex_after(&doc, "then delete from `certificates`");
    assert_eq!(encode_event(1_700_000_000_000, &first).unwrap(), bytes);
    assert_eq!(
        decode_event::<ChangeSet>(&bytes).unwrap(),
        (1_700_000_000_000, first)
    );
    let second = ChangeSet::new().upsert("t", [("k", 1.5)], [("b", vec![0xAAu8])]);
    let bytes = hex_after(&doc, "created at `1`, upsert into `t`");
    assert_eq!(encode_event(1, &second).unwrap(), bytes);
    assert_eq!(decode_event::<ChangeSet>(&bytes).unwrap(), (1, second));
}

// ---------------------------------------------------------------------------------------------
// Byte-level facts stated in prose.

use std::path::Path;

use crate::support::journal::{
    frames, open_with_mode, opts_with_mode, payload_for_lsn, read_all, segment_path, write_at,
    write_journal_records,
};
use syncjournal::journal::scan::{DamagedRegion, ScanInput, scan_segment};
use syncjournal::{DamageKind, Journal, PersistMode, RecoveryMode};

/// Payload length of the journals below: 136-byte frames, 451 of them per 64 KiB segment.
const PAYLOAD: usize = 100;

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A segment image built with the crate's own encoders, for feeding the scanner directly.
struct Image {
    bytes: Vec<u8>,
    input: ScanInput,
    /// Where the next frame goes.
    end: usize,
    /// The last frame's checksum (the header's at first).
    last_crc: u32,
}

impl Image {
    fn new() -> Image {
        let header = SegmentHeader {
            journal_id: uuid::Uuid::from_bytes([7; 16]),
            segment_seq: 2,
            first_lsn: 1,
            segment_bytes: 65536,
        };
        let enc = header.encode();
        let mut bytes = vec![0u8; 65536];
        bytes[..enc.len()].copy_from_slice(&enc);
        let header_crc = SegmentHeader::crc_of(&enc);
        Image {
            bytes,
            input: ScanInput {
                seed: Seed::new(header.journal_id, header.segment_seq),
                header_crc,
                first_lsn: 1,
            },
            end: SEGMENT_DATA_OFFSET,
            last_crc: header_crc,
        }
    }

    /// Appends a data frame chained to the previous one; returns its offset.
    fn push(&mut self, lsn: u64, synced_lsn: u64, payload: &[u8]) -> usize {
        let prev = self.last_crc;
        self.push_linked(lsn, synced_lsn, prev, payload)
    }

    /// Appends a data frame with the given chain link; returns its offset.
    fn push_linked(&mut self, lsn: u64, synced_lsn: u64, prev_crc: u32, payload: &[u8]) -> usize {
        let at = self.end;
        let n = frame_bytes(payload.len());
        let seed = self.input.seed;
        self.last_crc = encode_frame_into(
            &mut self.bytes[at..at + n],
            seed,
            lsn,
            synced_lsn,
            prev_crc,
            syncjournal::KIND_DATA,
            payload,
        );
        self.end = at + n;
        at
    }

    fn regions(&self) -> Vec<DamagedRegion> {
        scan_segment(&self.bytes, self.input).regions
    }
}

#[test]
fn head_file_is_one_page_holding_the_64_byte_record_at_offset_0_and_zeros_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let j = Journal::open(&dir, JournalOptions::new().segment_bytes_max(65536)).unwrap();
    for _ in 0..3 {
        j.append(b"x").unwrap();
    }
    let id = j.state().journal_id;
    let b = read(&dir.join(HEAD_FILE));
    assert_eq!(b.len(), HEAD_FILE_BYTES, "HEAD file length");
    assert_eq!(HEAD_BYTES, 64, "the record");
    let head = Head::decode(&b[..HEAD_BYTES]).expect("a valid HEAD record at offset 0");
    assert_eq!((head.journal_id, head.durable_lsn), (id, 3));
    assert_eq!(head.pid, std::process::id());
    assert!(
        b[HEAD_BYTES..].iter().all(|&x| x == 0),
        "the rest of the page"
    );
    let reserved = [
        HEAD_RESERVED_OFFSET..HEAD_JOURNAL_ID_OFFSET,
        HEAD_RESERVED2_OFFSET..HEAD_CRC_OFFSET,
    ];
    for r in reserved.clone() {
        assert!(
            b[r].iter().all(|&x| x == 0),
            "reserved bytes are written as zero"
        );
    }
    // ... but a reader does not check them: the checksum alone guards the record.
    let mut c = b[..HEAD_BYTES].to_vec();
    for r in reserved {
        c[r].fill(0xA5);
    }
    let crc = crc32fast::hash(&c[..HEAD_CRC_OFFSET]);
    c[HEAD_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(Head::decode(&c), Some(head));
    j.close().unwrap();
}

/// The fields of the frame at `at` of `image`, read with the offsets of section 3.2.
struct RawFrame {
    crc: u32,
    payload_len: usize,
    lsn: u64,
    synced_lsn: u64,
    prev_crc: u32,
    kind: u8,
    flags: u8,
    reserved: u16,
}

fn raw_frame(image: &[u8], at: usize) -> RawFrame {
    RawFrame {
        crc: le_u32(image, at + FRAME_CRC_OFFSET),
        payload_len: le_u32(image, at + FRAME_LEN_OFFSET) as usize,
        lsn: le_u64(image, at + FRAME_LSN_OFFSET),
        synced_lsn: le_u64(image, at + FRAME_SYNCED_LSN_OFFSET),
        prev_crc: le_u32(image, at + FRAME_PREV_CRC_OFFSET),
        kind: image[at + FRAME_KIND_OFFSET],
        flags: image[at + FRAME_FLAGS_OFFSET],
        reserved: le_u16(image, at + FRAME_RESERVED_OFFSET),
    }
}

#[test]
fn a_gap_frame_fills_its_damaged_region_exactly_chains_to_its_predecessor_and_ends_with_a_fixed_width_lsn()
 {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    write_journal_records(&dir, 500, PAYLOAD, PersistMode::Sync);
    let seg1 = frames(&segment_path(&dir, 1));
    let seg2_first = frames(&segment_path(&dir, 2))[0].lsn;
    let last = *seg1.last().unwrap();
    assert_eq!(seg2_first, last.lsn + 1);
    // LSN 300: its end LSN 301 needs more than one varint byte (`fb 2d 01`).
    let (mid, after_mid) = (seg1[299], seg1[300]);
    assert_eq!((mid.lsn, after_mid.lsn), (300, 301));
    let path = segment_path(&dir, 1);
    let original = read(&path);
    let mut image = original.clone();
    image[mid.offset + FRAME_HEADER_BYTES + 10] ^= 1;
    image[last.offset + FRAME_HEADER_BYTES + 10] ^= 1;
    std::fs::write(&path, &image).unwrap();

    let j = open_with_mode(&dir, RecoveryMode::Salvage).unwrap();
    let report = j.recovery_report().clone();
    j.close().unwrap();
    assert_eq!(report.skipped, vec![300..301, last.lsn..seg2_first]);
    let cuts: Vec<(u64, u64)> = report.cuts.iter().map(|c| (c.offset, c.len)).collect();
    assert_eq!(
        cuts,
        vec![
            (mid.offset as u64, mid.len as u64),
            (last.offset as u64, last.len as u64)
        ],
        "each region is the damaged frame"
    );

    let salvaged = read(&path);
    let seed = Seed::new(
        uuid::Uuid::from_slice(&salvaged[JOURNAL_ID_OFFSET..JOURNAL_ID_OFFSET + 16]).unwrap(),
        1,
    );
    for (loc, prev_crc, end_lsn) in [
        (mid, le_u32(&original, seg1[298].offset), 301),
        // the segment's last record: the gap ends at the next segment's first LSN
        (
            last,
            le_u32(&original, seg1[seg1.len() - 2].offset),
            seg2_first,
        ),
    ] {
        let g = raw_frame(&salvaged, loc.offset);
        assert_eq!(g.kind, KIND_GAP);
        assert_eq!(g.lsn, loc.lsn, "a gap's LSN is the first missing one");
        assert_eq!(g.synced_lsn, 0);
        assert_eq!((g.flags, g.reserved), (0, 0));
        assert_eq!(
            g.prev_crc, prev_crc,
            "chained to the frame before the region"
        );
        // The frame, not the payload, fills the region: no padding, nothing left over.
        assert_eq!(g.payload_len, loc.len - FRAME_HEADER_BYTES);
        assert_eq!(frame_bytes(g.payload_len), loc.len);
        let p = loc.offset + FRAME_HEADER_BYTES;
        assert_eq!(
            salvaged[p..p + 8],
            end_lsn.to_le_bytes(),
            "the end LSN is a u64 LE"
        );
        assert!(
            salvaged[p + 8..loc.offset + loc.len]
                .iter()
                .all(|&b| b == 0)
        );
        assert!(matches!(
            check_frame(&salvaged[loc.offset..], seed),
            FrameCheck::Valid(h) if h.crc == g.crc
        ));
    }
    assert_eq!(
        salvaged[mid.offset + FRAME_HEADER_BYTES..][..3],
        [0x2d, 0x01, 0x00]
    );
    // The frame after the gap keeps the checksum of the record the gap replaced, which is not
    // the gap's: that link is not checked.
    let next = raw_frame(&salvaged, after_mid.offset);
    assert_eq!(next.prev_crc, le_u32(&original, mid.offset));
    assert_ne!(next.prev_crc, raw_frame(&salvaged, mid.offset).crc);
    let input = ScanInput {
        seed,
        header_crc: le_u32(&salvaged, HEADER_CRC_OFFSET),
        first_lsn: 1,
    };
    let scan = scan_segment(&salvaged, input);
    assert_eq!(scan.regions, vec![], "the salvaged segment scans clean");
    assert_eq!(scan.gaps, vec![(300, 301), (last.lsn, seg2_first)]);
    // The gap's own link is checked like any frame's.
    let mut broken = salvaged.clone();
    let payload = salvaged[mid.offset + FRAME_HEADER_BYTES..mid.offset + mid.len].to_vec();
    let h = seal_frame(seed, 300, 0, 0x1234_5678, KIND_GAP, &payload);
    broken[mid.offset..mid.offset + FRAME_HEADER_BYTES].copy_from_slice(&h);
    let regions = scan_segment(&broken, input).regions;
    assert_eq!(regions[0].offset, mid.offset);
    assert!(matches!(
        regions[0].kind,
        DamageKind::ChainBroken {
            found: 0x1234_5678,
            ..
        }
    ));
}

#[test]
fn a_torn_tail_cut_starts_at_the_end_of_data_ends_8_aligned_and_is_kept_under_a_fixed_width_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    write_journal_records(&dir, 10, PAYLOAD, PersistMode::Sync);
    let frames = frames(&segment_path(&dir, 1));
    let end = frames[9].offset + frames[9].len;
    let stray = end + 1003; // not a multiple of 8
    let path = segment_path(&dir, 1);
    let mut image = read(&path);
    image[stray] = 0x5A;
    std::fs::write(&path, &image).unwrap();

    let j = open_with_mode(&dir, RecoveryMode::TolerateTornTail).unwrap();
    let report = j.recovery_report().clone();
    assert_eq!(j.state().next_lsn, 11);
    j.close().unwrap();
    let [cut] = &report.cuts[..] else {
        panic!("one cut: {:?}", report.cuts)
    };
    assert!(cut.torn_tail);
    assert_eq!(cut.kind, DamageKind::TrailingGarbage { len: 1 });
    assert_eq!(
        cut.offset, end as u64,
        "the region starts at the end of written data"
    );
    assert_eq!(cut.len, (align_frame(stray + 1) - end) as u64);
    assert_eq!(cut.len % FRAME_ALIGN as u64, 0);
    assert_eq!(cut.records_dropped, 0);

    let saved = cut.saved_to.as_ref().expect("bytes kept");
    assert_eq!(saved.parent().unwrap(), dir.join(FORENSICS_DIR));
    let name = saved.file_name().unwrap().to_str().unwrap();
    let prefix = format!("{:016}-{:010}-", 1, end);
    let ms = name
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(".cut"))
        .unwrap_or_else(|| panic!("side file {name} is not {prefix}<ms>.cut"));
    assert!(
        !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()),
        "{name}"
    );
    let ms: u64 = ms.parse().unwrap();
    assert!(ms >= 1_600_000_000_000, "{ms} is ms since the Unix epoch");
    assert_eq!(read(saved), image[end..end + cut.len as usize]);
    assert!(read(&path)[end..].iter().all(|&b| b == 0), "zeroed");
}

#[test]
fn a_zero_hole_is_a_trailing_garbage_region_and_the_scan_resumes_at_the_8_aligned_start_below_the_next_non_zero_byte()
 {
    let mut img = Image::new();
    for lsn in 1..=3 {
        img.push(lsn, lsn - 1, &payload_for_lsn(lsn, 16));
    }
    let hole = img.end;
    img.end += 64;
    // A frame whose checksum's first byte is zero: its first non-zero byte is not its start.
    let mut tag = 0u64;
    let at = loop {
        let mut trial = Image::new();
        trial.end = hole + 64;
        let mut payload = payload_for_lsn(4, 16);
        payload[..8].copy_from_slice(&tag.to_le_bytes());
        let at = trial.push_linked(4, 3, img.last_crc, &payload);
        if trial.bytes[at] == 0 {
            img.push_linked(4, 3, img.last_crc, &payload);
            break at;
        }
        tag += 1;
    };
    let first_non_zero = (at..).find(|&i| img.bytes[i] != 0).unwrap();
    assert!(first_non_zero > at && first_non_zero < at + FRAME_ALIGN);

    let scan = scan_segment(&img.bytes, img.input);
    let [r] = &scan.regions[..] else {
        panic!("one region: {:?}", scan.regions)
    };
    assert_eq!(r.offset, hole, "the region starts at the all-zero header");
    assert_eq!(r.end, at);
    assert!(matches!(r.kind, DamageKind::TrailingGarbage { .. }));
    assert_eq!(r.resume_lsn, Some(4), "scanning resumed after the hole");
    assert_eq!(scan.tail.records, 4);
    assert_eq!(scan.tail.next_lsn, 5);
}

#[test]
fn the_resync_search_starts_8_bytes_past_the_damaged_position_so_a_verifying_frame_there_is_lost() {
    // LSN 5 where 4 is expected: a frame that verifies and chains, at the damaged position.
    let mut img = Image::new();
    for lsn in 1..=3 {
        img.push(lsn, lsn - 1, &payload_for_lsn(lsn, 16));
    }
    let at = img.push(5, 3, &payload_for_lsn(5, 16));
    let resumed = img.push(6, 3, &payload_for_lsn(6, 16));
    let [r] = &img.regions()[..] else {
        panic!("one region")
    };
    assert_eq!(
        r.kind,
        DamageKind::LsnOutOfOrder {
            expected: 4,
            found: 5
        }
    );
    assert_eq!((r.offset, r.end, r.resume_lsn), (at, resumed, Some(6)));

    // LSN 4 where 4 is expected, but not chained to LSN 3.
    let mut img = Image::new();
    for lsn in 1..=3 {
        img.push(lsn, lsn - 1, &payload_for_lsn(lsn, 16));
    }
    let at = img.push_linked(4, 3, 0xBAD, &payload_for_lsn(4, 16));
    let resumed = img.push(5, 3, &payload_for_lsn(5, 16));
    let [r] = &img.regions()[..] else {
        panic!("one region")
    };
    assert!(matches!(
        r.kind,
        DamageKind::ChainBroken { found: 0xBAD, .. }
    ));
    assert_eq!((r.offset, r.end, r.resume_lsn), (at, resumed, Some(5)));
}

#[test]
fn synced_lsn_at_or_above_the_frames_own_lsn_is_not_refused_by_the_frame_checks() {
    let mut img = Image::new();
    img.push(1, 0, b"a");
    let at = img.push(2, 2, b"b");
    img.push(3, 1000, b"c");
    assert!(matches!(
        check_frame(&img.bytes[at..], img.input.seed),
        FrameCheck::Valid(h) if h.synced_lsn == h.lsn
    ));
    let scan = scan_segment(&img.bytes, img.input);
    assert_eq!(scan.regions, vec![]);
    assert_eq!((scan.tail.records, scan.max_synced_claim), (3, 1000));
}

#[test]
fn valid_frames_after_a_torn_tail_that_claim_nothing_durable_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    // Buffered: every frame was written before any sync, so each claims synced_lsn 0.
    let payloads = write_journal_records(&dir, 10, PAYLOAD, PersistMode::Buffered);
    let frames = frames(&segment_path(&dir, 1));
    assert!(frames.iter().all(|f| f.synced_lsn == 0));
    let path = segment_path(&dir, 1);
    let mut image = read(&path);
    image[frames[4].offset..frames[4].offset + frames[4].len].fill(0); // LSN 5
    std::fs::write(&path, &image).unwrap();
    // As after a crash before the first sync: no HEAD was ever published (a HEAD that says LSN
    // 10 was durable would make the hole damage in the middle: §9 step 4).
    std::fs::remove_file(dir.join(HEAD_FILE)).unwrap();

    let j = open_with_mode(&dir, RecoveryMode::TolerateTornTail).unwrap();
    let [cut] = &j.recovery_report().cuts[..] else {
        panic!("one cut")
    };
    assert!(cut.torn_tail);
    assert_eq!(cut.offset, frames[4].offset as u64);
    assert_eq!(
        cut.len,
        (frames[9].offset + frames[9].len - frames[4].offset) as u64
    );
    assert_eq!(
        cut.records_dropped, 5,
        "LSNs 6..=10 verified but were dropped"
    );
    let records = read_all(&j);
    assert_eq!(records.len(), 4);
    assert_eq!(records[3].payload, payloads[3]);
    assert_eq!(j.state().next_lsn, 5);
    j.close().unwrap();
}

#[test]
fn a_missing_ack_is_recreated_in_slot_1_at_the_first_retained_lsn_minus_1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    write_journal_records(&dir, 600, PAYLOAD, PersistMode::Sync);
    std::fs::remove_file(dir.join(ACK_FILE)).unwrap();
    let j = open_with_mode(&dir, RecoveryMode::TolerateTornTail).unwrap();
    assert_eq!(j.recovery_report().acked_lsn, 0, "first_lsn 1 − 1");
    let b = read(&dir.join(ACK_FILE));
    assert_eq!(b.len(), ACK_FILE_BYTES);
    let slot = AckSlot::decode(&b[ACK_SLOT_OFFSETS[1]..]).expect("generation 1 goes to slot 1");
    assert_eq!((slot.generation, slot.acked_lsn), (1, 0));
    assert!(
        b[..ACK_SLOT_BYTES].iter().all(|&x| x == 0),
        "slot 0 never written"
    );

    // Retire segment 1: the first retained LSN is now above 1.
    let last_of_1 = frames(&segment_path(&dir, 1)).last().unwrap().lsn;
    j.ack(last_of_1).unwrap();
    assert!(!segment_path(&dir, 1).exists());
    j.close().unwrap();
    for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Salvage] {
        std::fs::remove_file(dir.join(ACK_FILE)).unwrap();
        let j = open_with_mode(&dir, mode).unwrap();
        assert_eq!(
            j.recovery_report().acked_lsn,
            last_of_1,
            "{mode:?}: first retained LSN − 1"
        );
        j.close().unwrap();
        let b = read(&dir.join(ACK_FILE));
        let slot = AckSlot::decode(&b[ACK_SLOT_OFFSETS[1]..]).expect("slot 1");
        assert_eq!((slot.generation, slot.acked_lsn), (1, last_of_1));
    }
}

#[test]
fn ack_bytes_outside_the_two_slots_are_written_as_zero_and_never_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    write_journal_records(&dir, 3, PAYLOAD, PersistMode::Sync);
    let j = open_with_mode(&dir, RecoveryMode::TolerateTornTail).unwrap();
    j.ack(2).unwrap(); // generation 2, slot 0
    j.close().unwrap();
    let path = dir.join(ACK_FILE);
    let mut b = read(&path);
    let [s0, s1] = ACK_SLOT_OFFSETS;
    let outside = [s0 + ACK_SLOT_BYTES..s1, s1 + ACK_SLOT_BYTES..ACK_FILE_BYTES];
    for r in outside.clone() {
        assert!(b[r].iter().all(|&x| x == 0));
    }
    for r in outside {
        b[r].fill(0xA5);
    }
    std::fs::write(&path, &b).unwrap();
    let j = open_with_mode(&dir, RecoveryMode::AbsoluteConsistency).unwrap();
    assert_eq!(j.recovery_report().acked_lsn, 2);
    j.close().unwrap();
    // Two valid slots of one generation: slot 0 is used.
    let slot = |acked_lsn| AckSlot {
        journal_id: uuid::Uuid::from_bytes([1; 16]),
        generation: 5,
        acked_lsn,
        acked_at_ms: 0,
    };
    b[s0..s0 + ACK_SLOT_BYTES].copy_from_slice(&slot(7).encode());
    b[s1..s1 + ACK_SLOT_BYTES].copy_from_slice(&slot(9).encode());
    assert_eq!(decode_ack_file(&b), Ok(slot(7)));
}

#[test]
fn recover_also_retires_acknowledged_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    write_journal_records(&dir, 600, PAYLOAD, PersistMode::Sync);
    let last_of_1 = frames(&segment_path(&dir, 1)).last().unwrap().lsn;
    let j = Journal::open(
        &dir,
        opts_with_mode(RecoveryMode::TolerateTornTail).retain_acked_segments(1),
    )
    .unwrap();
    j.ack(last_of_1).unwrap();
    j.close().unwrap();
    assert!(segment_path(&dir, 1).exists(), "kept for re-replay");
    // `recover` runs retention with the default policy: what was acknowledged less than an
    // hour ago stays ...
    crate::support::cli::sj(&[std::ffi::OsStr::new("recover"), dir.as_os_str()]).code(0);
    assert!(segment_path(&dir, 1).exists(), "acknowledged a moment ago");
    // ... what was acknowledged two hours ago goes.
    age_acknowledgement(&dir, 2 * 3600 * 1000);
    crate::support::cli::sj(&[std::ffi::OsStr::new("recover"), dir.as_os_str()]).code(0);
    assert!(!segment_path(&dir, 1).exists(), "retired by `recover`");
    assert!(segment_path(&dir, 2).exists());
}

/// Rewrites `ACK` so that its acknowledgement was made `ms` earlier (a new slot generation).
fn age_acknowledgement(dir: &Path, ms: u64) {
    let b = read(&dir.join(ACK_FILE));
    let cur = ACK_SLOT_OFFSETS
        .iter()
        .filter_map(|&o| AckSlot::decode(&b[o..]).ok())
        .max_by_key(|s| s.generation)
        .unwrap();
    let next = AckSlot {
        generation: cur.generation + 1,
        acked_at_ms: cur.acked_at_ms - ms,
        ..cur
    };
    write_at(&dir.join(ACK_FILE), next.offset(), &next.encode());
}

#[test]
fn non_canonical_varints_are_accepted_unless_the_marker_is_wider_than_the_type() {
    use syncjournal::event::{decode_event, encode_event};
    use syncjournal::{ChangeSet, Mutation};
    let empty = ChangeSet::new();
    // created_at_ms = 5 as `05`, as `fb 05 00` (u16 marker) and as `fd` + 8 bytes (u64 marker)
    for bytes in [
        &[0x05, 0x00][..],
        &[0xfb, 0x05, 0x00, 0x00],
        &[0xfd, 5, 0, 0, 0, 0, 0, 0, 0, 0x00],
    ] {
        assert_eq!(
            decode_event::<ChangeSet>(bytes),
            Ok((5, empty.clone())),
            "{bytes:02x?}"
        );
    }
    // a marker wider than the type (u128 for the u64) and the marker 255 are refused
    let mut u128_marker = vec![0xfe, 5];
    u128_marker.extend_from_slice(&[0; 15]);
    u128_marker.push(0x00);
    assert!(decode_event::<ChangeSet>(&u128_marker).is_err());
    assert!(decode_event::<ChangeSet>(&[0xff, 0x05, 0x00]).is_err());
    // re-encoding writes the shortest form
    assert_eq!(encode_event(5, &empty).unwrap(), [0x05, 0x00]);
    // The enum variant index is a u32: `fb` (u16) is accepted, `fd` (u64) refused.
    let delete = |variant: &[u8]| {
        let mut b = vec![0x00, 0x01];
        b.extend_from_slice(variant);
        b.extend_from_slice(&[0x01, b't', 0x00]);
        decode_event::<ChangeSet>(&b)
    };
    let (_, cs) = delete(&[0x03]).unwrap();
    assert!(matches!(&cs.mutations[..], [Mutation::Delete { table, .. }] if table == "t"));
    assert_eq!(delete(&[0xfb, 0x03, 0x00]).unwrap().1, cs);
    assert!(delete(&[0xfd, 3, 0, 0, 0, 0, 0, 0, 0]).is_err());
}
