//! The sync status, measured against the target: pending entries are what the target's
//! watermark does not cover whenever the target was read (now, or in the last attempt — the
//! time is given), and what the journal's acknowledgement does not cover only when the target
//! could not be read. Nothing here comes from a counter that a restart resets, and nothing
//! informational (`replay.json`) ever lowers a figure.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use crate::format::Lsn;
use crate::journal::ack::now_ms;
use crate::replay::state::{LostWrites, ReplayState, SyncError};

/// How long pending entries may wait before the status calls them stalled, unless told
/// otherwise: 300 s.
pub const STALLED_AFTER_MS_DEFAULT: u64 = 300_000;

/// A timestamp further ahead of this machine's clock than this is not believed (a record
/// written with a wrong clock, or crafted): 60 s.
const FUTURE_SLACK_MS: u64 = 60_000;

/// The verdict of a [`SyncStatus`], most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum SyncState {
    /// The journal is poisoned (a failed sync): nothing more is written until it is reopened.
    Poisoned,
    /// The target failed an integrity check through a fresh connection; the replayer does not
    /// write into it. Run `syncjournal check-target`.
    TargetDamaged,
    /// The target has applied more of this journal than the journal holds: it is not the
    /// target this journal fed, or the journal lost records.
    TargetAhead,
    /// The target's watermark is behind the journal's acknowledgement: it lost entries it had
    /// applied (a restore from an older backup, lost writes). See
    /// [`SyncStatus::target_behind`].
    TargetBehind,
    /// The last sync attempt failed; [`SyncStatus::last_error`] says why.
    Failing,
    /// A target is named but its watermark could not be read: pending entries are counted from
    /// the acknowledgement, and whether the target still holds them is unknown (never called
    /// in sync).
    TargetUnreadable,
    /// Entries are pending and the queue has not moved for longer than the threshold.
    Stalled,
    /// Entries are pending and moving.
    Syncing,
    /// Every durable entry is applied: on the target as read at
    /// [`SyncStatus::target_read_at_ms`] (or, when no target is named, per the journal's
    /// acknowledgement).
    InSync,
}

impl SyncState {
    /// The words the command line prints (`IN SYNC`, `TARGET BEHIND`, …).
    pub fn label(self) -> &'static str {
        match self {
            SyncState::Poisoned => "POISONED",
            SyncState::TargetDamaged => "TARGET DAMAGED",
            SyncState::TargetAhead => "TARGET AHEAD",
            SyncState::TargetBehind => "TARGET BEHIND",
            SyncState::Failing => "FAILING",
            SyncState::TargetUnreadable => "TARGET UNREADABLE",
            SyncState::Stalled => "STALLED",
            SyncState::Syncing => "SYNCING",
            SyncState::InSync => "IN SYNC",
        }
    }
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What the pending count is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingBasis {
    /// The target's watermark, read at [`SyncStatus::target_read_at_ms`].
    Target,
    /// The journal's acknowledgement: the target could not be read (or none is configured).
    Acknowledgement,
}

/// A target whose watermark is behind the journal's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetBehind {
    /// Entries acknowledged but not on the target.
    pub entries: u64,
    /// True if the journal still holds them all (a sync re-applies them); false if some were
    /// already retired (the target must be restored from a newer backup or re-seeded).
    pub retained: bool,
}

