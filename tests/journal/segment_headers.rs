//! Segment headers and the set of segment files (journal-format.md 2, 3.1, 9 "Other damage"):
//! foreign files, unsupported versions, damaged or truncated headers, segments truncated by
//! someone else, segments of another journal, missing segments and foreign directories are
//! refused in every recovery mode (except that salvage re-extends a truncated segment), with
//! an error that names the file, and without modifying anything.

use std::fs;
use std::path::{Path, PathBuf};
use syncjournal::error::JournalError;

use crate::support::journal::*;
use syncjournal::format::{
    HEADER_CRC_OFFSET, HEADER_FLAGS_OFFSET, JOURNAL_ID_OFFSET, SEGMENT_FIRST_LSN_OFFSET,
    SEGMENT_SEQ_OFFSET, VERSION_OFFSET,
};
use syncjournal::{DamageKind, Error, PersistMode, RecoveryMode};

const ALL_MODES: [RecoveryMode; 3] = [
    RecoveryMode::TolerateTornTail,
    RecoveryMode::AbsoluteConsistency,
    RecoveryMode::Salvage,
];

fn journal(records: u64, payload: usize) -> (tempfile::TempDir, PathBuf, Vec<Vec<u8>>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let payloads = write_journal_records(&dir, records, payload, PersistMode::Sync);
    (tmp, dir, payloads)
}

fn journal_id_in(segment: &Path) -> uuid::Uuid {
    let b = fs::read(segment).unwrap();
    uuid::Uuid::from_slice(&b[JOURNAL_ID_OFFSET..JOURNAL_ID_OFFSET + 16]).unwrap()
}

/// Opens `dir` in every mode; each must fail, and `check` sees each error. The journal's files
/// must be unchanged afterwards.
fn refused_in_every_mode(dir: &Path, check: impl Fn(RecoveryMode, Error)) {
    let before = snapshot(dir, false);
    for mode in ALL_MODES {
        let e = expect_open_error(open_with_mode(dir, mode), &format!("{mode:?}"));
        check(mode, e);
        assert_eq!(
            snapshot(dir, false),
            before,
            "{mode:?}: a refused open modified the journal"
        );
    }
}

fn assert_names(e: &Error, path: &Path) {
    let text = e.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "error text does not name {}: {text}",
        path.display()
    );
}

fn header_corruption(e: Error, mode: RecoveryMode) -> syncjournal::Corruption {
    match e {
        Error::Journal(JournalError::Corrupt(c)) => *c,
        other => panic!("{mode:?}: expected Corrupt, got {other:?}"),
    }
}

#[test]
fn wrong_magic_is_a_foreign_file() {
    let (_t, dir, _) = journal(5, 100);
    let seg = segment_path(&dir, 1);
    let mut b = fs::read(&seg).unwrap();
    b[..8].copy_from_slice(b"NOTAJRNL");
    fs::write(&seg, &b).unwrap();
    refused_in_every_mode(&dir, |mode, e| {
        assert_names(&e, &seg);
        match e {
            Error::Journal(JournalError::ForeignFile { path, found }) => {
                assert_eq!(path, seg, "{mode:?}");
                assert_eq!(found, b"NOTAJRNL", "{mode:?}");
            }
            other => panic!("{mode:?}: expected ForeignFile, got {other:?}"),
        }
    });
    assert!(matches!(
        syncjournal::inspect::inspect(&dir),
        Err(Error::Journal(JournalError::ForeignFile { .. }))
    ));
}

#[test]
fn an_unrelated_file_named_like_a_segment_is_a_foreign_file() {
    let (_t, dir, _) = journal(5, 100);
    let seg2 = segment_path(&dir, 2);
    fs::write(&seg2, "these are my holiday notes, not a journal segment\n").unwrap();
    refused_in_every_mode(&dir, |mode, e| {
        assert_names(&e, &seg2);
        match e {
            Error::Journal(JournalError::ForeignFile { path, found }) => {
                assert_eq!(path, seg2, "{mode:?}");
                assert_eq!(found, b"these ar", "{mode:?}");
            }
            other => panic!("{mode:?}: expected ForeignFile, got {other:?}"),
        }
    });
}

