//! Simulated power loss: keep what was made durable, tear, drop, zero or garble what was not,
//! recover, and check that recovery yields EXACTLY a prefix of the written records.
//!
//! # Method
//!
//! One thread writes journals (64 KiB segments in `/dev/shm`, so that rotations happen) over
//! several sessions, each opened with `PersistMode::Buffered` (appends and batches, with
//! explicit `sync()` at random points) or `PersistMode::Sync` (every append durable when it
//! returns). The writer copies the segment files at every *durability point*:
//!
//! * after `sync()`, a `Sync`-mode `append`/`append_batch` or `close` returned: everything
//!   written is durable;
//! * at a rotation (seen as a new segment after an append): the rotation synced the whole
//!   previous segment and created the next one durably, with no data yet.
//!
//! Between two durability points lies an *epoch*: its durable image `D` (what a power loss
//! keeps at least) and its written image `W` (the page cache just before the next durability
//! point; only the active segment differs, in `[durable end, written end)`). A power loss
//! inside the epoch keeps `D` plus any subset of the writes of the epoch, in any order
//! (`journal-format.md` 10). Each case picks an epoch and builds a crash image from `D`
//! overwritten, in the changed range, by a random mix of: `W`'s bytes cut at a random point
//! (tear), `W`'s 4 KiB pages kept or not in any order (page writeback), 512-byte sectors kept
//! or not, zeroed pages, garbage bytes, a flipped byte; sometimes a leftover `.tmp` file of
//! an interrupted segment creation, or part of the zeros of an interrupted earlier cut.
//!
//! # What is checked
//!
//! The crash image is recovered in its own directory (`Journal::open`, default
//! `TolerateTornTail`), and:
//!
//! * the journal holds exactly LSNs `1..=m` with the written payloads, where `m` is computed
//!   independently from the image: the durable records plus every record of the epoch whose
//!   frame bytes all reached the disk with all records before it (a frame byte-identical to
//!   the written one is a valid record, whatever was torn around it);
//! * hence `m ≥` every record made durable before the crash point (the summary's "kept 100%");
//! * a torn tail is cut iff something non-zero follows the intact prefix in the active segment:
//!   one cut, at the end of the intact prefix, reported as a torn tail, its bytes kept in
//!   `forensics/`, and the rest of the segment zeroed on disk; the sealed segments untouched;
//! * every eighth case is opened with `AbsoluteConsistency` first: it refuses exactly the
//!   images that differ from a clean prefix (`Corrupt`, torn tail, at the cut offset, naming
//!   the segment) and leaves them unchanged; every eighth (other) case uses `Salvage`, which
//!   must behave exactly as the default (a crash never leaves damage in the middle);
//! * one case in four (at random) appends after the recovery (the next LSN is `m + 1`),
//!   reopens, and finds nothing to cut.
//!
//! Set `SYNCJOURNAL_POWER_LOSS_SEED` to replay a run; `SYNCJOURNAL_POWER_LOSS_CASES` for more
//! cases (default 1200).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use syncjournal::error::JournalError;

use crate::support::process::{count_from_env, shm_tempdir, summary, with_timeout};
use crate::support::rng::Rng;
use syncjournal::format::{FRAME_LSN_OFFSET, SEGMENT_DATA_OFFSET, le_u64};
use syncjournal::segment::parse_segment_file_name;
use syncjournal::{
    Error, Journal, JournalOptions, KIND_DATA, Lsn, PersistMode, RecoveryMode, RecoveryReport,
};

const SEG: usize = 64 << 10;
const PAGE: usize = 4096;
const SECTOR: usize = 512;
const RUNS: usize = 3;
const CASES_DEFAULT: usize = 1200;
const SEED_ENV: &str = "SYNCJOURNAL_POWER_LOSS_SEED";
const CASES_ENV: &str = "SYNCJOURNAL_POWER_LOSS_CASES";

fn opts(persist: PersistMode, recovery: RecoveryMode) -> JournalOptions {
    JournalOptions::new()
        .segment_bytes_max(SEG as u64)
        .persist_mode(persist)
        .recovery_mode(recovery)
}

/// Files of a journal directory that recovery reads (segments and `ACK`), by name. Unchanged
/// files are shared between images.
type Image = BTreeMap<String, Arc<Vec<u8>>>;

