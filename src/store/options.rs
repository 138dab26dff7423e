//! The store's options: journal, cache schema, target, replay, background work.

use crate::journal::JournalOptions;
use crate::replay::{ReplayOptions, TargetOptions};

/// Options for [`Store::open`](crate::Store::open). Every setter documents its default.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub(crate) journal: JournalOptions,
    pub(crate) cache_schema: Option<String>,
    pub(crate) target: Option<(crate::target::TargetSpec, TargetOptions)>,
    pub(crate) replay: ReplayOptions,
    pub(crate) background_sync: Option<bool>,
    pub(crate) acknowledge_followers: bool,
    pub(crate) stalled_after_ms: u64,
    pub(crate) pull: bool,
    pub(crate) reseed_when_needed: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            journal: JournalOptions::default().lock_wait_ms(Self::LOCK_WAIT_MS_DEFAULT),
            cache_schema: None,
            target: None,
            replay: ReplayOptions::default(),
            background_sync: None,
            acknowledge_followers: true,
            stalled_after_ms: crate::replay::STALLED_AFTER_MS_DEFAULT,
            pull: true,
            reseed_when_needed: true,
        }
    }
}

impl StoreOptions {
    /// How long a store waits for the journal's lock by default: 10 000 ms. A restarting
    /// application waits out `syncjournal sync`, which owns a closed journal for one pass.
    pub const LOCK_WAIT_MS_DEFAULT: u64 = 10_000;

    /// Defaults: default journal options (waiting up to 10 s for the journal's lock), no cache
    /// schema, no target.
    pub fn new() -> Self {
        Self::default()
    }

    /// Options of the journal. Default: [`JournalOptions::default`] (durable appends) with
    /// `lock_wait_ms` [`StoreOptions::LOCK_WAIT_MS_DEFAULT`], so that a restarting application
    /// waits out a `syncjournal sync` that owns the closed journal for a pass; options given
    /// here are used as they are.
    pub fn journal(mut self, opts: JournalOptions) -> Self {
        self.journal = opts;
        self
    }

    /// SQL run on the cache at every open, after syncjournal's own table, in a transaction:
    /// the application's tables, written idempotently (`CREATE TABLE IF NOT EXISTS …`). It
    /// must write no rows and create no virtual table ([`CacheError::Unguarded`](crate::error::CacheError::Unguarded)). Default:
    /// none.
    pub fn cache_schema(mut self, sql: impl Into<String>) -> Self {
        self.cache_schema = Some(sql.into());
        self
    }

    /// The target database to replay to: an SQLite file's path (typically on a network share)
    /// or a PostgreSQL connection string (`postgres://…`; see [`TargetSpec`](crate::TargetSpec)).
    /// Default: none (the store only journals and caches).
    pub fn target(
        mut self,
        target: impl Into<crate::target::TargetSpec>,
        opts: TargetOptions,
    ) -> Self {
        self.target = Some((target.into(), opts));
        self
    }

    /// Replay options. Default: [`ReplayOptions::default`].
    pub fn replay(mut self, opts: ReplayOptions) -> Self {
        self.replay = opts;
        self
    }

    /// Run a background thread that syncs every `sync_interval_ms` and when entries arrive,
    /// retrying failures on a timer, and that reads the target's watermark on the same timer
    /// when nothing is pending (a target restored from an older backup is then repaired without
    /// waiting for a new write). Without a target, the thread acknowledges what a follower has
    /// replayed (see [`StoreOptions::acknowledge_followers`]). Default: true.
    pub fn background_sync(mut self, on: bool) -> Self {
        self.background_sync = Some(on);
        self
    }

    /// Without a target of its own, learn how far a follower (`syncjournal sync --follow`, or
    /// another process's `Replayer::follower`) has replayed this journal — by reading the
    /// watermark on the target the follower names in `replay.json`, never by trusting a file —
    /// and acknowledge it, so that segments are retired instead of accumulating. Default: true.
    pub fn acknowledge_followers(mut self, on: bool) -> Self {
        self.acknowledge_followers = on;
        self
    }

    /// How long pending entries may wait before [`Store::status`](crate::Store::status) calls them stalled.
    /// Default: 300 000 ms.
    pub fn stalled_after_ms(mut self, ms: u64) -> Self {
        self.stalled_after_ms = ms;
        self
    }

    /// Pull the target's change log into the cache after every background sync (other
    /// machines' changes; see [`Store::pull_now`](crate::Store::pull_now)). Only with a target.
    /// Default: true.
    pub fn pull(mut self, on: bool) -> Self {
        self.pull = on;
        self
    }

    /// With a target: when the cache cannot be caught up from the journal at open (it is
    /// behind what the journal retains, or ahead of it: a lost or restored cache), rebuild it
    /// from the target ([`Store::reseed`](crate::Store::reseed)) instead of failing with
    /// [`CacheError::Behind`](crate::error::CacheError::Behind) or
    /// [`CacheError::Ahead`](crate::error::CacheError::Ahead); and when the pull cursor is
    /// older than the target's change log keeps, reseed in the background. The open fails if
    /// the target cannot be read then. Default: true.
    pub fn reseed_when_needed(mut self, on: bool) -> Self {
        self.reseed_when_needed = on;
        self
    }
}
