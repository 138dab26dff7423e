//! The exactly-once replay driver: the protocol only; every statement is the target's
//! (`crate::target`).
//!
//! Each batch is one target transaction that (1) reads the target's watermark for this journal
//! *inside* the transaction (after the target's write lock for this journal is taken — SQLite's
//! `BEGIN IMMEDIATE`, PostgreSQL's transaction-scoped advisory lock — so no other writer can
//! move it), (2) applies the entries from `watermark + 1` on, and (3) sets the watermark to the
//! last entry, then commits. Entries go in a savepoint each, or — on a target that saves round
//! trips by it (PostgreSQL) — all together, confirmed when the batch is settled; if the target
//! refuses something of a batch sent together, the batch is rolled back and done again entry
//! by entry, so that the refused entry is found and quarantined (or stopped before) as it
//! would have been. The journal is acknowledged locally only after the commit is known to
//! have landed. Consequences:
//!
//! * a crash anywhere before the commit loses the transaction and nothing is acknowledged: the
//!   same entries are applied again, once;
//! * a crash after the commit but before the local acknowledgement is repaired by the next
//!   batch, which reads the watermark and starts after it;
//! * a commit that reports an error may have landed (seen on real shares): the connection is
//!   discarded and the watermark read again through a new one; nothing is guessed.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::apply::ApplyError;
use crate::error::{Error, JournalError, Result, TargetError};
use crate::event::{JournalEvent, decode_stamped_event};
use crate::format::{KIND_GAP, Lsn};
use crate::journal::Journal;
use crate::journal::ack::now_ms;
use crate::mutation::{ChangeSet, Columns};
use crate::replay::observer::Observer;
use crate::replay::options::{RejectPolicy, ReplayOptions};
use crate::replay::report::{SyncProgress, SyncReport};
use crate::replay::settle::{self, Found, Plan};
use crate::replay::source::{Source, SourceReader};
use crate::replay::state::ReplayState;
use crate::replay::status::PendingBasis;
use crate::replay::watch::Watch;
use crate::target::changes::row_identity;
use crate::target::{
    Applied, BatchMode, ChangeLogRetention, Commit, EntryClock, EventDb, PruneReport, Rejected,
    Settled, Target, TargetOptions, TargetSpec,
};

/// Applies journal entries to a target (an SQLite file or a PostgreSQL server) exactly once.
/// See the module documentation for the protocol.
pub struct Replayer<E: JournalEvent = ChangeSet> {
    pub(crate) source: Source,
    pub(crate) spec: TargetSpec,
    pub(crate) target: Box<dyn Target>,
    opts: ReplayOptions,
    reader: Option<SourceReader>,
    /// False when the journal is acknowledged against another target (see
    /// [`ReplayOptions::adopt_target`]).
    acknowledges: bool,
    pub(crate) obs: Observer,
    rng: u64,
    /// The change log's retention, and when this replayer last pruned it.
    retention: ChangeLogRetention,
    last_prune: Option<Instant>,
    /// True once this replayer has read its conflict counts from the target.
    conflicts_read: bool,
    _event: PhantomData<fn() -> E>,
}

/// The outcome of one batch.
enum Step {
    /// Nothing pending.
    CaughtUp,
    /// The target lost writes: check its integrity before the batch is tried again.
    CheckIntegrity,
    /// A batch committed.
    Applied {
        entries: u64,
        quarantined: u64,
        /// The batch stopped before an entry the target refused (policy `Stop`).
        stopped: Option<Error>,
    },
}

