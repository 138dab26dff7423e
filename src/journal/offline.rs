//! Reading a journal without owning it (from another process, or while it is closed):
//! segment files are read with `pread` through a bounded window — never mapped, because the
//! owner may be writing them — and only records up to a limit are returned: the owner's
//! published durable LSN (`HEAD`), so that a follower never acts on a record that a power loss
//! could still take back.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::Lsn;
use crate::error::{DamageKind, Error, Result};
use crate::format::{
    FRAME_HEADER_BYTES, FRAME_LEN_OFFSET, FrameCheck, HEAD_BYTES, Head, KIND_GAP,
    SEGMENT_DATA_OFFSET, Seed, SegmentHeader, check_frame, frame_bytes, gap_end, le_u32,
};
use crate::journal::RecordRef;
use crate::journal::ack::AckFile;
use crate::journal::recovery;
use crate::segment::{DirLock, HEAD_FILE};

/// Bytes read from a segment file at a time.
const WINDOW_BYTES: usize = 1 << 20;

/// A segment as found on disk.
#[derive(Debug, Clone)]
struct SegmentRef {
    seq: u64,
    path: PathBuf,
    first_lsn: Lsn,
}

struct Stream {
    seg: SegmentRef,
    file: File,
    len: u64,
    seed: Seed,
    pos: u64,
    win: Vec<u8>,
    win_at: u64,
}

impl Stream {
    /// Makes `[at, at + n)` available in the window (fewer bytes at the end of the file).
    fn load(&mut self, at: u64, n: usize) -> Result<&[u8]> {
        let end = (at + n as u64).min(self.len);
        let covered = at >= self.win_at && end <= self.win_at + self.win.len() as u64;
        if !covered {
            let want = ((end - at) as usize)
                .max(WINDOW_BYTES)
                .min((self.len - at) as usize);
            self.win.resize(want, 0);
            let mut filled = 0;
            while filled < want {
                match self
                    .file
                    .read_at(&mut self.win[filled..], at + filled as u64)
                {
                    Ok(0) => break,
                    Ok(k) => filled += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io("read segment", &self.seg.path, e)),
                }
            }
            self.win.truncate(filled);
            self.win_at = at;
        }
        let from = (at - self.win_at) as usize;
        let to = ((end - self.win_at) as usize).min(self.win.len());
        Ok(&self.win[from.min(to)..to])
    }
}

/// A reader of a journal directory that does not take the journal's lock.
pub struct OfflineReader {
    dir: PathBuf,
    journal_id: Uuid,
    next_lsn: Lsn,
    limit: Lsn,
    cur: Option<Stream>,
    /// The frame of the record last returned: its LSN, kind and payload range in `frame`.
    frame: Vec<u8>,
}

impl std::fmt::Debug for OfflineReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfflineReader")
            .field("dir", &self.dir)
            .field("next_lsn", &self.next_lsn)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// The journal's identity as found on disk: from `ACK`, else from the first segment.
pub fn journal_id_of(dir: &Path) -> Result<Uuid> {
    if let Some(slot) = AckFile::peek(dir)? {
        return Ok(slot.journal_id);
    }
    let listing = recovery::list(dir)?;
    let Some((seq, path)) = listing.segments.first() else {
        return Err(match listing.foreign {
            Some(example) => Error::ForeignDirectory {
                dir: dir.to_path_buf(),
                example,
            },
            None => Error::NoJournal {
                dir: dir.to_path_buf(),
            },
        });
    };
    Ok(read_header(*seq, path)?.journal_id)
}

/// The durable LSN the owner published in `HEAD`, if any, for this journal.
pub fn read_head(dir: &Path, journal_id: Uuid) -> Option<Head> {
    let f = File::open(dir.join(HEAD_FILE)).ok()?;
    let mut b = [0u8; HEAD_BYTES];
    // A concurrent rewrite can be seen half done: the checksum catches it; try again.
    for _ in 0..3 {
        if f.read_exact_at(&mut b, 0).is_ok()
            && let Some(h) = Head::decode(&b)
        {
            return (h.journal_id == journal_id).then_some(h);
        }
    }
    None
}

