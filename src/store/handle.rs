//! The store's handle: opening it (journal, cache, replayer, background thread), reading,
//! forcing a sync, status, quarantine, closing.

use crate::error::{CacheError, JournalError, TargetError};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};
use crate::event::JournalEvent;
use crate::format::Lsn;
use crate::journal::Journal;
use crate::mutation::ChangeSet;
use crate::replay::watch::Watch;
use crate::replay::{QuarantinedEntry, ReplayState, Replayer, SyncReport, SyncStatus};
use crate::target::ConflictRecord;

use crate::store::background::{sync_loop, with_target_evidence};
use crate::store::cache::{CacheWriter, catch_up, open_cache_writer};
use crate::store::options::StoreOptions;
use crate::store::pull::{PullMemory, PullReport, PullStatus};
use crate::store::reseed::{ReseedReport, reseed};

#[derive(Default)]
pub(crate) struct Signal {
    pub(crate) pending: bool,
    pub(crate) stop: bool,
}

pub(crate) struct Inner<E: JournalEvent> {
    pub(crate) journal: Arc<Journal>,
    pub(crate) cache_path: PathBuf,
    pub(crate) writer: Mutex<CacheWriter>,
    /// Signalled when a closing cache transaction commits.
    pub(crate) writer_cv: Condvar,
    pub(crate) reader: Mutex<Connection>,
    pub(crate) replayer: Option<Mutex<Replayer<E>>>,
    /// The replayer's state (or, without a target, what the follower's target shows).
    pub(crate) watch: Arc<Watch>,
    pub(crate) stalled_after: Duration,
    pub(crate) acknowledge_followers: bool,
    pub(crate) subscribers: Mutex<Vec<std::sync::mpsc::Sender<SyncStatus>>>,
    pub(crate) last_published: Mutex<Option<SyncStatus>>,
    pub(crate) signal: Mutex<Signal>,
    pub(crate) signal_cv: Condvar,
    pub(crate) broken: Mutex<Option<String>>,
    /// Pull other machines' changes into the cache (with a target).
    pub(crate) pull_enabled: bool,
    /// Reseed when the pull finds the cursor older than the change log keeps.
    pub(crate) reseed_when_needed: bool,
    /// What the last pull read and found.
    pub(crate) pull: Mutex<PullMemory>,
    pub(crate) _event: PhantomData<fn() -> E>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn cache_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| {
        Error::Cache(CacheError::Sqlite {
            path: path.to_path_buf(),
            source: source.into(),
        })
    }
}

/// A journaled SQLite cache that syncs to a target database. See the module documentation.
///
/// ```no_run
/// use syncjournal::{ChangeSet, Store, StoreOptions, TargetOptions};
///
/// # fn main() -> syncjournal::Result<()> {
/// let store: Store = Store::open(
///     "/var/lib/app/journal",
///     "/var/lib/app/cache.db",
///     StoreOptions::new()
///         .cache_schema("CREATE TABLE IF NOT EXISTS hosts (id INTEGER PRIMARY KEY, name TEXT)")
///         .target("/mnt/share/app.db", TargetOptions::new()),
/// )?;
/// store.apply(&ChangeSet::new().upsert("hosts", [("id", 1)], [("name", "web-1")]))?;
/// let n: i64 = store.read(|db| db.query_row("SELECT count(*) FROM hosts", [], |r| r.get(0)))?;
/// let report = store.sync_now(); // force sync
/// println!("{n} hosts; {report}; {:?}", store.status()?);
/// # Ok(()) }
/// ```
pub struct Store<E: JournalEvent = ChangeSet> {
    pub(crate) inner: Arc<Inner<E>>,
    sync_thread: Option<JoinHandle<()>>,
}

impl<E: JournalEvent> std::fmt::Debug for Store<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("journal", &self.inner.journal.dir())
            .field("cache", &self.inner.cache_path)
            .finish_non_exhaustive()
    }
}

