//! The `journal_model` target: a model check of the journal and the replayer.
//!
//! The input is a small program ([`ModelCase`]): a configuration byte, then up to [`MAX_OPS`]
//! operations ([`Op`]) run against a real [`Journal`] (64 KiB segments, on `/dev/shm`), a
//! [`Replayer`] to an SQLite target file next to it, and a reference model ([`Model`]) of what
//! the journal must hold. Operations: single appends (`append_kind`, or `write` without
//! waiting) and batches of several kinds and sizes (valid, empty, too large, reserved kinds,
//! payloads the replayer must refuse), `sync`, `ack`, close or crash and reopen (in every
//! persist and recovery mode), I/O errors injected through a logging [`FaultPlan`]
//! (`SyncData`, `Allocate`, `SyncDir`, `WriteAck`, `RemoveSegment`; EIO or ENOSPC), a power
//! loss that drops sectors written after the last sync, and replays with statement or
//! after-commit faults injected into the target's transactions ([`TargetFaults`]).
//!
//! The model's rules (every one is an assertion below):
//!
//! * **Appends.** A call returns the next LSNs, contiguous; a refused call (reserved kind,
//!   empty or oversized payload, batch larger than a segment) changes nothing. A record that
//!   does not fit in the active segment first rotates: the seal makes everything written
//!   durable; a failed segment creation (`Allocate`, `SyncDir`, `SyncData` of the new file) is
//!   `DiskFull` exactly when the failed operation reported ENOSPC, otherwise `Io`; it does not
//!   poison the journal and writes nothing.
//! * **Durability.** The durable LSN is exactly: unchanged by a buffered append that does not
//!   rotate; everything written before the call after a rotation; the call's last LSN after a
//!   successful append in `Sync` mode or a successful `sync()`. It never covers a record whose
//!   sync failed. Readers return exactly the durable records.
//! * **Poisoning.** The journal is poisoned exactly when a data sync of a segment (`SyncData`
//!   on a `.sjl` file) or an acknowledgement write (`WriteAck` on `ACK`) failed; from then on
//!   every call fails with `Poisoned`, and nothing more becomes durable.
//! * **Acknowledgement and retention.** `ack(n)` beyond the durable LSN is refused; at or
//!   below the current acknowledgement it does nothing; otherwise it is recorded, then every
//!   sealed segment whose records are all acknowledged (beyond `retain_acked_segments`) is
//!   removed, oldest first (fewer only if a removal failed). A failed `ACK` write poisons; the
//!   reopened journal then has the old or the new acknowledgement.
//! * **Reopen.** A close, or a crash (the journal dropped; a process crash keeps the page
//!   cache), then `open` in any recovery mode: recovery repairs nothing (nothing was damaged),
//!   and the journal holds every durable record and — unless a sync failed (poisoned) — every
//!   written one. After a poisoning failure, records not acknowledged durable (written but not
//!   synced, or whose append failed) may or may not be kept, but those kept are a contiguous
//!   continuation with the right kinds and payloads; the next append continues after them.
//!   An `open` with faults still armed fails only with an operational error (`Io`,
//!   `DiskFull`), never reports corruption, and a clean `open` afterwards succeeds.
//! * **Power loss.** All syncs fail, the journal is dropped, and sectors (512 B) written after
//!   the durable point of the active segment are lost (zeroed) as the input chooses. Reopened:
//!   exactly the records before the first changed byte are kept; damage is only ever a torn
//!   tail (records never claim durability that was not real), cut by `TolerateTornTail` and
//!   `Salvage`, refused by `AbsoluteConsistency` unless the loss left a clean end.
//! * **Exactly once.** Each entry's effect on the target is non-idempotent: a good event
//!   ([`FzEvent`]) appends a log row with its unique tag and increments a counter; every other
//!   record (raw kinds, undecodable payloads, events that refuse to apply) is refused by the
//!   target. After every replay the target holds exactly the fold of entries `1..=W` (`W` its
//!   watermark): the log rows of the good events in LSN order, the counters, and the refused
//!   LSNs in quarantine; `W` never exceeds the durable LSN, never goes back, and the report's
//!   `applied` is exactly how far it moved. A replay with no fault and nothing refused under
//!   `Stop` catches up to the durable LSN; under `Stop` it stops right before the first
//!   refused entry; a target behind the first retained record gets `ReplayGap`. The journal's
//!   acknowledgement never passes `W` through replay, and equals it after a clean sync.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use syncjournal::error::{JournalError, TargetError};

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};
use syncjournal::event::encode_event;
use syncjournal::fault::{FaultInjector, FaultPlan, IoOp};
use syncjournal::format::frame_bytes;
use syncjournal::replay::TargetFaults;
use syncjournal::segment::segment_file_name;
use syncjournal::{
    ApplyContext, ApplyError, Error, Journal, JournalEvent, JournalOptions, KIND_DATA, Lsn,
    PersistMode, RecoveryMode, RejectPolicy, ReplayOptions, Replayer, SyncReport, TargetOptions,
};

use crate::checks::common::{Bytes, fresh_dir};

/// Segment size of the model's journals (the smallest the format allows).
pub const MODEL_SEGMENT_BYTES: u64 = 65536;
/// Record space of one segment.
const RECORD_SPACE: usize = MODEL_SEGMENT_BYTES as usize - 4096;
/// Most operations run per input.
pub const MAX_OPS: usize = 40;
/// Most records in one batch.
pub const MAX_BATCH: usize = 8;
/// The record kind of [`FzEvent`].
pub const EVENT_KIND: u8 = 0x40;
/// Another application kind, whose records the replayer refuses (it knows only `EVENT_KIND`).
pub const RAW_KIND: u8 = 0x22;
/// Payload sizes (or event padding sizes) an operation chooses from. The last two are the
/// largest payload of a 64 KiB segment and one byte more.
pub const SIZES: [usize; 16] = [
    0, 1, 5, 8, 13, 40, 100, 333, 1000, 2500, 6000, 12000, 20000, 30000, 61408, 61409,
];
/// Counters the events increment.
const COUNTERS: u8 = 5;
/// Sector size of the simulated power loss.
const SECTOR: usize = 512;
const EIO: i32 = 5;
const ENOSPC: i32 = 28;
/// `created_at_ms` of every event payload (deterministic inputs).
const CREATED_AT: u64 = 1_700_000_000_000;

/// The target's schema: a log of applications (no key: a duplicate shows as a second row) and
/// counters.
pub const TARGET_SCHEMA: &str = "
CREATE TABLE fz_log (tag INTEGER NOT NULL, counter INTEGER NOT NULL);
CREATE TABLE fz_counters (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The event
// ---------------------------------------------------------------------------------------------

/// The model's journal event: NON-IDEMPOTENT (each application adds a log row and increments a
/// counter), or refused by the target when `reject` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FzEvent {
    /// Unique per record of an input.
    pub tag: u64,
    /// The counter incremented (`0..COUNTERS`).
    pub counter: u8,
    /// The target refuses the event (permanently).
    pub reject: bool,
    /// Padding, to vary the payload size.
    pub pad: Vec<u8>,
}

impl JournalEvent for FzEvent {
    const KIND: u8 = EVENT_KIND;

    fn apply(&self, db: &mut ApplyContext<'_>) -> Result<(), ApplyError> {
        if self.reject {
            return Err(ApplyError::permanent(format!(
                "event {} refuses to apply",
                self.tag
            )));
        }
        db.conn().execute(
            "INSERT INTO fz_log (tag, counter) VALUES (?1, ?2)",
            (self.tag as i64, i64::from(self.counter)),
        )?;
        db.conn().execute(
            "INSERT INTO fz_counters (id, n) VALUES (?1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1",
            [i64::from(self.counter)],
        )?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("model event {}", self.tag)
    }
}

// ---------------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------------

