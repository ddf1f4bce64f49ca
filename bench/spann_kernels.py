"""SPANN posting kernels, ns per entry: the two checksums, the distance scan alone, and the
one-query check-and-scan of format 2 (checksum pass, then scan) and format 3 (two passes, and
the fused pass the search uses), on the float32 postings of a built index.

Every posting of the index at ``--index`` is read once, then written as format-2 and format-3
records of the same entries (in memory). "hot": the same ``--postings`` records again and again
(they stay in cache); "streaming": ``--postings`` random records per query over all of them
(read from memory, as a search of a large index does). One thread. Example (the 1M probe's
index, which ``bench/spann.py --synthetic 5000000 --synthetic-first 1000000 ... --workdir
.bench-work`` leaves behind):

    NUMBA_NUM_THREADS=1 .venv/bin/python bench/spann_kernels.py \\
        --index .bench-work/synthetic-5000000-128-first1000000/spann --dim 128
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

import lmdb
import numpy as np

from vecdb.bench.machine import bench_lock
from vecdb.index.spann import postings, records
from vecdb.index.spann.kernels import HEADER_BYTES, offer_entries
from vecdb.kernels._jit import kernel


@kernel
def scan_only(rec, dim, q, live, allow, hd, hs):
    """The distance scan of one float32 record, unchecked (what the checks add to)."""
    c = np.int64(rec[8:12].view(np.uint32)[0])
    offer_entries(rec, HEADER_BYTES, c, dim, q, live, allow, False, 0, hd, hs)
    return c


@kernel
def check_then_scan_v3(rec, dim, q, live, allow, hd, hs):
    """Format 3 in two passes: the checksum, then the scan (the record then in cache)."""
    c = np.int64(rec[8:12].view(np.uint32)[0])
    ok = records.checksum_v3(rec, HEADER_BYTES, rec.shape[0]) == rec[16:24].view(np.uint64)[0]
    offer_entries(rec, HEADER_BYTES, c, dim, q, live, allow, False, 0, hd, hs)
    return ok


def read_postings(path: str) -> list[bytes]:
    env = lmdb.open(path, readonly=True, max_dbs=16, lock=False)
    try:
        with env.begin() as txn:
            return [bytes(v) for _, v in txn.cursor(env.open_db(b"spann.postings", txn=txn, create=False))]
    finally:
        env.close()


def best_ns_per_entry(groups: list[tuple[list[np.ndarray], int]], call: Callable[..., Any], heap: bool, reps: int) -> float:
    best = np.inf
    for _ in range(reps):
        entries = 0
        t0 = time.perf_counter()
        for recs, n in groups:
            hd, hs = np.full(10, np.inf, np.float32), np.full(10, -1, np.int64)
            for rec in recs:
                if heap:
                    call(rec, hd, hs)
                else:
                    call(rec)
            entries += n
        best = min(best, (time.perf_counter() - t0) / entries)
    return best * 1e9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", required=True, help="directory of a SPANN index with float32 postings")
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--postings", type=int, default=6, help="records per query (a query reads ~6 at recall 0.9)")
    ap.add_argument("--queries", type=int, default=400, help="queries of the streaming pass")
    args = ap.parse_args(argv)
    dim = args.dim
    raws = read_postings(args.index)
    v2, v3, counts = [], [], []
    for raw in raws:
        slots, vectors = postings.decode(raw, dim, 0)
        v2.append(np.frombuffer(postings.encode(slots, vectors, version=2), np.uint8))
        v3.append(np.frombuffer(postings.encode(slots, vectors, version=3), np.uint8))
        counts.append(len(slots))
    n_entries = np.array(counts)
    q = np.random.default_rng(0).standard_normal(dim).astype(np.float32)
    live = np.arange(int(max(postings.decode(r, dim, 0)[0].max(initial=0) for r in raws)) + 1, dtype=np.int64)
    allow = np.zeros(1, np.uint8)
    calls: dict[str, tuple[str, Callable[..., Any], bool]] = {
        "checksum, format 2": ("v2", lambda r: records.checksum_v2(r, HEADER_BYTES, r.shape[0]), False),
        "checksum, format 3": ("v3", lambda r: records.checksum_v3(r, HEADER_BYTES, r.shape[0]), False),
        "scan only (no check)": ("v3", lambda r, hd, hs: scan_only(r, dim, q, live, allow, hd, hs), True),
        "format 2: check, then scan": ("v2", lambda r, hd, hs: records.check_scan_record(r, dim, q, live, allow, False,
                                                                                        0, hd, hs), True),
        "format 3: check, then scan": ("v3", lambda r, hd, hs: check_then_scan_v3(r, dim, q, live, allow, hd, hs), True),
        "format 3: fused (searches)": ("v3", lambda r, hd, hs: records.check_scan_record(r, dim, q, live, allow, False,
                                                                                        0, hd, hs), True),
    }
    rng = np.random.default_rng(1)
    picks = {"hot": ([np.arange(args.postings)] * 50, 9),
             "streaming": ([rng.choice(len(raws), args.postings, replace=False) for _ in range(args.queries)], 3)}
    with bench_lock():
        for name, (fmt, call, heap) in calls.items():           # compile outside the timing
            rec = (v2 if fmt == "v2" else v3)[0]
            call(rec, np.full(10, np.inf, np.float32), np.full(10, -1, np.int64)) if heap else call(rec)
        for mode, (chosen, reps) in picks.items():
            per = float(np.mean([n_entries[g].sum() for g in chosen]))
            print(f"{mode}: {args.postings} postings per query, {per:.0f} entries of {8 + 4 * dim} B")
            for name, (fmt, call, heap) in calls.items():
                source = v2 if fmt == "v2" else v3
                groups = [([source[i] for i in g], int(n_entries[g].sum())) for g in chosen]
                ns = best_ns_per_entry(groups, call, heap, reps)
                print(f"  {name:28s} {ns:6.1f} ns/entry  {(8 + 4 * dim) / ns:5.1f} GB/s  {ns * per / 1e3:6.1f} us per query")
    return 0


if __name__ == "__main__":
    sys.exit(main())
