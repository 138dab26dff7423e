//! Group commit: a thread that needs its record durable either waits for the sync in progress
//! or takes the *sync role* and syncs everything written so far, for every thread at once.
//! Every `msync` of segment data is made under that role (rotation's too), so two syncs never
//! overlap and a failed one is seen, and poisons the journal, before a later one could report
//! a false success. Also the background flusher of `PersistMode::Batched`.

use crate::error::JournalError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fault::IoOp;
use crate::format::Lsn;
use crate::journal::shared::{Shared, lock};
use crate::segment::{SharedMap, inject};

/// Bounds of the commit delay: how long a sync leader waits for concurrent appenders to add
/// their records to its group.
const COMMIT_DELAY_MIN_NS: u64 = 5_000;
/// The writer drops its mappings of synced pages in steps of this many bytes.
const RELEASE_WRITTEN_BYTES: usize = 8 << 20;
const COMMIT_DELAY_MAX_NS: u64 = 100_000;

pub(crate) fn spawn_flusher(shared: Arc<Shared>, interval: Duration) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("syncjournal-flush".into())
        .spawn(move || {
            loop {
                {
                    let stop = lock(&shared.shutdown);
                    let (stop, _) = shared
                        .shutdown_cv
                        .wait_timeout_while(stop, interval, |s| !*s)
                        .unwrap_or_else(|e| e.into_inner());
                    if *stop {
                        return;
                    }
                }
                if shared.poisoned.load(Ordering::Acquire) {
                    return;
                }
                let written = shared.written_lsn.load(Ordering::Acquire);
                if written > shared.durable_lsn.load(Ordering::Acquire)
                    && let Err(e) = shared.wait_durable(written)
                {
                    tracing::error!(error = %e, "background sync failed");
                    return;
                }
            }
        })
        .map_err(|e| Error::io("spawn flusher thread", PathBuf::new(), e))
}

