"""SPANN posting records, format 3 (the Fletcher-style sums checked while a one-query search
scans) and format 2 (the multiply-xorshift checksum, still read): the checksum against a
plain-Python statement of it, every flipped byte or truncation raising DataLossError from
batched and one-query searches, an index written with format 2 (``tests/data/spann_v2``)
opened, searched, updated (its postings then mix both formats) and reopened, and the
one-query scan against FlatIndex."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import lmdb
from numba import njit
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vecdb.errors import DataLossError
from vecdb.index import SPANN, FlatIndex
from vecdb.index.spann import kernels, postings, records
from vecdb.kernels import dot_sums, int_dot
from vecdb.quant import SQ8

sys.path.insert(0, str(Path(__file__).parent / "data"))
import make_spann_v2  # noqa: E402 (the fixture's rows, made by the same code that wrote it)

FIXTURE = Path(__file__).parent / "data" / "spann_v2"
EVERYTHING = {"max_postings": 4096, "eps2": 1e9}   # every posting read: an exact search
_M64 = (1 << 64) - 1
#: dimensions whose SQ8 rows are whole steps of ``dot_sums`` (ranked and summed in one pass)
WHOLE_STEPS = st.sampled_from([32, 64, 96])


def reference_v3(body: bytes) -> int:
    """Format 3's checksum in plain Python: over the body's little-endian 4-byte words w_i,
    s1 = sum w_i and s2 = sum (i + 1) w_i mod 2^64, folded with the length by
    multiply-xorshift rounds."""
    words = np.frombuffer(body, "<u4").tolist()
    s1 = sum(words) & _M64
    s2 = sum((i + 1) * w for i, w in enumerate(words)) & _M64

    def mix(h: int, x: int) -> int:
        h = ((h ^ x) * 0xFF51AFD7ED558CCD) & _M64
        return h ^ (h >> 31)

    return mix(mix(mix(0x9E3779B97F4A7C15, len(body)), s1), s2)


def record(count: int, dim: int, seed: int, version: int = postings.VERSION) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    slots = rng.permutation(4 * count + 1)[:count].astype(np.int64)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    return postings.encode(slots, vectors, version=version), slots, vectors


def scan(raw: bytes, dim: int, q: np.ndarray, k: int = 5) -> tuple[int, np.ndarray, np.ndarray]:
    """(problem code, heap slots, heap distances) of the one-query check-and-scan of ``raw``."""
    hd, hs = np.full(k, np.inf, np.float32), np.full(k, -1, np.int64)
    live = np.arange(1 << 16, dtype=np.int64)
    problem, _ = records.check_scan_record(np.frombuffer(raw, np.uint8), dim, q, live, np.zeros(1, np.uint8), False,
                                           0, hd, hs)
    return int(problem), hs, hd


def checked(raw: bytes, dim: int) -> int:
    """The problem code ``check_records`` gives the one record ``raw``."""
    buf = np.frombuffer(raw, np.uint8)
    counts = np.zeros(1, np.int64)
    return int(records.check_records(buf, np.zeros(1, np.int64), np.array([len(raw)]), dim, 4, 0, counts)[1])


# ---- the checksum ------------------------------------------------------------------------
@pytest.mark.parametrize("count,dim", [(0, 8), (1, 1), (3, 20), (7, 24), (600, 4), (2, 1500)])
def test_format_3_checksum_is_the_stated_sums(count: int, dim: int) -> None:
    raw, _, _ = record(count, dim, count + dim)        # (600, 4): slots past a block; (2, 1500): rows past one
    body = raw[postings.HEADER_BYTES :]
    assert int.from_bytes(raw[4:6], "little") == 3 == postings.VERSION
    assert int.from_bytes(raw[16:24], "little") == reference_v3(body)
    assert int(records.checksum_v3(np.frombuffer(body, np.uint8), 0, len(body))) == reference_v3(body)
    assert scan(raw, dim, np.zeros(dim, np.float32))[0] == records.OK == checked(raw, dim)


def test_an_unknown_format_is_neither_written_nor_read() -> None:
    """Format 5 is unknown; format 4 exists for SQ8 postings only."""
    for version in (4, 5):
        with pytest.raises(ValueError):
            postings.encode(np.zeros(0, np.int64), np.zeros((0, 4), np.float32), version=version)
        raw, _, _ = record(3, 4, 0)
        foreign = raw[:4] + version.to_bytes(2, "little") + raw[6:]
        assert checked(foreign, 4) == records.FOREIGN == scan(foreign, 4, np.zeros(4, np.float32))[0]
    raw, _ = code_record(3, 4, 0)
    foreign = raw[:4] + (5).to_bytes(2, "little") + raw[6:]
    assert scan_code_runs([foreign], 4, np.zeros(4, np.float32), 5, np.arange(64), np.zeros(1, np.uint8),
                          False)[:2] == (0, records.FOREIGN)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(count=st.integers(1, 40), dim=st.integers(1, 40), seed=st.integers(0, 1000), where=st.floats(0, 1),
       bit=st.integers(0, 7), version=st.sampled_from([2, 3]))
def test_any_flipped_bit_of_a_body_fails_both_checks(count: int, dim: int, seed: int, where: float, bit: int,
                                                    version: int) -> None:
    raw, _, _ = record(count, dim, seed, version)
    at = postings.HEADER_BYTES + min(int(where * (len(raw) - postings.HEADER_BYTES)), len(raw) - postings.HEADER_BYTES - 1)
    bad = raw[:at] + bytes([raw[at] ^ (1 << bit)]) + raw[at + 1 :]
    q = np.ones(dim, np.float32)
    assert scan(raw, dim, q)[0] == records.OK == checked(raw, dim)
    assert scan(bad, dim, q)[0] == records.BAD_CHECKSUM == checked(bad, dim)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(count=st.integers(2, 30), dim=st.integers(1, 33), seed=st.integers(0, 1000))
def test_entries_swapped_fail_the_format_3_check(count: int, dim: int, seed: int) -> None:
    raw, slots, vectors = record(count, dim, seed)
    i, j = 0, count - 1
    order = np.arange(count)
    order[[i, j]] = order[[j, i]]
    body = bytearray(raw)                              # the header (and its checksum) of the unswapped record
    swapped = postings.encode(slots, vectors[order])[postings.HEADER_BYTES :]
    body[postings.HEADER_BYTES :] = swapped
    assert scan(bytes(body), dim, np.ones(dim, np.float32))[0] == records.BAD_CHECKSUM


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(count=st.integers(0, 60), dim=st.integers(1, 40), seed=st.integers(0, 1000), version=st.sampled_from([2, 3]))
def test_the_one_query_scan_ranks_every_entry(count: int, dim: int, seed: int, version: int) -> None:
    raw, slots, vectors = record(count, dim, seed, version)
    q = np.random.default_rng(seed + 1).standard_normal(dim).astype(np.float32)
    problem, hs, hd = scan(raw, dim, q, k=5)
    assert problem == records.OK
    d = ((vectors - q) ** 2).sum(1)
    want = np.argsort(d, kind="stable")[:5]
    got = hs[hs >= 0]                                  # a heap, not sorted: the caller sorts it
    assert len(got) == min(5, count)
    np.testing.assert_allclose(np.sort(hd[hs >= 0]), np.sort(d[want]), rtol=1e-4, atol=1e-4)
    assert set(got.tolist()) <= set(slots.tolist())


# ---- corrupt postings through the search -------------------------------------------------
def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    middle = np.random.default_rng(99).standard_normal((8, dim)).astype(np.float32) * 3
    rng = np.random.default_rng(seed)
    return (middle[rng.integers(0, 8, n)] + rng.standard_normal((n, dim))).astype(np.float32)


def rewrite_first_posting(path: Path, change: Any) -> None:
    env = lmdb.open(str(path), max_dbs=16)
    try:
        handle = env.open_db(b"spann.postings")
        with env.begin(write=True) as txn:
            key, value = next(iter(txn.cursor(handle).iternext()))
            txn.put(bytes(key), change(bytes(value)), db=handle)
    finally:
        env.close()


@pytest.mark.parametrize("dim", [24, 20])
@pytest.mark.parametrize("how", ["slot", "vector", "last", "truncate"])
def test_a_corrupt_format_3_posting_raises_data_loss_from_every_search(tmp_path: Path, dim: int, how: str) -> None:
    x = clustered(800, dim, 1)
    index = SPANN(dim, "l2", tmp_path / "s", posting_limit=64, head_size=16, background=False)
    index.train(x)
    index.add(x)
    index.close()
    header = postings.HEADER_BYTES
    changes = {
        "slot": lambda v: v[: header + 3] + bytes([v[header + 3] ^ 0x08]) + v[header + 4 :],
        "vector": lambda v: v[:-40] + bytes([v[-40] ^ 0x01]) + v[-39:],
        "last": lambda v: v[:-1] + bytes([v[-1] ^ 0x80]),
        "truncate": lambda v: v[: len(v) - 8],
    }
    rewrite_first_posting(tmp_path / "s", changes[how])
    again = SPANN(dim, "l2", tmp_path / "s")
    try:
        with pytest.raises(DataLossError):
            again.search(x[:30], 10, **EVERYTHING)               # a batch: checked while scanned in place
        for i in range(3):
            with pytest.raises(DataLossError):                   # one query: checked while scanned in place
                again.search(x[i], 10, **EVERYTHING)
    finally:
        again.close()


def rewrite_posting(path: Path, head: int, change: Any) -> None:
    env = lmdb.open(str(path), max_dbs=16)
    try:
        handle = env.open_db(b"spann.postings")
        with env.begin(write=True) as txn:
            txn.put(postings.key(head), change(bytes(txn.get(postings.key(head), db=handle))), db=handle)
    finally:
        env.close()


@pytest.mark.parametrize("where", ["first", "second run", "last"])
def test_a_corrupt_posting_in_any_run_of_a_one_query_scan_raises_naming_it(tmp_path: Path, where: str) -> None:
    """A one-query search checks and scans its records ``records.RUN`` per kernel call: a
    corrupt posting read first, first in the second run, or last raises DataLossError naming
    that posting; before the change the same search equals a batch's, work included."""
    dim = 16
    x = clustered(1500, dim, 3)
    index = SPANN(dim, "l2", tmp_path / "s", posting_limit=32, head_size=8, background=False)
    index.train(x)
    index.add(x)
    q = x[7] + np.float32(0.1)
    wanted, _, qlist = index._plan(index._disk, q[None], 10, index.resolve_params(EVERYTHING))
    order = wanted[qlist].tolist()                           # the postings in the order the scan reads them
    assert len(order) > 2 * records.RUN
    one, stats = index.search_with_stats(q, 10, **EVERYTHING)
    many, many_stats = index.search_with_stats(np.stack([q] * 5), 10, **EVERYTHING)   # a batch
    np.testing.assert_array_equal(one.ids[0], many.ids[0])
    assert stats.entries[0] == many_stats.entries[0] > 0 and stats.postings[0] == len(order)
    index.close()
    head = order[{"first": 0, "second run": records.RUN, "last": -1}[where]]
    rewrite_posting(tmp_path / "s", head, lambda v: v[:-40] + bytes([v[-40] ^ 0x02]) + v[-39:])
    again = SPANN(dim, "l2", tmp_path / "s", background=False)
    try:
        with pytest.raises(DataLossError, match=f"posting {head} fails its checksum"):
            again.search(q, 10, **EVERYTHING)
        with pytest.raises(DataLossError, match=f"posting {head} fails its checksum"):
            again.search(np.stack([q] * 2), 10, **EVERYTHING)     # a few queries: in place too
    finally:
        again.close()