/// The oldest retained LSN: the first segment's first LSN (1 for a journal without segments).
pub fn first_retained(dir: &Path, journal_id: Uuid) -> Result<Lsn> {
    let listing = recovery::list(dir)?;
    for (seq, path) in &listing.segments {
        match read_header(*seq, path) {
            Ok(h) if h.journal_id == journal_id => return Ok(h.first_lsn),
            Ok(h) => {
                return Err(Error::ForeignSegment {
                    path: path.clone(),
                    expected: journal_id,
                    found: h.journal_id,
                });
            }
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(1)
}

/// True if a process holds the journal open now (the pid it recorded, when readable).
pub fn owner_of(dir: &Path) -> Result<Option<Option<u32>>> {
    DirLock::is_held(dir)
}

fn read_header(seq: u64, path: &Path) -> Result<SegmentHeader> {
    let f = File::open(path).map_err(|e| Error::io("open segment", path, e))?;
    let len = f
        .metadata()
        .map_err(|e| Error::io("stat segment", path, e))?
        .len();
    Ok(recovery::read_segment_header(&f, seq, path, len)?.0)
}

impl OfflineReader {
    /// A reader of the journal in `dir`, positioned at `lsn`, returning records up to
    /// `limit` (use [`OfflineReader::set_limit`] to move it).
    pub fn open(dir: impl AsRef<Path>, lsn: Lsn, limit: Lsn) -> Result<OfflineReader> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::NotFound { dir });
        }
        let journal_id = journal_id_of(&dir)?;
        Ok(OfflineReader {
            dir,
            journal_id,
            next_lsn: lsn.max(1),
            limit,
            cur: None,
            frame: Vec::new(),
        })
    }

    /// The journal's UUID.
    pub fn journal_id(&self) -> Uuid {
        self.journal_id
    }

    /// The LSN the reader returns next.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Records after `limit` are not returned.
    pub fn set_limit(&mut self, limit: Lsn) {
        self.limit = limit;
    }

    /// Repositions the reader.
    pub fn seek(&mut self, lsn: Lsn) {
        self.next_lsn = lsn.max(1);
        self.cur = None;
    }

    fn segments(&self) -> Result<Vec<SegmentRef>> {
        let listing = recovery::list(&self.dir)?;
        let mut out = Vec::with_capacity(listing.segments.len());
        for (seq, path) in listing.segments {
            match read_header(seq, &path) {
                Ok(h) if h.journal_id == self.journal_id => out.push(SegmentRef {
                    seq,
                    path,
                    first_lsn: h.first_lsn,
                }),
                Ok(h) => {
                    return Err(Error::ForeignSegment {
                        path,
                        expected: self.journal_id,
                        found: h.journal_id,
                    });
                }
                // Retired between the listing and the read.
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn open_stream(&self, seg: SegmentRef) -> Result<Stream> {
        let file = File::open(&seg.path).map_err(|e| Error::io("open segment", &seg.path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat segment", &seg.path, e))?
            .len();
        Ok(Stream {
            seed: Seed::new(self.journal_id, seg.seq),
            seg,
            file,
            len,
            pos: SEGMENT_DATA_OFFSET as u64,
            win: Vec::new(),
            win_at: 0,
        })
    }

    /// Positions `cur` on the segment holding `next_lsn`. `Ok(false)` if there is none (yet).
    fn locate(&mut self) -> Result<bool> {
        let segs = self.segments()?;
        let Some(first) = segs.first() else {
            return Ok(false);
        };
        if self.next_lsn < first.first_lsn {
            return Err(Error::Retired {
                lsn: self.next_lsn,
                first_retained: first.first_lsn,
            });
        }
        let i = segs.partition_point(|s| s.first_lsn <= self.next_lsn) - 1;
        self.cur = Some(self.open_stream(segs[i].clone())?);
        Ok(true)
    }

    /// The next record at or below the limit, borrowed; `Ok(None)` when there is none (yet).
    /// Gap records are returned too ([`RecordRef::gap`]).
    pub fn next_ref(&mut self) -> Result<Option<RecordRef<'_>>> {
        loop {
            if self.next_lsn > self.limit {
                return Ok(None);
            }
            if self.cur.is_none() && !self.locate()? {
                return Ok(None);
            }
            let cur = self.cur.as_mut().expect("located above");
            let pos = cur.pos;
            let head = cur.load(pos, FRAME_HEADER_BYTES)?;
            if head.len() < FRAME_HEADER_BYTES || head.iter().all(|&b| b == 0) {
                // End of this segment's data: go on in the next one if it exists.
                let next_seq = cur.seg.seq + 1;
                let segs = self.segments()?;
                match segs.into_iter().find(|s| s.seq == next_seq) {
                    Some(s) => {
                        self.cur = Some(self.open_stream(s)?);
                        continue;
                    }
                    None => return Ok(None),
                }
            }
            let payload_len = le_u32(head, FRAME_LEN_OFFSET) as u64;
            let avail = cur.len - pos;
            let n = (frame_bytes(payload_len.min(avail) as usize) as u64).min(avail) as usize;
            let seed = cur.seed;
            let bytes = cur.load(pos, n)?;
            match check_frame(bytes, seed) {
                FrameCheck::Valid(h) => {
                    let fb = h.frame_bytes();
                    let payload = FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + h.payload_len as usize;
                    let end_lsn = if h.kind == KIND_GAP {
                        gap_end(&bytes[payload.clone()]).unwrap_or(h.lsn)
                    } else {
                        h.lsn + 1
                    };
                    self.frame.clear();
                    self.frame.extend_from_slice(&bytes[..fb.min(bytes.len())]);
                    cur.pos = pos + fb as u64;
                    if end_lsn <= self.next_lsn {
                        continue; // before the position: skip
                    }
                    if h.kind != KIND_GAP && h.lsn > self.limit {
                        cur.pos = pos;
                        return Ok(None);
                    }
                    self.next_lsn = end_lsn;
                    return Ok(Some(RecordRef {
                        lsn: h.lsn,
                        kind: h.kind,
                        payload: &self.frame[payload],
                    }));
                }
                FrameCheck::End => return Ok(None),
                FrameCheck::Invalid(fault) => {
                    return Err(Error::corrupt(
                        &cur.seg.path,
                        pos,
                        DamageKind::FrameHeader {
                            reason: match fault {
                                crate::format::FrameFault::Header(r) => r,
                                crate::format::FrameFault::Checksum { .. } => "checksum mismatch",
                                crate::format::FrameFault::LengthOutOfBounds { .. } => {
                                    "length out of bounds"
                                }
                                crate::format::FrameFault::Truncated { .. } => "frame truncated",
                            },
                        },
                    ));
                }
            }
        }
    }

    /// The next record at or below the limit, owned.
    pub fn next_record(&mut self) -> Result<Option<crate::Record>> {
        Ok(self.next_ref()?.map(|r| r.to_owned()))
    }
}