impl<E: JournalEvent> Store<E> {
    /// Opens (or creates) the journal in `journal_dir` and the cache at `cache_path`, applies
    /// to the cache the entries it is missing, and starts the background sync if a target is
    /// configured.
    ///
    /// # Errors
    ///
    /// Journal errors ([`JournalError::Locked`], corruption…); [`CacheError::Mismatch`],
    /// [`CacheError::Ahead`], [`CacheError::Behind`] when the cache does not belong to this
    /// journal's history; SQLite errors on the cache.
    pub fn open(
        journal_dir: impl AsRef<Path>,
        cache_path: impl AsRef<Path>,
        opts: StoreOptions,
    ) -> Result<Store<E>> {
        let (journal_opts, target_seen) = match &opts.target {
            Some((target, _)) => with_target_evidence(journal_dir.as_ref(), target, &opts.journal),
            None => (opts.journal.clone(), None),
        };
        let journal = Arc::new(Journal::open(journal_dir, journal_opts)?);
        let cache_path = cache_path.as_ref().to_path_buf();
        let mut writer = open_cache_writer(&cache_path, &journal, opts.cache_schema.as_deref())?;
        let needs_reseed = match catch_up::<E>(&cache_path, &journal, &mut writer) {
            Ok(()) => None,
            Err(e @ Error::Cache(CacheError::Behind { .. } | CacheError::Ahead { .. }))
                if opts.target.is_some() && opts.reseed_when_needed =>
            {
                Some(e)
            }
            Err(e) => return Err(e),
        };
        let reader = Connection::open_with_flags(
            &cache_path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| {
            c.busy_timeout(Duration::from_secs(5))?;
            c.pragma_update(None, "query_only", true)?;
            Ok(c)
        })
        .map_err(cache_err(&cache_path))?;
        let background = opts.background_sync.unwrap_or(true);
        let mut replayer: Option<Replayer<E>> = opts.target.map(|(path, topts)| {
            let mut r = Replayer::new(Arc::clone(&journal), path, topts, opts.replay.clone());
            if let Some(wm) = target_seen {
                // Read just now: the status is measured on the target from the start.
                r.note_observed(wm);
            }
            r
        });
        if let (Some(why), Some(r)) = (needs_reseed, replayer.as_mut()) {
            tracing::warn!(cache = %cache_path.display(), reason = %why, "the cache cannot be caught up from the journal: reseeding it from the target");
            reseed::<E>(&cache_path, &journal, &mut writer, r).map_err(|e| {
                Error::Cache(CacheError::ReseedFailed {
                    path: cache_path.clone(),
                    why: Box::new(why),
                    cause: Box::new(e),
                })
            })?;
        }
        let watch = match &replayer {
            Some(r) => r.watch(),
            None => Arc::new(Watch::new(ReplayState::default())),
        };
        let inner = Arc::new(Inner {
            journal,
            cache_path,
            writer: Mutex::new(writer),
            writer_cv: Condvar::new(),
            reader: Mutex::new(reader),
            replayer: replayer.map(Mutex::new),
            watch,
            stalled_after: Duration::from_millis(opts.stalled_after_ms),
            acknowledge_followers: opts.acknowledge_followers,
            subscribers: Mutex::new(Vec::new()),
            last_published: Mutex::new(None),
            signal: Mutex::new(Signal::default()),
            signal_cv: Condvar::new(),
            broken: Mutex::new(None),
            pull_enabled: opts.pull,
            reseed_when_needed: opts.reseed_when_needed,
            pull: Mutex::new(PullMemory::default()),
            _event: PhantomData,
        });
        let weak = Arc::downgrade(&inner);
        inner.watch.listen(move || {
            if let Some(inner) = weak.upgrade() {
                inner.publish();
            }
        });
        let runs = inner.replayer.is_some() || inner.acknowledge_followers;
        let sync_thread = if background && runs {
            let bg = Arc::clone(&inner);
            let interval = Duration::from_millis(opts.replay.sync_interval_ms);
            Some(
                std::thread::Builder::new()
                    .name("syncjournal-sync".into())
                    .spawn(move || sync_loop(&bg, interval))
                    .map_err(|e| Error::io("spawn sync thread", PathBuf::new(), e))?,
            )
        } else {
            None
        };
        Ok(Store { inner, sync_thread })
    }

