//! The offline reader's view of one segment: the file read with `pread` through a bounded
//! window (never mapped: the owner may be writing it), the position and chain of the next
//! frame, and how far the window's bytes may be trusted.
//!
//! A window is trusted only for records that were known durable — or in a segment known
//! complete — when it was read (`win_trusted`); the reader reads past that again, because a
//! stale read can show zeros where the owner has since written records (`journal-format.md`
//! §6.1). A frame larger than the window is verified in pieces before it is read whole, so a
//! length claimed on disk never sizes an allocation before the frame is known to be valid.

use crate::error::{Error, Result};
use crate::format::{FRAME_CRC_OFFSET, FRAME_HEADER_BYTES, FRAME_LEN_OFFSET, Lsn, le_u32};
use crate::format::{SEGMENT_DATA_OFFSET, Seed};
use crate::journal::listing::{SegmentFile, read_full_at};
use crate::journal::scan::Chain;

/// Bytes read from a segment file at a time (a frame larger than this is verified in pieces of
/// this size before it is read whole).
pub(super) const WINDOW_BYTES: usize = 1 << 20;

/// The segment being read.
pub(super) struct Stream {
    pub seg: SegmentFile,
    pub seed: Seed,
    pub chain: Chain,
    /// Offset of the next frame.
    pub pos: u64,
    win: Vec<u8>,
    win_at: u64,
    /// Frames with LSNs up to this one may be taken from the window: it was read after they
    /// were durable (or the segment was complete). Past it, the bytes are read again.
    pub win_trusted: Lsn,
}

impl Stream {
    pub fn new(seg: SegmentFile) -> Stream {
        Stream {
            seed: Seed::new(seg.header.journal_id, seg.seq),
            chain: Chain::start(seg.header.first_lsn, seg.header_crc),
            seg,
            pos: SEGMENT_DATA_OFFSET as u64,
            win: Vec::new(),
            win_at: 0,
            win_trusted: 0,
        }
    }

    /// `[at, at + n)` (fewer bytes at the end of the file), from the window if it holds them,
    /// else read now; a fresh read is trusted for records up to `trusted`.
    pub fn load(&mut self, at: u64, n: usize, trusted: Lsn) -> Result<&[u8]> {
        let end = (at + n as u64).min(self.seg.len);
        let covered = self.win_at <= at && end <= self.win_at + self.win.len() as u64;
        if !covered {
            let want = ((end - at) as usize).max(WINDOW_BYTES.min((self.seg.len - at) as usize));
            self.win.resize(want, 0);
            let got = read_full_at(&self.seg.file, &mut self.win, at)
                .map_err(|e| Error::io("read segment", &self.seg.path, e))?;
            self.win.truncate(got);
            self.win_at = at;
            self.win_trusted = trusted;
        }
        let from = (at - self.win_at) as usize;
        let to = ((end - self.win_at) as usize).min(self.win.len());
        Ok(&self.win[from.min(to)..to])
    }

    pub fn forget_window(&mut self) {
        self.win.clear();
        self.win_at = 0;
    }

    /// Verifies the checksum and padding of a frame of `fb` bytes at the position, reading it
    /// in window-sized pieces (so that a length claimed on disk never sizes an allocation
    /// before the frame is known to be valid).
    pub fn verify_in_pieces(&mut self, fb: usize, trust: Lsn) -> Result<bool> {
        let pos = self.pos;
        let head = self.load(pos, FRAME_HEADER_BYTES, trust)?.to_vec();
        let payload_len = le_u32(&head, FRAME_LEN_OFFSET) as usize;
        let end = FRAME_HEADER_BYTES + payload_len;
        let mut hasher = self.seed.hasher();
        hasher.update(&head[FRAME_LEN_OFFSET..]);
        let mut at = FRAME_HEADER_BYTES;
        while at < fb {
            let n = (fb - at).min(WINDOW_BYTES);
            let piece = self.load(pos + at as u64, n, trust)?;
            if piece.len() < n {
                return Ok(false);
            }
            let payload_part = end.saturating_sub(at).min(n);
            hasher.update(&piece[..payload_part]);
            if piece[payload_part..].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += n;
        }
        Ok(hasher.finalize() == le_u32(&head, FRAME_CRC_OFFSET))
    }

    /// The first non-zero byte from the position to the end of the file and the end of the
    /// last one, or `None` if every byte there is zero. Read in window-sized pieces.
    pub fn nonzero_to_end(&mut self) -> Result<Option<(u64, u64)>> {
        let mut first = None;
        let mut last_end = 0u64;
        let mut at = self.pos;
        while at < self.seg.len {
            let n = ((self.seg.len - at) as usize).min(WINDOW_BYTES);
            let piece = self.load(at, n, Lsn::MAX)?;
            if let Some(i) = piece.iter().position(|&b| b != 0) {
                first.get_or_insert(at + i as u64);
                let j = piece.iter().rposition(|&b| b != 0).expect("non-zero found");
                last_end = at + j as u64 + 1;
            }
            at += n as u64;
        }
        Ok(first.map(|first| (first, last_end)))
    }
}
