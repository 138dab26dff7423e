//! The crate's errors, by layer: [`JournalError`] (the journal's files, lock and limits, and the
//! damage found in them), [`CacheError`] (the store and its local cache), [`TargetError`] (the
//! target and the replay to it), each converting into [`Error`]. Every message says what went
//! wrong, where (which file, which offset, which entry) and what to do. No third-party error
//! type is part of a variant: an SQLite error is kept as an [`SqliteError`], whose `source()` is
//! the binding's error.

mod cache;
mod journal;
mod target;
mod text;

use std::io;
use std::path::PathBuf;

pub use cache::CacheError;
pub(crate) use journal::is_disk_full;
pub use journal::{Corruption, DamageKind, JournalError};
pub use target::TargetError;
pub use text::lsn_span;

/// A `Result` whose error is the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in syncjournal, by layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The journal: its files, its lock, its limits, damage found in it.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The store and its local cache.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The target database, and the replay to it.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// An option has a value outside its allowed range.
    #[error("invalid option {name}: {reason}")]
    InvalidOption {
        /// The option's name.
        name: &'static str,
        /// Why it was refused.
        reason: String,
    },
}

impl From<Box<Corruption>> for Error {
    fn from(c: Box<Corruption>) -> Self {
        Error::Journal(JournalError::Corrupt(c))
    }
}

impl Error {
    /// Wraps an I/O error, turning `ENOSPC`/`EDQUOT` into [`JournalError::DiskFull`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if is_disk_full(&source) {
            return JournalError::DiskFull {
                op,
                path,
                bytes: 0,
                source,
            }
            .into();
        }
        JournalError::Io { op, path, source }.into()
    }

    /// Wraps an I/O error as [`JournalError::Io`] without turning `ENOSPC` into
    /// [`JournalError::DiskFull`]: for failed syncs, after which the journal is poisoned, not
    /// unchanged.
    pub(crate) fn io_unmapped(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> Self {
        JournalError::Io {
            op,
            path: path.into(),
            source,
        }
        .into()
    }

    /// Builds a [`JournalError::Corrupt`].
    pub(crate) fn corrupt(segment: impl Into<PathBuf>, offset: u64, kind: DamageKind) -> Self {
        JournalError::Corrupt(Box::new(Corruption {
            segment: segment.into(),
            offset,
            kind,
            torn_tail: false,
        }))
        .into()
    }

    /// True if retrying later may succeed: the target or the share is busy, locked, offline,
    /// read-only or reporting I/O errors, or the disk is full.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Target(TargetError::Unavailable {
                transient: true,
                ..
            }) | Error::Target(TargetError::Server {
                transient: true,
                ..
            }) | Error::Target(
                TargetError::Missing { .. }
                    | TargetError::LeaseHeld { .. }
                    | TargetError::LeaseLost { .. }
            ) | Error::Journal(JournalError::DiskFull { .. })
        )
    }

    /// True when this error means the data on disk is damaged.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Journal(
                JournalError::Corrupt(_)
                    | JournalError::ForeignFile { .. }
                    | JournalError::ForeignSegment { .. }
                    | JournalError::ForeignDirectory { .. }
                    | JournalError::MissingSegment { .. }
            )
        )
    }

    /// The journal-layer error, if it is one.
    pub fn journal(&self) -> Option<&JournalError> {
        match self {
            Error::Journal(e) => Some(e),
            _ => None,
        }
    }

    /// The cache-layer error, if it is one.
    pub fn cache(&self) -> Option<&CacheError> {
        match self {
            Error::Cache(e) => Some(e),
            _ => None,
        }
    }

    /// The target-layer error, if it is one.
    pub fn target(&self) -> Option<&TargetError> {
        match self {
            Error::Target(e) => Some(e),
            _ => None,
        }
    }

    /// The SQLite error this error was caused by, if it was.
    pub fn sqlite(&self) -> Option<&SqliteError> {
        match self {
            Error::Cache(CacheError::Sqlite { source, .. }) => Some(source),
            Error::Target(TargetError::Unavailable { source, .. }) => source.as_ref(),
            _ => None,
        }
    }
}

/// An SQLite error, kept as the cause of a syncjournal error: its result codes and message.
/// `source()` is the binding's own error (rusqlite's, re-exported as `syncjournal::rusqlite`).
#[derive(Debug)]
pub struct SqliteError(rusqlite::Error);

impl SqliteError {
    /// SQLite's primary result code (`SQLITE_BUSY` = 5, …), if SQLite reported one.
    pub fn code(&self) -> Option<i32> {
        self.extended_code().map(|c| c & 0xff)
    }

    /// SQLite's extended result code, if SQLite reported one.
    pub fn extended_code(&self) -> Option<i32> {
        match &self.0 {
            rusqlite::Error::SqliteFailure(f, _) => Some(f.extended_code),
            _ => None,
        }
    }

    /// The binding's error.
    pub fn inner(&self) -> &rusqlite::Error {
        &self.0
    }

    /// The binding's error, by value.
    pub fn into_inner(self) -> rusqlite::Error {
        self.0
    }

    /// True for a busy or locked database (another connection holds the lock).
    pub fn is_busy(&self) -> bool {
        matches!(
            self.code(),
            Some(rusqlite::ffi::SQLITE_BUSY | rusqlite::ffi::SQLITE_LOCKED)
        )
    }

    /// True for "database disk image is malformed" or "file is not a database".
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self.code(),
            Some(rusqlite::ffi::SQLITE_CORRUPT | rusqlite::ffi::SQLITE_NOTADB)
        )
    }
}

impl std::fmt::Display for SqliteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SqliteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl From<rusqlite::Error> for SqliteError {
    fn from(e: rusqlite::Error) -> Self {
        SqliteError(e)
    }
}

/// A PostgreSQL client error, kept as the cause of a syncjournal error: its SQLSTATE and
/// message. `source()` is the client's own error (the `postgres` crate's).
#[cfg(feature = "postgres")]
#[derive(Debug)]
pub struct PostgresError(postgres::Error);

#[cfg(feature = "postgres")]
impl PostgresError {
    /// The SQLSTATE the server reported (`"23505"`, …), if it reported one.
    pub fn sqlstate(&self) -> Option<&str> {
        self.0.code().map(|c| c.code())
    }

    /// The client's error.
    pub fn inner(&self) -> &postgres::Error {
        &self.0
    }

    /// The client's error, owned.
    pub fn into_inner(self) -> postgres::Error {
        self.0
    }
}

#[cfg(feature = "postgres")]
impl std::fmt::Display for PostgresError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(f, "{}: {}", db.severity(), db.message()),
            None => self.0.fmt(f),
        }
    }
}

#[cfg(feature = "postgres")]
impl std::error::Error for PostgresError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[cfg(feature = "postgres")]
impl From<postgres::Error> for PostgresError {
    fn from(e: postgres::Error) -> Self {
        PostgresError(e)
    }
}