/// The sync status, derived from durable state and measured against the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SyncStatus {
    /// The journal's UUID.
    pub journal_id: Uuid,
    /// The last durable LSN (the head of the journal).
    pub head_lsn: Lsn,
    /// The oldest LSN the journal still holds.
    pub first_lsn: Lsn,
    /// The LSN the cache has applied up to (`None` without a cache).
    pub cache_applied_lsn: Option<Lsn>,
    /// The LSN acknowledged by the target (recorded in the journal's `ACK` file after the
    /// target's transaction committed).
    pub acked_lsn: Lsn,
    /// The target's watermark, as read at `target_read_at_ms` (`None`: not read).
    pub target_lsn: Option<Lsn>,
    /// When the target's watermark was read, ms since the Unix epoch.
    pub target_read_at_ms: Option<u64>,
    /// Durable entries the target does not hold: after the target's watermark if it was read,
    /// else after the acknowledgement (see `pending_basis`).
    pub pending_entries: u64,
    /// What `pending_entries` is measured against.
    pub pending_basis: PendingBasis,
    /// Bytes of those entries in the journal.
    pub pending_bytes: u64,
    /// When the oldest pending entry was created, ms since the Unix epoch (a time ahead of
    /// this machine's clock is not believed and left out).
    pub oldest_pending_ms: Option<u64>,
    /// When a sync last succeeded, ms since the Unix epoch.
    pub last_success_ms: Option<u64>,
    /// The last error, cleared only by a success.
    pub last_error: Option<SyncError>,
    /// Entries quarantined on the target (as last seen).
    pub quarantined: u64,
    /// Since when syncs have been waiting for the target's writer lease, which another machine
    /// holds (ms since the Unix epoch; `last_error` names the holder).
    pub lease_waiting_since_ms: Option<u64>,
    /// Conflicts this journal's entries met on the target (as last seen): resolved by policy,
    /// resolver or by hand, and pending a human decision (their entries are quarantined).
    pub conflicts: crate::target::ConflictCounts,
    /// Since when the head of the queue has not moved while entries are pending (ms since the
    /// Unix epoch): the later of the oldest pending entry's creation and the last
    /// acknowledgement (times ahead of the clock are not believed). `None` when nothing is
    /// pending.
    pub stalled_since_ms: Option<u64>,
    /// Since when sync attempts have been failing (ms since the Unix epoch), until a success.
    pub failing_since_ms: Option<u64>,
    /// Set when the target's watermark is behind the acknowledgement.
    pub target_behind: Option<TargetBehind>,
    /// How many times the target's watermark was found to have gone back (counted in the
    /// journal directory, across restarts).
    pub lost_writes: u64,
    /// The last time it did.
    pub last_lost_writes: Option<LostWrites>,
    /// Why the target is considered damaged, if it is.
    pub target_damaged: Option<String>,
    /// Why the journal is poisoned, if it is.
    pub poisoned: Option<String>,
    /// True if the status is about a named target (the store's, or `--target`): then, if its
    /// watermark could not be read, the verdict is [`SyncState::TargetUnreadable`] rather than
    /// anything the acknowledgement alone would suggest.
    pub target_named: bool,
    /// The verdict, with the stall threshold the status was computed with.
    pub state: SyncState,
}

/// The journal's side of a status: positions and the pending part's size.
#[derive(Debug, Clone, Default)]
pub(crate) struct JournalSide {
    pub journal_id: Uuid,
    pub head: Lsn,
    pub first: Lsn,
    pub acked: Lsn,
    pub acked_at_ms: u64,
    pub poisoned: Option<String>,
}

impl SyncStatus {
    /// The first LSN not known to be on the target: the target's watermark when it was read
    /// (`read`), the acknowledgement otherwise; at most the head.
    pub(crate) fn applied_base(head: Lsn, acked: Lsn, read: Option<Lsn>) -> Lsn {
        read.unwrap_or(acked).min(head)
    }

    /// True if entries are pending and the queue head has not moved for at least `threshold`.
    pub fn is_stalled(&self, threshold: Duration) -> bool {
        self.stalled_since_ms
            .is_some_and(|s| now_ms().saturating_sub(s) >= threshold.as_millis() as u64)
    }

    /// Age of the oldest pending entry.
    pub fn oldest_pending_age(&self) -> Option<Duration> {
        self.oldest_pending_ms
            .map(|t| Duration::from_millis(now_ms().saturating_sub(t)))
    }