/// Where a record's frame is.
#[derive(Debug, Clone)]
struct Loc {
    segment: String,
    offset: usize,
    len: usize,
}

/// The writes between two durability points.
struct Epoch {
    /// What a power loss inside the epoch keeps at least.
    durable: Image,
    /// The active segment (the only file the epoch writes).
    active: String,
    /// The active segment's bytes as written (page cache) at the end of the epoch.
    written: Arc<Vec<u8>>,
    /// Highest durable LSN at the start of the epoch.
    durable_lsn: Lsn,
    /// Highest LSN written at the end of the epoch.
    written_lsn: Lsn,
    /// `[durable end, written end)` in the active segment.
    lo: usize,
    hi: usize,
    /// What ended the epoch.
    how: &'static str,
}

/// What a power loss keeps at least, as the run goes: the durable files, the highest durable
/// LSN, and where the durable data of the active segment ends.
struct Durable {
    image: Image,
    lsn: Lsn,
    end: usize,
}

impl Durable {
    /// The active segment's bytes `written` (LSNs up to `written_lsn`, data up to `hi`) became
    /// durable (by `how`): the epoch that ends is recorded, if it wrote anything.
    fn advance(
        &mut self,
        epochs: &mut Vec<Epoch>,
        active: &str,
        written: Arc<Vec<u8>>,
        written_lsn: Lsn,
        hi: usize,
        how: &'static str,
    ) {
        if written_lsn > self.lsn {
            epochs.push(Epoch {
                durable: self.image.clone(),
                active: active.to_owned(),
                written: Arc::clone(&written),
                durable_lsn: self.lsn,
                written_lsn,
                lo: self.end,
                hi,
                how,
            });
        }
        self.image.insert(active.to_owned(), written);
        self.lsn = written_lsn;
        self.end = hi;
    }
}

/// One recorded run: the payloads by LSN, their frames, the epochs.
struct Run {
    payloads: Vec<Vec<u8>>,
    locs: Vec<Loc>,
    epochs: Vec<Epoch>,
    rotations: usize,
    sessions: usize,
    /// The segment files at the end of the run.
    segments: Vec<String>,
}

fn frame_bytes(payload_len: usize) -> usize {
    (32 + payload_len + 7) & !7
}

fn segment_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            parse_segment_file_name(&name).map(|_| name)
        })
        .collect();
    v.sort();
    v
}

