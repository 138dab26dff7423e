//! The `journal_dir` target: whole journal directories through the paths the command line
//! takes.
//!
//! The input ([`DirCase`], in `checks::dirs`) decodes into a directory: up to `dirs::MAX_SEGMENTS` segment files
//! (generated records sealed with valid checksums — change sets, records of other kinds, gap
//! records —, then a header field rewritten and the header and every frame re-sealed, the
//! length changed, the bytes mutated), an `ACK`, a `HEAD`, a `replay.json`, and up to
//! `dirs::MAX_STRAYS` stray entries: foreign files, syncjournal's own and foreign `*.tmp` files,
//! directories, FIFOs and sockets named like journal files, symbolic links and hard links to
//! files outside the directory, files claiming a gigabyte (sparse). It is written into a fresh
//! temporary directory (one copy per phase) and run through:
//!
//! * the read-only paths: `journal_id_of`, `owner_of`, `first_retained` and an
//!   [`OfflineReader`] to the end, decoding every change set (`dump`), [`inspect`] (`verify`),
//!   [`offline_status`] (`status`);
//! * `Journal::open` in each [`RecoveryMode`] (`recover`, and the owner's open of `sync`), each
//!   on a fresh copy; while it is open, `offline_status` again (a status of an owned journal);
//!   after the first open that succeeds, a [`Replayer`] pass to a fresh SQLite target
//!   (`sync --quarantine`) and `offline_status` with that target; then close and reopen.
//!
//! Checked (each an assertion naming the property):
//!
//! * **No panic, every call returns** within [`CALLS_TIME_MAX`] (the calls run on a worker
//!   thread; a watchdog names the call that did not return, and opens the directory's FIFOs
//!   to release it).
//! * **Memory bounded by a constant**, not by a claim on disk: with
//!   [`check_journal_dir_bounded`] (the libFuzzer target), the process's peak RSS grows by at
//!   most [`RSS_GROWTH_BYTES_MAX`] during an input, though files claim up to 1 GiB (run the
//!   fuzzer with `-malloc_limit_mb` as well, see `fuzz/README.md`).
//! * **Specific errors**: no call fails with an operational error (`Io`, `DiskFull`, `Locked`,
//!   `Poisoned`, `InvalidOption`) — a hostile file is damage, a foreign or unsafe file, never
//!   an I/O failure. A journal name that is a link or of the wrong type makes every read and
//!   every open fail, the opens with `UnsafeFile`.
//! * **Nothing changed or lost**: the read-only paths leave the directory exactly as it was;
//!   no path ever changes a file outside the directory (the targets of planted symbolic and
//!   hard links) or removes or changes a foreign file in it; the records the offline reader
//!   reads (everything before the first damage) survive every open, in order.
//! * **Nothing reports more applied or fewer pending than the records prove**: `status`
//!   reports exactly the `ACK` file's acknowledgement, no measured target without one, a head
//!   at least the last record read, at least as many pending entries and bytes as records
//!   after the acknowledgement were read, and — with no damage — exactly the head read;
//!   `verify` agrees with the offline reader and with `AbsoluteConsistency`; a journal that
//!   opens with `AbsoluteConsistency` reads the same everywhere; a sync's watermark covers only
//!   change sets and gap records, no further than the durable head, with `applied` rows in the
//!   target and `applied` + `quarantined` exactly the entries under the watermark; the status
//!   measured on that target names that watermark.
//! * A **clean** case (generated segments untouched, consistent `ACK` and `HEAD`, only
//!   harmless strays) opens in every mode with exactly the records written.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use syncjournal::error::JournalError;
use syncjournal::event::{KIND_CHANGESET, decode_event};
use syncjournal::format::{decode_ack_file, frame_bytes};
use syncjournal::inspect::{Inspection, inspect};
use syncjournal::journal::Until;
use syncjournal::journal::offline::{OfflineReader, first_retained, journal_id_of, owner_of};
use syncjournal::replay::{OfflineStatus, offline_status};
use syncjournal::segment::ACK_FILE;
use syncjournal::{
    ChangeSet, Error, Journal, JournalOptions, Lsn, Record, RecoveryMode, RejectPolicy,
    ReplayOptions, Replayer, TargetOptions,
};

