//! Appending: the single writer of the active segment — LSN assignment, the frame encoded in
//! place into the map, the sparse index — and the checks every payload passes first.

use crate::error::JournalError;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};
use crate::format::{KIND_RESERVED_MIN, Lsn, Seed, encode_frame_into, frame_bytes};
use crate::journal::index::{INDEX_STRIDE, SparseIndex};
use crate::journal::shared::Shared;
use crate::segment::MapWriter;

/// The writer of the active segment (behind `Shared::writer`).
pub(crate) struct Writer {
    pub(crate) seq: u64,
    pub(crate) seed: Seed,
    pub(crate) path: PathBuf,
    pub(crate) _file: File,
    pub(crate) map: MapWriter,
    pub(crate) prev_crc: u32,
    pub(crate) next_lsn: Lsn,
    pub(crate) index: Arc<RwLock<SparseIndex>>,
    pub(crate) since_index: u64,
}

impl Writer {
    pub(crate) fn append(&mut self, shared: &Shared, kind: u8, payload: &[u8]) -> Result<Lsn> {
        let fb = frame_bytes(payload.len());
        let lsn = self.next_lsn;
        // Before rotating: a new segment must never start at an LSN no record can have.
        if lsn > crate::format::LSN_MAX {
            return Err(Error::Journal(JournalError::LimitReached(
                "LSNs are exhausted",
            )));
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
}

pub(crate) fn check_kind(kind: u8) -> Result<()> {
    if kind == 0 || kind >= KIND_RESERVED_MIN {
        return Err(Error::Journal(JournalError::ReservedKind { kind }));
    }
    Ok(())
}

pub(crate) fn check_len(len: usize, max: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::Journal(JournalError::EmptyRecord));
    }
    if len > max {
        return Err(Error::Journal(JournalError::RecordTooLarge { len, max }));
    }
    Ok(())
}