def test_each_one_query_search_sees_the_writes_committed_before_it(tmp_path: Path) -> None:
    """Searches read through a reused (renewed) LMDB read transaction: a vector added or
    removed between two one-query searches is found by the second, or gone from it."""
    dim = 12
    x = clustered(600, dim, 5)
    index = SPANN(dim, "l2", tmp_path / "s", posting_limit=32, head_size=8, background=False)
    try:
        index.train(x)
        index.add(x[:500], np.arange(500))
        for i in range(500, 520):
            assert i not in index.search(x[i], 3, **EVERYTHING).ids[0]
            index.add(x[i : i + 1], np.array([i]))
            found = index.search(x[i], 3, **EVERYTHING)
            assert found.ids[0][0] == i and found.distances[0][0] == 0.0
            index.remove([i])
            assert i not in index.search(x[i], 3, **EVERYTHING).ids[0]
    finally:
        index.close()


# ---- an index written in format 2 --------------------------------------------------------
def formats(where: Path | SPANN) -> dict[int, int]:
    """Posting records by format, of the closed index at ``where`` or of an open index."""
    def count(txn: Any, handle: Any) -> dict[int, int]:
        versions = [int.from_bytes(bytes(v)[4:6], "little") for _, v in txn.cursor(handle).iternext()]
        return {v: versions.count(v) for v in set(versions)}

    if isinstance(where, SPANN):
        with where._space.read() as txn:
            return count(txn, where._pdb)
    env = lmdb.open(str(where), max_dbs=16, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return count(txn, env.open_db(b"spann.postings", txn=txn, create=False))
    finally:
        env.close()


def assert_exact(index: SPANN, x: np.ndarray, ids: np.ndarray, q: np.ndarray) -> None:
    flat = FlatIndex(x.shape[1])
    flat.add(x, ids)
    want = flat.search(q, 10)
    got = index.search(q, 10, **EVERYTHING)
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_allclose(got.distances, want.distances, rtol=1e-4, atol=1e-4)
    for i in range(0, len(q), 7):
        one = index.search(q[i], 10, **EVERYTHING)
        np.testing.assert_array_equal(one.ids[0], want.ids[i])


def test_an_index_written_in_format_2_is_read_updated_and_reopened(tmp_path: Path) -> None:
    path = tmp_path / "s"
    shutil.copytree(FIXTURE, path)
    x = make_spann_v2.rows()
    dim = make_spann_v2.DIM
    assert formats(path) == {2: formats(path)[2]}
    q = x[::9] + np.float32(0.25)
    index = SPANN(dim, "l2", path, background=False)
    try:
        assert len(index) == len(x) and index.n_heads > 1
        assert_exact(index, x, np.arange(len(x)), q)
        more = make_spann_v2.rows()[:60] + np.float32(0.5)         # rewrites some postings, in format 3
        index.add(more, np.arange(1000, 1060))
        index.remove(np.arange(0, 40))
        mixed = formats(index)
        assert mixed.get(2, 0) > 0 and mixed.get(3, 0) > 0
        keep = np.arange(40, len(x))
        all_x, all_ids = np.concatenate([x[keep], more]), np.concatenate([keep, np.arange(1000, 1060)])
        assert_exact(index, all_x, all_ids, q)
    finally:
        index.close()
    again = SPANN(dim, "l2", path, background=False)
    try:
        assert_exact(again, all_x, all_ids, q)
    finally:
        again.close()


def test_a_corrupt_format_2_posting_still_raises_data_loss(tmp_path: Path) -> None:
    path = tmp_path / "s"
    shutil.copytree(FIXTURE, path)
    rewrite_first_posting(path, lambda v: v[:-5] + bytes([v[-5] ^ 0x10]) + v[-4:])
    index = SPANN(make_spann_v2.DIM, "l2", path, background=False)
    x = make_spann_v2.rows()
    try:
        with pytest.raises(DataLossError):
            index.search(x[:20], 10, **EVERYTHING)
        with pytest.raises(DataLossError):
            index.search(x[0], 10, **EVERYTHING)
    finally:
        index.close()


# ---- the one-query path against FlatIndex ------------------------------------------------
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 300), dim=st.sampled_from([3, 8, 20, 33]), seed=st.integers(0, 10_000),
       metric=st.sampled_from(["l2", "ip", "cosine"]), k=st.integers(1, 12))
