"""The reports of a store as frozen dataclasses: the sync status, what a sync did, the
journal's positions, quarantined entries. Times are timezone-aware ``datetime`` (UTC)."""

from __future__ import annotations

import datetime as _dt
import enum
import json
import uuid
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

from .errors import Error

__all__ = [
    "SyncState",
    "PendingBasis",
    "SyncError",
    "TargetBehind",
    "LostWrites",
    "SyncStatus",
    "SyncReport",
    "JournalState",
    "QuarantinedEntry",
    "Conflict",
]


def _time(ms: Optional[int]) -> Optional[_dt.datetime]:
    """Milliseconds since the Unix epoch as an aware UTC datetime (None stays None)."""
    if ms is None:
        return None
    return _dt.datetime.fromtimestamp(ms / 1000.0, tz=_dt.timezone.utc)


class SyncState(str, enum.Enum):
    """The verdict of a :class:`SyncStatus`, most severe first. The value is the label the
    command line prints (``"IN SYNC"``)."""

    POISONED = "POISONED"
    TARGET_DAMAGED = "TARGET DAMAGED"
    TARGET_AHEAD = "TARGET AHEAD"
    TARGET_BEHIND = "TARGET BEHIND"
    FAILING = "FAILING"
    TARGET_UNREADABLE = "TARGET UNREADABLE"
    STALLED = "STALLED"
    SYNCING = "SYNCING"
    IN_SYNC = "IN SYNC"

    def __str__(self) -> str:
        return self.value


class PendingBasis(str, enum.Enum):
    """What a pending count is measured against."""

    #: The target's watermark, read at ``target_read_at``.
    TARGET = "target"
    #: The journal's acknowledgement: the target could not be read (or none is configured).
    ACKNOWLEDGEMENT = "acknowledgement"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class SyncError:
    """The last error a sync met, kept until a success clears it."""

    message: str
    #: True if retrying can succeed (the target is busy, offline, read-only...).
    transient: bool
    #: The LSN of the entry at fault, for a rejected entry.
    lsn: Optional[int]
    #: A summary of the entry at fault.
    entry: Optional[str]
    at: _dt.datetime

    @classmethod
    def _from_json(cls, d: Dict[str, Any]) -> "SyncError":
        return cls(d["message"], d["transient"], d["lsn"], d["entry"], _time(d["at_ms"]))


@dataclass(frozen=True)
class TargetBehind:
    """The target's watermark is behind the acknowledgement: it lost entries."""

    #: Entries acknowledged but not on the target.
    entries: int
    #: True if the journal still holds them all (the background sync re-applies them).
    retained: bool


@dataclass(frozen=True)
class LostWrites:
    """A time the target's watermark was found to have gone back."""

    expected_lsn: int
    found_lsn: int
    at: _dt.datetime


@dataclass(frozen=True)
class Conflict:
    """A conflict a resolver is asked to settle (``Store(conflicts={"hosts": resolver})``):
    this machine's change to a row met another machine's change the cache did not know of.

    The resolver returns ``"local"`` (apply this machine's change), ``"target"`` (keep the
    target's row; the change is recorded as overridden), ``"delete"`` (delete the row), or a
    dict of the row's other columns to write instead (unnamed columns keep the target's
    values); raising refuses the entry (quarantined, or the sync stops, by the store's
    ``reject_policy``), with the exception's text as the reason. It runs on the sync's
    thread, may be asked again for the same conflict if a batch is done again, and must not
    call the store (such a call raises ``RuntimeError``, which refuses the entry)."""

    #: The table and the row's primary key.
    table: str
    key: Dict[str, Any]
    #: ``"update/update"``, ``"update/delete"``, ``"delete/update"``, ``"insert/insert"``, ...
    kind: str
    #: The row as this machine's cache knew it when the change was made (None: absent then,
    #: or unknown if ``base_known`` is False: the change log no longer holds it).
    base: Optional[Dict[str, Any]]
    base_known: bool
    #: This machine's change: ``{"op": "insert"|"update"|"upsert"|"delete", "values": {...}}``
    #: (None: an application event).
    local: Optional[Dict[str, Any]]
    #: The target's row now (None: no row has the key).
    current: Optional[Dict[str, Any]]
    #: The hybrid-logical-clock values and journals of both changes, and the other change's
    #: sequence number in the change log.
    local_hlc: int
    local_journal: str
    remote_hlc: int
    remote_journal: str
    remote_seq: int
    #: True if this machine's change is the later one (what last writer wins would keep).
    local_is_newer: bool


#: What a resolver returns (see :class:`Conflict`).
Resolution = Union[str, Dict[str, Any]]


@dataclass(frozen=True)
class ConflictCounts:
    """Conflicts this journal's entries met on the target (as last seen)."""

    #: Settled by policy, resolver or by hand.
    resolved: int = 0
    #: Whose entry waits in quarantine for a human decision.
    pending: int = 0


