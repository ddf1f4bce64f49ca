"""SPANN benchmark: recall@k against latency (one query per call, mean and p99), postings and
bytes read per query, resident memory and build time, in the same run as our HNSW and faiss
IndexIVFFlat (its inverted lists moved to an OnDiskInvertedLists file when faiss can).

SPANN keeps its postings in an LMDB environment under ``--workdir``; with ``--cold`` that
file is evicted from the page cache (posix_fadvise DONTNEED) before every sweep point, so the
first reads of each point come from the disk. Latency is measured at one thread (Numba and
BLAS) unless ``--threads`` says otherwise. Prints a table and writes JSON.

    python bench/spann.py --datasets glove-6b-50d-angular,mnist-784-euclidean,arxiv-minilm-384
    python bench/spann.py --datasets glove-6b-50d-angular --n-base 20000 --n-queries 200   # a quick try
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

TRAIN_SAMPLE = 65_536
#: vectors per SPANN add call (each call's rewritten postings are held until it commits)
ADD_CHUNK = 100_000


def load(name: str, n_base: int | None, n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray, str, np.ndarray]:
    """Base (optionally its first ``n_base`` rows), queries, metric and exact top-k ids."""
    from vecdb.data import load_dataset
    from vecdb.index import FlatIndex

    ds = load_dataset(name)
    metric = "l2" if ds.metric.value == "l2" else "cosine"
    base = np.ascontiguousarray(ds.base[:n_base] if n_base else ds.base, np.float32)
    queries = np.ascontiguousarray(ds.queries[:n_queries], np.float32)
    if ds.gt_ids is not None and not n_base and ds.gt_ids.shape[1] >= k:
        gt = np.asarray(ds.gt_ids[:n_queries, :k])
    else:
        flat = FlatIndex(base.shape[1], metric)
        flat.add(base)
        gt = flat.search(queries, k).ids
    return base, queries, metric, gt


def recall(got: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean([len(set(g.tolist()) & set(w.tolist())) / len(w) for g, w in zip(got, gt)]))


def per_query(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids of each query searched alone, and the seconds each call took."""
    ids, secs = [], np.empty(len(queries))
    search(queries[:1])                                            # warm-up (JIT load)
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


