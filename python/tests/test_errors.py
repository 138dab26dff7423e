"""The crate's errors arrive as the classes of the syncjournal.Error hierarchy, carrying the
crate's message and their fields."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import syncjournal as sj
from conftest import SCHEMA


def test_the_hierarchy():
    for cls in (sj.Locked, sj.Corrupt, sj.Poisoned, sj.DiskFull):
        assert issubclass(cls, sj.JournalError)
    for cls in (sj.ChangeRefused, sj.InDoubt, sj.CacheMismatch, sj.Unguarded):
        assert issubclass(cls, sj.CacheError)
    assert issubclass(sj.ChangeTooLarge, sj.ChangeRefused)
    for cls in (sj.EntryRejected, sj.TargetUnavailable, sj.TargetDamaged, sj.TargetUnusable, sj.NoTarget):
        assert issubclass(cls, sj.TargetError)
    for cls in (sj.JournalError, sj.CacheError, sj.TargetError, sj.InvalidOption, sj.StoreClosed):
        assert issubclass(cls, sj.Error)
    assert issubclass(sj.StoreClosed, ValueError) and issubclass(sj.InvalidOption, ValueError)


def test_a_second_store_on_the_journal_is_locked(open_store, paths):
    open_store(target=None)
    with pytest.raises(sj.Locked) as e:
        sj.Store(str(paths.journal), str(paths.cache), lock_wait_ms=0)
    assert "already open in this process" in str(e.value)
    assert e.value.holder_pid == os.getpid()
    assert e.value.dir == str(paths.journal)


def test_a_journal_held_by_another_process_is_locked(paths):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, syncjournal as sj\n"
            "s = sj.Store(sys.argv[1], sys.argv[2])\n"
            "print('open', flush=True)\n"
            "sys.stdin.read()\n",
            str(paths.journal),
            str(paths.cache),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(sj.Locked, match=f"locked by pid {holder.pid}"):
            sj.Store(str(paths.journal), str(paths.cache), lock_wait_ms=100)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


@pytest.mark.parametrize(
    "changes, reason",
    [
        (sj.ChangeSet().insert("hosts", {"id": 1}, {"name": None}), "NOT NULL"),
        (sj.ChangeSet().upsert("nowhere", {"id": 1}, {"x": 1}), "nowhere"),
        (sj.ChangeSet().upsert("hosts", {"id": 1}, {"colour": "red"}), "colour"),
        (sj.ChangeSet().update("hosts", {"id": 99}, {"name": "x"}), "no row"),
        (
            sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "a"}).insert("hosts", {"id": 1}, {"name": "b"}),
            "",
        ),
    ],
)
def test_a_refused_change_is_change_refused_and_nothing_is_journaled(open_store, changes, reason):
    store = open_store(background_sync=False)
    with pytest.raises(sj.ChangeRefused, match="nothing was written") as e:
        store.apply(changes)
    assert reason in e.value.reason
    assert not e.value.transient
    assert store.journal_state().next_lsn == 1
    assert store.read("SELECT count(*) FROM hosts") == [(0,)]


def test_a_change_set_over_the_record_limit_is_change_too_large(open_store):
    store = open_store(background_sync=False)
    with pytest.raises(sj.ChangeTooLarge, match="record limit"):
        store.apply(sj.ChangeSet().upsert("kinds", {"k": 1}, {"b": b"x" * (64 << 20)}))
    assert store.journal_state().next_lsn == 1


def test_damage_in_the_middle_of_the_journal_is_corrupt(paths):
    with sj.Store(str(paths.journal), str(paths.cache), schema=SCHEMA) as store:
        for i in range(200):
            store.apply(sj.ChangeSet().upsert("hosts", {"id": i}, {"name": "x" * 100}))
    segment = sorted(p for p in paths.journal.iterdir() if p.suffix == ".sjl")[0]
    data = bytearray(segment.read_bytes())
    data[8192] ^= 0xFF  # inside the records, long before the last one
    segment.write_bytes(bytes(data))
    with pytest.raises(sj.Corrupt) as e:
        sj.Store(str(paths.journal), str(paths.cache), schema=SCHEMA)
    assert e.value.segment == str(segment)
    assert e.value.torn_tail is False
    assert "syncjournal" in str(e.value)  # says what to run


def test_a_cache_of_another_journal_is_cache_mismatch(paths):
    with sj.Store(str(paths.journal), str(paths.cache), schema=SCHEMA):
        pass
    with pytest.raises(sj.CacheMismatch, match="built from journal"):
        sj.Store(str(paths.root / "other-journal"), str(paths.cache), schema=SCHEMA)


def test_a_schema_that_writes_rows_is_unguarded(paths):
    with pytest.raises(sj.Unguarded):
        sj.Store(
            str(paths.journal),
            str(paths.cache),
            schema=SCHEMA + "INSERT INTO hosts (id, name) VALUES (1, 'around');",
        )


def test_an_entry_the_target_refuses_is_entry_rejected(open_store):
    store = open_store(
        background_sync=False,
        target_schema="CREATE TABLE hosts (id INTEGER PRIMARY KEY, name TEXT)",
    )
    lsn = store.apply(sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "a", "os": "x"}))
    report = store.sync_now()
    assert isinstance(report.error, sj.EntryRejected)
    assert report.error.lsn == lsn and "hosts" in report.error.entry
    assert "os" in report.error.reason
    with pytest.raises(sj.EntryRejected):
        report.raise_for_error()
    status = store.status()
    assert status.state is sj.SyncState.FAILING
    assert status.last_error is not None and status.last_error.lsn == lsn


def test_a_missing_target_is_transient_target_unavailable(open_store, paths):
    store = open_store(background_sync=False, create_target=False, retry_attempts_max=0)
    store.apply(sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "a"}))
    error = store.sync_now().error
    assert isinstance(error, sj.TargetUnavailable)
    assert error.transient
    assert "is the share mounted" in str(error)


def test_a_directory_as_target_is_target_unusable(open_store, paths):
    paths.target.mkdir()
    store = open_store(background_sync=False, retry_attempts_max=0)
    store.apply(sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "a"}))
    error = store.sync_now().error
    assert isinstance(error, sj.TargetUnusable) and not error.transient


def test_a_wal_target_is_target_unusable(open_store, paths):
    subprocess.run(
        [sys.executable, "-c", "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute('PRAGMA journal_mode=WAL')", str(paths.target)],
        check=True,
    )
    store = open_store(background_sync=False, retry_attempts_max=0)
    store.apply(sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "a"}))
    error = store.sync_now().error
    assert isinstance(error, sj.TargetUnusable)
    assert "journal_mode=wal" in str(error).lower()


def test_no_target(open_store):
    store = open_store(target=None, background_sync=False)
    report = store.sync_now()
    assert isinstance(report.error, sj.NoTarget)
    with pytest.raises(sj.NoTarget):
        store.quarantined()
