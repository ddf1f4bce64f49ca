"""Scan-throughput micro-benchmark: vecdb code scans vs faiss, side by side, one thread.

Measures codes scanned per second (n_base * n_queries / seconds) for
  - PQ ADC search, 8-bit (vecdb PQIndex vs faiss IndexPQ, same m) and 4-bit (vecdb packed
    pair-table scan vs faiss IndexPQ nbits=4 and IndexPQFastScan);
  - 1-bit Hamming search (vecdb BinaryIndex / kernel vs faiss IndexBinaryFlat on the *same* codes);
  - multi-bit plane-weighted scans (vecdb only; faiss has no equivalent);
and reports code sizes against the float32 vectors. Both sides search the same query batch
with k=10; timings alternate vecdb/faiss and keep the fastest of ``--repeats`` passes (the
machine is shared and noisy). Prints a table and saves JSON.

    python bench/codes_scan.py --datasets arxiv-minilm-384,glove-6b-50d-angular,mnist-784-euclidean
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

# m per dataset: dim / 8 (8 dims per sub-quantizer) where it divides, else dim / 5
PQ_M = {"arxiv-minilm-384": 48, "glove-6b-50d-angular": 10, "mnist-784-euclidean": 98}


class Times(dict):
    """Best wall time per callable, plus how quiet the machine was meanwhile (``quiet``)."""

    quiet: dict[str, Any]


def fastest(fns: dict[str, Callable[[], Any]], repeats: int) -> Times:
    """Best wall time of each callable, running them round-robin ``repeats`` times."""
    from vecdb.bench.machine import Watch

    watch = Watch()
    best = Times({name: float("inf") for name in fns})
    for fn in fns.values():
        fn()  # warm-up (JIT load, caches)
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    q = watch.stop()
    best.quiet = {"others_share": q.others_share, "busy": q.busy, "load_before": q.load_before,
                  "load_after": q.load_after}
    return best


def load(name: str, n_queries: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Base, queries and metric of a dataset the harness can load (see `vecdb datasets`)."""
    from vecdb.data import load_dataset

    ds = load_dataset(name)
    metric = "l2" if ds.metric.value == "l2" else "cosine"
    return (np.ascontiguousarray(ds.base, np.float32), np.ascontiguousarray(ds.queries[:n_queries], np.float32),
            metric)


