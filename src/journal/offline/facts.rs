//! What a journal directory says about itself without opening the journal (no lock taken):
//! its identity, its oldest retained LSN, whether a process owns it now, and the durable LSN
//! its owner published (`HEAD`).

use std::path::Path;

use uuid::Uuid;

use crate::error::{Error, JournalError, Result};
use crate::format::Lsn;
use crate::journal::ack::AckFile;
use crate::journal::listing::{self, SegmentFile};
use crate::segment::{Access, DirLock};

/// The journal's identity as found on disk: from `ACK`, else from the first segment.
pub fn journal_id_of(dir: &Path) -> Result<Uuid> {
    if let Some(slot) = AckFile::peek(dir)? {
        return Ok(slot.journal_id);
    }
    let listing = listing::list(dir)?;
    let Some((seq, path)) = listing.segments.first() else {
        return Err(match listing.foreign {
            Some(example) => Error::Journal(JournalError::ForeignDirectory {
                dir: dir.to_path_buf(),
                example,
            }),
            None => Error::Journal(JournalError::NoJournal {
                dir: dir.to_path_buf(),
            }),
        });
    };
    Ok(SegmentFile::open(*seq, path, None, Access::Read)?
        .header
        .journal_id)
}

pub use crate::journal::head::read_head;

/// The oldest retained LSN: the first segment's first LSN (1 for a journal without segments).
pub fn first_retained(dir: &Path, journal_id: Uuid) -> Result<Lsn> {
    for _ in 0..3 {
        let listing = listing::list(dir)?;
        let Some((seq, path)) = listing.segments.first() else {
            return Ok(1);
        };
        match SegmentFile::open(*seq, path, Some(journal_id), Access::Read) {
            Ok(s) => return Ok(s.header.first_lsn),
            // Retired between the listing and the open: list again.
            Err(Error::Journal(JournalError::Io { source, .. }))
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Err(Error::io(
        "read the first segment",
        dir,
        std::io::Error::other("segments keep disappearing (retention running?)"),
    ))
}

/// True if a process holds the journal open now (the pid it recorded, when readable).
pub fn owner_of(dir: &Path) -> Result<Option<Option<u32>>> {
    DirLock::is_held(dir)
}
