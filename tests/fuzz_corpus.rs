//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and the crash regressions
//! (`fuzz/regressions/<target>/`) through the very same checks the libFuzzer targets run
//! (`fuzz/src/checks/`, one module per target), on stable, as part of `cargo test`.
//!
//! The seed corpus is written by the ignored test `generate_seed_corpus`:
//!
//! ```text
//! cargo test --test fuzz_corpus -- --ignored generate_seed_corpus
//! ```
//!
//! See `fuzz/README.md` for fuzzing itself.

#[allow(dead_code)]
#[path = "../fuzz/src/checks/mod.rs"]
mod checks;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use checks::common::{fuzz_id, fuzz_seed};
use checks::dirs::{DirCase, DirSegment, Stray, change_set_record};
use checks::journal_dir::DirStats;
use checks::journal_model::{self as model, ModelCase, ModelStats, Op};
use checks::recover_open::{RecoverCase, RecoverLayout};
use checks::scan_segment::ScanCase;
use checks::segments::{
    AckSpec, BuiltSegment, FUZZ_SEGMENT_BYTES, FrameSpec, Mutation, SegSpec, segment_header,
};
use syncjournal::event::KIND_CHANGESET;
use syncjournal::format::{
    ACK_FILE_BYTES, ACK_SLOT_BYTES, AckSlot, FRAME_CRC_OFFSET, FRAME_FLAGS_OFFSET,
    FRAME_KIND_OFFSET, FRAME_LEN_OFFSET, FRAME_LSN_OFFSET, HEADER_CRC_OFFSET, HEADER_FLAGS_OFFSET,
    HEADER_LEN_OFFSET, KIND_GAP, SEGMENT_DATA_OFFSET, SEGMENT_FIRST_LSN_OFFSET,
    SEGMENT_HEADER_BYTES, VERSION_OFFSET, frame_bytes, seal_frame,
};
use uuid::Uuid;

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 5] = [
    ("decode_record", checks::decode_record::check_decode_record),
    ("scan_segment", checks::scan_segment::check_scan_segment),
    ("recover_open", checks::recover_open::check_recover_open),
    ("journal_model", model::check_journal_model),
    ("journal_dir", checks::journal_dir::check_journal_dir),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .map(|e| e.expect("read corpus directory").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// Regressions of bugs in the library that are not fixed yet: `(target, file, a piece of the
/// panic message)`. Their replay must still fail with that message, so that `cargo test` stays
/// green while they are open and tells whoever fixes one to move it to the fixed ones (delete
/// its line here and update the table in `fuzz/README.md`).
const OPEN_REGRESSIONS: &[(&str, &str, &str)] = &[
    // Found by journal_dir: an ACK acknowledging LSN 50 and no segment file. `inspect`
    // (src/inspect.rs) and `offline_status` take it for a journal: verify says OK, status
    // says IN SYNC with head 50 (first_retained is 1 without segments, the head the
    // acknowledgement), though no record exists; `Journal::open` refuses it, as
    // `MissingSegment { seq: 0, before: 0, after: 0 }` (src/journal/recovery.rs create_fresh).
    (
        "journal_dir",
        "ack-without-segments",
        "status of an undamaged journal: head",
    ),
    // Found by journal_dir: the first retained segment starts at LSN 1000, the ACK
    // acknowledges 5: records 6..999 were removed unacknowledged. Status reports it (and
    // `Journal::open` refuses it), but the offline reader (src/journal/offline.rs, dump) and
    // `inspect` (src/inspect.rs, verify) do not check the first segment against the
    // acknowledgement: dump prints 1000.. and verify says OK.
    (
        "journal_dir",
        "segments-removed-beyond-ack",
        "status reports damage the reader did not find",
    ),
];

/// Runs `check` on every file of `fuzz/<kind>/<target>/`, reporting every failing file (and
/// every file of [`OPEN_REGRESSIONS`] that no longer fails as pinned). Returns how many files
/// ran.
fn replay(kind: &str, target: &str, check: Check) -> usize {
    let dir = fuzz_dir().join(kind).join(target);
    let inputs = files(&dir);
    let mut failures = Vec::new();
    for path in &inputs {
        let data = std::fs::read(path).expect("read corpus file");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let open = OPEN_REGRESSIONS
            .iter()
            .find(|(t, f, _)| kind == "regressions" && *t == target && *f == name);
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&data)));
        let msg = outcome.err().map(|e| panic_message(&*e));
        match (open, msg) {
            (None, None) => {}
            (None, Some(msg)) => failures.push(format!("{}: {msg}", path.display())),
            (Some((_, _, want)), Some(msg)) if msg.contains(want) => {}
            (Some(_), Some(msg)) => failures.push(format!(
                "{}: a known open bug now fails differently: {msg}",
                path.display()
            )),
            (Some(_), None) => failures.push(format!(
                "{}: passes now: the bug is fixed, remove it from OPEN_REGRESSIONS (and mark it fixed in fuzz/README.md)",
                path.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs of {target} failed:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
    inputs.len()
}

/// The message of a caught panic.
fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn corpus(target: &str) {
    let (_, check) = TARGETS.iter().find(|(t, _)| *t == target).unwrap();
    let n = replay("corpus", target, *check);
    assert!(n > 0, "fuzz/corpus/{target} is empty");
}

fn regressions(target: &str) {
    let (_, check) = TARGETS.iter().find(|(t, _)| *t == target).unwrap();
    replay("regressions", target, *check);
}

#[test]
fn decode_record_corpus() {
    corpus("decode_record");
}

#[test]
fn scan_segment_corpus() {
    corpus("scan_segment");
}

#[test]
fn recover_open_corpus() {
    corpus("recover_open");
}

#[test]
fn journal_model_corpus() {
    corpus("journal_model");
}

#[test]
fn journal_dir_corpus() {
    corpus("journal_dir");
}

#[test]
fn decode_record_regressions() {
    regressions("decode_record");
}

#[test]
fn scan_segment_regressions() {
    regressions("scan_segment");
}

#[test]
fn recover_open_regressions() {
    regressions("recover_open");
}

#[test]
fn journal_model_regressions() {
    regressions("journal_model");
}

#[test]
fn journal_dir_regressions() {
    regressions("journal_dir");
}

#[test]
fn empty_and_tiny_inputs() {
    for (_, check) in TARGETS {
        for data in [&[][..], &[0], &[1], &[2], &[3], &[0xFF; 3]] {
            check(data);
        }
    }
}

/// The input formats round-trip, so the generated seeds mean what the generator says.
#[test]
fn input_formats_round_trip() {
    for case in scan_cases() {
        let bytes = case.1.encode();
        assert_eq!(ScanCase::decode(&bytes), case.1, "{}", case.0);
    }
    for case in recover_cases() {
        let bytes = case.1.encode();
        assert_eq!(RecoverCase::decode(&bytes), case.1, "{}", case.0);
    }
    for case in model_cases() {
        let bytes = case.1.encode();
        assert_eq!(ModelCase::decode(&bytes), case.1, "{}", case.0);
    }
    for case in dir_cases() {
        let bytes = case.1.encode();
        assert_eq!(DirCase::decode(&bytes), case.1, "{}", case.0);
    }
}

/// The `journal_model` seeds exercise what they are named after.
#[test]
fn model_seeds_hit_their_cases() {
    type Want = fn(&ModelStats) -> bool;
    let expect: &[(&str, Want)] = &[
        ("sync-appends-replay", |s| {
            s.appended >= 8 && s.replayed >= 7 && s.quarantined >= 2 && s.stops >= 1
        }),
        ("buffered-crash", |s| s.reopens >= 2 && s.replayed >= 4),
        ("rotation-retention", |s| {
            s.rotations >= 3 && s.retired >= 2 && s.acks >= 2
        }),
        ("refusals", |s| s.refused >= 6),
        ("poison-buffered-sync", |s| {
            s.poisonings == 1 && s.poisoned_calls >= 3 && s.kept_in_doubt >= 1
        }),
        ("poison-sync-append", |s| {
            s.poisonings == 1 && s.poisoned_calls >= 1
        }),
        ("poison-at-rotation", |s| s.poisonings == 1),
        ("disk-full", |s| {
            s.disk_full >= 2 && s.poisonings == 0 && s.rotations >= 1
        }),
        ("syncdir-at-rotation", |s| {
            // Not DiskFull; the journal may poison itself (it must not write the new segment's
            // first LSN into the old one).
            s.rotation_failures >= 1 && s.disk_full == 0
        }),
        ("stale-segment-crash", |s| s.stale_segments == 1),
        ("ack-write-fails", |s| s.poisonings == 1 && s.acks >= 1),
        ("remove-segment-fails", |s| {
            s.retired >= 1 && s.rotations >= 3
        }),
        ("open-with-faults", |s| s.failed_opens >= 1),
        ("replay-statement-faults", |s| {
            s.statement_faults >= 3 && s.replayed >= 6
        }),
        ("replay-in-doubt-commit", |s| {
            s.in_doubt_commits >= 1 && s.replayed >= 6
        }),
        ("replay-stop", |s| s.stops >= 1 && s.quarantined >= 1),
        ("replay-gap", |s| s.gaps >= 1),
        ("power-loss-torn", |s| {
            s.power_losses >= 1 && s.torn_cuts >= 1
        }),
        ("power-loss-clean-end", |s| {
            s.power_losses >= 1 && s.torn_cuts == 0
        }),
        ("power-loss-absolute", |s| {
            s.power_losses >= 1 && s.torn_cuts >= 1
        }),
    ];
    let cases = model_cases();
    assert_eq!(cases.len(), expect.len(), "every seed has an expectation");
    for (name, want) in expect {
        let case = &cases.iter().find(|(n, _)| n == name).unwrap().1;
        let stats = model::run_journal_model(&case.encode());
        assert!(want(&stats), "{name}: {stats:?}");
    }
}

/// The generated `recover_open` seeds exercise what they are named after: which recovery modes
/// open them, and how many records (gap records included) each returns. `None`: refused.
#[test]
fn recover_seeds_hit_their_cases() {
    let cases = recover_cases();
    let expect: &[(&str, [Option<usize>; 3])] = &[
        ("one-empty", [Some(0), Some(0), Some(0)]),
        ("one-five", [Some(5), Some(5), Some(5)]),
        // 7 data records, one non-empty gap record (the empty one is skipped).
        ("one-gaps", [Some(8), Some(8), Some(8)]),
        // Later records claim the damaged one durable: damage in the middle, salvage replaces
        // record 3 by a gap record.
        ("one-flip-middle-payload", [None, None, Some(5)]),
        // Nothing claims durability: a torn tail from record 3 on.
        ("one-flip-middle-unsynced", [None, Some(2), Some(2)]),
        ("one-torn-last", [None, Some(4), Some(4)]),
        ("one-trailing-garbage", [None, Some(5), Some(5)]),
        // Truncated by someone else: only salvage re-extends it, then cuts the torn record.
        ("one-truncate-mid-frame", [None, None, Some(4)]),
        ("one-flip-header", [None, None, None]),
        ("one-first-lsn-1000-acked", [Some(4), Some(4), Some(4)]),
        // No ACK: recreated at first_lsn − 1 = 999 in every mode (segments are removed only once
        // acknowledged), journal-format.md §9 "Other damage".
        ("one-first-lsn-1000-no-ack", [Some(4), Some(4), Some(4)]),
        // The only valid slot is torn: an error, except in salvage, which recreates the file.
        ("one-five-ack-torn", [None, None, Some(5)]),
        ("one-five-ack-foreign", [None, None, None]),
        ("two-clean", [Some(13), Some(13), Some(13)]),
        // A damaged segment that is not the last one is damage in the middle.
        ("two-damage-first", [None, None, Some(10)]),
        ("two-torn-second", [None, Some(9), Some(9)]),
        ("header-body", [Some(5), Some(5), Some(5)]),
        ("header-body-torn", [None, Some(4), Some(4)]),
    ];
    for (name, want) in expect {
        let case = &cases.iter().find(|(n, _)| n == name).unwrap().1;
        let got = checks::recover_open::recover_open_outcomes(&case.encode());
        let got = got.map(|o| o.expect("mode ran").ok().map(|r| r.len()));
        assert_eq!(&got, want, "{name}");
    }
}

/// The `journal_dir` seeds exercise what they are named after: which modes open them, what
/// the read-only paths and the sync found.
#[test]
fn dir_seeds_hit_their_cases() {
    type Want = fn(&DirStats) -> bool;
    fn opened_all(s: &DirStats) -> bool {
        s.opened == [true, true, true]
    }
    fn refused(s: &DirStats) -> bool {
        s.opened == [false, false, false] && s.unsafe_refused
    }
    let expect: &[(&str, Want)] = &[
        ("empty-directory", |s| {
            s.opened == [false; 3] && !s.status_ok
        }),
        ("clean-two-segments", |s| {
            s.clean
                && opened_all(s)
                && s.verified_clean
                && s.status_ok
                && s.offline_records == 12
                && s.applied == 12
        }),
        ("clean-harmless-strays", |s| {
            s.clean && opened_all(s) && s.applied == 5
        }),
        ("quarantine-and-unknown-kind", |s| {
            opened_all(s) && s.applied == 2 && s.quarantined == 2
        }),
        ("first-lsn-1000-replay-gap", |s| {
            opened_all(s) && s.applied == 0
        }),
        ("torn-tail", |s| {
            s.opened == [false, true, true] && s.offline_damage && s.applied == 4
        }),
        ("damage-in-the-middle", |s| {
            s.opened == [false, false, true] && s.offline_damage && s.offline_records == 7
        }),
        ("missing-segment", |s| {
            s.opened == [false; 3] && s.offline_records == 5
        }),
        ("ack-beyond-records", |s| s.opened == [false, false, true]),
        ("header-claims-1gib", |s| s.opened == [false; 3]),
        ("header-claims-64-bytes", |s| s.opened == [false; 3]),
        ("header-version-2", |s| {
            s.opened == [false; 3] && !s.status_ok
        }),
        ("header-foreign-journal", |s| s.opened == [false; 3]),
        ("reserved-header-byte", |s| {
            s.opened == [false; 3] && !s.verified_clean
        }),
        ("segment-truncated-after-data", |s| {
            s.opened == [false, false, true]
        }),
        ("segment-sparse-4mib", |s| {
            s.opened[2] || s.opened == [false; 3]
        }),
        ("sparse-lock-head-replay-1gib", |s| s.clean && opened_all(s)),
        ("hostile-replay-json", |s| s.clean && opened_all(s)),
        ("fifo-named-like-a-segment", refused),
        ("fifo-named-lock", refused),
        ("fifo-named-head", refused),
        ("directory-named-like-a-segment", refused),
        ("symlink-named-lock", refused),
        ("symlink-named-like-a-segment", refused),
        ("socket-named-like-a-segment", refused),
        ("file-named-forensics", refused),
        ("hard-linked-lock", |s| s.opened == [false; 3]),
        ("symlink-named-ack", refused),
        ("fifo-named-ack", refused),
        ("directory-named-ack", refused),
        ("socket-named-ack", refused),
        ("socket-named-lock", refused),
        ("hard-linked-ack", |s| s.opened == [false; 3]),
        ("hard-linked-segment", |s| s.opened == [false; 3]),
    ];
    let cases = dir_cases();
    // Every seed has an expectation, or is the regression of an open bug.
    for (name, _) in &cases {
        assert!(
            expect.iter().any(|(n, _)| n == name)
                || OPEN_REGRESSIONS
                    .iter()
                    .any(|(t, f, _)| *t == "journal_dir" && f == name),
            "seed {name} has no expectation"
        );
    }
    let mut failed = Vec::new();
    for (name, want) in expect {
        let case = &cases
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no seed {name}"))
            .1;
        let data = case.encode();
        match catch_unwind(|| checks::journal_dir::run_journal_dir(&data, None)) {
            Ok(stats) if want(&stats) => {}
            Ok(stats) => failed.push(format!("{name}: {stats:?}")),
            Err(e) => failed.push(format!("{name}: {}", panic_message(&*e))),
        }
    }
    assert!(
        failed.is_empty(),
        "seeds that miss their case:\n{}",
        failed.join("\n")
    );
}

/// Writes the seed corpus into `fuzz/corpus/<target>/seed-*`. Run it after changing an input
/// format, then minimise with `cargo fuzz cmin` (see `fuzz/README.md`).
#[test]
#[ignore = "writes the seed corpus into fuzz/corpus"]
fn generate_seed_corpus() {
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    };
    for (name, data) in decode_cases() {
        write("decode_record", &name, &data);
    }
    for (name, case) in scan_cases() {
        write("scan_segment", &name, &case.encode());
    }
    for (name, case) in recover_cases() {
        write("recover_open", &name, &case.encode());
    }
    for (name, case) in model_cases() {
        write("journal_model", &name, &case.encode());
    }
    for (name, case) in dir_cases() {
        // Seeds that hit an open bug are regressions, not corpus.
        if OPEN_REGRESSIONS
            .iter()
            .any(|(t, f, _)| *t == "journal_dir" && *f == name)
        {
            let dir = fuzz_dir().join("regressions").join("journal_dir");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(&name), case.encode()).unwrap();
        } else {
            write("journal_dir", &name, &case.encode());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------------------------

fn frame(seed: syncjournal::format::Seed, lsn: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = seal_frame(seed, lsn, lsn - 1, 0x1234_5678, kind, payload).to_vec();
    f.extend_from_slice(payload);
    f.resize(frame_bytes(payload.len()), 0);
    f
}

fn reseal_header(h: &mut [u8]) {
    let crc = crc(&h[..HEADER_CRC_OFFSET]);
    h[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}

/// CRC-32/ISO-HDLC, bitwise (the test has no crc crate of its own).
fn crc(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn decode_cases() -> Vec<(String, Vec<u8>)> {
    let seed = fuzz_seed(1);
    let mut v: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, data: Vec<u8>| v.push((name.to_owned(), data));
    let valid = frame(seed, 7, 1, b"hello, journal");
    add("frame-valid", valid.clone());
    add("frame-valid-8", frame(seed, 1, 1, b"8 bytes!"));
    add("frame-valid-300", frame(seed, 99, 0x42, &[0xAB; 300]));
    let mut gap = vec![0u8; 16];
    gap[..8].copy_from_slice(&12u64.to_le_bytes());
    add("frame-gap", frame(seed, 9, KIND_GAP, &gap));
    let mut two = valid.clone();
    two.extend_from_slice(&frame(seed, 8, 1, b"next"));
    add("frame-then-another", two);
    for (name, at, val) in [
        ("frame-kind-zero", FRAME_KIND_OFFSET, 0u8),
        ("frame-flags", FRAME_FLAGS_OFFSET, 1),
        ("frame-crc", FRAME_CRC_OFFSET, 0x55),
        ("frame-len-huge", FRAME_LEN_OFFSET + 3, 0x7F),
        ("frame-len-zero", FRAME_LEN_OFFSET, 0),
        ("frame-padding", valid.len() - 1, 9),
    ] {
        let mut f = valid.clone();
        f[at] = val;
        add(name, f);
    }
    let mut f = valid.clone();
    f[FRAME_LSN_OFFSET..FRAME_LSN_OFFSET + 8].fill(0);
    add("frame-lsn-zero", f);
    add("frame-truncated", valid[..20].to_vec());
    add("zeros", vec![0u8; 64]);
    // A frame under a seed the input names: journal id, segment sequence, frame.
    let id = Uuid::from_bytes([0x11; 16]);
    let mut d = id.as_bytes().to_vec();
    d.extend_from_slice(&5u64.to_le_bytes());
    d.extend_from_slice(&frame(
        syncjournal::format::Seed::new(id, 5),
        3,
        1,
        b"derived seed",
    ));
    add("frame-derived-seed", d);
    // Segment headers.
    let header = segment_header(3, 1000, 1 << 20).encode();
    add("header-valid", header.to_vec());
    let mut h = header.to_vec();
    h.extend_from_slice(&[0u8; 64]);
    add("header-valid-long", h);
    for (name, at, val) in [
        ("header-version-2", VERSION_OFFSET, 2u8),
        ("header-flags", HEADER_FLAGS_OFFSET, 1),
        ("header-len-32", HEADER_LEN_OFFSET, 32),
    ] {
        let mut h = header;
        h[at] = val;
        reseal_header(&mut h);
        add(name, h.to_vec());
    }
    let mut h = header;
    h[SEGMENT_FIRST_LSN_OFFSET..SEGMENT_FIRST_LSN_OFFSET + 8].fill(0);
    reseal_header(&mut h);
    add("header-first-lsn-zero", h.to_vec());
    let mut h = header;
    h[HEADER_LEN_OFFSET] = 200;
    add("header-len-200", h.to_vec());
    let mut h = header;
    h[0] = b'X';
    add("header-bad-magic", h.to_vec());
    let mut h = header;
    h[HEADER_CRC_OFFSET] ^= 1;
    add("header-bad-crc", h.to_vec());
    // Acknowledgement slots and files.
    let slot = |generation, acked_lsn| AckSlot {
        journal_id: fuzz_id(),
        generation,
        acked_lsn,
        acked_at_ms: 1_700_000_000_000,
    };
    add("ack-slot", slot(1, 0).encode().to_vec());
    let mut compact = slot(2, 10).encode().to_vec();
    compact.extend_from_slice(&slot(3, 20).encode());
    add("ack-compact-two-slots", compact);
    let mut file = vec![0u8; ACK_FILE_BYTES];
    for s in [slot(6, 60), slot(7, 70)] {
        file[s.offset()..s.offset() + ACK_SLOT_BYTES].copy_from_slice(&s.encode());
    }
    add("ack-file", file.clone());
    file[4096 + 40] ^= 4;
    add("ack-file-torn-newest", file);
    let mut s = slot(1, 5).encode();
    s[8] = 2;
    let c = crc(&s[..60]);
    s[60..].copy_from_slice(&c.to_le_bytes());
    add("ack-slot-version-2", s.to_vec());
    let mut s = slot(1, 5).encode();
    s[12] = 1;
    let c = crc(&s[..60]);
    s[60..].copy_from_slice(&c.to_le_bytes());
    add("ack-slot-reserved-set", s.to_vec());
    v
}

fn data_frames(n: usize, len: usize) -> Vec<FrameSpec> {
    (0..n)
        .map(|i| FrameSpec::data(len + i % 5, i as u8))
        .collect()
}

fn with(mut spec: SegSpec, f: impl FnOnce(&mut SegSpec)) -> SegSpec {
    f(&mut spec);
    spec
}

/// Offset of record `i` (from 0) of a spec, built at its own length.
fn offset_of(spec: &SegSpec, i: usize) -> usize {
    let seg = BuiltSegment::build(spec, 1, spec.first_lsn(), None);
    seg.frames[i].offset
}

fn end_of(spec: &SegSpec) -> usize {
    BuiltSegment::build(spec, 1, spec.first_lsn(), None).data_end
}

fn segment_specs() -> Vec<(String, SegSpec)> {
    let five = SegSpec::new(1, data_frames(5, 20));
    let mut gaps = data_frames(6, 9);
    gaps.insert(2, FrameSpec::gap(3));
    gaps.insert(5, FrameSpec::gap(0));
    let mut broken = FrameSpec::data(30, 9);
    broken.aux = 0x80;
    gaps.insert(6, broken);
    let gaps = SegSpec::new(1, gaps);
    let mid = offset_of(&five, 2);
    let last = offset_of(&five, 4);
    let end = end_of(&five);
    let mut v = vec![
        ("empty".to_owned(), SegSpec::new(1, vec![])),
        ("one".to_owned(), SegSpec::new(1, data_frames(1, 1))),
        ("five".to_owned(), five.clone()),
        (
            "many".to_owned(),
            with(SegSpec::new(1, data_frames(64, 3)), |s| s.policy = 2),
        ),
        (
            "large-records".to_owned(),
            SegSpec::new(1, vec![FrameSpec::data(512, 1), FrameSpec::data(500, 2)]),
        ),
        ("gaps".to_owned(), gaps.clone()),
        (
            "first-lsn-1000".to_owned(),
            SegSpec::new(1000, data_frames(4, 12)),
        ),
        ("unsynced".to_owned(), with(five.clone(), |s| s.policy = 1)),
        (
            "claims-ahead".to_owned(),
            with(five.clone(), |s| {
                s.policy = 3;
                s.frames.iter_mut().for_each(|f| f.aux = 9);
            }),
        ),
    ];
    let mutated = |name: &str, base: &SegSpec, m: Vec<Mutation>| {
        (name.to_owned(), with(base.clone(), |s| s.mutations = m))
    };
    v.extend([
        mutated(
            "flip-middle-payload",
            &five,
            vec![Mutation::flip(mid + 40, 3)],
        ),
        mutated(
            "flip-middle-unsynced",
            &with(five.clone(), |s| s.policy = 1),
            vec![Mutation::flip(mid + 40, 3)],
        ),
        mutated("torn-last", &five, vec![Mutation::zero(last + 24, 30)]),
        mutated("torn-last-header", &five, vec![Mutation::zero(last, 8)]),
        mutated("hole-in-middle", &five, vec![Mutation::zero(mid, 60)]),
        mutated("trailing-garbage", &five, vec![Mutation::set(end + 100, 7)]),
        mutated(
            "garbage-sector",
            &five,
            vec![Mutation::fill(end + 8, 512, 0xFF)],
        ),
        mutated(
            "truncate-mid-frame",
            &five,
            vec![Mutation::truncate(last + 20)],
        ),
        mutated(
            "truncate-header-block",
            &five,
            vec![Mutation::truncate(100)],
        ),
        mutated(
            "duplicate-frame",
            &five,
            vec![Mutation::copy(offset_of(&five, 1), end, 56)],
        ),
        mutated(
            "replayed-frame-mid",
            &five,
            vec![Mutation::copy(offset_of(&five, 0), mid, 56)],
        ),
        mutated("flip-header", &five, vec![Mutation::flip(40, 0)]),
        mutated(
            "two-regions",
            &five,
            vec![
                Mutation::flip(offset_of(&five, 1) + 33, 1),
                Mutation::flip(last + 33, 1),
            ],
        ),
        mutated(
            "flip-gap-record",
            &gaps,
            vec![Mutation::flip(offset_of(&gaps, 2) + 33, 0)],
        ),
        mutated(
            "flip-after-gap",
            &gaps,
            vec![Mutation::flip(offset_of(&gaps, 3) + 40, 0)],
        ),
    ]);
    v
}

fn scan_cases() -> Vec<(String, ScanCase)> {
    let mut v: Vec<(String, ScanCase)> = segment_specs()
        .into_iter()
        .map(|(n, s)| (format!("built-{n}"), ScanCase::Built(s)))
        .collect();
    let five = BuiltSegment::build(&SegSpec::new(1, data_frames(5, 20)), 1, 1, None);
    v.push(("raw-segment".into(), ScanCase::Raw(five.clean.clone())));
    v.push((
        "raw-header-only".into(),
        ScanCase::Raw(five.clean[..SEGMENT_HEADER_BYTES].to_vec()),
    ));
    v.push((
        "raw-garbage".into(),
        ScanCase::Raw(b"SYNCJRNL garbage".to_vec()),
    ));
    v.push((
        "header-body".into(),
        ScanCase::HeaderBody(five.clean[SEGMENT_DATA_OFFSET..].to_vec()),
    ));
    v.push((
        "header-body-junk".into(),
        ScanCase::HeaderBody(vec![0x5A; 200]),
    ));
    v
}

fn recover_cases() -> Vec<(String, RecoverCase)> {
    let ack = |sel: u8, val: u64| AckSpec { sel, val };
    let specs = segment_specs();
    let spec = |name: &str| specs.iter().find(|(n, _)| n == name).unwrap().1.clone();
    let mut v = Vec::new();
    for name in [
        "empty",
        "five",
        "gaps",
        "many",
        "unsynced",
        "flip-middle-payload",
        "flip-middle-unsynced",
        "torn-last",
        "hole-in-middle",
        "trailing-garbage",
        "truncate-mid-frame",
        "replayed-frame-mid",
        "flip-header",
        "two-regions",
        "flip-gap-record",
    ] {
        v.push((
            format!("one-{name}"),
            RecoverCase {
                ack: ack(0, 0),
                layout: RecoverLayout::One(spec(name)),
            },
        ));
    }
    v.push((
        "one-first-lsn-1000-acked".into(),
        RecoverCase {
            ack: ack(1, 0),
            layout: RecoverLayout::One(spec("first-lsn-1000")),
        },
    ));
    v.push((
        "one-first-lsn-1000-no-ack".into(),
        RecoverCase {
            ack: ack(0, 0),
            layout: RecoverLayout::One(spec("first-lsn-1000")),
        },
    ));
    for (name, sel, val) in [
        ("ack-two-slots", 3, 3),
        ("ack-acked-all", 2, 5),
        ("ack-torn", 4, 4096 + 40),
        ("ack-foreign", 5, 0),
    ] {
        v.push((
            format!("one-five-{name}"),
            RecoverCase {
                ack: ack(sel, val),
                layout: RecoverLayout::One(spec("five")),
            },
        ));
    }
    for (name, a, b, sel, val) in [
        ("two-clean", "five", "gaps", 0, 0),
        ("two-acked-first", "five", "five", 2, 5),
        ("two-damage-first", "flip-middle-unsynced", "five", 0, 0),
        ("two-torn-second", "five", "torn-last", 0, 0),
        ("two-truncated-first", "truncate-mid-frame", "one", 0, 0),
    ] {
        v.push((
            name.to_owned(),
            RecoverCase {
                ack: ack(sel, val),
                layout: RecoverLayout::Two(spec(a), spec(b)),
            },
        ));
    }
    let spec = SegSpec::new(1, data_frames(5, 20));
    let big = BuiltSegment::build(&spec, 1, 1, Some(FUZZ_SEGMENT_BYTES));
    let body = big.clean[SEGMENT_DATA_OFFSET..big.data_end].to_vec();
    let five = BuiltSegment::build(&spec, 1, 1, None);
    v.push((
        "header-body".into(),
        RecoverCase {
            ack: ack(0, 0),
            layout: RecoverLayout::HeaderBody(body.clone()),
        },
    ));
    let mut torn = body;
    let n = torn.len();
    torn[n - 10..].fill(0);
    v.push((
        "header-body-torn".into(),
        RecoverCase {
            ack: ack(1, 0),
            layout: RecoverLayout::HeaderBody(torn),
        },
    ));
    v.push((
        "raw-small-segment".into(),
        RecoverCase {
            ack: ack(0, 0),
            layout: RecoverLayout::Raw(five.clean.clone()),
        },
    ));
    v.push((
        "raw-garbage".into(),
        RecoverCase {
            ack: ack(0, 0),
            layout: RecoverLayout::Raw(b"not a segment".to_vec()),
        },
    ));
    v
}

// journal_model seeds. Kind selectors: 0 a good event, 3 an event the target refuses, 4 raw
// `KIND_DATA`, 5 an undecodable event, 6 another application kind, 7 a reserved kind. Size
// selectors index `model::SIZES`: 1 → 1 byte, 6 → 100, 8 → 1000, 12 → 20000, 13 → 30000,
// 14 → 61408 (a whole segment), 15 → too large, 0 → empty.

const SYNC: u8 = 0;
const BUFFERED: u8 = 1;

fn ap(kind: u8, size: u8) -> Op {
    Op::Append {
        kind,
        size,
        fill: kind.wrapping_mul(37).wrapping_add(size),
        flags: 0,
    }
}

fn write_nowait(kind: u8, size: u8) -> Op {
    Op::Append {
        kind,
        size,
        fill: 9,
        flags: 1,
    }
}

fn batch(kind: u8, sizes: &[u8]) -> Op {
    Op::Batch {
        kind,
        fill: 3,
        sizes: sizes.to_vec(),
    }
}

/// `Fault`: op 0 SyncData, 1 Allocate, 2 SyncDir, 3 WriteAck, 4 RemoveSegment; times 0 =
/// every later call; errno 0 ENOSPC, 1 EIO.
fn fault(op: u8, skip: u8, times: u8, errno: u8) -> Op {
    Op::Fault {
        op,
        skip,
        times,
        errno,
    }
}

/// `Replay` with `flags` (1 Stop, 2 fresh replayer), two entries per transaction, no retry.
fn rp(flags: u8) -> Op {
    rp_faulty(flags, 0, 0, 0, 0)
}

/// `Replay` with a fault: `fault` 1 statement `index` from transaction `txn` on, 2 in-doubt
/// commits, 3 both; `times % 4` times (0 always), `times / 4 % 3` the code (IOERR, BUSY,
/// ERROR).
fn rp_faulty(flags: u8, fault: u8, txn: u8, index: u8, times: u8) -> Op {
    Op::Replay {
        flags,
        batch: 1,
        retries: 0,
        fault,
        txn,
        index,
        times,
    }
}

fn ack(sel: u8, delta: u8) -> Op {
    Op::Ack { sel, delta }
}

/// `Reopen`: crash, keep the faults for the open; Buffered; recovery mode (0 tolerate, 1
/// absolute, 2 salvage).
fn reopen(crash: bool, keep: bool, buffered: bool, recovery: u8) -> Op {
    Op::Reopen {
        flags: u8::from(crash) | u8::from(keep) << 1,
        mode: u8::from(buffered) | recovery << 1,
    }
}

fn model_cases() -> Vec<(String, ModelCase)> {
    let case = |config: u8, ops: Vec<Op>| ModelCase { config, ops };
    // Refused entries (3: the target refuses, 5: undecodable) are quarantined; records of
    // other kinds (4, 6) stop every replay, so they come last.
    let mixed = vec![
        ap(0, 1),
        ap(0, 6),
        ap(3, 5),
        ap(5, 8),
        batch(0, &[1, 2, 3]),
        ap(1, 9),
        ap(4, 6),
        ap(6, 2),
    ];
    let big = |n: usize| -> Vec<Op> { (0..n).map(|i| ap(i as u8 % 3, 13)).collect() };
    let mut v: Vec<(&str, ModelCase)> = Vec::new();
    v.push(("sync-appends-replay", {
        let mut ops = mixed.clone();
        ops.extend([rp(2), ack(2, 0), reopen(false, false, false, 0), rp(0)]);
        case(SYNC, ops)
    }));
    v.push((
        "buffered-crash",
        case(
            BUFFERED,
            vec![
                ap(0, 6),
                ap(1, 7),
                Op::Sync,
                write_nowait(0, 5),
                ap(2, 8),
                reopen(true, false, true, 0),
                ap(0, 4),
                rp(2),
            ],
        ),
    ));
    v.push(("rotation-retention", {
        let mut ops = big(7);
        ops.extend([rp(2), ack(0, 0)]);
        ops.extend(big(3));
        ops.extend([rp(0), ack(0, 0)]);
        case(SYNC | 2, ops)
    }));
    v.push((
        "refusals",
        case(
            SYNC,
            vec![
                ap(0, 0),
                ap(4, 0),
                ap(4, 15),
                ap(0, 14),
                ap(7, 3),
                Op::Append {
                    kind: 7,
                    size: 3,
                    fill: 0x31,
                    flags: 0,
                },
                batch(0, &[13, 13, 13]),
                batch(4, &[1, 0]),
                batch(0, &[]),
                ap(4, 14),
                rp(2),
            ],
        ),
    ));
    v.push((
        "poison-buffered-sync",
        case(
            BUFFERED,
            vec![
                ap(0, 5),
                Op::Sync,
                ap(0, 6),
                ap(4, 6),
                fault(0, 0, 1, 1),
                Op::Sync,
                ap(0, 1),
                Op::Sync,
                ack(0, 0),
                rp(2),
                reopen(true, false, false, 0),
                rp(0),
            ],
        ),
    ));
    v.push((
        "poison-sync-append",
        case(
            SYNC,
            vec![
                ap(0, 5),
                fault(0, 1, 0, 1),
                ap(0, 6),
                ap(1, 7),
                ap(2, 8),
                batch(0, &[1, 1]),
                reopen(false, false, false, 2),
                ap(0, 1),
                rp(2),
            ],
        ),
    ));
    v.push(("poison-at-rotation", {
        let mut ops = vec![ap(0, 1), ap(0, 12), ap(0, 12), write_nowait(0, 1)];
        ops.extend([
            fault(0, 0, 1, 1),
            ap(0, 12),
            ap(0, 1),
            reopen(true, false, false, 0),
        ]);
        case(SYNC, ops)
    }));
    v.push(("disk-full", {
        let mut ops = vec![fault(1, 0, 0, 0)];
        ops.extend(big(3));
        ops.extend([batch(0, &[12, 1]), Op::ClearFaults, ap(0, 13), rp(2)]);
        case(BUFFERED, ops)
    }));
    v.push(("syncdir-at-rotation", {
        let mut ops = vec![fault(2, 0, 1, 1)];
        ops.extend(big(4));
        ops.extend([reopen(false, false, false, 0), rp(2)]);
        case(SYNC, ops)
    }));
    v.push(("stale-segment-crash", {
        let mut ops = big(2);
        ops.extend([fault(2, 0, 1, 1), ap(0, 13), reopen(true, false, false, 0)]);
        ops.extend([ap(0, 1), rp(2)]);
        case(SYNC, ops)
    }));
    v.push((
        "ack-write-fails",
        case(
            SYNC,
            vec![
                ap(0, 1),
                ap(0, 2),
                ack(0, 1),
                fault(3, 0, 1, 1),
                ack(0, 0),
                ack(0, 0),
                reopen(true, false, false, 0),
                rp(2),
            ],
        ),
    ));
    v.push(("remove-segment-fails", {
        let mut ops = big(7);
        ops.extend([fault(4, 0, 1, 1), ack(0, 0), ack(0, 0), ap(0, 1), ack(0, 0)]);
        ops.extend([rp(2)]);
        case(SYNC, ops)
    }));
    v.push(("open-with-faults", {
        let ops = vec![
            ap(0, 1),
            ap(0, 2),
            fault(0, 0, 0, 1),
            reopen(true, true, false, 0),
            ap(0, 3),
            rp(2),
        ];
        case(SYNC, ops)
    }));
    v.push(("replay-statement-faults", {
        let mut ops = mixed.clone();
        ops.extend([
            rp_faulty(2, 1, 0, 3, 1),
            rp_faulty(0, 1, 1, 4, 5),
            ap(0, 1),
            ap(3, 1),
            rp_faulty(0, 1, 0, 8, 10),
            rp_faulty(0, 1, 0, 0, 0),
            rp(0),
        ]);
        case(SYNC, ops)
    }));
    v.push(("replay-in-doubt-commit", {
        let mut ops = mixed.clone();
        ops.extend([rp_faulty(2, 2, 0, 0, 1), rp_faulty(0, 3, 0, 1, 6), rp(0)]);
        case(SYNC, ops)
    }));
    v.push(("replay-stop", {
        let mut ops = mixed.clone();
        ops.extend([rp(3), rp(1), rp(2), rp(3)]);
        case(SYNC, ops)
    }));
    v.push(("replay-gap", {
        let mut ops = big(5);
        ops.extend([ack(0, 0), rp(2), ap(0, 1), rp(0)]);
        case(SYNC, ops)
    }));
    v.push((
        "power-loss-torn",
        case(
            BUFFERED,
            vec![
                ap(0, 6),
                Op::Sync,
                ap(0, 8),
                ap(1, 8),
                ap(2, 8),
                Op::PowerLoss {
                    lost: 0b0100,
                    mode: 0,
                },
                ap(0, 1),
                rp(2),
            ],
        ),
    ));
    v.push((
        "power-loss-clean-end",
        case(
            BUFFERED,
            vec![
                ap(0, 6),
                Op::Sync,
                ap(0, 8),
                ap(1, 8),
                Op::PowerLoss {
                    lost: u64::MAX,
                    mode: 1,
                },
                ap(0, 1),
                rp(2),
            ],
        ),
    ));
    v.push((
        "power-loss-absolute",
        case(
            BUFFERED,
            vec![
                ap(0, 6),
                Op::Sync,
                ap(0, 9),
                ap(1, 8),
                Op::PowerLoss { lost: 1, mode: 1 },
                rp(2),
            ],
        ),
    ));
    v.into_iter().map(|(n, c)| (n.to_owned(), c)).collect()
}

// journal_dir seeds. Records of kind `KIND_CHANGESET` are change sets inserting a row into
// `t` (fill % 8: 6 a table the target lacks, 7 undecodable); other kinds are raw records.

fn change_sets(n: usize) -> Vec<FrameSpec> {
    (0..n)
        .map(|i| FrameSpec {
            kind: KIND_CHANGESET,
            ..FrameSpec::data(40, (i % 6) as u8)
        })
        .collect()
}

fn dir_seg(spec: SegSpec) -> DirSegment {
    DirSegment {
        name: 0,
        name_val: 0,
        header: 0,
        header_val: 0,
        len: 0,
        spec,
    }
}

fn dir_case(segments: Vec<DirSegment>) -> DirCase {
    DirCase {
        ack: 1,
        ack_val: 0,
        head: 1,
        head_val: 0,
        replay: 0,
        replay_val: 0,
        strays: Vec::new(),
        segments,
    }
}

fn dir_cases() -> Vec<(String, DirCase)> {
    let five = || dir_seg(SegSpec::new(1, change_sets(5)));
    let two = || vec![five(), dir_seg(SegSpec::new(1, change_sets(7)))];
    let with = |mut c: DirCase, f: &dyn Fn(&mut DirCase)| {
        f(&mut c);
        c
    };
    let stray = |kind: u8, arg: u16| Stray { kind, arg };
    let header = |sel: u8, val: u64| {
        let mut s = five();
        s.header = sel;
        s.header_val = val;
        dir_case(vec![s])
    };
    let one_stray =
        |kind: u8, arg: u16| with(dir_case(two()), &|c| c.strays = vec![stray(kind, arg)]);
    let mut v: Vec<(&str, DirCase)> = vec![
        (
            "empty-directory",
            with(dir_case(Vec::new()), &|c| c.ack = 0),
        ),
        ("clean-two-segments", dir_case(two())),
        (
            "clean-harmless-strays",
            with(dir_case(vec![five()]), &|c| {
                c.strays = vec![
                    stray(0, 7),
                    stray(1, 3),
                    stray(2, 0),
                    stray(3, 1),
                    stray(13, 0),
                ]
            }),
        ),
    ];
    // 2 change sets, one into a missing table, one undecodable, then a raw record (kind 0x22).
    let mut mixed = change_sets(2);
    mixed.push(FrameSpec {
        kind: KIND_CHANGESET,
        ..FrameSpec::data(40, 6)
    });
    mixed.push(FrameSpec {
        kind: KIND_CHANGESET,
        ..FrameSpec::data(40, 7)
    });
    mixed.push(FrameSpec {
        kind: 0x22,
        ..FrameSpec::data(40, 1)
    });
    mixed.extend(change_sets(2));
    v.push((
        "quarantine-and-unknown-kind",
        dir_case(vec![dir_seg(SegSpec::new(1, mixed))]),
    ));
    v.push((
        "first-lsn-1000-replay-gap",
        dir_case(vec![dir_seg(SegSpec::new(1000, change_sets(4)))]),
    ));
    // Where record `i` of a segment of change sets starts.
    let frame_at = |spec: &SegSpec, i: usize| {
        BuiltSegment::build_with(spec, 1, 1, Some(FUZZ_SEGMENT_BYTES), &change_set_record).frames[i]
            .offset
    };
    // The last record (5) overwritten from its middle on; nothing claims it durable.
    let torn = with(dir_case(vec![five()]), &|c| {
        let spec = &mut c.segments[0].spec;
        spec.policy = 1;
        let at = frame_at(spec, 4) + 36;
        spec.mutations = vec![Mutation::fill(at, 8, 0x77)];
    });
    v.push(("torn-tail", torn));
    // A bit of record 3 of the second segment flipped; the records after it claim it durable.
    let middle = with(dir_case(two()), &|c| {
        let spec = &mut c.segments[1].spec;
        let at = frame_at(spec, 2) + 36;
        spec.mutations = vec![Mutation::flip(at, 3)];
    });
    v.push(("damage-in-the-middle", middle));
    v.push((
        "missing-segment",
        with(dir_case(two()), &|c| c.segments[1].name = 1),
    ));
    // Segments removed that the acknowledgement does not cover: LSNs 6..1000 are gone.
    v.push((
        "segments-removed-beyond-ack",
        with(
            dir_case(vec![dir_seg(SegSpec::new(1000, change_sets(4)))]),
            &|c| {
                c.ack = 2;
                c.ack_val = 5;
            },
        ),
    ));
    v.push((
        "ack-beyond-records",
        with(dir_case(vec![five()]), &|c| {
            c.ack = 2;
            c.ack_val = 50;
        }),
    ));
    v.push(("header-claims-1gib", header(1, 5)));
    v.push(("header-claims-64-bytes", header(1, 0)));
    v.push(("header-version-2", header(2, 0)));
    v.push(("header-foreign-journal", header(6, 7)));
    v.push(("reserved-header-byte", header(11, 100)));
    v.push((
        "segment-truncated-after-data",
        with(dir_case(vec![five()]), &|c| c.segments[0].len = 1),
    ));
    v.push((
        "segment-sparse-4mib",
        with(dir_case(vec![five()]), &|c| c.segments[0].len = 5),
    ));
    v.push((
        "sparse-lock-head-replay-1gib",
        with(dir_case(vec![five()]), &|c| {
            c.head = 5;
            c.replay = 4;
            c.strays = vec![stray(14, 0)];
        }),
    ));
    v.push((
        "hostile-replay-json",
        with(dir_case(vec![five()]), &|c| {
            c.replay = 1;
            c.replay_val = 1 << 40;
            c.strays = vec![stray(0, 0)];
        }),
    ));
    for (name, kind, arg) in [
        ("fifo-named-like-a-segment", 5, 3),
        ("fifo-named-lock", 6, 2),
        ("fifo-named-head", 6, 1),
        ("fifo-named-ack", 6, 0),
        ("directory-named-like-a-segment", 4, 3),
        ("directory-named-ack", 7, 0),
        ("symlink-named-lock", 8, 2),
        ("symlink-named-ack", 8, 0),
        ("symlink-named-like-a-segment", 9, 3),
        ("socket-named-like-a-segment", 11, 3),
        ("socket-named-ack", 11, 2),
        ("socket-named-lock", 11, 1),
        ("file-named-forensics", 10, 0),
        ("hard-linked-ack", 12, 0),
        ("hard-linked-lock", 12, 2),
        ("hard-linked-segment", 12, 14),
    ] {
        v.push((name, one_stray(kind, arg)));
    }
    v.into_iter().map(|(n, c)| (n.to_owned(), c)).collect()
}