fn read(dir: &Path, name: &str) -> Arc<Vec<u8>> {
    Arc::new(fs::read(dir.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}")))
}

/// A payload: mostly small, some spanning pages; random bytes, sometimes ending in zeros (so
/// that a tear in the zeros leaves a byte-identical, valid frame).
fn make_payload(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.range(0, 10) {
        0..6 => rng.urange(1, 200),
        6..9 => rng.urange(200, 3000),
        _ => rng.urange(3000, 12000),
    };
    let mut p = vec![0u8; len];
    rng.fill(&mut p);
    if rng.one_in(5) {
        let zeros = rng.urange(0, len);
        p[len - zeros..].fill(0);
        p[0] |= 1;
    }
    p
}

/// Writes a journal over several sessions and records its epochs.
fn record_run(jdir: &Path, rng: &mut Rng) -> Run {
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    let mut locs: Vec<Loc> = Vec::new();
    let mut epochs: Vec<Epoch> = Vec::new();
    let mut rotations = 0;
    let sessions = rng.urange(3, 6);
    let mut d = Durable {
        image: BTreeMap::new(),
        lsn: 0,
        end: SEGMENT_DATA_OFFSET,
    };
    let mut cursor = SEGMENT_DATA_OFFSET;
    for session in 0..sessions {
        let mode = if rng.coin() {
            PersistMode::Buffered
        } else {
            PersistMode::Sync
        };
        let j = Journal::open(jdir, opts(mode, RecoveryMode::TolerateTornTail))
            .unwrap_or_else(|e| panic!("session {session}: open: {e}"));
        assert!(
            j.recovery_report().cuts.is_empty(),
            "session {session}: a clean close left something to cut: {:?}",
            j.recovery_report().cuts
        );
        // Everything on disk is durable now (open syncs the last segment).
        let mut names = segment_names(jdir);
        let mut active = names.last().unwrap().clone();
        for n in names.iter().chain(std::iter::once(&"ACK".to_owned())) {
            let bytes = read(jdir, n);
            match d.image.get(n) {
                Some(old) => assert!(
                    **old == *bytes,
                    "session {session}: reopening a cleanly closed journal changed {n}"
                ),
                None => {
                    assert_eq!(session, 0, "reopening created {n}");
                    d.image.insert(n.clone(), bytes);
                }
            }
        }
        assert_eq!(j.state().next_lsn, payloads.len() as Lsn + 1);
        let ops = rng.urange(30, 90);
        for _ in 0..ops {
            let written_lsn = payloads.len() as Lsn;
            if mode == PersistMode::Buffered && rng.one_in(8) {
                let w = read(jdir, &active);
                j.sync().expect("sync");
                assert_eq!(*read(jdir, &active), *w, "sync() changed the bytes");
                d.advance(&mut epochs, &active, w, written_lsn, cursor, "sync()");
                continue;
            }
            let n = if rng.one_in(4) { rng.urange(2, 6) } else { 1 };
            let batch: Vec<Vec<u8>> = (0..n).map(|_| make_payload(rng)).collect();
            let before = read(jdir, &active);
            let first = if n == 1 {
                j.append(&batch[0]).expect("append")
            } else {
                j.append_batch(&batch).expect("append_batch").start
            };
            assert_eq!(first, written_lsn + 1, "LSNs are contiguous");
            let now = segment_names(jdir);
            if now.len() != names.len() {
                assert_eq!(now.len(), names.len() + 1, "one rotation at most");
                rotations += 1;
                // The rotation made the previous segment durable as written before this op.
                assert_eq!(
                    *read(jdir, &active),
                    *before,
                    "a rotation changed the sealed segment's bytes"
                );
                d.advance(
                    &mut epochs,
                    &active,
                    before,
                    written_lsn,
                    cursor,
                    "rotation",
                );
                // The new segment: durable with its header and no data.
                active = now.last().unwrap().clone();
                let mut fresh = read(jdir, &active).to_vec();
                fresh[SEGMENT_DATA_OFFSET..].fill(0);
                d.image.insert(active.clone(), Arc::new(fresh));
                cursor = SEGMENT_DATA_OFFSET;
                d.end = SEGMENT_DATA_OFFSET;
                names = now;
            }
            for p in batch {
                let len = frame_bytes(p.len());
                locs.push(Loc {
                    segment: active.clone(),
                    offset: cursor,
                    len,
                });
                cursor += len;
                payloads.push(p);
            }
            let written_lsn = payloads.len() as Lsn;
            if mode == PersistMode::Sync {
                let w = read(jdir, &active);
                let how = if n == 1 {
                    "Sync append"
                } else {
                    "Sync append_batch"
                };
                d.advance(&mut epochs, &active, w, written_lsn, cursor, how);
            }
        }
        let written_lsn = payloads.len() as Lsn;
        let w = read(jdir, &active);
        j.close().expect("close");
        d.advance(&mut epochs, &active, w, written_lsn, cursor, "close");
    }
    // Premises: every frame is where this test thinks it is, every epoch's changes lie in
    // [lo, hi) of its active segment, and nothing is written beyond.
    for (i, l) in locs.iter().enumerate() {
        let bytes = &d.image[&l.segment];
        assert_eq!(
            le_u64(bytes, l.offset + FRAME_LSN_OFFSET),
            i as u64 + 1,
            "premise: LSN {} at {} offset {}",
            i + 1,
            l.segment,
            l.offset
        );
    }
    for e in &epochs {
        let d = &e.durable[&e.active];
        assert!(e.lo <= e.hi && e.hi <= SEG);
        assert_eq!(
            d[..e.lo],
            e.written[..e.lo],
            "premise: durable part unchanged"
        );
        assert!(
            d[e.lo..].iter().all(|&b| b == 0),
            "premise: D is zero after lo"
        );
        assert!(
            e.written[e.hi..].iter().all(|&b| b == 0),
            "premise: W is zero after hi"
        );
    }
    Run {
        payloads,
        locs,
        epochs,
        rotations,
        sessions,
        segments: segment_names(jdir),
    }
}

/// Pages (as byte ranges clipped to `[lo, end)`) overlapping `[lo, end)`.
fn units(lo: usize, end: usize, unit: usize) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut a = lo / unit * unit;
    while a < end {
        v.push((a.max(lo), (a + unit).min(end)));
        a += unit;
    }
    v
}

