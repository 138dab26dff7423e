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

use memmap2::{Mmap, MmapOptions, MmapRaw, UncheckedAdvice};

/// Page size used to round `madvise` ranges (the kernel rounds `msync` itself).
const PAGE_BYTES: usize = 4096;

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
}

impl SharedMap {
    /// Maps all of `file` (which must be `len` bytes, fully allocated, opened read-write).
    /// Bytes `[0, written)` are taken as already written and are published at once.
    pub(crate) fn map_writable(
        file: &File,
        len: usize,
        written: usize,
        written_lsn: u64,
    ) -> io::Result<(Arc<SharedMap>, MapWriter)> {
        assert!(
            written <= len,
            "written end {written} past map length {len}"
        );
        let raw = MmapOptions::new().len(len).map_raw(file)?;
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

    /// Copies `parts` one after another at the cursor, then advances the cursor by `advance`
    /// bytes (at least their total length; bytes skipped over must already be zero, which holds
    /// for the never-written part of a segment). Panics if the frame does not fit: callers check
    /// `remaining()` first, so a panic here is a bug, not bad input.
    pub(crate) fn append(&mut self, parts: &[&[u8]], advance: usize, lsn: u64) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        assert!(total <= advance, "append parts exceed the advance");
        assert!(
            advance <= self.remaining(),
            "append of {advance} bytes past the end of the map"
        );
        let mut at = self.cursor;
        for part in parts {
            // SAFETY: `[at, at + len)` lies inside the mapping (checked above). It is at or
            // after the cursor, hence at or after `written` and `published`, so no reader holds
            // a reference to it (readers only see `[0, published)`) and no other writer exists
            // (`MapWriter` is unique per map and `append` takes `&mut self`). Source and
            // destination cannot overlap: `part` is ordinary memory, not this mapping's
            // unpublished tail, which nothing else can borrow.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    part.as_ptr(),
                    self.map.raw.as_mut_ptr().add(at),
                    part.len(),
                );
            }
            at += part.len();
        }
        self.cursor += advance;
        self.map.written.store(self.cursor, Ordering::Release);
        self.map.written_lsn.store(lsn, Ordering::Release);
    }

    /// The map this writer writes.
    pub(crate) fn map(&self) -> &Arc<SharedMap> {
        &self.map
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
        let (map, mut w) = SharedMap::map_writable(&file, 8192, 16, 0).unwrap();
        assert_eq!(map.published().len(), 16);
        w.append(&[b"abc", b"def"], 8, 1);
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
