"""Two machines on one target: each store pulls the other's changes into its cache, holds a
remote change to a row it changed itself back until its own change is on the target, and a
reseed rebuilds a cache from the target keeping the local changes not on it yet."""

from __future__ import annotations

import sqlite3

import syncjournal as sj
from conftest import SCHEMA


def machine(paths, name, **kwargs):
    root = paths.root / name
    root.mkdir(exist_ok=True)
    kwargs.setdefault("background_sync", False)
    return sj.Store(
        str(root / "journal"),
        str(root / "cache.db"),
        schema=SCHEMA,
        target=str(paths.target),
        create_target=True,
        target_schema=SCHEMA,
        **kwargs,
    )


def hosts(store):
    return store.read("SELECT id, name, os FROM hosts ORDER BY id")


def test_a_change_on_one_machine_reaches_the_other_cache(paths):
    with machine(paths, "a") as a, machine(paths, "b") as b:
        a.apply(sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "web"}))
        a.apply(sj.ChangeSet().upsert("hosts", {"id": 2}, {"name": "db"}))
        assert a.sync_now().ok
        r = b.pull_now()
        assert r["error"] is None and r["held_back"] is None
        assert r["applied"] == 2 and r["cursor_seq"] == r["head_seq"] == 2
        assert hosts(b) == [(1, "web", None), (2, "db", None)]
        a.apply(sj.ChangeSet().delete("hosts", {"id": 2}))
        assert a.sync_now().ok
        assert b.pull_now()["applied"] == 1
        assert hosts(b) == [(1, "web", None)]
        st = b.pull_status()
        assert st["cursor_seq"] == 3 and st["behind"] == 0 and not st["needs_reseed"]


def test_a_remote_change_to_a_locally_changed_row_waits(paths):
    with machine(paths, "a") as a, machine(paths, "b") as b:
        a.apply(sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "web"}))
        assert a.sync_now().ok
        assert b.pull_now()["applied"] == 1
        a.apply(sj.ChangeSet().update("hosts", {"id": 1}, {"name": "renamed"}))
        assert a.sync_now().ok
        lsn = b.apply(sj.ChangeSet().update("hosts", {"id": 1}, {"os": "bsd"}))
        r = b.pull_now()
        assert r["held_back"] == {"seq": 2, "table": "hosts", "key": "id=1", "local_lsn": lsn}
        assert hosts(b) == [(1, "web", "bsd")]
        assert b.sync_now().ok
        assert b.pull_now()["held_back"] is None
        assert a.pull_now()["error"] is None
        assert hosts(a) == hosts(b) == [(1, "renamed", "bsd")]


def test_reseed_builds_the_cache_from_the_target(paths):
    with machine(paths, "a") as a:
        a.apply(sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "web"}))
        assert a.sync_now().ok
    # A row the target had before any change log: no pull brings it.
    with sqlite3.connect(paths.target) as c:
        c.execute("INSERT INTO hosts (id, name) VALUES (9, 'old')")
    with machine(paths, "b") as b:
        b.pull_now()
        assert hosts(b) == [(1, "web", None)]
        b.apply(sj.ChangeSet().update("hosts", {"id": 1}, {"os": "mine"}))
        r = b.reseed()
        assert r["rows"] == 2 and r["local_reapplied"] == 1 and r["local_refused"] == 0
        assert hosts(b) == [(1, "web", "mine"), (9, "old", None)]


def test_concurrent_edits_are_conflicts_settled_by_policy_and_counted(paths):
    import time

    with machine(paths, "a") as a, machine(
        paths, "b", conflicts={"hosts": "reject"}, reject_policy="quarantine"
    ) as b:
        a.apply(sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "web"}))
        assert a.sync_now().ok
        assert b.pull_now()["applied"] == 1
        # Both edit host 1 without seeing the other's edit; a reaches the target first.
        a.apply(sj.ChangeSet().update("hosts", {"id": 1}, {"os": "debian"}))
        time.sleep(0.003)
        lsn = b.apply(sj.ChangeSet().update("hosts", {"id": 1}, {"os": "arch"}))
        assert a.sync_now().ok
        r = b.sync_now()
        assert r.ok and r.quarantined == 1
        st = b.status()
        assert st.conflicts == sj.ConflictCounts(resolved=0, pending=1)
        [c] = b.conflicts()
        assert c["kind"] == "update/update" and c["resolution"] == "rejected" and c["pending"]
        assert c["lsn"] == lsn and c["table"] == "hosts"
        assert b.quarantined()[0].lsn == lsn
        b.retry_quarantined(lsn)
        assert b.status().conflicts == sj.ConflictCounts(resolved=1, pending=0)
        assert b.conflicts()[0]["resolution"] == "retried"
        assert a.status().conflicts == sj.ConflictCounts()
        with sqlite3.connect(paths.target) as t:
            assert t.execute("SELECT os FROM hosts WHERE id = 1").fetchall() == [("arch",)]


def test_an_unknown_conflict_policy_is_refused_naming_it(paths):
    import pytest

    with pytest.raises(ValueError, match="bogus"):
        machine(paths, "a", conflicts={"hosts": "bogus"})
