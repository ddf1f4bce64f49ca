"""The writer's structures grow without copying what they hold (issue 12, the write path at
storage speed): staged vectors live in segments that are written once and let go (and
written again) when the indexer has taken their rows; the payload index keeps a batch's
tail entries as array chunks, merges its tail into the sorted run instead of re-sorting,
recounts its stale entries only after a removal, and takes a batch's columns as the payload
check made them. Each is checked against a plain oracle through random sequences of writes."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vecdb import filters
from vecdb.filters import PayloadIndex, parse_filter
from vecdb.index import FlatIndex
from vecdb.index import staging as staging_mod
from vecdb.index.staging import Staging

DIM = 5


@pytest.fixture
def tiny_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments of 8 rows (or one batch when larger), so a few small batches span many."""
    monkeypatch.setattr(staging_mod, "_MIN_ROWS", 4)
    monkeypatch.setattr(staging_mod, "SEGMENT_BYTES", 8 * 4 * DIM)


def _exact(logical: dict[int, np.ndarray], queries: np.ndarray, k: int, allow: np.ndarray | None) -> np.ndarray:
    """Exact distances of the top k over the logical point set (restricted to ``allow``)."""
    flat = FlatIndex(DIM, "l2")
    ids = np.array(sorted(logical), np.int64)
    if len(ids):
        flat.add(np.stack([logical[i] for i in ids.tolist()]), ids)
    return flat.search(queries, k, allow=allow).distances


# each op: ("stage", rows, replaced) / ("unstage", count) / ("step", budget)
_OPS = st.lists(st.one_of(
    st.tuples(st.just("stage"), st.integers(0, 23), st.integers(0, 4)),
    st.tuples(st.just("unstage"), st.integers(1, 4)),
    st.tuples(st.just("step"), st.integers(1, 30)),
), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), ops=_OPS, k=st.integers(1, 9))
def test_segmented_staging_answers_like_a_dict_oracle(tiny_segments: None, seed: int, ops: list[Any],
                                                      k: int) -> None:
    """Batches staged into many small segments, rows replaced, deleted and moved into the
    index in between: every search (all rows, and through an allow-set) answers exactly like
    a scan of the logical state, and every staged row is where it was written (never copied)."""
    rng = np.random.default_rng(seed)
    index = FlatIndex(DIM, "l2")
    staging = Staging(DIM, "l2")
    logical: dict[int, np.ndarray] = {}
    next_id = 0
    queries = rng.normal(size=(3, DIM)).astype(np.float32)
    for op in ops:
        if op[0] == "stage":
            fresh, replace = op[1], min(op[2], len(logical))
            replaced = rng.choice(sorted(logical), replace, replace=False).astype(np.int64) if replace \
                else np.zeros(0, np.int64)
            ids = np.concatenate([replaced, np.arange(next_id, next_id + fresh)]).astype(np.int64)
            next_id += fresh
            x = rng.normal(size=(len(ids), DIM)).astype(np.float32)
            staging.stage(x, ids, stale=replaced, prepared=staging.prepare(x, ids, known=replaced))
            logical.update(zip(ids.tolist(), x))
        elif op[0] == "unstage" and logical:
            gone = rng.choice(sorted(logical), min(op[1], len(logical)), replace=False).astype(np.int64)
            staging.unstage(gone)
            staging.hide(gone)
            for i in gone.tolist():
                del logical[i]
        elif op[0] == "step":
            staging.step(index, op[1])
        allow = np.array(sorted(logical)[::2], np.int64) if logical else None
        for flt in (None, allow):
            got = staging.search_trusted(index, queries, k, flt, None, {})
            np.testing.assert_allclose(got.distances, _exact(logical, queries, k, flt), rtol=1e-5, atol=1e-5)
            for row in got.ids:   # each answer: distinct ids of the logical state
                hit = row[row >= 0].tolist()
                assert len(set(hit)) == len(hit) and set(hit) <= set(logical)
    while staging.busy:
        staging.step(index, 7)
    assert sorted(index.ids.tolist()) == sorted(logical)
    assert np.allclose(index.search(queries, k).distances, _exact(logical, queries, k, None), atol=1e-5)