/// Builds the crash image of the active segment: `D` plus a random part of the epoch's writes.
fn crash_bytes(e: &Epoch, rng: &mut Rng) -> (Vec<u8>, String) {
    let d = &e.durable[&e.active];
    let w = &e.written;
    let (lo, hi) = (e.lo, e.hi);
    // The pages being written: garbage may land anywhere in them after the durable end.
    let page_end = hi.div_ceil(PAGE) * PAGE;
    let mut c = d.to_vec();
    let mut how = Vec::new();
    match rng.range(0, 8) {
        0 => how.push("nothing reached the disk".to_owned()),
        1 => {
            c[lo..hi].copy_from_slice(&w[lo..hi]);
            how.push("everything reached the disk".to_owned());
        }
        2 | 3 => {
            let cut = rng.urange(lo, hi + 1);
            c[lo..cut].copy_from_slice(&w[lo..cut]);
            how.push(format!("torn at byte {cut}"));
        }
        4 | 5 => {
            let mut kept = Vec::new();
            for (a, b) in units(lo, hi, PAGE) {
                if rng.coin() {
                    c[a..b].copy_from_slice(&w[a..b]);
                    kept.push(a / PAGE);
                }
            }
            how.push(format!("pages kept {kept:?}"));
        }
        6 => {
            let mut kept = 0;
            for (a, b) in units(lo, hi, SECTOR) {
                if !rng.one_in(4) {
                    c[a..b].copy_from_slice(&w[a..b]);
                    kept += 1;
                }
            }
            how.push(format!("{kept} sectors kept"));
        }
        _ => {
            // Written back in order up to a page, then one later page as well.
            let pages = units(lo, hi, PAGE);
            let upto = rng.urange(0, pages.len() + 1);
            for &(a, b) in &pages[..upto] {
                c[a..b].copy_from_slice(&w[a..b]);
            }
            if upto + 1 < pages.len() {
                let (a, b) = pages[rng.urange(upto + 1, pages.len())];
                c[a..b].copy_from_slice(&w[a..b]);
                how.push(format!(
                    "pages in order up to {upto}, then page {}",
                    a / PAGE
                ));
            } else {
                how.push(format!("pages in order up to {upto}"));
            }
        }
    }
    if rng.one_in(5) {
        let pages = units(lo, page_end, PAGE);
        if !pages.is_empty() {
            let (a, b) = pages[rng.urange(0, pages.len())];
            c[a..b].fill(0);
            how.push(format!("zeroed page {}", a / PAGE));
        }
    }
    if rng.one_in(5) && lo < page_end {
        let a = rng.urange(lo, page_end);
        let n = rng.urange(1, 600).min(page_end - a);
        rng.fill(&mut c[a..a + n]);
        how.push(format!("{n} garbage bytes at {a}"));
    }
    if rng.one_in(8) && lo < hi {
        let a = rng.urange(lo, hi);
        c[a] ^= 1 << rng.range(0, 8);
        how.push(format!("bit flipped at {a}"));
    }
    (c, how.join(", "))
}

/// What recovery must find in a crash image: the records of the intact prefix, where it ends,
/// and whether anything follows it.
struct Expected {
    m: Lsn,
    prefix_end: usize,
    cut: bool,
}

fn expected(run: &Run, e: &Epoch, c: &[u8]) -> Expected {
    let mut m = e.durable_lsn;
    let mut prefix_end = e.lo;
    for lsn in e.durable_lsn + 1..=e.written_lsn {
        let l = &run.locs[lsn as usize - 1];
        assert_eq!(l.segment, e.active, "premise: epochs write one segment");
        let range = l.offset..l.offset + l.len;
        if c[range.clone()] != e.written[range] {
            break;
        }
        m = lsn;
        prefix_end = l.offset + l.len;
    }
    Expected {
        m,
        prefix_end,
        cut: c[prefix_end..].iter().any(|&b| b != 0),
    }
}

/// Tallies for the summary.
#[derive(Default)]
struct Tally {
    cases: usize,
    durable_records: u64,
    durable_kept: u64,
    beyond_kept: u64,
    beyond_lost: u64,
    cuts: usize,
    strict: usize,
    strict_refused: usize,
    salvage: usize,
    tmp_removed: usize,
    interrupted_cuts: usize,
    appended: usize,
    by_how: BTreeMap<&'static str, usize>,
}

