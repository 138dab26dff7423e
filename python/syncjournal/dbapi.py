"""A read-only PEP 249 (DB-API 2.0) interface to a store's cache, on the store's own
read-only connection -- the SQLite bundled in syncjournal -- instead of Python's ``sqlite3``.

Why: in one process, syncjournal's SQLite and the one behind Python's ``sqlite3`` module are
two copies of SQLite. POSIX advisory locks are per process, so neither copy sees the other's
locks, and closing a file descriptor in one drops the locks the other holds on that file
(SQLite's documentation, "How To Corrupt An SQLite Database File", 2.2). A ``sqlite3``
reader of the cache in the store's process can then read across a checkpoint of the store's
writer, and after it closes, another process may take the cache's shared memory for unused.
:mod:`syncjournal.sqlalchemy` reads through this module for that reason.

``connect(store)`` returns a :class:`Connection`; statements run one at a time on the store's
read-only connection (each sees every change applied so far). Writes fail: the connection is
read-only (``query_only``), and the cache is written only through ``Store.apply``.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from . import _native
from . import errors as _errors

__all__ = ["connect", "Connection", "Cursor"]

apilevel = "2.0"
#: Threads may share the module, not connections.
threadsafety = 1
paramstyle = "qmark"

#: The SQLite syncjournal runs.
sqlite_version = _native.SQLITE_VERSION
sqlite_version_info = tuple(int(x) for x in sqlite_version.split("."))
version = "2.6.0"
version_info = (2, 6, 0)
Binary = bytes


class Warning(Exception):  # noqa: A001 - the PEP 249 name
    """PEP 249 Warning."""


class Error(Exception):
    """PEP 249 Error."""


class InterfaceError(Error):
    """PEP 249 InterfaceError."""


class DatabaseError(Error):
    """PEP 249 DatabaseError."""


class DataError(DatabaseError):
    """PEP 249 DataError."""


class OperationalError(DatabaseError):
    """PEP 249 OperationalError (also: a write through this read-only interface)."""


class IntegrityError(DatabaseError):
    """PEP 249 IntegrityError."""


class InternalError(DatabaseError):
    """PEP 249 InternalError."""


class ProgrammingError(DatabaseError):
    """PEP 249 ProgrammingError."""


class NotSupportedError(DatabaseError):
    """PEP 249 NotSupportedError."""


def connect(store: "_native.Store", **_ignored: Any) -> "Connection":
    """A read-only DB-API connection to ``store``'s cache."""
    return Connection(store)


class Connection:
    """A DB-API connection over a store's read-only cache connection."""

    def __init__(self, store: "_native.Store") -> None:
        self._store: Optional[_native.Store] = store
        #: Kept for the callers that set it (sqlite3's attribute); statements autocommit.
        self.isolation_level: Optional[str] = None
        self.autocommit = True

    def _live(self) -> "_native.Store":
        if self._store is None:
            raise ProgrammingError("Cannot operate on a closed database.")
        return self._store

    def cursor(self) -> "Cursor":
        """A new cursor."""
        return Cursor(self)

    def execute(self, sql: str, parameters: Any = ()) -> "Cursor":
        """Runs ``sql`` on a new cursor and returns it."""
        return self.cursor().execute(sql, parameters)

    def commit(self) -> None:
        """Nothing to commit: the connection only reads."""
        self._live()

    def rollback(self) -> None:
        """Nothing to roll back: the connection only reads."""
        self._live()

    def close(self) -> None:
        """Closes this connection (not the store)."""
        self._store = None

    def create_function(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: SQL functions cannot be added to the store's connection (so
        ``REGEXP`` is not available). Accepted and ignored, for SQLAlchemy's setup."""


class Cursor:
    """A DB-API cursor: each ``execute`` fetches the whole result."""

    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.description: Optional[List[Tuple[Any, ...]]] = None
        self.rowcount = -1
        self.lastrowid: Optional[int] = None
        self._rows: List[Tuple[Any, ...]] = []
        self._at = 0

    def execute(self, sql: str, parameters: Any = ()) -> "Cursor":
        """Runs one statement on the cache."""
        store = self.connection._live()
        try:
            names, rows = store.query(sql, parameters if parameters is not None else ())
        except _errors.StoreClosed as e:
            raise ProgrammingError(str(e)) from e
        except _errors.Error as e:
            raise OperationalError(str(e)) from e
        self.description = (
            [(n, None, None, None, None, None, None) for n in names] if names else None
        )
        self._rows = rows
        self._at = 0
        self.rowcount = -1
        return self

    def executemany(self, sql: str, seq_of_parameters: Sequence[Any]) -> "Cursor":
        """Runs ``sql`` once per parameter set."""
        for parameters in seq_of_parameters:
            self.execute(sql, parameters)
        return self

    def fetchone(self) -> Optional[Tuple[Any, ...]]:
        """The next row, or None."""
        if self._at >= len(self._rows):
            return None
        row = self._rows[self._at]
        self._at += 1
        return row

    def fetchmany(self, size: Optional[int] = None) -> List[Tuple[Any, ...]]:
        """Up to ``size`` (default ``arraysize``) next rows."""
        n = self.arraysize if size is None else size
        rows = self._rows[self._at : self._at + n]
        self._at += len(rows)
        return rows

    def fetchall(self) -> List[Tuple[Any, ...]]:
        """The remaining rows."""
        rows = self._rows[self._at :]
        self._at = len(self._rows)
        return rows

    def close(self) -> None:
        """Drops the rows."""
        self._rows = []
        self._at = 0

    def setinputsizes(self, sizes: Any) -> None:
        """Ignored (PEP 249)."""

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        """Ignored (PEP 249)."""

    def __iter__(self) -> "Cursor":
        return self

    def __next__(self) -> Tuple[Any, ...]:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row