def test_staged_rows_are_written_once_and_their_segments_let_go(tiny_segments: None) -> None:
    """A writer far ahead of the indexer: each batch goes into the last segment or a new
    one, the arrays holding staged rows are never replaced (no copy of what is staged), and
    once the indexer has taken a segment's rows the next write lets it go."""
    rng = np.random.default_rng(7)
    staging = Staging(DIM, "l2")
    index = FlatIndex(DIM, "l2")
    written: list[tuple[int, np.ndarray, np.ndarray]] = []   # (position, the array it went into, the row)
    for b in range(40):
        x = rng.normal(size=(5, DIM)).astype(np.float32)
        staging.stage(x, np.arange(5 * b, 5 * b + 5), stale=np.zeros(0, np.int64))
        segs = staging._vecs   # noqa: SLF001 - the test inspects where rows lie
        written.append((5 * b, segs.arrays[-1], x[0]))
        for position, arr, row in written:   # every staged row still lies in the array it was written to
            i = [a is arr for a in segs.arrays].index(True)
            assert np.array_equal(arr[position - segs.starts[i]], row)
            assert np.array_equal(segs.take(np.array([position]), DIM)[0], row)
    assert len(staging._vecs.arrays) > 10   # noqa: SLF001
    while len(staging) > 6:
        staging.step(index, 13)
    staging.stage(rng.normal(size=(1, DIM)).astype(np.float32), np.array([1000]), stale=np.zeros(0, np.int64))
    segs = staging._vecs   # noqa: SLF001
    assert len(segs.arrays) <= 3 and segs.nbytes() <= 3 * 8 * 4 * DIM   # the taken segments are gone
    while staging.busy:
        staging.step(index, 13)
    assert len(index) == 201


def _matches(payloads: dict[int, dict[str, Any]], field: str, lo: float) -> set[int]:
    return {i for i, p in payloads.items() if field in p and p[field] >= lo}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), rounds=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 40)),
                                                   min_size=1, max_size=25))
def test_payload_compaction_keeps_its_bound_without_recounting_every_write(monkeypatch: pytest.MonkeyPatch,
                                                                           seed: int,
                                                                           rounds: list[tuple[int, int]]) -> None:
    """Writes of new points (no removal: the stale count is not recounted) and of removals,
    each followed by ``compact`` as a writer does: the stale entries of every column's run
    stay below its re-sort bound, and filters answer like a dict of the live payloads."""
    monkeypatch.setattr(filters, "_MIN_TAIL", 4)
    rng = np.random.default_rng(seed)
    index = PayloadIndex()
    index.reserve(4096)
    payloads: dict[int, dict[str, Any]] = {}
    next_id = 0
    for added, removed in rounds:
        gone = rng.choice(sorted(payloads), min(removed, len(payloads)), replace=False).astype(np.int64) \
            if payloads and removed else np.zeros(0, np.int64)
        index.remove(gone)
        for i in gone.tolist():
            del payloads[i]
        ids = np.arange(next_id, next_id + added, dtype=np.int64)
        next_id += added
        batch = [{"x": float(v)} if v % 3 else {"x": float(v), "y": float(v % 7)} for v in rng.integers(0, 50, added)]
        index.add_many(ids, batch)
        payloads.update(zip(ids.tolist(), batch))
        index.compact()
        for col in index.columns.values():
            stale = int((col.epochs != index.epoch[col.iids]).sum())
            assert stale < max(filters._MIN_TAIL, len(col.iids) // 4)
        live = np.zeros(len(index.epoch), bool)
        live[list(payloads)] = True
        for field in ("x", "y"):
            got = index.evaluate(parse_filter({field: {"gte": 3.0}}), live)
            assert set(np.flatnonzero(got).tolist()) == _matches(payloads, field, 3.0)


def test_a_writer_beside_a_keeping_up_indexer_reuses_the_segments_let_go(tiny_segments: None) -> None:
    """Steady state (the indexer takes each batch soon after it is staged): the segments let
    go are written again, so the writer cycles through a few arrays, and every search and
    the index still answer like the logical state."""
    rng = np.random.default_rng(9)
    staging = Staging(DIM, "l2")
    index = FlatIndex(DIM, "l2")
    logical: dict[int, np.ndarray] = {}
    seen: list[np.ndarray] = []   # every array that held staged rows (kept alive: told apart by identity)
    queries = rng.normal(size=(2, DIM)).astype(np.float32)
    for b in range(60):
        x = rng.normal(size=(6, DIM)).astype(np.float32)
        ids = np.arange(6 * b, 6 * b + 6)
        staging.stage(x, ids, stale=np.zeros(0, np.int64), prepared=staging.prepare(x, ids, known=ids[:0]))
        logical.update(zip(ids.tolist(), x))
        seen += [a for a in staging._vecs.arrays if not any(a is s for s in seen)]   # noqa: SLF001
        got = staging.search_trusted(index, queries, 4, None, None, {})
        np.testing.assert_allclose(got.distances, _exact(logical, queries, 4, None), rtol=1e-5, atol=1e-5)
        while len(staging) > 6:   # the indexer stays one batch behind
            staging.step(index, 4)
    assert len(seen) <= 4   # 60 batches, one segment's worth each, went through a handful of arrays
    while staging.busy:
        staging.step(index, 6)
    assert sorted(index.ids.tolist()) == sorted(logical)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), steps=st.lists(st.sampled_from(["one", "batch", "remove", "compact", "save"]),
                                                  min_size=1, max_size=30))
