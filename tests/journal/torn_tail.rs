//! Torn writes of the last record (journal-format.md 3.4, 9): for every length of a torn
//! prefix of the last frame, and for garbage in it, recovery keeps exactly the records before
//! it, cuts the torn bytes (keeping them in `forensics/`), reuses the LSN, and leaves a journal
//! that `AbsoluteConsistency` accepts. `AbsoluteConsistency` refuses the torn image itself.

use std::fs;
use std::path::Path;
use syncjournal::error::JournalError;

use crate::support::journal::*;
use crate::support::rng::Rng;
use syncjournal::{Journal, PersistMode, RecoveryMode};

const RECORDS: u64 = 6;
const PAYLOAD: usize = 100;

/// A closed journal of `RECORDS` Sync-mode records, its segment image and its frames.
struct Template {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    image: Vec<u8>,
    frames: Vec<FrameLoc>,
    payloads: Vec<Vec<u8>>,
}

fn template() -> Template {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let payloads = write_journal_records(&dir, RECORDS, PAYLOAD, PersistMode::Sync);
    assert_eq!(segment_paths(&dir).len(), 1);
    let image = fs::read(segment_path(&dir, 1)).unwrap();
    let frames = frames_of_segment(&image, 1);
    assert_eq!(frames.len(), RECORDS as usize);
    assert_eq!(frames.last().unwrap().lsn, RECORDS);
    Template {
        _tmp: tmp,
        dir,
        image,
        frames,
        payloads,
    }
}

/// A fresh journal directory holding the template's `ACK` and `image` as segment 1.
fn journal_with_image(t: &Template, image: &[u8]) -> tempfile::TempDir {
    let case = tempfile::tempdir().unwrap();
    fs::copy(t.dir.join("ACK"), case.path().join("ACK")).unwrap();
    fs::write(segment_path(case.path(), 1), image).unwrap();
    case
}