def bench_dataset(name: str, n_queries: int, n_train: int, repeats: int) -> list[dict[str, Any]]:
    import faiss

    from vecdb.index import BinaryIndex, PQIndex
    from vecdb.kernels.binary_codes import hamming_scan_topk, plane_scan_topk
    from vecdb.kernels.distances import normalize_rows
    from vecdb.kernels.pq import adc_topk

    base, queries, metric = load(name, n_queries)
    n, dim = base.shape
    rng = np.random.default_rng(1338)
    train = base[np.sort(rng.choice(n, min(n, n_train), replace=False))]
    fmetric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    fb = normalize_rows(base) if metric == "cosine" else base
    fq = normalize_rows(queries) if metric == "cosine" else queries
    ft = normalize_rows(train) if metric == "cosine" else train
    scanned = n * len(queries)
    empty = np.zeros(0, np.int64)
    rows: list[dict[str, Any]] = []

    def add_row(kind: str, times: dict[str, float], ours: str, theirs: str | None, code_bytes: int, note: str = "") -> None:
        row = {"dataset": name, "scan": kind, "code_bytes": code_bytes, "float_bytes": 4 * dim,
               "vecdb": ours, "vecdb_codes_per_s": scanned / times[ours], "note": note, **times.quiet}
        if theirs is not None:
            row.update(faiss=theirs, faiss_codes_per_s=scanned / times[theirs], ratio=times[theirs] / times[ours])
        rows.append(row)

    # ---- PQ 8-bit and 4-bit --------------------------------------------------------
    m = PQ_M.get(name, dim // 8)
    for nbits in (8, 4):
        ours = PQIndex(dim, metric, m=m, nbits=nbits, keep_vectors=False)
        ours.train(train)
        ours.add(base)
        theirs = faiss.IndexPQ(dim, m, nbits, fmetric)
        theirs.train(ft)
        theirs.add(fb)
        prepared = normalize_rows(queries) if metric == "cosine" else queries
        tables = ours.codec.tables(prepared, "l2" if metric == "l2" else "ip")
        codes = ours.codes
        fns: dict[str, Callable[[], Any]] = {
            "PQIndex.search": partial(ours.search, queries, 10),
            "adc_topk kernel": partial(adc_topk, tables, codes, empty, False, 10, 1),
            "IndexPQ": partial(theirs.search, fq, 10),
        }
        if nbits == 4:
            fast = faiss.IndexPQFastScan(dim, m, 4, fmetric)
            fast.train(ft)
            fast.add(fb)
            fns["IndexPQFastScan"] = partial(fast.search, fq, 10)
        times = fastest(fns, repeats)
        size = ours.codec.code_size
        add_row(f"PQ m={m} nbits={nbits}", times, "PQIndex.search", "IndexPQ", size)
        add_row(f"PQ m={m} nbits={nbits}", times, "adc_topk kernel", "IndexPQ", size, "tables precomputed")
        if nbits == 4:
            add_row(f"PQ m={m} nbits=4", times, "PQIndex.search", "IndexPQFastScan", size)

    # ---- binary --------------------------------------------------------------------
    for bits in (1, 2, 4):
        ours = BinaryIndex(dim, metric, bits_per_dim=bits, rotate=True, keep_vectors=False)
        ours.train(train)
        ours.add(base)
        codec = ours.codec
        qcodes = codec.encode(normalize_rows(queries) if metric == "cosine" else queries)
        codes = ours.codes
        size = codec.code_size
        if bits == 1:
            flat = faiss.IndexBinaryFlat(codes.shape[1] * 64)
            flat.add(codes.view(np.uint8))
            qbytes = np.ascontiguousarray(qcodes.view(np.uint8))
            times = fastest({
                "BinaryIndex.search": partial(ours.search, queries, 10),
                "hamming_scan_topk kernel": partial(hamming_scan_topk, qcodes, codes, empty, False, 10, 1),
                "IndexBinaryFlat": partial(flat.search, qbytes, 10),
            }, repeats)
            add_row("binary 1 bit/dim", times, "BinaryIndex.search", "IndexBinaryFlat", size, "same codes")
            add_row("binary 1 bit/dim", times, "hamming_scan_topk kernel", "IndexBinaryFlat", size, "same codes")
        else:
            weights, const, mode = codec.plane_weights(metric)
            times = fastest({
                "BinaryIndex.search": partial(ours.search, queries, 10),
                "plane_scan_topk kernel": partial(plane_scan_topk, qcodes, codes, bits, codec.n_words, weights, const,
                                                   mode, empty, False, 10, 1),
            }, repeats)
            add_row(f"binary {bits} bits/dim", times, "BinaryIndex.search", None, size, "plane-weighted, no faiss equivalent")
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = f"{'dataset':22} {'scan':20} {'code B':>6} {'/f32':>6} {'vecdb path':26} {'vecdb codes/s':>13} {'faiss path':16} {'faiss codes/s':>13} {'ratio':>6} busy"
    print(header)
    print("-" * len(header))
    for r in rows:
        faiss_rate = f"{r['faiss_codes_per_s']:.3g}" if "faiss" in r else "-"
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
        frac = f"1/{r['float_bytes'] / r['code_bytes']:.1f}"
        print(f"{r['dataset']:22} {r['scan']:20} {r['code_bytes']:>6} {frac:>6} {r['vecdb']:26} {r['vecdb_codes_per_s']:>13.3g} "
              f"{r.get('faiss', '-'):16} {faiss_rate:>13} {ratio:>6} {'!' if r['busy'] else ''}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="arxiv-minilm-384,glove-6b-50d-angular,mnist-784-euclidean")
    parser.add_argument("--queries", type=int, default=200, help="queries per timed batch")
    parser.add_argument("--train", type=int, default=20000, help="training sample size")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes; the fastest is kept")
    parser.add_argument("--allow-busy", action="store_true", help="run on a busy machine (rows flagged)")
    parser.add_argument("--out", default="bench/results/codes_scan.json")
    args = parser.parse_args(argv)

    import faiss

    from vecdb.bench import machine
    from vecdb.errors import VecdbError
    from vecdb.kernels._jit import threads

    faiss.omp_set_num_threads(1)
    rows: list[dict[str, Any]] = []
    try:
        with machine.bench_lock():
            start_check = machine.check_quiet(args.allow_busy)
            prov = machine.provenance(None if argv is None else ["bench/codes_scan.py", *argv])
            with threads(1):
                for name in args.datasets.split(","):
                    rows.extend(bench_dataset(name, args.queries, args.train, args.repeats))
    except VecdbError as exc:
        print(f"codes_scan.py: error: {exc}", file=sys.stderr)
        return 2
    print_table(rows)
    busy = start_check["busy"] or any(r["busy"] for r in rows)
    record = {"meta": {"threads": 1, "queries": args.queries, "repeats": args.repeats, "k": 10, "stat": "best"},
              "provenance": prov, "start_check": start_check, "busy": {"flagged": busy}, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    if busy:
        print("WARNING: BUSY MACHINE: other processes used more than a quarter of the CPUs; rows marked '!'")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
