//! The store: a local SQLite cache whose only write path is the journal, plus the replayer
//! that applies the journal to the shared target and a background sync thread.
//!
//! # Write path
//!
//! [`Store::apply`] (1) applies the event to the cache inside a savepoint of an open cache
//! transaction — a refused event is rolled back and nothing is journaled; (2) writes the
//! record to the journal; (3) waits until it is durable (group commit with other threads);
//! (4) commits the cache transaction, recording the cache's applied LSN in the same
//! transaction. So the cache never holds an effect that is not durable in the journal
//! (with `PersistMode::Sync`), and on open the entries after the cache's applied LSN are
//! applied again (a crash between (3) and (4)).
//!
//! # Why the cache may run with relaxed durability
//!
//! The cache uses WAL with `synchronous=NORMAL`: a commit is not flushed, so a power loss can
//! take back the last cache transactions — but never corrupt the database (WAL guarantees
//! that), and the applied LSN rolls back with them. The journal holds those entries durably,
//! and the next open applies them again. The journal is the durable copy; the cache is a fold
//! of it.
//!
//! # No temporary files
//!
//! The writer keeps statement journals in memory (`temp_store=MEMORY`). SQLite otherwise
//! moves the statement journal of a savepoint past 64 KiB of old pages (a large change set
//! rewriting existing rows) to a file in its temporary directory, on another file system than
//! the cache's: a full `/var/tmp` or `/tmp` failed cache writes with `SQLITE_FULL` ("database
//! or disk is full") while the cache's disk had room (issue 9, finding 8).
//!
//! # No write path around the journal
//!
//! The store exposes no writable connection, and it installs triggers on every table of the
//! cache — its own bookkeeping table included — that abort any insert, update or delete not
//! made through its own connection: they call an SQL function registered only there, so on any
//! other connection the write fails with `no such function: write_through_the_syncjournal_store`.
//! Code that opens the cache file directly can read it, never write it with SQL DML.
//!
//! What else the store closes ([`CacheError::Unguarded`], nothing journaled):
//!
//! * **virtual tables** (FTS5, R*Tree…) are refused at open, naming the table: SQLite cannot
//!   put triggers on them, and their data lives in tables their module writes (guarding those
//!   relies on module internals — an older SQLite crashed on a trigger on an FTS5 shadow
//!   table). Keep such indexes in a database of their own, built from the cache;
//! * **DML in `cache_schema`** is refused (counted with `sqlite3_total_changes`): those rows
//!   would be in the cache only. `cache_schema` runs in a transaction, rolled back on refusal;
//! * **tables created by other connections**: at the start of each cache transaction the
//!   store compares `PRAGMA schema_version`; after a change it guards new empty tables, and
//!   refuses — then and at every open — a table that holds rows without its guards;
//! * **a cache replaced under the open store**: each cache transaction checks that the file at
//!   the path is still the one opened (device and inode: a file renamed over it) and that its
//!   bookkeeping still says this journal and the applied LSN the store committed (an
//!   `sqlite3 .restore` over it, which writes pages without firing triggers). The store then
//!   refuses writes until reopened; the open checks the cache at the path against the journal
//!   (an older copy catches up, a foreign one is refused).
//!
//! What remains open, because no trigger sees it: incremental blob I/O
//! (`sqlite3_blob_write`) on another connection; a connection that drops the guards, writes,
//! and re-creates them while the store is closed; a restore of a copy whose applied LSN is the
//! same as the cache's; editing the file's bytes. Such a cache diverges from the journal
//! silently: delete it to rebuild it from the journal.

use crate::error::{CacheError, JournalError, TargetError};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::apply::{ApplyContext, ApplyError, SchemaCache, quote_ident};
use crate::error::{Error, Result};
use crate::event::{JournalEvent, decode_event, encode_event_within};
use crate::format::Lsn;
use crate::journal::ack::now_ms;
use crate::journal::{Journal, JournalOptions, PersistMode};
use crate::mutation::ChangeSet;
use crate::replay::watch::Watch;
use crate::replay::{
    JournalSide, QuarantinedEntry, ReplayOptions, ReplayState, Replayer, SyncReport, SyncStatus,
    TargetOptions, created_at_ms,
};

/// Name of the SQL function that only the store's writer connection has.
const WRITER_FUNCTION: &str = "write_through_the_syncjournal_store";
/// Prefix of the guard triggers.
const GUARD_PREFIX: &str = "syncjournal_guard_";
/// Entries re-applied per cache transaction when catching up on open.
const CATCH_UP_BATCH: usize = 1000;

