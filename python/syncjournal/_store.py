"""``Store``: the Python face of the crate's store (the native class plus the context manager,
the dataclasses and a read-only ``sqlite3`` connection to the cache)."""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.parse
from typing import Any, Dict, List, Optional

from . import _native
from ._types import JournalState, QuarantinedEntry, SyncReport, SyncStatus

__all__ = ["Store"]


class Store(_native.Store):
    """A local SQLite cache whose only write path is a durable journal, replayed exactly once
    to a shared target database.

    ``Store(journal_dir, cache_path, *, schema=None, target=None, ...)`` opens (or creates)
    the journal in ``journal_dir`` and the cache at ``cache_path``, applies to the cache the
    entries it is missing, and starts the background sync if a ``target`` is given. Options
    (keyword only; defaults in brackets):

    * ``schema`` -- SQL run on the cache at every open: the application's tables, written
      idempotently (``CREATE TABLE IF NOT EXISTS``). It must write no rows. [None]
    * ``target`` -- the target database, as a path (an SQLite file, typically on a network
      share). [None: the store only journals and caches]
    * ``create_target`` -- create the target if missing; leave it off for a real share, where
      a missing file means an unmounted share. [False]
    * ``target_schema`` -- SQL run once when the target is created. [None]
    * ``background_sync`` -- sync in a background thread, on new entries and every
      ``sync_interval_ms``, retrying failures. [True]
    * ``sync_interval_ms`` [1000], ``retry_attempts_max`` (transient failures retried within
      one ``sync_now``) [5], ``target_busy_timeout_ms`` [5000].
    * ``persist_mode`` -- ``"sync"``: durable before ``apply`` returns; ``"batched"``: synced
      every ``persist_interval_ms``; ``"buffered"``. ["sync"]
    * ``reject_policy`` -- what replay does with an entry the target refuses: ``"stop"`` or
      ``"quarantine"``. ["stop"]
    * ``conflicts`` -- the conflict policy per table (``"*"``: every other table):
      ``"last_writer_wins"`` (by the stores' hybrid logical clocks; a deleted row stays
      deleted), ``"target_wins"``, ``"reject"`` (quarantined for a human), or a resolver: a
      callable taking a :class:`syncjournal.Conflict` (base, local and current row) and
      returning ``"local"``, ``"target"``, ``"delete"`` or a dict of the columns to write, or
      raising to refuse. [None: last writer wins everywhere]; ``detect_conflicts`` -- off,
      entries apply as they are. [True]
    * ``lock_wait_ms`` -- how long to wait for the journal's lock. [10000]
    * ``stalled_after_ms`` -- when pending entries count as stalled. [300000]

    The store is thread-safe: share one per process (the journal is locked by one store at a
    time). Every call that can block releases the GIL; concurrent ``apply`` calls share the
    journal's group commit. Use it as a context manager, or call ``close()``.
    """

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<syncjournal.Store {state} journal={self.journal_dir!r} cache={self.cache_path!r}>"

    def status(self) -> SyncStatus:
        """The sync status, measured on the target (never waiting for a sync in progress)."""
        return SyncStatus._from_json(self.status_json())

    def sync_now(self) -> SyncReport:  # type: ignore[override]
        """Force sync: applies every durable entry to the target now and reports what it did
        (``report.applied``, ``report.pending``; ``report.error`` if it stopped early). Waits
        for a background sync in progress. Without a target, the error is ``NoTarget``."""
        return SyncReport._from_native(super().sync_now())

    def pull_now(self) -> Dict[str, Any]:  # type: ignore[override]
        """Pulls the target's change log into the cache now: other machines' changes, and
        this machine's own as the target has the rows. The cursor moves in the same cache
        transaction as the rows. A change to a row this machine changed and has not synced yet
        stops the pull before it until that change is on the target (``held_back``). Returns a
        dict: ``applied``, ``cursor_seq``, ``head_seq``, ``held_back`` (None or a dict with
        ``seq``, ``table``, ``key``, ``local_lsn``), ``error`` (a ``syncjournal.Error`` or
        None). The background sync pulls after every sync."""
        return super().pull_now()

    def pull_status(self) -> Dict[str, Any]:
        """The pull's status as a dict: ``cursor_seq`` (every change up to it is in the
        cache), ``head_seq`` and ``read_at_ms`` (the change log as last read), ``behind``,
        ``held_back``, ``needs_reseed``, ``last_error``."""
        return json.loads(self.pull_status_json())

    def conflicts(self, limit: int = 100) -> List[Dict[str, Any]]:
        """The conflicts this machine's entries met on the target, newest first: each a dict
        with ``id``, ``kind`` (``"update/update"``, ``"update/delete"``, ``"delete/update"``,
        ``"insert/insert"``, ...), ``table``, ``key``, ``local_row``, ``base_row``,
        ``target_row``, ``remote_journal_id``, ``resolution`` (``"local"``, ``"target"``,
        ``"rejected"``, ...), ``pending`` and the clocks. ``status().conflicts`` counts them."""
        return json.loads(self.conflicts_json(limit))

    def reseed(self) -> Dict[str, Any]:
        """Rebuilds the cache from one snapshot of the target, keeping this machine's
        changes the target does not have yet, in one cache transaction. For a new machine, a
        lost cache, or ``pull_status()["needs_reseed"]``. Returns a dict: ``rows``,
        ``cursor_seq``, ``target_lsn``, ``local_reapplied``, ``local_refused``."""
        return json.loads(self.reseed_json())

    def journal_state(self) -> JournalState:  # type: ignore[override]
        """The journal's positions (head, durable, acknowledged LSNs)."""
        return JournalState._from_native(super().journal_state())

    def quarantined(self) -> List[QuarantinedEntry]:  # type: ignore[override]
        """Entries the target refused under the ``quarantine`` reject policy."""
        return [QuarantinedEntry._from_native(d) for d in super().quarantined()]

    def connect_cache(self, **kwargs: Any) -> sqlite3.Connection:
        """A new read-only ``sqlite3`` connection to the cache, for code that wants one (a
        report, pandas). Writes through it fail (the file is opened read-only, and the cache's
        guards refuse writes from any connection but the store's). ``kwargs`` go to
        ``sqlite3.connect``.

        Caution: ``sqlite3`` runs another copy of SQLite than the store, and in one process the
        two do not see each other's locks; a long read can then overlap a checkpoint of the
        store's writer, and closing the connection drops the store's locks on the file. Keep
        such connections short-lived, or read through ``read()`` or
        :mod:`syncjournal.dbapi`, which use the store's own connection."""
        path = os.path.abspath(self.cache_path)
        uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, **kwargs)
        conn.execute("PRAGMA query_only = ON")
        return conn

    def wait_synced(self, lsn: int, timeout: Optional[float] = None) -> bool:  # type: ignore[override]
        """Waits until the target holds ``lsn`` (an LSN ``apply`` returned), for at most
        ``timeout`` seconds (None: no limit). Returns True once it does, False if the time ran
        out. Raises ``NoTarget`` without a target."""
        return super().wait_synced(lsn, timeout)
