//! Rotation: sealing the active segment (synced whole, under the sync role) and switching to a
//! new one, created complete and allocated before it is mapped.

use crate::error::JournalError;
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};
use crate::format::{SEGMENT_DATA_OFFSET, Seed, SegmentHeader};
use crate::journal::append::Writer;
use crate::journal::index::SparseIndex;
use crate::journal::options::PersistMode;
use crate::journal::shared::{SegmentEntry, Shared, lock};
use crate::segment::{SEGMENT_SEQ_MAX, SharedMap, create_segment};

impl Writer {
    /// Seals the active segment (syncing all of it) and starts the next one.
    pub(crate) fn rotate(&mut self, shared: &Shared) -> Result<()> {
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
            return Err(Error::Journal(JournalError::LimitReached(
                "segment sequence numbers are exhausted",
            )));
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
