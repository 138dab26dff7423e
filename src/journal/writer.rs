//! The journal writer: appends with group commit, segment rotation, poisoning on failed
//! syncs, acknowledgement and retention.
//!
//! # Concurrency
//!
//! * `writer` (a mutex) serialises appends: LSN assignment, the copy into the map, rotation.
//! * Durability is a separate step. A thread that needs its record durable either becomes the
//!   *sync leader* (if no sync is running) or waits on `cv`. The leader snapshots the written
//!   end under the `writer` lock, releases it, `msync`s, publishes, raises `durable_lsn` and
//!   wakes every waiter. Threads that appended while a sync ran are covered by the next one, so
//!   one `msync` serves a whole group.
//! * Lock order: `writer` → `sync` → (`segments`). A leader never holds `sync` while taking
//!   `writer`.

use std::collections::VecDeque;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use uuid::Uuid;

use crate::Lsn;
use crate::error::{Error, Result};
use crate::fault::IoOp;
use crate::format::{
    KIND_RESERVED_MIN, SEGMENT_DATA_OFFSET, Seed, SegmentHeader, encode_frame_into, frame_bytes,
};
use crate::journal::ack::AckFile;
use crate::journal::index::{INDEX_STRIDE, SparseIndex};
use crate::journal::options::{JournalOptions, PersistMode};
use crate::journal::reader::Reader;
use crate::journal::recovery::{self, RecoveryReport};
use crate::segment::{
    DirLock, HeadMap, MapWriter, SEGMENT_SEQ_MAX, SharedMap, create_segment, inject,
    open_segment_rw, sync_dir,
};

/// The record kind `append` uses: opaque application data.
pub const KIND_DATA: u8 = 1;

/// An append-only journal of checksummed records in memory-mapped, preallocated segment files.
///
/// `Journal` is `Send + Sync`: share it with `Arc` and append from many threads. Dropping it
/// syncs what is not yet durable (logging any error); [`Journal::close`] does the same and
/// returns the error. The directory lock is released when the journal and every [`Reader`]
/// created from it are dropped.
pub struct Journal {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
    report: RecoveryReport,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.shared.dir)
            .field("id", &self.shared.id)
            .finish_non_exhaustive()
    }
}

/// A snapshot of the journal's positions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalState {
    /// The journal's UUID.
    pub journal_id: Uuid,
    /// LSN of the oldest retained record (equal to `next_lsn` when the journal is empty).
    pub first_lsn: Lsn,
    /// LSN the next append will get.
    pub next_lsn: Lsn,
    /// Highest durable LSN (0: none).
    pub durable_lsn: Lsn,
    /// Highest acknowledged LSN (0: none).
    pub acked_lsn: Lsn,
    /// When the acknowledgement was last written, in milliseconds since the Unix epoch.
    pub acked_at_ms: u64,
    /// Number of segment files.
    pub segments: usize,
    /// Why the journal is poisoned, if it is.
    pub poisoned: Option<String>,
}

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) id: Uuid,
    pub(crate) opts: JournalOptions,
    writer: Mutex<Writer>,
    /// The active segment's map, for sync leaders (who must not need the writer lock).
    active: Mutex<Arc<SharedMap>>,
    /// True while some thread holds the *sync role*: every `msync` of segment data happens
    /// under it (group-commit leaders and rotation alike), so syncs never overlap and a
    /// failure is seen, and poisons the journal, before any later sync can report a false
    /// success (after a failed writeback the kernel reports the error only once per file).
    /// Paired with `cv`.
    syncing: Mutex<SyncFlags>,
    /// Append calls so far (single records and batches), for the commit delay.
    calls: AtomicU64,
    /// `calls` when the last sync took its snapshot.
    calls_at_last_sync: AtomicU64,
    /// Append calls the last sync covered: more than one means concurrent appenders.
    last_group_calls: AtomicU64,
    /// Duration of the last `msync`, in nanoseconds.
    last_sync_ns: AtomicU64,
    /// Signalled when a sync ends (durable LSN raised), on rotation and on poisoning.
    pub(crate) cv: Condvar,
    pub(crate) durable_lsn: AtomicU64,
    written_lsn: AtomicU64,
    poisoned: AtomicBool,
    poison_reason: Mutex<Option<String>>,
    pub(crate) segments: RwLock<VecDeque<SegmentEntry>>,
    ack: Mutex<AckFile>,
    acked_lsn: AtomicU64,
    retire_lock: Mutex<()>,
    /// `HEAD`: the durable LSN published for followers in other processes, through a mapped
    /// page (not synced: it only needs to be visible through the page cache while this
    /// process lives).
    head: Mutex<Option<HeadMap>>,
    /// A sync leader is in its commit delay, waiting on `delay_cv` for appenders.
    delay_waiting: AtomicBool,
    delay_mx: Mutex<()>,
    delay_cv: Condvar,
    shutdown: Mutex<bool>,
    shutdown_cv: Condvar,
    _lock: DirLock,
}