/// Options for [`Store::open`]. Every setter documents its default.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    journal: JournalOptions,
    cache_schema: Option<String>,
    target: Option<(PathBuf, TargetOptions)>,
    replay: ReplayOptions,
    background_sync: Option<bool>,
    acknowledge_followers: bool,
    stalled_after_ms: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            journal: JournalOptions::default().lock_wait_ms(Self::LOCK_WAIT_MS_DEFAULT),
            cache_schema: None,
            target: None,
            replay: ReplayOptions::default(),
            background_sync: None,
            acknowledge_followers: true,
            stalled_after_ms: crate::replay::STALLED_AFTER_MS_DEFAULT,
        }
    }
}

impl StoreOptions {
    /// How long a store waits for the journal's lock by default: 10 000 ms. A restarting
    /// application waits out `syncjournal sync`, which owns a closed journal for one pass.
    pub const LOCK_WAIT_MS_DEFAULT: u64 = 10_000;

    /// Defaults: default journal options (waiting up to 10 s for the journal's lock), no cache
    /// schema, no target.
    pub fn new() -> Self {
        Self::default()
    }

    /// Options of the journal. Default: [`JournalOptions::default`] (durable appends) with
    /// `lock_wait_ms` [`StoreOptions::LOCK_WAIT_MS_DEFAULT`], so that a restarting application
    /// waits out a `syncjournal sync` that owns the closed journal for a pass; options given
    /// here are used as they are.
    pub fn journal(mut self, opts: JournalOptions) -> Self {
        self.journal = opts;
        self
    }

    /// SQL run on the cache at every open, after syncjournal's own table, in a transaction:
    /// the application's tables, written idempotently (`CREATE TABLE IF NOT EXISTS …`). It
    /// must write no rows and create no virtual table ([`CacheError::Unguarded`]). Default:
    /// none.
    pub fn cache_schema(mut self, sql: impl Into<String>) -> Self {
        self.cache_schema = Some(sql.into());
        self
    }

    /// The target database to replay to (an SQLite file, typically on a network share).
    /// Default: none (the store only journals and caches).
    pub fn target(mut self, path: impl Into<PathBuf>, opts: TargetOptions) -> Self {
        self.target = Some((path.into(), opts));
        self
    }

    /// Replay options. Default: [`ReplayOptions::default`].
    pub fn replay(mut self, opts: ReplayOptions) -> Self {
        self.replay = opts;
        self
    }

    /// Run a background thread that syncs every `sync_interval_ms` and when entries arrive,
    /// retrying failures on a timer, and that reads the target's watermark on the same timer
    /// when nothing is pending (a target restored from an older backup is then repaired without
    /// waiting for a new write). Without a target, the thread acknowledges what a follower has
    /// replayed (see [`StoreOptions::acknowledge_followers`]). Default: true.
    pub fn background_sync(mut self, on: bool) -> Self {
        self.background_sync = Some(on);
        self
    }

    /// Without a target of its own, learn how far a follower (`syncjournal sync --follow`, or
    /// another process's `Replayer::follower`) has replayed this journal — by reading the
    /// watermark on the target the follower names in `replay.json`, never by trusting a file —
    /// and acknowledge it, so that segments are retired instead of accumulating. Default: true.
    pub fn acknowledge_followers(mut self, on: bool) -> Self {
        self.acknowledge_followers = on;
        self
    }

    /// How long pending entries may wait before [`Store::status`] calls them stalled.
    /// Default: 300 000 ms.
    pub fn stalled_after_ms(mut self, ms: u64) -> Self {
        self.stalled_after_ms = ms;
        self
    }
}

struct CacheWriter {
    conn: Connection,
    schema: SchemaCache,
    /// A cache transaction is open (holding applied but not yet committed entries).
    txn_open: bool,
    /// Highest LSN applied in the open transaction.
    txn_max: Lsn,
    /// Applied LSN of the last committed cache transaction.
    committed: Lsn,
    /// A thread is waiting for the open transaction's last entries to become durable in
    /// order to commit it: new entries wait (so that the transaction cannot keep growing).
    closing: bool,
    /// The cache file's identity (device, inode) at open: a file renamed over it is noticed.
    file_id: (u64, u64),
    /// `PRAGMA schema_version` after the guards were installed: a schema change by another
    /// connection makes the store check the guards again.
    schema_version: i64,
}

#[derive(Default)]
struct Signal {
    pending: bool,
    stop: bool,
}

