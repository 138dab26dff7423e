//! `syncjournal recover`: cuts a torn tail (keeping the bytes), salvages damage in the middle.

use std::path::Path;

use serde_json::Value as Json;

use crate::support::cli::{build_journal, flip_bit_in_record, journal_and_target, tear_last_frame};
use crate::support::journal::{assert_same_files, frames, segment_paths, snapshot};
use crate::{json, tempdir};

#[test]
fn recover_cuts_a_torn_tail_and_keeps_the_bytes() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 900);
    let (seg, frame, torn) = tear_last_frame(&dir);

    let r = sj!("recover", dir);
    r.code(0).stdout_has(&[
        &format!(
            "cut torn tail in {} offset {}: ",
            seg.display(),
            frame.offset
        ),
        &format!("original bytes kept in {}/forensics/", dir.display()),
    ]);
    let kept = r
        .stdout
        .split("original bytes kept in ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    let kept = Path::new(kept.trim());
    assert!(
        kept.starts_with(dir.join("forensics")) && kept.extension().is_some_and(|e| e == "cut"),
        "{}",
        kept.display()
    );
    let saved = std::fs::read(kept).unwrap();
    assert!(
        saved.starts_with(&torn[..saved.len().min(torn.len())]) && saved.len() >= frame.len / 2,
        "the kept bytes are the torn frame's"
    );

    sj!("verify", dir)
        .code(0)
        .stdout_has(&["records (LSNs 1 to 899)", "OK: every record"]);
    let again = sj!("recover", dir, "--mode", "torn-tail");
    again.code(0).stdout_has(&["nothing to repair"]);
    let last = sj!("dump", dir, "--from", "899");
    last.code(0);
    assert!(last.stdout.contains("LSN 899 ") && !last.stdout.contains("LSN 900"));
}

#[test]
fn recover_of_damage_in_the_middle_refuses_then_salvages() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 900);
    let (seg, frame) = flip_bit_in_record(&dir, 2);
    let segs_before: Vec<Vec<u8>> = segment_paths(&dir)
        .iter()
        .map(|s| std::fs::read(s).unwrap())
        .collect();

    // The default mode only cuts torn tails: it explains the damage and what to run.
    let r = sj!("recover", dir);
    r.code(2);
    r.error_line(&[
        "damage in the middle",
        seg.to_str().unwrap(),
        &format!("offset {}", frame.offset),
        "record checksum mismatch",
        "--mode salvage",
    ]);
    let segs_after: Vec<Vec<u8>> = segment_paths(&dir)
        .iter()
        .map(|s| std::fs::read(s).unwrap())
        .collect();
    assert!(
        segs_before == segs_after,
        "a refused recover changed a segment"
    );
    // dump reads up to the damage and then says where it is (exit 1: damage, as verify).
    let d = sj!("dump", dir);
    d.code(1).stdout_has(&["LSN 1  "]);
    d.error_line(&[seg.to_str().unwrap(), &format!("offset {}", frame.offset)]);

    let r = sj!("recover", dir, "--mode", "salvage");
    r.code(0).stdout_has(&[
        &format!(
            "replaced damaged region in {} offset {}: {} bytes",
            seg.display(),
            frame.offset,
            frame.len
        ),
        &format!("original bytes kept in {}/forensics/", dir.display()),
        "LSN 2 lost (now a gap record)",
    ]);
    assert_eq!(std::fs::read_dir(dir.join("forensics")).unwrap().count(), 1);
    sj!("verify", dir).code(0).stdout_has(&[
        "gap: LSN 2 was lost to damage earlier (salvaged)",
        "OK: every record",
    ]);
    let d = sj!("dump", dir, "--to", "3");
    d.code(0)
        .stdout_has(&["LSN 1  ", "LSN 2  LOST (a gap left by salvage)", "LSN 3  "]);
    let d = sj!("dump", dir, "--to", "3", "--json");
    let v: Vec<Json> = d.stdout.lines().map(json).collect();
    assert_eq!(v[1]["lsn"], 2);
    assert_eq!(v[1]["gap_to"], 3);
    assert_eq!(v[1]["lost"], true);
}

#[test]
fn verify_and_recover_a_truncated_last_segment() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 900);
    let seg = segment_paths(&dir).pop().unwrap();
    let last = *frames(&seg).last().unwrap();
    // Someone cut the file in the middle of its last frame.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len((last.offset + last.len / 2) as u64).unwrap();
    drop(f);
    let before = snapshot(&dir, true);

    // verify reports damage (exit 1), with the segment, what is wrong and what to run.
    let r = sj!("verify", dir);
    assert_same_files(
        &before,
        &snapshot(&dir, true),
        "verify of a truncated segment",
    );
    let report = format!("{}{}", r.stdout, r.stderr);
    assert!(
        report.contains(seg.to_str().unwrap())
            && report.contains("truncated")
            && report.contains("--mode salvage"),
        "{report}"
    );
    let verify = r; // its exit code is checked last, so that recovery is checked regardless

    // The default recovery refuses it (a truncated segment is never a torn write) ...
    let r = sj!("recover", dir);
    r.code(2);
    r.error_line(&[seg.to_str().unwrap(), "truncated", "--mode salvage"]);
    // ... salvage re-extends it and marks what is missing: the owner had published LSN 900 as
    // durable (HEAD), so its LSN is never reused — a gap record stands for it.
    sj!("recover", dir, "--mode", "salvage")
        .code(0)
        .stdout_has(&[
            &format!("{} offset {}", seg.display(), last.offset),
            "LSN 900 lost",
        ]);
    sj!("verify", dir).code(0).stdout_has(&[
        "899 records (LSNs 1 to 900)",
        "gap: LSN 900 was lost to damage earlier (salvaged)",
    ]);
    // "Exit 1 on damage" (verify --help): a truncated segment is damage.
    verify.code(1);
}

#[test]
fn a_damaged_acknowledged_last_record_is_not_cut_as_a_torn_tail() {
    // The last record was durable, applied to the target and acknowledged; then its bytes
    // were damaged. The acknowledgement proves it was durable (journal-format.md §8: `ack`
    // requires durability; §7 invariant 6), so it is not a torn write: cutting it would make
    // the next append reuse its LSN, which the target already covers.
    let (_tmp, dir, t) = journal_and_target(20);
    sj!("sync", dir, "--target", t).code(0);
    let (seg, frame, _) = tear_last_frame(&dir);
    assert_eq!(frame.lsn, 20);
    let before = snapshot(&dir, true);

    let r = sj!("verify", dir);
    r.code(1).stdout_has(&[
        &format!("{} offset {}", seg.display(), frame.offset),
        "--mode salvage",
    ]);
    assert!(
        !r.stdout.contains("torn tail"),
        "acknowledged LSN 20 reported as a torn tail:\n{}",
        r.stdout
    );
    let r = sj!("recover", dir);
    r.code(2);
    r.error_line(&[seg.to_str().unwrap(), &format!("offset {}", frame.offset)]);
    let mut after = snapshot(&dir, true);
    after.insert(dir.join("LOCK"), before[&dir.join("LOCK")].clone());
    assert_same_files(&before, &after, "a refused recover");
}