#[test]
fn older_and_newer_format_versions_are_unsupported() {
    for version in [0u16, 2] {
        let (_t, dir, _) = journal(5, 100);
        let seg = segment_path(&dir, 1);
        let mut b = fs::read(&seg).unwrap();
        b[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&version.to_le_bytes());
        reseal_segment_header(&mut b);
        fs::write(&seg, &b).unwrap();
        refused_in_every_mode(&dir, |mode, e| {
            assert_names(&e, &seg);
            let text = e.to_string();
            match e {
                Error::Journal(JournalError::UnsupportedVersion {
                    path,
                    found,
                    supported,
                }) => {
                    assert_eq!(path, seg, "{mode:?}");
                    assert_eq!(found, version, "{mode:?}");
                    assert_eq!(supported, 1, "{mode:?}");
                    let hint = if version > 1 { "newer" } else { "older" };
                    assert!(text.contains(hint), "{text}");
                }
                other => panic!("{mode:?} v{version}: expected UnsupportedVersion, got {other:?}"),
            }
        });
    }
}

#[test]
fn a_header_checksum_mismatch_is_never_repaired() {
    for at in [
        SEGMENT_FIRST_LSN_OFFSET,
        HEADER_CRC_OFFSET + 2,
        VERSION_OFFSET,
    ] {
        let (_t, dir, _) = journal(5, 100);
        let seg = segment_path(&dir, 1);
        let mut b = fs::read(&seg).unwrap();
        let stored_before = u32::from_le_bytes(b[60..64].try_into().unwrap());
        b[at] ^= 0x04;
        fs::write(&seg, &b).unwrap();
        let stored = u32::from_le_bytes(b[60..64].try_into().unwrap());
        let computed = crc32fast::hash(&b[..60]);
        assert_ne!(stored, computed);
        if at != HEADER_CRC_OFFSET + 2 {
            assert_eq!(stored, stored_before);
        }
        refused_in_every_mode(&dir, |mode, e| {
            assert_names(&e, &seg);
            let c = header_corruption(e, mode);
            assert_eq!(c.segment, seg);
            assert_eq!(c.offset, 0);
            assert!(!c.torn_tail);
            assert_eq!(
                c.kind,
                DamageKind::HeaderChecksum { stored, computed },
                "{mode:?}, flip at header byte {at}"
            );
        });
    }
}

#[test]
fn checksummed_but_invalid_header_fields_are_refused() {
    // flags ≠ 0
    let (_t, dir, _) = journal(3, 100);
    let seg = segment_path(&dir, 1);
    let mut b = fs::read(&seg).unwrap();
    b[HEADER_FLAGS_OFFSET] = 1;
    reseal_segment_header(&mut b);
    fs::write(&seg, &b).unwrap();
    refused_in_every_mode(&dir, |mode, e| {
        assert_names(&e, &seg);
        let c = header_corruption(e, mode);
        assert!(
            matches!(
                c.kind,
                DamageKind::HeaderField {
                    field: "flags",
                    found: 1,
                    expected: 0
                }
            ),
            "{mode:?}: {:?}",
            c.kind
        );
    });

    // segment_seq ≠ the file name
    let (_t, dir, _) = journal(3, 100);
    let seg = segment_path(&dir, 1);
    let mut b = fs::read(&seg).unwrap();
    b[SEGMENT_SEQ_OFFSET..SEGMENT_SEQ_OFFSET + 8].copy_from_slice(&5u64.to_le_bytes());
    reseal_segment_header(&mut b);
    fs::write(&seg, &b).unwrap();
    refused_in_every_mode(&dir, |mode, e| {
        assert_names(&e, &seg);
        let c = header_corruption(e, mode);
        assert_eq!(
            c.kind,
            DamageKind::SequenceMismatch {
                file_name: 1,
                header: 5
            },
            "{mode:?}"
        );
    });
}

#[test]
fn a_truncated_header_is_reported_as_such() {
    for len in [10usize, 40] {
        let (_t, dir, _) = journal(5, 100);
        let seg = segment_path(&dir, 1);
        let b = fs::read(&seg).unwrap();
        fs::write(&seg, &b[..len]).unwrap();
        refused_in_every_mode(&dir, |mode, e| {
            assert_names(&e, &seg);
            let c = header_corruption(e, mode);
            assert_eq!(c.segment, seg);
            assert_eq!(
                c.kind,
                DamageKind::HeaderTruncated { len: len as u64 },
                "{mode:?}, {len}-byte file"
            );
        });
        assert_eq!(fs::metadata(&seg).unwrap().len(), len as u64);
    }
}

