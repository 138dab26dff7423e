//! Input validation at the API boundary: empty and oversized payloads, reserved kinds, invalid
//! options, a missing directory with `create_if_missing(false)`, and a record of exactly the
//! largest size.

use std::time::Duration;
use syncjournal::error::JournalError;

use crate::support::journal::read_all;
use syncjournal::{Error, Journal, JournalOptions, KIND_DATA, PersistMode};

const SEGMENT_BYTES: u64 = 64 << 10;

fn opts() -> JournalOptions {
    JournalOptions::new().segment_bytes_max(SEGMENT_BYTES)
}

fn open() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path().join("j"), opts()).unwrap();
    (dir, journal)
}

/// Nothing was written: the next LSN is still `next`.
fn assert_unchanged(journal: &Journal, next: u64, what: &str) {
    let state = journal.state();
    assert_eq!(state.next_lsn, next, "{what}: an LSN was consumed");
    assert_eq!(state.poisoned, None, "{what}: poisoned");
}

#[test]
fn empty_payload_is_refused() {
    let (_dir, journal) = open();
    assert!(matches!(
        journal.append(b""),
        Err(Error::Journal(JournalError::EmptyRecord))
    ));
    assert!(matches!(
        journal.append_kind(5, b""),
        Err(Error::Journal(JournalError::EmptyRecord))
    ));
    assert!(matches!(
        journal.write(KIND_DATA, b""),
        Err(Error::Journal(JournalError::EmptyRecord))
    ));
    assert!(matches!(
        journal.append_batch([b"".as_slice()]),
        Err(Error::Journal(JournalError::EmptyRecord))
    ));
    assert_unchanged(&journal, 1, "empty payloads");
    // An empty batch is not an error; it appends nothing.
    let range = journal.append_batch(Vec::<Vec<u8>>::new()).unwrap();
    assert!(range.is_empty(), "empty batch returned {range:?}");
    assert_unchanged(&journal, 1, "empty batch");
    // One byte is enough.
    assert_eq!(journal.append(b"x").unwrap(), 1);
    assert_eq!(journal.read(1).unwrap().unwrap().payload, b"x");
}

#[test]
fn payload_limit_is_exact() {
    let (_dir, journal) = open();
    let max = journal.options().payload_bytes_limit();
    // 64 KiB segment: 65536 - 4096 (data offset) - 32 (frame header), rounded down to 8.
    assert_eq!(max, (65536 - 4096 - 32) & !7);
    match journal.append(&vec![7u8; max + 1]) {
        Err(Error::Journal(JournalError::RecordTooLarge { len, max: m })) => {
            assert_eq!((len, m), (max + 1, max))
        }
        other => panic!("payload of max + 1 bytes: {other:?}"),
    }
    assert!(matches!(
        journal.write(KIND_DATA, &vec![7u8; max + 1]),
        Err(Error::Journal(JournalError::RecordTooLarge { .. }))
    ));
    assert!(matches!(
        journal.append_batch([vec![7u8; 10 * max]]),
        Err(Error::Journal(JournalError::RecordTooLarge { .. }))
    ));
    assert_unchanged(&journal, 1, "oversized payloads");

    // Exactly the maximum fits, also when the active segment already holds a record (it then
    // goes to a fresh segment), and the records around it are intact.
    let big: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    assert_eq!(journal.append(b"before").unwrap(), 1);
    assert_eq!(journal.append(&big).unwrap(), 2);
    assert_eq!(journal.append(&big).unwrap(), 3);
    assert_eq!(journal.append(b"after").unwrap(), 4);
    let dir = journal.dir().to_path_buf();
    let check = |journal: &Journal| {
        let records = read_all(journal);
        assert_eq!(records.len(), 4);
        assert_eq!(records[0].payload, b"before");
        assert!(records[1].payload == big && records[2].payload == big);
        assert_eq!(records[3].payload, b"after");
    };
    check(&journal);
    assert_eq!(
        journal.state().segments,
        4,
        "each maximal record fills a segment"
    );
    drop(journal);
    let journal = Journal::open(&dir, opts()).unwrap();
    assert!(journal.recovery_report().cuts.is_empty());
    check(&journal);
}

#[test]
fn record_bytes_max_is_the_limit_when_smaller() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path().join("j"), opts().record_bytes_max(1000)).unwrap();
    assert_eq!(journal.options().payload_bytes_limit(), 1000);
    assert_eq!(journal.append(&[1u8; 1000]).unwrap(), 1);
    match journal.append(&[1u8; 1001]) {
        Err(Error::Journal(JournalError::RecordTooLarge { len, max })) => {
            assert_eq!((len, max), (1001, 1000))
        }
        other => panic!("1001 bytes with record_bytes_max(1000): {other:?}"),
    }
    assert_unchanged(&journal, 2, "record_bytes_max");
}

