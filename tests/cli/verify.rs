//! `syncjournal verify`: healthy, torn tail, damage in the middle; nothing modified.

use crate::support::cli::{build_journal, flip_bit_in_record, tear_last_frame};
use crate::support::journal::{assert_same_files, segment_paths, snapshot};
use crate::tempdir;

#[test]
fn verify_a_healthy_journal() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 900);
    let n = segment_paths(&dir).len();
    let before = snapshot(&dir, true);
    let r = sj!("verify", dir);
    r.code(0).quiet_stderr().stdout_has(&[
        &format!("journal {} (id ", dir.display()),
        &format!("{n} segments, 900 records (LSNs 1 to 900)"),
        "acknowledged up to LSN 0",
        "OK: every record and the checksum chain verified",
    ]);
    assert!(!r.stdout.contains("DAMAGE"));
    assert_same_files(&before, &snapshot(&dir, true), "verify");
}

#[test]
fn verify_reports_a_torn_tail_and_modifies_nothing() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 900);
    let (seg, frame, _) = tear_last_frame(&dir);
    assert_eq!(frame.lsn, 900);
    let before = snapshot(&dir, true);

    let r = sj!("verify", dir);
    r.code(1).quiet_stderr().stdout_has(&[
        "records (LSNs 1 to 899)",
        "DAMAGE: 1 region(s)",
        &format!("{} offset {} (", seg.display(), frame.offset),
        "torn tail (an incomplete last write)",
        &format!("run `syncjournal recover {}", dir.display()),
        &format!("kept in {}/forensics", dir.display()),
    ]);
    let damage = r
        .stdout
        .lines()
        .find(|l| l.contains(" offset "))
        .unwrap()
        .to_string();
    // The kind of damage is named: a checksum or malformed header.
    assert!(
        damage.contains("checksum") || damage.contains("malformed record header"),
        "{damage}"
    );
    assert!(
        !r.stdout.contains("--mode salvage"),
        "a torn tail needs no salvage: {}",
        r.stdout
    );
    assert_same_files(&before, &snapshot(&dir, true), "verify of a torn tail");
    // Twice: still the same report, still nothing modified.
    sj!("verify", dir).code(1);
    assert_same_files(
        &before,
        &snapshot(&dir, true),
        "verify of a torn tail, twice",
    );
}

#[test]
fn verify_reports_damage_in_the_middle_and_modifies_nothing() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 900);
    let (seg, frame) = flip_bit_in_record(&dir, 2);
    let before = snapshot(&dir, true);

    let r = sj!("verify", dir);
    r.code(1).quiet_stderr().stdout_has(&[
        "DAMAGE: 1 region(s)",
        &format!(
            "{} offset {} ({} bytes): record checksum mismatch (stored 0x",
            seg.display(),
            frame.offset,
            frame.len
        ),
        "damage in durable data; LSN 2 affected",
        &format!("run `syncjournal recover {} --mode salvage`", dir.display()),
    ]);
    assert_same_files(
        &before,
        &snapshot(&dir, true),
        "verify of damage in the middle",
    );
}
