//! Reading a journal from any LSN, across segments, optionally following new records.
//!
//! Readers see durable records only: a record becomes visible once the sync that covers it
//! has completed. So a downstream consumer can never act on a record that a power loss could
//! still take back (and whose LSN a later append could then reuse).

use crate::error::JournalError;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::DamageKind;
use crate::error::{Error, Result};
use crate::format::Lsn;
use crate::format::{
    FRAME_HEADER_BYTES, FrameCheck, KIND_GAP, SEGMENT_DATA_OFFSET, Seed, check_frame, gap_end,
};
use crate::journal::recovery::SegmentBytes;
use crate::journal::scan::{Chain, Link, fault_kind};
use crate::journal::shared::Shared;
use crate::segment::SharedMap;

/// A record borrowed from the journal's mapped bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The record's LSN. For a gap record: the first missing LSN.
    pub lsn: Lsn,
    /// The record kind ([`crate::KIND_DATA`] for plain appends, [`crate::format::KIND_GAP`]
    /// for a gap left by salvage).
    pub kind: u8,
    /// The payload.
    pub payload: &'a [u8],
}

impl RecordRef<'_> {
    /// For a gap record: the LSNs that were lost.
    pub fn gap(&self) -> Option<std::ops::Range<Lsn>> {
        (self.kind == KIND_GAP).then(|| self.lsn..gap_end(self.payload).unwrap_or(self.lsn))
    }

    /// An owned copy.
    pub fn to_owned(&self) -> Record {
        Record {
            lsn: self.lsn,
            kind: self.kind,
            payload: self.payload.to_vec(),
        }
    }
}

/// An owned record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's LSN. For a gap record: the first missing LSN.
    pub lsn: Lsn,
    /// The record kind.
    pub kind: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Record {
    /// For a gap record: the LSNs that were lost.
    pub fn gap(&self) -> Option<std::ops::Range<Lsn>> {
        (self.kind == KIND_GAP).then(|| self.lsn..gap_end(&self.payload).unwrap_or(self.lsn))
    }
}

/// Reads records in LSN order from a position, across segments. Created by
/// [`crate::Journal::reader`]. Also an [`Iterator`] of owned records.
pub struct Reader {
    shared: Arc<Shared>,
    next_lsn: Lsn,
    cur: Option<Cursor>,
    /// Segment and offset of the frame last returned.
    last: Option<(u64, usize)>,
}

enum Source {
    /// The active segment, through the writer's map (published bytes only).
    Active(Arc<SharedMap>),
    /// A sealed segment, mapped read-only.
    Sealed(SegmentBytes),
}

struct Cursor {
    seq: u64,
    path: std::path::PathBuf,
    seed: Seed,
    source: Source,
    pos: usize,
    released_to: usize,
    /// What the frame at `pos` must be.
    chain: Chain,
}

impl Cursor {
    /// (complete, bytes): whether no more bytes will appear, and the readable bytes.
    fn view(&self) -> (bool, &[u8]) {
        match &self.source {
            Source::Active(m) => {
                // Seal is observed before the published end, so a sealed map's bytes are final.
                let sealed = m.is_sealed();
                (sealed, m.published())
            }
            Source::Sealed(b) => (true, b.bytes()),
        }
    }

    fn release(&mut self, every: usize) {
        if every == 0 || self.pos - self.released_to < every {
            return;
        }
        match &self.source {
            Source::Active(m) => m.release(self.released_to, self.pos),
            Source::Sealed(SegmentBytes::Mapped(m)) => m.release(self.released_to, self.pos),
            Source::Sealed(SegmentBytes::Owned(_)) => {}
        }
        self.released_to = self.pos;
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("next_lsn", &self.next_lsn)
            .finish_non_exhaustive()
    }
}

impl Reader {
    pub(crate) fn new(shared: Arc<Shared>, lsn: Lsn) -> Result<Reader> {
        shared.check()?;
        let mut r = Reader {
            shared,
            next_lsn: lsn.max(1),
            cur: None,
            last: None,
        };
        r.cur = r.open_at(r.next_lsn)?;
        Ok(r)
    }

    /// The LSN the reader will return next (or the first one after it that exists).
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Repositions the reader at `lsn`.
    pub fn seek(&mut self, lsn: Lsn) -> Result<()> {
        self.shared.check()?;
        self.next_lsn = lsn.max(1);
        self.cur = self.open_at(self.next_lsn)?;
        Ok(())
    }

    /// Opens a cursor on the segment holding `lsn`, positioned through the sparse index.
    fn open_at(&self, lsn: Lsn) -> Result<Option<Cursor>> {
        let segs = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let Some(first) = segs.front() else {
            return Ok(None);
        };
        if lsn < first.first_lsn {
            return Err(Error::Journal(JournalError::Retired {
                lsn,
                first_retained: first.first_lsn,
            }));
        }
        let i = segs.partition_point(|e| e.first_lsn <= lsn) - 1;
        let e = &segs[i];
        // At an indexed record the chain's checksum is unknown; at the segment start it is the
        // header's.
        let (pos, chain) = match e.index.read().unwrap_or_else(|e| e.into_inner()).floor(lsn) {
            Some((at_lsn, off)) => (
                off,
                Chain {
                    next_lsn: at_lsn,
                    last_crc: None,
                },
            ),
            None => (SEGMENT_DATA_OFFSET, Chain::start(e.first_lsn, e.header_crc)),
        };
        let source = match &e.map {
            Some(m) => Source::Active(Arc::clone(m)),
            None => Source::Sealed(open_sealed(&e.path, lsn, e.sealed.map_or(lsn, |s| s.0))?),
        };
        Ok(Some(Cursor {
            seq: e.seq,
            path: e.path.clone(),
            seed: Seed::new(self.shared.id, e.seq),
            source,
            pos,
            released_to: 0,
            chain,
        }))
    }