def test_one_query_searches_of_every_posting_equal_flat(n: int, dim: int, seed: int, metric: str, k: int) -> None:
    x = clustered(n, dim, seed)
    index = SPANN(dim, metric, posting_limit=32, head_size=8, background=False, min_train=1)
    try:
        index.train(x)
        index.add(x)
        flat = FlatIndex(dim, metric)
        flat.add(x)
        q = clustered(6, dim, seed + 1)
        want = flat.search(q, k)
        for i in range(len(q)):
            got = index.search(q[i], k, **EVERYTHING)
            np.testing.assert_allclose(got.distances[0], want.distances[i], rtol=1e-4, atol=1e-4)
            same = got.ids[0] == want.ids[i]
            assert same.mean() >= 0.8 or np.allclose(got.distances[0][~same], want.distances[i][~same], atol=1e-4)
    finally:
        index.close()


# ---- SQ8 postings scanned in place ---------------------------------------------------------
@pytest.mark.parametrize("metric,dim", [("l2", 24), ("ip", 24), ("l2", 22), ("cosine", 20)])
def test_sq8_one_query_in_place_equals_the_batched_scan(metric: str, dim: int) -> None:
    x = clustered(1500, dim, 5)
    index = SPANN(dim, metric, posting_limit=64, head_size=16, background=False, codes="sq8")
    try:
        index.train(x)
        index.add(x)
        index.remove(np.arange(0, 1500, 7))                    # tombstones the scans must skip
        q = clustered(12, dim, 6)
        for kw in ({"max_postings": 4}, {"max_postings": 16, "allow": np.arange(1, 1500, 3), "rerank": 25}, EVERYTHING):
            batched = index.search(q, 10, **kw)                 # several queries: records copied, checked, scanned
            for i in range(len(q)):
                one = index.search(q[i], 10, **kw)              # one query: in place, re-ranked with floats
                np.testing.assert_allclose(one.distances[0], batched.distances[i], rtol=1e-5, atol=1e-5)
                same = one.ids[0] == batched.ids[i]
                assert same.all() or np.allclose(one.distances[0][~same], batched.distances[i][~same], atol=1e-5)
                assert not np.isin(one.ids[0], np.arange(0, 1500, 7)).any()
        _, stats = index.search_with_stats(q[0], 10, max_postings=8)
        assert stats.rerank_bytes > 0 and stats.bytes_read > stats.rerank_bytes and stats.entries[0] > 0
    finally:
        index.close()


