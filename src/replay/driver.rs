//! The exactly-once replay driver.
//!
//! Each batch is one target transaction that (1) reads the target's watermark for this journal
//! *inside* the transaction (after `BEGIN IMMEDIATE`, so no other writer can move it), (2)
//! applies the entries from `watermark + 1` on, each in a savepoint, and (3) sets the watermark
//! to the last entry, then commits. The journal is acknowledged locally only after the commit
//! is known to have landed. Consequences:
//!
//! * a crash anywhere before the commit loses the transaction and nothing is acknowledged: the
//!   same entries are applied again, once;
//! * a crash after the commit but before the local acknowledgement is repaired by the next
//!   batch, which reads the watermark and starts after it;
//! * a commit that reports an error may have landed (seen on real shares): the connection is
//!   discarded and the watermark read again through a new one; nothing is guessed.

use crate::error::{JournalError, TargetError};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension};

use crate::apply::{ApplyContext, ApplyError, SchemaCache};
use crate::error::{Error, Result};
use crate::event::{JournalEvent, decode_event};
use crate::format::KIND_GAP;
use crate::format::Lsn;
use crate::journal::Journal;
use crate::journal::ack::now_ms;
use crate::mutation::ChangeSet;
use crate::replay::options::{RejectPolicy, ReplayOptions, TargetOptions};
use crate::replay::report::{SyncProgress, SyncReport};
use crate::replay::source::{Source, SourceReader};
use crate::replay::sqlite::{SqliteTarget, read_watermark, target_error, watermark_value};
use crate::replay::state::{LostWrites, ReplayState};
use crate::replay::status::PendingBasis;
use crate::replay::watch::Watch;

/// An entry the target refused, kept in its `syncjournal_rejected` table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuarantinedEntry {
    /// The entry's LSN.
    pub lsn: Lsn,
    /// Its record kind.
    pub kind: u8,
    /// A one-line description.
    pub summary: String,
    /// Why the target refused it.
    pub error: String,
    /// When, ms since the Unix epoch.
    pub rejected_at_ms: u64,
}