fn check_report(
    ctx: &str,
    r: &RecoveryReport,
    ex: &Expected,
    crash_active: &[u8],
    active_path: &Path,
) {
    assert_eq!(r.next_lsn, ex.m + 1, "{ctx}: next LSN");
    assert_eq!(r.first_lsn, 1, "{ctx}: first LSN");
    assert!(r.skipped.is_empty(), "{ctx}: skipped {:?}", r.skipped);
    assert!(r.gaps.is_empty(), "{ctx}: gaps {:?}", r.gaps);
    if ex.cut {
        assert_eq!(r.cuts.len(), 1, "{ctx}: one torn tail cut: {:?}", r.cuts);
        let cut = &r.cuts[0];
        assert!(cut.torn_tail, "{ctx}: the cut is a torn tail: {cut:?}");
        assert_eq!(cut.segment, active_path, "{ctx}: cut segment");
        assert_eq!(
            cut.offset as usize, ex.prefix_end,
            "{ctx}: the cut starts where the intact prefix ends: {cut:?}"
        );
        let end = cut.offset as usize + cut.len as usize;
        assert!(
            crash_active[end..].iter().all(|&b| b == 0),
            "{ctx}: the cut must reach the last non-zero byte: {cut:?}"
        );
        let saved = cut.saved_to.as_ref().expect("cut bytes kept");
        assert_eq!(
            fs::read(saved).unwrap(),
            crash_active[cut.offset as usize..end],
            "{ctx}: forensics file holds the cut bytes"
        );
    } else {
        assert!(r.cuts.is_empty(), "{ctx}: nothing to cut: {:?}", r.cuts);
    }
}

