"""The read-only DB-API interface on the store's own connection, and the example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import syncjournal as sj
from syncjournal import dbapi


def test_dbapi_reads_the_cache_through_the_store(open_store):
    store = open_store(background_sync=False)
    store.apply(
        sj.ChangeSet()
        .upsert("hosts", {"id": 1}, {"name": "a"})
        .upsert("hosts", {"id": 2}, {"name": "b"})
    )
    conn = dbapi.connect(store)
    cur = conn.cursor()
    cur.execute("SELECT id, name FROM hosts WHERE id >= ? ORDER BY id", (1,))
    assert [d[0] for d in cur.description] == ["id", "name"]
    assert cur.fetchone() == (1, "a")
    assert cur.fetchall() == [(2, "b")]
    assert cur.fetchone() is None
    assert list(conn.execute("SELECT name FROM hosts WHERE id = :id", {"id": 2})) == [("b",)]
    assert dbapi.sqlite_version_info >= (3, 35)
    # What the store applies is visible at once.
    store.apply(sj.ChangeSet().delete("hosts", {"id": 1}))
    assert conn.execute("SELECT count(*) FROM hosts").fetchall() == [(1,)]


def test_dbapi_refuses_writes(open_store):
    store = open_store(background_sync=False)
    conn = dbapi.connect(store)
    with pytest.raises(dbapi.OperationalError):
        conn.execute("INSERT INTO hosts (id, name) VALUES (1, 'around')")
    with pytest.raises(dbapi.OperationalError, match="no such table"):
        conn.execute("SELECT * FROM nowhere")
    assert store.read("SELECT count(*) FROM hosts") == [(0,)]
    conn.close()
    with pytest.raises(dbapi.ProgrammingError):
        conn.cursor().execute("SELECT 1")


def test_the_example_runs(tmp_path):
    example = Path(__file__).resolve().parents[2] / "examples" / "python" / "inventory.py"
    out = subprocess.run(
        [sys.executable, str(example), str(tmp_path / "inventory")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for table in ("hosts", "domains", "certificates"):
        assert f"{table}: 17 rows, share equals cache" in out.stdout
    assert "a plain session cannot write" in out.stdout
    assert "state IN SYNC" in out.stdout
