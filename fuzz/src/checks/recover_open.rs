//! The `recover_open` target: `Journal::open` in every `RecoveryMode` on one or two generated
//! (or raw) segments and an `ACK` file, each mode on a fresh copy.

use std::path::Path;

use syncjournal::error::JournalError;
use syncjournal::format::{LSN_MAX, SegmentHeader};
use syncjournal::segment::{ACK_FILE, segment_file_name};
use syncjournal::{Error, Journal, JournalOptions, Lsn, Record, RecoveryMode};

use crate::checks::common::{Bytes, check_lsn_sequence, fresh_dir, fuzz_id, put_u64, read_all};
use crate::checks::segments::{
    AckSpec, BuiltFrame, BuiltSegment, FUZZ_SEGMENT_BYTES, SegSpec, expected_records,
    header_plus_body,
};

/// `recover_open` skips `Salvage` for a file whose header asks to be re-extended beyond this:
/// salvage would allocate (up to 1 GiB) of tmpfs for every such input.
pub const MAX_SALVAGE_EXTEND: u64 = 4 * FUZZ_SEGMENT_BYTES as u64;
/// Payload appended to every successfully recovered journal.
const APPENDED: &[u8] = b"appended after recovery";

/// The files of a `recover_open` case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoverLayout {
    /// Layout 0: one segment of 64 KiB with a valid header and these bytes at offset 4096.
    HeaderBody(Vec<u8>),
    /// Layout 1: one segment file with exactly these bytes.
    Raw(Vec<u8>),
    /// Layout 2: one generated segment.
    One(SegSpec),
    /// Layout 3: two generated segments (the second's first LSN follows the first's records).
    Two(SegSpec, SegSpec),
}

/// An input of the `recover_open` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverCase {
    /// The acknowledgement file.
    pub ack: AckSpec,
    /// The segment files.
    pub layout: RecoverLayout,
}

impl RecoverCase {
    /// Reads a case.
    pub fn decode(data: &[u8]) -> Self {
        let mut b = Bytes::new(data);
        let layout = b.u8() % 4;
        let ack = AckSpec {
            sel: b.u8(),
            val: b.u64(),
        };
        let layout = match layout {
            0 => RecoverLayout::HeaderBody(b.rest().to_vec()),
            1 => RecoverLayout::Raw(b.rest().to_vec()),
            2 => RecoverLayout::One(SegSpec::decode(&mut b)),
            _ => {
                let first = SegSpec::decode(&mut b);
                RecoverLayout::Two(first, SegSpec::decode(&mut b))
            }
        };
        RecoverCase { ack, layout }
    }

    /// Writes the case in the format [`RecoverCase::decode`] reads.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![match self.layout {
            RecoverLayout::HeaderBody(_) => 0,
            RecoverLayout::Raw(_) => 1,
            RecoverLayout::One(_) => 2,
            RecoverLayout::Two(..) => 3,
        }];
        out.push(self.ack.sel);
        put_u64(&mut out, self.ack.val);
        match &self.layout {
            RecoverLayout::HeaderBody(b) | RecoverLayout::Raw(b) => out.extend_from_slice(b),
            RecoverLayout::One(s) => s.encode(&mut out),
            RecoverLayout::Two(a, b) => {
                a.encode(&mut out);
                b.encode(&mut out);
            }
        }
        out
    }
}

/// A `recover_open` case made concrete: the files, and what is known about them.
struct Materialized {
    files: Vec<(String, Vec<u8>)>,
    /// The generated segments (structured layouts only).
    segs: Vec<BuiltSegment>,
    /// The records every recovery mode must return: set when the generated segments are
    /// unmutated and the acknowledgement file is consistent with them.
    clean: Option<(Vec<Record>, Lsn)>,
    /// False when salvage would re-extend a file to an absurd size.
    salvage_safe: bool,
}

