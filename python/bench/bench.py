"""Benchmark of the Python bindings against the crate, in the same run.

* ``apply`` of a durable single-row change set from Python (1 thread) against the same from
  Rust (``bench/rust``, 1 thread): the binding should add little beside the fsync (bar 0.8);
* 8 Python threads applying concurrently against 1 Python thread: group commit must survive
  the GIL (bar 3).

Interleaved slices, ``--reps`` repetitions (default 5), each case on a fresh journal; every
claim is the median of the per-rep ratios, with [min..max]. Not a test: run it by hand.

    python/.venv/bin/python python/bench/bench.py [--seconds 2] [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import syncjournal as sj

HERE = Path(__file__).resolve().parent
SCHEMA = "CREATE TABLE IF NOT EXISTS hosts (id INTEGER PRIMARY KEY, name TEXT)"


def python_rate(directory: Path, seconds: float, threads: int) -> float:
    """Durable single-row change sets per second from ``threads`` Python threads."""
    store = sj.Store(str(directory / "journal"), str(directory / "cache.db"), schema=SCHEMA)
    stop = threading.Event()
    counts = [0] * threads

    def work(t: int) -> None:
        i = 0
        apply, ChangeSet = store.apply, sj.ChangeSet
        while not stop.is_set():
            apply(ChangeSet().upsert("hosts", {"id": (t << 40) | i}, {"name": "web"}))
            i += 1
        counts[t] = i

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    store.close()
    return sum(counts) / elapsed


def rust_rate(binary: Path, directory: Path, seconds: float, threads: int) -> float:
    out = subprocess.run(
        [str(binary), str(directory), str(seconds), str(threads)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return int(out[0]) / float(out[1])


def build_rust() -> Path:
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--manifest-path", str(HERE / "rust" / "Cargo.toml")],
        check=True,
        env={**os.environ, "CARGO_BUILD_JOBS": os.environ.get("CARGO_BUILD_JOBS", "1")},
    )
    return HERE / "rust" / "target" / "release" / "apply-rate"


def summary(xs):
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}..{max(xs):.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="length of one slice")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where the journals go (default: a temp dir)")
    args = ap.parse_args()
    binary = build_rust()
    root = Path(args.dir or tempfile.mkdtemp(prefix="syncjournal-pybench-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, {platform.platform()}")
    print(f"python {platform.python_version()}, syncjournal crate {sj.CRATE_VERSION}; journals in {root}")
    print(f"slices of {args.seconds} s, {args.reps} reps, interleaved")
    rows = {"rust_1t": [], "py_1t": [], "py_8t": []}
    ratio_py_rust, ratio_8_1 = [], []
    n = 0
    for rep in range(args.reps):
        rates = {}
        for case in ("rust_1t", "py_1t", "py_8t"):
            n += 1
            d = root / f"{n:03d}-{case}"
            if case == "rust_1t":
                rates[case] = rust_rate(binary, d, args.seconds, 1)
            else:
                rates[case] = python_rate(d, args.seconds, 8 if case == "py_8t" else 1)
            shutil.rmtree(d, ignore_errors=True)
            rows[case].append(rates[case])
        ratio_py_rust.append(rates["py_1t"] / rates["rust_1t"])
        ratio_8_1.append(rates["py_8t"] / rates["py_1t"])
        print(
            f"rep {rep + 1}: rust 1t {rates['rust_1t']:9.0f}/s  python 1t {rates['py_1t']:9.0f}/s  "
            f"python 8t {rates['py_8t']:9.0f}/s",
            flush=True,
        )
    for case, xs in rows.items():
        print(f"{case:8s} median {statistics.median(xs):9.0f} change sets/s  [{min(xs):.0f}..{max(xs):.0f}]")
    print(f"python 1t / rust 1t   = {summary(ratio_py_rust)}   (bar >= 0.8)")
    print(f"python 8t / python 1t = {summary(ratio_8_1)}   (bar >= 3)")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