def closed_sq8_index(path: Path, dim: int) -> np.ndarray:
    """A closed SPANN index of SQ8 postings at ``path`` over 600 clustered rows (returned)."""
    x = clustered(600, dim, 7)
    index = SPANN(dim, "l2", path, posting_limit=64, head_size=16, background=False, codes="sq8")
    index.train(x)
    index.add(x)
    index.close()
    return x


def edit_records(path: Path, name: bytes, edit: Callable[[Any, Any], None]) -> None:
    """Change the records of sub-database ``name`` of the closed index at ``path``: ``edit``
    (write transaction, database handle), in one transaction."""
    env = lmdb.open(str(path), max_dbs=16)
    try:
        handle = env.open_db(name)
        with env.begin(write=True) as txn:
            edit(txn, handle)
    finally:
        env.close()


@pytest.mark.parametrize("dim", [24, 22])
@pytest.mark.parametrize("where", ["code", "vector record"])
def test_a_corrupt_sq8_posting_or_vector_raises_from_a_one_query_search(tmp_path: Path, dim: int, where: str) -> None:
    x = closed_sq8_index(tmp_path / "s", dim)

    def corrupt(txn: Any, handle: Any) -> None:
        for key, value in txn.cursor(handle).iternext():
            raw = bytes(value)
            bad = raw[:-2] + bytes([raw[-2] ^ 0x04]) + raw[-1:] if where == "code" else raw[:-4]
            txn.put(bytes(key), bad, db=handle)                 # every posting / every vector record

    edit_records(tmp_path / "s", b"spann.postings" if where == "code" else b"spann.vectors", corrupt)
    again = SPANN(dim, "l2", tmp_path / "s")
    try:
        with pytest.raises(DataLossError):
            again.search(x[0], 10, **EVERYTHING)
        with pytest.raises(DataLossError):
            again.search(x[:2], 10, max_postings=4)
    finally:
        again.close()


@pytest.mark.parametrize("change", ["deleted", "emptied"])
def test_sq8_candidates_without_their_vector_record(tmp_path: Path, change: str) -> None:
    """A one-query search re-ranks the candidates that still have a float record: one
    without (removed since the posting was read) is no candidate, so with every record gone
    nothing is returned and nothing raised; an empty record is corrupt: DataLossError."""
    dim = 24
    x = closed_sq8_index(tmp_path / "s", dim)

    def take_away(txn: Any, handle: Any) -> None:
        keys = [bytes(key) for key, _ in txn.cursor(handle).iternext()]
        for key in keys if change == "deleted" else keys[:1]:
            if change == "deleted":
                txn.delete(key, db=handle)
            else:
                txn.put(key, b"", db=handle)

    edit_records(tmp_path / "s", b"spann.vectors", take_away)
    again = SPANN(dim, "l2", tmp_path / "s")
    try:
        if change == "deleted":
            res = again.search(x[0], 10, **EVERYTHING)
            assert (res.ids == -1).all() and np.isinf(res.distances).all()
        else:
            with pytest.raises(DataLossError, match="vector record"):
                again.search(x[0], 10, **EVERYTHING, rerank=1000)
    finally:
        again.close()


# ---- SQ8 records: the run kernel, the re-rank kernel ---------------------------------------
def code_record(count: int, dim: int, seed: int, version: int | None = None) -> tuple[bytes, np.ndarray]:
    """An SQ8 posting record of ``count`` random entries (its own codec): (record, slots)."""
    rng = np.random.default_rng(seed)
    slots = rng.permutation(4 * count + 8)[:count].astype(np.int64)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    codec = SQ8(dim)
    codec.train_trusted(rng.standard_normal((16, dim)).astype(np.float32) * 2)
    return postings.encode(slots, vectors, codec, version=version), slots


