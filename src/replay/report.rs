//! What one sync did, and its progress while it runs. The pending count is measured when the
//! sync returns, against the target's watermark whenever the sync could read it.

use std::time::Duration;

use crate::error::Error;
use crate::format::Lsn;
use crate::replay::status::PendingBasis;

/// What one `sync_now` did.
#[derive(Debug)]
#[non_exhaustive]
pub struct SyncReport {
    /// Entries applied to the target (committed and confirmed).
    pub applied: u64,
    /// Entries the target refused and that were quarantined.
    pub quarantined: u64,
    /// Target transactions committed.
    pub transactions: u64,
    /// Transient failures retried.
    pub retries: u32,
    /// Time spent.
    pub duration: Duration,
    /// Durable entries not on the target when the sync returned.
    pub pending: u64,
    /// What `pending` is measured against: the target's watermark (`target_lsn`) if the sync
    /// could read it, else the journal's acknowledgement.
    pub pending_basis: PendingBasis,
    /// The target's watermark as last read by this sync (`None`: it could not be read).
    pub target_lsn: Option<Lsn>,
    /// Why the sync stopped early, if it did. `None` means everything durable was applied.
    pub error: Option<Error>,
}

impl SyncReport {
    pub(crate) fn empty() -> SyncReport {
        SyncReport {
            applied: 0,
            quarantined: 0,
            transactions: 0,
            retries: 0,
            duration: Duration::ZERO,
            pending: 0,
            pending_basis: PendingBasis::Acknowledgement,
            target_lsn: None,
            error: None,
        }
    }
}

impl std::fmt::Display for SyncReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "applied {} entries in {} transactions ({} quarantined, {} retries) in {:.1?}; {} pending{}",
            self.applied,
            self.transactions,
            self.quarantined,
            self.retries,
            self.duration,
            self.pending,
            match self.pending_basis {
                PendingBasis::Target => "",
                PendingBasis::Acknowledgement =>
                    " (per the acknowledgement: the target could not be read)",
            }
        )?;
        if let Some(e) = &self.error {
            write!(f, "; stopped: {e}")?;
        }
        Ok(())
    }
}

/// Progress of a sync, reported after each committed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncProgress {
    /// Entries applied so far in this sync.
    pub applied: u64,
    /// Entries still pending, after the target's new watermark.
    pub pending: u64,
}