    /// Runs `f` with a read-only connection to the cache. It sees every applied event.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = lock(&self.inner.reader);
        f(&conn).map_err(cache_err(&self.inner.cache_path))
    }

    /// Force sync: applies every durable entry to the target now and reports what happened.
    /// Waits for a background sync in progress. Without a configured target, the report's
    /// error says so.
    pub fn sync_now(&self) -> SyncReport {
        let report = match &self.inner.replayer {
            Some(r) => lock(r).sync_now(),
            None => {
                let mut r = SyncReport::empty();
                let st = self.inner.journal.state();
                r.pending = st.durable_lsn.saturating_sub(st.acked_lsn);
                r.error = Some(Error::Target(TargetError::NoTarget));
                r
            }
        };
        self.inner.publish();
        report
    }

    /// Pull now: applies to the cache every change of the target's change log after the
    /// cache's cursor (other machines' changes, and this journal's own as the target has the
    /// rows), the cursor moved in the same cache transaction. A change to a row this journal
    /// has changed and the target does not hold yet stops the pull before it, until that
    /// change is on the target (the report says which). Waits for a sync in progress.
    /// The background sync pulls after each sync (see [`StoreOptions::pull`]).
    pub fn pull_now(&self) -> PullReport {
        let r = self.inner.pull_now();
        self.inner.publish();
        r
    }

    /// Rebuilds the cache from one consistent snapshot of the target: every row of the
    /// cache's tables as the target has them, then this journal's entries the target does
    /// not hold yet applied again on top, and the pull cursor set to the change log's head in
    /// that snapshot — in one cache transaction (nothing changes unless all of it succeeds).
    /// For a new machine, a lost or restored cache, or a cursor older than the change log
    /// keeps. Waits for a sync or pull in progress.
    ///
    /// # Errors
    ///
    /// [`TargetError::NoTarget`] without a target; the target's errors (unreadable, a table
    /// of the cache it does not have); the cache's.
    pub fn reseed(&self) -> Result<ReseedReport> {
        let r = self.inner.reseed();
        self.inner.publish();
        r
    }

    /// The pull's status: the cache's cursor, the change log's head as last read, how far
    /// behind the cache is, and what holds it back.
    pub fn pull_status(&self) -> Result<PullStatus> {
        self.inner.pull_status()
    }

    /// The sync status, measured against the target: the journal's positions, the cache's
    /// applied LSN, and the target's watermark as the replayer last read it (with the time) —
    /// never waiting for a sync in progress.
    pub fn status(&self) -> Result<SyncStatus> {
        self.inner.status()
    }

    /// Waits until the target's watermark covers `lsn` (the entry is on the target: a UI can
    /// show "saved to the share"), asking the background sync to run, for at most `timeout`.
    /// Returns `Ok(true)` once it does, `Ok(false)` if the time ran out.
    ///
    /// # Errors
    ///
    /// [`TargetError::NoTarget`] without a target (nor a follower to learn from); [`JournalError::NotWritten`]
    /// for an LSN the journal does not hold yet; the store's poisoning.
    pub fn wait_synced(&self, lsn: Lsn, timeout: Duration) -> Result<bool> {
        let inner = &*self.inner;
        if inner.replayer.is_none() && !inner.acknowledge_followers {
            return Err(Error::Target(TargetError::NoTarget));
        }
        let written = inner.journal.state().next_lsn - 1;
        if lsn > written {
            return Err(Error::Journal(JournalError::NotWritten { lsn, written }));
        }
        if self.sync_thread.is_none() && inner.replayer.is_some() {
            // Nobody else will sync: do it here.
            let r = self.sync_now();
            if r.target_lsn.is_some_and(|t| t >= lsn) {
                return Ok(true);
            }
        }
        inner.wake();
        Ok(inner.watch.wait_target(lsn, timeout))
    }

    /// Status changes from now on: the current status first, then a new one after every sync
    /// attempt or target read that changes it. Dropping the receiver unsubscribes.
    pub fn subscribe(&self) -> std::sync::mpsc::Receiver<SyncStatus> {
        let (tx, rx) = std::sync::mpsc::channel();
        if let Ok(st) = self.status() {
            let _ = tx.send(st);
        }
        lock(&self.inner.subscribers).push(tx);
        rx
    }

    /// Reads the watermark of the target that a follower of this journal replays to (the one it
    /// names in `replay.json`; the watermark itself comes from the target, never from the file)
    /// and acknowledges it, so that retention can retire what the follower has applied. The
    /// background thread does this on its timer when the store has no target of its own.
    /// Returns the watermark read, or `None` if no follower names a target.
    pub fn acknowledge_followed(&self) -> Result<Option<Lsn>> {
        self.inner.acknowledge_followed()
    }

    /// Entries quarantined on the target.
    pub fn quarantined(&self) -> Result<Vec<QuarantinedEntry>> {
        lock(self.inner.replayer()?).quarantined()
    }

    /// Applies a quarantined entry again; see [`Replayer::retry_quarantined`].
    pub fn retry_quarantined(&self, lsn: Lsn) -> Result<()> {
        lock(self.inner.replayer()?).retry_quarantined(lsn)
    }

    /// The conflicts this store's entries met on the target, newest first, at most `limit`;
    /// see [`Replayer::conflicts`].
    pub fn conflicts(&self, limit: usize) -> Result<Vec<ConflictRecord>> {
        lock(self.inner.replayer()?).conflicts(limit, false)
    }

    /// Removes a quarantined entry for good; see [`Replayer::discard_quarantined`].
    pub fn discard_quarantined(&self, lsn: Lsn) -> Result<bool> {
        lock(self.inner.replayer()?).discard_quarantined(lsn)
    }

    /// Why the store refuses writes until it is reopened, if it does: a failure after a
    /// journal write left the cache transaction in an unknown relation to the journal (the
    /// store's own reason), or the journal is poisoned (its reason, also in
    /// [`journal_state`](Self::journal_state)`().poisoned`). Reopening re-applies the journal
    /// to the cache.
    pub fn poisoned(&self) -> Option<String> {
        lock(&self.inner.broken)
            .clone()
            .or_else(|| self.inner.journal.state().poisoned)
    }

    /// The journal's positions.
    pub fn journal_state(&self) -> crate::journal::JournalState {
        self.inner.journal.state()
    }

    /// The journal directory.
    pub fn journal_dir(&self) -> &Path {
        self.inner.journal.dir()
    }

    /// Stops the background sync and closes the journal (syncing what is not durable).
    pub fn close(mut self) -> Result<()> {
        self.stop_thread();
        Ok(())
    }

    fn stop_thread(&mut self) {
        if let Some(h) = self.sync_thread.take() {
            lock(&self.inner.signal).stop = true;
            self.inner.signal_cv.notify_all();
            let _ = h.join();
        }
    }
}

