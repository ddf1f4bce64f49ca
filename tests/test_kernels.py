"""Every kernel against a plain numpy formula: odd dims, d = 1, zero rows, duplicates, ties."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from vecdb.kernels import distances, hamming, heaps, pq, scan, select, sq8, topk, views, word_sums
from vecdb.kernels.binary_codes import plane_scan_topk


def numpy_distances(q: np.ndarray, x: np.ndarray, metric: int) -> np.ndarray:
    q64, x64 = q.astype(np.float64), x.astype(np.float64)
    if metric == 0:
        return ((q64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
    if metric == 1:
        return -(q64 @ x64.T)
    qn = np.linalg.norm(q64, axis=1)[:, None]
    xn = np.linalg.norm(x64, axis=1)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (q64 @ x64.T) / (qn * xn)
    return np.where((qn == 0) | (xn == 0), 1.0, 1.0 - cos)


@st.composite
def matrices(draw, max_n=40):
    """(queries, rows) with random dims (incl. 1 and odd), duplicates and zero rows."""
    seed = draw(st.integers(0, 2**31))
    dim = draw(st.sampled_from([1, 2, 3, 7, 16, 33, 97, 128]))
    n = draw(st.integers(1, max_n))
    nq = draw(st.integers(1, 6))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    if n > 2 and draw(st.booleans()):
        x[1] = x[0]                       # an exact duplicate row
        x[2] = 0.0                        # a zero row
    if draw(st.booleans()):
        x = np.round(x)                   # integer values: many exact ties
    q = rng.standard_normal((nq, dim)).astype(np.float32)
    return q, x


@pytest.mark.parametrize("metric", [0, 1, 2])
@given(data=matrices())
def test_distance_kernels_match_numpy(metric, data):
    q, x = data
    ref = numpy_distances(q, x, metric)
    np.testing.assert_allclose(distances.many_to_many(q, x, metric), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(distances.one_to_many(q[0], x, metric), ref[0], rtol=1e-4, atol=1e-4)


def test_kernels_accept_readonly_arrays(rng):
    x = rng.standard_normal((10, 5)).astype(np.float32)
    x.setflags(write=False)
    assert distances.one_to_many(x[0], x, 0)[0] == 0.0


@given(data=matrices(), k=st.integers(1, 50))
def test_scan_topk_equals_sorted_numpy_with_ties_to_smaller_slot(data, k):
    q, x = data
    for chunks in (1, 3):
        slots, dist = topk.scan_topk(q, x, 0, k) if chunks == 1 else topk.scan_topk_chunked(q, x, 0, k, chunks)
        kk = min(k, x.shape[0])
        # exact float32 distances from the kernel itself decide ties, so compare with its own matrix
        kern = distances.many_to_many(q, x, 0)
        order = np.lexsort((np.broadcast_to(np.arange(x.shape[0]), kern.shape), kern), axis=-1)
        np.testing.assert_array_equal(slots[:, :kk], order[:, :kk])
        assert (slots[:, kk:] == -1).all() and np.isinf(dist[:, kk:]).all()


@given(data=matrices(), k=st.integers(1, 20))
def test_topk_rows_and_subset_scan(data, k):
    q, x = data
    dm = distances.many_to_many(q, x, 1)
    slots, dist = topk.topk_rows(dm, k)
    kk = min(k, x.shape[0])
    order = np.lexsort((np.broadcast_to(np.arange(x.shape[0]), dm.shape), dm), axis=-1)
    np.testing.assert_array_equal(slots[:, :kk], order[:, :kk])
    subset = np.arange(0, x.shape[0], 2, dtype=np.int64)
    s2, _ = topk.scan_topk_subset(q, x, subset, 1, k)
    assert set(s2[s2 >= 0].ravel().tolist()) <= set(subset.tolist())


@st.composite
def distance_arrays(draw):
    """float32 distances: few distinct values (ties), outliers that stretch the histogram,
    +inf and NaN entries, runs long enough for the heap fallback (> RANK_MAX candidates)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    n = draw(st.integers(0, 1200))
    kind = draw(st.sampled_from(["normal", "ties", "outliers", "constant", "specials", "extremes"]))
    d = rng.standard_normal(n).astype(np.float32)
    if kind == "ties":
        d = rng.integers(0, 5, n).astype(np.float32)
    elif kind == "outliers" and n:
        d[rng.integers(0, n, 3)] = np.float32(1e30)
    elif kind == "constant":
        d[:] = np.float32(2.5)
    elif kind == "specials" and n:
        d[rng.integers(0, n, max(1, n // 3))] = np.float32(np.inf)
        d[rng.integers(0, n, max(1, n // 5))] = np.float32(np.nan)
    elif kind == "extremes" and n:                             # x - min overflows float32; -inf ranks first
        d[rng.integers(0, n, max(1, n // 4))] = np.float32(3e38)
        d[rng.integers(0, n, max(1, n // 4))] = np.float32(-3e38)
        d[rng.integers(0, n, max(1, n // 50))] = np.float32(-np.inf)
    return d


@given(d=distance_arrays(), k=st.integers(0, 300))
@example(d=np.array([1, 2, np.inf, 3, np.nan, -np.inf], np.float32), k=8)    # k past the rankable entries
@example(d=np.array([3e38, -3e38, 0.5, 3e38, -1.0], np.float32), k=3)         # x - min overflows float32
def test_smallest_k_is_what_a_top_k_heap_gives(d, k):
    hd, hs = np.full(k, 7.0, np.float32), np.full(k, 7, np.int64)
    select.smallest_k(d, None, hd, hs)
    heap_d, heap_s = np.full(k, np.inf, np.float32), np.full(k, -1, np.int64)
    for j, x in enumerate(d):
        heaps.heap_push(heap_d, heap_s, x, j)
    heaps.heap_sort(heap_d, heap_s)
    np.testing.assert_array_equal(hs, heap_s)
    np.testing.assert_array_equal(hd, heap_d)
    finite = np.flatnonzero(d < np.inf)                    # the oracle: (distance, index) order (not NaN or +inf)
    want = finite[np.lexsort((finite, d[finite]))][:k]
    np.testing.assert_array_equal(hs[: len(want)], want)
    assert (hs[len(want):] == -1).all() and np.isinf(hd[len(want):]).all()
    ids = np.random.default_rng(len(d)).permutation(3 * len(d))[: len(d)].astype(np.int64)   # ids, not indices
    select.smallest_k(d, ids, hd, hs)
    want = finite[np.lexsort((ids[finite], d[finite]))][:k]
    np.testing.assert_array_equal(hs[: len(want)], ids[want])
    np.testing.assert_array_equal(hd[: len(want)], d[want])


@given(data=matrices(), k=st.integers(1, 10))
def test_gram_block_merge_then_rescore_is_exact(data, k):
    q, x = data
    for metric in (0, 1):
        heap_d, heap_s = topk.new_heaps(len(q), k)
        sq = np.einsum("ij,ij->i", x, x)
        for start in range(0, len(x), 7):
            topk.merge_gram_block(q @ x[start : start + 7].T, sq[start : start + 7], start, metric, heap_d, heap_s)
        slots, dist = topk.rescore(q, x, heap_s, metric)
        ref = numpy_distances(q, x, metric)
        kk = min(k, len(x))
        np.testing.assert_allclose(dist[:, :kk], np.sort(ref, axis=1)[:, :kk], rtol=1e-4, atol=1e-3)


@given(seed=st.integers(0, 2**31), n_bits=st.integers(1, 300), n=st.integers(1, 30))
def test_hamming_matches_numpy(seed, n_bits, n):
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, (n, n_bits)).astype(np.uint8)
    codes = hamming.pack_bits(bits)
    np.testing.assert_array_equal(hamming.unpack_bits(codes, n_bits), bits)
    ref = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    np.testing.assert_array_equal(hamming.hamming_many_to_many(codes, codes), ref)
    np.testing.assert_array_equal(hamming.hamming_one_to_many(codes[0], codes), ref[0])
    slots, dist = hamming.hamming_topk(codes, codes, 3)
    np.testing.assert_array_equal(dist[:, : min(3, n)], np.sort(ref, axis=1)[:, : min(3, n)])


def test_popcount_of_extreme_words():
    assert hamming.popcount64(np.uint64(0)) == 0
    assert hamming.popcount64(np.uint64(2**64 - 1)) == 64
    assert hamming.popcount64(np.uint64(2**63)) == 1


def pair_order(dists: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Positions of (dist, id) pairs sorted by distance, then id: the order every heap keeps."""
    return np.lexsort((ids, dists))


@given(seed=st.integers(0, 2**31), n=st.integers(1, 60), k=st.integers(1, 20), id64=st.booleans())
def test_heaps_order_entries_by_distance_then_id(seed, n, k, id64):
    """Max-, min- and top-k heaps agree with a lexsort on (dist, id) whatever the arrival order."""
    rng = np.random.default_rng(seed)
    d = rng.integers(0, 6, n).astype(np.float32)          # few distinct values: ties everywhere
    ids = rng.permutation(n).astype(np.int64 if id64 else np.int32)
    want = pair_order(d, ids)
    # max-heap filled to size n, then sorted in place
    hd, hi = np.empty(n, np.float32), np.empty(n, ids.dtype)
    for j in range(n):
        heaps.max_push(hd, hi, j, d[j], ids[j])
    assert hd[0] == d.max() and hi[0] == ids[d == d.max()].max()
    heaps.max_sort(hd, hi, n)
    np.testing.assert_array_equal(hi, ids[want])
    # min-heap popped one by one (grown from a too-small array)
    md, mi = np.empty(1, np.float32), np.empty(1, ids.dtype)
    for j in range(n):
        md, mi = heaps.min_push_grow(md, mi, j, d[j], ids[j])
    popped = []
    for size in range(n, 0, -1):
        popped.append(mi[0])
        heaps.min_pop(md, mi, size)
    np.testing.assert_array_equal(popped, ids[want])
    # a bounded beam result set: the ef best by (dist, id) survive replacements of the root
    ef = min(k, n)
    rd, ri = np.empty(ef, np.float32), np.empty(ef, ids.dtype)
    for j in range(n):
        if j < ef:
            heaps.max_push(rd, ri, j, d[j], ids[j])
        elif heaps.after(rd[0], ri[0], d[j], ids[j]):
            heaps.max_replace(rd, ri, ef, d[j], ids[j])
    heaps.max_sort(rd, ri, ef)
    np.testing.assert_array_equal(ri, ids[want][:ef])
    # fixed-size top-k heaps with sentinels (int64 slots)
    td, ts = heaps.new_heaps(1, k)
    for j in range(n):
        heaps.heap_push(td[0], ts[0], d[j], np.int64(ids[j]))
    heaps.heap_sort(td[0], ts[0])
    kk = min(k, n)
    np.testing.assert_array_equal(ts[0, :kk], ids[want][:kk])
    assert (ts[0, kk:] == -1).all() and np.isinf(td[0, kk:]).all()


@st.composite
def code_scans(draw):
    """Random small code sets with many ties, a chunk count and an optional sorted subset."""
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(1, 80))
    nq = draw(st.integers(1, 4))
    subset = np.sort(rng.choice(n, draw(st.integers(1, n)), replace=False)).astype(np.int64) if draw(st.booleans()) else None
    return rng, n, nq, draw(st.integers(1, 20)), draw(st.integers(1, 6)), subset


def reference_topk(dist: np.ndarray, k: int, subset: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k slots by (distance, slot) over all rows or ``subset``, padded -1/+inf."""
    nq, n = dist.shape
    cols = np.arange(n) if subset is None else subset
    slots = np.full((nq, k), -1, np.int64)
    out = np.full((nq, k), np.inf, np.float32)
    for i in range(nq):
        order = cols[np.lexsort((cols, dist[i, cols]))][:k]
        slots[i, : len(order)] = order
        out[i, : len(order)] = dist[i, order]
    return slots, out


@given(case=code_scans())
def test_every_scan_on_the_skeleton_equals_numpy_for_any_chunking(case):
    """PQ, SQ8, plane and float scans share one chunk-and-merge skeleton: any chunk count and
    any subset give the numpy top-k, ties to the smaller slot."""
    rng, n, nq, k, chunks, subset = case
    use = subset is not None
    sub = subset if use else np.zeros(0, np.int64)
    # PQ: integer table entries make equal sums common
    codes = rng.integers(0, 4, (n, 3)).astype(np.uint8)
    tables = rng.integers(0, 3, (nq, 3, 256)).astype(np.float32)
    ref = tables[:, np.arange(3)[None, :], codes].sum(-1)
    got = pq.adc_topk(tables, codes, sub, use, k, chunks)
    want = reference_topk(ref, k, subset)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1])
    hd, hs = heaps.new_heaps(1, k)                    # the same scanner, called from Python
    scan.offer_rows(pq.ADCTables(tables), 0, codes, sub, use, 0, len(sub) if use else n, hd[0], hs[0])
    heaps.heap_sort(hd[0], hs[0])
    np.testing.assert_array_equal(hs[0], want[0][0])
    # SQ8 (l2 mode, unit weights): integer codes and queries make exact ties
    qt = rng.integers(0, 4, (nq, 3)).astype(np.float32)
    ref = ((qt[:, None, :] - codes[None, :, :].astype(np.float32)) ** 2).sum(-1)
    got = sq8.sq8_topk(qt, np.ones(3, np.float32), np.zeros(nq, np.float32), codes, 0, sub, use, k, chunks)
    np.testing.assert_array_equal(got[0], reference_topk(ref, k, subset)[0])
    # two-plane binary codes, ip mode with unit weights: distance = sum of four popcounts
    words = rng.integers(0, 4, (n, 2)).astype(np.uint64)
    qw = rng.integers(0, 4, (nq, 2)).astype(np.uint64)
    pc = np.vectorize(lambda v: bin(int(v)).count("1"))
    ref = (pc(qw[:, None, 0] ^ words[None, :, 0]) + pc(qw[:, None, 1] ^ words[None, :, 1])
           + pc(qw[:, None, 0] ^ words[None, :, 1]) + pc(qw[:, None, 1] ^ words[None, :, 0])).astype(np.float32)
    got = plane_scan_topk(qw, words, 2, 1, np.ones((2, 2), np.float32), np.float32(0.0), 1, sub, use, k, chunks)
    np.testing.assert_array_equal(got[0], reference_topk(ref, k, subset)[0])
    # float rows through the chunked and the serial skeletons
    x = rng.integers(-2, 3, (n, 5)).astype(np.float32)
    q = rng.integers(-2, 3, (nq, 5)).astype(np.float32)
    want = reference_topk(distances.many_to_many(q, x, 0), k, subset)[0]
    if use:
        np.testing.assert_array_equal(topk.scan_topk_subset(q, x, sub, 0, k)[0], want)
        np.testing.assert_array_equal(topk.scan_topk_subset_batch(q, x, sub, 0, k)[0], want)
    else:
        np.testing.assert_array_equal(topk.scan_topk_chunked(q, x, 0, k, chunks)[0], want)


def test_scan_kernels_load_from_the_disk_cache_in_a_new_process():
    """The skeleton dispatches on the context's type (not on a function object), so a second
    process loads every scan kernel from Numba's on-disk cache instead of compiling it."""
    script = (
        "import numpy as np\n"
        "from vecdb.kernels import hamming, pq, scan, topk\n"
        "x = np.ones((5, 3), np.float32)\n"
        "topk.scan_topk(x, x, 0, 2); topk.scan_topk_chunked(x, x, 0, 2, 2)\n"
        "pq.adc_topk(np.ones((1, 2, 4), np.float32), np.zeros((5, 2), np.uint8), scan.no_subset(), False, 2, 1)\n"
        "hamming.hamming_topk(np.zeros((1, 1), np.uint64), np.zeros((4, 1), np.uint64), 2)\n"
        "fns = (topk.scan_topk, topk.scan_topk_chunked, pq.adc_topk, hamming.hamming_topk)\n"
        "print(sum(sum(f.stats.cache_misses.values()) for f in fns), sum(sum(f.stats.cache_hits.values()) for f in fns))\n"
    )
    root = Path(__file__).resolve().parents[1]
    runs = [subprocess.run([sys.executable, "-c", script], env=dict(os.environ), cwd=root, capture_output=True,
                           text=True, check=True).stdout.split() for _ in range(2)]
    assert sum(map(int, runs[0])) == 4    # the first process compiles (and writes) or loads each kernel
    assert runs[1] == ["0", "4"]          # the second one only loads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalize_rows_gives_new_unit_float32_rows(rng, dtype):
    x = rng.standard_normal((7, 33)).astype(dtype)
    x[3] = 0.0                                           # a zero row stays zero
    view = x[:, ::2]                                     # strided input is read as it is
    for src in (x, view):
        out = distances.normalize_rows(src)
        assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == src.shape
        assert not np.shares_memory(out, src)
        ref = src.astype(np.float64)
        norms = np.linalg.norm(ref, axis=1, keepdims=True)
        np.testing.assert_allclose(out, np.divide(ref, norms, out=np.zeros_like(ref), where=norms > 0), rtol=1e-6, atol=1e-7)
        assert (out[3] == 0).all()


@numba.njit(cache=False)
def _typed_reads(buf, lo, n):
    return (views.view_as(buf, lo, n, np.int64), views.view_as(buf, lo, 2 * n, np.float32),
            views.view_as(buf, lo, 2 * n, np.uint32), views.load_as(buf, lo, np.uint64),
            views.load_as(buf, lo + 1, np.uint16), views.load_be_u64(buf, lo))


@given(st.integers(0, 2**31), st.integers(0, 40), st.integers(1, 12))
def test_typed_views_and_loads_read_what_numpy_views_read(seed: int, lo: int, n: int) -> None:
    """``views``' pointer casts give NumPy's views and loads of the same bytes, at any byte
    offset (unaligned too), and share the buffer's memory and its read-only flag."""
    buf = np.random.default_rng(seed).integers(0, 256, lo + 8 * n + 2, dtype=np.uint8)
    ints, floats, words, u64, u16, be = _typed_reads(buf, lo, n)
    raw = buf[lo : lo + 8 * n].copy()                    # NumPy views need not be aligned either
    np.testing.assert_array_equal(ints, raw.view(np.int64))
    np.testing.assert_array_equal(floats.view(np.uint32), raw.view(np.uint32))
    np.testing.assert_array_equal(words, raw.view(np.uint32))
    assert u64 == raw[:8].view(np.uint64)[0] and be == int.from_bytes(raw[:8].tobytes(), "big")
    assert u16 == buf[lo + 1 : lo + 3].copy().view(np.uint16)[0]
    assert np.shares_memory(ints, buf) and ints.flags.writeable
    frozen = buf.copy()
    frozen.setflags(write=False)
    assert not _typed_reads(frozen, lo, n)[0].flags.writeable


@numba.njit(cache=False)
def _word_sums(w, start, n):
    return word_sums.word_sums(w, start, n), word_sums.word_sums64(w, start, n)


@given(st.lists(st.integers(0, 2**32 - 1), max_size=70), st.integers(0, 9))
def test_word_sums_are_the_plain_position_weighted_sums(words: list[int], start: int) -> None:
    """The eight-lane running sums give S = sum w_i and T = sum i w_i mod 2^32 (and 2^64) for any length
    (whole rounds of eight words, a remainder, none at all) and any start."""
    w = np.array([0] * start + words, dtype=np.uint32)
    (total, weighted), (total64, weighted64) = _word_sums(w, start, len(words))
    assert int(total) == sum(words) % 2**32 and int(total64) == sum(words) % 2**64
    assert int(weighted) == sum(i * x for i, x in enumerate(words)) % 2**32
    assert int(weighted64) == sum(i * x for i, x in enumerate(words)) % 2**64
