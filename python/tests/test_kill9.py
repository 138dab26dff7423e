"""kill -9 of a Python writer process, in a loop: no change whose apply returned is lost, a
change set is all or nothing, and the target receives every change exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

import syncjournal as sj
from conftest import SCHEMA, target_rows

CYCLES = int(os.environ.get("SYNCJOURNAL_PY_KILL_CYCLES", "50"))

WRITER = """
import sys, syncjournal as sj
journal, cache, target, schema = sys.argv[1:5]
store = sj.Store(journal, cache, schema=schema, target=target, sync_interval_ms=20)
(last,) = store.read("SELECT coalesce(max(id), 0) FROM hosts")[0]
print("ready", flush=True)
i = last
while True:
    i += 1
    store.apply(sj.ChangeSet()
        .insert("hosts", {"id": i}, {"name": f"web-{i}"})
        .insert("domains", {"name": f"web-{i}.example"}, {"host_id": i}))
    print(i, flush=True)  # acknowledged: apply returned
"""


def test_kill9_of_a_python_writer_loses_no_acknowledged_change(paths):
    # The target exists before the first writer starts, as a share's database does (a writer
    # killed while creating it leaves a target without tables: see
    # test_a_target_left_empty_by_a_crash_during_its_creation_gets_its_schema).
    with sj.Store(str(paths.journal), str(paths.cache), schema=SCHEMA, target=str(paths.target),
                  create_target=True, target_schema=SCHEMA, background_sync=False) as store:
        assert store.sync_now().ok
    rng = random.Random(14)
    acknowledged = set()
    for cycle in range(CYCLES):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(paths.journal), str(paths.cache), str(paths.target), SCHEMA],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().strip() == "ready", f"cycle {cycle}: writer did not start"
        time.sleep(rng.uniform(0.005, 0.15))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        lines = out.split("\n")
        # The last line may be cut by the kill; every complete line is an acknowledged LSN.
        acknowledged.update(int(x) for x in lines[:-1] if x)
        with sj.Store(str(paths.journal), str(paths.cache), schema=SCHEMA) as store:
            hosts = {r[0] for r in store.read("SELECT id FROM hosts")}
            domains = {r[0] for r in store.read("SELECT host_id FROM domains")}
            missing = acknowledged - hosts
            assert not missing, f"cycle {cycle}: acknowledged changes lost: {sorted(missing)[:10]}"
            assert hosts == domains, f"cycle {cycle}: a change set was split"
            assert hosts == set(range(1, len(hosts) + 1))
    assert len(acknowledged) > CYCLES  # the writers did write
    with sj.Store(str(paths.journal), str(paths.cache), schema=SCHEMA, target=str(paths.target)) as store:
        report = store.sync_now()
        # Inserts: an entry applied twice would be refused by the target.
        assert report.ok, report
        cache_rows = store.read("SELECT id, name FROM hosts ORDER BY id")
    assert target_rows(paths.target, "SELECT id, name FROM hosts ORDER BY id") == cache_rows
    assert target_rows(paths.target, "SELECT count(*) FROM domains") == [(len(cache_rows),)]
    print(f"kill -9 x{CYCLES}: {len(acknowledged)} acknowledged changes, none lost; target equals cache ({len(cache_rows)} rows)")


def test_a_target_left_empty_by_a_crash_during_its_creation_gets_its_schema(paths):
    paths.target.touch()  # what a writer killed right after opening the new target leaves
    with sj.Store(str(paths.journal), str(paths.cache), schema=SCHEMA, target=str(paths.target),
                  create_target=True, target_schema=SCHEMA, background_sync=False) as store:
        store.apply(sj.ChangeSet().insert("hosts", {"id": 1}, {"name": "a"}))
        assert store.sync_now().ok
