//! Replay options.

use crate::replay::conflict::ConflictPolicies;

/// What the replayer does with an entry the target permanently refuses (constraint violation,
/// missing table or column, type mismatch, no such row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RejectPolicy {
    /// Stop replay before the entry; the status shows its LSN, a summary and the error. The
    /// default.
    #[default]
    Stop,
    /// Record the entry in the target's `syncjournal_rejected` table, in the same transaction,
    /// and go on. Quarantined entries can be listed, retried and discarded explicitly.
    Quarantine,
}

/// Replay options. Every setter documents its default.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub(crate) batch_entries_max: usize,
    pub(crate) batch_bytes_max: usize,
    pub(crate) retry_delay_ms: u64,
    pub(crate) retry_delay_max_ms: u64,
    pub(crate) retry_attempts_max: u32,
    pub(crate) reject_policy: RejectPolicy,
    pub(crate) adopt_target: bool,
    pub(crate) sync_interval_ms: u64,
    pub(crate) conflicts: ConflictPolicies,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            batch_entries_max: 1000,
            batch_bytes_max: 4 << 20,
            retry_delay_ms: 50,
            retry_delay_max_ms: 5000,
            retry_attempts_max: 5,
            reject_policy: RejectPolicy::Stop,
            sync_interval_ms: 1000,
            adopt_target: false,
            conflicts: ConflictPolicies::default(),
        }
    }
}

impl ReplayOptions {
    /// Defaults: batches of at most 1000 entries and 4 MiB, retries from 50 ms doubling up to
    /// 5 s (5 attempts per `sync_now`), reject policy `Stop`, background sync every second,
    /// conflicts detected and settled last writer wins.
    pub fn new() -> Self {
        Self::default()
    }

    /// Most entries per target transaction. Default: 1000.
    pub fn batch_entries_max(mut self, n: usize) -> Self {
        self.batch_entries_max = n.max(1);
        self
    }

    /// Most payload bytes per target transaction (a batch holds at least one entry).
    /// Default: 4 MiB.
    pub fn batch_bytes_max(mut self, n: usize) -> Self {
        self.batch_bytes_max = n.max(1);
        self
    }

    /// First retry delay after a transient error; it doubles per attempt, with jitter.
    /// Default: 50 ms.
    pub fn retry_delay_ms(mut self, ms: u64) -> Self {
        self.retry_delay_ms = ms;
        self
    }

    /// Cap of the retry delay. Default: 5000 ms.
    pub fn retry_delay_max_ms(mut self, ms: u64) -> Self {
        self.retry_delay_max_ms = ms;
        self
    }

    /// Transient failures retried within one `sync_now` before it returns the error (the
    /// background thread keeps retrying on its timer). Default: 5.
    pub fn retry_attempts_max(mut self, n: u32) -> Self {
        self.retry_attempts_max = n;
        self
    }

    /// What to do with entries the target refuses. Default: [`RejectPolicy::Stop`].
    pub fn reject_policy(mut self, p: RejectPolicy) -> Self {
        self.reject_policy = p;
        self
    }

    /// Make this replayer's target the one the journal is acknowledged against, replacing the
    /// one recorded (`replay.json`'s `acknowledged_target`). Without it, a replayer whose target
    /// is not the recorded one applies entries but never acknowledges them, so that a sync to
    /// the wrong database cannot make retention drop what the right one has not received.
    /// Default: false.
    pub fn adopt_target(mut self, adopt: bool) -> Self {
        self.adopt_target = adopt;
        self
    }

    /// Conflict detection and the policy of each table (`sync-protocol.md` §4). Default:
    /// [`ConflictPolicies::default`] (detection on, last writer wins everywhere).
    pub fn conflicts(mut self, p: ConflictPolicies) -> Self {
        self.conflicts = p;
        self
    }

    /// Period of the background sync thread (it also wakes on new entries). Default: 1000 ms.
    pub fn sync_interval_ms(mut self, ms: u64) -> Self {
        self.sync_interval_ms = ms.max(1);
        self
    }
}
