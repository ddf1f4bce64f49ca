"""SPANN's one-query search in one kernel call (``vecdb.index.spann.one_query``) against the
general path it shortens (``BaseIndex.search_trusted``: route, plan and scan in two calls,
the id map and distance finish in numpy): the same ids and the same distances, bit for bit,
for float and SQ8 postings, both one-call routes, every metric, filters, tombstones and
ids that are not slots; and where it cannot answer it hands the query to the general path
(a corrupt posting still raises DataLossError)."""
from __future__ import annotations

from pathlib import Path

import lmdb
import numpy as np
import pytest

from vecdb.errors import DataLossError
from vecdb.index import SPANN
from vecdb.index.allow import as_allow
from vecdb.index.base import BaseIndex
from vecdb.index.spann import routing
from vecdb.index.spann.routing import CODED_ROUTE_DIM

DIM = 20


def mixture(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    centres = np.random.default_rng(99).standard_normal((30, dim)).astype(np.float32) * 3
    rng = np.random.default_rng(seed)
    return (centres[rng.integers(0, 30, n)] + rng.standard_normal((n, dim))).astype(np.float32)


def general(index: SPANN, q: np.ndarray, k: int, allow: object, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """The general path's answer for the one query ``q``."""
    got = BaseIndex.search_trusted(index, q[None].copy(), k, None if allow is None else as_allow(allow), None,
                                   index.resolve_params(params))
    return got.ids, got.distances


@pytest.mark.parametrize("codes", [None, "sq8"])
@pytest.mark.parametrize("route", ["exact", "groups", "coded"])
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_the_one_call_search_equals_the_general_path(metric: str, route: str, codes: str | None) -> None:
    dim = CODED_ROUTE_DIM if route == "coded" else DIM            # the exact route over long rows ranks codes first
    x = mixture(3000, 1, dim)
    q = mixture(25, 2, dim)
    ids = np.arange(3000, dtype=np.int64) * 3 + 7 if metric == "ip" else None   # ids that are not slots
    extra = {"exact_heads": 0, "head_route": "groups"} if route == "groups" else {}
    index = SPANN(dim, metric, posting_limit=48, head_size=12, background=False, codes=codes, **extra)
    try:
        index.train(x)
        index.add(x, ids)
        stored = np.arange(3000) * 3 + 7 if ids is not None else np.arange(3000)
        index.remove(stored[::9])                              # tombstones both paths skip
        assert (index.n_heads > index.exact_heads) == (route == "groups")
        graph = index._disk.graph
        assert (routing.head_codes_of(graph, graph.stored_rows()[0]) is not None) == (route == "coded")
        cases = [({}, None), ({"max_postings": 3}, None), ({"max_postings": 12, "rerank": 30}, stored[1::4]),
                 ({"max_postings": 4096, "eps2": 1e9}, None)]
        for params, allow in cases:
            for k in (1, 10, 40):
                for row in q:
                    lean = index._search_lean(row, k, None if allow is None else as_allow(allow),
                                              index.resolve_params(params))
                    assert lean is not None                    # the one-call path took it
                    got = index.search(row, k, allow=allow, **params)
                    want_ids, want_d = general(index, row, k, allow, params)
                    np.testing.assert_array_equal(lean.ids, want_ids)
                    np.testing.assert_array_equal(lean.distances, want_d)
                    np.testing.assert_array_equal(got.ids, want_ids)
                    np.testing.assert_array_equal(got.distances, want_d)
                    assert not np.isin(got.ids, stored[::9]).any()
                    if allow is not None:
                        assert np.isin(got.ids[got.ids >= 0], allow).all()
    finally:
        index.close()


def test_a_query_the_one_call_path_cannot_answer_goes_the_general_way(tmp_path: Path) -> None:
    x = mixture(800, 3)
    index = SPANN(DIM, "l2", tmp_path / "s", posting_limit=64, head_size=16, background=False)
    index.train(x)
    index.add(x)
    p = index.resolve_params({"max_postings": 4096, "eps2": 1e9})
    assert index._search_lean(x[0], 5, None, p) is not None
    index.close()
    env = lmdb.open(str(tmp_path / "s"), max_dbs=16)
    with env.begin(write=True) as txn:                         # flip a bit of the first posting's last word
        handle = env.open_db(b"spann.postings", txn=txn)
        key, value = next(iter(txn.cursor(handle).iternext()))
        value = bytes(value)
        txn.put(bytes(key), value[:-1] + bytes([value[-1] ^ 0x80]), db=handle)
    env.close()
    again = SPANN(DIM, "l2", tmp_path / "s")
    try:
        assert again._search_lean(x[0], 5, None, again.resolve_params({"max_postings": 4096, "eps2": 1e9})) is None
        with pytest.raises(DataLossError):                     # the general path names the posting
            again.search(x[0], 5, max_postings=4096, eps2=1e9)
        assert again.search(x[:0], 5).ids.shape == (0, 5)
    finally:
        again.close()


def test_postings_longer_than_the_file_when_it_was_mapped_are_read_in_one_call(tmp_path: Path) -> None:
    """Every posting here outgrows the whole file the index mapped when it was made: the
    one-call path maps the file again and answers (it used to hand every query to the
    general path, ~3x slower, for good)."""
    dim = 256
    x = mixture(3000, 6, dim)
    index = SPANN(dim, "l2", tmp_path / "s", posting_limit=256, head_size=120, background=False)
    try:
        index.train(x)
        index.add(x)
        assert index.posting_sizes().min() * dim * 4 > 64 * 1024     # each record ~3x the new file or more
        p = index.resolve_params({"max_postings": 2})
        for row in mixture(5, 7, dim):
            got = index._search_lean(row, 10, None, p)
            assert got is not None
            want_ids, want_d = general(index, row, 10, None, {"max_postings": 2})
            np.testing.assert_array_equal(got.ids, want_ids)
            np.testing.assert_array_equal(got.distances, want_d)
    finally:
        index.close()


def test_the_remembered_route_follows_the_route_settings() -> None:
    x = mixture(3000, 4)
    q = mixture(10, 5)
    index = SPANN(DIM, "l2", posting_limit=48, head_size=12, background=False, codes="sq8")
    try:
        index.train(x)
        index.add(x)
        for exact_heads, head_route in ((4096, "groups"), (0, "groups"), (0, "graph"), (4096, "groups")):
            index.exact_heads, index.head_route = exact_heads, head_route
            for row in q:
                got = index.search(row, 10, max_postings=6)
                want_ids, want_d = general(index, row, 10, None, {"max_postings": 6})
                np.testing.assert_array_equal(got.ids, want_ids)
                np.testing.assert_array_equal(got.distances, want_d)
            taken = index._search_lean(q[0], 10, None, index.resolve_params({"max_postings": 6}))
            assert (taken is None) == (head_route == "graph" and exact_heads == 0)   # the graph route: two calls
    finally:
        index.close()


def test_the_remembered_heads_follow_every_commit() -> None:
    """The lean path keeps the heads its last read snapshot found; each commit (adds that
    split postings, removals) gives a new snapshot, so a search right after one answers from
    the new state: new points found, removed ones gone, the same as the general path."""
    x = mixture(1200, 6)
    index = SPANN(DIM, "l2", posting_limit=48, head_size=12, background=False)
    try:
        index.train(x[:600])
        index.add(x[:600])
        p = {"max_postings": 4096, "eps2": 1e9}
        assert index.search(x[0], 1, **p).ids[0, 0] == 0
        states = {id(index._lean_heads[1])}
        for start in range(600, 1200, 150):                   # enough to split postings
            index.add(x[start:start + 150], np.arange(start, start + 150))
            got = index.search(x[start + 149], 1, **p)
            assert got.ids[0, 0] == start + 149
            states.add(id(index._lean_heads[1]))
            index.remove([start + 149])
            got = index.search(x[start + 149], 3, **p)
            want_ids, want_d = general(index, x[start + 149], 3, None, p)
            assert start + 149 not in got.ids
            np.testing.assert_array_equal(got.ids, want_ids)
            np.testing.assert_array_equal(got.distances, want_d)
        assert len(states) >= 4
    finally:
        index.close()
