//! The journal's handle: `Journal::open` (recovery, then the writer, shared state and flusher
//! set up) and the public API — append, batches, durability, acknowledgement, readers, state.
//!
//! # Concurrency
//!
//! * `writer` (a mutex) serialises appends: LSN assignment, the copy into the map, rotation.
//! * Durability is a separate step (`group_commit`): a thread that needs its record durable
//!   either becomes the *sync leader* or waits on `cv`. The leader snapshots the written end,
//!   `msync`s, publishes, raises `durable_lsn` and wakes every waiter, so one `msync` serves a
//!   whole group.
//! * Lock order: `writer` → `sync` → (`segments`). A leader never holds `sync` while taking
//!   `writer`.

use crate::error::JournalError;
use std::collections::VecDeque;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::format::Lsn;
use crate::format::{SEGMENT_DATA_OFFSET, Seed, SegmentHeader, frame_bytes};
use crate::journal::append::{Writer, check_kind, check_len};
use crate::journal::group_commit::spawn_flusher;
use crate::journal::options::{JournalOptions, PersistMode};
use crate::journal::reader::Reader;
use crate::journal::recovery::{self, RecoveryReport};
use crate::journal::shared::{SegmentEntry, Shared, SyncFlags, lock};
use crate::segment::{DirLock, SharedMap, open_segment_rw, sync_dir};

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
    /// The single writer of the active segment: appends and rotation hold it.
    writer: Mutex<Writer>,
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

impl Journal {
    /// Opens the journal in `dir`, creating it if missing (see
    /// [`JournalOptions::create_if_missing`]), and recovers it according to the options'
    /// [`crate::RecoveryMode`]. What recovery found and did is in [`Journal::recovery_report`].
    ///
    /// # Errors
    ///
    /// [`JournalError::Locked`] if another process (or handle) has the journal open; corruption
    /// errors as the recovery mode dictates ([`JournalError::Corrupt`] names segment, offset and
    /// kind); [`JournalError::ForeignFile`], [`JournalError::ForeignSegment`], [`JournalError::UnsupportedVersion`]
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
                    return Err(Error::Journal(JournalError::NotFound { dir }));
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
                return Err(Error::Journal(JournalError::ForeignDirectory {
                    dir,
                    example: foreign,
                }));
            }
            if !opts.create_if_missing {
                return Err(Error::Journal(JournalError::NoJournal { dir }));
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
            writer: Mutex::new(writer),
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
    /// [`JournalError::EmptyRecord`], [`JournalError::RecordTooLarge`], [`JournalError::Poisoned`],
    /// [`JournalError::DiskFull`] when a new segment cannot be reserved (nothing is written; the
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
            return Err(Error::Journal(JournalError::BatchTooLarge {
                bytes,
                max: capacity,
            }));
        }
        let range = {
            let mut w = lock(&self.writer);
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
        let mut w = lock(&self.writer);
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
    /// [`JournalError::AckBeyondDurable`] if `lsn` is not durable yet; I/O errors (a failed sync of the
    /// acknowledgement file poisons the journal).
    pub fn ack(&self, lsn: Lsn) -> Result<()> {
        self.shared.check()?;
        let durable = self.shared.durable_lsn.load(Ordering::Acquire);
        if lsn > durable {
            return Err(Error::Journal(JournalError::AckBeyondDurable {
                lsn,
                durable,
            }));
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
    pub fn read(&self, lsn: Lsn) -> Result<Option<crate::journal::reader::Record>> {
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
