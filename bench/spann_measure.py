"""Measurement helpers of the SPANN benchmark (``bench/spann.py`` and its search process,
``bench/spann_serve.py``): one-query-per-call timing, page-cache eviction and residency,
recall, RSS, and the per-query reads SPANN reports."""
from __future__ import annotations

import ctypes
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vecdb.bench.rss import status_bytes


def recall(got: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean([len(set(g.tolist()) & set(w.tolist())) / len(w) for g, w in zip(got, gt)]))


def per_query(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray,
              evict_first: Path | None = None, after_evict: Callable[[], Any] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Ids of each query searched alone, and the seconds each call took, after one untimed
    warm-up query (JIT load); or, a cold pass, with the file ``evict_first`` dropped from
    the page cache first and no warm-up (the warm pass before it loaded the process's JIT;
    a warm-up query here left its pages mapped, which DONTNEED skips: faiss's cold passes
    began with 10-15 % of their file cached), then ``after_evict`` called, untimed."""
    ids, secs = [], np.empty(len(queries))
    if evict_first is None:
        search(queries[:1])
    else:
        evict(evict_first)
        if after_evict is not None:
            after_evict()
    for i in range(len(queries)):
        t0 = time.perf_counter()
        ids.append(search(queries[i : i + 1]))
        secs[i] = time.perf_counter() - t0
    return np.concatenate(ids), secs


def evict(path: Path) -> bool:
    """Drop the file's pages from the page cache; False where the platform cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def row(target: str, knob: str, value: Any, ids: np.ndarray, secs: np.ndarray, gt: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"target": target, knob: value, "recall": recall(ids, gt), "mean_ms": 1e3 * float(secs.mean()),
            "p99_ms": 1e3 * float(np.percentile(secs, 99)), "qps": float(len(secs) / secs.sum()), **extra}


def qps_at_recall(points: list[tuple[float, float]], recall: float) -> float | None:
    """The QPS a sweep reaches at ``recall``, from its (recall, QPS) points: between two
    neighbouring points that bracket it, log QPS taken linear in recall; a point at or above
    it as measured; the best of those (None when no point reaches it). "First setting >=
    0.90" favours whichever sweep is coarser; this compares curves like with like."""
    pts = sorted(points)
    best = None
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 <= recall <= r1 and r1 > r0:
            t = (recall - r0) / (r1 - r0)
            got = math.exp(math.log(q0) + t * (math.log(q1) - math.log(q0)))
            best = got if best is None else max(best, got)
    for r, q in pts:
        if r >= recall:
            best = q if best is None else max(best, q)
    return best


def at_recall(rows: list[dict[str, Any]], recalls: tuple[float, ...] = (0.9, 0.95),
              reference: str = "faiss-ivfflat") -> list[dict[str, Any]]:
    """Per target, search setting and cache: QPS at each of ``recalls`` (``qps_at_recall``)
    and its ratio to ``reference``'s in the same cache."""
    curves: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for r in rows:
        key = (r["target"], json.dumps(r.get("search"), sort_keys=True), r["cache"])
        curves.setdefault(key, []).append((r["recall"], r["qps"]))
    out = []
    for (target, search, cache), pts in sorted(curves.items()):
        if target == reference:
            continue
        refs = [p for (t, _, c), p in curves.items() if t == reference and c == cache]
        for recall in recalls:
            qps = qps_at_recall(pts, recall)
            ref = qps_at_recall(refs[0], recall) if refs else None
            out.append({"target": target, "search": json.loads(search), "cache": cache, "recall": recall, "qps": qps,
                        "reference": reference, "reference_qps": ref,
                        "ratio": None if qps is None or ref is None else qps / ref})
    return out


def read_stats(stats: list[Any], max_postings: int) -> dict[str, float]:
    """Per-query reads of one SPANN sweep point: postings, bytes and entries per query, and
    how the postings read compare with ``max_postings`` (the share of queries whose eps2
    pruning stopped before it, and the fewest / most postings one query read)."""
    per_q = np.concatenate([s.postings for s in stats])
    return {"postings_per_q": float(per_q.mean()), "postings_min_q": int(per_q.min()), "postings_max_q": int(per_q.max()),
            "pruned_share": float(np.mean(per_q < max_postings)),
            "bytes_per_q": float(np.mean([s.bytes_read for s in stats])),
            "entries_per_q": float(np.mean([s.entries.mean() for s in stats]))}


def read_work(index: Any, queries: np.ndarray, k: int, max_postings: int, eps2: float | None,
              **knobs: Any) -> list[Any]:
    """The work of each query of a sweep point (``search_with_stats``), in an untimed pass after
    the timed one: the timed pass calls ``search`` like a server would (the stats' bookkeeping,
    ~60 us a query on a loaded machine, is no part of serving; faiss and DiskANN pay none)."""
    return [index.search_with_stats(queries[i : i + 1], k, max_postings=max_postings, eps2=eps2, **knobs)[1]
            for i in range(len(queries))]


def peak_rss() -> int:
    """Peak resident set size of this process (VmHWM), bytes."""
    return status_bytes("VmHWM")


def resident_pages(path: Path) -> tuple[int, int]:
    """(pages of ``path`` in the page cache, pages of the file), by mincore over a shared
    read-only mapping; (-1, pages) where the platform has no mincore."""
    size = path.stat().st_size
    page = os.sysconf("SC_PAGE_SIZE")
    pages = -(-size // page)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    except (OSError, AttributeError):
        return -1, pages
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, 1, 1, fd, 0)            # PROT_READ, MAP_SHARED
        if addr in (None, ctypes.c_void_p(-1).value):
            return -1, pages
        try:
            vec = ctypes.create_string_buffer(pages)
            if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                return -1, pages
            return int((np.frombuffer(vec.raw, np.uint8) & 1).sum()), pages
        finally:
            libc.munmap(ctypes.c_void_p(addr), size)
    finally:
        os.close(fd)


def cached_share(path: Path) -> float | None:
    """Share of ``path``'s pages in the page cache (``resident_pages``): a cold pass records it
    when it starts (pages this process still maps are not dropped); None without mincore."""
    cached, pages = resident_pages(path)
    return None if cached < 0 else round(cached / max(pages, 1), 4)


def current_rss() -> int:
    """Resident set size of this process (VmRSS), bytes."""
    return status_bytes("VmRSS")


def eps2_list(text: str) -> list[float | None]:
    """The eps2 values of ``--spann-eps2`` ("" = the index's default only)."""
    return [float(v) for v in text.split(",") if v] or [None]