#[test]
fn a_segment_truncated_after_its_data_is_refused_and_salvage_re_extends_it() {
    let (_t, dir, payloads) = journal(10, 100);
    let seg = segment_path(&dir, 1);
    let original = fs::read(&seg).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(40960).unwrap();
    drop(f);
    for mode in [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::AbsoluteConsistency,
    ] {
        let e = expect_open_error(open_with_mode(&dir, mode), "truncated");
        assert_names(&e, &seg);
        let c = header_corruption(e, mode);
        assert_eq!(c.segment, seg);
        assert_eq!(
            c.kind,
            DamageKind::SegmentLength {
                expected: SEG_BYTES,
                actual: 40960
            },
            "{mode:?}"
        );
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            40960,
            "{mode:?} changed it"
        );
    }
    let j = open_with_mode(&dir, RecoveryMode::Salvage).unwrap();
    assert_eq!(fs::metadata(&seg).unwrap().len(), SEG_BYTES, "re-extended");
    let r = j.recovery_report();
    assert!(r.cuts.is_empty() && r.skipped.is_empty(), "{r:?}");
    assert_data_prefix(&read_all(&j), &payloads, 10, "after re-extension");
    drop(j);
    assert_eq!(fs::read(&seg).unwrap(), original);
    let j = open_with_mode(&dir, RecoveryMode::AbsoluteConsistency).unwrap();
    assert_eq!(j.recovery_report().records, 10);
}

#[test]
fn salvage_of_a_last_segment_truncated_through_its_data_cuts_the_torn_part() {
    let (_t, dir, payloads) = journal(40, 500);
    let seg = segment_path(&dir, 1);
    let frames = frames_of_segment(&fs::read(&seg).unwrap(), 1);
    let f30 = frames[29];
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len((f30.offset + 100) as u64).unwrap();
    drop(f);
    // Nothing proves records 30.. durable (HEAD as a crash before their sync left it); with
    // HEAD at 40 they would be lost durable records, salvaged as a gap.
    rewind_head(&dir, 29);
    let c = expect_corrupt(
        open_with_mode(&dir, RecoveryMode::TolerateTornTail),
        "truncated",
    );
    assert!(matches!(c.kind, DamageKind::SegmentLength { .. }));
    let j = open_with_mode(&dir, RecoveryMode::Salvage).unwrap();
    assert_eq!(fs::metadata(&seg).unwrap().len(), SEG_BYTES);
    let r = j.recovery_report().clone();
    assert_eq!(r.cuts.len(), 1, "{r:?}");
    assert!(r.cuts[0].torn_tail);
    assert_eq!(r.cuts[0].offset, f30.offset as u64);
    assert_eq!(r.next_lsn, 30);
    assert_data_prefix(&read_all(&j), &payloads, 29, "truncated last segment");
    assert_eq!(j.append(b"30").unwrap(), 30);
}

/// A 3-segment journal whose sealed segment 1 is truncated at `cut_at(frames of segment 1)`.
fn truncated_sealed_segment(cut_at: impl Fn(&[FrameLoc]) -> (usize, u64)) {
    let (_t, dir, payloads) = journal(250, 500);
    assert_eq!(segment_paths(&dir).len(), 3);
    let seg1 = segment_path(&dir, 1);
    let frames = frames_of_segment(&fs::read(&seg1).unwrap(), 1);
    let next_first = frames.last().unwrap().lsn + 1;
    let (len, first_lost) = cut_at(&frames);
    let f = fs::OpenOptions::new().write(true).open(&seg1).unwrap();
    f.set_len(len as u64).unwrap();
    drop(f);
    for mode in [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::AbsoluteConsistency,
    ] {
        let c = expect_corrupt(open_with_mode(&dir, mode), "truncated sealed segment");
        assert_eq!(c.segment, seg1);
        assert!(
            matches!(c.kind, DamageKind::SegmentLength { .. }),
            "{:?}",
            c.kind
        );
    }
    let j = open_with_mode(&dir, RecoveryMode::Salvage)
        .unwrap_or_else(|e| panic!("salvage of a segment truncated to {len} bytes: {e}"));
    assert_eq!(fs::metadata(&seg1).unwrap().len(), SEG_BYTES);
    let r = j.recovery_report().clone();
    // The lost records of a sealed segment show up as a gap up to the next segment.
    assert_eq!(r.skipped, vec![first_lost..next_first], "{r:?}");
    assert_records_with_gaps(&read_all(&j), &payloads, &[(first_lost, next_first)]);
    assert_eq!(j.append(b"251").unwrap(), 251);
    drop(j);
    let j = open_with_mode(&dir, RecoveryMode::AbsoluteConsistency).unwrap();
    assert_eq!(j.recovery_report().gaps, vec![first_lost..next_first]);
}

#[test]
fn salvage_of_a_sealed_segment_truncated_inside_a_frame_leaves_a_gap() {
    truncated_sealed_segment(|frames| {
        let f = frames[80];
        (f.offset + 300, f.lsn)
    });
}

