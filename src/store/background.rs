//! Background work and status: the sync loop (sync, retry, read the target's watermark when
//! nothing is pending, acknowledge a follower's progress), the target's watermark as evidence
//! for recovery, and the status as subscribers receive it.

use crate::error::{JournalError, TargetError};
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::event::JournalEvent;
use crate::format::Lsn;
use crate::journal::{Journal, JournalOptions};
use crate::replay::{JournalSide, ReplayState, SyncStatus, created_at_ms};

use crate::store::handle::{Inner, cache_err, lock};

/// The background loop: wakes on new entries or every `interval`. With a target it syncs,
/// retries failures on a growing timer (never only "on the next write"), and, when the journal
/// says nothing is pending, reads the target's watermark to check that the target still holds
/// everything (a restore, lost writes). Without one, it acknowledges what a follower applied.
pub(crate) fn sync_loop<E: JournalEvent>(inner: &Inner<E>, interval: Duration) {
    let mut failures = 0u32;
    let mut delay = interval;
    loop {
        {
            let g = lock(&inner.signal);
            let (mut g, _) = inner
                .signal_cv
                .wait_timeout_while(g, delay, |s| !s.pending && !s.stop)
                .unwrap_or_else(|e| e.into_inner());
            if g.stop {
                return;
            }
            g.pending = false;
        }
        let Some(replayer) = inner.replayer.as_ref() else {
            if let Err(e) = inner.acknowledge_followed() {
                tracing::debug!(error = %e, "cannot read the follower's target");
            }
            delay = interval;
            continue;
        };
        delay = sync_step(inner, replayer, interval, &mut failures);
        // A failing sync's target is not read again until its retry.
        if inner.pull_enabled && failures == 0 {
            let report = inner.pull_now();
            if let Some(e) = &report.error {
                tracing::debug!(error = %e, "background pull failed");
                if inner.reseed_when_needed
                    && matches!(
                        e,
                        Error::Cache(crate::error::CacheError::NeedsReseed { .. })
                    )
                {
                    match inner.reseed() {
                        Ok(r) => {
                            tracing::info!(rows = r.rows, cursor = r.cursor_seq, "cache reseeded")
                        }
                        Err(e) => tracing::warn!(error = %e, "reseed failed"),
                    }
                    inner.publish();
                }
            } else if report.applied > 0 {
                tracing::debug!(
                    applied = report.applied,
                    cursor = report.cursor_seq,
                    "pulled"
                );
                inner.publish();
            }
        }
    }
}

/// One pass of the background sync; returns the delay before the next.
fn sync_step<E: JournalEvent>(
    inner: &Inner<E>,
    replayer: &std::sync::Mutex<crate::replay::Replayer<E>>,
    interval: Duration,
    failures: &mut u32,
) -> Duration {
    {
        let st = inner.journal.state();
        let mut r = lock(replayer);
        if st.durable_lsn <= st.acked_lsn && r.state().last_error.is_none() {
            // Nothing pending by the journal's record: the target is the truth, ask it.
            match r.observe_target() {
                Ok(wm) if wm >= st.durable_lsn => return interval,
                Ok(wm) => {
                    tracing::warn!(
                        watermark = wm,
                        acked = st.acked_lsn,
                        "the target is behind the acknowledgement; re-applying"
                    );
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the target's watermark");
                    return interval;
                }
            }
        }
        let report = r.sync_now();
        match &report.error {
            None => {
                *failures = 0;
                interval
            }
            Some(e) => {
                *failures = failures.saturating_add(1);
                let delay = if e.is_transient() {
                    r.backoff((*failures).min(16))
                        .max(Duration::from_millis(10))
                } else {
                    interval.max(Duration::from_millis(500))
                };
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "background sync failed");
                delay
            }
        }
    }
}