/// One operation. Every field is a raw byte (or word) interpreted when it runs, so that every
/// input decodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// One record. `kind % 8`: 0–2 a good event, 3 an event the target refuses, 4 `KIND_DATA`
    /// raw bytes, 5 an undecodable payload of the event kind, 6 raw bytes of another
    /// application kind, 7 a reserved kind (0 or `0xF0..`, refused by the journal). `size`:
    /// `SIZES[size % 16]` (payload bytes, or event padding). `flags & 1`: `write` (no wait for
    /// durability) instead of `append_kind`.
    Append {
        /// Kind selector.
        kind: u8,
        /// Size selector.
        size: u8,
        /// Payload pattern (and the event's counter).
        fill: u8,
        /// Bit 0: do not wait for durability.
        flags: u8,
    },
    /// `append_batch_kind` of `sizes.len() % 9` records of one kind (selector as for `Append`).
    Batch {
        /// Kind selector.
        kind: u8,
        /// Payload pattern.
        fill: u8,
        /// Size selectors, one per record.
        sizes: Vec<u8>,
    },
    /// `sync()`.
    Sync,
    /// `ack(n)`; `sel % 4`: 0 `durable − delta % 8`, 1 `durable + 1 + delta % 4` (refused),
    /// 2 the target's watermark, 3 `acked − delta % 4` (no-op).
    Ack {
        /// Selector.
        sel: u8,
        /// Operand.
        delta: u8,
    },
    /// Close (`flags & 1 == 0`) or crash (drop), then open. `flags & 2`: keep the armed faults
    /// for the open. `mode & 1`: `Buffered` (else `Sync`); `(mode >> 1) % 3`: recovery mode.
    Reopen {
        /// Crash, keep faults.
        flags: u8,
        /// Persist and recovery mode of the new open.
        mode: u8,
    },
    /// Arms `FaultPlan::fail(op, skip % 4, times, errno)`: `op % 5` SyncData, Allocate,
    /// SyncDir, WriteAck, RemoveSegment; `times % 4`: 0 every later call, else that many;
    /// `errno % 2`: ENOSPC, else EIO.
    Fault {
        /// Operation selector.
        op: u8,
        /// Successful calls first.
        skip: u8,
        /// How many calls fail.
        times: u8,
        /// Error selector.
        errno: u8,
    },
    /// Removes every armed fault.
    ClearFaults,
    /// `sync_now()` of the replayer. `flags & 1`: policy `Stop` (else `Quarantine`); `flags &
    /// 2`: a new replayer (also when the policy changes). `batch % 8 + 1` entries per
    /// transaction, `retries % 4` retries. `fault % 4`: 0 none, 1 fail statement `index % 20`
    /// of transactions from the `txn % 3`-th on, `times % 4` times (0: always), with SQLITE_IOERR,
    /// SQLITE_BUSY or (not for the event itself) SQLITE_ERROR (`times / 4 % 3`); 2 an in-doubt
    /// commit (`after_commit` fails) `times % 3 + 1` times; 3 both.
    Replay {
        /// Policy and freshness.
        flags: u8,
        /// Batch size selector.
        batch: u8,
        /// Retry selector.
        retries: u8,
        /// Fault selector.
        fault: u8,
        /// First faulty transaction.
        txn: u8,
        /// Faulty statement.
        index: u8,
        /// Times and code.
        times: u8,
    },
    /// Power loss: every sync fails, the journal is dropped, and the sectors of the active
    /// segment written after its durable point whose bit (sector index `% 64`) is set in `lost`
    /// are zeroed; reopened in recovery mode `mode % 3`.
    PowerLoss {
        /// Lost sectors.
        lost: u64,
        /// Recovery mode selector.
        mode: u8,
    },
}

impl Op {
    fn decode(b: &mut Bytes<'_>) -> Self {
        match b.u8() % 10 {
            0 | 9 => Op::Append {
                kind: b.u8(),
                size: b.u8(),
                fill: b.u8(),
                flags: b.u8(),
            },
            1 => {
                let kind = b.u8();
                let fill = b.u8();
                let n = usize::from(b.u8()) % (MAX_BATCH + 1);
                Op::Batch {
                    kind,
                    fill,
                    sizes: (0..n).map(|_| b.u8()).collect(),
                }
            }
            2 => Op::Sync,
            3 => Op::Ack {
                sel: b.u8(),
                delta: b.u8(),
            },
            4 => Op::Reopen {
                flags: b.u8(),
                mode: b.u8(),
            },
            5 => Op::Fault {
                op: b.u8(),
                skip: b.u8(),
                times: b.u8(),
                errno: b.u8(),
            },
            6 => Op::ClearFaults,
            7 => Op::Replay {
                flags: b.u8(),
                batch: b.u8(),
                retries: b.u8(),
                fault: b.u8(),
                txn: b.u8(),
                index: b.u8(),
                times: b.u8(),
            },
            _ => Op::PowerLoss {
                lost: b.u64(),
                mode: b.u8(),
            },
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Op::Append {
                kind,
                size,
                fill,
                flags,
            } => out.extend_from_slice(&[0, *kind, *size, *fill, *flags]),
            Op::Batch { kind, fill, sizes } => {
                let n = sizes.len().min(MAX_BATCH);
                out.extend_from_slice(&[1, *kind, *fill, n as u8]);
                out.extend_from_slice(&sizes[..n]);
            }
            Op::Sync => out.push(2),
            Op::Ack { sel, delta } => out.extend_from_slice(&[3, *sel, *delta]),
            Op::Reopen { flags, mode } => out.extend_from_slice(&[4, *flags, *mode]),
            Op::Fault {
                op,
                skip,
                times,
                errno,
            } => out.extend_from_slice(&[5, *op, *skip, *times, *errno]),
            Op::ClearFaults => out.push(6),
            Op::Replay {
                flags,
                batch,
                retries,
                fault,
                txn,
                index,
                times,
            } => {
                out.extend_from_slice(&[7, *flags, *batch, *retries, *fault, *txn, *index, *times])
            }
            Op::PowerLoss { lost, mode } => {
                out.push(8);
                out.extend_from_slice(&lost.to_le_bytes());
                out.push(*mode);
            }
        }
    }
}

/// An input of the `journal_model` target: `config & 1` → `Buffered` (else `Sync`),
/// `(config >> 1) % 3` → `retain_acked_segments`; then the operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCase {
    /// Initial options.
    pub config: u8,
    /// The program.
    pub ops: Vec<Op>,
}

impl ModelCase {
    /// Reads a case (at most `MAX_OPS` operations).
    pub fn decode(data: &[u8]) -> Self {
        let mut b = Bytes::new(data);
        let config = b.u8();
        let mut ops = Vec::new();
        while !b.is_empty() && ops.len() < MAX_OPS {
            ops.push(Op::decode(&mut b));
        }
        ModelCase { config, ops }
    }