    /// The verdict with another stall threshold.
    pub fn verdict(&self, stalled_after: Duration) -> SyncState {
        let target_ahead = self.target_lsn.is_some_and(|t| t > self.head_lsn);
        if self.poisoned.is_some() {
            SyncState::Poisoned
        } else if self.target_damaged.is_some() {
            SyncState::TargetDamaged
        } else if target_ahead {
            SyncState::TargetAhead
        } else if self.target_behind.is_some() {
            SyncState::TargetBehind
        } else if self.last_error.is_some() {
            SyncState::Failing
        } else if self.target_named && self.target_lsn.is_none() {
            SyncState::TargetUnreadable
        } else if self.pending_entries > 0 && self.is_stalled(stalled_after) {
            SyncState::Stalled
        } else if self.pending_entries > 0 {
            SyncState::Syncing
        } else {
            SyncState::InSync
        }
    }

    /// Puts a status together. `observed` is the target's watermark and when it was read, if
    /// it was; `state` the replayer's memory (errors, lost writes, quarantine);
    /// `pending_bytes` and `oldest_pending_ms` describe the entries after
    /// [`SyncStatus::applied_base`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn assemble(
        j: &JournalSide,
        cache_applied: Option<Lsn>,
        target_named: bool,
        observed: Option<(Lsn, u64)>,
        pending_bytes: u64,
        oldest_pending_ms: Option<u64>,
        state: &ReplayState,
        stalled_after: Duration,
    ) -> SyncStatus {
        let now = now_ms();
        let believable = |t: u64| t <= now + FUTURE_SLACK_MS;
        let base = Self::applied_base(j.head, j.acked, observed.map(|o| o.0));
        let pending = j.head - base;
        let oldest_pending_ms = oldest_pending_ms.filter(|&t| believable(t));
        let target_behind = observed
            .filter(|&(wm, _)| wm < j.acked)
            .map(|(wm, _)| TargetBehind {
                entries: j.acked - wm,
                retained: wm + 1 >= j.first,
            });
        let mut s = SyncStatus {
            journal_id: j.journal_id,
            head_lsn: j.head,
            first_lsn: j.first,
            cache_applied_lsn: cache_applied,
            acked_lsn: j.acked,
            target_lsn: observed.map(|o| o.0),
            target_read_at_ms: observed.map(|o| o.1),
            pending_entries: pending,
            pending_basis: if observed.is_some() {
                PendingBasis::Target
            } else {
                PendingBasis::Acknowledgement
            },
            pending_bytes,
            oldest_pending_ms,
            last_success_ms: state.last_success_ms,
            last_error: state.last_error.clone(),
            quarantined: state.quarantined,
            conflicts: state.conflicts,
            lease_waiting_since_ms: state.lease_waiting_since_ms,
            // The head of the queue has waited since it became the head: the later of its
            // creation and the last acknowledgement (the last time the head moved). Times
            // that are not believable count as "unknown", which is "since ever", not "never".
            stalled_since_ms: (pending > 0).then(|| {
                [
                    oldest_pending_ms,
                    Some(j.acked_at_ms).filter(|&t| believable(t)),
                ]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(0)
            }),
            failing_since_ms: state.failing_since_ms,
            target_behind,
            lost_writes: state.lost_writes,
            last_lost_writes: state.last_lost_writes.clone(),
            target_damaged: state.target_damaged.clone(),
            poisoned: j.poisoned.clone(),
            target_named,
            state: SyncState::InSync,
        };
        s.state = s.verdict(stalled_after);
        s
    }
}

/// Reads the creation time at the start of a store record's payload (the `u64` that
/// `encode_event` writes first). `None` if it does not decode.
pub(crate) fn created_at_ms(payload: &[u8]) -> Option<u64> {
    bincode::serde::decode_from_slice::<u64, _>(payload, bincode::config::standard())
        .ok()
        .map(|(v, _)| v)
}
