//! Options of a target database (both kinds; each option says which kind it concerns).

use std::fmt;
use std::sync::Arc;

use crate::fault::TargetFaults;

/// The rollback-journal mode used on the target (never WAL: its shared-memory index does not
/// work across machines on a network file system).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetJournalMode {
    /// `journal_mode=DELETE`: the rollback journal is deleted after each transaction.
    Delete,
    /// `journal_mode=TRUNCATE`: the rollback journal is truncated instead, which costs fewer
    /// metadata round trips on a share and avoids delete-pending trouble on SMB. The default.
    #[default]
    Truncate,
}

impl TargetJournalMode {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            TargetJournalMode::Delete => "DELETE",
            TargetJournalMode::Truncate => "TRUNCATE",
        }
    }
}

/// Options of the target database. Every setter documents its default.
#[derive(Clone)]
pub struct TargetOptions {
    pub(crate) journal_mode: TargetJournalMode,
    pub(crate) busy_timeout_ms: u64,
    pub(crate) create_if_missing: bool,
    pub(crate) create_schema: Option<String>,
    pub(crate) faults: Option<Arc<dyn TargetFaults>>,
    pub(crate) schema: String,
    pub(crate) connect_timeout_ms: u64,
    pub(crate) statement_timeout_ms: u64,
    pub(crate) lease_ms: u64,
    pub(crate) lease_wait_ms: u64,
    pub(crate) sqlite_vfs: Option<String>,
    pub(crate) change_log: bool,
    pub(crate) retention: crate::target::ChangeLogRetention,
}

impl fmt::Debug for TargetOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetOptions")
            .field("journal_mode", &self.journal_mode)
            .field("busy_timeout_ms", &self.busy_timeout_ms)
            .field("create_if_missing", &self.create_if_missing)
            .field("create_schema", &self.create_schema.is_some())
            .field("faults", &self.faults.is_some())
            .field("schema", &self.schema)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("lease_ms", &self.lease_ms)
            .field("change_log", &self.change_log)
            .field("retention", &self.retention)
            .field("lease_wait_ms", &self.lease_wait_ms)
            .field("sqlite_vfs", &self.sqlite_vfs)
            .finish()
    }
}

impl Default for TargetOptions {
    fn default() -> Self {
        TargetOptions {
            journal_mode: TargetJournalMode::Truncate,
            busy_timeout_ms: 5000,
            create_if_missing: false,
            create_schema: None,
            faults: None,
            schema: String::new(),
            connect_timeout_ms: 10_000,
            statement_timeout_ms: 30_000,
            lease_ms: 5_000,
            change_log: true,
            retention: crate::target::ChangeLogRetention::new(),
            lease_wait_ms: 30_000,
            sqlite_vfs: None,
        }
    }
}

impl TargetOptions {
    /// Defaults: TRUNCATE journal mode, 5 s busy timeout, never create the target, a 5 s
    /// writer lease waited for up to 30 s, the change log on; on a PostgreSQL server the session's current
    /// schema, 10 s connect timeout, 30 s statement timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// SQLite: the writer lease's duration, in milliseconds. Before touching the target file a
    /// replayer takes the lease (the `<target>-sjlease` file beside it), so that two machines
    /// never write — or read mid-write — the file at once, even on a share that does not
    /// forward byte-range locks (sshfs, smbnetfs, NFS without lockd). The holder renews it
    /// every third of this and releases it after each sync; a holder that stopped (killed,
    /// cut off, paused) is taken over about twice this after its last renewal (at once when
    /// it was a process of this machine that is gone). `0` turns the lease off (a target on a
    /// local disk, or on a share whose locks are known to be forwarded). Values below 3000
    /// count as 3000. Ignored on PostgreSQL (the server serialises writers). Default: 5000.
    /// See `sync-protocol.md`, "Writer lease".
    pub fn lease_ms(mut self, ms: u64) -> Self {
        self.lease_ms = ms;
        self
    }

