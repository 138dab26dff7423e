//! `HEAD`: the owner publishes its durable LSN for followers in other processes (a mapped
//! page, written after every sync that made records durable), and anyone reads it back.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;

use uuid::Uuid;

use crate::format::{HEAD_BYTES, HEAD_FILE_BYTES, Head};
use crate::journal::listing::read_full_at;
use crate::journal::shared::{Shared, lock};
use crate::segment::{Access, HEAD_FILE, HeadMap, allocate, open_journal_file};

/// Opens (creating and allocating if needed) and maps the `HEAD` file for the owner.
/// Advisory: on failure followers cannot follow, which they report; the journal works on.
pub(crate) fn open_head(dir: &Path) -> Option<HeadMap> {
    let path = dir.join(HEAD_FILE);
    let r = open_journal_file(&path, Access::OpenOrCreate, "open HEAD")
        .map_err(|e| e.to_string())
        .and_then(|f| {
            allocate(&f, HEAD_FILE_BYTES as u64).map_err(|e| e.to_string())?;
            HeadMap::map(&f, HEAD_FILE_BYTES).map_err(|e| e.to_string())
        });
    match r {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot publish HEAD for followers");
            None
        }
    }
}

/// The durable LSN the owner published in `HEAD`, if any, for this journal.
pub fn read_head(dir: &Path, journal_id: Uuid) -> Option<Head> {
    let f = open_journal_file(&dir.join(HEAD_FILE), Access::Read, "open HEAD").ok()?;
    read_head_from(&f, journal_id)
}

fn read_head_from(f: &File, journal_id: Uuid) -> Option<Head> {
    let mut b = [0u8; HEAD_BYTES];
    // A concurrent rewrite can be seen half done: the checksum catches it; try again.
    for _ in 0..3 {
        if read_full_at(f, &mut b, 0).is_ok()
            && let Some(h) = Head::decode(&b)
        {
            return (h.journal_id == journal_id).then_some(h);
        }
    }
    None
}

impl Shared {
    /// Stores the durable LSN in `HEAD` for followers (a memory store into a mapped page).
    pub(crate) fn publish_head(&self) {
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
}