/// Builds one crash image, recovers it and checks the outcome.
#[allow(clippy::too_many_arguments)]
fn run_case(
    run: &Run,
    e: &Epoch,
    case_dir: &Path,
    rng: &mut Rng,
    ctx: &str,
    mode: RecoveryMode,
    tally: &mut Tally,
) {
    if case_dir.exists() {
        fs::remove_dir_all(case_dir).unwrap();
    }
    fs::create_dir_all(case_dir).unwrap();
    let (mut crash_active, mut how) = crash_bytes(e, rng);
    let mut ex = expected(run, e, &crash_active);
    if ex.cut && rng.one_in(6) {
        // A power loss while an earlier recovery was cutting this tail: part of the zeros
        // reached the disk (journal-format.md 9.1: the rest is found and cut again).
        let end = crash_active.len();
        let n = rng.urange(1, end - ex.prefix_end + 1);
        crash_active[ex.prefix_end..ex.prefix_end + n].fill(0);
        how.push_str(&format!(", an earlier cut zeroed {n} bytes"));
        ex = expected(run, e, &crash_active);
        tally.interrupted_cuts += 1;
    }
    let ctx = format!("{ctx} [{how}]");
    for (name, bytes) in &e.durable {
        let b: &[u8] = if *name == e.active {
            &crash_active
        } else {
            bytes
        };
        fs::write(case_dir.join(name), b).unwrap();
    }
    let mut tmp = rng.one_in(20);
    if tmp {
        // An interrupted segment creation: a partial next segment under its temporary name.
        let seq =
            parse_segment_file_name(e.durable.keys().rfind(|n| *n != "ACK").unwrap()).unwrap() + 1;
        let mut junk = vec![0u8; rng.urange(0, SEG)];
        let n = junk.len().min(64);
        junk[..n].copy_from_slice(&e.durable[&e.active][..n]);
        fs::write(case_dir.join(format!("{seq:016}.sjl.tmp")), junk).unwrap();
    }
    let active_path = case_dir.join(&e.active);
    let ctx = format!(
        "{ctx}: durable LSN {}, written {}, expected m {} (prefix ends at {}, cut {})",
        e.durable_lsn, e.written_lsn, ex.m, ex.prefix_end, ex.cut
    );

    if mode == RecoveryMode::AbsoluteConsistency {
        tally.strict += 1;
        match Journal::open(case_dir, opts(PersistMode::Sync, mode)) {
            Err(Error::Journal(JournalError::Corrupt(c))) if ex.cut => {
                assert!(c.torn_tail, "{ctx}: strict: refused as a torn tail: {c}");
                assert_eq!(c.segment, active_path, "{ctx}: strict: names the segment");
                assert_eq!(c.offset as usize, ex.prefix_end, "{ctx}: strict: offset");
                assert_eq!(
                    fs::read(&active_path).unwrap(),
                    crash_active,
                    "{ctx}: a refused open must not change the segment"
                );
                tally.strict_refused += 1;
            }
            Err(other) => panic!("{ctx}: strict open: unexpected {other:?}"),
            Ok(j) if ex.cut => panic!(
                "{ctx}: AbsoluteConsistency opened a damaged image: {:?}",
                j.recovery_report()
            ),
            Ok(j) => {
                check_report(&ctx, j.recovery_report(), &ex, &crash_active, &active_path);
                check_records(&j, run, ex.m, &ctx);
                j.close().unwrap();
            }
        }
        if tmp {
            // Step 1 of recovery, in every mode: leftover temporary files are removed.
            let left: Vec<_> = fs::read_dir(case_dir)
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".tmp"))
                .collect();
            assert!(left.is_empty(), "{ctx}: strict open left {left:?}");
            tally.tmp_removed += 1;
            tmp = false;
        }
    }
    let mode = if mode == RecoveryMode::AbsoluteConsistency {
        RecoveryMode::TolerateTornTail
    } else {
        mode
    };
    if mode == RecoveryMode::Salvage {
        tally.salvage += 1;
    }
    let j = Journal::open(case_dir, opts(PersistMode::Sync, mode))
        .unwrap_or_else(|err| panic!("{ctx}: recovery ({mode:?}) failed: {err}"));
    let r = j.recovery_report().clone();
    check_report(&ctx, &r, &ex, &crash_active, &active_path);
    if tmp {
        assert_eq!(r.removed_tmp_files, 1, "{ctx}: leftover .tmp removed");
        tally.tmp_removed += 1;
    }
    check_records(&j, run, ex.m, &ctx);
    let st = j.state();
    assert_eq!(st.durable_lsn, ex.m, "{ctx}: durable LSN after recovery");
    assert!(st.poisoned.is_none());
    // On disk: the active segment is the intact prefix and zeros; sealed segments untouched.
    let on_disk = fs::read(&active_path).unwrap();
    assert_eq!(
        on_disk[..ex.prefix_end],
        crash_active[..ex.prefix_end],
        "{ctx}: recovery changed the intact prefix"
    );
    assert!(
        on_disk[ex.prefix_end..].iter().all(|&b| b == 0),
        "{ctx}: bytes left after the intact prefix"
    );
    for (name, bytes) in &e.durable {
        if *name != e.active && name != "ACK" {
            assert_eq!(
                fs::read(case_dir.join(name)).unwrap(),
                **bytes,
                "{ctx}: recovery changed sealed segment {name}"
            );
        }
    }
    tally.cases += 1;
    tally.durable_records += e.durable_lsn;
    tally.durable_kept += ex.m.min(e.durable_lsn);
    tally.beyond_kept += ex.m - e.durable_lsn;
    tally.beyond_lost += e.written_lsn - ex.m;
    tally.cuts += usize::from(ex.cut);
    *tally.by_how.entry(e.how).or_insert(0) += 1;

    if rng.one_in(4) {
        // A cut tail's LSNs are reused by the next appends; a second open finds nothing.
        let p = b"appended after the power loss".to_vec();
        assert_eq!(j.append(&p).unwrap(), ex.m + 1, "{ctx}: next append");
        j.close().unwrap();
        let j = Journal::open(case_dir, opts(PersistMode::Sync, mode)).unwrap();
        assert!(
            j.recovery_report().cuts.is_empty(),
            "{ctx}: second open cut {:?}",
            j.recovery_report().cuts
        );
        let recs: Vec<_> = j.reader(1).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(recs.len() as u64, ex.m + 1, "{ctx}: records after append");
        assert_eq!(recs.last().unwrap().payload, p);
        tally.appended += 1;
    }
}