impl RecoverCase {
    fn materialize(&self) -> Materialized {
        let mut segs = Vec::new();
        let (segment_files, first_lsn, id) = match &self.layout {
            RecoverLayout::HeaderBody(body) => (
                vec![header_plus_body(1, 1, body, FUZZ_SEGMENT_BYTES)],
                1,
                fuzz_id(),
            ),
            RecoverLayout::Raw(file) => {
                let (first, id) = SegmentHeader::decode(file)
                    .map_or((1, fuzz_id()), |(h, _)| (h.first_lsn, h.journal_id));
                (vec![file.clone()], first, id)
            }
            RecoverLayout::One(spec) => {
                segs.push(BuiltSegment::build(
                    spec,
                    1,
                    spec.first_lsn(),
                    Some(FUZZ_SEGMENT_BYTES),
                ));
                (vec![segs[0].bytes.clone()], spec.first_lsn(), fuzz_id())
            }
            RecoverLayout::Two(a, b) => {
                let first = BuiltSegment::build(a, 1, a.first_lsn(), Some(FUZZ_SEGMENT_BYTES));
                // If the first segment's LSNs ran out, the second starts (wrongly) at 1.
                let second_lsn = first.next_lsn.unwrap_or(1);
                segs.push(first);
                segs.push(BuiltSegment::build(
                    b,
                    2,
                    second_lsn,
                    Some(FUZZ_SEGMENT_BYTES),
                ));
                (
                    segs.iter().map(|s| s.bytes.clone()).collect(),
                    a.first_lsn(),
                    fuzz_id(),
                )
            }
        };
        let salvage_safe = segment_files.iter().all(|f| {
            SegmentHeader::decode(f).map_or(true, |(h, _)| {
                h.segment_bytes <= MAX_SALVAGE_EXTEND || h.segment_bytes <= f.len() as u64
            })
        });
        let mut files: Vec<(String, Vec<u8>)> = segment_files
            .into_iter()
            .enumerate()
            .map(|(i, f)| (segment_file_name(i as u64 + 1), f))
            .collect();
        if let Some(ack) = self.ack.file(id, first_lsn) {
            files.push((ACK_FILE.to_owned(), ack));
        }
        let unmutated = !segs.is_empty() && segs.iter().all(|s| s.first_diff().is_none());
        let lsns_fit = segs.iter().all(|s| s.next_lsn.is_some());
        let next = segs.last().and_then(|s| s.next_lsn).unwrap_or(first_lsn);
        // An acknowledgement of records the journal does not hold proves records were lost
        // (journal-format.md §9 step 4): not a clean journal.
        let acked_ok = self
            .ack
            .acked(first_lsn)
            .is_some_and(|acked| acked >= first_lsn - 1 && acked < next && acked <= LSN_MAX);
        let clean = (unmutated && lsns_fit && acked_ok).then(|| {
            let frames: Vec<BuiltFrame> = segs.iter().flat_map(|s| s.frames.clone()).collect();
            (expected_records(&frames), next)
        });
        Materialized {
            files,
            segs,
            clean,
            salvage_safe,
        }
    }
}

fn options(mode: RecoveryMode) -> JournalOptions {
    JournalOptions::new()
        .recovery_mode(mode)
        .segment_bytes_max(FUZZ_SEGMENT_BYTES as u64)
}

/// The `recover_open` target: writes the case's files into a fresh directory and opens it with
/// each recovery mode (each on a fresh copy). Whenever `open` succeeds, every record reads back
/// with contiguous LSNs, the records before the first mutated byte are intact, closing and
/// reopening with `AbsoluteConsistency` succeeds with the same records, and an append after
/// that survives another reopen. Across modes: what `AbsoluteConsistency` opens, the other
/// modes open identically; what `TolerateTornTail` opens, `Salvage` opens identically.
pub fn check_recover_open(data: &[u8]) {
    recover_open_outcomes(data);
}

/// What `open` gave in each mode (`AbsoluteConsistency`, `TolerateTornTail`, `Salvage`): the
/// records read back, or the error. `None`: the mode was skipped (see [`MAX_SALVAGE_EXTEND`]).
pub type Outcomes = [Option<Result<Vec<Record>, String>>; 3];

/// Runs every check of [`check_recover_open`] and returns the outcome of each mode.
pub fn recover_open_outcomes(data: &[u8]) -> Outcomes {
    let case = RecoverCase::decode(data).materialize();
    let modes = [
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::TolerateTornTail,
        RecoveryMode::Salvage,
    ];
    let outcomes: Outcomes = modes.map(|mode| {
        if mode == RecoveryMode::Salvage && !case.salvage_safe {
            return None;
        }
        let dir = fresh_dir();
        for (name, bytes) in &case.files {
            std::fs::write(dir.path().join(name), bytes).expect("write a journal file");
        }
        Some(open_and_check(dir.path(), mode, &case))
    });
    let [absolute, tolerate, salvage] = [&outcomes[0], &outcomes[1], &outcomes[2]];
    if let Some((records, _)) = &case.clean {
        match absolute {
            Some(Ok(got)) => {
                let first = got.first().map_or(u64::MAX, |r| r.lsn);
                let want: Vec<&Record> = records.iter().filter(|r| r.lsn >= first).collect();
                assert!(
                    got.iter().eq(want.iter().copied()),
                    "a clean journal reads back different records"
                );
            }
            other => panic!("a clean journal does not open with AbsoluteConsistency: {other:?}"),
        }
    }
    if let Some(Ok(a)) = absolute {
        assert_eq!(
            tolerate,
            &Some(Ok(a.clone())),
            "AbsoluteConsistency opened it, TolerateTornTail differs"
        );
        if salvage.is_some() {
            assert_eq!(
                salvage,
                &Some(Ok(a.clone())),
                "AbsoluteConsistency opened it, Salvage differs"
            );
        }
    }
    if let (Some(Ok(t)), Some(s)) = (tolerate, salvage) {
        assert_eq!(
            s,
            &Ok(t.clone()),
            "TolerateTornTail opened it, Salvage differs"
        );
    }
    outcomes
}