    /// Writes the case in the format [`ModelCase::decode`] reads.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.config];
        for op in self.ops.iter().take(MAX_OPS) {
            op.encode(&mut out);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Fault seams
// ---------------------------------------------------------------------------------------------

/// One I/O operation that went through the fault seam.
#[derive(Debug, Clone)]
pub struct IoEvent {
    /// The operation.
    pub op: IoOp,
    /// The file or directory.
    pub path: PathBuf,
    /// The injected errno, if it failed.
    pub errno: Option<i32>,
}

impl IoEvent {
    /// A failure that must poison the journal: a data sync of a segment, or an acknowledgement
    /// write (the first creation of `ACK` goes through `ACK.tmp`, and a new segment's sync
    /// through `<seq>.sjl.tmp`; neither poisons).
    fn poisons(&self) -> bool {
        self.errno.is_some()
            && match self.op {
                IoOp::SyncData => self.path.extension().is_some_and(|x| x == "sjl"),
                IoOp::WriteAck => self.path.file_name().is_some_and(|n| n == "ACK"),
                _ => false,
            }
    }
}

/// A [`FaultPlan`] that logs every operation it sees.
#[derive(Debug, Default)]
pub struct LoggedFaults {
    plan: FaultPlan,
    log: Mutex<Vec<IoEvent>>,
}

impl FaultInjector for LoggedFaults {
    fn check(&self, op: IoOp, path: &Path) -> std::io::Result<()> {
        let r = self.plan.check(op, path);
        lock(&self.log).push(IoEvent {
            op,
            path: path.to_path_buf(),
            errno: r.as_ref().err().and_then(|e| e.raw_os_error()),
        });
        r
    }
}

impl LoggedFaults {
    fn take_log(&self) -> Vec<IoEvent> {
        std::mem::take(&mut *lock(&self.log))
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct TargetPlan {
    /// Fail statement `index` of transactions from the `txn`-th on.
    statement: Option<(usize, usize)>,
    /// How many more statement failures (`None`: unlimited).
    remaining: Option<usize>,
    code: i32,
    /// How many more `after_commit` failures.
    commits: usize,
}

#[derive(Debug, Default)]
struct TargetFaultState {
    plan: Option<TargetPlan>,
    /// Transactions begun since the plan was armed.
    txns: usize,
    hits: usize,
    commit_hits: usize,
}

/// The target fault seam of the model: fails one statement position, and/or the after-commit
/// hook (an in-doubt commit that landed).
#[derive(Debug, Default)]
pub struct ModelTargetFaults {
    st: Mutex<TargetFaultState>,
}

impl ModelTargetFaults {
    fn arm(&self, plan: Option<TargetPlan>) {
        *lock(&self.st) = TargetFaultState {
            plan,
            ..TargetFaultState::default()
        };
    }

    /// Disarms; returns (statement failures, after-commit failures) injected.
    fn disarm(&self) -> (usize, usize) {
        let mut st = lock(&self.st);
        st.plan = None;
        (st.hits, st.commit_hits)
    }
}

fn sqlite_error(code: i32, what: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some(what))
}

impl TargetFaults for ModelTargetFaults {
    fn before_statement(&self, index: usize, label: &str) -> rusqlite::Result<()> {
        let mut st = lock(&self.st);
        if index == 0 {
            st.txns += 1;
        }
        let txn = st.txns.saturating_sub(1);
        let Some(plan) = st.plan.as_mut() else {
            return Ok(());
        };
        let Some((from, at)) = plan.statement else {
            return Ok(());
        };
        if index != at || txn < from || plan.remaining == Some(0) {
            return Ok(());
        }
        if let Some(n) = plan.remaining.as_mut() {
            *n -= 1;
        }
        // A permanent error inside the event would make the replayer quarantine a good
        // entry (the target refused it): keep event failures transient.
        let code = if label == "event" {
            rusqlite::ffi::SQLITE_IOERR
        } else {
            plan.code
        };
        st.hits += 1;
        Err(sqlite_error(
            code,
            format!("injected failure at statement {index} ({label}) of transaction {txn}"),
        ))
    }

    fn after_commit(&self) -> rusqlite::Result<()> {
        let mut st = lock(&self.st);
        match st.plan.as_mut() {
            Some(p) if p.commits > 0 => {
                p.commits -= 1;
                st.commit_hits += 1;
                Err(sqlite_error(
                    rusqlite::ffi::SQLITE_IOERR,
                    "injected in-doubt commit".into(),
                ))
            }
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// What applying an entry does to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// A log row with this tag, and an increment of this counter.
    Apply {
        /// The event's tag.
        tag: u64,
        /// The counter.
        counter: i64,
    },
    /// Refused: quarantined (or the replay stops before it).
    Reject,
    /// Of a kind the replayer does not apply: the replay stops before it whatever the policy
    /// (never quarantined: the target did not refuse it).
    Foreign,
}

/// A record the model knows of.
#[derive(Debug, Clone)]
pub struct MRec {
    /// Kind.
    pub kind: u8,
    /// Payload.
    pub payload: Vec<u8>,
    /// Effect on the target.
    pub effect: Effect,
}

/// A segment: its sequence number, first LSN and record bytes used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MSeg {
    /// Sequence number (file name).
    pub seq: u64,
    /// First LSN.
    pub first: Lsn,
    /// Bytes of frames in it.
    pub used: usize,
}

/// The reference model.
#[derive(Debug)]
pub struct Model {
    /// Every record from LSN 1 (`recs[lsn - 1]`), retired ones included (for the fold).
    pub recs: Vec<MRec>,
    /// Highest durable LSN.
    pub durable: Lsn,
    /// Highest acknowledged LSN.
    pub acked: Lsn,
    /// After a failed acknowledgement write: the highest value the `ACK` file may hold.
    pub ack_max: Lsn,
    /// A data sync or acknowledgement write failed since the last open.
    pub poisoned: bool,
    /// The retained segments; the last is the active one.
    pub segs: Vec<MSeg>,
    /// Persist mode of the open journal.
    pub persist: PersistMode,
    /// `retain_acked_segments`.
    pub retain: usize,
    /// The target's watermark, as last read.
    pub wm: Lsn,
    /// A segment file renamed into place by a rotation whose directory sync then failed: the
    /// rotation failed, but the (empty) file stays on disk, and the next open finds it.
    pub stale: Option<MSeg>,
}

impl Model {
    fn written(&self) -> Lsn {
        self.recs.len() as Lsn
    }

    fn active(&self) -> &MSeg {
        self.segs.last().expect("at least one segment")
    }

    fn free(&self) -> usize {
        RECORD_SPACE - self.active().used
    }

    fn fb(&self, lsn: Lsn) -> usize {
        frame_bytes(self.recs[lsn as usize - 1].payload.len())
    }

    /// Segments `retire()` removes now.
    fn retirable(&self) -> usize {
        let n = self.segs.len();
        let eligible = (0..n - 1)
            .take_while(|&i| self.segs[i + 1].first <= self.acked.saturating_add(1))
            .count();
        eligible.saturating_sub(self.retain)
    }

    /// Recomputes each segment's used bytes from the records (after records were dropped).
    fn recount(&mut self) {
        let n = self.segs.len();
        for i in 0..n {
            let end = if i + 1 < n {
                self.segs[i + 1].first
            } else {
                self.written() + 1
            };
            let first = self.segs[i].first;
            self.segs[i].used = (first..end).map(|l| self.fb(l)).sum();
        }
    }

    /// The first entry after `from` (up to `to`) the target refuses.
    /// The first entry in `(from, to]` that stops a replay under `policy`: a refused one
    /// (under `Stop`) or one of another kind (always).
    fn first_stop(&self, from: Lsn, to: Lsn, policy: RejectPolicy) -> Option<Lsn> {
        (from + 1..=to).find(|&l| match self.recs[l as usize - 1].effect {
            Effect::Reject => policy == RejectPolicy::Stop,
            Effect::Foreign => true,
            Effect::Apply { .. } => false,
        })
    }
}

/// The target's contents: watermark, log rows, counters, quarantined LSNs.
#[derive(Debug, Default, PartialEq, Eq)]
struct TargetView {
    wm: Lsn,
    log: Vec<(u64, i64)>,
    counters: BTreeMap<i64, i64>,
    rejected: Vec<Lsn>,
}

fn refusal(kind: u8, lens: &[usize], batch: bool, limit: usize) -> Option<&'static str> {
    if kind == 0 || kind >= syncjournal::format::KIND_RESERVED_MIN {
        return Some("ReservedKind");
    }
    for &l in lens {
        if l == 0 {
            return Some("EmptyRecord");
        }
        if l > limit {
            return Some("RecordTooLarge");
        }
    }
    if batch && lens.iter().map(|&l| frame_bytes(l)).sum::<usize>() > RECORD_SPACE {
        return Some("BatchTooLarge");
    }
    None
}

/// The error a failed non-sync operation is reported as: `DiskFull` for ENOSPC, else `Io`.
fn io_error_name(e: &IoEvent) -> &'static str {
    if e.errno == Some(ENOSPC) {
        "DiskFull"
    } else {
        "Io"
    }
}

fn error_name(e: &Error) -> &'static str {
    match e {
        Error::Journal(JournalError::ReservedKind { .. }) => "ReservedKind",
        Error::Journal(JournalError::EmptyRecord) => "EmptyRecord",
        Error::Journal(JournalError::RecordTooLarge { .. }) => "RecordTooLarge",
        Error::Journal(JournalError::BatchTooLarge { .. }) => "BatchTooLarge",
        Error::Journal(JournalError::Poisoned { .. }) => "Poisoned",
        Error::Journal(JournalError::DiskFull { .. }) => "DiskFull",
        Error::Journal(JournalError::Io { .. }) => "Io",
        Error::Journal(JournalError::AckBeyondDurable { .. }) => "AckBeyondDurable",
        Error::Target(TargetError::ReplayGap { .. }) => "ReplayGap",
        Error::Target(TargetError::EntryRejected { .. }) => "EntryRejected",
        _ => "other",
    }
}

/// What a run exercised (for the seed tests: each seed must hit what it is named after).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelStats {
    /// Records written by successful appends.
    pub appended: u64,
    /// Calls refused before writing (reserved kind, empty, too large).
    pub refused: u64,
    /// Segment rotations.
    pub rotations: u64,
    /// Rotations that failed without poisoning (`DiskFull` or `Io`).
    pub rotation_failures: u64,
    /// Of those, `DiskFull`.
    pub disk_full: u64,
    /// Failures that poisoned the journal.
    pub poisonings: u64,
    /// Calls refused with `Poisoned`.
    pub poisoned_calls: u64,
    /// Reopens (close, crash or power loss).
    pub reopens: u64,
    /// Opens that failed on an injected fault (and were retried).
    pub failed_opens: u64,
    /// Records not durable at a poisoning, kept by the next open.
    pub kept_in_doubt: u64,
    /// Segments left by failed rotations and found by the next open.
    pub stale_segments: u64,
    /// Acknowledgements that moved the acknowledged LSN (`ack` and replay).
    pub acks: u64,
    /// Segments retired.
    pub retired: u64,
    /// Power losses that changed bytes.
    pub power_losses: u64,
    /// Torn tails cut after a power loss.
    pub torn_cuts: u64,
    /// Replays.
    pub replays: u64,
    /// Entries the target's watermark moved over.
    pub replayed: u64,
    /// Injected statement failures.
    pub statement_faults: u64,
    /// Injected in-doubt commits.
    pub in_doubt_commits: u64,
    /// Replays refused with `ReplayGap`.
    pub gaps: u64,
    /// Replays stopped at a refused entry (`Stop`).
    pub stops: u64,
    /// Entries quarantined.
    pub quarantined: u64,
}