/// Applies journal entries to an SQLite target exactly once. See the module documentation
/// for the protocol.
pub struct Replayer<E: JournalEvent = ChangeSet> {
    source: Source,
    target: SqliteTarget,
    opts: ReplayOptions,
    reader: Option<SourceReader>,
    schema: SchemaCache,
    /// False when the journal is acknowledged against another target (see
    /// [`ReplayOptions::adopt_target`]).
    acknowledges: bool,
    obs: Observer,
    rng: u64,
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
            .field("target", &self.target.path())
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl<E: JournalEvent> Replayer<E> {
    /// A replayer from `journal` (owned by this process) to the SQLite database at `target`.
    /// Nothing is opened yet: the target is connected on the first sync (and reconnected
    /// after failures).
    pub fn new(
        journal: Arc<Journal>,
        target: impl Into<PathBuf>,
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
        target: impl Into<PathBuf>,
        target_opts: TargetOptions,
        opts: ReplayOptions,
    ) -> Result<Self> {
        let source = Source::follower(dir.as_ref())?;
        Ok(Self::with_source(source, target.into(), target_opts, opts))
    }

    fn with_source(
        source: Source,
        target: PathBuf,
        target_opts: TargetOptions,
        opts: ReplayOptions,
    ) -> Self {
        let name = crate::replay::target_name(&target);
        let mut state = ReplayState::load(source.dir());
        if state.target.as_deref() != Some(name.as_str()) {
            state = ReplayState {
                target: Some(name.clone()),
                acknowledged_target: state.acknowledged_target,
                ..ReplayState::default()
            };
        }
        let acknowledges = match &state.acknowledged_target {
            None => true,
            Some(t) if *t == name || opts.adopt_target => true,
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
            target: SqliteTarget::new(target, target_opts),
            opts,
            reader: None,
            schema: SchemaCache::new(),
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

    fn persist(&self) {
        if let Err(e) = self.obs.watch.get().store(self.source.dir()) {
            tracing::error!(error = %e, "could not persist the replay state");
        }
    }

    /// The target's path.
    pub fn target_path(&self) -> &std::path::Path {
        self.target.path()
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
        let span = tracing::info_span!("sync", target = %self.target.path().display()).entered();
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
            let path = self.target.path().to_path_buf();
            self.obs.observe(wm, &path);
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
                if self.target.is_connected() {
                    let _ = self.target.connection().execute_batch("ROLLBACK");
                }
                if !is_busy(&e) {
                    self.discard_target();
                }
                self.reader = None;
                // "Malformed" through a connection opened for this very batch is not an
                // outage that a new connection cures: check the file itself.
                if fresh_before && is_corrupt(&e) {
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
        let path = self.target.path().to_path_buf();
        match crate::replay::sqlite::quick_check(&path) {
            Ok(None) => {
                if self.obs.watch.get().target_damaged.is_some() {
                    tracing::info!(target = %path.display(), "the target passes its integrity check again");
                    self.obs.watch.update(|s| s.target_damaged = None);
                }
                Ok(())
            }
            Ok(Some(detail)) => {
                tracing::error!(target = %path.display(), %detail, "TARGET DAMAGED: the replayer will not write into it");
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

    fn discard_target(&mut self) {
        self.target.discard();
        self.schema.clear();
    }

    fn batch(
        &mut self,
        id: uuid::Uuid,
        head: Lsn,
        first_retained: Lsn,
    ) -> Result<Step, BatchError> {
        let path = self.target.path().to_path_buf();
        let policy = self.opts.reject_policy;
        let (entries_max, bytes_max) = (self.opts.batch_entries_max, self.opts.batch_bytes_max);
        let mut ix = 0usize;
        if self.target.connect()? {
            self.schema.clear();
        }
        let conn = self.target.connection();
        let hooked = Hooked {
            target: &self.target,
            path: &path,
        };
        hooked
            .exec(conn, &mut ix, "BEGIN", "BEGIN IMMEDIATE")
            .map_err(BatchError::Failed)?;
        let raw = hooked
            .query(conn, &mut ix, "read watermark", |c| read_watermark(c, id))
            .map_err(BatchError::Failed)?;
        let wm = watermark_value(&path, raw).map_err(BatchError::Failed)?;
        if self.obs.observe(wm, &path) {
            // Writes were lost: the file may be damaged too (two machines writing it over a
            // share that does not forward locks). Check it before writing into it.
            let _ = conn.execute_batch("ROLLBACK");
            return Ok(Step::CheckIntegrity);
        }
        if wm > head && self.is_follower() {
            // The owner's replay can be ahead of the HEAD it published: caught up.
            let _ = conn.execute_batch("ROLLBACK");
            return Ok(Step::CaughtUp);
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
        if wm == head {
            let _ = conn.execute_batch("ROLLBACK");
            self.ack(wm).map_err(BatchError::Failed)?;
            return Ok(Step::CaughtUp);
        }
        // The target may be ahead of the local acknowledgement (a crash after a commit):
        // acknowledge what it already has and start after it.
        self.ack(wm).map_err(BatchError::Failed)?;

        let reader = match &mut self.reader {
            Some(r) if r.next_lsn() == wm + 1 => r,
            slot => {
                *slot = Some(
                    self.source
                        .reader(wm + 1, head)
                        .map_err(BatchError::Failed)?,
                );
                slot.as_mut().expect("set above")
            }
        };
        reader.set_limit(head);
        let schema = &mut self.schema;
        let journal_dir = self.source.dir().to_path_buf();
        let mut last = wm;
        let mut entries = 0u64;
        let mut quarantined = 0u64;
        let mut bytes = 0usize;
        let mut stopped = None;
        let outcome: Result<(), Error> = (|| {
            while ((entries + quarantined) as usize) < entries_max && bytes < bytes_max {
                let Some(rec) = reader.next_ref()? else {
                    if last < head {
                        // The journal's durable head says more records exist.
                        return Err(Error::Journal(JournalError::Discontinuity {
                            dir: journal_dir.clone(),
                            expected: last + 1,
                            found: None,
                        }));
                    }
                    break;
                };
                let lsn = rec.lsn;
                // Only the entry right after the watermark may be applied: never one that
                // would leave a hole under the new watermark.
                if lsn != last + 1 {
                    return Err(Error::Journal(JournalError::Discontinuity {
                        dir: journal_dir.clone(),
                        expected: last + 1,
                        found: Some(lsn),
                    }));
                }
                bytes += rec.payload.len();
                let _span = tracing::trace_span!("entry", lsn).entered();
                if let Some(gap) = rec.gap() {
                    if policy == RejectPolicy::Stop {
                        stopped = Some(Error::Target(TargetError::JournalGap {
                            from: gap.start,
                            to: gap.end,
                        }));
                        break;
                    }
                    quarantine(
                        &hooked,
                        conn,
                        &mut ix,
                        id,
                        gap.start,
                        KIND_GAP,
                        &[],
                        &format!("{} lost to journal damage", crate::error::lsn_span(&gap)),
                        "lost to journal damage (salvaged)",
                    )?;
                    quarantined += 1;
                    last = gap.end - 1;
                    continue;
                }
                if rec.kind != E::KIND {
                    // Not the target's refusal but this program's ignorance: stop before it
                    // whatever the policy (quarantining it would move the watermark past an
                    // entry nobody applied); the application's own replayer applies it.
                    stopped = Some(Error::Target(TargetError::UnknownKind {
                        lsn,
                        kind: rec.kind,
                        expected: E::KIND,
                    }));
                    break;
                }
                let decoded = decode_event::<E>(rec.payload).map_err(|reason| {
                    ApplyError::permanent(format!("undecodable payload: {reason}"))
                });
                let summary = match &decoded {
                    Ok((_, e)) => e.describe(),
                    Err(_) => format!(
                        "kind {:#04x} record of {} bytes",
                        rec.kind,
                        rec.payload.len()
                    ),
                };
                hooked.exec(conn, &mut ix, "savepoint", "SAVEPOINT sj_entry")?;
                let applied = decoded.and_then(|(_, event)| {
                    hooked.hook(&mut ix, "event").map_err(ApplyError::from)?;
                    let mut ctx = ApplyContext::new(conn, schema, lsn);
                    event.apply(&mut ctx)
                });
                match applied {
                    Ok(()) => {
                        hooked.exec(conn, &mut ix, "release", "RELEASE sj_entry")?;
                    }
                    Err(ApplyError::Transient(e)) => {
                        return Err(target_error(
                            &path,
                            &format!("apply LSN {lsn}"),
                            e.into_inner(),
                        ));
                    }
                    Err(ApplyError::Permanent { reason }) => {
                        hooked.exec(
                            conn,
                            &mut ix,
                            "rollback to",
                            "ROLLBACK TO sj_entry; RELEASE sj_entry",
                        )?;
                        if policy == RejectPolicy::Stop {
                            stopped = Some(Error::Target(TargetError::EntryRejected {
                                lsn,
                                entry: summary,
                                reason,
                            }));
                            break;
                        }
                        tracing::warn!(lsn, entry = %summary, %reason, "entry quarantined");
                        quarantine(
                            &hooked,
                            conn,
                            &mut ix,
                            id,
                            lsn,
                            rec.kind,
                            rec.payload,
                            &summary,
                            &reason,
                        )?;
                        quarantined += 1;
                        last = lsn;
                        continue;
                    }
                }
                last = lsn;
                entries += 1;
            }
            Ok(())
        })();
        outcome?;
        if last == wm {
            let _ = conn.execute_batch("ROLLBACK");
            self.reader = None;
            return match stopped {
                Some(e) => Err(BatchError::Failed(e)),
                None => Ok(Step::CaughtUp),
            };
        }
        hooked
            .hook(&mut ix, "update watermark")
            .and_then(|()| {
                conn.prepare_cached(
                    "INSERT INTO syncjournal_progress (journal_id, lsn, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (journal_id) DO UPDATE SET lsn = excluded.lsn, updated_at = excluded.updated_at",
                )?
                .execute((id.to_string(), last as i64, now_ms() as i64))
            })
            .map_err(|e| BatchError::Failed(target_error(&path, "update watermark", e)))?;
        let commit = hooked
            .hook(&mut ix, "commit")
            .and_then(|()| conn.execute_batch("COMMIT"));
        if let Err(e) = commit {
            return Err(BatchError::InDoubt {
                last,
                entries,
                quarantined,
                cause: Box::new(target_error(&path, "commit", e)),
            });
        }
        if let Err(e) = self.target.after_commit_hook() {
            return Err(BatchError::InDoubt {
                last,
                entries,
                quarantined,
                cause: Box::new(target_error(&path, "after commit", e)),
            });
        }
        let _span =
            tracing::debug_span!("batch", first = wm + 1, last, entries, quarantined).entered();
        self.obs.observe(last, &path);
        self.obs.watch.update(|s| s.quarantined += quarantined);
        tracing::debug!(
            first = wm + 1,
            last,
            entries,
            quarantined,
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
                    path: self.target.path().to_path_buf(),
                    message: format!(
                        "commit outcome unknown ({cause}); the target cannot be reached to verify it ({e}); the next attempt reads the watermark again"
                    ),
                    transient: true,
                    source: None,
                }));
            }
        };
        let path = self.target.path().to_path_buf();
        self.obs.observe(wm, &path);
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
            path: self.target.path().to_path_buf(),
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
        let name = crate::replay::target_name(self.target.path());
        let st = self.obs.watch.get();
        if st.acknowledged_target.as_deref() != Some(name.as_str()) {
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
        let path = self.target.path().to_path_buf();
        self.obs.observe(wm, &path);
    }

    /// Reads the target's watermark now (without taking its write lock) and records it as an
    /// observation: statuses and `wait_synced` use it, and a watermark lower than the last one
    /// this replayer read or committed is reported as lost writes.
    pub fn observe_target(&mut self) -> Result<Lsn> {
        let wm = self.target_watermark()?;
        let path = self.target.path().to_path_buf();
        self.obs.observe(wm, &path);
        Ok(wm)
    }

    /// The target's watermark for this journal, read now.
    pub fn target_watermark(&mut self) -> Result<Lsn> {
        let id = self.source.id();
        let r = self.target.watermark(id);
        if r.is_err() {
            self.discard_target();
        }
        r
    }

    /// Lists the entries quarantined on the target for this journal.
    pub fn quarantined(&mut self) -> Result<Vec<QuarantinedEntry>> {
        let id = self.source.id().to_string();
        let path = self.target.path().to_path_buf();
        let conn = self.target.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT lsn, kind, summary, error, rejected_at FROM syncjournal_rejected
                 WHERE journal_id = ?1 ORDER BY lsn",
            )
            .map_err(|e| target_error(&path, "list quarantine", e))?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(QuarantinedEntry {
                    lsn: r.get::<_, i64>(0)? as Lsn,
                    kind: r.get::<_, i64>(1)? as u8,
                    summary: r.get(2)?,
                    error: r.get(3)?,
                    rejected_at_ms: r.get::<_, i64>(4)? as u64,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| target_error(&path, "list quarantine", e))?;
        drop(stmt);
        self.obs.watch.update(|s| s.quarantined = rows.len() as u64);
        self.persist();
        Ok(rows)
    }

    /// Applies a quarantined entry again (out of order: after everything already applied) and
    /// removes it from quarantine if it now applies; otherwise records the new error and
    /// returns [`TargetError::EntryRejected`].
    pub fn retry_quarantined(&mut self, lsn: Lsn) -> Result<()> {
        let id = self.source.id().to_string();
        let path = self.target.path().to_path_buf();
        if self.target.connect()? {
            self.schema.clear();
        }
        let schema = &mut self.schema;
        let conn = self.target.connection();
        let result = (|| -> Result<()> {
            conn.execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| target_error(&path, "begin", e))?;
            let row: Option<(i64, Vec<u8>, String)> = conn
                .query_row(
                    "SELECT kind, payload, summary FROM syncjournal_rejected WHERE journal_id = ?1 AND lsn = ?2",
                    (&id, lsn as i64),
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(|e| target_error(&path, "read quarantine", e))?;
            let Some((kind, payload, summary)) = row else {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(Error::Target(TargetError::EntryRejected {
                    lsn,
                    entry: "(none)".into(),
                    reason: "no quarantined entry has this LSN".into(),
                }));
            };
            let applied = if kind as u8 == E::KIND {
                decode_event::<E>(&payload)
                    .map_err(|r| ApplyError::permanent(format!("undecodable payload: {r}")))
                    .and_then(|(_, ev)| ev.apply(&mut ApplyContext::new(conn, schema, lsn)))
            } else {
                Err(ApplyError::permanent(format!(
                    "kind {kind:#04x} cannot be applied by this program"
                )))
            };
            match applied {
                Ok(()) => {
                    conn.execute(
                        "DELETE FROM syncjournal_rejected WHERE journal_id = ?1 AND lsn = ?2",
                        (&id, lsn as i64),
                    )
                    .and_then(|_| conn.execute_batch("COMMIT"))
                    .map_err(|e| target_error(&path, "commit retry", e))?;
                    tracing::info!(lsn, entry = %summary, "quarantined entry applied on retry");
                    Ok(())
                }
                Err(ApplyError::Transient(e)) => Err(target_error(&path, "retry", e.into_inner())),
                Err(ApplyError::Permanent { reason }) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    let _ = conn.execute(
                        "UPDATE syncjournal_rejected SET error = ?3, rejected_at = ?4 WHERE journal_id = ?1 AND lsn = ?2",
                        (&id, lsn as i64, &reason, now_ms() as i64),
                    );
                    Err(Error::Target(TargetError::EntryRejected {
                        lsn,
                        entry: summary,
                        reason,
                    }))
                }
            }
        })();
        if result.as_ref().is_err_and(|e| e.is_transient()) {
            let _ = conn.execute_batch("ROLLBACK");
            self.discard_target();
        } else {
            self.recount_quarantine();
        }
        result
    }

    /// Re-reads the quarantine count from the target and persists it (after a retry or a
    /// discard, so that the status never shows a stale count).
    fn recount_quarantine(&mut self) {
        let id = self.source.id().to_string();
        let n = self.target.conn().ok().and_then(|c| {
            c.query_row(
                "SELECT count(*) FROM syncjournal_rejected WHERE journal_id = ?1",
                [&id],
                |r| r.get::<_, i64>(0),
            )
            .ok()
        });
        if let Some(n) = n {
            self.obs.watch.update(|s| s.quarantined = n.max(0) as u64);
            self.persist();
        }
    }

    /// Removes a quarantined entry for good (an explicit operator decision, logged).
    pub fn discard_quarantined(&mut self, lsn: Lsn) -> Result<bool> {
        let id = self.source.id().to_string();
        let path = self.target.path().to_path_buf();
        let conn = self.target.conn()?;
        let n = conn
            .execute(
                "DELETE FROM syncjournal_rejected WHERE journal_id = ?1 AND lsn = ?2",
                (&id, lsn as i64),
            )
            .map_err(|e| target_error(&path, "discard quarantined entry", e))?;
        if n > 0 {
            tracing::warn!(lsn, "quarantined entry discarded by request");
        }
        self.recount_quarantine();
        Ok(n > 0)
    }
}

/// What the replayer learns of the target's watermark, and what it concludes.
struct Observer {
    /// What the replayer remembers (errors, the target's watermark as read), shared with
    /// watchers.
    watch: Arc<Watch>,
    /// The watermark this replayer last read or committed itself: a lower one read later
    /// means the target lost writes. `None` until the first read.
    expect: Option<Lsn>,
    /// The watermark read or committed during the current `sync_now`.
    seen_in_sync: Option<Lsn>,
}

impl Observer {
    /// Records a watermark read from (or committed to) the target now, and reports lost
    /// writes if it is lower than the last one this replayer itself read or committed.
    /// Returns true if writes were lost.
    fn observe(&mut self, wm: Lsn, target: &std::path::Path) -> bool {
        self.seen_in_sync = Some(wm);
        let lost = self.expect.filter(|&e| wm < e).map(|expected| LostWrites {
            expected_lsn: expected,
            found_lsn: wm,
            at_ms: now_ms(),
        });
        self.expect = Some(wm);
        let was_lost = lost.is_some();
        if let Some(l) = &lost {
            tracing::error!(target = %target.display(), expected = l.expected_lsn, found = wm, "LOST WRITES on the target: {}", l.describe());
        }
        self.watch.update(|s| {
            s.observed(wm);
            if let Some(l) = lost {
                s.lost_writes += 1;
                s.last_lost_writes = Some(l);
            }
        });
        was_lost
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

fn is_corrupt(e: &Error) -> bool {
    e.sqlite().is_some_and(|s| s.is_corrupt())
}

fn is_busy(e: &Error) -> bool {
    e.sqlite().is_some_and(|s| s.is_busy())
}

/// Statements run through the target's test hook, counted.
struct Hooked<'a> {
    target: &'a SqliteTarget,
    path: &'a std::path::Path,
}

impl Hooked<'_> {
    fn hook(&self, ix: &mut usize, label: &str) -> rusqlite::Result<()> {
        let r = self.target.hook(*ix, label);
        *ix += 1;
        r
    }

    fn exec(&self, conn: &Connection, ix: &mut usize, label: &str, sql: &str) -> Result<()> {
        self.hook(ix, label)
            .and_then(|()| {
                // Single statements go through the statement cache: no parsing per entry.
                if sql.contains(';') {
                    conn.execute_batch(sql)
                } else {
                    conn.prepare_cached(sql)?.execute([]).map(|_| ())
                }
            })
            .map_err(|e| target_error(self.path, label, e))
    }

    fn query<T>(
        &self,
        conn: &Connection,
        ix: &mut usize,
        label: &str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.hook(ix, label)
            .and_then(|()| f(conn))
            .map_err(|e| target_error(self.path, label, e))
    }
}

#[allow(clippy::too_many_arguments)]
fn quarantine(
    hooked: &Hooked<'_>,
    conn: &Connection,
    ix: &mut usize,
    id: uuid::Uuid,
    lsn: Lsn,
    kind: u8,
    payload: &[u8],
    summary: &str,
    reason: &str,
) -> Result<()> {
    hooked
        .hook(ix, "quarantine")
        .and_then(|()| {
            conn.execute(
                "INSERT OR REPLACE INTO syncjournal_rejected
                 (journal_id, lsn, kind, payload, summary, error, rejected_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                (
                    id.to_string(),
                    lsn as i64,
                    i64::from(kind),
                    payload,
                    summary,
                    reason,
                    now_ms() as i64,
                ),
            )
        })
        .map(|_| ())
        .map_err(|e| target_error(hooked.path, "quarantine", e))
}