fn check_records(j: &Journal, run: &Run, m: Lsn, ctx: &str) {
    let mut reader = j.reader(1).unwrap();
    let mut n = 0u64;
    while let Some(r) = reader
        .next_record()
        .unwrap_or_else(|e| panic!("{ctx}: read: {e}"))
    {
        n += 1;
        assert_eq!(r.lsn, n, "{ctx}: LSNs not contiguous from 1");
        assert_eq!(r.kind, KIND_DATA, "{ctx}: kind of LSN {}", r.lsn);
        assert!(
            r.lsn <= run.payloads.len() as u64,
            "{ctx}: LSN {} was never written",
            r.lsn
        );
        assert!(
            r.payload == run.payloads[r.lsn as usize - 1],
            "{ctx}: payload of LSN {} differs from what was written",
            r.lsn
        );
    }
    assert_eq!(n, m, "{ctx}: recovered LSNs 1..={n}, expected 1..={m}");
}

#[test]
fn power_loss_keeps_exactly_a_prefix_with_every_durable_record() {
    with_timeout(600, || {
        let (mut rng, seed) = Rng::from_env_or_time(SEED_ENV);
        let cases: usize = count_from_env(CASES_ENV, CASES_DEFAULT);
        let base = shm_tempdir();
        let mut runs = Vec::new();
        for i in 0..RUNS {
            let jdir = base.path().join(format!("run-{i}"));
            runs.push(record_run(&jdir, &mut rng));
        }
        let epochs: Vec<(usize, usize)> = runs
            .iter()
            .enumerate()
            .flat_map(|(r, run)| (0..run.epochs.len()).map(move |e| (r, e)))
            .collect();
        assert!(!epochs.is_empty());
        // Epochs of several records (Buffered writes, batches) make the richer crash images:
        // after every epoch had its case, three picks in four come from them.
        let rich: Vec<(usize, usize)> = epochs
            .iter()
            .copied()
            .filter(|&(r, e)| {
                let ep = &runs[r].epochs[e];
                ep.written_lsn - ep.durable_lsn > 1
            })
            .collect();
        let mut tally = Tally::default();
        let case_dir = base.path().join("case");
        for case in 0..cases.max(epochs.len()) {
            // Every epoch once, then at random.
            let (r, e) = if case < epochs.len() {
                epochs[case]
            } else if !rich.is_empty() && !rng.one_in(4) {
                rich[rng.urange(0, rich.len())]
            } else {
                epochs[rng.urange(0, epochs.len())]
            };
            let mode = match case % 8 {
                3 => RecoveryMode::AbsoluteConsistency,
                7 => RecoveryMode::Salvage,
                _ => RecoveryMode::TolerateTornTail,
            };
            let run = &runs[r];
            let epoch = &run.epochs[e];
            let ctx = format!(
                "case {case} (seed {seed}: {SEED_ENV}={seed} to replay), run {r}, epoch {e} \
                 ended by {} in {}, mode {mode:?}",
                epoch.how, epoch.active
            );
            run_case(run, epoch, &case_dir, &mut rng, &ctx, mode, &mut tally);
        }
        assert_eq!(tally.durable_kept, tally.durable_records);
        assert!(tally.cuts > 0, "no case produced a torn tail");
        assert!(tally.strict_refused > 0, "no strict refusal was exercised");
        let rotations: usize = runs.iter().map(|r| r.rotations).sum();
        assert!(rotations > 0, "no rotation happened");
        let kept_pct = if tally.durable_records == 0 {
            100.0
        } else {
            100.0 * tally.durable_kept as f64 / tally.durable_records as f64
        };
        summary(&format!(
            "power loss cases {}, durable records kept {kept_pct:.0}% ({} of {} over all \
             cases), prefix always exact, torn tails cut {}; unsynced records kept {} / dropped \
             {}; strict refusals {} of {}, salvage {}, leftover .tmp removed {}, interrupted \
             earlier cuts {}, appends after recovery {}; {} runs, {} sessions, {} records, {} segments, {} rotations, {} epochs \
             {:?}; seed {seed}",
            tally.cases,
            tally.durable_kept,
            tally.durable_records,
            tally.cuts,
            tally.beyond_kept,
            tally.beyond_lost,
            tally.strict_refused,
            tally.strict,
            tally.salvage,
            tally.tmp_removed,
            tally.interrupted_cuts,
            tally.appended,
            runs.len(),
            runs.iter().map(|r| r.sessions).sum::<usize>(),
            runs.iter().map(|r| r.payloads.len()).sum::<usize>(),
            runs.iter().map(|r| r.segments.len()).sum::<usize>(),
            rotations,
            epochs.len(),
            tally.by_how,
        ));
    });
}