/// The journal, the replayer, the target, and the model.
struct Rig {
    _dir: tempfile::TempDir,
    jdir: PathBuf,
    target: PathBuf,
    faults: Arc<LoggedFaults>,
    tfaults: Arc<ModelTargetFaults>,
    journal: Option<Arc<Journal>>,
    replayer: Option<(RejectPolicy, Replayer<FzEvent>)>,
    limit: usize,
    next_tag: u64,
    m: Model,
    step: usize,
    stats: ModelStats,
}

fn persist_of(b: u8) -> PersistMode {
    if b & 1 == 1 {
        PersistMode::Buffered
    } else {
        PersistMode::Sync
    }
}

fn recovery_of(b: u8) -> RecoveryMode {
    match b % 3 {
        0 => RecoveryMode::TolerateTornTail,
        1 => RecoveryMode::AbsoluteConsistency,
        _ => RecoveryMode::Salvage,
    }
}

fn pattern(len: usize, tag: u64, fill: u8) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len)
        .map(|i| fill ^ (i as u8).wrapping_mul(31) ^ (i >> 8) as u8)
        .collect();
    let t = tag.to_le_bytes();
    let n = len.min(8);
    p[..n].copy_from_slice(&t[..n]);
    p
}

impl Rig {
    fn new(config: u8) -> Rig {
        let dir = fresh_dir();
        let jdir = dir.path().join("journal");
        let target = dir.path().join("target.db");
        let persist = persist_of(config);
        let retain = usize::from(config >> 1) % 3;
        let mut rig = Rig {
            jdir,
            target,
            _dir: dir,
            faults: Arc::new(LoggedFaults::default()),
            tfaults: Arc::new(ModelTargetFaults::default()),
            journal: None,
            replayer: None,
            limit: JournalOptions::new()
                .segment_bytes_max(MODEL_SEGMENT_BYTES)
                .payload_bytes_limit(),
            next_tag: 1,
            m: Model {
                recs: Vec::new(),
                durable: 0,
                acked: 0,
                ack_max: 0,
                poisoned: false,
                segs: vec![MSeg {
                    seq: 1,
                    first: 1,
                    used: 0,
                }],
                persist,
                retain,
                wm: 0,
                stale: None,
            },
            step: 0,
            stats: ModelStats::default(),
        };
        let j = Journal::open(
            &rig.jdir,
            rig.options(persist, RecoveryMode::AbsoluteConsistency),
        )
        .expect("create the journal");
        rig.faults.take_log();
        rig.journal = Some(Arc::new(j));
        rig.check_journal("create");
        rig
    }

    fn options(&self, persist: PersistMode, recovery: RecoveryMode) -> JournalOptions {
        JournalOptions::new()
            .persist_mode(persist)
            .recovery_mode(recovery)
            .segment_bytes_max(MODEL_SEGMENT_BYTES)
            .retain_acked_segments(self.m.retain)
            .retain_acked_ms(0)
            .fault_injector(Arc::clone(&self.faults) as Arc<dyn FaultInjector>)
    }

    fn journal(&self) -> &Arc<Journal> {
        self.journal.as_ref().expect("the journal is open")
    }

    fn what(&self, op: &str) -> String {
        format!("step {} ({op})", self.step)
    }

    // --- records -------------------------------------------------------------------------

    fn make_record(&mut self, kind: u8, size: u8, fill: u8) -> MRec {
        let len = SIZES[usize::from(size) % SIZES.len()];
        let tag = self.next_tag;
        self.next_tag += 1;
        match kind % 8 {
            k @ 0..=3 => {
                let ev = FzEvent {
                    tag,
                    counter: fill % COUNTERS,
                    reject: k == 3,
                    pad: vec![fill; len],
                };
                let payload = encode_event(CREATED_AT, &ev).expect("encode an event");
                let effect = if ev.reject {
                    Effect::Reject
                } else {
                    Effect::Apply {
                        tag,
                        counter: i64::from(ev.counter),
                    }
                };
                MRec {
                    kind: EVENT_KIND,
                    payload,
                    effect,
                }
            }
            4 => MRec {
                kind: KIND_DATA,
                payload: pattern(len, tag, fill),
                effect: Effect::Foreign,
            },
            5 => {
                // 0xFF is no valid varint: the payload never decodes.
                let mut payload = pattern(len, tag, fill);
                if let Some(b) = payload.first_mut() {
                    *b = 0xFF;
                }
                MRec {
                    kind: EVENT_KIND,
                    payload,
                    effect: Effect::Reject,
                }
            }
            6 => MRec {
                kind: RAW_KIND,
                payload: pattern(len, tag, fill),
                effect: Effect::Foreign,
            },
            _ => MRec {
                kind: if fill.is_multiple_of(2) {
                    0
                } else {
                    0xF0 | (fill >> 4)
                },
                payload: pattern(len, tag, fill),
                effect: Effect::Reject,
            },
        }
    }

    // --- checks --------------------------------------------------------------------------