impl<E: JournalEvent> Drop for Store<E> {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

impl<E: JournalEvent> Inner<E> {
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(reason) = lock(&self.broken).clone() {
            return Err(Error::Journal(JournalError::Poisoned { reason }));
        }
        Ok(())
    }

    /// The error for an event journaled as `lsn` whose `apply` then failed with `cause`.
    pub(crate) fn in_doubt(&self, lsn: Lsn, cause: Error) -> Error {
        Error::Cache(CacheError::AppliedInDoubt {
            lsn,
            durable: self.journal.durable_lsn() >= lsn,
            cause: Box::new(cause),
        })
    }

    /// After a failure that leaves the open cache transaction in an unknown relation to the
    /// journal: roll it back and refuse further writes until reopen (which re-applies the
    /// journal to the cache).
    pub(crate) fn break_store(&self, cause: &Error) {
        let mut b = lock(&self.broken);
        if b.is_none() {
            *b = Some(format!(
                "{cause}; reopen the store to re-apply the journal to the cache"
            ));
            tracing::error!(error = %cause, "store poisoned");
        }
        drop(b);
        if let Ok(mut w) = self.writer.try_lock()
            && w.txn_open
        {
            let _ = w.conn.execute_batch("ROLLBACK");
            w.txn_open = false;
        }
    }

    /// See [`Store::reseed`].
    pub(crate) fn reseed(&self) -> Result<ReseedReport> {
        let inner = self;
        inner.check()?;
        let mut rep = lock(inner.replayer()?);
        let mut w = inner.writer_between_transactions();
        let r = reseed::<E>(&inner.cache_path, &inner.journal, &mut w, &mut rep);
        drop(w);
        drop(rep);
        if r.is_ok() {
            let mut m = lock(&inner.pull);
            m.needs_reseed = false;
            m.held_back = None;
            m.last_error = None;
        }
        r
    }

    pub(crate) fn wake(&self) {
        if self.replayer.is_some() {
            lock(&self.signal).pending = true;
            self.signal_cv.notify_all();
        }
    }

    pub(crate) fn replayer(&self) -> Result<&Mutex<Replayer<E>>> {
        self.replayer
            .as_ref()
            .ok_or(Error::Target(TargetError::NoTarget))
    }
}