#[test]
fn salvage_of_a_sealed_segment_truncated_inside_a_frame_header_leaves_a_gap() {
    // Only 16 bytes of the frame are left: fewer than a gap record needs, but the space after
    // them in the re-extended segment is free.
    truncated_sealed_segment(|frames| {
        let f = frames[80];
        (f.offset + 16, f.lsn)
    });
}

#[test]
fn salvage_of_a_sealed_segment_truncated_at_a_frame_boundary_leaves_a_gap() {
    truncated_sealed_segment(|frames| {
        let f = frames[80];
        (f.offset, f.lsn)
    });
}

/// Opening `dir` is refused in every mode with `ForeignSegment` naming `seg`, the journal
/// `expected` and the one `found` in the segment.
fn refused_as_foreign_segment(
    dir: &Path,
    seg: &Path,
    expected_id: uuid::Uuid,
    found_id: uuid::Uuid,
) {
    refused_in_every_mode(dir, |mode, e| {
        assert_names(&e, seg);
        match e {
            Error::Journal(JournalError::ForeignSegment {
                path,
                expected,
                found,
            }) => {
                assert_eq!(path, seg, "{mode:?}");
                assert_eq!(expected, expected_id, "{mode:?}");
                assert_eq!(found, found_id, "{mode:?}");
            }
            other => panic!("{mode:?}: expected ForeignSegment, got {other:?}"),
        }
    });
}

#[test]
fn a_segment_of_another_journal_is_refused() {
    let (_t1, dir1, _) = journal(5, 100);
    let (_t2, dir2, _) = journal(150, 500); // two segments
    assert_eq!(segment_paths(&dir2).len(), 2);
    let id1 = journal_id_in(&segment_path(&dir1, 1));
    let id2 = journal_id_in(&segment_path(&dir2, 1));
    assert_ne!(id1, id2);

    // Another journal's segment 2 added after ours.
    let seg2 = segment_path(&dir1, 2);
    fs::copy(segment_path(&dir2, 2), &seg2).unwrap();
    refused_as_foreign_segment(&dir1, &seg2, id1, id2);
    fs::remove_file(&seg2).unwrap();

    // Our only segment replaced by another journal's segment 1 (ACK still names ours).
    let seg1 = segment_path(&dir1, 1);
    fs::copy(segment_path(&dir2, 1), &seg1).unwrap();
    refused_as_foreign_segment(&dir1, &seg1, id1, id2);
}

#[test]
fn a_missing_middle_segment_is_refused() {
    let (_t, dir, _) = journal(250, 500);
    assert_eq!(segment_paths(&dir).len(), 3);
    fs::remove_file(segment_path(&dir, 2)).unwrap();
    refused_in_every_mode(&dir, |mode, e| {
        assert_names(&e, &dir);
        assert!(e.to_string().contains('2'), "{e}");
        match e {
            Error::Journal(JournalError::MissingSegment {
                dir: d,
                seq,
                before,
                after,
            }) => {
                assert_eq!(d, dir, "{mode:?}");
                assert_eq!((seq, before, after), (2, 1, 3), "{mode:?}");
            }
            other => panic!("{mode:?}: expected MissingSegment, got {other:?}"),
        }
    });
    assert!(matches!(
        syncjournal::inspect::inspect(&dir),
        Err(Error::Journal(JournalError::MissingSegment { seq: 2, .. }))
    ));
}

#[test]
fn a_directory_of_unrelated_files_is_not_turned_into_a_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("notes.txt"), "mine").unwrap();
    fs::write(dir.join("data.bin"), [1u8, 2, 3]).unwrap();
    let before = snapshot(dir, false);
    let mut entries_before: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries_before.sort();
    for mode in ALL_MODES {
        let e = expect_open_error(open_with_mode(dir, mode), "foreign directory");
        assert_names(&e, dir);
        match &e {
            Error::Journal(JournalError::ForeignDirectory { dir: d, example }) => {
                assert_eq!(d, dir);
                assert!(
                    entries_before.contains(example),
                    "example {} is not one of the files",
                    example.display()
                );
                assert_names(&e, example);
            }
            other => panic!("{mode:?}: expected ForeignDirectory, got {other:?}"),
        }
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        assert_eq!(entries, entries_before, "{mode:?}: something was created");
        assert_eq!(snapshot(dir, false), before);
    }
    assert!(matches!(
        syncjournal::inspect::inspect(dir),
        Err(Error::Journal(JournalError::ForeignDirectory { .. }))
    ));
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    assert_eq!(entries, entries_before, "inspect created something");
}