/// Opens a journal holding `image` (the template with its last frame damaged) and checks
/// everything the torn-tail rules promise. `ctx` names the case in failure messages.
fn check_torn_image(t: &Template, image: &[u8], keep_cut_bytes: bool, ctx: &str) {
    let last = *t.frames.last().unwrap();
    let off = last.offset;
    let frame_intact = image[off..off + last.len] == t.image[off..off + last.len];
    let rest_zero = image[off + last.len..].iter().all(|&b| b == 0);
    let any_nonzero = image[off..].iter().any(|&b| b != 0);
    // The last record survives only if its frame is intact and nothing follows it; anything
    // else non-zero from its offset on is a torn tail to cut.
    let survivors = if frame_intact && rest_zero {
        RECORDS
    } else {
        RECORDS - 1
    };
    let expect_cut = any_nonzero && !(frame_intact && rest_zero);

    let case = journal_with_image(t, image);
    let dir = case.path();
    let seg = segment_path(dir, 1);

    // AbsoluteConsistency refuses a torn tail, names it, and changes nothing.
    match open_with_mode(dir, RecoveryMode::AbsoluteConsistency) {
        Ok(j) => {
            assert!(
                !expect_cut,
                "{ctx}: AbsoluteConsistency accepted a torn tail"
            );
            assert!(j.recovery_report().cuts.is_empty(), "{ctx}");
            drop(j);
        }
        Err(e) => {
            assert!(
                expect_cut,
                "{ctx}: AbsoluteConsistency refused a clean image: {e}"
            );
            let text = e.to_string();
            let syncjournal::Error::Journal(JournalError::Corrupt(c)) = e else {
                panic!("{ctx}: expected Corrupt, got {e:?}");
            };
            assert!(
                c.torn_tail,
                "{ctx}: torn tail reported as damage in the middle"
            );
            assert_eq!(c.segment, seg, "{ctx}");
            assert_eq!(c.offset, off as u64, "{ctx}: offset of the torn frame");
            assert!(text.contains(&seg.display().to_string()), "{ctx}: {text}");
            assert_eq!(
                fs::read(&seg).unwrap(),
                image,
                "{ctx}: a refused open modified the segment"
            );
            assert!(
                forensic_files(dir).is_empty(),
                "{ctx}: refused open kept bytes"
            );
        }
    }

    // The default mode cuts the torn tail.
    let j = Journal::open(
        dir,
        opts_with_mode(RecoveryMode::TolerateTornTail).keep_cut_bytes(keep_cut_bytes),
    )
    .unwrap_or_else(|e| panic!("{ctx}: default open failed: {e}"));
    let report = j.recovery_report().clone();
    assert_eq!(report.records, survivors, "{ctx}: report.records");
    assert_eq!(report.next_lsn, survivors + 1, "{ctx}: report.next_lsn");
    assert!(
        report.skipped.is_empty(),
        "{ctx}: a torn tail skips nothing"
    );
    if expect_cut {
        assert_eq!(report.cuts.len(), 1, "{ctx}: cuts {:?}", report.cuts);
        let cut = &report.cuts[0];
        assert_eq!(cut.segment, seg, "{ctx}");
        assert_eq!(cut.offset, off as u64, "{ctx}: cut offset");
        assert!(cut.torn_tail, "{ctx}");
        assert_eq!(cut.records_dropped, 0, "{ctx}: no complete record was torn");
        assert!(cut.len > 0);
        assert_eq!(report.bytes_cut, cut.len, "{ctx}");
        let cut_end = off + cut.len as usize;
        assert!(
            image[cut_end..].iter().all(|&b| b == 0),
            "{ctx}: cut [{off}, {cut_end}) leaves non-zero bytes after it"
        );
        let saved = forensic_files(dir);
        if keep_cut_bytes {
            let side = cut.saved_to.as_ref().expect("saved_to with keep_cut_bytes");
            assert_eq!(saved, vec![side.clone()], "{ctx}: forensics files");
            assert_eq!(
                fs::read(side).unwrap(),
                &image[off..cut_end],
                "{ctx}: side file holds the cut bytes"
            );
        } else {
            assert_eq!(cut.saved_to, None, "{ctx}");
            assert!(
                saved.is_empty(),
                "{ctx}: keep_cut_bytes(false) saved {saved:?}"
            );
        }
    } else {
        assert!(
            report.cuts.is_empty(),
            "{ctx}: unexpected cut {:?}",
            report.cuts
        );
        assert_eq!(report.bytes_cut, 0, "{ctx}");
        assert!(forensic_files(dir).is_empty(), "{ctx}");
    }
    // The cut bytes are zero on disk; the records before them are untouched.
    let on_disk = fs::read(&seg).unwrap();
    let end = t.frames[survivors as usize - 1].offset + t.frames[survivors as usize - 1].len;
    assert_eq!(
        on_disk[..end],
        t.image[..end],
        "{ctx}: surviving bytes changed"
    );
    assert!(
        on_disk[end..].iter().all(|&b| b == 0),
        "{ctx}: bytes after the surviving records are not zero"
    );
    let records = read_all(&j);
    assert_data_prefix(&records, &t.payloads, survivors as usize, ctx);

    // The next append reuses the first cut LSN.
    let extra = payload_for_lsn(1000, 37);
    assert_eq!(j.append(&extra).unwrap(), survivors + 1, "{ctx}: next LSN");
    j.close().unwrap();

    // Now the journal is clean even for AbsoluteConsistency.
    let j = open_with_mode(dir, RecoveryMode::AbsoluteConsistency)
        .unwrap_or_else(|e| panic!("{ctx}: reopen after the cut is not clean: {e}"));
    let r = j.recovery_report();
    assert!(r.cuts.is_empty() && r.skipped.is_empty(), "{ctx}: {r:?}");
    assert_eq!(r.records, survivors + 1, "{ctx}");
    let records = read_all(&j);
    assert_data_prefix(
        &records[..survivors as usize],
        &t.payloads,
        survivors as usize,
        ctx,
    );
    assert_eq!(records.len(), survivors as usize + 1, "{ctx}");
    assert_eq!(records[survivors as usize].lsn, survivors + 1);
    assert_eq!(records[survivors as usize].payload, extra, "{ctx}");
}

#[test]
fn every_torn_prefix_of_the_last_frame_is_cut_and_the_rest_recovered() {
    let t = template();
    let last = *t.frames.last().unwrap();
    assert_eq!(last.len, 136, "32-byte header + 100 payload + 4 padding");
    let mut cuts = 0;
    for k in 0..=last.len {
        let mut image = t.image.clone();
        image[last.offset + k..last.offset + last.len].fill(0);
        let torn = k < 32 + PAYLOAD;
        let ctx = format!("torn prefix of {k} bytes");
        if torn && image[last.offset..last.offset + k].iter().any(|&b| b != 0) {
            cuts += 1;
        }
        check_torn_image(&t, &image, true, &ctx);
    }
    // Every prefix with a non-zero byte and fewer bytes than header + payload is a cut.
    assert!(cuts >= 32 + PAYLOAD - 4, "only {cuts} torn cases");
}