def code_ranges(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """An SQ8 codec's ``vmin``/``step`` for the scan tests (one constant dimension, step 0)."""
    vmin = np.linspace(-3.0, 1.0, dim).astype(np.float32)
    step = np.linspace(0.5, 2.0, dim).astype(np.float32)
    step[dim // 2] = 0.0
    return vmin, step


@settings(max_examples=40, deadline=None)
@given(dim=st.integers(1, 40), seed=st.integers(0, 1000), mode=st.sampled_from([0, 1]))
def test_the_code_distance_is_the_distance_to_the_decoded_vector(dim: int, seed: int, mode: int) -> None:
    """What a scan ranks SQ8 rows by (``fold_code_query``, then ``code_l2`` or the bias minus
    ``code_dot``) is the squared L2 (mode 0) or -ip (mode 1) from the query to the row decoded
    as vmin + c * step (a constant dimension, step 0, included)."""
    rng = np.random.default_rng(seed)
    vmin, step = code_ranges(dim)
    q = (rng.standard_normal(dim) * 3).astype(np.float32)
    rows = rng.integers(0, 256, (6, dim)).astype(np.uint8)
    decoded = vmin.astype(np.float64) + rows * step.astype(np.float64)
    terms, bias = kernels.fold_code_query(q, vmin, step, mode)
    for row, x in zip(rows, decoded):
        got = kernels.code_l2(terms, step, row) if mode == 0 else bias - kernels.code_dot(terms, row)
        want = ((q - x) ** 2).sum() if mode == 0 else -(q @ x)
        assert got == pytest.approx(want, rel=1e-4, abs=1e-3)


def scan_code_runs(raws: list[bytes], dim: int, q: np.ndarray, width: int, live: np.ndarray, allow: np.ndarray,
                   use_allow: bool, mode: int = 0) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """The one-query scan of SQ8 ``raws`` in runs of ``records.RUN`` (``check_scan_codes_records``):
    (index of the first bad record or -1, its problem, counts, sorted heap slots, distances)."""
    hd, hs = np.full(width, np.inf, np.float32), np.full(width, -1, np.int64)
    counts = np.zeros(len(raws), np.int64)
    vmin, step = code_ranges(dim)
    views = [memoryview(raw) for raw in raws]
    for lo in range(0, len(raws), records.RUN):
        run = views[lo : lo + records.RUN]
        n = len(run)
        bad, problem = records.check_scan_codes_records(tuple(run + [memoryview(b"")] * (records.RUN - n)), n,
                                                        np.arange(lo, lo + n), dim, q, vmin, step, mode, live,
                                                        allow, use_allow, counts, hd, hs, lo + n >= len(raws))
        if problem:
            return lo + int(bad), int(problem), counts, hs, hd
    return -1, records.OK, counts, hs, hd


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counts=st.lists(st.integers(0, 40), min_size=1, max_size=19), dim=st.one_of(st.integers(1, 40), WHOLE_STEPS),
       seed=st.integers(0, 1000), version=st.sampled_from([2, 3, 4]), use_allow=st.booleans(), mode=st.sampled_from([0, 1]))
def test_the_sq8_run_scan_equals_the_checked_copied_scan(counts: list[int], dim: int, seed: int, version: int,
                                                         use_allow: bool, mode: int) -> None:
    """Records checked and ranked in the same pass, ``records.RUN`` per call (format 3: rows
    summed ``CODE_ROWS`` at a time, any dimension; format 4 rows of a multiple of 32 codes
    ranked and summed in one pass, ``dot_sums``), rank as the copied path does: every
    record checked first (``check_records``), then ``scan_codes_serial``; dead and
    disallowed slots skipped."""
    raws = [code_record(c, dim, seed + i, version)[0] for i, c in enumerate(counts)]
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal(dim) * 50).astype(np.float32)
    n_slots = 4 * max(counts) + 8
    live = np.where(rng.random(n_slots) < 0.2, -1, np.arange(n_slots)).astype(np.int64)   # tombstones
    allow = (rng.random(n_slots) < 0.6).astype(np.uint8) if use_allow else np.zeros(1, np.uint8)
    width = 12
    bad, problem, got_counts, hs, hd = scan_code_runs(raws, dim, q, width, live, allow, use_allow, mode)
    assert (bad, problem) == (-1, records.OK)
    buf, starts, want_counts = postings.check_many(raws, np.arange(len(raws)), dim, SQ8(dim))
    np.testing.assert_array_equal(got_counts, want_counts)
    out_s, out_d = np.full((1, width), -1, np.int64), np.full((1, width), np.inf, np.float32)
    vmin, step = code_ranges(dim)
    kernels.scan_codes_serial(q[None], vmin, step, mode, buf, starts, want_counts,
                              np.array([0, len(raws)]), np.arange(len(raws)), live, allow, use_allow, out_s, out_d)
    np.testing.assert_allclose(hd, out_d[0], rtol=1e-5, atol=1e-3)
    same = hs == out_s[0]
    assert same.all() or np.allclose(hd[~same], out_d[0][~same], rtol=1e-5, atol=1e-3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counts=st.lists(st.integers(1, 40), min_size=1, max_size=12), dim=st.one_of(st.integers(1, 40), WHOLE_STEPS),
       seed=st.integers(0, 1000), which=st.floats(0, 1), where=st.floats(0, 1), bit=st.integers(0, 7),
       version=st.sampled_from([2, 3, 4]))