struct Inner<E: JournalEvent> {
    journal: Arc<Journal>,
    cache_path: PathBuf,
    writer: Mutex<CacheWriter>,
    /// Signalled when a closing cache transaction commits.
    writer_cv: Condvar,
    reader: Mutex<Connection>,
    replayer: Option<Mutex<Replayer<E>>>,
    /// The replayer's state (or, without a target, what the follower's target shows).
    watch: Arc<Watch>,
    stalled_after: Duration,
    acknowledge_followers: bool,
    subscribers: Mutex<Vec<std::sync::mpsc::Sender<SyncStatus>>>,
    last_published: Mutex<Option<SyncStatus>>,
    signal: Mutex<Signal>,
    signal_cv: Condvar,
    broken: Mutex<Option<String>>,
    _event: PhantomData<fn() -> E>,
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
    inner: Arc<Inner<E>>,
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

/// Runs a parameterless statement through the statement cache (no parsing per call).
fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs a statement with one integer parameter through the statement cache.
fn exec_cached_with(conn: &Connection, sql: &str, v: Lsn) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([v as i64]).map(|_| ())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn cache_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| {
        Error::Cache(CacheError::Sqlite {
            path: path.to_path_buf(),
            source: source.into(),
        })
    }
}

/// What became of an event in [`journal_in_savepoint`].
enum Staged {
    /// Applied in the open cache transaction and written to the journal.
    Journaled(Lsn),
    /// Refused or failed before the journal write; the cache transaction is as it was.
    NotJournaled(Error),
    /// Failed before the journal write, and rolling its effects back failed too (the second
    /// error): they may still be in the open cache transaction, which must not commit.
    NotJournaledCacheUnknown(Error, Error),
    /// Written to the journal, but releasing its savepoint failed.
    JournaledCacheUnknown(Lsn, Error),
}

/// Applies `event` to the cache in a savepoint of the open cache transaction (opening one if
/// needed) and writes `payload` to the journal; rolls the savepoint back if either fails.
fn journal_in_savepoint<E: JournalEvent>(
    w: &mut CacheWriter,
    path: &Path,
    journal: &Journal,
    event: &E,
    payload: &[u8],
    ce: &impl Fn(rusqlite::Error) -> Error,
) -> Staged {
    let CacheWriter {
        conn,
        schema,
        txn_open,
        txn_max,
        committed,
        file_id,
        schema_version,
        ..
    } = w;
    if !*txn_open {
        if let Err(e) = exec_cached(conn, "BEGIN IMMEDIATE") {
            return Staged::NotJournaled(ce(e));
        }
        *txn_open = true;
        if let Err(e) = check_unchanged(conn, path, journal, *committed, file_id, schema_version) {
            let _ = conn.execute_batch("ROLLBACK");
            *txn_open = false;
            let again = Error::Cache(CacheError::Unguarded {
                path: path.to_path_buf(),
                table: None,
                detail: e.to_string(),
            });
            return Staged::NotJournaledCacheUnknown(e, again);
        }
    }
    if let Err(e) = exec_cached(conn, "SAVEPOINT sj_apply") {
        return Staged::NotJournaled(ce(e));
    }
    // Only this store writes its journal, always under the cache lock: the next LSN follows
    // the last one it wrote.
    let expected = *txn_max + 1;
    let span = tracing::trace_span!("cache_apply", kind = E::KIND).entered();
    let applied = event.apply(&mut ApplyContext::new(conn, schema, expected));
    drop(span);
    let written = applied
        .map_err(|e| match e {
            ApplyError::Permanent { reason } => Error::Cache(CacheError::ChangeRefused { reason }),
            ApplyError::Transient(source) => ce(source.into_inner()),
        })
        .and_then(|()| journal.write(E::KIND, payload));
    match written {
        Ok(lsn) => {
            *txn_max = lsn;
            if lsn != expected {
                // Only this store writes its journal, under the cache lock: cannot happen. If
                // it did, the event saw a wrong `ApplyContext::lsn`; reopening re-applies it.
                return Staged::JournaledCacheUnknown(
                    lsn,
                    Error::Journal(JournalError::Poisoned {
                        reason: format!(
                            "the event was applied to the cache as LSN {expected} but journaled as LSN {lsn}"
                        ),
                    }),
                );
            }
            match exec_cached(conn, "RELEASE sj_apply") {
                Ok(()) => Staged::Journaled(lsn),
                Err(e) => Staged::JournaledCacheUnknown(lsn, ce(e)),
            }
        }
        Err(e) => {
            if let Err(r) = conn.execute_batch("ROLLBACK TO sj_apply; RELEASE sj_apply") {
                return Staged::NotJournaledCacheUnknown(e, ce(r));
            }
            if *txn_max <= *committed {
                if let Err(r) = conn.execute_batch("ROLLBACK") {
                    return Staged::NotJournaledCacheUnknown(e, ce(r));
                }
                *txn_open = false;
            }
            Staged::NotJournaled(e)
        }
    }
}

