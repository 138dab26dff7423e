"""Two machines on one target: each store pulls the other's changes into its cache, holds a
remote change to a row it changed itself back until its own change is on the target, and a
reseed rebuilds a cache from the target keeping the local changes not on it yet."""

from __future__ import annotations

import sqlite3
import time

import pytest

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


def edited_on_both(a, b):
    """Host 1 on both machines, then edited on both without seeing the other's edit: a's
    edit first and on the target first, b's later and not synced. Returns b's LSN."""
    a.apply(sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "web"}))
    assert a.sync_now().ok
    assert b.pull_now()["applied"] == 1
    a.apply(sj.ChangeSet().update("hosts", {"id": 1}, {"os": "debian"}))
    time.sleep(0.003)  # the HLC's milliseconds move on
    lsn = b.apply(sj.ChangeSet().update("hosts", {"id": 1}, {"os": "arch"}))
    assert a.sync_now().ok
    return lsn


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
    with machine(paths, "a") as a, machine(
        paths, "b", conflicts={"hosts": "reject"}, reject_policy="quarantine"
    ) as b:
        lsn = edited_on_both(a, b)
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
    with pytest.raises(ValueError, match="bogus"):
        machine(paths, "a", conflicts={"hosts": "bogus"})


def test_a_python_resolver_sees_base_local_and_current_rows_and_decides(paths):
    seen = []

    def resolve(c):
        seen.append(c)
        if c.key == {"id": 1}:
            # Merge: the local os, the target's name.
            return {"name": c.current["name"], "os": c.local["values"]["os"] + "+merged"}
        if c.key == {"id": 2}:
            return "target"
        if c.key == {"id": 3}:
            return "delete"
        raise RuntimeError("no rule for this row")

    with machine(paths, "a") as a, machine(
        paths, "b", conflicts={"hosts": resolve}, reject_policy="quarantine"
    ) as b:
        for i in (1, 2, 3, 4):
            a.apply(sj.ChangeSet().upsert("hosts", {"id": i}, {"name": f"h{i}"}))
        assert a.sync_now().ok
        assert b.pull_now()["applied"] == 4
        # Both edit every host without seeing the other's edit; a reaches the target first.
        for i in (1, 2, 3, 4):
            a.apply(sj.ChangeSet().update("hosts", {"id": i}, {"name": f"a{i}"}))
        time.sleep(0.003)
        lsns = [
            b.apply(sj.ChangeSet().update("hosts", {"id": i}, {"os": f"b{i}"}))
            for i in (1, 2, 3, 4)
        ]
        assert a.sync_now().ok
        r = b.sync_now()
        assert r.ok and r.quarantined == 1, r
        assert sorted(c.key["id"] for c in seen) == [1, 2, 3, 4]
        c1 = next(c for c in seen if c.key == {"id": 1})
        assert isinstance(c1, sj.Conflict)
        assert c1.table == "hosts" and c1.kind == "update/update"
        assert c1.base_known and c1.base == {"name": "h1", "address": None, "os": None}
        assert c1.local == {"op": "update", "values": {"os": "b1"}}
        assert c1.current == {"name": "a1", "address": None, "os": None}
        assert c1.remote_hlc < c1.local_hlc and c1.local_is_newer
        assert c1.local_journal == str(b.status().journal_id)
        assert c1.remote_journal == str(a.status().journal_id)
        with sqlite3.connect(paths.target) as t:
            rows = t.execute("SELECT id, name, os FROM hosts ORDER BY id").fetchall()
        assert rows == [(1, "a1", "b1+merged"), (2, "a2", None), (4, "a4", None)]
        # The refusal (host 4) is quarantined with the resolver's reason, pending.
        [q] = b.quarantined()
        assert q.lsn == lsns[3] and "no rule for this row" in q.error, q
        assert b.status().conflicts == sj.ConflictCounts(resolved=3, pending=1)
        resolutions = sorted(c["resolution"] for c in b.conflicts())
        assert resolutions == ["deleted", "rejected", "target", "written"], b.conflicts()


def test_a_resolver_answer_that_means_nothing_refuses_and_says_why(paths):
    with machine(paths, "a") as a, machine(
        paths, "b", conflicts={"*": lambda c: 42}, reject_policy="quarantine"
    ) as b:
        edited_on_both(a, b)
        assert b.sync_now().quarantined == 1
        [q] = b.quarantined()
        assert "returned 42" in q.error and '"local"' in q.error, q.error
    with pytest.raises(TypeError, match="resolver"):
        machine(paths, "c", conflicts={"hosts": 7})


def test_a_resolver_that_calls_the_store_is_refused_rather_than_left_waiting(paths):
    stores = {}

    def resolve(c):
        stores["b"].status()  # would run inside b's own sync
        return "local"

    with machine(paths, "a") as a, machine(
        paths, "b", conflicts={"*": resolve}, reject_policy="quarantine"
    ) as b:
        stores["b"] = b
        edited_on_both(a, b)
        assert b.sync_now().quarantined == 1
        [q] = b.quarantined()
        assert "must not call the store" in q.error, q.error