def bench_spann(base: np.ndarray, queries: np.ndarray, metric: str, gt: np.ndarray, k: int, workdir: Path,
                sweep: list[int], cold: bool, params: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from vecdb.index import SPANN

    path = workdir / "spann"
    rng = np.random.default_rng(0)
    sample = base[np.sort(rng.choice(len(base), min(len(base), TRAIN_SAMPLE), replace=False))]
    t0 = time.perf_counter()
    index = SPANN(base.shape[1], metric, path, **params)
    index.train(sample)
    for start in range(0, len(base), ADD_CHUNK):              # one commit per chunk: bounded memory
        index.add(base[start : start + ADD_CHUNK], np.arange(start, min(start + ADD_CHUNK, len(base))))
    build = time.perf_counter() - t0
    sizes = index.posting_sizes()
    info = {"target": "spann", "build_s": build, "resident_bytes": index.memory_bytes(), "disk_bytes": index.disk_bytes(),
            "raw_bytes": base.nbytes, "heads": index.n_heads, "posting_mean": float(sizes.mean()),
            "posting_max": int(sizes.max()), "replication": float(sizes.sum() / len(base)), "params": index.params()}
    rows = []
    data_file = path / "data.mdb"
    for mp in sweep:
        for mode in (["warm", "cold"] if cold else ["warm"]):
            stats: list[Any] = []

            def search(q: np.ndarray, mp: int = mp) -> np.ndarray:
                res, st = index.search_with_stats(q, k, max_postings=mp)
                stats.append(st)
                return res.ids

            if mode == "cold" and not evict(data_file):
                continue
            ids, secs = per_query(search, queries)
            if mode == "warm":
                ids, secs = per_query(search, queries)            # the second pass: pages cached
            stats = stats[-len(queries):]
            rows.append(row("spann", "max_postings", mp, ids, secs, gt, cache=mode,
                            postings_per_q=float(np.mean([s.postings.mean() for s in stats])),
                            bytes_per_q=float(np.mean([s.bytes_read for s in stats])),
                            entries_per_q=float(np.mean([s.entries.mean() for s in stats]))))
    index.close()
    return info, rows


def bench_hnsw(base: np.ndarray, queries: np.ndarray, metric: str, gt: np.ndarray, k: int,
               sweep: list[int]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from vecdb.index import HNSW

    t0 = time.perf_counter()
    index = HNSW(base.shape[1], metric, M=16, ef_construction=200, progress=False)
    index.add(base)
    info = {"target": "hnsw", "build_s": time.perf_counter() - t0, "resident_bytes": index.memory_bytes(),
            "raw_bytes": base.nbytes}
    rows = []
    for ef in sweep:
        ids, secs = per_query(lambda q, ef=ef: index.search(q, k, ef=max(ef, k)).ids, queries)
        rows.append(row("hnsw", "ef", ef, ids, secs, gt, cache="memory"))
    return info, rows


def bench_ivf(base: np.ndarray, queries: np.ndarray, metric: str, gt: np.ndarray, k: int, workdir: Path,
              sweep: list[int], cold: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import faiss

    from vecdb.kernels.distances import normalize_rows

    xb = normalize_rows(base) if metric == "cosine" else base
    xq = normalize_rows(queries) if metric == "cosine" else queries
    fmetric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    nlist = max(16, int(4 * np.sqrt(len(xb))))
    t0 = time.perf_counter()
    quantizer = faiss.IndexFlatL2(xb.shape[1]) if metric == "l2" else faiss.IndexFlatIP(xb.shape[1])
    index = faiss.IndexIVFFlat(quantizer, xb.shape[1], nlist, fmetric)
    rng = np.random.default_rng(0)
    index.train(xb[np.sort(rng.choice(len(xb), min(len(xb), TRAIN_SAMPLE), replace=False))])
    index.add(xb)
    on_disk = False
    lists_file = workdir / "ivf.ivfdata"
    try:                                          # faiss's own on-disk inverted lists
        from faiss.contrib.ondisk import merge_ondisk

        shard = workdir / "ivf.shard"
        faiss.write_index(index, str(shard))
        empty = faiss.clone_index(index)          # trained quantizer, no lists
        empty.reset()
        merge_ondisk(empty, [str(shard)], str(lists_file))
        index, on_disk = empty, True
    except Exception as exc:  # noqa: BLE001 (reported in the output: the in-memory lists are measured)
        print(f"  faiss on-disk lists unavailable ({type(exc).__name__}: {exc}); measuring in-memory IVF", file=sys.stderr)
    info = {"target": "faiss-ivfflat", "build_s": time.perf_counter() - t0, "nlist": nlist, "on_disk": on_disk,
            "raw_bytes": base.nbytes, "resident_bytes": int(nlist * xb.shape[1] * 4) if on_disk else None}
    rows = []
    for nprobe in sweep:
        index.nprobe = nprobe
        for mode in (["warm", "cold"] if cold and on_disk else ["warm"]):
            if mode == "cold" and not evict(lists_file):
                continue
            ids, secs = per_query(lambda q: index.search(q, k)[1], xq)
            if mode == "warm":
                ids, secs = per_query(lambda q: index.search(q, k)[1], xq)
            rows.append(row("faiss-ivfflat", "nprobe", nprobe, ids, secs, gt, cache=mode))
    return info, rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="glove-6b-50d-angular")
    ap.add_argument("--n-base", type=int, default=None, help="first rows of the base only (exact ground truth recomputed)")
    ap.add_argument("--n-queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--spann-sweep", default="8,16,32,64,128", help="max_postings values")
    ap.add_argument("--hnsw-sweep", default="16,32,64,128,256", help="ef values")
    ap.add_argument("--ivf-sweep", default="4,8,16,32,64", help="nprobe values")
    ap.add_argument("--spann-params", default="{}", help="JSON of SPANN construction parameters")
    ap.add_argument("--targets", default="spann,hnsw,faiss-ivfflat")
    ap.add_argument("--cold", action="store_true", help="also measure with the data files evicted from the page cache")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default=None, help="where indexes are written (default: a temporary directory)")
    ap.add_argument("--out", default="bench/results/spann.json")
    ap.add_argument("--allow-busy", action="store_true", help="run on a busy machine (the result is flagged busy)")
    args = ap.parse_args(argv)

    from vecdb.bench.machine import bench_lock, check_quiet, provenance
    from vecdb.kernels._jit import threads

    with bench_lock():
        start_quiet = check_quiet(args.allow_busy)
        results = _run(args, threads)
    results["start_quiet"] = start_quiet
    results["busy"] = {"flagged": bool(start_quiet.get("busy"))}
    results["provenance"] = provenance(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return 0


def _run(args: argparse.Namespace, threads: Callable[[int], Any]) -> dict[str, Any]:
    """Every dataset of ``args``: builds, sweeps, the printed table; the record to save."""

    targets = set(args.targets.split(","))
    ints = lambda text: [int(v) for v in text.split(",") if v]  # noqa: E731
    results: dict[str, Any] = {"argv": sys.argv, "datasets": {}}
    work_root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="vecdb-spann-bench-"))
    try:
        for name in args.datasets.split(","):
            base, queries, metric, gt = load(name, args.n_base, args.n_queries, args.k)
            print(f"{name}: {base.shape[0]} x {base.shape[1]} {metric}, {len(queries)} queries, k={args.k}")
            work = work_root / name
            work.mkdir(parents=True, exist_ok=True)
            infos, rows = [], []
            with threads(args.threads):
                if "spann" in targets:
                    info, got = bench_spann(base, queries, metric, gt, args.k, work, ints(args.spann_sweep), args.cold,
                                            json.loads(args.spann_params))
                    infos.append(info)
                    rows += got
                if "hnsw" in targets:
                    info, got = bench_hnsw(base, queries, metric, gt, args.k, ints(args.hnsw_sweep))
                    infos.append(info)
                    rows += got
                if "faiss-ivfflat" in targets:
                    info, got = bench_ivf(base, queries, metric, gt, args.k, work, ints(args.ivf_sweep), args.cold)
                    infos.append(info)
                    rows += got
            for info in infos:
                shown = {k: v for k, v in info.items() if k != "params"}
                print("  " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
            print(f"  {'target':14} {'knob':>14} {'cache':>6} {'recall':>7} {'mean ms':>8} {'p99 ms':>8} {'qps':>8} "
                  f"{'postings/q':>10} {'KB/q':>8}")
            for r in rows:
                knob = next(f"{n}={r[n]}" for n in ("max_postings", "ef", "nprobe") if n in r)
                print(f"  {r['target']:14} {knob:>14} {r['cache']:>6} {r['recall']:7.3f} {r['mean_ms']:8.3f} "
                      f"{r['p99_ms']:8.3f} {r['qps']:8.0f} {r.get('postings_per_q', float('nan')):10.1f} "
                      f"{r.get('bytes_per_q', float('nan')) / 1024:8.1f}")
            results["datasets"][name] = {"n_base": len(base), "dim": base.shape[1], "metric": metric, "builds": infos,
                                         "rows": rows}
    finally:
        if not args.workdir:
            shutil.rmtree(work_root, ignore_errors=True)
    return results


if __name__ == "__main__":
    sys.exit(main())