    /// The journal's state and contents equal the model's.
    fn check_journal(&self, what: &str) {
        let j = self.journal();
        let m = &self.m;
        let st = j.state();
        assert_eq!(st.next_lsn, m.written() + 1, "{what}: next LSN");
        assert_eq!(st.durable_lsn, m.durable, "{what}: durable LSN");
        assert_eq!(st.acked_lsn, m.acked, "{what}: acknowledged LSN");
        assert_eq!(
            st.poisoned.is_some(),
            m.poisoned,
            "{what}: poisoned ({:?})",
            st.poisoned
        );
        assert_eq!(
            st.segments,
            m.segs.len(),
            "{what}: segments (model {:?})",
            m.segs
        );
        assert_eq!(st.first_lsn, m.segs[0].first, "{what}: first retained LSN");
        assert!(
            st.first_lsn <= m.acked + 1,
            "{what}: a segment with unacknowledged records was retired"
        );
        if m.poisoned {
            // Durability first: what was durable before the poisoning is reported durable;
            // nothing can be read.
            if m.durable > 0 {
                j.wait_durable(m.durable)
                    .unwrap_or_else(|e| panic!("{what}: wait_durable of a durable LSN: {e}"));
            }
            assert!(
                matches!(
                    j.reader(st.first_lsn),
                    Err(Error::Journal(JournalError::Poisoned { .. }))
                ),
                "{what}: a poisoned journal creates readers"
            );
            return;
        }
        // Readers see exactly the durable records.
        let mut reader = j
            .reader(st.first_lsn)
            .unwrap_or_else(|e| panic!("{what}: reader({}): {e}", st.first_lsn));
        let mut lsn = st.first_lsn;
        while let Some(r) = reader
            .next_ref()
            .unwrap_or_else(|e| panic!("{what}: reading LSN {lsn}: {e}"))
        {
            assert_eq!(r.lsn, lsn, "{what}: LSNs read are not contiguous");
            assert!(
                lsn <= m.durable,
                "{what}: a reader sees LSN {lsn}, beyond the durable LSN {}",
                m.durable
            );
            let want = &m.recs[lsn as usize - 1];
            assert!(
                r.kind == want.kind && r.payload == want.payload.as_slice(),
                "{what}: LSN {lsn} reads back a different record (kind {} len {}, want kind {} len {})",
                r.kind,
                r.payload.len(),
                want.kind,
                want.payload.len()
            );
            lsn += 1;
        }
        assert_eq!(
            lsn,
            m.durable + 1,
            "{what}: the reader stops before the durable LSN"
        );
        // Point reads: the first retained record, and nothing beyond the durable LSN.
        if st.first_lsn <= m.durable {
            let r = j
                .read(st.first_lsn)
                .unwrap_or_else(|e| panic!("{what}: read({}): {e}", st.first_lsn));
            assert!(
                r.is_some_and(|r| r.payload == m.recs[st.first_lsn as usize - 1].payload),
                "{what}: read({}) of the first retained record",
                st.first_lsn
            );
        }
        assert!(
            matches!(j.read(m.durable + 1), Ok(None)),
            "{what}: read({}) beyond the durable LSN",
            m.durable + 1
        );
        // Pending bytes: exactly the frames from an LSN to the durable end.
        for from in [st.first_lsn, m.wm.max(st.first_lsn - 1) + 1, m.durable + 1] {
            let want: u64 = (from..=m.durable).map(|l| m.fb(l) as u64).sum();
            let got = j
                .bytes_from(from)
                .unwrap_or_else(|e| panic!("{what}: bytes_from({from}): {e}"));
            assert_eq!(got, want, "{what}: bytes_from({from})");
        }
    }

    /// Applies the segment removals the log shows; `ran`: a `retire()` ran in this call (then,
    /// unless a removal or directory sync failed, exactly the retirable segments are gone).
    fn apply_retire(&mut self, log: &[IoEvent], ran: bool, what: &str) {
        let removed: Vec<&IoEvent> = log
            .iter()
            .filter(|e| e.op == IoOp::RemoveSegment && e.errno.is_none())
            .collect();
        let failed = log
            .iter()
            .any(|e| e.errno.is_some() && matches!(e.op, IoOp::RemoveSegment | IoOp::SyncDir));
        let want = self.m.retirable();
        assert!(
            removed.len() <= want,
            "{what}: {} segments removed, only {want} are fully acknowledged (acked {}, segments {:?}, retain {})",
            removed.len(),
            self.m.acked,
            self.m.segs,
            self.m.retain
        );
        if ran && !failed {
            assert_eq!(
                removed.len(),
                want,
                "{what}: retention left fully acknowledged segments (acked {}, segments {:?})",
                self.m.acked,
                self.m.segs
            );
        }
        for (e, s) in removed.iter().zip(&self.m.segs) {
            assert!(
                e.path.ends_with(segment_file_name(s.seq)),
                "{what}: removed {} out of order (expected segment {})",
                e.path.display(),
                s.seq
            );
        }
        self.m.segs.drain(..removed.len());
        self.stats.retired += removed.len() as u64;
    }

    /// Reads the target and checks it is exactly the fold of entries `1..=W`. Returns `W`.
    fn check_target(&self, what: &str) -> Lsn {
        let view = self.read_target();
        let m = &self.m;
        assert!(
            view.wm <= m.durable,
            "{what}: the target's watermark {} is beyond the durable LSN {}",
            view.wm,
            m.durable
        );
        let mut want = TargetView {
            wm: view.wm,
            ..TargetView::default()
        };
        for lsn in 1..=view.wm {
            match m.recs[lsn as usize - 1].effect {
                Effect::Apply { tag, counter } => {
                    want.log.push((tag, counter));
                    *want.counters.entry(counter).or_insert(0) += 1;
                }
                Effect::Reject => want.rejected.push(lsn),
                Effect::Foreign => panic!(
                    "{what}: the watermark {} passed LSN {lsn}, of a kind the replayer does not apply",
                    view.wm
                ),
            }
        }
        assert_eq!(
            view, want,
            "{what}: exactly once: the target is not the fold of entries 1..={}",
            view.wm
        );
        view.wm
    }