def test_a_flipped_bit_of_an_sq8_body_fails_the_run_scan(counts: list[int], dim: int, seed: int, which: float,
                                                         where: float, bit: int, version: int) -> None:
    """A bit flipped anywhere in one record's body (slots, codes of any row, padding) is
    reported, as that record, by the run kernel; a truncated record too."""
    raws = [code_record(c, dim, seed + i, version)[0] for i, c in enumerate(counts)]
    i = min(int(which * len(raws)), len(raws) - 1)
    raw = raws[i]
    body = len(raw) - postings.HEADER_BYTES
    at = postings.HEADER_BYTES + min(int(where * body), body - 1)
    live = np.arange(4 * max(counts) + 8, dtype=np.int64)
    q = np.ones(dim, np.float32)
    flipped = raws[:i] + [raw[:at] + bytes([raw[at] ^ (1 << bit)]) + raw[at + 1 :]] + raws[i + 1 :]
    assert scan_code_runs(flipped, dim, q, 5, live, np.zeros(1, np.uint8), False)[:2] == (i, records.BAD_CHECKSUM)
    cut = raws[:i] + [raw[:-8]] + raws[i + 1 :]
    assert scan_code_runs(cut, dim, q, 5, live, np.zeros(1, np.uint8), False)[:2] == (i, records.TRUNCATED)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 60), dim=st.integers(1, 40), k=st.integers(1, 12), seed=st.integers(0, 1000),
       metric=st.sampled_from([0, 1]))
