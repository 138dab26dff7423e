//! Pins every constant and byte offset that `journal-format.md` states against the code, in
//! both directions: a constant the document names must exist with that value, and every
//! constant listed here must appear in the document.

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
            syncjournal::mutation::KIND_CHANGESET.to_string(),
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
            syncjournal::mutation::DEPTH_MAX.to_string(),
        ),
        ("SEGMENT_EXTENSION", SEGMENT_EXTENSION.to_string()),
        ("LOCK_FILE", LOCK_FILE.to_string()),
        ("HEAD_FILE", HEAD_FILE.to_string()),
        ("HEAD_BYTES", HEAD_BYTES.to_string()),
        ("ACK_FILE", ACK_FILE.to_string()),
        ("FORENSICS_DIR", FORENSICS_DIR.to_string()),
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
    let doc = doc();
    let line = doc
        .lines()
        .skip_while(|l| !l.contains("encodes as"))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let hex = line
        .split('`')
        .rev()
        .nth(1)
        .expect("hex bytes in backticks after `encodes as`");
    let expected: Vec<u8> = hex
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    let value = (300u32, -2i64, "hi", Some(7u8), vec![1u8, 2]);
    let got = bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap();
    assert_eq!(got, expected);
}

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
    use syncjournal::mutation::{decode_event, encode_event};
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
