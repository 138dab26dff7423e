//! What the journal's writer, its readers and its sync leaders share: positions, the segment
//! list, the sync role, poisoning. One struct, so that neither the writer nor the reader module
//! needs the other.

use crate::error::JournalError;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::format::Lsn;
use crate::journal::ack::AckFile;
use crate::journal::index::SparseIndex;
use crate::journal::options::JournalOptions;
use crate::segment::{DirLock, HeadMap, SharedMap};

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) id: Uuid,
    pub(crate) opts: JournalOptions,
    /// The active segment's map, for sync leaders (who must not need the writer lock).
    pub(crate) active: Mutex<Arc<SharedMap>>,
    /// True while some thread holds the *sync role*: every `msync` of segment data happens
    /// under it (group-commit leaders and rotation alike), so syncs never overlap and a
    /// failure is seen, and poisons the journal, before any later sync can report a false
    /// success (after a failed writeback the kernel reports the error only once per file).
    /// Paired with `cv`.
    pub(crate) syncing: Mutex<SyncFlags>,
    /// Append calls so far (single records and batches), for the commit delay.
    pub(crate) calls: AtomicU64,
    /// `calls` when the last sync took its snapshot.
    pub(crate) calls_at_last_sync: AtomicU64,
    /// Append calls the last sync covered: more than one means concurrent appenders.
    pub(crate) last_group_calls: AtomicU64,
    /// Duration of the last `msync`, in nanoseconds.
    pub(crate) last_sync_ns: AtomicU64,
    /// Signalled when a sync ends (durable LSN raised), on rotation and on poisoning.
    pub(crate) cv: Condvar,
    pub(crate) durable_lsn: AtomicU64,
    pub(crate) written_lsn: AtomicU64,
    pub(crate) poisoned: AtomicBool,
    pub(crate) poison_reason: Mutex<Option<String>>,
    pub(crate) segments: RwLock<VecDeque<SegmentEntry>>,
    pub(crate) ack: Mutex<AckFile>,
    pub(crate) acked_lsn: AtomicU64,
    pub(crate) retire_lock: Mutex<()>,
    /// `HEAD`: the durable LSN published for followers in other processes, through a mapped
    /// page (not synced: it only needs to be visible through the page cache while this
    /// process lives).
    pub(crate) head: Mutex<Option<HeadMap>>,
    /// A sync leader is in its commit delay, waiting on `delay_cv` for appenders.
    pub(crate) delay_waiting: AtomicBool,
    pub(crate) delay_mx: Mutex<()>,
    pub(crate) delay_cv: Condvar,
    pub(crate) shutdown: Mutex<bool>,
    pub(crate) shutdown_cv: Condvar,
    pub(crate) _lock: DirLock,
}

/// State guarded by the `syncing` mutex.
#[derive(Debug, Default)]
pub(crate) struct SyncFlags {
    /// Some thread holds the sync role.
    pub(crate) syncing: bool,
    /// Threads blocked on `cv` (only then is a notification worth a system call).
    pub(crate) waiters: usize,
}

pub(crate) struct SegmentEntry {
    pub(crate) seq: u64,
    pub(crate) first_lsn: Lsn,
    pub(crate) path: PathBuf,
    pub(crate) index: Arc<RwLock<SparseIndex>>,
    /// The header's checksum: what the segment's first frame chains to.
    pub(crate) header_crc: u32,
    /// The segment file's length.
    pub(crate) bytes: u64,
    /// Since when every record of the segment is acknowledged, ms since the Unix epoch (for a
    /// segment already acknowledged when the journal was opened: the time of the
    /// acknowledgement then on record, which is at least as late).
    pub(crate) acked_since_ms: Option<u64>,
    /// The writer's map, for the active segment only.
    pub(crate) map: Option<Arc<SharedMap>>,
    /// For sealed segments: the LSN after the segment's last record, and its data end.
    pub(crate) sealed: Option<(Lsn, usize)>,
}

/// Locks a mutex, taking over the data of a thread that panicked while holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Fails if the journal is poisoned.
    pub(crate) fn check(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Journal(JournalError::Poisoned {
                reason: self.poison_reason().unwrap_or_default(),
            }));
        }
        Ok(())
    }

    pub(crate) fn poison_reason(&self) -> Option<String> {
        lock(&self.poison_reason).clone()
    }

    /// Marks the journal poisoned and wakes every waiter, who will see the error.
    pub(crate) fn poison(&self, cause: &Error) {
        {
            let mut r = lock(&self.poison_reason);
            if r.is_none() {
                *r = Some(cause.to_string());
            }
        }
        self.poisoned.store(true, Ordering::Release);
        tracing::error!(dir = %self.dir.display(), error = %cause, "journal poisoned");
        let _g = lock(&self.syncing);
        self.cv.notify_all();
    }

    /// The mutex `cv` is paired with (for followers waiting for new durable records).
    pub(crate) fn cv_lock(&self) -> MutexGuard<'_, SyncFlags> {
        lock(&self.syncing)
    }

    /// Wakes followers and waiters (after a rotation changed what they can see).
    pub(crate) fn notify(&self) {
        let _g = lock(&self.syncing);
        self.cv.notify_all();
    }
}