/// A segment as readers see it.
/// State guarded by the `syncing` mutex.
#[derive(Debug, Default)]
pub(crate) struct SyncFlags {
    /// Some thread holds the sync role.
    pub(crate) syncing: bool,
    /// Threads blocked on `cv` (only then is a notification worth a system call).
    pub(crate) waiters: usize,
}

/// Bounds of the commit delay: how long a sync leader waits for concurrent appenders to add
/// their records to its group.
const COMMIT_DELAY_MIN_NS: u64 = 5_000;
/// The writer drops its mappings of synced pages in steps of this many bytes.
const RELEASE_WRITTEN_BYTES: usize = 8 << 20;
const COMMIT_DELAY_MAX_NS: u64 = 100_000;

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

struct Writer {
    seq: u64,
    seed: Seed,
    path: PathBuf,
    _file: File,
    map: MapWriter,
    prev_crc: u32,
    next_lsn: Lsn,
    index: Arc<RwLock<SparseIndex>>,
    since_index: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Journal {
    /// Opens the journal in `dir`, creating it if missing (see
    /// [`JournalOptions::create_if_missing`]), and recovers it according to the options'
    /// [`crate::RecoveryMode`]. What recovery found and did is in [`Journal::recovery_report`].
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another process (or handle) has the journal open; corruption
    /// errors as the recovery mode dictates ([`Error::Corrupt`] names segment, offset and
    /// kind); [`Error::ForeignFile`], [`Error::ForeignSegment`], [`Error::UnsupportedVersion`]
    /// for files that are not this journal's; I/O errors.
    pub fn open(dir: impl AsRef<Path>, opts: JournalOptions) -> Result<Journal> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::io(
                    "open journal directory",
                    &dir,
                    std::io::Error::other("not a directory"),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !opts.create_if_missing {
                    return Err(Error::NotFound { dir });
                }
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::io("create journal directory", &dir, e))?;
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    sync_dir(parent, opts.faults.as_deref())?;
                }
            }
            Err(e) => return Err(Error::io("open journal directory", &dir, e)),
        }
        let listing = crate::journal::listing::list(&dir)?;
        if listing.segments.is_empty() && !listing.has_ack {
            if let Some(foreign) = listing.foreign {
                return Err(Error::ForeignDirectory {
                    dir,
                    example: foreign,
                });
            }
            if !opts.create_if_missing {
                return Err(Error::NoJournal { dir });
            }
        }
        let lock = DirLock::acquire(&dir, Duration::from_millis(opts.lock_wait_ms))?;
        let rec = recovery::recover(&dir, &opts)?;
        let report = rec.report.clone();
        if report.cuts.is_empty() && report.skipped.is_empty() {
            tracing::info!(target: "syncjournal::recovery", dir = %dir.display(), "{report}");
        } else {
            tracing::warn!(target: "syncjournal::recovery", dir = %dir.display(), cuts = ?report.cuts, "{report}");
        }

        let mut entries = VecDeque::with_capacity(rec.segments.len());
        let count = rec.segments.len();
        let on_record = rec.ack.current();
        let mut writer = None;
        let mut active_map = None;
        for (i, seg) in rec.segments.into_iter().enumerate() {
            let index = Arc::new(RwLock::new(seg.index));
            if i + 1 < count {
                entries.push_back(SegmentEntry {
                    seq: seg.seq,
                    first_lsn: seg.header.first_lsn,
                    path: seg.path,
                    index,
                    header_crc: SegmentHeader::crc_of(&seg.header.encode()),
                    bytes: seg.header.segment_bytes,
                    // Retention's clock survives a restart: already acknowledged, it has been
                    // since (at the latest) the acknowledgement on record.
                    acked_since_ms: (seg.tail.next_lsn <= on_record.acked_lsn.saturating_add(1))
                        .then_some(on_record.acked_at_ms),
                    map: None,
                    sealed: Some((seg.tail.next_lsn, seg.tail.end)),
                });
                continue;
            }
            let file = open_segment_rw(&seg.path)?;
            let (map, mw) = SharedMap::map_writable(
                &file,
                seg.header.segment_bytes as usize,
                seg.tail.end,
                seg.tail.next_lsn - 1,
                opts.persist_mode != PersistMode::Buffered,
            )
            .map_err(|e| Error::io("map segment", &seg.path, e))?;
            active_map = Some(Arc::clone(&map));
            entries.push_back(SegmentEntry {
                seq: seg.seq,
                first_lsn: seg.header.first_lsn,
                path: seg.path.clone(),
                index: Arc::clone(&index),
                header_crc: SegmentHeader::crc_of(&seg.header.encode()),
                bytes: seg.header.segment_bytes,
                acked_since_ms: None,
                map: Some(map),
                sealed: None,
            });
            writer = Some(Writer {
                seq: seg.seq,
                seed: Seed::new(rec.journal_id, seg.seq),
                path: seg.path,
                _file: file,
                map: mw,
                prev_crc: seg.tail.last_crc,
                next_lsn: seg.tail.next_lsn,
                index,
                since_index: 0,
            });
        }
        let writer = writer.expect("recovery yields at least one segment");
        let last = writer.next_lsn - 1;
        let ack = rec.ack;
        let acked = ack.current().acked_lsn;
        let head = crate::journal::head::open_head(&dir);
        let shared = Arc::new(Shared {
            dir,
            id: rec.journal_id,
            opts,
            writer: Mutex::new(writer),
            active: Mutex::new(active_map.expect("the last segment is mapped")),
            syncing: Mutex::new(SyncFlags::default()),
            calls: AtomicU64::new(0),
            calls_at_last_sync: AtomicU64::new(0),
            last_group_calls: AtomicU64::new(0),
            last_sync_ns: AtomicU64::new(0),
            cv: Condvar::new(),
            durable_lsn: AtomicU64::new(last),
            written_lsn: AtomicU64::new(last),
            poisoned: AtomicBool::new(false),
            poison_reason: Mutex::new(None),
            segments: RwLock::new(entries),
            ack: Mutex::new(ack),
            acked_lsn: AtomicU64::new(acked),
            retire_lock: Mutex::new(()),
            head: Mutex::new(head),
            delay_waiting: AtomicBool::new(false),
            delay_mx: Mutex::new(()),
            delay_cv: Condvar::new(),
            shutdown: Mutex::new(false),
            shutdown_cv: Condvar::new(),
            _lock: lock,
        });
        shared.publish_head();
        shared.retire()?;
        let flusher = match shared.opts.persist_mode {
            PersistMode::Batched { interval } => {
                Some(spawn_flusher(Arc::clone(&shared), interval)?)
            }
            _ => None,
        };
        Ok(Journal {
            shared,
            flusher,
            report,
        })
    }

    /// What recovery found and did when this journal was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The journal's UUID (also in every segment header).
    pub fn id(&self) -> Uuid {
        self.shared.id
    }

    /// The options the journal was opened with.
    pub fn options(&self) -> &JournalOptions {
        &self.shared.opts
    }

    /// Appends one record of kind [`KIND_DATA`] and returns its LSN. With
    /// [`PersistMode::Sync`] it returns once the record is durable.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyRecord`], [`Error::RecordTooLarge`], [`Error::Poisoned`],
    /// [`Error::DiskFull`] when a new segment cannot be reserved (nothing is written; the
    /// journal stays consistent), I/O errors of the sync (which poison the journal).
    pub fn append(&self, payload: &[u8]) -> Result<Lsn> {
        self.append_kind(KIND_DATA, payload)
    }

    /// Appends one record of application kind `kind` (`0x01..=0xEF`). See [`Journal::append`].
    pub fn append_kind(&self, kind: u8, payload: &[u8]) -> Result<Lsn> {
        let lsn = self.write(kind, payload)?;
        if self.shared.opts.persist_mode == PersistMode::Sync {
            self.shared.wait_durable(lsn)?;
        }
        Ok(lsn)
    }

    /// Appends records of kind [`KIND_DATA`] under one lock and one sync, returning their LSNs.
    /// The batch is not atomic: after a crash, a prefix of it may survive. Put changes that must
    /// be atomic in one record.
    pub fn append_batch<I, P>(&self, payloads: I) -> Result<Range<Lsn>>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        self.append_batch_kind(KIND_DATA, payloads)
    }

    /// [`Journal::append_batch`] with an application kind.
    pub fn append_batch_kind<I, P>(&self, kind: u8, payloads: I) -> Result<Range<Lsn>>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        self.shared.check()?;
        check_kind(kind)?;
        // Validate everything and size the batch before writing anything: a refused batch
        // leaves the journal unchanged.
        let payloads: Vec<P> = payloads.into_iter().collect();
        let limit = self.shared.opts.payload_bytes_limit();
        let mut bytes = 0usize;
        for p in &payloads {
            check_len(p.as_ref().len(), limit)?;
            bytes += frame_bytes(p.as_ref().len());
        }
        let capacity = self.shared.opts.segment_bytes_max as usize - SEGMENT_DATA_OFFSET;
        if bytes > capacity {
            return Err(Error::BatchTooLarge {
                bytes,
                max: capacity,
            });
        }
        let range = {
            let mut w = lock(&self.shared.writer);
            self.shared.check()?;
            // The whole batch goes into one segment: rotate first if it does not fit, so that
            // a full disk is refused before any record of the batch is written.
            if w.map.remaining() < bytes {
                w.rotate(&self.shared)?;
            }
            self.shared.note_call();
            let first = w.next_lsn;
            for p in &payloads {
                w.append(&self.shared, kind, p.as_ref())?;
            }
            first..w.next_lsn
        };
        if self.shared.opts.persist_mode == PersistMode::Sync && !range.is_empty() {
            self.shared.wait_durable(range.end - 1)?;
        }
        Ok(range)
    }

    /// Writes a record into the journal without waiting for it to become durable, whatever
    /// the persist mode. Pair with [`Journal::wait_durable`] to overlap work with the sync.
    pub fn write(&self, kind: u8, payload: &[u8]) -> Result<Lsn> {
        self.shared.check()?;
        check_kind(kind)?;
        check_len(payload.len(), self.shared.opts.payload_bytes_limit())?;
        let mut w = lock(&self.shared.writer);
        self.shared.check()?;
        self.shared.note_call();
        w.append(&self.shared, kind, payload)
    }

    /// Blocks until every record up to `lsn` is durable, syncing if needed (group commit).
    pub fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        self.shared.wait_durable(lsn)
    }

    /// The highest durable LSN (a cheap read of an atomic).
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.durable_lsn.load(Ordering::Acquire)
    }

    /// Makes every record written so far durable.
    pub fn sync(&self) -> Result<()> {
        self.shared.check()?;
        let lsn = self.shared.written_lsn.load(Ordering::Acquire);
        self.shared.wait_durable(lsn)
    }

    /// Durably records that every record up to `lsn` has been applied downstream, then removes
    /// segments that hold only acknowledged records (keeping
    /// [`JournalOptions::retain_acked_segments`] of them). Acknowledging an LSN at or below the
    /// current one does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::AckBeyondDurable`] if `lsn` is not durable yet; I/O errors (a failed sync of the
    /// acknowledgement file poisons the journal).
    pub fn ack(&self, lsn: Lsn) -> Result<()> {
        self.shared.check()?;
        let durable = self.shared.durable_lsn.load(Ordering::Acquire);
        if lsn > durable {
            return Err(Error::AckBeyondDurable { lsn, durable });
        }
        {
            let mut ack = lock(&self.shared.ack);
            if lsn <= ack.current().acked_lsn {
                return Ok(());
            }
            if let Err(e) = ack.write(lsn, self.shared.opts.faults.as_deref()) {
                self.shared.poison(&e);
                return Err(e);
            }
            self.shared.acked_lsn.store(lsn, Ordering::Release);
        }
        self.shared.retire()
    }

    /// A reader positioned at `lsn` (the first record at or after it). Readers see durable
    /// records only.
    pub fn reader(&self, lsn: Lsn) -> Result<Reader> {
        Reader::new(Arc::clone(&self.shared), lsn)
    }

    /// The record at `lsn`, if it is durable and retained (found through the sparse index).
    pub fn read(&self, lsn: Lsn) -> Result<Option<crate::Record>> {
        let mut r = self.reader(lsn)?;
        match r.next_record()? {
            Some(rec) if rec.lsn == lsn => Ok(Some(rec)),
            _ => Ok(None),
        }
    }

    /// Bytes of the frames from the record at `lsn` (or the first one after it) to the end of
    /// the durable data: the size of what is pending downstream when `lsn` is the first
    /// unacknowledged record. Computed from positions on disk, never from counters.
    pub fn bytes_from(&self, lsn: Lsn) -> Result<u64> {
        let (segs, start) = {
            let segs = self
                .shared
                .segments
                .read()
                .unwrap_or_else(|e| e.into_inner());
            let ends: Vec<(u64, Lsn, usize)> = segs
                .iter()
                .map(|e| {
                    let end = match (&e.map, e.sealed) {
                        (Some(m), _) => m.published_end(),
                        (None, Some((_, end))) => end,
                        (None, None) => SEGMENT_DATA_OFFSET,
                    };
                    (e.seq, e.first_lsn, end)
                })
                .collect();
            (ends, segs.front().map_or(1, |e| e.first_lsn))
        };
        let lsn = lsn.max(start);
        // The offset of `lsn` inside its segment, found through the sparse index.
        let Some((seq, off)) = self.reader(lsn)?.next_position()? else {
            return Ok(0);
        };
        Ok(segs
            .iter()
            .filter(|(s, _, _)| *s >= seq)
            .map(|&(s, _, end)| if s == seq { end.saturating_sub(off) } else { end - SEGMENT_DATA_OFFSET } as u64)
            .sum())
    }

    /// The journal's positions now.
    pub fn state(&self) -> JournalState {
        let s = &self.shared;
        let (first_lsn, segments) = {
            let segs = s.segments.read().unwrap_or_else(|e| e.into_inner());
            (segs.front().map_or(1, |e| e.first_lsn), segs.len())
        };
        let ack = lock(&s.ack).current();
        JournalState {
            journal_id: s.id,
            first_lsn,
            next_lsn: s.written_lsn.load(Ordering::Acquire) + 1,
            durable_lsn: s.durable_lsn.load(Ordering::Acquire),
            acked_lsn: ack.acked_lsn,
            acked_at_ms: ack.acked_at_ms,
            segments,
            poisoned: s.poison_reason(),
        }
    }

    /// Stops background work, syncs what is not durable, and reports the outcome.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        *lock(&self.shared.shutdown) = true;
        self.shared.shutdown_cv.notify_all();
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
        }
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Ok(());
        }
        self.sync()
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(dir = %self.shared.dir.display(), error = %e, "sync on close failed");
        }
    }
}