/// The fault seam of the cache commit ([`crate::fault::IoOp::CacheCommit`]), through the
/// journal's injector: `ENOSPC` becomes `SQLITE_FULL`, any other errno `SQLITE_IOERR`.
fn inject_cache_fault(journal: &Journal, cache: &Path) -> rusqlite::Result<()> {
    let Some(faults) = journal.options().faults.as_deref() else {
        return Ok(());
    };
    faults
        .check(crate::fault::IoOp::CacheCommit, cache)
        .map_err(|e| {
            let full = crate::error::is_disk_full(&e);
            let code = if full {
                rusqlite::ffi::SQLITE_FULL
            } else {
                rusqlite::ffi::SQLITE_IOERR
            };
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                Some(format!(
                    "{} (injected fault at the cache commit: {e})",
                    if full {
                        "database or disk is full"
                    } else {
                        "disk I/O error"
                    }
                )),
            )
        })
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
        catch_up::<E>(&cache_path, &journal, &mut writer)?;
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
        let replayer: Option<Replayer<E>> = opts.target.map(|(path, topts)| {
            let mut r = Replayer::new(Arc::clone(&journal), path, topts, opts.replay.clone());
            if let Some(wm) = target_seen {
                // Read just now: the status is measured on the target from the start.
                r.note_observed(wm);
            }
            r
        });
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

    /// Applies `event`: journals it (durably, with the default persist mode) and applies it to
    /// the cache, atomically. Returns its LSN.
    ///
    /// # Errors
    ///
    /// [`CacheError::ChangeRefused`] if the cache refuses the event (constraint, missing table or
    /// column, type mismatch, no such row): nothing was journaled, nothing changed.
    /// [`CacheError::EventTooLarge`] if it encodes to more than the journal's record limit
    /// ([`JournalOptions::payload_bytes_limit`]), [`CacheError::EventUnencodable`] if its encoding
    /// would not decode again: nothing was journaled, nothing changed. [`JournalError::Poisoned`]
    /// (the store or its journal refuses writes until reopened): nothing was journaled.
    ///
    /// [`CacheError::AppliedInDoubt`] when a failure *followed* the journal write (the sync failed
    /// — an EIO from `msync` poisons the journal —, or the cache commit failed, for example
    /// with `SQLITE_FULL`): the event is journaled as the LSN the error gives, and the store is
    /// poisoned. It is not a plain failure, and retrying blindly may apply the change twice.
    /// Instead: drop the store and reopen it (which re-applies the journal to the cache); if
    /// the error says `durable`, the event is in; otherwise, right after the reopen,
    /// [`journal_state`](Self::journal_state)`().durable_lsn >= lsn` says whether the journal
    /// kept it (then it is in the cache and will reach the target) or lost it (then applying
    /// it again is safe). [`poisoned`](Self::poisoned) and [`status`](Self::status) keep
    /// working meanwhile. Other errors before the journal write (a cache error): nothing was
    /// journaled.
    pub fn apply(&self, event: &E) -> Result<Lsn> {
        let inner = &*self.inner;
        inner.check()?;
        let payload = encode_event_within(
            now_ms(),
            event,
            inner.journal.options().payload_bytes_limit(),
        )?;
        let sync_mode = inner.journal.options().persist_mode == PersistMode::Sync;
        let ce = cache_err(&inner.cache_path);
        let lsn = {
            let mut w = lock(&inner.writer);
            while w.closing {
                w = inner.writer_cv.wait(w).unwrap_or_else(|e| e.into_inner());
            }
            inner.check()?;
            match journal_in_savepoint(
                &mut w,
                &inner.cache_path,
                &inner.journal,
                event,
                &payload,
                &ce,
            ) {
                Staged::Journaled(lsn) => lsn,
                Staged::NotJournaled(e) => return Err(e),
                Staged::NotJournaledCacheUnknown(e, cause) => {
                    drop(w);
                    inner.break_store(&cause);
                    return Err(e);
                }
                Staged::JournaledCacheUnknown(lsn, cause) => {
                    drop(w);
                    inner.break_store(&cause);
                    return Err(inner.in_doubt(lsn, cause));
                }
            }
        };
        tracing::trace!(lsn, "journaled");
        // From here on the event is in the journal: every failure is an outcome in doubt.
        if sync_mode && let Err(e) = inner.journal.wait_durable(lsn) {
            inner.break_store(&e);
            return Err(inner.in_doubt(lsn, e));
        }
        // Commit the cache transaction once every entry in it is durable. A thread whose
        // transaction holds entries not yet durable closes it to newcomers and waits for them
        // without holding the cache lock (their appenders, and the journal's sync leader,
        // must be able to run meanwhile).
        let mut w = lock(&inner.writer);
        while w.committed < lsn {
            // The open transaction was rolled back if the store broke meanwhile.
            if let Err(e) = inner.check() {
                return Err(inner.in_doubt(lsn, e));
            }
            let upto = w.txn_max;
            if !sync_mode || inner.journal.durable_lsn() >= upto {
                let r = exec_cached_with(
                    &w.conn,
                    "UPDATE syncjournal_cache SET applied_lsn = ?1",
                    upto,
                )
                .and_then(|()| inject_cache_fault(&inner.journal, &inner.cache_path))
                .and_then(|()| exec_cached(&w.conn, "COMMIT"));
                w.closing = false;
                inner.writer_cv.notify_all();
                if let Err(e) = r {
                    let err = ce(e);
                    drop(w);
                    inner.break_store(&err);
                    return Err(inner.in_doubt(lsn, err));
                }
                w.committed = upto;
                w.txn_open = false;
                break;
            }
            if w.closing {
                w = inner.writer_cv.wait(w).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            w.closing = true;
            drop(w);
            let durable = inner.journal.wait_durable(upto);
            w = lock(&inner.writer);
            if let Err(e) = durable {
                w.closing = false;
                inner.writer_cv.notify_all();
                drop(w);
                inner.break_store(&e);
                return Err(inner.in_doubt(lsn, e));
            }
        }
        drop(w);
        inner.wake();
        Ok(lsn)
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
    fn check(&self) -> Result<()> {
        if let Some(reason) = lock(&self.broken).clone() {
            return Err(Error::Journal(JournalError::Poisoned { reason }));
        }
        Ok(())
    }

    /// The error for an event journaled as `lsn` whose `apply` then failed with `cause`.
    fn in_doubt(&self, lsn: Lsn, cause: Error) -> Error {
        Error::Cache(CacheError::AppliedInDoubt {
            lsn,
            durable: self.journal.durable_lsn() >= lsn,
            cause: Box::new(cause),
        })
    }

    /// After a failure that leaves the open cache transaction in an unknown relation to the
    /// journal: roll it back and refuse further writes until reopen (which re-applies the
    /// journal to the cache).
    fn break_store(&self, cause: &Error) {
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

    fn wake(&self) {
        if self.replayer.is_some() {
            lock(&self.signal).pending = true;
            self.signal_cv.notify_all();
        }
    }

    fn replayer(&self) -> Result<&Mutex<Replayer<E>>> {
        self.replayer
            .as_ref()
            .ok_or(Error::Target(TargetError::NoTarget))
    }
}

/// The background loop: wakes on new entries or every `interval`. With a target it syncs,
/// retries failures on a growing timer (never only "on the next write"), and, when the journal
/// says nothing is pending, reads the target's watermark to check that the target still holds
/// everything (a restore, lost writes). Without one, it acknowledges what a follower applied.
fn sync_loop<E: JournalEvent>(inner: &Inner<E>, interval: Duration) {
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
        let st = inner.journal.state();
        let mut r = lock(replayer);
        if st.durable_lsn <= st.acked_lsn && r.state().last_error.is_none() {
            // Nothing pending by the journal's record: the target is the truth, ask it.
            match r.observe_target() {
                Ok(wm) if wm >= st.durable_lsn => {
                    delay = interval;
                    continue;
                }
                Ok(wm) => {
                    tracing::warn!(
                        watermark = wm,
                        acked = st.acked_lsn,
                        "the target is behind the acknowledgement; re-applying"
                    );
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the target's watermark");
                    delay = interval;
                    continue;
                }
            }
        }
        let report = r.sync_now();
        match &report.error {
            None => {
                failures = 0;
                delay = interval;
            }
            Some(e) => {
                failures = failures.saturating_add(1);
                delay = if e.is_transient() {
                    r.backoff(failures.min(16)).max(Duration::from_millis(10))
                } else {
                    interval.max(Duration::from_millis(500))
                };
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "background sync failed");
            }
        }
    }
}

