//! Errors of the store and its local cache: an event refused, not encodable, too large; a
//! cache that does not belong to the journal; an outcome in doubt.

use std::path::PathBuf;

use crate::error::text::in_doubt_text;
use crate::error::{Error, SqliteError};
use crate::format::Lsn;

/// What can go wrong in the store's cache layer. Converts into [`crate::Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// An SQLite error on the local cache.
    #[error("cache {}: {source}", path.display())]
    Sqlite {
        /// The cache database.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: SqliteError,
    },

    /// The cache was built from another journal.
    #[error("cache {} was built from journal {found}, but the journal directory holds journal {expected}; use the cache that belongs to this journal, or delete it to rebuild", path.display())]
    Mismatch {
        /// The cache database.
        path: PathBuf,
        /// This journal's UUID.
        expected: uuid::Uuid,
        /// The journal UUID recorded in the cache.
        found: String,
    },

    /// The cache has applied entries the journal does not hold: possible only after a power
    /// loss with `PersistMode::Batched` or `Buffered`, which can lose the journal's last records.
    #[error("cache {} has applied up to LSN {cache_lsn}, but the journal ends at LSN {journal_lsn}: the cache holds effects of entries lost with the power; delete the cache and reseed it from the target", path.display())]
    Ahead {
        /// The cache database.
        path: PathBuf,
        /// The cache's applied LSN.
        cache_lsn: Lsn,
        /// The journal's last LSN.
        journal_lsn: Lsn,
    },

    /// The cache is older than what the journal still holds (for example an old copy of the
    /// cache file): it cannot be brought up to date from the journal alone.
    #[error("cache {} has applied up to LSN {cache_lsn}, but the journal only retains LSNs from {first_retained} on; delete the cache and reseed it from the target", path.display())]
    Behind {
        /// The cache database.
        path: PathBuf,
        /// The cache's applied LSN.
        cache_lsn: Lsn,
        /// The oldest LSN in the journal.
        first_retained: Lsn,
    },

    /// The cache cannot be guarded against writes around the journal, or was written around
    /// it: a virtual table (no triggers can be put on it), DML in `cache_schema`, a table that
    /// holds rows without the store's guards (created and written by another connection),
    /// or a cache replaced or rewritten under the open store (a restore). Nothing was
    /// journaled.
    #[error("cache {}: {detail}", path.display())]
    Unguarded {
        /// The cache database.
        path: PathBuf,
        /// The table concerned, if one is.
        table: Option<String>,
        /// What was found and what to do.
        detail: String,
    },

    /// The change was refused by the cache (constraint, missing table or column, type
    /// mismatch, no such row). Nothing was journaled and nothing changed.
    #[error("change refused, nothing was written: {reason}")]
    ChangeRefused {
        /// What is wrong.
        reason: String,
    },

    /// A record's payload could not be encoded or decoded.
    #[error("record at LSN {lsn} (kind {kind:#04x}) could not be decoded: {reason}")]
    Undecodable {
        /// The record's LSN (0 while encoding).
        lsn: Lsn,
        /// The record's kind.
        kind: u8,
        /// What went wrong.
        reason: String,
    },

    /// `Store::apply` wrote the event to the journal as LSN `lsn`, then failed: the outcome is
    /// in doubt, not a plain failure. With `durable`, the event is durable in the journal and
    /// reaches the cache when the store is reopened (and the target at the next sync); without,
    /// its durability is unknown (the sync failed and poisoned the journal): after a reopen,
    /// `journal_state().durable_lsn >= lsn` says whether the journal kept it. Do not apply it
    /// again before checking. The store is poisoned until reopened.
    #[error("{}", in_doubt_text(*lsn, *durable, cause))]
    AppliedInDoubt {
        /// The LSN the event was journaled as.
        lsn: Lsn,
        /// True if the event is known to be durable in the journal.
        durable: bool,
        /// The failure that followed the journal write.
        #[source]
        cause: Box<Error>,
    },

    /// An event encodes to more bytes than the journal's record limit. Nothing was written.
    #[error(
        "event of kind {kind:#04x} encodes to {len} bytes, over the journal's record limit of {max} bytes (JournalOptions::record_bytes_max, at most what one segment holds); nothing was written: split it into smaller events, or raise record_bytes_max (and segment_bytes_max)"
    )]
    EventTooLarge {
        /// The event's record kind.
        kind: u8,
        /// Its encoded length.
        len: usize,
        /// The journal's record limit.
        max: usize,
    },

    /// An event cannot be encoded, or its encoding would not decode again (for example a
    /// sequence of elements that encode to nothing, longer than the rest of the payload, or
    /// containers nested deeper than [`crate::event::DEPTH_MAX`]). Nothing was written.
    #[error("event of kind {kind:#04x} cannot be journaled: {reason}; nothing was written")]
    EventUnencodable {
        /// The event's record kind.
        kind: u8,
        /// What serde or the decoder said.
        reason: String,
    },

    /// The cache's pull cursor is older than what the target's change log keeps (records up
    /// to `floor_seq` were pruned): the changes in between cannot be pulled. Reseed the cache
    /// (`Store::reseed`, `syncjournal reseed`).
    #[error(
        "cache {}: its pull cursor (change {cursor_seq}) is older than the target's change log keeps (changes up to {floor_seq} were pruned): reseed the cache from the target (Store::reseed, `syncjournal reseed`)",
        path.display()
    )]
    NeedsReseed {
        /// The cache.
        path: PathBuf,
        /// The cache's cursor.
        cursor_seq: u64,
        /// The change log's floor.
        floor_seq: u64,
    },

    /// The cache refused a change pulled from the target (a table or column it does not have,
    /// a constraint of its own): the pull stops before it, nothing of it is applied.
    #[error(
        "the cache refused change {seq} pulled from the target: {reason}; give the cache the target's schema (StoreOptions::cache_schema)"
    )]
    PullRefused {
        /// The change's sequence number.
        seq: u64,
        /// What the cache said.
        reason: String,
    },

    /// The cache could not be caught up from the journal at open (`why`: it is behind what
    /// the journal retains, or ahead of it), and rebuilding it from the target failed.
    #[error("cache {}: {why}; rebuilding it from the target failed: {cause}", path.display())]
    ReseedFailed {
        /// The cache.
        path: PathBuf,
        /// Why it needed a reseed.
        why: Box<Error>,
        /// Why the reseed failed.
        #[source]
        cause: Box<Error>,
    },
}