fn check_kind(kind: u8) -> Result<()> {
    if kind == 0 || kind >= KIND_RESERVED_MIN {
        return Err(Error::ReservedKind { kind });
    }
    Ok(())
}

fn check_len(len: usize, max: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::EmptyRecord);
    }
    if len > max {
        return Err(Error::RecordTooLarge { len, max });
    }
    Ok(())
}

fn spawn_flusher(shared: Arc<Shared>, interval: Duration) -> Result<JoinHandle<()>> {
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
    /// Fails if the journal is poisoned.
    pub(crate) fn check(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned {
                reason: self.poison_reason().unwrap_or_default(),
            });
        }
        Ok(())
    }

    fn poison_reason(&self) -> Option<String> {
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

    /// Blocks until every record up to `lsn` is durable: waits for a running sync, or becomes
    /// the sync leader (group commit).
    pub(crate) fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        if self.durable_lsn.load(Ordering::Acquire) < lsn {
            self.check()?;
            let written = self.written_lsn.load(Ordering::Acquire);
            if lsn > written {
                return Err(Error::NotWritten { lsn, written });
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
    fn acquire_sync_role(&self) -> Result<()> {
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

    fn release_sync_role(&self) {
        let mut flags = lock(&self.syncing);
        flags.syncing = false;
        if flags.waiters > 0 {
            self.cv.notify_all();
        }
    }

    /// Counts an append call (for the commit delay), waking a leader waiting for it.
    fn note_call(&self) {
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
    fn sync_map(&self, map: &SharedMap, upto: Lsn, to: usize, path: &Path) -> Result<()> {
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

    /// Stores the durable LSN in `HEAD` for followers (a memory store into a mapped page).
    fn publish_head(&self) {
        let mut head = lock(&self.head);
        let Some(map) = head.as_mut() else { return };
        let h = crate::format::Head {
            journal_id: self.id,
            durable_lsn: self.durable_lsn.load(Ordering::Acquire),
            updated_at_ms: crate::journal::ack::now_ms(),
            pid: std::process::id(),
        };
        map.write(&h.encode());
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

    /// Removes sealed segments whose records are all acknowledged: beyond the newest
    /// `retain_acked_segments` of them, those acknowledged for `retain_acked_ms` or more, and
    /// the oldest ones while the acknowledged segments kept exceed `retain_acked_bytes`.
    pub(crate) fn retire(&self) -> Result<()> {
        let _g = lock(&self.retire_lock);
        let acked = self.acked_lsn.load(Ordering::Acquire);
        let now = crate::journal::ack::now_ms();
        let doomed: Vec<(u64, PathBuf)> = {
            let mut segs = self.segments.write().unwrap_or_else(|e| e.into_inner());
            let eligible = segs
                .iter()
                .take_while(|e| {
                    e.sealed
                        .is_some_and(|(next, _)| next <= acked.saturating_add(1))
                })
                .count();
            for e in segs.iter_mut().take(eligible) {
                e.acked_since_ms.get_or_insert(now);
            }
            let candidates = eligible.saturating_sub(self.opts.retain_acked_segments);
            let keep_for = self.opts.retain_acked_ms;
            let mut kept_bytes: u64 = segs.iter().take(candidates).map(|e| e.bytes).sum();
            // Only a prefix can go (the retained segments stay consecutive); acknowledgement
            // times grow along it.
            let mut remove = 0;
            for e in segs.iter().take(candidates) {
                let old = e
                    .acked_since_ms
                    .is_some_and(|t| now.saturating_sub(t) >= keep_for);
                if !(old || kept_bytes > self.opts.retain_acked_bytes) {
                    break;
                }
                kept_bytes -= e.bytes;
                remove += 1;
            }
            segs.iter()
                .take(remove)
                .map(|e| (e.seq, e.path.clone()))
                .collect()
        };
        if doomed.is_empty() {
            return Ok(());
        }
        let faults = self.opts.faults.as_deref();
        let mut removed = 0;
        let mut result = Ok(());
        for (_, path) in &doomed {
            let r =
                inject(faults, IoOp::RemoveSegment, path).and_then(|()| std::fs::remove_file(path));
            match r {
                Ok(()) => removed += 1,
                Err(e) => {
                    result = Err(Error::io("remove retired segment", path, e));
                    break;
                }
            }
        }
        {
            let mut segs = self.segments.write().unwrap_or_else(|e| e.into_inner());
            segs.drain(..removed);
        }
        if removed > 0 {
            tracing::debug!(removed, acked, "retired acknowledged segments");
            sync_dir(&self.dir, faults)?;
        }
        result
    }

    /// The mutex `cv` is paired with (for followers waiting for new durable records).
    pub(crate) fn cv_lock(&self) -> MutexGuard<'_, SyncFlags> {
        lock(&self.syncing)
    }

    /// Wakes followers and waiters (after a rotation changed what they can see).
    fn notify(&self) {
        let _g = lock(&self.syncing);
        self.cv.notify_all();
    }
}

impl Writer {
    fn append(&mut self, shared: &Shared, kind: u8, payload: &[u8]) -> Result<Lsn> {
        let fb = frame_bytes(payload.len());
        let lsn = self.next_lsn;
        // Before rotating: a new segment must never start at an LSN no record can have.
        if lsn > crate::format::LSN_MAX {
            return Err(Error::LimitReached("LSNs are exhausted"));
        }
        if self.map.remaining() < fb {
            self.rotate(shared)?;
        }
        let synced = shared.durable_lsn.load(Ordering::Relaxed);
        let (seed, prev) = (self.seed, self.prev_crc);
        let offset = self.map.cursor();
        let mut crc = 0;
        self.map.append_with(fb, lsn, |buf| {
            crc = encode_frame_into(buf, seed, lsn, synced, prev, kind, payload);
        });
        self.prev_crc = crc;
        if self.since_index == 0 {
            self.index
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .note(lsn, offset, true);
        }
        self.since_index = (self.since_index + 1) % INDEX_STRIDE;
        self.next_lsn += 1;
        shared.written_lsn.store(lsn, Ordering::Release);
        tracing::trace!(lsn, bytes = payload.len(), "append");
        Ok(lsn)
    }

    /// Seals the active segment (syncing all of it) and starts the next one.
    fn rotate(&mut self, shared: &Shared) -> Result<()> {
        let _span = tracing::debug_span!("rotate", seq = self.seq).entered();
        let faults = shared.opts.faults.as_deref();
        let map = Arc::clone(self.map.map());
        let end = self.map.cursor();
        // Seal: make the whole segment durable, under the sync role like any sync.
        shared.acquire_sync_role()?;
        let sealed = shared.sync_map(&map, self.next_lsn - 1, end, &self.path);
        shared.release_sync_role();
        sealed?;
        if self.seq >= SEGMENT_SEQ_MAX {
            return Err(Error::LimitReached(
                "segment sequence numbers are exhausted",
            ));
        }
        let header = SegmentHeader {
            journal_id: shared.id,
            segment_seq: self.seq + 1,
            first_lsn: self.next_lsn,
            segment_bytes: shared.opts.segment_bytes_max,
        };
        let (path, file) = match create_segment(&shared.dir, &header, faults) {
            Ok(created) => created,
            Err(e) => {
                // If the new segment was already renamed into place (the directory fsync
                // failed), the directory's state is unknown and a segment exists that this
                // writer does not use: a failed fsync, which poisons. Otherwise (nothing was
                // renamed: no space, for example) the journal is unchanged and may retry.
                let name = crate::segment::segment_file_name(header.segment_seq);
                if shared.dir.join(name).exists() {
                    shared.poison(&e);
                }
                return Err(e);
            }
        };
        let (new_map, writer) = SharedMap::map_writable(
            &file,
            header.segment_bytes as usize,
            SEGMENT_DATA_OFFSET,
            header.first_lsn - 1,
            shared.opts.persist_mode != PersistMode::Buffered,
        )
        .map_err(|e| Error::io("map segment", &path, e))?;
        let index = Arc::new(RwLock::new(SparseIndex::default()));
        {
            let mut segs = shared.segments.write().unwrap_or_else(|e| e.into_inner());
            if let Some(last) = segs.back_mut() {
                last.map = None;
                last.sealed = Some((self.next_lsn, end));
            }
            segs.push_back(SegmentEntry {
                seq: header.segment_seq,
                first_lsn: header.first_lsn,
                path: path.clone(),
                index: Arc::clone(&index),
                header_crc: SegmentHeader::crc_of(&header.encode()),
                bytes: header.segment_bytes,
                acked_since_ms: None,
                map: Some(Arc::clone(&new_map)),
                sealed: None,
            });
        }
        *lock(&shared.active) = new_map;
        map.seal();
        let prev_crc = SegmentHeader::crc_of(&header.encode());
        *self = Writer {
            seq: header.segment_seq,
            seed: Seed::new(shared.id, header.segment_seq),
            path,
            _file: file,
            map: writer,
            prev_crc,
            next_lsn: header.first_lsn,
            index,
            since_index: 0,
        };
        shared.notify();
        tracing::debug!(
            seq = header.segment_seq,
            first_lsn = header.first_lsn,
            "segment rotated"
        );
        if let Err(e) = shared.retire() {
            tracing::warn!(error = %e, "retiring acknowledged segments failed; will retry");
        }
        Ok(())
    }
}