/// Journal options with the target's watermark as evidence of durability (see
/// [`JournalOptions::known_durable_lsn`]): read from the target now if it can be, else from
/// what the replayer last recorded for that target (which can only make recovery stricter).
/// Also returns the watermark read, if the target could be read.
fn with_target_evidence(
    dir: &Path,
    target: &Path,
    opts: &JournalOptions,
) -> (JournalOptions, Option<Lsn>) {
    let Ok(id) = crate::journal::offline::journal_id_of(dir) else {
        return (opts.clone(), None); // a new journal: nothing to prove
    };
    // A share that hangs must not hang the application's start: give the read 2 s.
    let (tx, rx) = std::sync::mpsc::channel();
    let t = target.to_path_buf();
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
            let same = st.target.as_deref() == Some(crate::replay::target_name(target).as_str());
            (if same { st.target_lsn.unwrap_or(0) } else { 0 }, None)
        }
    };
    let known = known
        .min(crate::format::LSN_MAX)
        .max(opts.known_durable_lsn);
    (opts.clone().known_durable_lsn(known), seen)
}

impl<E: JournalEvent> Inner<E> {
    fn status(&self) -> Result<SyncStatus> {
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
    fn publish(&self) {
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

    fn acknowledge_followed(&self) -> Result<Option<Lsn>> {
        let dir = self.journal.dir();
        let Some(target) = ReplayState::load(dir).target else {
            return Ok(None);
        };
        let path = PathBuf::from(&target);
        let (wm, quarantined) = crate::replay::peek_target(&path, self.journal.id())?;
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

fn open_cache_writer(path: &Path, journal: &Journal, schema: Option<&str>) -> Result<CacheWriter> {
    let ce = cache_err(path);
    let conn = Connection::open(path).map_err(&ce)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(&ce)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(&ce)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(cache = %path.display(), %mode, "cache could not switch to WAL");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(&ce)?;
    // Statement journals (one per apply's savepoint) and temporary tables in memory: by
    // default SQLite moves a statement journal past 64 KiB to a file in its temporary
    // directory (SQLITE_TMPDIR, TMPDIR, /var/tmp, /usr/tmp, /tmp), another file system than
    // the cache's, whose being full made a cache write fail with SQLITE_FULL with free space
    // on the cache's disk. The memory is what the savepoint's old pages take.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(&ce)?;
    conn.create_scalar_function(WRITER_FUNCTION, 0, FunctionFlags::SQLITE_UTF8, |_| Ok(1i64))
        .map_err(&ce)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS syncjournal_cache (
            journal_id TEXT PRIMARY KEY,
            applied_lsn INTEGER NOT NULL
        );",
    )
    .map_err(&ce)?;
    // Rows in a table without guards did not come from the journal.
    refuse_unguarded(&conn, path)?;
    if let Some(sql) = schema {
        run_cache_schema(&conn, path, sql)?;
    }
    conn.execute_batch("BEGIN IMMEDIATE").map_err(&ce)?;
    let guarded = install_guards(&conn).map_err(&ce);
    let guarded = guarded.and_then(|()| conn.execute_batch("COMMIT").map_err(&ce));
    if let Err(e) = guarded {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e);
    }
    let schema_version: i64 = conn
        .query_row("PRAGMA schema_version", [], |r| r.get(0))
        .map_err(&ce)?;
    let file_id = file_identity(path)?;
    let row: Option<(String, i64)> = conn
        .query_row(
            "SELECT journal_id, applied_lsn FROM syncjournal_cache",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(&ce)?;
    let id = journal.id().to_string();
    let applied = match row {
        Some((found, applied)) if found == id => applied.max(0) as Lsn,
        Some((found, _)) => {
            return Err(Error::Cache(CacheError::Mismatch {
                path: path.to_path_buf(),
                expected: journal.id(),
                found,
            }));
        }
        None => {
            conn.execute(
                "INSERT INTO syncjournal_cache (journal_id, applied_lsn) VALUES (?1, 0)",
                [&id],
            )
            .map_err(&ce)?;
            0
        }
    };
    Ok(CacheWriter {
        conn,
        schema: SchemaCache::new(),
        txn_open: false,
        txn_max: applied,
        committed: applied,
        closing: false,
        file_id,
        schema_version,
    })
}

fn file_identity(path: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
    Ok((m.dev(), m.ino()))
}

fn unguarded(path: &Path, table: Option<&str>, detail: String) -> Error {
    Error::Cache(CacheError::Unguarded {
        path: path.to_path_buf(),
        table: table.map(str::to_owned),
        detail,
    })
}

/// Runs the application's `cache_schema` in a transaction, refusing (and rolling back) one
/// that writes rows — they would be in the cache and never in the journal or the target —
/// or creates a virtual table, which cannot be guarded (see the module documentation).
fn run_cache_schema(conn: &Connection, path: &Path, sql: &str) -> Result<()> {
    let ce = cache_err(path);
    conn.execute_batch("BEGIN IMMEDIATE").map_err(&ce)?;
    let before = conn.total_changes();
    let checked = conn.execute_batch(sql).map_err(&ce).and_then(|()| {
        refuse_virtual_tables(conn, path)?;
        let rows = conn.total_changes() - before;
        if rows > 0 {
            return Err(unguarded(
                path,
                None,
                format!("cache_schema wrote {rows} rows; the cache is written only from its journal, so they would never reach the target: give cache_schema only CREATE … IF NOT EXISTS statements and journal seed data as events"),
            ));
        }
        Ok(())
    });
    match checked.and_then(|()| conn.execute_batch("COMMIT").map_err(&ce)) {
        Ok(()) => Ok(()),
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Err(e)
        }
    }
}

/// Refuses a cache holding a virtual table (FTS5, R*Tree…): SQLite cannot put triggers on
/// one, and its data lives in tables its module writes.
fn refuse_virtual_tables(conn: &Connection, path: &Path) -> Result<()> {
    let found: Option<(String, String)> = conn
        .query_row(
            "SELECT l.name, coalesce(s.sql, '') FROM pragma_table_list AS l
             LEFT JOIN sqlite_schema AS s ON s.name = l.name
             WHERE l.schema = 'main' AND l.type = 'virtual' ORDER BY l.name LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(cache_err(path))?;
    match found {
        None => Ok(()),
        Some((table, sql)) => Err(unguarded(
            path,
            Some(&table),
            format!(
                "table {table} is a virtual table ({sql}); the store guards every cache table with triggers against writes around the journal, and SQLite cannot put triggers on a virtual table (its data is written by its module, into tables of its own): keep full-text (FTS5) or R*Tree indexes out of the cache, in a database of their own built from the cache's rows"
            ),
        )),
    }
}

/// Refuses a cache table that holds rows but has none of the store's guards: it was created
/// (or its guards dropped) and written by another connection, around the journal.
/// syncjournal's bookkeeping table is checked against the journal instead.
fn refuse_unguarded(conn: &Connection, path: &Path) -> Result<()> {
    refuse_virtual_tables(conn, path)?;
    let ce = cache_err(path);
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema AS t WHERE type = 'table'
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> 'syncjournal_cache'
             AND (SELECT count(*) FROM sqlite_schema AS g WHERE g.type = 'trigger'
                  AND g.tbl_name = t.name AND g.name LIKE 'syncjournal\\_guard\\_%' ESCAPE '\\') < 3",
        )
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(&ce)?;
    for t in tables {
        let rows: bool = conn
            .query_row(
                &format!("SELECT EXISTS (SELECT 1 FROM {})", quote_ident(&t)),
                [],
                |r| r.get(0),
            )
            .map_err(&ce)?;
        if rows {
            return Err(unguarded(
                path,
                Some(&t),
                format!(
                    "table {t} holds rows but not the store's guards: another connection created it (or dropped its guards) and wrote it around the journal, so the journal and the target do not have these rows; drop the table, or delete the cache to rebuild it from the journal"
                ),
            ));
        }
    }
    Ok(())
}

/// Checks, at the start of a cache transaction, that the cache is still the one the store
/// guarded: the same file, the applied LSN the store committed, and — if another connection
/// changed the schema — every table guarded (new empty tables get their guards now).
fn check_unchanged(
    conn: &Connection,
    path: &Path,
    journal: &Journal,
    committed: Lsn,
    file_id: &(u64, u64),
    schema_version: &mut i64,
) -> Result<()> {
    let ce = cache_err(path);
    let now = file_identity(path)?;
    if now != *file_id {
        return Err(unguarded(
            path,
            None,
            "the cache file was replaced under the open store (another file was renamed or copied over it); nothing was journaled: reopen the store, which checks the cache at the path against the journal".into(),
        ));
    }
    let (id, applied): (String, i64) = conn
        .prepare_cached("SELECT journal_id, applied_lsn FROM syncjournal_cache")
        .and_then(|mut st| st.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(&ce)?;
    if id != journal.id().to_string() || applied != committed as i64 {
        return Err(unguarded(
            path,
            None,
            format!(
                "the cache was rewritten under the open store (it says journal {id}, applied LSN {applied}; the store committed LSN {committed} of journal {}): a restore over it? nothing was journaled: reopen the store, which checks the cache against the journal (delete the cache to rebuild it)",
                journal.id()
            ),
        ));
    }
    let version: i64 = conn
        .prepare_cached("PRAGMA schema_version")
        .and_then(|mut st| st.query_row([], |r| r.get(0)))
        .map_err(&ce)?;
    if version != *schema_version {
        refuse_unguarded(conn, path)?;
        install_guards(conn).map_err(&ce)?;
        *schema_version = conn
            .query_row("PRAGMA schema_version", [], |r| r.get(0))
            .map_err(&ce)?;
    }
    Ok(())
}

/// Installs, on every table of the cache, triggers that abort writes from any connection but
/// the store's. Runs inside the caller's transaction.
fn install_guards(conn: &Connection) -> rusqlite::Result<()> {
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table'
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut sql = String::new();
    for t in &tables {
        for op in ["INSERT", "UPDATE", "DELETE"] {
            let trig = quote_ident(&format!("{GUARD_PREFIX}{}_{t}", op.to_ascii_lowercase()));
            sql.push_str(&format!(
                "DROP TRIGGER IF EXISTS {trig};
                 CREATE TRIGGER {trig} BEFORE {op} ON {tbl}
                 BEGIN SELECT RAISE(ABORT, 'write through the syncjournal store: this cache is written only from its journal')
                 WHERE {WRITER_FUNCTION}() IS NOT 1; END;",
                tbl = quote_ident(t)
            ));
        }
    }
    conn.execute_batch(&sql)
}

/// Applies to the cache the journal entries after its applied LSN.
fn catch_up<E: JournalEvent>(path: &Path, journal: &Journal, w: &mut CacheWriter) -> Result<()> {
    let ce = cache_err(path);
    let st = journal.state();
    let head = st.durable_lsn;
    if w.committed > head {
        return Err(Error::Cache(CacheError::Ahead {
            path: path.to_path_buf(),
            cache_lsn: w.committed,
            journal_lsn: head,
        }));
    }
    if w.committed == head {
        return Ok(());
    }
    if w.committed + 1 < st.first_lsn {
        return Err(Error::Cache(CacheError::Behind {
            path: path.to_path_buf(),
            cache_lsn: w.committed,
            first_retained: st.first_lsn,
        }));
    }
    let from = w.committed + 1;
    let mut reader = journal.reader(from)?;
    let mut applied = 0u64;
    loop {
        w.conn.execute_batch("BEGIN IMMEDIATE").map_err(&ce)?;
        let mut last = w.committed;
        let mut n = 0;
        while n < CATCH_UP_BATCH {
            let Some(rec) = reader.next_ref()? else { break };
            n += 1;
            if let Some(gap) = rec.gap() {
                tracing::warn!(
                    from = gap.start,
                    to = gap.end,
                    "journal entries lost to damage are missing from the cache too"
                );
                last = gap.end - 1;
                continue;
            }
            if rec.kind != E::KIND {
                let _ = w.conn.execute_batch("ROLLBACK");
                return Err(Error::Target(TargetError::UnknownKind {
                    lsn: rec.lsn,
                    kind: rec.kind,
                    expected: E::KIND,
                }));
            }
            let (_, event) = decode_event::<E>(rec.payload).map_err(|reason| {
                Error::Cache(CacheError::Undecodable {
                    lsn: rec.lsn,
                    kind: rec.kind,
                    reason,
                })
            })?;
            if let Err(e) = event.apply(&mut ApplyContext::new(&w.conn, &mut w.schema, rec.lsn)) {
                let _ = w.conn.execute_batch("ROLLBACK");
                return Err(Error::Cache(CacheError::ChangeRefused {
                    reason: format!(
                        "re-applying LSN {} to the cache failed ({e}); the cache has diverged from the journal: delete it to rebuild",
                        rec.lsn
                    ),
                }));
            }
            last = rec.lsn;
        }
        if n == 0 {
            w.conn.execute_batch("ROLLBACK").map_err(&ce)?;
            break;
        }
        w.conn
            .execute(
                "UPDATE syncjournal_cache SET applied_lsn = ?1",
                [last as i64],
            )
            .and_then(|_| w.conn.execute_batch("COMMIT"))
            .map_err(&ce)?;
        applied += last - w.committed;
        w.committed = last;
        w.txn_max = last;
    }
    tracing::info!(cache = %path.display(), from, to = w.committed, applied, "cache caught up with the journal");
    Ok(())
}