    fn read_target(&self) -> TargetView {
        if !self.target.exists() {
            return TargetView::default();
        }
        let c = Connection::open_with_flags(
            &self.target,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .expect("open the target");
        let has = |t: &str| -> bool {
            c.query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                [t],
                |r| r.get::<_, i64>(0),
            )
            .expect("read the target's schema")
                > 0
        };
        let id = self.journal().id().to_string();
        let mut view = TargetView::default();
        if has("syncjournal_progress") {
            view.wm = c
                .query_row(
                    "SELECT lsn FROM syncjournal_progress WHERE journal_id = ?1",
                    [&id],
                    |r| r.get::<_, i64>(0),
                )
                .optional()
                .expect("read the watermark")
                .unwrap_or(0) as Lsn;
        }
        if has("syncjournal_rejected") {
            let mut s = c
                .prepare("SELECT lsn FROM syncjournal_rejected WHERE journal_id = ?1 ORDER BY lsn")
                .unwrap();
            view.rejected = s
                .query_map([&id], |r| r.get::<_, i64>(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .expect("read the quarantine")
                .into_iter()
                .map(|l| l as Lsn)
                .collect();
        }
        if has("fz_log") {
            let mut s = c
                .prepare("SELECT tag, counter FROM fz_log ORDER BY rowid")
                .unwrap();
            view.log = s
                .query_map([], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)?))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .expect("read the log");
            let mut s = c.prepare("SELECT id, n FROM fz_counters").unwrap();
            view.counters = s
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<BTreeMap<_, _>>>())
                .expect("read the counters");
        }
        view
    }

    // --- operations ----------------------------------------------------------------------

    fn run(&mut self, op: &Op) {
        self.step += 1;
        match op {
            Op::Append {
                kind,
                size,
                fill,
                flags,
            } => {
                let rec = self.make_record(*kind, *size, *fill);
                let nowait = flags & 1 == 1;
                let j = Arc::clone(self.journal());
                let r = if nowait {
                    j.write(rec.kind, &rec.payload)
                } else {
                    j.append_kind(rec.kind, &rec.payload)
                };
                self.after_append(r.map(|l| l..l + 1), vec![rec], false, nowait);
            }
            Op::Batch { kind, fill, sizes } => {
                let recs: Vec<MRec> = sizes
                    .iter()
                    .take(MAX_BATCH)
                    .map(|&s| self.make_record(*kind, s, *fill))
                    .collect();
                // One kind selector for the whole batch, hence one kind.
                let k = recs.first().map_or(EVENT_KIND, |r| r.kind);
                let j = Arc::clone(self.journal());
                let r = j.append_batch_kind(k, recs.iter().map(|r| r.payload.as_slice()));
                self.after_append(r, recs, true, false);
            }
            Op::Sync => self.sync(),
            Op::Ack { sel, delta } => self.ack(*sel, *delta),
            Op::Reopen { flags, mode } => self.reopen(*flags, *mode),
            Op::Fault {
                op,
                skip,
                times,
                errno,
            } => {
                let io = match op % 5 {
                    0 => IoOp::SyncData,
                    1 => IoOp::Allocate,
                    2 => IoOp::SyncDir,
                    3 => IoOp::WriteAck,
                    _ => IoOp::RemoveSegment,
                };
                let times = match times % 4 {
                    0 => None,
                    n => Some(u64::from(n)),
                };
                let errno = if errno.is_multiple_of(2) { ENOSPC } else { EIO };
                self.faults.plan.fail(io, u64::from(skip % 4), times, errno);
            }
            Op::ClearFaults => self.faults.plan.clear(),
            Op::Replay {
                flags,
                batch,
                retries,
                fault,
                txn,
                index,
                times,
            } => self.replay(*flags, *batch, *retries, *fault, *txn, *index, *times),
            Op::PowerLoss { lost, mode } => self.power_loss(*lost, *mode),
        }
        if self.journal.is_some() {
            self.check_journal(&self.what("state after the operation"));
        }
    }

    /// Checks and records the outcome of an append or a batch of `recs`.
    fn after_append(
        &mut self,
        r: syncjournal::Result<Range<Lsn>>,
        recs: Vec<MRec>,
        batch: bool,
        nowait: bool,
    ) {
        let what = self.what(if batch { "append_batch" } else { "append" });
        let log = self.faults.take_log();
        let st = self.journal().state();
        let (wb, db) = (self.m.written(), self.m.durable);
        let n = recs.len() as Lsn;
        if self.m.poisoned {
            assert!(
                matches!(r, Err(Error::Journal(JournalError::Poisoned { .. }))),
                "{what}: a poisoned journal accepted an append: {r:?}"
            );
            self.stats.poisoned_calls += 1;
            return;
        }
        let lens: Vec<usize> = recs.iter().map(|r| r.payload.len()).collect();
        let kind = recs.first().map_or(EVENT_KIND, |r| r.kind);
        if let Some(name) = refusal(kind, &lens, batch, self.limit) {
            match &r {
                Err(e) => assert_eq!(error_name(e), name, "{what}: wrong refusal: {e}"),
                Ok(range) => panic!("{what}: {name} expected, got {range:?}"),
            }
            assert!(log.is_empty(), "{what}: a refused call did I/O: {log:?}");
            assert_eq!(st.next_lsn, wb + 1, "{what}: a refused call wrote");
            self.stats.refused += 1;
            return;
        }
        let bytes: usize = lens.iter().map(|&l| frame_bytes(l)).sum();
        let rotation = n > 0 && self.m.free() < bytes;
        // A failed sync poisons. A rotation whose directory sync failed after the rename has
        // left a segment file the writer does not use: the journal may poison itself then too
        // (it must not write the next segment's first LSN into the old one).
        let sync_poison = log.iter().any(IoEvent::poisons);
        let dir_failed = rotation
            && log
                .iter()
                .any(|e| e.op == IoOp::SyncDir && e.errno.is_some());
        let poison = st.poisoned.is_some();
        assert!(
            poison == sync_poison || (poison && dir_failed),
            "{what}: poisoned ({:?}) must mean a failed data sync or ACK write, or a failed directory sync at rotation ({log:?})",
            st.poisoned
        );
        let advanced = st.next_lsn - 1 - wb;
        match &r {
            Ok(range) => {
                assert!(!poison, "{what}: succeeded although a sync failed");
                assert_eq!(*range, wb + 1..wb + 1 + n, "{what}: LSNs returned");
                assert_eq!(advanced, n, "{what}: LSNs written");
            }
            Err(e) => {
                assert!(
                    advanced == 0 || advanced == n,
                    "{what}: {advanced} of {n} records written by a failed call"
                );
                if sync_poison {
                    assert!(
                        matches!(
                            e,
                            Error::Journal(JournalError::Io { .. })
                                | Error::Journal(JournalError::Poisoned { .. })
                        ),
                        "{what}: a failed sync reported as {e:?}"
                    );
                } else {
                    assert!(
                        rotation,
                        "{what}: failed without a rotation or a sync failure: {e}"
                    );
                    assert_eq!(advanced, 0, "{what}: a refused rotation wrote records");
                    let failed = log.iter().find(|e| e.errno.is_some()).unwrap_or_else(|| {
                        panic!("{what}: failed with no injected fault: {e} ({log:?})")
                    });
                    let want = if failed.errno == Some(ENOSPC) {
                        "DiskFull"
                    } else {
                        "Io"
                    };
                    assert_eq!(
                        error_name(e),
                        want,
                        "{what}: a failed {:?} at rotation reported as {e}",
                        failed.op
                    );
                    self.stats.rotation_failures += 1;
                    self.stats.disk_full += u64::from(want == "DiskFull");
                    if failed.op == IoOp::SyncDir {
                        // After the rename: the new segment's file exists.
                        self.m.stale = Some(MSeg {
                            seq: self.m.active().seq + 1,
                            first: wb + 1,
                            used: 0,
                        });
                    }
                }
            }
        }
        let written = advanced == n && n > 0;
        let rotated = rotation && written;
        // The seal of a rotation makes everything written before it durable, unless it failed
        // (then nothing was written and the journal is poisoned).
        let sealed = rotation && (written || !sync_poison);
        let waits = !nowait && self.m.persist == PersistMode::Sync;
        let want_durable = if written && waits && r.is_ok() {
            wb + n
        } else if sealed {
            wb
        } else {
            db
        };
        assert_eq!(
            st.durable_lsn, want_durable,
            "{what}: durable LSN (before: written {wb}, durable {db}; rotation {rotation}, result {r:?})"
        );
        self.stats.poisonings += u64::from(poison);
        if written {
            if r.is_ok() {
                self.stats.appended += n;
            }
            if rotated {
                self.stats.rotations += 1;
                self.m.stale = None;
                let seq = self.m.active().seq + 1;
                self.m.segs.push(MSeg {
                    seq,
                    first: wb + 1,
                    used: 0,
                });
            }
            self.m.segs.last_mut().expect("a segment").used += bytes;
            self.m.recs.extend(recs);
        }
        self.m.durable = want_durable;
        self.m.poisoned = poison;
        self.apply_retire(&log, rotated, &what);
    }

    fn sync(&mut self) {
        let what = self.what("sync");
        let j = Arc::clone(self.journal());
        let r = j.sync();
        let log = self.faults.take_log();
        if self.m.poisoned {
            assert!(
                matches!(r, Err(Error::Journal(JournalError::Poisoned { .. }))),
                "{what}: {r:?}"
            );
            self.stats.poisoned_calls += 1;
            return;
        }
        let poison = log.iter().any(IoEvent::poisons);
        if self.m.written() == self.m.durable {
            assert!(r.is_ok(), "{what}: nothing to sync, yet {r:?}");
        }
        match r {
            Ok(()) => {
                assert!(!poison, "{what}: succeeded although a sync failed");
                self.m.durable = self.m.written();
            }
            Err(e) => {
                assert!(poison, "{what}: failed without a failed sync: {e}");
                assert!(
                    matches!(e, Error::Journal(JournalError::Io { .. })),
                    "{what}: {e:?}"
                );
                self.m.poisoned = true;
                self.stats.poisonings += 1;
            }
        }
    }

    fn ack(&mut self, sel: u8, delta: u8) {
        let what = self.what("ack");
        let m = &self.m;
        let x = match sel % 4 {
            0 => m.durable.saturating_sub(Lsn::from(delta % 8)),
            1 => m.durable + 1 + Lsn::from(delta % 4),
            2 => m.wm,
            _ => m.acked.saturating_sub(Lsn::from(delta % 4)),
        };
        let j = Arc::clone(self.journal());
        let r = j.ack(x);
        let log = self.faults.take_log();
        if self.m.poisoned {
            assert!(
                matches!(r, Err(Error::Journal(JournalError::Poisoned { .. }))),
                "{what}: {r:?}"
            );
            self.stats.poisoned_calls += 1;
            return;
        }
        if x > self.m.durable {
            assert!(
                matches!(
                    r,
                    Err(Error::Journal(JournalError::AckBeyondDurable { .. }))
                ),
                "{what}: ack({x}) beyond the durable LSN {}: {r:?}",
                self.m.durable
            );
            assert!(log.is_empty(), "{what}: a refused ack did I/O");
            return;
        }
        if x <= self.m.acked {
            assert!(
                r.is_ok(),
                "{what}: ack({x}) at or below {}: {r:?}",
                self.m.acked
            );
            assert!(
                log.is_empty(),
                "{what}: an ack that changes nothing did I/O"
            );
            return;
        }
        if log.iter().any(IoEvent::poisons) {
            assert!(r.is_err(), "{what}: the ACK write failed, ack succeeded");
            self.m.poisoned = true;
            self.stats.poisonings += 1;
            self.m.ack_max = self.m.ack_max.max(x);
            return;
        }
        self.m.acked = x;
        self.m.ack_max = self.m.ack_max.max(x);
        self.stats.acks += 1;
        let failed: Vec<&IoEvent> = log.iter().filter(|e| e.errno.is_some()).collect();
        match &r {
            Ok(()) => assert!(failed.is_empty(), "{what}: succeeded despite {failed:?}"),
            Err(e) => {
                // The error of one of the failed operations (a failed removal, or the
                // directory sync after the removals that succeeded).
                assert!(
                    failed.iter().any(|f| error_name(e) == io_error_name(f)),
                    "{what}: retention failed ({failed:?}) as {e}"
                );
            }
        }
        self.apply_retire(&log, true, &what);
    }

    /// Closes (or drops) the journal: returns whether a sync failed meanwhile.
    fn shut(&mut self, crash: bool) {
        let what = self.what(if crash { "crash" } else { "close" });
        self.replayer = None;
        let j = Arc::try_unwrap(self.journal.take().expect("open"))
            .unwrap_or_else(|_| panic!("{what}: the journal is still shared"));
        let r = if crash {
            drop(j);
            Ok(())
        } else {
            j.close()
        };
        let log = self.faults.take_log();
        let poison = log.iter().any(IoEvent::poisons);
        if self.m.poisoned {
            assert!(r.is_ok(), "{what}: closing a poisoned journal: {r:?}");
        } else if !crash {
            assert_eq!(
                r.is_err(),
                poison,
                "{what}: close reported {r:?}, log {log:?}"
            );
        }
        if poison {
            self.m.poisoned = true;
            self.stats.poisonings += 1;
        }
        self.stats.reopens += 1;
        if !self.m.poisoned {
            // Close and drop sync everything written.
            self.m.durable = self.m.written();
        }
    }

    /// Opens the journal again (retrying without faults if an open with armed faults fails)
    /// and checks what recovery found: records `1..=k` with `k` in `keep`, exactly the model's.
    /// `clean`: recovery must repair nothing.
    fn open_again(
        &mut self,
        persist: PersistMode,
        recovery: RecoveryMode,
        keep: Range<Lsn>,
        clean: bool,
    ) {
        let what = self.what("open");
        let mut log = Vec::new();
        let j = match Journal::open(&self.jdir, self.options(persist, recovery)) {
            Ok(j) => j,
            Err(e) => {
                log = self.faults.take_log();
                assert!(
                    log.iter().any(|e| e.errno.is_some()),
                    "{what}: open failed without an injected fault: {e}"
                );
                assert!(
                    matches!(
                        e,
                        Error::Journal(JournalError::Io { .. })
                            | Error::Journal(JournalError::DiskFull { .. })
                    ),
                    "{what}: an injected I/O fault failed the open as {e:?}"
                );
                self.faults.plan.clear();
                self.stats.failed_opens += 1;
                Journal::open(&self.jdir, self.options(persist, recovery))
                    .unwrap_or_else(|e| panic!("{what}: open after clearing the faults: {e}"))
            }
        };
        log.extend(self.faults.take_log());
        let report = j.recovery_report().clone();
        if clean {
            assert!(
                report.cuts.is_empty() && report.skipped.is_empty(),
                "{what}: recovery repaired an undamaged journal: {report:?}"
            );
        }
        let st = j.state();
        assert!(st.poisoned.is_none(), "{what}: a fresh open is poisoned");
        let k = st.next_lsn - 1;
        assert!(
            keep.contains(&k),
            "{what}: recovered up to LSN {k}, expected {}..={} (durable {}, written {})",
            keep.start,
            keep.end - 1,
            self.m.durable,
            self.m.written()
        );
        assert_eq!(st.durable_lsn, k, "{what}: recovered records are durable");
        let acked = st.acked_lsn;
        assert!(
            acked == self.m.acked || (acked > self.m.acked && acked <= self.m.ack_max),
            "{what}: acknowledged LSN {acked} after reopen, expected {} (or up to {} after a failed ACK write)",
            self.m.acked,
            self.m.ack_max
        );
        self.stats.kept_in_doubt += k.saturating_sub(self.m.durable);
        let m = &mut self.m;
        m.recs.truncate(k as usize);
        m.durable = k;
        m.acked = acked;
        m.ack_max = acked;
        m.poisoned = false;
        m.persist = persist;
        if let Some(s) = m.stale.take()
            && s.seq == m.active().seq + 1
            && s.first == k + 1
        {
            // The segment left by a failed rotation continues the records: it is the active
            // one now.
            m.segs.push(s);
            self.stats.stale_segments += 1;
        }
        assert!(
            m.active().first <= k + 1,
            "{what}: the active segment starts after the recovered records"
        );
        m.recount();
        self.journal = Some(Arc::new(j));
        self.apply_retire(&log, true, &what);
    }

    fn reopen(&mut self, flags: u8, mode: u8) {
        let crash = flags & 1 == 1;
        self.shut(crash);
        if flags & 2 == 0 {
            self.faults.plan.clear();
        }
        let keep_from = if self.m.poisoned {
            self.m.durable
        } else {
            self.m.written()
        };
        let keep = keep_from..self.m.written() + 1;
        self.open_again(persist_of(mode), recovery_of(mode >> 1), keep, true);
    }

    fn power_loss(&mut self, lost: u64, mode: u8) {
        let what = self.what("power loss");
        self.faults.plan.clear();
        self.faults.plan.fail(IoOp::SyncData, 0, None, EIO);
        self.shut(true);
        self.faults.plan.clear();
        assert!(
            self.m.poisoned || self.m.durable == self.m.written(),
            "{what}: nothing synced, yet nothing pending"
        );
        let seg = *self.m.active();
        let durable = self.m.durable;
        assert!(
            seg.first <= durable + 1,
            "{what}: non-durable records outside the active segment"
        );
        let mut boundary = 4096;
        for l in seg.first..=durable {
            boundary += self.m.fb(l);
        }
        let end = 4096 + seg.used;
        let path = self.jdir.join(segment_file_name(seg.seq));
        let orig = std::fs::read(&path).expect("read the active segment");
        let mut bytes = orig.clone();
        let mut s = boundary / SECTOR * SECTOR;
        let mut i = 0;
        while s < end {
            if lost >> (i % 64) & 1 == 1 {
                bytes[s.max(boundary)..(s + SECTOR).min(end)].fill(0);
            }
            s += SECTOR;
            i += 1;
        }
        let first_changed = (boundary..end).find(|&i| bytes[i] != orig[i]);
        // Kept: the records wholly before the first changed byte. The end is clean (no damage
        // to cut) when nothing but zeros follows them.
        let mut kept = durable;
        let mut kept_end = boundary;
        for l in durable + 1..=self.m.written() {
            let next = kept_end + self.m.fb(l);
            if first_changed.is_some_and(|c| next > c) {
                break;
            }
            kept = l;
            kept_end = next;
        }
        let clean = first_changed.is_none() || bytes[kept_end..].iter().all(|&b| b == 0);
        if first_changed.is_some() {
            std::fs::write(&path, &bytes).expect("write the segment after the power loss");
            self.stats.power_losses += 1;
        }
        let recovery = recovery_of(mode);
        let persist = self.m.persist;
        if recovery == RecoveryMode::AbsoluteConsistency && !clean {
            match Journal::open(&self.jdir, self.options(persist, recovery)) {
                Err(e) => assert!(
                    e.is_corruption(),
                    "{what}: AbsoluteConsistency refused a torn tail with {e:?}"
                ),
                Ok(_) => panic!("{what}: AbsoluteConsistency opened a torn tail"),
            }
            self.faults.take_log();
            self.open_again(
                persist,
                RecoveryMode::TolerateTornTail,
                kept..kept + 1,
                false,
            );
        } else {
            self.open_again(persist, recovery, kept..kept + 1, clean);
        }
        let report = self.journal().recovery_report();
        assert!(
            report.skipped.is_empty() && report.cuts.iter().all(|c| c.torn_tail),
            "{what}: a power loss after the last sync is only ever a torn tail: {report:?}"
        );
        assert_eq!(
            report.cuts.is_empty(),
            clean,
            "{what}: cut {:?}, clean end {clean}",
            report.cuts
        );
        self.stats.torn_cuts += report.cuts.len() as u64;
    }

    #[allow(clippy::too_many_arguments)]
    fn replay(
        &mut self,
        flags: u8,
        batch: u8,
        retries: u8,
        fault: u8,
        txn: u8,
        index: u8,
        times: u8,
    ) {
        let what = self.what("replay");
        let policy = if flags & 1 == 1 {
            RejectPolicy::Stop
        } else {
            RejectPolicy::Quarantine
        };
        let fresh = flags & 2 != 0 || self.replayer.as_ref().is_none_or(|(p, _)| *p != policy);
        if fresh {
            let topts = TargetOptions::new()
                .create_if_missing(true)
                .create_schema(TARGET_SCHEMA)
                .faults(Arc::clone(&self.tfaults) as Arc<dyn TargetFaults>);
            let ropts = ReplayOptions::new()
                .reject_policy(policy)
                .batch_entries_max(usize::from(batch % 8) + 1)
                .retry_attempts_max(u32::from(retries % 4))
                .retry_delay_ms(0)
                .retry_delay_max_ms(0);
            self.replayer = Some((
                policy,
                Replayer::new(
                    Arc::clone(self.journal()),
                    self.target.clone(),
                    topts,
                    ropts,
                ),
            ));
        }
        let code = match times / 4 % 3 {
            0 => rusqlite::ffi::SQLITE_IOERR,
            1 => rusqlite::ffi::SQLITE_BUSY,
            _ => rusqlite::ffi::SQLITE_ERROR,
        };
        let statement = (fault % 4 == 1 || fault % 4 == 3)
            .then_some((usize::from(txn % 3), usize::from(index % 20)));
        let commits = if fault % 4 >= 2 {
            usize::from(times % 3) + 1
        } else {
            0
        };
        self.tfaults.arm(Some(TargetPlan {
            statement,
            remaining: match times % 4 {
                0 => None,
                n => Some(usize::from(n)),
            },
            code,
            commits,
        }));
        let (w0, d, first, acked0) = (
            self.m.wm,
            self.m.durable,
            self.m.segs[0].first,
            self.m.acked,
        );
        let (policy, r) = self.replayer.as_mut().expect("set above");
        let policy = *policy;
        let report: SyncReport = r.sync_now();
        let (hits, commit_hits) = self.tfaults.disarm();
        let log = self.faults.take_log();
        let w1 = self.check_target(&what);
        let ctx = format!(
            "{what}: W {w0} → {w1}, durable {d}, first {first}, report {report}, {hits} statement faults, {commit_hits} in-doubt commits, policy {policy:?}"
        );
        assert!(w1 >= w0, "{ctx}: the watermark went back");
        // Entries refused and quarantined are counted in `quarantined`, never in `applied`.
        let refused = (w0 + 1..=w1)
            .filter(|&l| self.m.recs[l as usize - 1].effect == Effect::Reject)
            .count() as u64;
        assert!(
            report.quarantined == refused,
            "{ctx}: the report counts the quarantined entries ({refused})"
        );
        assert!(
            report.applied == w1 - w0 - refused,
            "{ctx}: the report counts what committed"
        );
        let gap = w0 < d && w0 + 1 < first;
        if gap || self.m.poisoned {
            assert_eq!(w1, w0, "{ctx}: applied despite a gap or a poisoned journal");
            if gap {
                assert!(report.error.is_some(), "{ctx}: no error despite a gap");
            }
        }
        if report.error.is_none() {
            assert_eq!(w1, d, "{ctx}: success with entries pending");
            assert_eq!(report.pending, 0, "{ctx}: success with entries pending");
            let state = self.replayer.as_ref().expect("set above").1.state();
            assert!(
                state.target_lsn == Some(w1) && state.last_error.is_none(),
                "{ctx}: the replayer's state after a clean sync: {state:?}"
            );
        }
        let quiet = hits == 0
            && commit_hits == 0
            && !log.iter().any(|e| e.errno.is_some())
            && !self.m.poisoned;
        if quiet && gap {
            assert!(
                matches!(
                    report.error,
                    Some(Error::Target(TargetError::ReplayGap { .. }))
                ),
                "{ctx}: expected ReplayGap"
            );
        } else if quiet {
            match self.m.first_stop(w0, d, policy) {
                Some(l) => {
                    assert_eq!(
                        w1,
                        l - 1,
                        "{ctx}: the replay must stop right before LSN {l}"
                    );
                    let foreign = self.m.recs[l as usize - 1].effect == Effect::Foreign;
                    assert!(
                        if foreign {
                            matches!(&report.error, Some(Error::Target(TargetError::UnknownKind { lsn, .. })) if *lsn == l)
                        } else {
                            matches!(&report.error, Some(Error::Target(TargetError::EntryRejected { lsn, .. })) if *lsn == l)
                        },
                        "{ctx}: expected {} at {l}",
                        if foreign {
                            "UnknownKind"
                        } else {
                            "EntryRejected"
                        }
                    );
                }
                None => assert!(report.error.is_none(), "{ctx}: a quiet replay failed"),
            }
        }
        self.stats.replays += 1;
        self.stats.replayed += w1 - w0;
        self.stats.statement_faults += hits as u64;
        self.stats.in_doubt_commits += commit_hits as u64;
        self.stats.quarantined += report.quarantined;
        match report.error {
            Some(Error::Target(TargetError::ReplayGap { .. })) => self.stats.gaps += 1,
            Some(
                Error::Target(TargetError::EntryRejected { .. })
                | Error::Target(TargetError::UnknownKind { .. }),
            ) => self.stats.stops += 1,
            _ => {}
        }
        let st = self.journal().state();
        let poison = log.iter().any(IoEvent::poisons);
        self.stats.poisonings += u64::from(poison);
        assert_eq!(
            st.poisoned.is_some(),
            self.m.poisoned || poison,
            "{ctx}: poisoned {:?}, log {log:?}",
            st.poisoned
        );
        let acked = st.acked_lsn;
        assert!(
            acked >= acked0 && acked <= acked0.max(w1),
            "{ctx}: acknowledged {acked} (before {acked0})"
        );
        if report.error.is_none() && !self.m.poisoned && !poison {
            assert_eq!(acked, acked0.max(w1), "{ctx}: a clean sync acknowledges W");
        }
        if poison {
            self.m.poisoned = true;
            self.m.ack_max = self.m.ack_max.max(w1);
        }
        self.stats.acks += u64::from(acked > acked0);
        self.m.acked = acked;
        self.m.ack_max = self.m.ack_max.max(acked);
        self.m.wm = w1;
        self.apply_retire(&log, acked > acked0, &what);
    }
}

