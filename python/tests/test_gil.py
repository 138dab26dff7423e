"""The GIL is released while the store blocks: another Python thread makes progress during a
slow sync, a wait for the target, and durable applies."""

from __future__ import annotations

import threading
import time

import syncjournal as sj
from conftest import target_locked


def progress_while(fn) -> tuple:
    """Runs ``fn`` in a thread; counts this thread's loop iterations until it returns.
    Returns (seconds fn took, iterations counted meanwhile, fn's result)."""
    result = []
    t = threading.Thread(target=lambda: result.append(fn()))
    start = time.perf_counter()
    t.start()
    n = 0
    while t.is_alive():
        n += 1
    t.join()
    return time.perf_counter() - start, n, result[0]


def test_a_second_thread_runs_during_a_slow_sync(open_store, paths):
    store = open_store(background_sync=False, target_busy_timeout_ms=1000, retry_attempts_max=1)
    store.sync_now()
    store.apply(sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "a"}))
    with target_locked(paths.target):
        took, n, report = progress_while(store.sync_now)
    assert isinstance(report.error, sj.TargetUnavailable)
    assert took >= 1.0
    # A native call that kept the GIL would leave this thread no iteration at all.
    assert n > 100_000, f"{n} iterations in {took:.2f} s"


def test_a_second_thread_runs_during_wait_synced(open_store, paths):
    store = open_store(background_sync=False, target_busy_timeout_ms=100, retry_attempts_max=0)
    store.sync_now()
    lsn = store.apply(sj.ChangeSet().upsert("hosts", {"id": 1}, {"name": "a"}))
    with target_locked(paths.target):
        took, n, synced = progress_while(lambda: store.wait_synced(lsn, timeout=1.0))
    assert synced is False and took >= 1.0
    assert n > 100_000, f"{n} iterations in {took:.2f} s"


def test_a_second_thread_runs_during_durable_applies(open_store):
    store = open_store(target=None, background_sync=False)

    def applies() -> int:
        for i in range(300):
            store.apply(sj.ChangeSet().upsert("hosts", {"id": i}, {"name": "h"}))
        return 300

    took, n, done = progress_while(applies)
    assert done == 300
    assert n > 10_000, f"{n} iterations in {took:.2f} s"


def test_threads_share_one_store(open_store):
    store = open_store(target=None, background_sync=False)
    errors = []

    def writer(w: int) -> None:
        try:
            for i in range(50):
                store.apply(sj.ChangeSet().insert("hosts", {"id": w * 1000 + i}, {"name": str(w)}))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.read("SELECT count(*) FROM hosts") == [(400,)]
    assert store.journal_state().durable_lsn == 400
