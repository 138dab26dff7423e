//! Memory maps of segment files. This is the only module of the crate that uses `unsafe`.
//!
//! Soundness rests on three rules, each enforced here rather than by callers:
//!
//! 1. **Published bytes never change.** A [`SharedMap`] has a *published end*. Readers get
//!    `&[u8]` only for `[0, published end)`. The unique [`MapWriter`] only writes at its cursor,
//!    which is never below the published end, and the published end never passes the cursor.
//!    So no byte is written while a reference to it exists.
//! 2. **Only allocated space is mapped.** Segment files are reserved with `fallocate` (or
//!    written with zeros) before they are mapped, so a store into the map can never need a new
//!    block: a full disk is an error at rotation, never a `SIGBUS`.
//! 3. **Nobody else truncates or writes a mapped file.** Journal files are only opened while
//!    holding the journal directory's exclusive lock, and syncjournal never truncates a segment.
//!    A process that ignores the lock and truncates a segment can make the mapping fault; that
//!    is outside the contract, as it is for every memory-mapped store (README, "Safety").
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use memmap2::{Advice, Mmap, MmapMut, MmapOptions, MmapRaw, UncheckedAdvice};

/// Page size used to round `madvise` ranges (the kernel rounds `msync` itself).
const PAGE_BYTES: usize = 4096;
/// The writer faults in this many bytes ahead of its cursor at a time, so that appends rarely
/// take a page fault.
const POPULATE_AHEAD_BYTES: usize = 1 << 20;

/// A writable shared mapping of a whole segment file, readable by many threads.
#[derive(Debug)]
pub(crate) struct SharedMap {
    raw: MmapRaw,
    len: usize,
    /// Bytes `[0, written)` have been written by the [`MapWriter`] (Release on write).
    written: AtomicUsize,
    /// The LSN of the last record written, stored (Release) after `written`: a reader of
    /// this value who then reads `written` sees at least that record's end.
    written_lsn: AtomicU64,
    /// Bytes `[0, published)` are visible to readers; `published <= written`.
    published: AtomicUsize,
    /// No more bytes will ever be written through this map.
    sealed: AtomicBool,
}

/// The unique writer of a [`SharedMap`]: appends at a cursor that only moves forward.
#[derive(Debug)]
pub(crate) struct MapWriter {
    map: Arc<SharedMap>,
    cursor: usize,
    /// Pages below this offset have been faulted in ahead of the cursor.
    populated: usize,
}

impl SharedMap {
    /// Maps all of `file` (which must be `len` bytes, fully allocated, opened read-write).
    /// Bytes `[0, written)` are taken as already written and are published at once.
    /// With `sync_often` (records synced one group at a time), readahead is turned off and
    /// pages are faulted in ahead of the cursor instead: with readahead, the page cache builds
    /// large folios for the mapping, and every `msync` of one dirty page then writes the whole
    /// folio (up to megabytes, measured on this project's machines). Without it (data synced
    /// at segment ends), readahead's large folios make filling pages cheapest.
    pub(crate) fn map_writable(
        file: &File,
        len: usize,
        written: usize,
        written_lsn: u64,
        sync_often: bool,
    ) -> io::Result<(Arc<SharedMap>, MapWriter)> {
        assert!(
            written <= len,
            "written end {written} past map length {len}"
        );
        let raw = MmapOptions::new().len(len).map_raw(file)?;
        if sync_often {
            let _ = raw.advise(Advice::Random);
        }
        let map = Arc::new(SharedMap {
            raw,
            len,
            written: AtomicUsize::new(written),
            written_lsn: AtomicU64::new(written_lsn),
            published: AtomicUsize::new(written),
            sealed: AtomicBool::new(false),
        });
        let writer = MapWriter {
            map: Arc::clone(&map),
            cursor: written,
            // Without `sync_often`, readahead does the faulting: never populate.
            populated: if sync_often {
                written / PAGE_BYTES * PAGE_BYTES
            } else {
                len
            },
        };
        Ok((map, writer))
    }