/// Journal options with the target's watermark as evidence of durability (see
/// [`JournalOptions::known_durable_lsn`]): read from the target now if it can be, else from
/// what the replayer last recorded for that target (which can only make recovery stricter).
/// Also returns the watermark read, if the target could be read.
pub(crate) fn with_target_evidence(
    dir: &Path,
    target: &crate::target::TargetSpec,
    opts: &JournalOptions,
) -> (JournalOptions, Option<Lsn>) {
    let Ok(id) = crate::journal::offline::journal_id_of(dir) else {
        return (opts.clone(), None); // a new journal: nothing to prove
    };
    // A share that hangs must not hang the application's start: give the read 2 s.
    let (tx, rx) = std::sync::mpsc::channel();
    let t = target.clone();
    let spawned = std::thread::Builder::new()
        .name("syncjournal-peek".into())
        .spawn(move || {
            let _ = tx.send(crate::replay::peek_watermark(&t, id));
        });
    let peeked = match spawned {
        Ok(_) => rx
            .recv_timeout(Duration::from_secs(2))
            .unwrap_or(Err(Error::Target(TargetError::NoTarget))),
        Err(_) => Err(Error::Target(TargetError::NoTarget)),
    };
    let (known, seen) = match peeked {
        Ok(wm) => (wm, Some(wm)),
        Err(_) => {
            let st = ReplayState::load(dir);
            let same = st
                .target
                .as_deref()
                .is_some_and(|t| target.names_same_target(t));
            (if same { st.target_lsn.unwrap_or(0) } else { 0 }, None)
        }
    };
    let known = known
        .min(crate::format::LSN_MAX)
        .max(opts.known_durable_lsn);
    (opts.clone().known_durable_lsn(known), seen)
}

impl<E: JournalEvent> Inner<E> {
    pub(crate) fn status(&self) -> Result<SyncStatus> {
        let cache_applied: Lsn = {
            let conn = lock(&self.reader);
            conn.query_row("SELECT applied_lsn FROM syncjournal_cache", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(cache_err(&self.cache_path))?
        } as Lsn;
        let state = self.watch.get();
        let broken = lock(&self.broken).clone();
        match status_of(
            &self.journal,
            Some(cache_applied),
            self.replayer.is_some(),
            &state,
            self.stalled_after,
            broken,
        ) {
            // A poisoned journal refuses reads; its files still hold the durable records (up
            // to the published HEAD): size the pending part as an offline reader does, and say
            // why it is poisoned.
            Err(Error::Journal(JournalError::Poisoned { reason })) => {
                let mut st =
                    crate::replay::offline_status(self.journal.dir(), None, self.stalled_after)?
                        .status;
                st.cache_applied_lsn = Some(cache_applied);
                st.poisoned = Some(reason);
                st.target_named = self.replayer.is_some();
                st.state = st.verdict(self.stalled_after);
                Ok(st)
            }
            r => r,
        }
    }

    /// Sends the status to subscribers if it changed since the last one sent.
    pub(crate) fn publish(&self) {
        let mut subs = lock(&self.subscribers);
        if subs.is_empty() {
            return;
        }
        let Ok(st) = self.status() else { return };
        let mut last = lock(&self.last_published);
        if last.as_ref() == Some(&st) {
            return;
        }
        subs.retain(|tx| tx.send(st.clone()).is_ok());
        *last = Some(st);
    }

    pub(crate) fn acknowledge_followed(&self) -> Result<Option<Lsn>> {
        let dir = self.journal.dir();
        let Some(target) = ReplayState::load(dir).target else {
            return Ok(None);
        };
        let spec = crate::target::TargetSpec::parse(&target);
        let (wm, quarantined) = crate::replay::peek_target(&spec, self.journal.id())?;
        let st = self.journal.state();
        if wm <= st.durable_lsn && wm > st.acked_lsn {
            self.journal.ack(wm)?;
        }
        self.watch.update(|s| {
            s.target = Some(target);
            s.observed(wm);
            s.quarantined = quarantined;
        });
        Ok(Some(wm))
    }
}

/// Computes the status from durable state and the replayer's (in-memory) observations.
pub(crate) fn status_of(
    journal: &Journal,
    cache_applied: Option<Lsn>,
    target_named: bool,
    state: &ReplayState,
    stalled_after: Duration,
    broken: Option<String>,
) -> Result<SyncStatus> {
    let st = journal.state();
    let observed = state.target_lsn.zip(state.target_read_at_ms);
    let base = SyncStatus::applied_base(st.durable_lsn, st.acked_lsn, observed.map(|o| o.0));
    let (pending_bytes, oldest) = if st.durable_lsn > base {
        let from = (base + 1).max(st.first_lsn);
        let bytes = journal.bytes_from(from)?;
        let oldest = journal
            .reader(from)?
            .next_ref()?
            .and_then(|r| created_at_ms(r.payload));
        (bytes, oldest)
    } else {
        (0, None)
    };
    let side = JournalSide {
        journal_id: st.journal_id,
        head: st.durable_lsn,
        first: st.first_lsn,
        acked: st.acked_lsn,
        acked_at_ms: st.acked_at_ms,
        poisoned: st.poisoned.or(broken),
    };
    Ok(SyncStatus::assemble(
        &side,
        cache_applied,
        target_named,
        observed,
        pending_bytes,
        oldest,
        state,
        stalled_after,
    ))
}
