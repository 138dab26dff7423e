"""The exceptions of syncjournal: one hierarchy under :class:`Error`, by layer.

Every exception carries the Rust crate's message (``str(e)``), which says what went wrong,
where (which file, which offset, which entry) and what to do, and these attributes:

* ``transient`` -- True if retrying later may succeed (a busy, locked or offline target, a
  full disk);
* ``sqlite_code`` -- SQLite's primary result code when an SQLite error caused it, else None;

and, for some classes, the fields listed with them.

::

    Error
    ├── JournalError            the journal: its files, lock, limits, damage
    │   ├── Locked              another process holds the journal (dir, holder_pid)
    │   ├── Corrupt             damage in the journal (segment, offset, torn_tail when known)
    │   ├── Poisoned            a failed sync: reopen the store (reason)
    │   └── DiskFull            no space left; nothing was lost
    ├── CacheError              the store and its local cache
    │   ├── ChangeRefused       the cache refused the change; nothing was journaled (reason)
    │   │   └── ChangeTooLarge  over the journal's record limit; nothing was journaled
    │   ├── InDoubt             journaled as lsn, then a failure: reopen, do not re-apply
    │   │                       (lsn, durable; __cause__ is the failure)
    │   ├── CacheMismatch       the cache belongs to another journal or history
    │   └── Unguarded           the cache was, or could be, written around the journal
    ├── TargetError             the target database and the replay to it
    │   ├── EntryRejected       the target refused an entry (lsn, entry, reason)
    │   ├── TargetUnavailable   busy, locked, offline, missing (usually transient)
    │   ├── TargetDamaged       failed an integrity check; nothing is written into it
    │   ├── TargetUnusable      not a usable target: WAL, a directory, not SQLite
    │   └── NoTarget            the store has no target
    ├── InvalidOption           an option out of range (also a ValueError)
    └── StoreClosed             a call after close() (also a ValueError)
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "Error",
    "JournalError",
    "Locked",
    "Corrupt",
    "Poisoned",
    "DiskFull",
    "CacheError",
    "ChangeRefused",
    "ChangeTooLarge",
    "InDoubt",
    "CacheMismatch",
    "Unguarded",
    "TargetError",
    "EntryRejected",
    "TargetUnavailable",
    "TargetDamaged",
    "TargetUnusable",
    "NoTarget",
    "InvalidOption",
    "StoreClosed",
]


class Error(Exception):
    """Any syncjournal failure. ``str(e)`` is the crate's message."""

    #: True if retrying later may succeed.
    transient: bool = False
    #: SQLite's primary result code, if an SQLite error caused this one.
    sqlite_code: Optional[int] = None


class JournalError(Error):
    """The journal: its files, its lock, its limits, damage found in it."""


class Locked(JournalError):
    """Another process (or another store in this process) holds the journal's lock."""

    #: The journal directory.
    dir: str = ""
    #: The pid recorded by the holder, when readable.
    holder_pid: Optional[int] = None


class Corrupt(JournalError):
    """Damage in the journal, or files in its directory that are not this journal's. The
    message names the file and offset and what to run (``syncjournal verify``/``recover``)."""

    #: The damaged segment file (for damage inside a segment).
    segment: Optional[str] = None
    #: Byte offset of the damage in the segment.
    offset: Optional[int] = None
    #: True for a torn last write, False for damage in data that had been durable.
    torn_tail: Optional[bool] = None


class Poisoned(JournalError):
    """A failed sync (or a failure after a journal write) poisoned the store: every write fails
    until it is reopened, which re-verifies the journal and re-applies it to the cache."""

    #: Why.
    reason: str = ""


class DiskFull(JournalError):
    """No space left (or quota exceeded). The journal is unchanged: free space and retry."""


class CacheError(Error):
    """The store and its local cache (including SQL errors of ``Store.read``)."""


class ChangeRefused(CacheError):
    """The cache refused the change (constraint, missing table or column, no such row).
    Nothing was journaled and nothing changed."""

    #: What is wrong.
    reason: str = ""


class ChangeTooLarge(ChangeRefused):
    """The change set encodes to more than the journal's record limit. Nothing was written."""


class InDoubt(CacheError):
    """The change was journaled as ``lsn``, then something failed (the sync, or the cache
    commit). Not a plain failure: do not apply it again. Reopen the store; with ``durable``
    the change is in; otherwise ``journal_state().durable_lsn >= lsn`` after the reopen says
    whether the journal kept it. ``__cause__`` is the failure."""

    #: The LSN the change was journaled as.
    lsn: int = 0
    #: True if it is known to be durable in the journal.
    durable: bool = False


class CacheMismatch(CacheError):
    """The cache was built from another journal, or holds more or less history than the
    journal can account for: use the right cache, or delete it to rebuild."""


class Unguarded(CacheError):
    """The cache cannot be guarded against writes around the journal, or was written around
    it (a virtual table, rows written in the schema, a table written by another connection, a
    cache replaced under the store)."""


class TargetError(Error):
    """The target database and the replay to it."""


class EntryRejected(TargetError):
    """The target permanently refused an entry (under the ``stop`` reject policy replay stops
    before it)."""

    #: The entry's LSN.
    lsn: int = 0
    #: A one-line description of the entry.
    entry: str = ""
    #: Why the target refused it.
    reason: str = ""


class TargetUnavailable(TargetError):
    """The target could not be used now (busy, locked, offline, I/O error, missing file):
    ``transient`` says whether a retry may succeed; the background sync keeps retrying."""


class TargetDamaged(TargetError):
    """The target failed an integrity check; nothing is written into it until it passes."""


class TargetUnusable(TargetError):
    """The target path names no usable target database: a WAL database, a directory, a file
    that is not SQLite, or syncjournal's tables with other columns."""


class NoTarget(TargetError):
    """The store has no target (``Store(..., target=None)``)."""


class InvalidOption(Error, ValueError):
    """An option has a value outside its allowed range."""


class StoreClosed(Error, ValueError):
    """The store was closed."""