/// Opens `dir` with `mode` and checks the recovered journal; returns its records, or the error.
fn open_and_check(
    dir: &Path,
    mode: RecoveryMode,
    case: &Materialized,
) -> Result<Vec<Record>, String> {
    let journal = match Journal::open(dir, options(mode)) {
        Ok(j) => j,
        Err(e) => {
            assert!(
                !matches!(
                    e,
                    Error::Journal(JournalError::Io { .. })
                        | Error::Journal(JournalError::DiskFull { .. })
                        | Error::Journal(JournalError::Locked { .. })
                        | Error::InvalidOption { .. }
                        | Error::Journal(JournalError::Poisoned { .. })
                ),
                "{mode:?} open failed with an operational error: {e}"
            );
            return Err(e.to_string());
        }
    };
    let report = journal.recovery_report().clone();
    match mode {
        RecoveryMode::AbsoluteConsistency => assert!(
            report.cuts.is_empty() && report.skipped.is_empty(),
            "AbsoluteConsistency repaired something: {report:?}"
        ),
        RecoveryMode::TolerateTornTail => assert!(
            report.cuts.iter().all(|c| c.torn_tail) && report.skipped.is_empty(),
            "TolerateTornTail repaired damage in the middle: {report:?}"
        ),
        _ => {}
    }
    let state = journal.state();
    assert_eq!(state.next_lsn, report.next_lsn, "state and report disagree");
    let records = read_all(&journal, mode);
    check_lsn_sequence(&records, state.first_lsn, state.next_lsn, mode);
    if state.segments == report.segments {
        let data = records.iter().filter(|r| r.gap().is_none()).count() as u64;
        assert_eq!(
            data, report.records,
            "{mode:?}: records read and reported differ"
        );
    }
    if let Some((_, next)) = &case.clean {
        assert_eq!(
            state.next_lsn, *next,
            "{mode:?}: next LSN of a clean journal"
        );
    }
    for seg in &case.segs {
        for f in seg.intact_frames().iter().filter(|f| f.gap_end.is_none()) {
            if f.lsn < state.first_lsn {
                continue;
            }
            assert!(
                records
                    .iter()
                    .any(|r| r.lsn == f.lsn && r.kind == f.kind && r.payload == f.payload),
                "{mode:?}: record {} of segment {} lay before any damage but was not recovered",
                f.lsn,
                seg.header.segment_seq
            );
        }
    }
    journal
        .close()
        .unwrap_or_else(|e| panic!("{mode:?}: close after recovery failed: {e}"));

    // Recovery must leave a clean journal.
    let again =
        Journal::open(dir, options(RecoveryMode::AbsoluteConsistency)).unwrap_or_else(|e| {
            panic!("reopening with AbsoluteConsistency after a {mode:?} recovery failed: {e}")
        });
    let r = again.recovery_report();
    assert!(
        r.cuts.is_empty() && r.skipped.is_empty(),
        "reopen after {mode:?} recovery repaired something"
    );
    assert_eq!(
        again.state().next_lsn,
        state.next_lsn,
        "reopen after {mode:?}: next LSN"
    );
    let reread = read_all(&again, mode);
    assert_eq!(reread, records, "reopen after {mode:?}: records differ");

    // And one that accepts appends, or refuses them cleanly once LSNs are exhausted.
    let appended = again.append(APPENDED);
    if state.next_lsn > LSN_MAX {
        assert!(
            matches!(appended, Err(Error::Journal(JournalError::LimitReached(_)))),
            "append at LSN {} after {mode:?} recovery: {appended:?}",
            state.next_lsn
        );
        again
            .close()
            .unwrap_or_else(|e| panic!("close after a refused append failed: {e}"));
        let last =
            Journal::open(dir, options(RecoveryMode::AbsoluteConsistency)).unwrap_or_else(|e| {
                panic!("reopen after a refused append (LSNs exhausted) failed: {e}")
            });
        assert_eq!(
            read_all(&last, mode),
            records,
            "records after a refused append"
        );
        return Ok(records);
    }
    let lsn = appended.unwrap_or_else(|e| panic!("append after {mode:?} recovery failed: {e}"));
    assert_eq!(
        lsn, state.next_lsn,
        "append after {mode:?} recovery got the wrong LSN"
    );
    again
        .close()
        .unwrap_or_else(|e| panic!("close after append failed: {e}"));
    let last = Journal::open(dir, options(RecoveryMode::AbsoluteConsistency))
        .unwrap_or_else(|e| panic!("reopen after {mode:?} recovery and an append failed: {e}"));
    let mut want = records.clone();
    want.push(Record {
        lsn,
        kind: syncjournal::KIND_DATA,
        payload: APPENDED.to_vec(),
    });
    let first = last.state().first_lsn;
    want.retain(|r| r.lsn >= first);
    let got = read_all(&last, mode);
    assert_eq!(got, want, "records after {mode:?} recovery and an append");
    drop(last);
    Ok(records)
}