impl<E: JournalEvent> std::fmt::Debug for Replayer<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer")
            .field("target", &self.spec)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl<E: JournalEvent> Replayer<E> {
    /// A replayer from `journal` (owned by this process) to `target`: an SQLite file's path or
    /// a PostgreSQL connection string (see [`TargetSpec`]). Nothing is opened yet: the target
    /// is connected on the first sync (and reconnected after failures).
    pub fn new(
        journal: Arc<Journal>,
        target: impl Into<TargetSpec>,
        target_opts: TargetOptions,
        opts: ReplayOptions,
    ) -> Self {
        Self::with_source(Source::Owner(journal), target.into(), target_opts, opts)
    }

    /// A replayer that follows the journal in `dir` owned by another process: it reads, with
    /// `pread`, only entries up to the durable LSN the owner publishes (`HEAD`), and leaves
    /// acknowledging to the owner (whose next replay reads the target's watermark). Several
    /// replayers of one journal never apply an entry twice: each batch reads the target's
    /// watermark inside its transaction.
    pub fn follower(
        dir: impl AsRef<std::path::Path>,
        target: impl Into<TargetSpec>,
        target_opts: TargetOptions,
        opts: ReplayOptions,
    ) -> Result<Self> {
        let source = Source::follower(dir.as_ref())?;
        Ok(Self::with_source(source, target.into(), target_opts, opts))
    }

    fn with_source(
        source: Source,
        spec: TargetSpec,
        target_opts: TargetOptions,
        opts: ReplayOptions,
    ) -> Self {
        let name = spec.name();
        let mut state = ReplayState::load(source.dir());
        if !state
            .target
            .as_deref()
            .is_some_and(|t| spec.names_same_target(t))
        {
            state = ReplayState {
                target: Some(name.clone()),
                acknowledged_target: state.acknowledged_target,
                ..ReplayState::default()
            };
        }
        let acknowledges = match &state.acknowledged_target {
            None => true,
            Some(t) if spec.names_same_target(t) || opts.adopt_target => true,
            Some(t) => {
                if matches!(source, Source::Owner(_)) {
                    tracing::warn!(target = %name, acknowledged_target = %t, "this journal is acknowledged against another target: entries are applied here but not acknowledged (ReplayOptions::adopt_target, `sync --adopt-target`, makes this one the journal's target)");
                }
                false
            }
        };
        // What the file says the target held is not an observation of this replayer's:
        // statuses are measured on the target, read again.
        state.target_lsn = None;
        state.target_read_at_ms = None;
        Replayer {
            retention: target_opts.retention.clone(),
            last_prune: None,
            conflicts_read: false,
            target: crate::target::open(&spec, target_opts),
            spec,
            opts,
            reader: None,
            acknowledges,
            obs: Observer {
                watch: Arc::new(Watch::new(state)),
                expect: None,
                seen_in_sync: None,
            },
            rng: now_ms() ^ (u64::from(std::process::id()) << 32) | 1,
            source,
            _event: PhantomData,
        }
    }

    /// The journal directory replayed.
    pub fn journal_dir(&self) -> &std::path::Path {
        self.source.dir()
    }

    /// True if this replayer follows a journal owned by another process.
    pub fn is_follower(&self) -> bool {
        matches!(self.source, Source::Follower { .. })
    }

    /// The target the journal is acknowledged against, when it is another one than this
    /// replayer's (which then applies entries without acknowledging them; see
    /// [`ReplayOptions::adopt_target`]).
    pub fn acknowledged_elsewhere(&self) -> Option<String> {
        if self.acknowledges {
            return None;
        }
        self.obs.watch.get().acknowledged_target
    }

    /// What the replayer remembers of its last attempts (also kept in `replay.json`).
    pub fn state(&self) -> ReplayState {
        self.obs.watch.get()
    }

    /// The shared state, for watchers that must not wait for a sync in progress.
    pub(crate) fn watch(&self) -> Arc<Watch> {
        Arc::clone(&self.obs.watch)
    }

    pub(crate) fn persist(&self) {
        if let Err(e) = self.obs.watch.get().store(self.source.dir()) {
            tracing::error!(error = %e, "could not persist the replay state");
        }
    }

    /// The target, as named.
    pub fn target(&self) -> &TargetSpec {
        &self.spec
    }

    /// The options.
    pub fn options(&self) -> &ReplayOptions {
        &self.opts
    }

    /// Applies everything durable in the journal to the target, retrying transient failures
    /// with exponential backoff and jitter up to `retry_attempts_max` times, and reports what
    /// it did. It never reports success while entries are pending: `error` then says why.
    pub fn sync_now(&mut self) -> SyncReport {
        self.sync_now_with(&mut |_| {})
    }

    /// [`Replayer::sync_now`], calling `progress` after every committed batch.
    pub fn sync_now_with(&mut self, progress: &mut dyn FnMut(SyncProgress)) -> SyncReport {
        let started = Instant::now();
        let span = tracing::info_span!("sync", target = %self.spec).entered();
        let mut report = SyncReport::empty();
        self.obs.seen_in_sync = None;
        let mut attempt = 0u32;
        loop {
            match self.step() {
                Ok(Step::CaughtUp | Step::CheckIntegrity) => break,
                Ok(Step::Applied {
                    entries,
                    quarantined,
                    stopped,
                }) => {
                    report.applied += entries;
                    report.quarantined += quarantined;
                    report.transactions += 1;
                    attempt = 0;
                    let pending = self.source.positions().map_or(0, |p| {
                        p.durable
                            .saturating_sub(self.obs.seen_in_sync.unwrap_or(p.acked))
                    });
                    progress(SyncProgress {
                        applied: report.applied,
                        pending,
                    });
                    if let Some(e) = stopped {
                        report.error = Some(e);
                        break;
                    }
                }
                Err(e) if e.is_transient() && attempt < self.opts.retry_attempts_max => {
                    let delay = self.backoff(attempt);
                    tracing::info!(error = %e, attempt, delay_ms = delay.as_millis() as u64, "transient failure; retrying");
                    attempt += 1;
                    report.retries += 1;
                    std::thread::sleep(delay);
                }
                Err(e) => {
                    report.error = Some(e);
                    break;
                }
            }
        }
        // What is left, measured on the target: read its watermark if this sync never could.
        if self.obs.seen_in_sync.is_none()
            && !matches!(
                report.error,
                Some(Error::Target(TargetError::Damaged { .. }))
            )
            && let Ok(wm) = self.target_watermark()
        {
            self.obs.observe(wm, &self.spec);
        }
        report.target_lsn = self.obs.seen_in_sync;
        match self.source.positions() {
            Ok(p) => {
                report.pending_basis = match self.obs.seen_in_sync {
                    Some(_) => PendingBasis::Target,
                    None => PendingBasis::Acknowledgement,
                };
                report.pending = p
                    .durable
                    .saturating_sub(self.obs.seen_in_sync.unwrap_or(p.acked).min(p.durable));
            }
            Err(e) => {
                tracing::warn!(error = %e, "journal positions unreadable after the sync");
            }
        }
        match &report.error {
            None => self.obs.watch.update(|s| s.succeeded()),
            Some(e) => {
                tracing::info!(error = %e, pending = report.pending, "sync stopped");
                self.obs.watch.update(|s| s.failed(e));
            }
        }
        if report.error.is_none() && report.applied > 0 {
            self.prune_when_due();
        }
        // The conflict counts, from the target (the truth), after a sync that reached it and
        // applied something, and after this replayer's first: counting only the batches of
        // this process would miss conflicts recorded before it started (its saved state may be
        // older than the target), in a batch whose commit was in doubt and then found landed,
        // and those settled from another process while it was closed. A sync with nothing to
        // apply (the background's every second) does not read them.
        if report.error.is_none()
            && self.obs.seen_in_sync.is_some()
            && (report.applied > 0 || !self.conflicts_read)
        {
            self.refresh_conflicts(self.source.id());
        }
        self.target.idle();
        self.persist();
        report.duration = started.elapsed();
        tracing::info!(parent: &span, applied = report.applied, transactions = report.transactions, pending = report.pending, "sync finished");
        report
    }

    /// The retry delay before attempt `attempt + 1`: exponential, capped, with jitter in
    /// `[50%, 100%]` so that several replayers do not retry in lockstep.
    pub fn backoff(&mut self, attempt: u32) -> Duration {
        let base = self
            .opts
            .retry_delay_ms
            .saturating_mul(1u64 << attempt.min(20))
            .min(self.opts.retry_delay_max_ms);
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % 1000;
        Duration::from_millis(base / 2 + base * r / 2000)
    }

    /// One batch: one target transaction.
    fn step(&mut self) -> Result<Step> {
        let id = self.source.id();
        let pos = self.source.positions()?;
        self.check_damage_gate()?;
        let fresh_before = !self.target.is_connected();
        match self.batch(id, pos.durable, pos.first) {
            Ok(Step::CheckIntegrity) => {
                self.discard_target();
                self.reader = None;
                self.check_integrity("the target lost writes")?;
                self.step()
            }
            Ok(step) => Ok(step),
            Err(BatchError::InDoubt {
                last,
                entries,
                quarantined,
                cause,
            }) => self.verify_commit(id, last, entries, quarantined, cause),
            Err(BatchError::Failed(e)) => {
                // Roll back whatever is open; a connection that failed with anything but
                // "busy" is not trusted again.
                self.target.rollback();
                if !self.target.keeps_connection(&e) {
                    self.discard_target();
                }
                self.reader = None;
                // "Malformed" through a connection opened for this very batch is not an
                // outage that a new connection cures: check the file itself.
                if fresh_before && self.target.is_damage(&e) {
                    return Err(self.check_integrity(&e.to_string()).err().unwrap_or(e));
                }
                Err(e)
            }
        }
    }

    /// A target found damaged is not written until an integrity check passes again.
    fn check_damage_gate(&mut self) -> Result<()> {
        if self.obs.watch.get().target_damaged.is_none() {
            return Ok(());
        }
        self.discard_target();
        self.check_integrity("a previous integrity check failed")
    }

    /// Runs an integrity check through a fresh connection; records the target as damaged (and
    /// fails with [`TargetError::Damaged`]) if it does not pass, clears that record if it does.
    fn check_integrity(&mut self, why: &str) -> Result<()> {
        let path = self.spec.error_path();
        match self.target.integrity() {
            Ok(None) => {
                if self.obs.watch.get().target_damaged.is_some() {
                    tracing::info!(target = %self.spec, "the target passes its integrity check again");
                    self.obs.watch.update(|s| s.target_damaged = None);
                }
                Ok(())
            }
            Ok(Some(detail)) => {
                tracing::error!(target = %self.spec, %detail, "TARGET DAMAGED: the replayer will not write into it");
                let d = detail.clone();
                self.obs.watch.update(|s| s.target_damaged = Some(d));
                Err(Error::Target(TargetError::Damaged {
                    path,
                    detail: format!("{detail} (after: {why})"),
                }))
            }
            // Cannot even check: an outage, retried like one.
            Err(e) => Err(e),
        }
    }

    pub(crate) fn discard_target(&mut self) {
        self.target.discard();
    }

    /// One batch, as named protocol steps: begin (the target's write lock for this journal),
    /// read the watermark, decide (caught up, ahead, gap, lost writes), apply the entries after
    /// it, each in a savepoint, move the watermark, commit; acknowledge locally only once the
    /// commit has landed.
    fn batch(
        &mut self,
        id: uuid::Uuid,
        head: Lsn,
        first_retained: Lsn,
    ) -> Result<Step, BatchError> {
        let mut mode = BatchMode::Combined;
        let run = loop {
            self.target.begin(id, mode)?;
            let wm = self.target.read_watermark(id)?;
            if let Some(step) = self.before_applying(wm, head, first_retained)? {
                self.target.rollback();
                return Ok(step);
            }
            let run = self.apply_entries(id, wm, head)?;
            if run.last == wm {
                self.target.rollback();
                self.reader = None;
                return match run.stopped {
                    Some(e) => Err(BatchError::Failed(e)),
                    None => Ok(Step::CaughtUp),
                };
            }
            self.target.set_watermark(id, run.last)?;
            match self.target.settle()? {
                Settled::Applied => break (wm, run),
                Settled::Redo(why) if mode == BatchMode::Combined => {
                    // The target refused something of the batch sent together: do it again
                    // entry by entry, where the refused entry is known.
                    tracing::debug!(first = wm + 1, last = run.last, %why, "batch redone entry by entry");
                    self.target.rollback();
                    self.reader = None;
                    mode = BatchMode::EntryByEntry;
                }
                Settled::Redo(why) => {
                    return Err(BatchError::Failed(Error::Target(TargetError::Unusable {
                        path: self.spec.error_path(),
                        reason: format!(
                            "the target refused a batch applied entry by entry at settle: {why}"
                        ),
                    })));
                }
            }
        };
        let (wm, run) = run;
        let Run {
            last,
            entries,
            quarantined,
            conflicts,
            stopped,
        } = run;
        match self.target.commit() {
            Commit::Landed => {}
            Commit::Failed(e) => return Err(BatchError::Failed(e)),
            Commit::InDoubt(cause) => {
                return Err(BatchError::InDoubt {
                    last,
                    entries,
                    quarantined,
                    cause: Box::new(cause),
                });
            }
        }
        let _span =
            tracing::debug_span!("batch", first = wm + 1, last, entries, quarantined).entered();
        self.obs.observe(last, &self.spec);
        self.obs.watch.update(|s| s.quarantined += quarantined);
        if conflicts > 0 {
            self.refresh_conflicts(id);
        }
        tracing::debug!(
            first = wm + 1,
            last,
            entries,
            quarantined,
            conflicts,
            "batch committed"
        );
        // The batch is on the target whatever happens next: count it. A failed local
        // acknowledgement (which poisons the journal) is what stops the sync then; the target's
        // watermark still says how far it got, and the next owner acknowledges it.
        let acked = self.ack(last);
        Ok(Step::Applied {
            entries,
            quarantined,
            stopped: acked.err().or(stopped),
        })
    }

    /// What the watermark read inside the batch means before anything is applied: `Some` ends
    /// the batch (rolled back by the caller).
    fn before_applying(
        &mut self,
        wm: Lsn,
        head: Lsn,
        first_retained: Lsn,
    ) -> Result<Option<Step>, BatchError> {
        let path = self.spec.error_path();
        if self.obs.observe(wm, &self.spec) {
            // Writes were lost: the target may be damaged too (two machines writing one file
            // over a share that does not forward locks). Check it before writing into it.
            return Ok(Some(Step::CheckIntegrity));
        }
        if wm > head && self.is_follower() {
            // The owner's replay can be ahead of the HEAD it published: caught up.
            return Ok(Some(Step::CaughtUp));
        }
        if wm > head {
            return Err(BatchError::Failed(Error::Target(TargetError::Ahead {
                path,
                target_lsn: wm,
                head,
            })));
        }
        if wm < head && wm + 1 < first_retained {
            return Err(BatchError::Failed(Error::Target(TargetError::ReplayGap {
                path,
                target_lsn: wm,
                first_retained,
            })));
        }
        // The target may be ahead of the local acknowledgement (a crash after a commit):
        // acknowledge what it already has and start after it.
        self.ack(wm).map_err(BatchError::Failed)?;
        if wm == head {
            return Ok(Some(Step::CaughtUp));
        }
        Ok(None)
    }

    /// Applies the entries after `wm`, up to the batch limits, in the open batch. Only the
    /// entry right after the last one applied (or quarantined) may be applied: never one that
    /// would leave a hole under the new watermark.
    fn apply_entries(&mut self, id: uuid::Uuid, wm: Lsn, head: Lsn) -> Result<Run, Error> {
        let policy = self.opts.reject_policy;
        let (entries_max, bytes_max) = (self.opts.batch_entries_max, self.opts.batch_bytes_max);
        let reader = match &mut self.reader {
            Some(r) if r.next_lsn() == wm + 1 => r,
            slot => {
                *slot = Some(self.source.reader(wm + 1, head)?);
                slot.as_mut().expect("set above")
            }
        };
        reader.set_limit(head);
        // Conflicts: every stamped entry's rows looked up at once, before anything is applied.
        let found = if self.opts.conflicts.detects() {
            let ahead = self.source.reader(wm + 1, head)?;
            settle::probe_batch::<E>(&mut *self.target, ahead, id, (entries_max, bytes_max))?
        } else {
            Found::default()
        };
        let policies = &self.opts.conflicts;
        let target = &mut self.target;
        let journal_dir = self.source.dir();
        let mut run = Run {
            last: wm,
            entries: 0,
            quarantined: 0,
            conflicts: 0,
            stopped: None,
        };
        let mut bytes = 0usize;
        while ((run.entries + run.quarantined) as usize) < entries_max && bytes < bytes_max {
            let Some(rec) = reader.next_ref()? else {
                if run.last < head {
                    // The journal's durable head says more records exist.
                    return Err(Error::Journal(JournalError::Discontinuity {
                        dir: journal_dir.to_path_buf(),
                        expected: run.last + 1,
                        found: None,
                    }));
                }
                break;
            };
            let lsn = rec.lsn;
            if lsn != run.last + 1 {
                return Err(Error::Journal(JournalError::Discontinuity {
                    dir: journal_dir.to_path_buf(),
                    expected: run.last + 1,
                    found: Some(lsn),
                }));
            }
            bytes += rec.payload.len();
            let _span = tracing::trace_span!("entry", lsn).entered();
            if let Some(gap) = rec.gap() {
                if policy == RejectPolicy::Stop {
                    run.stopped = Some(Error::Target(TargetError::JournalGap {
                        from: gap.start,
                        to: gap.end,
                    }));
                    break;
                }
                target.quarantine(
                    id,
                    &Rejected {
                        lsn: gap.start,
                        kind: KIND_GAP,
                        payload: &[],
                        summary: &format!(
                            "{} lost to journal damage",
                            crate::error::lsn_span(&gap)
                        ),
                        reason: "lost to journal damage (salvaged)",
                    },
                )?;
                run.quarantined += 1;
                run.last = gap.end - 1;
                continue;
            }
            if rec.kind != E::KIND {
                // Not the target's refusal but this program's ignorance: stop before it
                // whatever the policy (quarantining it would move the watermark past an entry
                // nobody applied); the application's own replayer applies it.
                run.stopped = Some(Error::Target(TargetError::UnknownKind {
                    lsn,
                    kind: rec.kind,
                    expected: E::KIND,
                }));
                break;
            }
            let decoded = decode_stamped_event::<E>(rec.payload);
            // An entry that meets a conflict is settled by its tables' policies first.
            let mut plan = Plan::AsIs;
            let mut planned = Vec::new();
            if !found.is_empty()
                && let (Ok((_, event, Some(stamp))), Some(hits)) = (&decoded, found.of(lsn))
            {
                (plan, planned) = settle::plan(&mut **target, policies, id, event, *stamp, hits)?;
            }
            target.savepoint()?;
            let applied = match (&decoded, &plan) {
                (Err(reason), _) => Applied::Refused(format!("undecodable payload: {reason}")),
                (Ok(_), Plan::Refuse(why)) => Applied::Refused(why.clone()),
                (Ok(_), Plan::Skip) => Applied::Done,
                (Ok(_), Plan::Apply(event)) => {
                    target.apply(lsn, &mut |db| apply_event(event, db))?
                }
                (Ok((_, event, _)), Plan::AsIs) => {
                    target.apply(lsn, &mut |db| apply_event(event, db))?
                }
            };
            // Described only when refused or in conflict (describing every entry costs as
            // much as applying).
            let summary = || match &decoded {
                Ok((_, e, _)) => e.describe(),
                Err(_) => format!(
                    "kind {:#04x} record of {} bytes",
                    rec.kind,
                    rec.payload.len()
                ),
            };
            let stamp = match &decoded {
                Ok((_, _, Some(s))) => Some(*s),
                _ => None,
            };
            // `kept`: the rows the entry did not write (their records keep the value's clock).
            let touch = |target: &mut Box<dyn Target>, kept: &dyn Fn(&str, &Columns) -> bool| {
                if let Ok((created_at_ms, event, stamp)) = &decoded {
                    for (table, key) in event.touched_rows() {
                        let clock = EntryClock {
                            created_at_ms: *created_at_ms,
                            hlc: stamp.map(|s| s.hlc),
                            inherit: kept(table, key),
                        };
                        target.touch(table, key, lsn, clock);
                    }
                }
            };
            match applied {
                Applied::Done => {
                    target.release()?;
                    let dropped = settle::dropped_rows(&planned);
                    touch(target, &|t, k| {
                        !dropped.is_empty() && dropped.contains(&row_identity(t, k))
                    });
                    if let Some(stamp) = stamp
                        && !planned.is_empty()
                    {
                        settle::record(
                            &mut **target,
                            id,
                            lsn,
                            (&summary(), stamp),
                            &planned,
                            false,
                        )?;
                        run.conflicts += planned.len() as u64;
                    }
                }
                Applied::Unsupported(backend) => {
                    target.rollback_to()?;
                    run.stopped = Some(Error::Target(TargetError::NoApply {
                        lsn,
                        kind: rec.kind,
                        backend,
                    }));
                    break;
                }
                Applied::Refused(reason) => {
                    target.rollback_to()?;
                    let summary = summary();
                    if policy == RejectPolicy::Stop {
                        run.stopped = Some(Error::Target(TargetError::EntryRejected {
                            lsn,
                            entry: summary,
                            reason,
                        }));
                        break;
                    }
                    tracing::warn!(lsn, entry = %summary, %reason, "entry quarantined");
                    target.quarantine(
                        id,
                        &Rejected {
                            lsn,
                            kind: rec.kind,
                            payload: rec.payload,
                            summary: &summary,
                            reason: &reason,
                        },
                    )?;
                    touch(target, &|_, _| true);
                    if let Some(stamp) = stamp
                        && !planned.is_empty()
                    {
                        // Quarantined, for whatever reason: a human decides its conflicts.
                        settle::reject(&mut planned);
                        settle::record(&mut **target, id, lsn, (&summary, stamp), &planned, true)?;
                        run.conflicts += planned.len() as u64;
                    }
                    run.quarantined += 1;
                    run.last = lsn;
                    continue;
                }
            }
            run.last = lsn;
            run.entries += 1;
        }
        Ok(run)
    }

    /// Prunes the change log by the target options' retention if the last pruning is at least
    /// `prune_interval_ms` old (best effort: a failure is logged and tried again next time).
    fn prune_when_due(&mut self) {
        if !self.retention.prunes()
            || self.last_prune.is_some_and(|t| {
                t.elapsed() < Duration::from_millis(self.retention.prune_interval_ms)
            })
        {
            return;
        }
        self.last_prune = Some(Instant::now());
        match self.target.prune_changes(&self.retention) {
            Ok(r) if r.removed > 0 || r.held_by.is_some() => {
                tracing::info!(floor = r.floor_seq, removed = r.removed, held_by = ?r.held_by, "change log pruned");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the change log could not be pruned"),
        }
    }

    /// Prunes the change log now by the target options' retention
    /// ([`TargetOptions::change_log_retention`]), whatever the interval, and says what it did.
    pub fn prune_change_log(&mut self) -> Result<PruneReport> {
        self.last_prune = Some(Instant::now());
        let r = self.target.prune_changes(&self.retention);
        self.target.idle();
        r
    }

    /// Records on the target that this journal's cache needs the change log from `seq` on
    /// (`sync-protocol.md` §2.6).
    pub(crate) fn report_cursor(&mut self, seq: u64) -> Result<()> {
        let r = self.target.record_cursor(self.source.id(), seq);
        self.target.idle();
        r
    }

    /// Reads this journal's conflict counts from the target into the status (best effort: a
    /// failure leaves the last counts seen).
    pub(crate) fn refresh_conflicts(&mut self, id: uuid::Uuid) {
        match self.target.conflict_counts(id) {
            Ok(c) => {
                self.conflicts_read = true;
                self.obs.watch.update(|s| s.conflicts = c);
            }
            Err(e) => tracing::debug!(error = %e, "conflict counts not read"),
        }
    }

    /// After a commit reported an error: learn from a new connection whether it landed.
    fn verify_commit(
        &mut self,
        id: uuid::Uuid,
        last: Lsn,
        entries: u64,
        quarantined: u64,
        cause: Box<Error>,
    ) -> Result<Step> {
        tracing::warn!(error = %cause, last, "commit outcome unknown; verifying through a new connection");
        self.discard_target();
        self.reader = None;
        let wm = match self.target.watermark(id) {
            Ok(wm) => wm,
            Err(e) => {
                self.discard_target();
                return Err(Error::Target(TargetError::Unavailable {
                    path: self.spec.error_path(),
                    message: format!(
                        "commit outcome unknown ({cause}); the target cannot be reached to verify it ({e}); the next attempt reads the watermark again"
                    ),
                    transient: true,
                    source: None,
                }));
            }
        };
        self.obs.observe(wm, &self.spec);
        if self.target.is_damage(&cause) {
            // The commit may have met another writer (a lost writer lease): check the file.
            self.check_integrity(&cause.to_string())?;
        }
        if wm >= last {
            tracing::info!(last, "the in-doubt commit had landed");
            self.obs.watch.update(|s| s.quarantined += quarantined);
            let acked = self.ack(last);
            return Ok(Step::Applied {
                entries,
                quarantined,
                stopped: acked.err(),
            });
        }
        Err(Error::Target(TargetError::Unavailable {
            path: self.spec.error_path(),
            message: format!("commit failed and did not land (watermark {wm}): {cause}"),
            transient: true,
            source: None,
        }))
    }

    /// Acknowledges `lsn` in the journal (owner only), recording this target as the one the
    /// journal is acknowledged against the first time.
    fn ack(&self, lsn: Lsn) -> Result<()> {
        if !self.acknowledges || !matches!(self.source, Source::Owner(_)) {
            return Ok(());
        }
        let name = self.spec.name();
        let st = self.obs.watch.get();
        if !st
            .acknowledged_target
            .as_deref()
            .is_some_and(|t| self.spec.names_same_target(t))
        {
            self.obs
                .watch
                .update(|s| s.acknowledged_target = Some(name.clone()));
            // Recorded before the first acknowledgement for it is.
            self.persist();
        }
        self.source.ack(lsn)
    }

    /// Records a watermark read from the target just now by someone else (the store, at open).
    pub(crate) fn note_observed(&mut self, wm: Lsn) {
        self.obs.observe(wm, &self.spec);
    }

    /// Reads the target's watermark now (without taking its write lock) and records it as an
    /// observation: statuses and `wait_synced` use it, and a watermark lower than the last one
    /// this replayer read or committed is reported as lost writes.
    pub fn observe_target(&mut self) -> Result<Lsn> {
        let wm = self.target_watermark()?;
        self.obs.observe(wm, &self.spec);
        Ok(wm)
    }

    /// A page of the target's change log after `after`, with this journal's watermark, read
    /// in one snapshot (the target's lease is kept until [`Replayer::idle`]). The watermark
    /// is recorded as an observation.
    pub(crate) fn changes_after(
        &mut self,
        after: u64,
        limit: usize,
    ) -> Result<crate::target::ChangePage> {
        let id = self.source.id();
        let page = self.target.changes_after(id, after, limit)?;
        self.obs.observe(page.watermark, &self.spec);
        Ok(page)
    }

    /// Every row of `tables` on the target, in one snapshot, to `sink`; returns the change
    /// log's head and this journal's watermark in that snapshot (recorded as an observation).
    pub(crate) fn snapshot(
        &mut self,
        tables: &[String],
        sink: &mut crate::target::RowSink<'_>,
    ) -> Result<(u64, Lsn)> {
        let id = self.source.id();
        let (head, wm) = self.target.snapshot(id, tables, sink)?;
        self.obs.observe(wm, &self.spec);
        Ok((head, wm))
    }

    /// Done with the target for now: a writer lease is released.
    pub(crate) fn idle(&mut self) {
        self.target.idle();
    }

    /// The target's watermark for this journal, read now.
    pub fn target_watermark(&mut self) -> Result<Lsn> {
        let id = self.source.id();
        let r = self.target.watermark(id);
        self.target.idle();
        r
    }
}

enum BatchError {
    Failed(Error),
    /// The commit reported an error; whether it landed is unknown.
    InDoubt {
        last: Lsn,
        entries: u64,
        quarantined: u64,
        cause: Box<Error>,
    },
}

impl From<Error> for BatchError {
    fn from(e: Error) -> Self {
        BatchError::Failed(e)
    }
}

/// What [`Replayer::apply_entries`] did in the open batch.
struct Run {
    /// The last LSN applied or quarantined (the watermark to set).
    last: Lsn,
    entries: u64,
    quarantined: u64,
    /// Conflicts recorded.
    conflicts: u64,
    /// The entry the batch stopped before, and why.
    stopped: Option<Error>,
}

/// Applies `event` with its apply for the database at hand.
fn apply_event<E: JournalEvent>(event: &E, db: EventDb<'_, '_>) -> Result<(), ApplyError> {
    match db {
        EventDb::Sqlite(ctx) => event.apply(ctx),
        #[cfg(feature = "postgres")]
        EventDb::Postgres(ctx) => event.apply_postgres(ctx),
    }
}