use crate::checks::common::{MAX_RECORDS_READ, check_lsn_sequence, read_all};
use crate::checks::dirs::{
    Copy, DirCase, Entry, Plan, avoid_known_bugs, materialize, snapshot, unblock_fifos,
};
use crate::checks::segments::FUZZ_SEGMENT_BYTES;

/// Every input's calls together must return within this.
pub const CALLS_TIME_MAX: Duration = Duration::from_secs(10);
/// Most the process's peak RSS may grow during one input (with [`check_journal_dir_bounded`]).
pub const RSS_GROWTH_BYTES_MAX: u64 = 256 << 20;
/// The target's schema: the change sets insert into `t`.
pub const TARGET_SCHEMA: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);";
/// The stall threshold of the statuses.
const STALLED_AFTER: Duration = Duration::from_secs(3600);
/// The recovery modes, in the order they are tried.
const MODES: [RecoveryMode; 3] = [
    RecoveryMode::AbsoluteConsistency,
    RecoveryMode::TolerateTornTail,
    RecoveryMode::Salvage,
];

/// True if the replayer applies this change set to the target (rather than quarantining it).
fn applies(r: &Record) -> bool {
    r.kind == KIND_CHANGESET
        && decode_event::<ChangeSet>(&r.payload)
            .is_ok_and(|(_, cs)| !cs.is_empty() && cs.mutations.iter().all(|m| m.table() == "t"))
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// What an input exercised (for the seed tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Which modes opened the journal (`AbsoluteConsistency`, `TolerateTornTail`, `Salvage`).
    pub opened: [bool; 3],
    /// Records the offline reader read.
    pub offline_records: usize,
    /// The offline reader stopped at damage.
    pub offline_damage: bool,
    /// `offline_status` succeeded on the closed journal.
    pub status_ok: bool,
    /// `inspect` succeeded and found no damage.
    pub verified_clean: bool,
    /// The entries the sync applied and quarantined.
    pub applied: u64,
    /// See `applied`.
    pub quarantined: u64,
    /// Every open was refused because of an unsafe entry.
    pub unsafe_refused: bool,
    /// The case was clean (and opened as such).
    pub clean: bool,
}

