"""DiskANN beside SPANN (issue 13): build a disk index with diskannpy 0.7.0 under a resident
budget and search it one query per call. Runs in its own venv (bench/diskann-venv.sh), as a
subprocess of bench/spann.py, and writes one JSON object to ``--out`` (DiskANN itself logs to stdout).

    bench/.venv-diskann/bin/python bench/diskann_run.py --base b.npy --queries q.npy --gt gt.npy \\
        --metric l2 --budget-gb 0.05 --workdir /tmp/d --sweep 10,20,40 --out /tmp/d.json

Cosine data is normalised here and searched by l2 (the same order on unit vectors).
``StaticDiskIndex(num_threads=1)`` hangs at load on this machine, so the index is opened with
two threads and still queried one query per call.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np


def rss_bytes() -> tuple[int, int]:
    """(current, peak) resident set size of this process, from /proc/self/status."""
    now = peak = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return now, peak


def cpu_seconds() -> float:
    """User + system CPU time of this process (DiskANN's build threads included)."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def evict(folder: Path) -> None:
    """Drop the index files from the page cache (DiskANN reads with O_DIRECT anyway)."""
    for path in folder.iterdir():
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help=".npy float32 (n, dim), or a raw float32 file with --dim")
    ap.add_argument("--dim", type=int, default=None)
    ap.add_argument("--queries", help="required unless --build-only")
    ap.add_argument("--gt", help="required unless --build-only")
    ap.add_argument("--metric", choices=["l2", "cosine"], required=True)
    ap.add_argument("--budget-gb", type=float, required=True, help="search_memory_maximum (GB)")
    ap.add_argument("--build-gb", type=float, default=1.0, help="build_memory_maximum (GB)")
    ap.add_argument("--build-threads", type=int, default=2)
    ap.add_argument("--graph-degree", type=int, default=64)
    ap.add_argument("--complexity", type=int, default=100, help="build list size")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--sweep", default="10,20,40,80", help="search list sizes (complexity)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--out", help="where the JSON result is written (DiskANN logs to stdout)")
    ap.add_argument("--build-only", action="store_true", help="build the index (and its build.json), search nothing")
    ap.add_argument("--reuse", action="store_true",
                    help="search the index already built in --workdir (its build.json gives the build figures)")
    args = ap.parse_args()
    if not args.build_only and not (args.queries and args.gt and args.out):
        ap.error("--queries, --gt and --out are required unless --build-only")

    import diskannpy as dap

    if args.dim:
        raw = np.memmap(args.base, np.float32, "r")
        base = raw.reshape(-1, args.dim)
    else:
        base = np.load(args.base, mmap_mode="r")
    if args.metric == "cosine":
        base = base / np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-30)
    folder = Path(args.workdir)
    record = folder / "build.json"
    if args.reuse:
        if not record.exists():
            raise SystemExit(f"--reuse: no finished build in {folder} (build.json missing)")
        built = json.loads(record.read_text())
        if abs(built["search_memory_maximum_gb"] - args.budget_gb) > 1e-6 or built["n"] != len(base):
            raise SystemExit(f"--reuse: {folder} was built for another budget or data size: {built}")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        record.unlink(missing_ok=True)
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        dap.build_disk_index(data=np.ascontiguousarray(base, np.float32), distance_metric="l2",
                             index_directory=str(folder), complexity=args.complexity, graph_degree=args.graph_degree,
                             search_memory_maximum=args.budget_gb, build_memory_maximum=args.build_gb,
                             num_threads=args.build_threads, pq_disk_bytes=0)
        built = {"build_s": time.perf_counter() - t0, "build_cpu_s": cpu_seconds() - cpu0, "n": len(base),
                 "search_memory_maximum_gb": args.budget_gb, "build_memory_maximum_gb": args.build_gb,
                 "build_threads": args.build_threads, "graph_degree": args.graph_degree,
                 "complexity": args.complexity, "load_avg_at_end": os.getloadavg()}
        record.write_text(json.dumps(built))
    del base
    if args.build_only:
        return 0
    queries = np.ascontiguousarray(np.load(args.queries), np.float32)
    gt = np.load(args.gt)
    if args.metric == "cosine":
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-30)
    before = rss_bytes()[0]
    index = dap.StaticDiskIndex(index_directory=str(folder), num_threads=2, num_nodes_to_cache=0)
    loaded = rss_bytes()[0]
    rows = []
    for value in [int(v) for v in args.sweep.split(",") if v]:
        for mode in (["warm", "cold"] if args.cold else ["warm"]):
            if mode == "cold":
                evict(folder)
            index.search(queries[0], args.k, max(value, args.k))            # warm-up
            ids = np.empty((len(queries), args.k), np.int64)
            secs = np.empty(len(queries))
            for i in range(len(queries)):
                t = time.perf_counter()
                res = index.search(queries[i], args.k, max(value, args.k))
                secs[i] = time.perf_counter() - t
                ids[i] = np.asarray(res[0], np.int64)[: args.k]
            hits = [len(set(g.tolist()) & set(w.tolist())) / args.k for g, w in zip(ids, gt[:, : args.k])]
            rows.append({"target": "diskann", "complexity": value, "cache": mode, "recall": float(np.mean(hits)),
                         "mean_ms": 1e3 * float(secs.mean()), "p99_ms": 1e3 * float(np.percentile(secs, 99)),
                         "qps": float(len(secs) / secs.sum())})
    now, peak = rss_bytes()
    files = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    info = {"target": "diskann", **built, "reused_build": args.reuse,
            "rss_bytes": now, "rss_peak_bytes": peak, "rss_growth_at_load": loaded - before, "disk_bytes": files,
            "max_rss_self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    Path(args.out).write_text(json.dumps({"info": info, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