    /// Record every row change a batch makes in the target's change log
    /// (`syncjournal_changes`), in the batch's transaction, for other machines' stores to
    /// pull into their caches (`sync-protocol.md` §2). Costs a read of each touched row and one
    /// insert per row per batch. `false`: a single machine that never pulls. Default: true.
    pub fn change_log(mut self, on: bool) -> Self {
        self.change_log = on;
        self
    }

    /// How much of the change log replayers keep, and which caches hold pruning back
    /// (`sync-protocol.md` §2.6). Each replayer prunes after a sync that applied something, at
    /// most every `prune_interval_ms`. Default:
    /// [`ChangeLogRetention::new`](crate::ChangeLogRetention::new) (nothing pruned).
    pub fn change_log_retention(mut self, r: crate::target::ChangeLogRetention) -> Self {
        self.retention = r;
        self
    }

    /// SQLite: the VFS the replayer opens the target with (`unix-dotfile`, say). Tests use
    /// `unix-none`, which takes no byte-range locks at all, to stand for a share that does not
    /// forward them. Default: none (SQLite's default VFS, `unix`).
    pub fn sqlite_vfs(mut self, name: &str) -> Self {
        self.sqlite_vfs = Some(name.to_string());
        self
    }

    /// SQLite: how long a replayer waits for another machine's writer lease before the sync
    /// fails with a transient [`TargetError::LeaseHeld`](crate::error::TargetError::LeaseHeld)
    /// naming the holder, in milliseconds. Default: 30000.
    pub fn lease_wait_ms(mut self, ms: u64) -> Self {
        self.lease_wait_ms = ms;
        self
    }

    /// Rollback-journal mode. Default: [`TargetJournalMode::Truncate`].
    pub fn journal_mode(mut self, mode: TargetJournalMode) -> Self {
        self.journal_mode = mode;
        self
    }

    /// How long SQLite waits for another connection's lock before reporting "busy" (which is
    /// then retried with backoff). Default: 5000 ms.
    pub fn busy_timeout_ms(mut self, ms: u64) -> Self {
        self.busy_timeout_ms = ms;
        self
    }

    /// Create the target file if it does not exist. Default: false — a missing target is an
    /// error, because on an unmounted share SQLite would silently create an empty local file.
    /// PostgreSQL: a database the connection string names that does not exist is created, as
    /// `createdb` does (through the `postgres` database; the role needs `CREATEDB`).
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// SQL run once when the target is created (with `create_if_missing`): on SQLite when the
    /// file holds no table; on PostgreSQL when the configured schema holds no table but
    /// syncjournal's own (in one transaction, with that schema first on the `search_path`).
    /// Default: none.
    pub fn create_schema(mut self, sql: impl Into<String>) -> Self {
        self.create_schema = Some(sql.into());
        self
    }

    /// Test seam (feature `fault-injection`): fail chosen statements. Default: none.
    #[cfg(feature = "fault-injection")]
    pub fn faults(mut self, faults: Arc<dyn TargetFaults>) -> Self {
        self.faults = Some(faults);
        self
    }
}

impl TargetOptions {
    /// PostgreSQL: the schema whose tables entries may change, and where syncjournal keeps its
    /// bookkeeping tables. Identifiers in entries are checked against this schema's catalog.
    /// Default: the session's current schema — `public`, unless the role's `search_path` or
    /// the connection string (`options=-csearch_path=inventory`) says otherwise, so that every
    /// command given the same connection string sees the same tables. (SQLite targets ignore
    /// it.)
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// PostgreSQL: how long connecting may take before it counts as a (transient) failure.
    /// Default: 10 000 ms. (SQLite targets ignore it.)
    pub fn connect_timeout_ms(mut self, ms: u64) -> Self {
        self.connect_timeout_ms = ms;
        self
    }

    /// PostgreSQL: the server's `statement_timeout` for syncjournal's session: a statement
    /// that runs longer is cancelled and the batch retried. `0` disables it. Default:
    /// 30 000 ms. (SQLite targets ignore it: see [`TargetOptions::busy_timeout_ms`].)
    pub fn statement_timeout_ms(mut self, ms: u64) -> Self {
        self.statement_timeout_ms = ms;
        self
    }
}
