"""Python values ↔ syncjournal values: every type round trips through the cache and the
target; anything else is refused, naming the column, before anything is journaled."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest

import syncjournal as sj
from conftest import target_rows

I64_MIN, I64_MAX = -(2**63), 2**63 - 1


@pytest.mark.parametrize(
    "column, value, back",
    [
        ("n", None, None),
        ("i", 0, 0),
        ("i", I64_MIN, I64_MIN),
        ("i", I64_MAX, I64_MAX),
        ("i", True, 1),
        ("i", False, 0),
        ("f", 1.5, 1.5),
        ("f", -0.0, -0.0),
        ("f", 1e308, 1e308),
        ("t", "", ""),
        ("t", "hôte — ✓ \U0001f600", "hôte — ✓ \U0001f600"),
        ("t", "nul\x00inside", "nul\x00inside"),
        ("b", b"", b""),
        ("b", b"\x00\xff" * 100, b"\x00\xff" * 100),
        ("b", bytearray(b"ab"), b"ab"),
    ],
)
def test_every_value_type_round_trips_to_cache_and_target(open_store, paths, column, value, back):
    store = open_store(background_sync=False)
    store.apply(sj.ChangeSet().upsert("kinds", {"k": 1}, {column: value}))
    got = store.read(f"SELECT {column} FROM kinds WHERE k = 1")[0][0]
    assert got == back and type(got) is type(back)
    assert store.sync_now().ok
    (shared,) = target_rows(paths.target, f"SELECT {column} FROM kinds WHERE k = 1")[0]
    expected = back.hex() if isinstance(back, bytes) else back
    assert shared == expected


def test_integer_keys_of_every_range(open_store):
    store = open_store(background_sync=False)
    for k in (I64_MIN, -1, 0, I64_MAX):
        store.apply(sj.ChangeSet().insert("kinds", {"k": k}, {"t": str(k)}))
    assert store.read("SELECT k FROM kinds ORDER BY k") == [(I64_MIN,), (-1,), (0,), (I64_MAX,)]


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_integers_out_of_64_bit_range_are_refused_naming_the_column(open_store, value):
    store = open_store(background_sync=False)
    with pytest.raises(OverflowError, match=r'column "i" of table "kinds"'):
        sj.ChangeSet().upsert("kinds", {"k": 1}, {"i": value})
    with pytest.raises(OverflowError, match=r'column "k"'):
        store.apply({"op": "upsert", "table": "kinds", "key": {"k": value}})
    assert store.journal_state().next_lsn == 1


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2026, 1, 1),
        dt.date(2026, 1, 1),
        decimal.Decimal("1.5"),
        [1, 2],
        {"a": 1},
        (1,),
        object(),
        1j,
        memoryview(b"x"),
    ],
)
def test_other_types_are_type_errors_naming_the_column(open_store, value):
    store = open_store(background_sync=False)
    with pytest.raises(TypeError, match=r'column "t" of table "kinds": a value of type'):
        sj.ChangeSet().upsert("kinds", {"k": 1}, {"t": value})
    with pytest.raises(TypeError, match=r'column "t"'):
        store.apply([{"op": "insert", "table": "kinds", "key": {"k": 1}, "values": {"t": value}}])
    assert store.journal_state().next_lsn == 1
    assert store.read("SELECT count(*) FROM kinds") == [(0,)]


def test_column_names_must_be_strings_and_keys_dicts():
    with pytest.raises(TypeError, match="not a str"):
        sj.ChangeSet().upsert("kinds", {1: 1})
    with pytest.raises(TypeError, match="must be a dict"):
        sj.ChangeSet().upsert("kinds", [("k", 1)])


def test_query_parameters_are_converted_the_same_way(open_store):
    store = open_store(background_sync=False)
    store.apply(sj.ChangeSet().upsert("kinds", {"k": 1}, {"b": b"\x01"}))
    assert store.read("SELECT k FROM kinds WHERE b = ?", (b"\x01",)) == [(1,)]
    with pytest.raises(TypeError, match="parameter 1"):
        store.read("SELECT k FROM kinds WHERE k = ?", (dt.date.today(),))