    /// Opens the segment after a complete one; it must continue the LSNs where `expected` says.
    fn open_seq(&self, seq: u64, expected: Lsn) -> Result<Option<Cursor>> {
        let segs = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let Some(e) = segs.iter().find(|e| e.seq == seq) else {
            return match segs.front() {
                Some(first) if first.seq > seq => Err(Error::Journal(JournalError::Retired {
                    lsn: self.next_lsn,
                    first_retained: first.first_lsn,
                })),
                _ => Ok(None),
            };
        };
        if e.first_lsn != expected {
            return Err(Error::corrupt(
                &e.path,
                0,
                DamageKind::SegmentDiscontinuity {
                    expected,
                    found: e.first_lsn,
                },
            ));
        }
        let source = match &e.map {
            Some(m) => Source::Active(Arc::clone(m)),
            None => Source::Sealed(open_sealed(
                &e.path,
                self.next_lsn,
                e.sealed.map_or(self.next_lsn, |s| s.0),
            )?),
        };
        Ok(Some(Cursor {
            seq: e.seq,
            path: e.path.clone(),
            seed: Seed::new(self.shared.id, e.seq),
            source,
            pos: SEGMENT_DATA_OFFSET,
            released_to: 0,
            chain: Chain::start(e.first_lsn, e.header_crc),
        }))
    }

    /// The next durable record, borrowed; `Ok(None)` when the reader has caught up. Gap
    /// records (left by salvage) are returned too: check [`RecordRef::gap`].
    pub fn next_ref(&mut self) -> Result<Option<RecordRef<'_>>> {
        let release_every = self.shared.opts.release_read_bytes;
        loop {
            self.shared.check()?;
            if self.cur.is_none() {
                self.cur = self.open_at(self.next_lsn)?;
                if self.cur.is_none() {
                    return Ok(None);
                }
            }
            let cur = self.cur.as_mut().expect("cursor set above");
            let (complete, bytes) = cur.view();
            let step = if cur.pos + FRAME_HEADER_BYTES <= bytes.len() {
                match check_frame(&bytes[cur.pos..], cur.seed) {
                    FrameCheck::Valid(h) => Some(h),
                    FrameCheck::End => None,
                    FrameCheck::Invalid(fault) => {
                        return Err(Error::corrupt(&cur.path, cur.pos as u64, fault_kind(fault)));
                    }
                }
            } else {
                None
            };
            let Some(h) = step else {
                if complete {
                    let (next, expected) = (cur.seq + 1, cur.chain.next_lsn);
                    self.cur = self.open_seq(next, expected)?;
                    if self.cur.is_none() {
                        return Ok(None);
                    }
                    continue;
                }
                return Ok(None);
            };
            let at = cur.pos;
            let payload_at =
                at + FRAME_HEADER_BYTES..at + FRAME_HEADER_BYTES + h.payload_len as usize;
            // Every frame, skipped or returned, must be the one that comes next.
            let mut chain = cur.chain;
            let link = chain
                .accept(&h, &bytes[payload_at.clone()])
                .map_err(|kind| Error::corrupt(&cur.path, at as u64, kind))?;
            cur.chain = chain;
            cur.pos += h.frame_bytes();
            cur.release(release_every);
            match link {
                Link::Gap { end } => {
                    if end <= self.next_lsn || end == h.lsn {
                        continue;
                    }
                    self.next_lsn = end;
                }
                Link::Record => {
                    if h.lsn < self.next_lsn {
                        continue;
                    }
                    self.next_lsn = h.lsn + 1;
                }
            }
            let cur = self.cur.as_ref().expect("cursor set above");
            self.last = Some((cur.seq, at));
            let (_, bytes) = cur.view();
            return Ok(Some(RecordRef {
                lsn: h.lsn,
                kind: h.kind,
                payload: &bytes[payload_at],
            }));
        }
    }

    /// The segment and offset of the next record, consuming it; `Ok(None)` when caught up.
    pub(crate) fn next_position(&mut self) -> Result<Option<(u64, usize)>> {
        Ok(match self.next_ref()? {
            Some(_) => self.last,
            None => None,
        })
    }

    /// The next durable record, owned; `Ok(None)` when caught up.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        Ok(self.next_ref()?.map(|r| r.to_owned()))
    }

    /// Follow mode: the next record, waiting up to `timeout` for one to become durable.
    /// `Ok(None)` if none arrived in time.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Record>> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.shared.durable_lsn.load(Ordering::Acquire);
            if let Some(r) = self.next_record()? {
                return Ok(Some(r));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let mut g = self.shared.cv_lock();
            if self.shared.durable_lsn.load(Ordering::Acquire) == seen {
                g.waiters += 1;
                let (mut g, _) = self
                    .shared
                    .cv
                    .wait_timeout(g, (deadline - now).min(Duration::from_millis(100)))
                    .unwrap_or_else(|e| e.into_inner());
                g.waiters -= 1;
            }
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// Maps a sealed segment. If it has just been retired, the error says so; `after` is the
/// first LSN after the segment.
fn open_sealed(path: &std::path::Path, lsn: Lsn, after: Lsn) -> Result<SegmentBytes> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Journal(JournalError::Retired {
                lsn,
                first_retained: after,
            }));
        }
        Err(e) => return Err(Error::io("open segment", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat segment", path, e))?
        .len();
    SegmentBytes::read(&file, path, len, true)
}