@dataclass(frozen=True)
class SyncStatus:
    """The sync status, measured against the target: the same fields as the crate's
    ``SyncStatus``, times as ``datetime`` (a field ``x_ms`` there is ``x`` or ``x_at`` here)."""

    journal_id: uuid.UUID
    #: The last durable LSN (the head of the journal).
    head_lsn: int
    #: The oldest LSN the journal still holds.
    first_lsn: int
    #: The LSN the cache has applied up to.
    cache_applied_lsn: Optional[int]
    #: The LSN acknowledged by the target.
    acked_lsn: int
    #: The target's watermark as read at ``target_read_at`` (None: not read).
    target_lsn: Optional[int]
    target_read_at: Optional[_dt.datetime]
    #: Durable entries the target does not hold (see ``pending_basis``).
    pending_entries: int
    pending_basis: PendingBasis
    pending_bytes: int
    #: When the oldest pending entry was created.
    oldest_pending_at: Optional[_dt.datetime]
    last_success_at: Optional[_dt.datetime]
    #: The last error, cleared only by a success.
    last_error: Optional[SyncError]
    #: Entries quarantined on the target (as last seen).
    quarantined: int
    #: Conflicts met on the target: resolved, and pending a human decision.
    conflicts: ConflictCounts
    #: Since when syncs have been waiting for the target's writer lease (another machine holds it).
    lease_waiting_since: Optional[_dt.datetime]
    #: Since when the head of the queue has not moved while entries are pending.
    stalled_since: Optional[_dt.datetime]
    #: Since when sync attempts have been failing, until a success.
    failing_since: Optional[_dt.datetime]
    target_behind: Optional[TargetBehind]
    #: How many times the target's watermark went back (counted across restarts).
    lost_writes: int
    last_lost_writes: Optional[LostWrites]
    #: Why the target is considered damaged, if it is.
    target_damaged: Optional[str]
    #: Why the journal is poisoned, if it is.
    poisoned: Optional[str]
    #: True if the status is about a named target.
    target_named: bool
    #: The verdict.
    state: SyncState

    @property
    def in_sync(self) -> bool:
        """True if the target holds every durable entry."""
        return self.state is SyncState.IN_SYNC

    @classmethod
    def _from_json(cls, text: str) -> "SyncStatus":
        d = json.loads(text)
        times = {
            "target_read_at_ms": "target_read_at",
            "oldest_pending_ms": "oldest_pending_at",
            "last_success_ms": "last_success_at",
            "stalled_since_ms": "stalled_since",
            "failing_since_ms": "failing_since",
            "lease_waiting_since_ms": "lease_waiting_since",
        }
        for old, new in times.items():
            d[new] = _time(d.pop(old))
        d["journal_id"] = uuid.UUID(d["journal_id"])
        d["conflicts"] = ConflictCounts(**d.get("conflicts", {}))
        d["pending_basis"] = PendingBasis(d["pending_basis"])
        d["state"] = SyncState[d["state"]]
        if d["last_error"] is not None:
            d["last_error"] = SyncError._from_json(d["last_error"])
        if d["target_behind"] is not None:
            d["target_behind"] = TargetBehind(**d["target_behind"])
        if d["last_lost_writes"] is not None:
            lw = d["last_lost_writes"]
            d["last_lost_writes"] = LostWrites(
                lw["expected_lsn"], lw["found_lsn"], _time(lw["at_ms"])
            )
        # Strict: a field the crate adds and this mapping misses is an error, not a silent gap.
        return cls(**d)


@dataclass(frozen=True)
class SyncReport:
    """What one ``sync_now`` did. ``error`` is why it stopped early (None: everything durable
    was applied); it is returned, not raised (``raise_for_error`` raises it)."""

    #: Entries applied to the target (committed and confirmed).
    applied: int
    #: Entries the target refused and that were quarantined.
    quarantined: int
    #: Target transactions committed.
    transactions: int
    #: Transient failures retried.
    retries: int
    duration: _dt.timedelta
    #: Durable entries not on the target when the sync returned.
    pending: int
    pending_basis: PendingBasis
    #: The target's watermark as last read by this sync (None: it could not be read).
    target_lsn: Optional[int]
    error: Optional[Error]
    #: The crate's one-line description.
    text: str

    @property
    def ok(self) -> bool:
        """True if the sync applied everything durable."""
        return self.error is None

    def raise_for_error(self) -> "SyncReport":
        """Raises ``error`` if the sync stopped early; returns the report otherwise."""
        if self.error is not None:
            raise self.error
        return self

    def __str__(self) -> str:
        return self.text

    @classmethod
    def _from_native(cls, d: Dict[str, Any]) -> "SyncReport":
        d = dict(d)
        d["duration"] = _dt.timedelta(seconds=d.pop("duration_s"))
        d["pending_basis"] = PendingBasis(d["pending_basis"])
        return cls(**d)


@dataclass(frozen=True)
class JournalState:
    """A snapshot of the journal's positions."""

    journal_id: uuid.UUID
    #: LSN of the oldest retained record (equal to ``next_lsn`` when the journal is empty).
    first_lsn: int
    #: LSN the next apply will get.
    next_lsn: int
    #: Highest durable LSN (0: none).
    durable_lsn: int
    #: Highest acknowledged LSN (0: none).
    acked_lsn: int
    #: When the acknowledgement was last written (None: never).
    acked_at: Optional[_dt.datetime]
    #: Number of segment files.
    segments: int
    #: Why the journal is poisoned, if it is.
    poisoned: Optional[str]

    @classmethod
    def _from_native(cls, d: Dict[str, Any]) -> "JournalState":
        d = dict(d)
        d["journal_id"] = uuid.UUID(d["journal_id"])
        ms = d.pop("acked_at_ms")
        d["acked_at"] = _time(ms) if ms else None
        return cls(**d)


@dataclass(frozen=True)
class QuarantinedEntry:
    """An entry the target refused under the quarantine policy."""

    lsn: int
    #: Its record kind.
    kind: int
    #: A one-line description.
    summary: str
    #: Why the target refused it.
    error: str
    rejected_at: _dt.datetime

    @classmethod
    def _from_native(cls, d: Dict[str, Any]) -> "QuarantinedEntry":
        return cls(d["lsn"], d["kind"], d["summary"], d["error"], _time(d["rejected_at_ms"]))