    /// The published bytes `[0, published end)`.
    pub(crate) fn published(&self) -> &[u8] {
        let end = self.published.load(Ordering::Acquire);
        // SAFETY: `[0, end)` lies inside the mapping (`end <= written <= len`, checked by
        // `publish`), the mapping lives as long as `self`, and no byte below the published end
        // is ever written again (the writer's cursor is `>= written >= published`), so the
        // shared borrow never aliases a write. The Acquire load pairs with the Release store in
        // `publish`, which happens after the writer's stores became visible (see `publish`).
        unsafe { std::slice::from_raw_parts(self.raw.as_ptr(), end) }
    }

    /// The LSN of the last record written into this map and the end of the written bytes,
    /// consistent with each other: every byte of that record lies below the returned end.
    pub(crate) fn written_tip(&self) -> (u64, usize) {
        let lsn = self.written_lsn.load(Ordering::Acquire);
        (lsn, self.written.load(Ordering::Acquire))
    }

    /// The published end.
    pub(crate) fn published_end(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    /// Makes `[0, end)` visible to readers. `end` is clamped to what has been written; the
    /// published end never moves backwards.
    pub(crate) fn publish(&self, end: usize) {
        // Acquire pairs with the writer's Release store of `written`: every byte below
        // `written` was stored before we read it, so publishing up to it is safe.
        let written = self.written.load(Ordering::Acquire);
        self.published.fetch_max(end.min(written), Ordering::AcqRel);
    }

    /// Flushes `[from, to)` to stable storage (`msync(MS_SYNC)`; the range is rounded out to
    /// pages). This covers the file's data, not its directory entry.
    pub(crate) fn sync(&self, from: usize, to: usize) -> io::Result<()> {
        let to = to.min(self.len);
        if to <= from {
            return Ok(());
        }
        self.raw.flush_range(from, to - from)
    }

    /// Drops this process's page-table entries for the whole pages inside `[from, to)`, which
    /// must be published. The data stays in the page cache (and on disk); the next access
    /// faults it back in. Keeps resident memory flat while a long journal is read.
    pub(crate) fn release(&self, from: usize, to: usize) {
        let to = to.min(self.published_end());
        let start = from.div_ceil(PAGE_BYTES) * PAGE_BYTES;
        let end = to / PAGE_BYTES * PAGE_BYTES;
        if end <= start {
            return;
        }
        // SAFETY: MADV_DONTNEED on a shared file mapping only zaps page-table entries: the
        // contents are reloaded from the page cache on the next access and dirty pages are
        // kept dirty in the page cache (nothing is discarded, unlike private mappings). No
        // reference into the range is invalidated, because the bytes stay the same.
        let _ = unsafe {
            self.raw
                .unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start)
        };
    }

    /// Marks the map as sealed: its segment is complete.
    pub(crate) fn seal(&self) {
        self.sealed.store(true, Ordering::Release);
    }

    /// True once the segment is complete.
    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }
}

impl MapWriter {
    /// The offset the next write goes to.
    pub(crate) fn cursor(&self) -> usize {
        self.cursor
    }

    /// Bytes left between the cursor and the end of the map.
    pub(crate) fn remaining(&self) -> usize {
        self.map.len - self.cursor
    }

    /// Hands `fill` the `advance` bytes at the cursor to write in place, then advances the
    /// cursor and records `lsn` as the last record written. The bytes are not yet published,
    /// so nobody else can see them. Panics if they do not fit (callers check `remaining()`).
    pub(crate) fn append_with(&mut self, advance: usize, lsn: u64, fill: impl FnOnce(&mut [u8])) {
        assert!(
            advance <= self.remaining(),
            "append of {advance} bytes past the end of the map"
        );
        let end = self.cursor + advance;
        if end > self.populated {
            self.populate_ahead(end);
        }
        // SAFETY: `[cursor, cursor + advance)` lies inside the mapping (checked above) and at or
        // after the cursor, hence at or after `written` and `published`: no reader holds a
        // reference to it (readers only see `[0, published)`), no other writer exists
        // (`MapWriter` is unique per map and this takes `&mut self`), and the slice does not
        // outlive this call. The mapping is valid for `len` bytes for the life of `self.map`.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(self.map.raw.as_mut_ptr().add(self.cursor), advance)
        };
        fill(buf);
        self.cursor = end;
        self.map.written.store(self.cursor, Ordering::Release);
        self.map.written_lsn.store(lsn, Ordering::Release);
    }

    /// Faults in the pages from the populated end to at least `end`, plus a chunk ahead, so
    /// that the appends that follow write to mapped pages (an optimisation: errors ignored).
    fn populate_ahead(&mut self, end: usize) {
        let from = self.populated.max(self.cursor / PAGE_BYTES * PAGE_BYTES);
        let to = (end.max(from) + POPULATE_AHEAD_BYTES).min(self.map.len) / PAGE_BYTES * PAGE_BYTES;
        if to > from {
            let _ = self
                .map
                .raw
                .advise_range(Advice::PopulateRead, from, to - from);
        }
        self.populated = to.max(end);
    }

    /// The map this writer writes.
    pub(crate) fn map(&self) -> &Arc<SharedMap> {
        &self.map
    }
}

