"""Filter grammar validation, payload validation, and payload-index evaluation against a
brute-force reference, including removals, re-adds, compaction and save/load."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vecdb.errors import InvalidArgumentError
from hypothesis import given, settings
from hypothesis import strategies as st

from vecdb.filters import (PayloadIndex, _json_like, check_payload, flatten, load_payload_index, parse_filter,
                           save_payload_index)
from vecdb.storage.arrays import decode_json, encode_checked_json, encode_json


@pytest.mark.parametrize("bad, message", [
    ([{"a": 1}], "must be a dict"),
    ({"$and": {"a": 1}}, "non-empty list"),
    ({"$or": []}, "non-empty list"),
    ({"$not": [{"a": 1}]}, "one filter dict"),
    ({"$xor": [{"a": 1}]}, "unknown filter operator"),
    ({"a": {"between": [1, 2]}}, "unknown operator"),
    ({"a": {}}, "empty condition"),
    ({"a": [1, 2]}, "use {'in'"),
    ({"a": {"in": 3}}, "takes a list"),
    ({"a": {"gt": True}}, "number or a string"),
    ({"a": {"gt": 1, "gte": 2}}, "at most one lower"),
    ({"a": {"gt": 1, "lt": "z"}}, "mix numbers and strings"),
    ({"a": {"eq": None}}, "string, number or bool"),
    ({"a": float("nan")}, "NaN"),
    ({"": 1}, "non-empty strings"),
    ({"a": {"in": [{"x": 1}]}}, "string, number or bool"),
])
def test_malformed_filters_are_rejected(bad: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        parse_filter(bad)


@pytest.mark.parametrize("bad", [{"s": {1, 2}}, {"b": b"raw"}, {"f": float("inf")}, {1: "x"}, {"o": object()}, "text",
                                 {"deep": {"er": [1, {"x": float("nan")}]}}])
def test_non_json_payloads_are_rejected(bad: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        check_payload(bad)


def test_payload_normalisation() -> None:
    got = check_payload({"n": np.int64(3), "f": np.float32(0.5), "b": np.bool_(True), "t": (1, 2), "x": None})
    assert got == {"n": 3, "f": 0.5, "b": True, "t": [1, 2], "x": None}
    assert type(got["n"]) is int and type(got["b"]) is bool


# ---- evaluation against brute force ----------------------------------------------------
WORDS = ["apple", "banana", "cherry", "date", "elder"]


def random_payload(rng: np.random.Generator) -> dict[str, Any] | None:
    if rng.random() < 0.1:
        return None
    p: dict[str, Any] = {}
    if rng.random() < 0.8:
        p["n"] = int(rng.integers(0, 20))
    if rng.random() < 0.6:
        p["x"] = float(np.round(rng.uniform(-1, 1), 2))
    if rng.random() < 0.7:
        p["w"] = str(rng.choice(WORDS))
    if rng.random() < 0.5:
        p["flag"] = bool(rng.random() < 0.5)
    if rng.random() < 0.5:
        p["tags"] = [str(t) for t in rng.choice(WORDS, size=int(rng.integers(0, 3)))]
    if rng.random() < 0.3:
        p["n_as_bool"] = True if rng.random() < 0.5 else 1
    if rng.random() < 0.3:
        p["meta"] = {"depth": int(rng.integers(0, 3))}
    return p


def values(p: dict[str, Any] | None, path: str) -> list[Any]:
    v: Any = p
    for part in path.split("."):
        if not isinstance(v, dict) or part not in v:
            return []
        v = v[part]
    return v if isinstance(v, list) else [v]


def kind(v: Any) -> str:
    return "b" if isinstance(v, bool) else "n" if isinstance(v, (int, float)) else "s"


def reference(p: dict[str, Any] | None, f: dict[str, Any]) -> bool:
    for key, cond in f.items():
        if key == "$and":
            ok = all(reference(p, g) for g in cond)
        elif key == "$or":
            ok = any(reference(p, g) for g in cond)
        elif key == "$not":
            ok = not reference(p, cond)
        else:
            vs = values(p, key)
            cond = cond if isinstance(cond, dict) else {"eq": cond}
            ok = True
            for op, arg in cond.items():
                same = [v for v in vs if kind(v) == kind(arg if op != "in" else (arg[0] if arg else 0))]
                if op == "eq":
                    ok &= any(v == arg for v in vs if kind(v) == kind(arg))
                elif op == "ne":
                    ok &= not any(v == arg for v in vs if kind(v) == kind(arg))
                elif op == "in":
                    ok &= any(v == a and kind(v) == kind(a) for v in vs for a in arg)
                elif op == "gt":
                    ok &= any(v > arg for v in same)
                elif op == "gte":
                    ok &= any(v >= arg for v in same)
                elif op == "lt":
                    ok &= any(v < arg for v in same)
                elif op == "lte":
                    ok &= any(v <= arg for v in same)
        if not ok:
            return False
    return True


FILTERS: list[dict[str, Any]] = [
    {"n": 3}, {"n": 3.0}, {"n": {"ne": 3}}, {"n": {"in": [1, 2, 19]}}, {"n": {"gte": 5, "lt": 9}}, {"n": {"gt": 15}},
    {"x": {"lte": 0.0}}, {"x": {"gt": -0.5, "lte": 0.5}}, {"w": "cherry"}, {"w": {"gt": "banana", "lte": "date"}},
    {"w": {"lt": "c"}}, {"flag": True}, {"flag": False}, {"tags": "apple"}, {"tags": {"in": ["date", "elder"]}},
    {"n_as_bool": True}, {"n_as_bool": 1}, {"meta.depth": 2}, {"w": {"in": []}},
    {"$and": [{"n": {"lt": 10}}, {"w": {"in": ["apple", "banana"]}}]},
    {"$or": [{"flag": True}, {"x": {"gt": 0.9}}, {"tags": "cherry"}]},
    {"$not": {"w": "apple"}}, {"$not": {"$or": [{"n": 1}, {"n": 2}]}},
    {"n": {"gte": 2}, "w": "date"}, {}, {"missing": 1}, {"$not": {"missing": 1}},
]


def check_all(idx: PayloadIndex, store: dict[int, Any], live: np.ndarray) -> None:
    for f in FILTERS:
        node = parse_filter(f)
        assert node is not None
        got = set(np.flatnonzero(idx.evaluate(node, live)).tolist())
        want = {i for i, p in store.items() if reference(p, f)}
        assert got == want, f


def test_payload_index_matches_brute_force_through_changes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1338)
    n = 3000
    idx = PayloadIndex()
    idx.reserve(n)
    live = np.zeros(n, bool)
    store: dict[int, Any] = {}
    for i in range(2000):
        p = random_payload(rng)
        idx.add(i, p)
        store[i] = p
        live[i] = True
    idx.compact(force=True)
    check_all(idx, store, live)
    # replace some, delete some, add new ones: stale entries must never match
    for i in rng.choice(2000, 600, replace=False).tolist():
        idx.remove(np.array([i]))
        if rng.random() < 0.5:
            p = random_payload(rng)
            idx.add(i, p)
            store[i] = p
        else:
            del store[i]
            live[i] = False
    for i in range(2000, n):
        p = random_payload(rng)
        idx.add(i, p)
        store[i] = p
        live[i] = True
    check_all(idx, store, live)  # with an unsorted tail
    idx.compact()
    check_all(idx, store, live)
    save_payload_index(idx, tmp_path / "p")
    again = load_payload_index(tmp_path / "p")
    check_all(again, store, live)
    again.compact(force=True)
    check_all(again, store, live)


@pytest.mark.parametrize("bad, message", [
    ({"n": int("9" * 400)}, "float64 range"),
    ({"n": -(2 ** 1030)}, "float64 range"),
    ({"a": [1, {"n": np.int64(3), "m": 2 ** 1100}]}, "float64 range"),
    ({"s": "ok \ud800"}, "lone surrogate"),
    ({"\udfff": 1}, "key with a lone surrogate"),
    ({"l": ["fine", "\udc00"]}, "lone surrogate"),
])
def test_payloads_the_index_or_utf8_cannot_hold_are_rejected(bad: Any, message: str) -> None:
    """Rejected before any write: indexing them after the commit would fail (issue 9, item 1)."""
    with pytest.raises(InvalidArgumentError, match=message):
        check_payload(bad)


def test_large_but_representable_numbers_and_unicode_are_accepted() -> None:
    ok = {"n": 2 ** 1000, "m": -(10 ** 300), "s": "caf\u00e9 \U0001f600", "\u00e9": 1}
    assert check_payload(ok) == ok
    index = PayloadIndex()
    index.reserve(1)
    index.add(0, ok)
    assert list(index.evaluate(parse_filter({"n": {"gt": 1e300}}), np.ones(1, bool))) == [True]


def test_filter_values_outside_float64_are_invalid_arguments() -> None:
    for bad in ({"n": int("9" * 400)}, {"n": {"in": [1, 10 ** 400]}}, {"n": {"lt": -(10 ** 400)}}):
        with pytest.raises(InvalidArgumentError, match="float64 range"):
            parse_filter(bad)


def test_in_matches_brute_force_on_sorted_run_tail_and_stale_entries() -> None:
    """The vectorised ``in`` (binary searches of all values at once) agrees with a scan,
    with duplicates in the column, entries in the unsorted tail and removed points."""
    rng = np.random.default_rng(5)
    n = 6000
    values = [f"v{int(v)}" for v in rng.integers(0, 500, n)]
    numbers = rng.integers(0, 300, n).astype(float)
    index = PayloadIndex()
    index.reserve(n)
    for i in range(5000):
        index.add(i, {"s": values[i], "x": float(numbers[i])})
    index.compact(force=True)
    for i in range(5000, n):  # stays in the tail
        index.add(i, {"s": values[i], "x": float(numbers[i])})
    removed = rng.choice(n, 700, replace=False)
    index.remove(removed)
    live = np.ones(n, bool)
    live[removed] = False
    for _ in range(5):
        want_s = [f"v{int(v)}" for v in rng.integers(0, 600, int(rng.integers(1, 400)))]
        want_x = rng.integers(-5, 305, int(rng.integers(1, 200))).tolist()
        got = index.evaluate(parse_filter({"s": {"in": want_s}}), live)
        expect = np.array([live[i] and values[i] in set(want_s) for i in range(n)])
        np.testing.assert_array_equal(got, expect)
        got = index.evaluate(parse_filter({"x": {"in": want_x}}), live)
        expect = np.array([live[i] and numbers[i] in set(map(float, want_x)) for i in range(n)])
        np.testing.assert_array_equal(got, expect)


def test_filter_size_counts_conditions_and_values() -> None:
    from vecdb.filters import filter_size

    assert filter_size({"a": 1}) == (1, 0)
    assert filter_size({"$or": [{"a": {"in": [1, 2, 3]}}, {"b": {"gt": 1, "lt": 5}}]}) == (6, 3)
    deep: dict[str, Any] = {}
    for _ in range(10_000):  # iterative: any nesting is safe to measure
        deep = {"$not": deep}
    assert filter_size(deep) == (10_000, 0)
    assert filter_size({"a": {"in": list(range(10 ** 6))}}, stop_at=10)[1] <= 10 ** 6


_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 80), max_value=2 ** 80)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                     max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=6), _json, max_size=5))
def test_payload_fast_paths_agree_with_the_general_ones(payload: dict[str, Any]) -> None:
    """Flat payloads skip the recursive check and go through orjson: the result, the stored
    bytes once decoded, and the payload index entries equal those of the general paths."""
    checked = check_payload(payload)
    assert checked == _json_like(payload, 0)
    assert decode_json(encode_checked_json(checked)) == decode_json(encode_json(checked)) == checked
    fast, general = PayloadIndex(), PayloadIndex()
    fast.reserve(1)
    general.reserve(1)
    fast.add(0, checked)
    for field, kind, value in flatten(checked):
        general._column(field, kind).append(value, 0, 0)
    assert sorted(fast.columns) == sorted(general.columns)
    for key, col in fast.columns.items():
        got, want = col.tail(), general.columns[key].tail()
        assert sorted(zip(got[0].tolist(), got[1].tolist())) == sorted(zip(want[0].tolist(), want[1].tolist()))
