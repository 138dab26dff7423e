//! Where the replayer reads entries from: the journal it owns (in this process, holding its
//! lock), or a journal owned by another process, followed read-only up to the durable LSN the
//! owner publishes in `HEAD`.

use crate::error::JournalError;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::format::Lsn;
use crate::journal::ack::AckFile;
use crate::journal::offline::{OfflineReader, first_retained, journal_id_of, read_head};
use crate::journal::{Journal, Reader, RecordRef};

/// The replayer's journal.
pub(crate) enum Source {
    /// This process owns the journal: durable positions are exact, and acknowledgements are
    /// written after each commit.
    Owner(Arc<Journal>),
    /// Another process owns it: entries are read up to its published durable LSN, and
    /// acknowledging is left to the owner (whose own replay, or next open as owner, reads the
    /// target's watermark and acknowledges it).
    Follower { dir: PathBuf, id: Uuid },
}

/// Positions that bound a replay step.
pub(crate) struct Positions {
    /// Highest durable LSN.
    pub durable: Lsn,
    /// Oldest retained LSN.
    pub first: Lsn,
    /// Locally acknowledged LSN.
    pub acked: Lsn,
}

impl Source {
    pub(crate) fn follower(dir: &Path) -> Result<Source> {
        Ok(Source::Follower {
            dir: dir.to_path_buf(),
            id: journal_id_of(dir)?,
        })
    }

    pub(crate) fn id(&self) -> Uuid {
        match self {
            Source::Owner(j) => j.id(),
            Source::Follower { id, .. } => *id,
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        match self {
            Source::Owner(j) => j.dir(),
            Source::Follower { dir, .. } => dir,
        }
    }

    pub(crate) fn positions(&self) -> Result<Positions> {
        match self {
            Source::Owner(j) => {
                let st = j.state();
                Ok(Positions {
                    durable: st.durable_lsn,
                    first: st.first_lsn,
                    acked: st.acked_lsn,
                })
            }
            Source::Follower { dir, id } => Ok(Positions {
                durable: read_head(dir, *id)
                    .ok_or_else(|| Error::Journal(JournalError::NoHead { dir: dir.clone() }))?
                    .durable_lsn,
                first: first_retained(dir, *id)?,
                acked: AckFile::peek(dir)?.map_or(0, |a| a.acked_lsn),
            }),
        }
    }

    pub(crate) fn reader(&self, lsn: Lsn, limit: Lsn) -> Result<SourceReader> {
        Ok(match self {
            Source::Owner(j) => SourceReader::Journal(j.reader(lsn)?),
            Source::Follower { dir, .. } => SourceReader::Offline(Box::new(OfflineReader::open(
                dir,
                lsn,
                crate::journal::Until::Durable(limit),
            )?)),
        })
    }

    /// Acknowledges `lsn` locally (owner only).
    pub(crate) fn ack(&self, lsn: Lsn) -> Result<()> {
        match self {
            Source::Owner(j) => {
                if lsn > j.state().acked_lsn {
                    j.ack(lsn)?;
                }
                Ok(())
            }
            Source::Follower { .. } => Ok(()),
        }
    }
}

/// A reader over either kind of source.
pub(crate) enum SourceReader {
    Journal(Reader),
    Offline(Box<OfflineReader>),
}

impl SourceReader {
    pub(crate) fn next_lsn(&self) -> Lsn {
        match self {
            SourceReader::Journal(r) => r.next_lsn(),
            SourceReader::Offline(r) => r.next_lsn(),
        }
    }

    pub(crate) fn set_limit(&mut self, limit: Lsn) {
        if let SourceReader::Offline(r) = self {
            r.set_limit(limit);
        }
    }

    pub(crate) fn next_ref(&mut self) -> Result<Option<RecordRef<'_>>> {
        match self {
            SourceReader::Journal(r) => r.next_ref(),
            SourceReader::Offline(r) => r.next_ref(),
        }
    }
}