/// The `journal_model` target: runs the input's program against a journal, a replayer, an
/// SQLite target and the reference model, checking every rule of the module documentation
/// after every operation. At the end, the journal is closed, reopened and replayed without
/// faults: it must hold the model's records and the target must catch up exactly once.
pub fn check_journal_model(data: &[u8]) {
    run_journal_model(data);
}

/// Runs every check of [`check_journal_model`] and returns what the run exercised.
pub fn run_journal_model(data: &[u8]) -> ModelStats {
    let case = ModelCase::decode(data);
    let mut rig = Rig::new(case.config);
    for op in &case.ops {
        rig.run(op);
    }
    // Epilogue: without faults, everything durable reaches the target, once.
    rig.step += 1;
    rig.faults.plan.clear();
    rig.reopen(0, 0);
    rig.step += 1;
    rig.replay(2, 7, 0, 0, 0, 0, 0);
    let w = rig.m.wm;
    let d = rig.m.durable;
    if w + 1 >= rig.m.segs[0].first {
        // Up to the first record of a kind the replayer does not apply, if there is one.
        let until = rig
            .m
            .first_stop(0, d, RejectPolicy::Quarantine)
            .map_or(d, |l| l - 1);
        assert_eq!(w, until, "epilogue: the target did not catch up");
    }
    rig.check_journal("epilogue");
    rig.stats
}