impl Shared {
    /// Blocks until every record up to `lsn` is durable: waits for a running sync, or becomes
    /// the sync leader (group commit).
    pub(crate) fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        if self.durable_lsn.load(Ordering::Acquire) < lsn {
            self.check()?;
            let written = self.written_lsn.load(Ordering::Acquire);
            if lsn > written {
                return Err(Error::Journal(JournalError::NotWritten { lsn, written }));
            }
        }
        loop {
            // Durability first: a record made durable before the journal was poisoned is
            // durable, and its writer must hear so.
            if self.durable_lsn.load(Ordering::Acquire) >= lsn {
                return Ok(());
            }
            self.check()?;
            let mut flags = lock(&self.syncing);
            if self.durable_lsn.load(Ordering::Acquire) >= lsn {
                return Ok(());
            }
            if flags.syncing {
                flags.waiters += 1;
                let mut flags = self.cv.wait(flags).unwrap_or_else(|e| e.into_inner());
                flags.waiters -= 1;
                continue;
            }
            flags.syncing = true;
            drop(flags);
            let result = self.sync_active();
            self.release_sync_role();
            result?;
        }
    }

    /// Takes the sync role, waiting for the current holder. Fails if the journal is poisoned.
    pub(crate) fn acquire_sync_role(&self) -> Result<()> {
        let mut flags = lock(&self.syncing);
        while flags.syncing {
            flags.waiters += 1;
            flags = self.cv.wait(flags).unwrap_or_else(|e| e.into_inner());
            flags.waiters -= 1;
        }
        self.check()?;
        flags.syncing = true;
        Ok(())
    }

    pub(crate) fn release_sync_role(&self) {
        let mut flags = lock(&self.syncing);
        flags.syncing = false;
        if flags.waiters > 0 {
            self.cv.notify_all();
        }
    }

    /// Counts an append call (for the commit delay), waking a leader waiting for it.
    pub(crate) fn note_call(&self) {
        // SeqCst on both sides (here and in `commit_delay`): either the leader sees this call
        // in `calls`, or this thread sees the leader waiting and wakes it.
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.delay_waiting.load(Ordering::SeqCst) {
            let _g = lock(&self.delay_mx);
            self.delay_cv.notify_one();
        }
    }

    /// The commit delay: if the last sync served several appenders, wait a little (at most
    /// half the last sync's duration, within bounds) for as many to append again, so that one
    /// `msync` covers them all instead of groups alternating. A lone appender never waits.
    fn commit_delay(&self) {
        let group = self.last_group_calls.load(Ordering::Acquire);
        if group < 2 {
            return;
        }
        let base = self.calls_at_last_sync.load(Ordering::Acquire);
        let delay_ns = (self.last_sync_ns.load(Ordering::Acquire) / 2)
            .clamp(COMMIT_DELAY_MIN_NS, COMMIT_DELAY_MAX_NS);
        let deadline = std::time::Instant::now() + Duration::from_nanos(delay_ns);
        // Wait (without taking the CPU the appenders need) until as many calls as last time
        // have arrived, or the deadline.
        let mut g = lock(&self.delay_mx);
        self.delay_waiting.store(true, Ordering::SeqCst);
        while self.calls.load(Ordering::SeqCst).saturating_sub(base) < group {
            let now = std::time::Instant::now();
            if now >= deadline {
                break;
            }
            g = self
                .delay_cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        self.delay_waiting.store(false, Ordering::SeqCst);
    }

    /// Syncs `[published, written)` of `map` and publishes it, declaring records up to `upto`
    /// durable. The caller holds the sync role. A failure poisons the journal.
    pub(crate) fn sync_map(
        &self,
        map: &SharedMap,
        upto: Lsn,
        to: usize,
        path: &Path,
    ) -> Result<()> {
        self.check()?;
        let from = map.published_end();
        let _span = tracing::debug_span!("sync", upto, bytes = to.saturating_sub(from)).entered();
        let started = std::time::Instant::now();
        let synced = inject(self.opts.faults.as_deref(), IoOp::SyncData, path)
            .and_then(|()| map.sync(from, to));
        self.last_sync_ns
            .store(started.elapsed().as_nanos() as u64, Ordering::Release);
        if let Err(e) = synced {
            let err = Error::io_unmapped("msync segment", path, e);
            self.poison(&err);
            return Err(err);
        }
        // Nothing is declared durable once the journal is poisoned (another sync may have
        // failed meanwhile), and only the role holder gets here.
        self.check()?;
        map.publish(to);
        self.durable_lsn.fetch_max(upto, Ordering::AcqRel);
        self.publish_head();
        // Synced pages are never written again: drop this process's mappings of them every
        // few MiB, so that resident memory does not grow with the segment.
        if to / RELEASE_WRITTEN_BYTES > from / RELEASE_WRITTEN_BYTES {
            map.release(0, to / RELEASE_WRITTEN_BYTES * RELEASE_WRITTEN_BYTES);
        }
        Ok(())
    }

    /// One group sync of everything written so far in the active segment. The caller holds
    /// the sync role. Does not need the writer lock: the tip is read from the map.
    fn sync_active(&self) -> Result<()> {
        self.commit_delay();
        let calls = self.calls.load(Ordering::Acquire);
        let base = self.calls_at_last_sync.swap(calls, Ordering::AcqRel);
        self.last_group_calls
            .store(calls.saturating_sub(base), Ordering::Release);
        let map = Arc::clone(&lock(&self.active));
        let (upto, to) = map.written_tip();
        if upto <= self.durable_lsn.load(Ordering::Acquire) {
            return Ok(());
        }
        let path = self.segment_path_of(&map);
        self.sync_map(&map, upto, to, &path)
    }

    fn segment_path_of(&self, map: &Arc<SharedMap>) -> PathBuf {
        let segs = self.segments.read().unwrap_or_else(|e| e.into_inner());
        segs.iter()
            .rev()
            .find(|e| e.map.as_ref().is_some_and(|m| Arc::ptr_eq(m, map)))
            .or(segs.back())
            .map_or_else(|| self.dir.clone(), |e| e.path.clone())
    }
}