#[test]
fn reserved_kinds_are_refused_and_application_kinds_round_trip() {
    let (_dir, journal) = open();
    for kind in std::iter::once(0u8).chain(0xF0..=0xFF) {
        let check = |r: syncjournal::Result<u64>, api: &str| match r {
            Err(Error::Journal(JournalError::ReservedKind { kind: k })) => {
                assert_eq!(k, kind, "{api}")
            }
            other => panic!("{api} with kind {kind:#04x}: expected ReservedKind, got {other:?}"),
        };
        check(journal.append_kind(kind, b"x"), "append_kind");
        check(journal.write(kind, b"x"), "write");
        check(
            journal.append_batch_kind(kind, [b"x"]).map(|r| r.start),
            "append_batch_kind",
        );
    }
    assert_unchanged(&journal, 1, "reserved kinds");

    let kinds = [KIND_DATA, 0x02, 0x7F, 0xEE, 0xEF];
    for (i, &kind) in kinds.iter().enumerate() {
        assert_eq!(journal.append_kind(kind, &[kind]).unwrap(), i as u64 + 1);
    }
    let range = journal.append_batch_kind(0x42, [b"a", b"b"]).unwrap();
    assert_eq!(range, 6..8);
    let records = read_all(&journal);
    let got: Vec<(u8, Vec<u8>)> = records.into_iter().map(|r| (r.kind, r.payload)).collect();
    let mut expected: Vec<(u8, Vec<u8>)> = kinds.iter().map(|&k| (k, vec![k])).collect();
    expected.extend([(0x42, b"a".to_vec()), (0x42, b"b".to_vec())]);
    assert_eq!(got, expected);
}

#[test]
fn invalid_options_are_refused_before_touching_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, JournalOptions)> = vec![
        (
            "segment_bytes_max",
            JournalOptions::new().segment_bytes_max(65536 + 1),
        ),
        (
            "segment_bytes_max",
            JournalOptions::new().segment_bytes_max(65536 + 512),
        ),
        (
            "segment_bytes_max",
            JournalOptions::new().segment_bytes_max(65536 - 4096),
        ),
        (
            "segment_bytes_max",
            JournalOptions::new().segment_bytes_max(4096),
        ),
        (
            "segment_bytes_max",
            JournalOptions::new().segment_bytes_max(0),
        ),
        (
            "segment_bytes_max",
            JournalOptions::new().segment_bytes_max((1 << 30) + 4096),
        ),
        (
            "record_bytes_max",
            JournalOptions::new().record_bytes_max(0),
        ),
        (
            "persist_mode",
            JournalOptions::new().persist_mode(PersistMode::Batched {
                interval: Duration::ZERO,
            }),
        ),
    ];
    for (i, (option, o)) in cases.into_iter().enumerate() {
        let jdir = dir.path().join(format!("j{i}"));
        let what = format!("{o:?}");
        match Journal::open(&jdir, o) {
            Err(Error::InvalidOption { name, reason }) => {
                assert_eq!(name, option, "{what}");
                assert!(!reason.is_empty(), "{what}");
            }
            other => panic!("{what}: expected InvalidOption({option}), got {other:?}"),
        }
        assert!(!jdir.exists(), "{what}: the directory was created anyway");
    }
    // The boundaries themselves are valid.
    Journal::open(
        dir.path().join("min"),
        JournalOptions::new().segment_bytes_max(65536),
    )
    .expect("64 KiB segments are allowed");
    assert!(
        JournalOptions::new()
            .segment_bytes_max(1 << 30)
            .payload_bytes_limit()
            > 0
    );
}

#[test]
fn missing_directory_without_create_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("missing").join("journal");
    match Journal::open(&jdir, opts().create_if_missing(false)) {
        Err(Error::Journal(JournalError::NotFound { dir: d })) => assert_eq!(d, jdir),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(!jdir.exists(), "NotFound created the directory");
    assert!(!dir.path().join("missing").exists());

    // With the default, it is created; then create_if_missing(false) opens it.
    Journal::open(&jdir, opts()).unwrap().append(b"a").unwrap();
    let journal = Journal::open(&jdir, opts().create_if_missing(false)).unwrap();
    assert_eq!(read_all(&journal).len(), 1);
}

#[test]
fn a_directory_of_foreign_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a journal").unwrap();
    match Journal::open(dir.path(), opts()) {
        Err(Error::Journal(JournalError::ForeignDirectory { .. })) => {}
        other => panic!("expected ForeignDirectory, got {other:?}"),
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["notes.txt"],
        "nothing was created among foreign files"
    );
}

/// Waiting for an LSN that was never written is an error, not a busy loop.
#[test]
fn waiting_for_an_unwritten_lsn_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path().join("j"), JournalOptions::new()).unwrap();
    journal.append(b"one").unwrap();
    journal.wait_durable(1).unwrap();
    match journal.wait_durable(2) {
        Err(Error::Journal(JournalError::NotWritten { lsn: 2, written: 1 })) => {}
        other => panic!("expected NotWritten, got {other:?}"),
    }
}
