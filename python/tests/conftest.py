"""Shared fixtures: a directory per test with a journal, a cache and a target path, the
inventory schema, and a factory of stores on them."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple

import pytest

import syncjournal as sj

SCHEMA = """
CREATE TABLE IF NOT EXISTS hosts (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, address TEXT, os TEXT);
CREATE TABLE IF NOT EXISTS domains (
    name TEXT PRIMARY KEY, host_id INTEGER, registrar TEXT);
CREATE TABLE IF NOT EXISTS certificates (
    id INTEGER PRIMARY KEY, domain TEXT NOT NULL, not_after TEXT NOT NULL, pem BLOB);
CREATE TABLE IF NOT EXISTS kinds (
    k INTEGER PRIMARY KEY, i INTEGER, f REAL, t TEXT, b BLOB, n);
"""


class Paths:
    """The files of one test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.journal = root / "journal"
        self.cache = root / "cache.db"
        self.target = root / "share.db"


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path)


@pytest.fixture
def open_store(paths: Paths) -> Callable[..., sj.Store]:
    """Opens a store on the test's files (with a target created on first use unless
    ``target=None``); every store opened is closed at the end of the test."""
    opened: List[sj.Store] = []

    def make(**kwargs: Any) -> sj.Store:
        kwargs.setdefault("schema", SCHEMA)
        kwargs.setdefault("target", str(paths.target))
        if kwargs["target"] is not None:
            kwargs.setdefault("create_target", True)
            kwargs.setdefault("target_schema", SCHEMA)
        store = sj.Store(str(paths.journal), str(paths.cache), **kwargs)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


# The store's SQLite is the copy bundled in the native module; Python's sqlite3 is another
# copy. In one process their POSIX locks do not see each other (and closing one copy's file
# descriptor drops the other's locks), so the tests touch the target from other processes.
_READ = """
import json, sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
rows = conn.execute(sys.argv[2], json.loads(sys.argv[3])).fetchall()
print(json.dumps([[v.hex() if isinstance(v, bytes) else v for v in r] for r in rows]))
"""

_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


def target_rows(path: Path, sql: str, params: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
    """Rows of the target database, read by another process (blobs as hex)."""
    out = subprocess.run(
        [sys.executable, "-c", _READ, str(path), sql, json.dumps(list(params))],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [tuple(r) for r in json.loads(out)]


@contextlib.contextmanager
def target_locked(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on the target from another process."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