def test_payload_tails_of_batches_and_single_points_answer_like_a_dict(tmp_path_factory: pytest.TempPathFactory,
                                                                       seed: int, steps: list[str]) -> None:
    """The tail of a column holds batches as array chunks and single points as lists: any
    interleaving of the two, removals, re-sorts and a save / load answers every filter like
    a dict of the live payloads (numbers, strings, bools)."""
    from vecdb.filters import load_payload_index, save_payload_index

    rng = np.random.default_rng(seed)
    index = PayloadIndex()
    index.reserve(2048)
    payloads: dict[int, dict[str, Any]] = {}
    next_id = 0

    def payload() -> dict[str, Any]:
        v = int(rng.integers(0, 20))
        return {"n": v, "s": f"k{v % 5}", "b": bool(v % 2)}

    for step in steps:
        if step == "one":
            p = payload() if rng.random() < 0.7 else {"n": float(rng.integers(0, 20)), "extra": ["x", 1]}
            index.add(next_id, p)
            payloads[next_id] = p
            next_id += 1
        elif step == "batch":
            batch = [payload() for _ in range(int(rng.integers(1, 30)))]
            index.add_many(np.arange(next_id, next_id + len(batch), dtype=np.int64), batch)
            payloads.update(zip(range(next_id, next_id + len(batch)), batch))
            next_id += len(batch)
        elif step == "remove" and payloads:
            gone = rng.choice(sorted(payloads), min(len(payloads), 5), replace=False).astype(np.int64)
            index.remove(gone)
            for i in gone.tolist():
                del payloads[i]
        elif step == "compact":
            index.compact(force=bool(rng.random() < 0.5))
        elif step == "save":
            folder = tmp_path_factory.mktemp("payidx") / "p"
            save_payload_index(index, folder)
            index = load_payload_index(folder)
        live = np.zeros(len(index.epoch), bool)
        live[list(payloads)] = True
        for spec, want in ((({"n": {"gte": 10}}), lambda p: p["n"] >= 10),
                           ({"s": {"in": ["k1", "k3"]}}, lambda p: p.get("s") in ("k1", "k3")),
                           ({"b": True}, lambda p: p.get("b") is True),
                           ({"extra": "x"}, lambda p: "x" in p.get("extra", []))):
            got = index.evaluate(parse_filter(spec), live)
            assert set(np.flatnonzero(got).tolist()) == {i for i, p in payloads.items() if want(p)}, spec


def test_a_batch_is_split_into_payload_columns_once() -> None:
    """``check_payloads_shaped`` hands the payload index the columns it made while checking a
    uniform batch (indexing with them answers as indexing without), and none when it had to
    convert payloads (numpy scalars, nesting), whose converted values the index must take."""
    from vecdb.filters import check_payloads_shaped

    uniform = [{"n": i % 7, "s": f"v{i % 3}"} for i in range(50)]
    pays, shape = check_payloads_shaped(uniform)
    assert shape is not None and pays == uniform
    with_shape, without = PayloadIndex(), PayloadIndex()
    for index in (with_shape, without):
        index.reserve(50)
    with_shape.add_many(np.arange(50), pays, shape)
    without.add_many(np.arange(50), pays)
    live = np.ones(50, bool)
    for spec in ({"n": {"gte": 3}}, {"s": "v1"}, {"n": {"in": [0, 6]}}):
        np.testing.assert_array_equal(with_shape.evaluate(parse_filter(spec), live),
                                      without.evaluate(parse_filter(spec), live))
    for converted in ([{"n": np.int64(3)}, {"n": np.int64(4)}], [{"n": (1, 2)}, {"n": (3,)}]):
        pays, shape = check_payloads_shaped(converted)
        assert shape is None
        assert all(type(v) is not np.int64 and type(v) is not tuple for p in pays for v in p.values())