def test_the_rerank_kernel_ranks_as_a_sort(n: int, dim: int, k: int, seed: int, metric: int) -> None:
    """``rerank_rows``: the k nearest of the candidate rows, ties to the smaller slot, as a
    lexicographic sort on (distance, slot) of the exact distances; -1 / +inf past them."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(-3, 4, (n, dim)).astype(np.float32)   # small integers: exact distances, many ties
    slots = rng.permutation(10 * n + 1)[:n].astype(np.int64)
    q = rng.integers(-3, 4, dim).astype(np.float32)
    hd, hs = np.full(k, np.inf, np.float32), np.full(k, -1, np.int64)
    kernels.rerank_rows(rows.ravel(), dim, q, slots, metric, hd, hs)
    d = ((rows - q) ** 2).sum(1) if metric == 0 else -(rows @ q)
    best = np.lexsort((slots, d))[:k]
    m = len(best)
    np.testing.assert_array_equal(hs[:m], slots[best])
    np.testing.assert_array_equal(hd[:m], d[best])
    assert (hs[m:] == -1).all() and np.isinf(hd[m:]).all()


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_sq8_one_query_search_with_empty_postings_equals_the_batched_scan(metric: str) -> None:
    """Heads trained on points never added have no posting record: the one-query SQ8 path
    skips them inside its runs of records as the batched path reads them as empty."""
    dim = 20
    x = clustered(1200, dim, 8)
    far = clustered(300, dim, 9) + 40                          # heads of their own, left empty
    index = SPANN(dim, metric, posting_limit=64, head_size=16, background=False, codes="sq8")
    try:
        index.train(np.concatenate([x, far]))
        index.add(x)
        assert (index.posting_sizes() == 0).any()
        q = np.concatenate([clustered(6, dim, 10), far[:6] * 0.9])
        for kw in ({"max_postings": 6}, EVERYTHING):
            batched = index.search(q, 10, **kw)
            for i in range(len(q)):
                one = index.search(q[i], 10, **kw)
                np.testing.assert_allclose(one.distances[0], batched.distances[i], rtol=1e-5, atol=1e-4)
                same = one.ids[0] == batched.ids[i]
                assert same.all() or np.allclose(one.distances[0][~same], batched.distances[i][~same], atol=1e-4)
    finally:
        index.close()


def test_sq8_vector_records_of_wrong_lengths_that_sum_right_still_raise(tmp_path: Path) -> None:
    """The one-query re-rank checks the float records it joins one by one: a record 4 bytes
    long and another 4 bytes short (the joined length right) still raise DataLossError."""
    dim = 24
    x = closed_sq8_index(tmp_path / "s", dim)

    def mislength(txn: Any, handle: Any) -> None:
        (k1, v1), (k2, v2) = list(txn.cursor(handle).iternext())[:2]
        txn.put(bytes(k1), bytes(v1) + bytes(4), db=handle)
        txn.put(bytes(k2), bytes(v2)[:-4], db=handle)

    edit_records(tmp_path / "s", b"spann.vectors", mislength)
    again = SPANN(dim, "l2", tmp_path / "s")
    try:
        with pytest.raises(DataLossError, match="vector record"):
            again.search(x[0], 10, **EVERYTHING, rerank=1000)
    finally:
        again.close()


# ---- format 4: SQ8 entries with a norm, ranked by one integer dot product ----------------
def reference_v4(body: bytes) -> int:
    """Format 4's checksum in plain Python: format 3's sums taken mod 2^32."""
    words = np.frombuffer(body, "<u4").tolist()
    s1 = sum(words) & 0xFFFFFFFF
    s2 = sum((i + 1) * w for i, w in enumerate(words)) & 0xFFFFFFFF

    def mix(h: int, x: int) -> int:
        h = ((h ^ x) * 0xFF51AFD7ED558CCD) & _M64
        return h ^ (h >> 31)

    return mix(mix(mix(0x9E3779B97F4A7C15, len(body)), s1), s2)


@pytest.mark.parametrize("count,dim", [(0, 8), (1, 1), (3, 20), (7, 24), (600, 4), (2, 1500)])
def test_format_4_is_written_for_sq8_with_the_stated_sums_and_norms(count: int, dim: int) -> None:
    raw, slots = code_record(count, dim, count + dim)
    body = raw[postings.HEADER_BYTES :]
    assert int.from_bytes(raw[4:6], "little") == 4 == postings.CODES_VERSION
    assert int.from_bytes(raw[16:24], "little") == reference_v4(body)
    np.testing.assert_array_equal(np.frombuffer(body[: 8 * count], "<i8"), slots)
    rng = np.random.default_rng(count + dim)                # code_record's codec and rows, again
    rng.permutation(4 * count + 8)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    codec = SQ8(dim)
    codec.train_trusted(rng.standard_normal((16, dim)).astype(np.float32) * 2)
    codes = codec.encode_trusted(vectors)
    norms = np.frombuffer(body[8 * count : 12 * count], "<f4")
    want = (((codes.astype(np.float64) - 128) * codec.step.astype(np.float64)) ** 2).sum(1) if count else np.zeros(0)
    np.testing.assert_allclose(norms, want, rtol=1e-6)
    np.testing.assert_array_equal(np.frombuffer(body[12 * count : 12 * count + count * dim], np.uint8),
                                  codes.reshape(-1))
    got_slots, got_vectors = postings.decode(raw, dim, 0, codec)
    np.testing.assert_array_equal(got_slots, slots)
    np.testing.assert_array_equal(got_vectors, codec.decode_trusted(codes))


@njit(cache=False)
def _dots(u: np.ndarray, codes: np.ndarray, generic: bool) -> np.ndarray:
    dim = u.shape[0]
    out = np.empty(codes.shape[0] // dim, np.int64)
    whole = dim - dim % int_dot.LANES
    for r in range(out.shape[0]):
        if generic:
            out[r] = int_dot.dot_lanes_generic(u, codes, r * dim, whole)
        else:
            out[r] = int_dot.dot_lanes(u, codes, r * dim, whole)
        for i in range(whole, dim):
            out[r] += np.int64(u[i]) * np.int64(codes[r * dim + i])
    return out


@njit(cache=False)
def _whole_rows(u: np.ndarray, codes: np.ndarray, generic: bool) -> np.ndarray:
    """Each row's dot in one intrinsic call, its last dim % 16 components included."""
    dim = u.shape[0]
    out = np.empty(codes.shape[0] // dim, np.int64)
    for r in range(out.shape[0]):
        out[r] = int_dot.dot_lanes_generic(u, codes, r * dim, dim) if generic else int_dot.dot_lanes(u, codes, r * dim, dim)
    return out


@settings(max_examples=60, deadline=None)
@given(dim=st.integers(1, 100), rows=st.integers(1, 6), seed=st.integers(0, 1000))
def test_the_integer_dot_is_exact_on_every_path(dim: int, rows: int, seed: int) -> None:
    """``dot_u8_i16`` (AVX2 where compiled for it) and the plain vector form equal numpy's
    int64 products, at any dimension, any row offset, and terms up to the bound
    ``fold_int_query`` keeps (dim * 255 * max|u| < 2^31)."""
    rng = np.random.default_rng(seed)
    top = min(16383, (2**31 - 1) // (255 * dim))
    u = rng.integers(-top, top + 1, dim).astype(np.int16)
    codes = rng.integers(0, 256, rows * dim + 3).astype(np.uint8)[3:]   # rows start at odd addresses
    want = codes.reshape(rows, dim).astype(np.int64) @ u.astype(np.int64)
    np.testing.assert_array_equal(_dots(u, codes, False), want)
    np.testing.assert_array_equal(_dots(u, codes, True), want)
    np.testing.assert_array_equal([int_dot.dot_u8_i16(u, codes, r * dim) for r in range(rows)], want)
    if dim >= int_dot.LANES:                                 # the tail as a masked step over the row's last 16
        np.testing.assert_array_equal(_whole_rows(u, codes, False), want)
        np.testing.assert_array_equal(_whole_rows(u, codes, True), want)


@njit
def _dot_sums(u: np.ndarray, codes: np.ndarray, rows: int, generic: bool) -> np.ndarray:
    """``dot_sums`` of each row: (dot, S, T) a row."""
    dim = u.shape[0]
    out = np.empty((rows, 3), np.int64)
    for r in range(rows):
        got = dot_sums.dot_sums_generic(u, codes, r * dim, dim) if generic else dot_sums.dot_sums(u, codes, r * dim, dim)
        out[r, 0], out[r, 1], out[r, 2] = got[0], got[1], got[2]
    return out


@settings(max_examples=40, deadline=None)
@given(steps=st.integers(1, 30), rows=st.integers(1, 5), seed=st.integers(0, 1000))
def test_the_fused_dot_and_word_sums_equal_their_separate_forms(steps: int, rows: int, seed: int) -> None:
    """``dot_sums`` (AVX2 where compiled for it, and the plain vector form) gives each row's
    integer dot as numpy's int64 products and its words' sum S and sum_j j w_j as the
    checksum's ``word_sums`` (mod 2^32), for rows of any multiple of 32 codes at odd
    addresses."""
    dim = steps * dot_sums.STEP
    rng = np.random.default_rng(seed)
    top = min(16383, (2**31 - 1) // (255 * dim))
    u = rng.integers(-top, top + 1, dim).astype(np.int16)
    codes = rng.integers(0, 256, rows * dim + 3).astype(np.uint8)[3:]
    want = codes.reshape(rows, dim).astype(np.int64) @ u.astype(np.int64)
    words = codes.reshape(rows, dim).view("<u4").astype(np.int64)
    weights = np.arange(dim // 4, dtype=np.int64)
    for generic in (False, True):
        got = _dot_sums(u, codes, rows, generic)
        np.testing.assert_array_equal(got[:, 0], want)
        np.testing.assert_array_equal(got[:, 1], words.sum(1) % 2**32)
        np.testing.assert_array_equal(got[:, 2], (words * weights).sum(1) % 2**32)


@settings(max_examples=60, deadline=None)
@given(dim=st.integers(1, 700), seed=st.integers(0, 1000), mode=st.sampled_from([0, 1]), scale=st.sampled_from([0.01, 1, 300]))
def test_the_integer_distance_is_the_decoded_distance_within_its_rounding(dim: int, seed: int, mode: int,
                                                                         scale: float) -> None:
    """Format 4's distance (``fold_int_query`` terms, the stored norm, ``code_int``) is the
    squared L2 (mode 0) or -ip (mode 1) from the query to the row decoded as vmin + c * step,
    up to the stated error of rounding the terms: half a unit of each, |scale| * 0.5 *
    sum |c - 128| (mode 0) or sum c (mode 1), plus float32 rounding."""
    rng = np.random.default_rng(seed)
    vmin, step = code_ranges(dim)
    vmin, step = vmin * np.float32(scale), step * np.float32(scale)
    q = (rng.standard_normal(dim) * 3 * scale).astype(np.float32)
    rows = rng.integers(0, 256, (6, dim)).astype(np.uint8)
    if seed % 3 == 0:
        rows[0] = np.clip(np.round((q - vmin) / np.where(step > 0, step, 1)), 0, 255)   # a row near the query
    codec = SQ8(dim)
    codec.restore({"vmin": vmin, "step": step})
    norms = codec.centred_norms(rows)
    u, usum, unit, base = kernels.fold_int_query(q, vmin, step, mode)
    decoded = vmin.astype(np.float64) + rows * step.astype(np.float64)
    flat = rows.reshape(-1)
    for r, (row, x) in enumerate(zip(rows, decoded)):
        got = kernels.code_int(u, usum, unit, base, mode, flat, r * dim, norms[r])
        want = ((q - x) ** 2).sum() if mode == 0 else -(q @ x)
        spread = np.abs(row.astype(np.float64) - 128).sum() if mode == 0 else row.astype(np.float64).sum()
        magnitude = abs(float(base)) + float(norms[r]) + abs(want)
        assert abs(got - want) <= float(unit) * 0.5 * spread * 1.001 + 1e-5 * magnitude + 1e-6


def as_format_3(raw: bytes) -> bytes:
    """An SQ8 posting record of format 4 rewritten as format 3 held it (no norms)."""
    count = int.from_bytes(raw[8:12], "little")
    body = raw[postings.HEADER_BYTES :]
    dim = int.from_bytes(raw[12:16], "little")
    new = body[: 8 * count] + body[12 * count : 12 * count + count * dim]
    new += b"\0" * (-len(new) % 8)
    sums = int(records.checksum_v3(np.frombuffer(new, np.uint8) if new else np.zeros(8, np.uint8), 0, len(new)))
    return raw[:4] + (3).to_bytes(2, "little") + raw[6:16] + sums.to_bytes(8, "little") + new


def posting_formats(path: Path) -> set[int]:
    """The formats of the posting records of the closed index at ``path``."""
    found: set[int] = set()
    edit_records(path, b"spann.postings", lambda txn, db: found.update(int.from_bytes(raw[4:6], "little")
                                                                      for _, raw in txn.cursor(db=db)))
    return found


def test_an_sq8_index_with_postings_in_formats_3_and_4_searches_updates_and_reopens(tmp_path: Path) -> None:
    """An SQ8 index written before format 4 (its postings rewritten here in format 3, as they
    were) answers as it did in format 4, batched and one query at a time; an update then
    rewrites some postings in format 4, and reopened the index mixes both and finds every row."""
    dim, path = 24, tmp_path / "s"
    x = closed_sq8_index(path, dim)
    assert posting_formats(path) == {4}
    q = x[::37] + np.float32(0.01)
    index = SPANN(dim, "l2", path)
    try:
        before = index.search(q, 10, **EVERYTHING)
    finally:
        index.close()
    edit_records(path, b"spann.postings", lambda txn, db: [txn.put(key, as_format_3(bytes(raw)), db=db)
                                                           for key, raw in list(txn.cursor(db=db))])
    assert posting_formats(path) == {3}
    more = x[:20] + np.float32(0.05)                          # near a few heads: a few postings rewritten
    index = SPANN(dim, "l2", path)
    try:
        after = index.search(q, 10, **EVERYTHING)
        np.testing.assert_array_equal(after.ids, before.ids)
        np.testing.assert_allclose(after.distances, before.distances, rtol=1e-6)
        one = np.vstack([index.search(row, 10, **EVERYTHING).ids for row in q[:5]])   # in place, one query each
        np.testing.assert_array_equal(one, before.ids[:5])
        index.add(more, ids=np.arange(600, 620))
    finally:
        index.close()
    assert posting_formats(path) == {3, 4}
    index = SPANN(dim, "l2", path)
    try:
        both = np.vstack([x, more])
        got = index.search(both[::7], 1, **EVERYTHING)
        np.testing.assert_array_equal(got.ids[:, 0], np.arange(0, 620, 7))
        for row, want in zip(both[::31], range(0, 620, 31)):
            assert index.search(row, 1, **EVERYTHING).ids[0, 0] == want
    finally:
        index.close()
