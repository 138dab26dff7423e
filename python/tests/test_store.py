"""Round trips through the Python API: apply (builder, dicts), read, the read-only sqlite3
connection, sync_now, status, wait_synced, journal_state, quarantine, close."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
import uuid

import pytest

import syncjournal as sj
from conftest import SCHEMA, target_locked, target_rows


def test_apply_a_change_set_and_read_it_back(open_store):
    store = open_store(background_sync=False)
    lsn = store.apply(
        sj.ChangeSet()
        .insert("hosts", {"id": 1}, {"name": "web-1", "os": "debian"})
        .upsert("hosts", {"id": 2}, {"name": "web-2"})
        .update("hosts", {"id": 1}, {"address": "10.0.0.1"})
    )
    assert lsn == 1
    rows = store.read("SELECT id, name, address, os FROM hosts ORDER BY id")
    assert rows == [(1, "web-1", "10.0.0.1", "debian"), (2, "web-2", None, None)]
    lsn = store.apply(sj.ChangeSet().delete("hosts", {"id": 2}))
    assert lsn == 2
    assert store.read("SELECT id FROM hosts") == [(1,)]


def test_apply_takes_plain_dicts(open_store):
    store = open_store(background_sync=False)
    store.apply({"op": "upsert", "table": "hosts", "key": {"id": 5}, "values": {"name": "a"}})
    store.apply(
        [
            {"op": "update", "table": "hosts", "key": {"id": 5}, "values": {"name": "b"}},
            {"op": "insert", "table": "hosts", "key": {"id": 6}, "values": {"name": "c"}},
            {"op": "delete", "table": "hosts", "key": {"id": 5}},
        ]
    )
    assert store.read("SELECT id, name FROM hosts") == [(6, "c")]


@pytest.mark.parametrize(
    "bad, error",
    [
        ({"table": "hosts", "key": {"id": 1}}, "needs \"op\""),
        ({"op": "merge", "table": "hosts", "key": {"id": 1}}, "unknown op"),
        ({"op": "delete", "table": "hosts", "key": {"id": 1}, "values": {"a": 1}}, "no \"values\""),
        ({"op": "insert", "table": "hosts"}, "needs \"key\""),
    ],
)
def test_malformed_mutation_dicts_are_value_errors(open_store, bad, error):
    store = open_store(background_sync=False)
    with pytest.raises(ValueError, match=error):
        store.apply(bad)
    assert store.journal_state().next_lsn == 1


def test_apply_refuses_what_is_not_a_change_set(open_store):
    store = open_store(background_sync=False)
    for bad in ("upsert hosts", 42, [1, 2]):
        with pytest.raises(TypeError):
            store.apply(bad)


def test_change_set_lists_its_mutations(open_store):
    cs = sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "x"}).delete("domains", {"name": "d"})
    assert len(cs) == 2
    assert cs.mutations() == [
        {"op": "upsert", "table": "hosts", "key": {"id": 1}, "values": {"name": "x"}},
        {"op": "delete", "table": "domains", "key": {"name": "d"}, "values": {}},
    ]
    assert "upsert hosts" in repr(cs)


def test_read_binds_positional_and_named_parameters(open_store):
    store = open_store(background_sync=False)
    store.apply(
        sj.ChangeSet()
        .upsert("hosts", {"id": 1}, {"name": "a"})
        .upsert("hosts", {"id": 2}, {"name": "b"})
    )
    assert store.read("SELECT name FROM hosts WHERE id = ?", (2,)) == [("b",)]
    assert store.read("SELECT name FROM hosts WHERE id = :id", {"id": 1}) == [("a",)]
    with pytest.raises(sj.CacheError):
        store.read("SELECT name FROM hosts WHERE id = ?", (1, 2))
    with pytest.raises(sj.CacheError, match="no such table"):
        store.read("SELECT * FROM nowhere")


def test_read_only_sqlite3_connection_reads_but_cannot_write(open_store):
    store = open_store(background_sync=False)
    store.apply(sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "a"}))
    conn = store.connect_cache()
    try:
        assert conn.execute("SELECT name FROM hosts").fetchall() == [("a",)]
        with pytest.raises(sqlite3.OperationalError):
            conn.execute("INSERT INTO hosts (id, name) VALUES (2, 'b')")
    finally:
        conn.close()
    # Even a writable connection of its own is refused by the guards.
    conn = sqlite3.connect(store.cache_path)
    try:
        with pytest.raises(sqlite3.OperationalError, match="write_through_the_syncjournal_store"):
            conn.execute("DELETE FROM hosts")
    finally:
        conn.close()
    assert store.read("SELECT count(*) FROM hosts") == [(1,)]


def test_sync_now_reports_what_it_applied(open_store, paths):
    store = open_store(background_sync=False)
    for i in range(5):
        store.apply(sj.ChangeSet().upsert("hosts", {"id": i}, {"name": f"h{i}"}))
    before = store.status()
    assert before.pending_entries == 5
    report = store.sync_now()
    assert isinstance(report, sj.SyncReport)
    assert report.ok and report.error is None
    assert report.applied == 5
    assert report.pending == 0
    assert report.target_lsn == 5
    assert report.pending_basis is sj.PendingBasis.TARGET
    assert isinstance(report.duration, dt.timedelta)
    assert "applied 5 entries" in str(report)
    assert target_rows(paths.target, "SELECT count(*) FROM hosts") == [(5,)]
    assert store.sync_now().applied == 0


def test_status_is_a_frozen_dataclass_with_datetimes(open_store):
    store = open_store(background_sync=False)
    store.sync_now()  # creates the target
    store.apply(sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "a"}))
    st = store.status()
    assert isinstance(st, sj.SyncStatus)
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.head_lsn = 7  # type: ignore[misc]
    assert isinstance(st.journal_id, uuid.UUID)
    assert st.head_lsn == 1 and st.pending_entries == 1 and st.cache_applied_lsn == 1
    assert st.state in (sj.SyncState.SYNCING, sj.SyncState.STALLED)
    assert st.oldest_pending_at is not None and st.oldest_pending_at.tzinfo is not None
    age = dt.datetime.now(dt.timezone.utc) - st.oldest_pending_at
    assert dt.timedelta(0) <= age < dt.timedelta(minutes=1)
    store.sync_now()
    st = store.status()
    assert st.state is sj.SyncState.IN_SYNC and st.in_sync
    assert str(st.state) == "IN SYNC"
    assert st.target_lsn == 1 and isinstance(st.target_read_at, dt.datetime)
    assert isinstance(st.last_success_at, dt.datetime)


def test_status_has_every_field_of_the_crate(open_store):
    import json

    store = open_store(background_sync=False)
    crate_fields = set(json.loads(store.status_json()))
    ours = {f.name for f in dataclasses.fields(sj.SyncStatus)}
    renamed = {
        "target_read_at_ms": "target_read_at",
        "oldest_pending_ms": "oldest_pending_at",
        "last_success_ms": "last_success_at",
        "stalled_since_ms": "stalled_since",
        "failing_since_ms": "failing_since",
        "lease_waiting_since_ms": "lease_waiting_since",
    }
    assert {renamed.get(f, f) for f in crate_fields} == ours


def test_wait_synced_with_the_background_sync(open_store, paths):
    store = open_store(sync_interval_ms=50)
    lsn = store.apply(sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "a"}))
    assert store.wait_synced(lsn, timeout=10) is True
    assert target_rows(paths.target, "SELECT name FROM hosts") == [("a",)]
    lsn = store.apply(sj.ChangeSet().upsert("hosts", {"id": 2}, {"name": "b"}))
    assert store.wait_synced(lsn) is True  # no limit
    with pytest.raises(ValueError):
        store.wait_synced(lsn, timeout=-1)
    with pytest.raises(sj.JournalError, match="has not been written"):
        store.wait_synced(lsn + 10, timeout=0.1)


def test_wait_synced_times_out_while_the_target_is_locked(open_store, paths):
    store = open_store(
        background_sync=False, target_busy_timeout_ms=50, retry_attempts_max=0
    )
    store.sync_now()
    with target_locked(paths.target):
        lsn = store.apply(sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "a"}))
        assert store.wait_synced(lsn, timeout=0.3) is False
        report = store.sync_now()
        assert isinstance(report.error, sj.TargetUnavailable) and report.error.transient
        assert store.status().state is sj.SyncState.FAILING
    assert store.wait_synced(lsn, timeout=10) is True


def test_journal_state(open_store):
    store = open_store(background_sync=False)
    store.apply(sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "a"}))
    js = store.journal_state()
    assert isinstance(js, sj.JournalState)
    assert (js.first_lsn, js.next_lsn, js.durable_lsn) == (1, 2, 1)
    assert js.poisoned is None and store.poisoned() is None


def test_quarantine_lists_retries_and_discards(open_store, paths):
    # The target lacks a column the cache has: the target refuses the entry.
    store = open_store(
        background_sync=False,
        reject_policy="quarantine",
        target_schema="CREATE TABLE hosts (id INTEGER PRIMARY KEY, name TEXT)",
    )
    lsn = store.apply(sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "a", "os": "x"}))
    report = store.sync_now()
    assert report.quarantined == 1
    entries = store.quarantined()
    assert [e.lsn for e in entries] == [lsn]
    assert "os" in entries[0].error and isinstance(entries[0].rejected_at, dt.datetime)
    with pytest.raises(sj.Error):
        store.retry_quarantined(lsn)  # still refused
    assert store.discard_quarantined(lsn) is True
    assert store.quarantined() == []


def test_context_manager_closes_and_the_journal_reopens(paths):
    with sj.Store(str(paths.journal), str(paths.cache), schema=SCHEMA) as store:
        store.apply(sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "a"}))
    assert store.closed
    with pytest.raises(sj.StoreClosed):
        store.apply(sj.ChangeSet().upsert("hosts", {"id": 2}, {"name": "b"}))
    with pytest.raises(ValueError):
        store.read("SELECT 1")
    store.close()  # twice is fine
    with sj.Store(str(paths.journal), str(paths.cache), schema=SCHEMA) as again:
        assert again.read("SELECT name FROM hosts") == [("a",)]
        assert again.journal_state().next_lsn == 2


def test_options_are_checked(paths):
    with pytest.raises(ValueError, match="persist_mode"):
        sj.Store(str(paths.journal), str(paths.cache), persist_mode="fast")
    with pytest.raises(ValueError, match="reject_policy"):
        sj.Store(str(paths.journal), str(paths.cache), reject_policy="ignore")


def test_buffered_persist_mode_applies(open_store):
    store = open_store(background_sync=False, persist_mode="buffered", target=None)
    store.apply(sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "a"}))
    assert store.read("SELECT name FROM hosts") == [("a",)]


def test_store_is_a_native_subclass_with_stubs():
    import pathlib

    import syncjournal

    pkg = pathlib.Path(syncjournal.__file__).parent
    assert (pkg / "py.typed").exists() and (pkg / "_native.pyi").exists()
    for name in syncjournal.__all__:
        obj = getattr(syncjournal, name)
        if callable(obj):
            assert obj.__doc__, f"{name} has no docstring"
