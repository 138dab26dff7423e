//! The store: a local SQLite cache whose only write path is the journal, plus the replayer
//! that applies the journal to the shared target and a background sync thread.
//!
//! # Write path
//!
//! [`Store::apply`] (1) applies the event to the cache inside a savepoint of an open cache
//! transaction — a refused event is rolled back and nothing is journaled; (2) writes the
//! record to the journal; (3) waits until it is durable (group commit with other threads);
//! (4) commits the cache transaction, recording the cache's applied LSN in the same
//! transaction. So the cache never holds an effect that is not durable in the journal
//! (with `PersistMode::Sync`), and on open the entries after the cache's applied LSN are
//! applied again (a crash between (3) and (4)).
//!
//! # Why the cache may run with relaxed durability
//!
//! The cache uses WAL with `synchronous=NORMAL`: a commit is not flushed, so a power loss can
//! take back the last cache transactions — but never corrupt the database (WAL guarantees
//! that), and the applied LSN rolls back with them. The journal holds those entries durably,
//! and the next open applies them again. The journal is the durable copy; the cache is a fold
//! of it. Pulled changes roll back with their cursor, and are pulled again. The WAL is
//! checkpointed (and so flushed) every `CACHE_WAL_AUTOCHECKPOINT_PAGES` pages (10 000), so a
//! power loss can take back at most that much.
//!
//! # No temporary files
//!
//! The writer keeps statement journals in memory (`temp_store=MEMORY`). SQLite otherwise
//! moves the statement journal of a savepoint past 64 KiB of old pages (a large change set
//! rewriting existing rows) to a file in its temporary directory, on another file system than
//! the cache's: a full `/var/tmp` or `/tmp` failed cache writes with `SQLITE_FULL` ("database
//! or disk is full") while the cache's disk had room (issue 9, finding 8).
//!
//! # No write path around the journal
//!
//! The store exposes no writable connection, and it installs triggers on every table of the
//! cache — its own bookkeeping table included — that abort any insert, update or delete not
//! made through its own connection: they call an SQL function registered only there, so on any
//! other connection the write fails with `no such function: write_through_the_syncjournal_store`.
//! Code that opens the cache file directly can read it, never write it with SQL DML.
//!
//! What else the store closes ([`CacheError::Unguarded`](crate::error::CacheError::Unguarded), nothing journaled):
//!
//! * **virtual tables** (FTS5, R*Tree…) are refused at open, naming the table: SQLite cannot
//!   put triggers on them, and their data lives in tables their module writes (guarding those
//!   relies on module internals — an older SQLite crashed on a trigger on an FTS5 shadow
//!   table). Keep such indexes in a database of their own, built from the cache;
//! * **DML in `cache_schema`** is refused (counted with `sqlite3_total_changes`): those rows
//!   would be in the cache only. `cache_schema` runs in a transaction, rolled back on refusal;
//! * **tables created by other connections**: at the start of each cache transaction the
//!   store compares `PRAGMA schema_version`; after a change it guards new empty tables, and
//!   refuses — then and at every open — a table that holds rows without its guards;
//! * **a cache replaced under the open store**: each cache transaction checks that the file at
//!   the path is still the one opened (device and inode: a file renamed over it) and that its
//!   bookkeeping still says this journal and the applied LSN the store committed (an
//!   `sqlite3 .restore` over it, which writes pages without firing triggers). The store then
//!   refuses writes until reopened; the open checks the cache at the path against the journal
//!   (an older copy catches up, a foreign one is refused).
//!
//! What remains open, because no trigger sees it: incremental blob I/O
//! (`sqlite3_blob_write`) on another connection; a connection that drops the guards, writes,
//! and re-creates them while the store is closed; a restore of a copy whose applied LSN is the
//! same as the cache's; editing the file's bytes. Such a cache diverges from the journal
//! silently: delete it to rebuild it from the journal.

mod background;
mod cache;
mod handle;
mod options;
mod pull;
mod reseed;
mod write;

pub use handle::Store;
pub use options::StoreOptions;
pub use pull::{HeldBack, PullReport, PullStatus};
pub use reseed::ReseedReport;