/// A writable mapping of the first page of the `HEAD` file, where the journal's owner
/// publishes its durable LSN with a plain memory store (no system call per sync); other
/// processes read it with `pread` through the page cache.
#[derive(Debug)]
pub(crate) struct HeadMap {
    map: MmapMut,
}

impl HeadMap {
    /// Maps the first `len` bytes of `file`, which must be at least that long and allocated.
    pub(crate) fn map(file: &File, len: usize) -> io::Result<HeadMap> {
        // SAFETY: rule 3 of this module: `HEAD` is written only by the journal's owner (this
        // process, holding the journal lock) through this map; other processes only read it,
        // with pread. Nobody truncates it while the lock is held.
        let map = unsafe { MmapOptions::new().len(len).map_mut(file)? };
        Ok(HeadMap { map })
    }

    /// Stores `bytes` at the start of the page.
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        self.map[..bytes.len()].copy_from_slice(bytes);
    }
}

/// A read-only mapping of a whole file whose bytes no longer change (a sealed segment, or any
/// segment while the journal lock is held and no writer exists).
#[derive(Debug)]
pub(crate) struct ReadMap {
    map: Option<Mmap>,
}

impl ReadMap {
    /// Maps `file`, whose length is `len`. Zero-length files are represented without a map.
    pub(crate) fn open(file: &File, len: u64) -> io::Result<ReadMap> {
        if len == 0 {
            return Ok(ReadMap { map: None });
        }
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large to map"))?;
        // SAFETY: rule 3 of this module: the caller holds the journal lock (or maps a sealed
        // segment, which is never written again), and syncjournal never truncates a segment,
        // so the mapped bytes stay valid and unchanged for the life of the map.
        let map = unsafe { MmapOptions::new().len(len).map(file)? };
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(ReadMap { map: Some(map) })
    }

    /// The mapped bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Drops page-table entries for the whole pages inside `[from, to)`.
    pub(crate) fn release(&self, from: usize, to: usize) {
        let Some(map) = &self.map else { return };
        let start = from.div_ceil(PAGE_BYTES) * PAGE_BYTES;
        let end = to.min(map.len()) / PAGE_BYTES * PAGE_BYTES;
        if end <= start {
            return;
        }
        // SAFETY: read-only shared file mapping: MADV_DONTNEED drops page-table entries and
        // the same bytes are reloaded from the page cache on the next access; no reference is
        // invalidated because the contents do not change.
        let _ =
            unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_bytes_follow_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(8192).unwrap();
        let (map, mut w) = SharedMap::map_writable(&file, 8192, 16, 0, true).unwrap();
        assert_eq!(map.published().len(), 16);
        w.append_with(8, 1, |buf| {
            buf[..6].copy_from_slice(b"abcdef");
            buf[6..].fill(0);
        });
        assert_eq!(map.written_tip(), (1, 24));
        assert_eq!(map.published().len(), 16, "not published before publish()");
        map.publish(1_000_000);
        assert_eq!(map.published_end(), 24, "clamped to what was written");
        assert_eq!(&map.published()[16..22], b"abcdef");
        map.sync(0, 24).unwrap();
        map.release(0, 8192);
        assert_eq!(&map.published()[16..22], b"abcdef");
    }
}