/// Where the worker is, for the watchdog.
#[derive(Debug, Default)]
struct Progress {
    call: &'static str,
    dirs: Vec<PathBuf>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn at(p: &Mutex<Progress>, call: &'static str) {
    lock(p).call = call;
}

/// Errors that say the machine failed, not the files: never the answer to a hostile file.
fn operational(e: &Error) -> bool {
    matches!(
        e,
        Error::Journal(JournalError::Io { .. })
            | Error::Journal(JournalError::DiskFull { .. })
            | Error::Journal(JournalError::Locked { .. })
            | Error::Journal(JournalError::Poisoned { .. })
            | Error::InvalidOption { .. }
    )
}

#[track_caller]
fn specific<T>(call: &str, r: &syncjournal::Result<T>) {
    if let Err(e) = r {
        assert!(
            !operational(e),
            "{call} failed with an operational error on hostile files: {e}"
        );
    }
}

/// The LSNs records stand for (a gap record for every LSN it names).
fn covered(r: &Record) -> std::ops::Range<Lsn> {
    r.gap().unwrap_or(r.lsn..r.lsn + 1)
}

/// What the read-only paths found.
struct Offline {
    first: Option<Lsn>,
    /// The records the offline reader read from the first retained one, and the error it
    /// stopped at.
    read: Option<(Vec<Record>, Option<Error>)>,
    inspection: syncjournal::Result<Inspection>,
}

/// The `journal_dir` target, without the memory bound (the corpus replay under `cargo test`,
/// where other tests run beside it).
pub fn check_journal_dir(data: &[u8]) {
    run_journal_dir(data, None);
}

/// The `journal_dir` target with the memory bound [`RSS_GROWTH_BYTES_MAX`] (the libFuzzer
/// target: one input at a time in the process).
pub fn check_journal_dir_bounded(data: &[u8]) {
    run_journal_dir(data, Some(RSS_GROWTH_BYTES_MAX));
}

/// Runs every check of the target on `data`; with `rss_growth_max`, also bounds the growth
/// of the process's peak RSS. Returns what the input exercised.
pub fn run_journal_dir(data: &[u8], rss_growth_max: Option<u64>) -> DirStats {
    let plan = Arc::new(DirCase::decode(data).plan());
    let progress = Arc::new(Mutex::new(Progress::default()));
    let rss_base = rss_growth_max.and_then(|_| reset_peak_rss());
    let (tx, rx) = mpsc::channel();
    let worker = {
        let (plan, progress) = (Arc::clone(&plan), Arc::clone(&progress));
        std::thread::Builder::new()
            .name("journal_dir".into())
            .spawn(move || {
                let stats = run_plan(&plan, &progress);
                let _ = tx.send(());
                stats
            })
            .expect("spawn the worker")
    };
    if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(CALLS_TIME_MAX) {
        let (call, dirs) = {
            let p = lock(&progress);
            (p.call, p.dirs.clone())
        };
        for d in &dirs {
            unblock_fifos(d);
        }
        panic!(
            "`{call}` did not return within {} s on a hostile journal directory",
            CALLS_TIME_MAX.as_secs()
        );
    }
    let stats = match worker.join() {
        Ok(s) => s,
        Err(p) => std::panic::resume_unwind(p),
    };
    if let (Some(max), Some(base)) = (rss_growth_max, rss_base)
        && let Some(peak) = peak_rss_bytes()
    {
        assert!(
            peak.saturating_sub(base) <= max,
            "peak RSS grew by {} MiB on one input (limit {} MiB): memory follows a claim on disk",
            (peak - base) >> 20,
            max >> 20
        );
    }
    stats
}

/// Resets the process's peak RSS to its current RSS; returns it (`None` if not supported).
fn reset_peak_rss() -> Option<u64> {
    fs::write("/proc/self/clear_refs", "5").ok()?;
    peak_rss_bytes()
}

fn peak_rss_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

fn run_plan(plan: &Plan, progress: &Mutex<Progress>) -> DirStats {
    let mut stats = DirStats::default();
    let copy = materialize(plan);
    lock(progress).dirs.push(copy.dir.clone());
    let outside_before = snapshot(&copy.outside());
    let before = snapshot(&copy.dir);
    let offline = read_only_paths(plan, &copy.dir, progress, &mut stats);
    assert_eq!(
        snapshot(&copy.dir),
        before,
        "a read-only path (dump, verify, status) changed the journal directory"
    );
    assert_eq!(
        snapshot(&copy.outside()),
        outside_before,
        "a read-only path changed a file outside the journal directory"
    );
    drop(copy);

    let mut synced = false;
    let mut refused = 0;
    for (i, mode) in MODES.into_iter().enumerate() {
        if mode == RecoveryMode::Salvage && !plan.salvage_safe {
            continue;
        }
        let copy = materialize(plan);
        lock(progress).dirs.push(copy.dir.clone());
        let before = snapshot(&copy.dir);
        at(progress, "Journal::open");
        let opened = Journal::open(&copy.dir, options(mode));
        specific(&format!("Journal::open ({mode:?})"), &opened);
        match opened {
            Ok(journal) => {
                assert!(
                    plan.unsafe_name.is_none(),
                    "{mode:?}: the journal opened although {:?} is a link or not of its type",
                    plan.unsafe_name
                );
                stats.opened[i] = true;
                check_opened(
                    plan,
                    &copy,
                    mode,
                    journal,
                    &offline,
                    &mut synced,
                    progress,
                    &mut stats,
                );
            }
            Err(e) => {
                if let Some(name) = &plan.unsafe_name {
                    assert!(
                        matches!(e, Error::Journal(JournalError::UnsafeFile { .. })),
                        "{mode:?}: {name} is a link or not of its type, but open failed with: {e}"
                    );
                    refused += 1;
                }
                if let Some((records, _)) = &plan.expected {
                    panic!(
                        "{mode:?}: a clean journal of {} records does not open: {e}",
                        records.len()
                    );
                }
            }
        }
        let after = snapshot(&copy.dir);
        for name in &plan.foreign {
            assert_eq!(
                after.get(name),
                before.get(name),
                "{mode:?}: the foreign file {name:?} was removed or changed"
            );
        }
        assert_eq!(
            snapshot(&copy.outside()),
            outside_before,
            "{mode:?}: a file outside the journal directory was changed (through a link)"
        );
    }
    stats.unsafe_refused = plan.unsafe_name.is_some() && refused > 0;
    stats.clean = plan.expected.is_some();
    stats
}

fn options(mode: RecoveryMode) -> JournalOptions {
    JournalOptions::new()
        .recovery_mode(mode)
        .create_if_missing(false)
        .segment_bytes_max(FUZZ_SEGMENT_BYTES as u64)
}

/// `dump`, `verify` and `status` of the closed journal, and how they must agree.
fn read_only_paths(
    plan: &Plan,
    dir: &Path,
    progress: &Mutex<Progress>,
    stats: &mut DirStats,
) -> Offline {
    at(progress, "journal_id_of");
    let id = journal_id_of(dir);
    specific("journal_id_of", &id);
    at(progress, "owner_of");
    let owner = owner_of(dir);
    specific("owner_of", &owner);
    if let Ok(o) = owner {
        assert_eq!(
            o, None,
            "owner_of names a holder of a journal nobody has open"
        );
    }
    let mut first = None;
    let mut read = None;
    if let Ok(id) = id {
        at(progress, "first_retained");
        let f = first_retained(dir, id);
        specific("first_retained", &f);
        if let Ok(f) = f {
            first = Some(f);
            at(progress, "OfflineReader");
            read = offline_read(dir, f);
        }
    }
    if let Some((records, err)) = &read {
        stats.offline_records = records.len();
        stats.offline_damage = err.is_some();
    }
    at(progress, "inspect");
    let inspection = inspect(dir);
    specific("inspect", &inspection);
    at(progress, "offline_status");
    let status = offline_status(dir, None, STALLED_AFTER);
    specific("offline_status", &status);
    if let Some(name) = &plan.unsafe_name {
        assert!(
            inspection.is_err() && status.is_err() && read.is_none(),
            "{name} is a link or not of its type, yet verify or status read the journal"
        );
    }
    let offline = Offline {
        first,
        read,
        inspection,
    };
    if let Ok(st) = &status {
        stats.status_ok = true;
        check_closed_status(plan, st, &offline);
    }
    if let Ok(ins) = &offline.inspection {
        stats.verified_clean = ins.is_clean();
        check_inspection(ins, &offline);
    }
    if let Some((records, _)) = &plan.expected {
        match &offline.read {
            Some((got, None)) => assert_eq!(got, records, "dump of a clean journal"),
            other => panic!(
                "dump of a clean journal failed: {:?}",
                other
                    .as_ref()
                    .map(|(r, e)| (r.len(), e.as_ref().map(|e| e.to_string())))
            ),
        }
        assert!(
            offline.inspection.as_ref().is_ok_and(|i| i.is_clean()),
            "verify of a clean journal: {:?}",
            offline
                .inspection
                .as_ref()
                .map(|i| &i.damage)
                .map_err(|e| e.to_string())
        );
    }
    offline
}

/// Reads everything from `first` with the offline reader (as `dump` does, decoding every
/// change set and formatting its mutations); checks the LSNs. `None` if it could not start.
fn offline_read(dir: &Path, first: Lsn) -> Option<(Vec<Record>, Option<Error>)> {
    let reader = OfflineReader::open(dir, first, Until::End);
    specific("OfflineReader::open", &reader);
    let mut reader = reader.ok()?;
    let mut records: Vec<Record> = Vec::new();
    let mut expect = first;
    let err = loop {
        match reader.next_record() {
            Ok(Some(r)) => {
                assert_eq!(r.lsn, expect, "the offline reader skipped or repeated LSNs");
                let c = covered(&r);
                assert!(
                    c.end > c.start,
                    "the offline reader returned an empty gap record"
                );
                expect = c.end;
                if r.kind == KIND_CHANGESET
                    && let Ok((_, cs)) = decode_event::<ChangeSet>(&r.payload)
                {
                    for m in &cs.mutations {
                        let _ = m.to_string();
                    }
                }
                records.push(r);
                assert!(
                    records.len() <= MAX_RECORDS_READ,
                    "the offline reader does not stop"
                );
            }
            Ok(None) => break None,
            Err(e) => {
                assert!(
                    !operational(&e),
                    "the offline reader failed with an operational error: {e}"
                );
                break Some(e);
            }
        }
    };
    Some((records, err))
}

fn last_lsn(records: &[Record], first: Lsn) -> Lsn {
    records.last().map_or(first - 1, |r| covered(r).end - 1)
}

/// The closed journal's status against what the reader read and what `ACK` says.
fn check_closed_status(plan: &Plan, st: &OfflineStatus, offline: &Offline) {
    let s = &st.status;
    assert_eq!(
        s.target_lsn, None,
        "status names a target watermark it did not read"
    );
    assert_eq!(st.owner, None, "status names an owner of a closed journal");
    let ack = match plan.entries.get(&OsString::from(ACK_FILE)) {
        Some(Entry::File { bytes, .. }) => Some(decode_ack_file(bytes).map(|a| a.acked_lsn)),
        Some(Entry::HardLink(o)) => Some(decode_ack_file(&plan.outside[o]).map(|a| a.acked_lsn)),
        _ => None,
    };
    match ack {
        None => assert_eq!(s.acked_lsn, 0, "status acknowledges without an ACK file"),
        Some(Ok(acked)) => assert_eq!(s.acked_lsn, acked, "status and ACK disagree"),
        Some(Err(_)) => panic!("status read a damaged ACK as acknowledging {}", s.acked_lsn),
    }
    let (Some((records, err)), Some(first)) = (&offline.read, offline.first) else {
        return;
    };
    let last = last_lsn(records, first);
    if !records.is_empty() {
        assert!(
            s.head_lsn >= last,
            "status says head {} but LSN {last} was read",
            s.head_lsn
        );
    }
    let beyond: Vec<&Record> = records.iter().filter(|r| r.lsn > s.acked_lsn).collect();
    let pending: u64 = beyond
        .iter()
        .map(|r| covered(r).end - covered(r).start.max(s.acked_lsn + 1))
        .sum();
    let bytes: u64 = beyond
        .iter()
        .map(|r| frame_bytes(r.payload.len()) as u64)
        .sum();
    assert!(
        s.pending_entries >= pending,
        "status says {} pending, but {pending} entries after the acknowledgement were read",
        s.pending_entries
    );
    assert!(
        s.pending_bytes >= bytes,
        "status says {} bytes pending, but {bytes} were read after the acknowledgement",
        s.pending_bytes
    );
    // Known bug (see `avoid_known_bugs`): the reader and verify do not check that the first
    // retained segment starts at most one past the acknowledgement.
    let removed_beyond_ack = ack.is_some() && first > s.acked_lsn.saturating_add(1);
    if err.is_none() && !(avoid_known_bugs() && removed_beyond_ack) {
        assert_eq!(
            st.journal_error, None,
            "status reports damage the reader did not find"
        );
        assert_eq!(s.head_lsn, last, "status of an undamaged journal: head");
        assert_eq!(
            s.pending_bytes, bytes,
            "status of an undamaged journal: pending bytes"
        );
    }
    if st.journal_error.is_none() {
        assert!(
            s.acked_lsn <= s.head_lsn,
            "status shows acknowledged LSN {} beyond the head {} without naming damage",
            s.acked_lsn,
            s.head_lsn
        );
    }
}

/// `verify` against the offline reader.
fn check_inspection(ins: &Inspection, offline: &Offline) {
    if let Some(first) = offline.first {
        assert_eq!(ins.first_lsn, first, "verify and first_retained disagree");
    }
    let Some((records, err)) = &offline.read else {
        return;
    };
    let first = offline.first.unwrap_or(1);
    let last = last_lsn(records, first);
    if err.is_none() {
        // The reader starts at the segment holding the first retained LSN: an earlier segment
        // without records (which holds no LSN) is not read, and damage in it is verify's only.
        let last_seg = ins.segments.last().map(|s| s.path.clone());
        let read_by_dump = |d: &&syncjournal::inspect::Damage| {
            Some(&d.segment) == last_seg.as_ref()
                || ins
                    .segments
                    .iter()
                    .any(|s| s.path == d.segment && s.records > 0)
        };
        let missed: Vec<_> = ins.damage.iter().filter(read_by_dump).collect();
        assert!(
            missed.is_empty(),
            "verify finds damage the reader did not: {missed:?}"
        );
        assert_eq!(
            ins.next_lsn,
            last + 1,
            "verify and dump disagree on the head"
        );
        let data = records.iter().filter(|r| r.gap().is_none()).count() as u64;
        assert_eq!(ins.records, data, "verify and dump disagree on the records");
    } else {
        assert!(
            ins.next_lsn > last,
            "verify ends before a record the reader read"
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn check_opened(
    plan: &Plan,
    copy: &Copy,
    mode: RecoveryMode,
    journal: Journal,
    offline: &Offline,
    synced: &mut bool,
    progress: &Mutex<Progress>,
    stats: &mut DirStats,
) {
    let dir = &copy.dir;
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
    at(progress, "Journal::reader");
    let records = read_all(&journal, mode);
    check_lsn_sequence(&records, state.first_lsn, state.next_lsn, mode);
    if let Some((read, err)) = &offline.read {
        assert!(
            records.len() >= read.len() && records[..read.len()] == read[..],
            "{mode:?}: records the offline reader read before any damage were lost by recovery"
        );
        if mode == RecoveryMode::AbsoluteConsistency {
            assert!(
                err.is_none(),
                "AbsoluteConsistency opens what the reader found damaged: {err:?}"
            );
            assert_eq!(
                &records, read,
                "AbsoluteConsistency and dump read different records"
            );
        }
    }
    if mode == RecoveryMode::AbsoluteConsistency {
        match &offline.inspection {
            Ok(ins) => {
                assert!(
                    ins.is_clean(),
                    "AbsoluteConsistency opens what verify found damaged"
                );
                assert_eq!(
                    ins.next_lsn, state.next_lsn,
                    "verify and open disagree on the head"
                );
                assert_eq!(
                    ins.records, report.records,
                    "verify and open disagree on the records"
                );
            }
            Err(e) => panic!("AbsoluteConsistency opens what verify refuses: {e}"),
        }
    }
    if let Some((want, next)) = &plan.expected {
        assert_eq!(
            &records, want,
            "{mode:?}: a clean journal reads back different records"
        );
        assert_eq!(
            state.next_lsn, *next,
            "{mode:?}: next LSN of a clean journal"
        );
    }

    // The status of the owned journal.
    at(progress, "offline_status (owned)");
    let st = offline_status(dir, None, STALLED_AFTER)
        .unwrap_or_else(|e| panic!("{mode:?}: status of an open journal failed: {e}"));
    assert_eq!(
        st.owner,
        Some(Some(std::process::id())),
        "status of an owned journal: owner"
    );
    assert!(
        st.status.head_lsn <= journal.durable_lsn(),
        "status says head {} beyond the owner's durable LSN {}",
        st.status.head_lsn,
        journal.durable_lsn()
    );
    assert_eq!(
        st.status.acked_lsn, state.acked_lsn,
        "status and the owner disagree on ACK"
    );

    let journal = Arc::new(journal);
    let mut target = None;
    if !*synced {
        *synced = true;
        target = Some(sync_once(copy, mode, &journal, &records, progress, stats));
    }
    let journal = Arc::try_unwrap(journal).expect("the replayer is gone");
    at(progress, "Journal::close");
    journal
        .close()
        .unwrap_or_else(|e| panic!("{mode:?}: close after recovery failed: {e}"));

    if let Some((path, Some(w))) = &target {
        at(progress, "offline_status (target)");
        let st = offline_status(dir, Some(path), STALLED_AFTER)
            .unwrap_or_else(|e| panic!("{mode:?}: status with the target failed: {e}"));
        let s = &st.status;
        assert_eq!(
            s.target_lsn,
            Some(*w),
            "status misreads the target's watermark"
        );
        assert!(
            s.head_lsn >= last_lsn(&records, state.first_lsn),
            "status head after sync"
        );
        let pending: u64 = records
            .iter()
            .filter(|r| covered(r).end > w + 1)
            .map(|r| covered(r).end - covered(r).start.max(w + 1))
            .sum();
        assert!(
            s.pending_entries >= pending,
            "status says {} pending against the target, {pending} entries after its watermark exist",
            s.pending_entries
        );
    }

    // Recovery leaves a clean journal.
    at(progress, "Journal::open (reopen)");
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
        read_all(&again, mode),
        records,
        "reopen after {mode:?}: records differ"
    );
    at(progress, "Journal::close (reopen)");
    drop(again);
}

/// One `sync --quarantine` pass to a fresh target: the watermark covers only change sets and
/// gap records up to the durable head; the counts and the target's rows match the entries
/// under it. Returns the target and its watermark.
fn sync_once(
    copy: &Copy,
    mode: RecoveryMode,
    journal: &Arc<Journal>,
    records: &[Record],
    progress: &Mutex<Progress>,
    stats: &mut DirStats,
) -> (PathBuf, Option<Lsn>) {
    let target = copy.root.path().join("target.db");
    let topts = TargetOptions::new()
        .create_if_missing(true)
        .create_schema(TARGET_SCHEMA);
    let ropts = ReplayOptions::new()
        .reject_policy(RejectPolicy::Quarantine)
        .retry_attempts_max(0)
        .retry_delay_ms(0)
        .retry_delay_max_ms(0);
    let acked_before = journal.state().acked_lsn;
    at(progress, "Replayer::sync_now");
    let mut replayer: Replayer = Replayer::new(Arc::clone(journal), &target, topts, ropts);
    let rep = replayer.sync_now();
    drop(replayer);
    if let Some(e) = &rep.error {
        assert!(
            !operational(e),
            "{mode:?}: sync failed with an operational error: {e}"
        );
    }
    let durable = journal.durable_lsn();
    let Some(w) = rep.target_lsn else {
        assert_eq!(
            rep.applied + rep.quarantined,
            0,
            "sync counts entries on an unread target"
        );
        return (target, None);
    };
    assert!(
        w <= durable,
        "sync moved the watermark to {w}, beyond the durable LSN {durable}"
    );
    let (mut applied, mut quarantined) = (0, 0);
    for r in records.iter().filter(|r| r.lsn <= w) {
        if r.gap().is_some() {
            quarantined += 1;
        } else if r.kind == KIND_CHANGESET {
            if applies(r) {
                applied += 1;
            } else {
                quarantined += 1;
            }
        } else {
            panic!(
                "the watermark {w} covers LSN {}, of kind {:#04x}, which sync cannot apply",
                r.lsn, r.kind
            );
        }
    }
    assert_eq!(
        rep.applied, applied,
        "sync reports {} applied, {applied} entries applied under its watermark",
        rep.applied
    );
    assert_eq!(
        rep.quarantined, quarantined,
        "sync reports {} quarantined, {quarantined} entries quarantined under its watermark",
        rep.quarantined
    );
    if rep.error.is_none() {
        assert_eq!(
            w, durable,
            "a sync without error stopped before the durable LSN"
        );
    }
    let rows: i64 =
        rusqlite::Connection::open_with_flags(&target, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)))
            .unwrap_or_else(|e| panic!("read the target: {e}"));
    assert_eq!(
        rows as u64, applied,
        "the target holds {rows} rows, {applied} entries were applied"
    );
    assert!(
        journal.state().acked_lsn <= w.max(acked_before),
        "the journal is acknowledged beyond the target's watermark"
    );
    stats.applied = rep.applied;
    stats.quarantined = rep.quarantined;
    (target, Some(w))
}
