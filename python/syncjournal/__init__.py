"""syncjournal: make a local SQLite cache sync reliably to a shared database.

Every change is first appended to a checksummed, memory-mapped journal, durable before
``Store.apply`` returns; the cache and the shared target are applied from it exactly once.
This package is the Python face of the Rust crate of the same name: the journal, the cache,
the replay and the status are the crate's; this package converts values and reports.

::

    import syncjournal as sj

    with sj.Store("journal", "cache.db", schema=SCHEMA, target="/mnt/share/app.db") as store:
        lsn = store.apply(sj.ChangeSet().upsert("hosts", {"id": 7}, {"name": "web-7"}))
        rows = store.read("SELECT id, name FROM hosts WHERE id = ?", (7,))
        store.wait_synced(lsn, timeout=5)   # True once the share holds it
        print(store.status().state)         # IN SYNC

The SQLAlchemy integration is :mod:`syncjournal.sqlalchemy` (extra ``syncjournal[sqlalchemy]``).
"""

from ._native import CRATE_VERSION, ChangeSet
from ._store import Store
from ._types import (
    Conflict,
    ConflictCounts,
    JournalState,
    LostWrites,
    PendingBasis,
    QuarantinedEntry,
    SyncError,
    SyncReport,
    SyncState,
    SyncStatus,
    TargetBehind,
)
from . import errors as _errors
from .errors import (
    CacheError,
    CacheMismatch,
    ChangeRefused,
    ChangeTooLarge,
    Corrupt,
    DiskFull,
    EntryRejected,
    Error,
    InDoubt,
    InvalidOption,
    JournalError,
    Locked,
    NoTarget,
    Poisoned,
    StoreClosed,
    TargetDamaged,
    TargetError,
    TargetUnavailable,
    TargetUnusable,
    Unguarded,
)

__version__ = "0.1.0"

__all__ = [
    "CRATE_VERSION",
    "ChangeSet",
    "Store",
    "Conflict",
    "ConflictCounts",
    "JournalState",
    "LostWrites",
    "PendingBasis",
    "QuarantinedEntry",
    "SyncError",
    "SyncReport",
    "SyncState",
    "SyncStatus",
    "TargetBehind",
]
# The error hierarchy's names, as errors.py lists them (one list, not two).
__all__ += _errors.__all__