#[test]
fn garbage_in_the_last_frame_is_cut_like_a_torn_write() {
    let t = template();
    let last = *t.frames.last().unwrap();
    let mut rng = Rng::mixed(7);
    let prefixes = [0, 1, 4, 8, 16, 24, 31, 32, 33, 40, 64, 100, 131, 132, 135];
    for (i, &k) in prefixes.iter().enumerate() {
        for extend_past_frame in [0usize, 200] {
            let mut image = t.image.clone();
            let from = last.offset + k;
            let to = last.offset + last.len + extend_past_frame;
            rng.fill(&mut image[from..to]);
            // Random bytes that happen to rebuild the frame would not be a tear.
            if image[last.offset..to] == t.image[last.offset..to] {
                continue;
            }
            let ctx = format!("garbage after a prefix of {k} bytes (+{extend_past_frame})");
            check_torn_image(&t, &image, i % 2 == 0, &ctx);
        }
    }
    // A whole frame of garbage.
    let mut image = t.image.clone();
    rng.fill(&mut image[last.offset..last.offset + last.len]);
    check_torn_image(&t, &image, true, "whole last frame garbage");
}

#[test]
fn cut_bytes_are_kept_only_with_keep_cut_bytes() {
    let t = template();
    let last = *t.frames.last().unwrap();
    let mut image = t.image.clone();
    image[last.offset + 50..last.offset + last.len].fill(0);
    check_torn_image(&t, &image, true, "keep_cut_bytes(true)");
    check_torn_image(&t, &image, false, "keep_cut_bytes(false)");
}

#[test]
fn absolute_consistency_refuses_a_torn_tail_with_its_offset() {
    let t = template();
    let last = *t.frames.last().unwrap();
    let mut image = t.image.clone();
    image[last.offset + 60..last.offset + last.len].fill(0);
    let case = journal_with_image(&t, &image);
    let seg = segment_path(case.path(), 1);
    let c = expect_corrupt(
        open_with_mode(case.path(), RecoveryMode::AbsoluteConsistency),
        "torn tail",
    );
    assert!(c.torn_tail);
    assert_eq!(c.segment, seg);
    assert_eq!(c.offset, last.offset as u64);
    assert_eq!(
        fs::read(&seg).unwrap(),
        image,
        "refused open modified the file"
    );
    // The refusal is repeatable: nothing was cut behind our back.
    let c2 = expect_corrupt(
        open_with_mode(case.path(), RecoveryMode::AbsoluteConsistency),
        "torn tail, again",
    );
    assert_eq!(c2, c);
    // inspect() agrees and reports it as a torn tail, not as lost LSNs.
    let ins = syncjournal::inspect::inspect(case.path()).unwrap();
    assert_eq!(ins.damage.len(), 1, "{:?}", ins.damage);
    assert!(ins.damage[0].torn_tail);
    assert_eq!(ins.damage[0].offset, last.offset as u64);
    assert!(ins.damage[0].lost.is_empty());
    assert_eq!(ins.next_lsn, RECORDS);
    assert_eq!(fs::read(&seg).unwrap(), image, "inspect modified the file");
}

#[test]
fn second_open_after_a_cut_finds_nothing_more_to_cut() {
    let t = template();
    let last = *t.frames.last().unwrap();
    let mut image = t.image.clone();
    image[last.offset + 90..last.offset + last.len].fill(0);
    let case = journal_with_image(&t, &image);
    let dir: &Path = case.path();
    let j = open_with_mode(dir, RecoveryMode::TolerateTornTail).unwrap();
    assert_eq!(j.recovery_report().cuts.len(), 1);
    drop(j);
    let j = open_with_mode(dir, RecoveryMode::TolerateTornTail).unwrap();
    assert!(j.recovery_report().cuts.is_empty(), "cut twice");
    assert_eq!(j.recovery_report().next_lsn, RECORDS);
    assert_eq!(forensic_files(dir).len(), 1);
}
