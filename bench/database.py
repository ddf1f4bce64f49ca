"""Benchmark of the embedded database (``vecdb.open``) and of the embedded peers.

``own``    vecdb alone on synthetic clustered data (default 1M x 128, l2): bulk upsert
           throughput, close/checkpoint and reopen time, then single-query QPS and recall@10 over
           an ``ef`` sweep without a filter and with payload filters of 1% / 10% / 50%
           (``{"bucket": {"lt": s}}``), each filter under vecdb's own choice (filter_mode=auto)
           and graph-only (filter_mode=graph). Every swept ef must move recall.
``peers``  vecdb's database and the embedded peers through the ``vecdb bench`` harness, like
           with like: exact against exact (db-vecdb-flat, qdrant-local, lancedb without an
           index, milvus-lite-flat) and indexed against indexed (db-vecdb-hnsw, chroma,
           lancedb-ivf-hnsw-sq, milvus-lite-ivf); one query per call, targets interleaved per
           setting, every swept knob checked to move recall. Run it with bench/.venv-peers's
           python (``bash bench/peers-venv.sh`` creates it).

Both take the benchmark lock, refuse a busy machine (``--allow-busy`` flags instead), repeat
each setting (``--repeats``, best pass reported unless ``--stat median``) and record the
provenance (commit, dirty tree, versions, machine, load, command line) in their JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vecdb.bench import machine
from vecdb.bench.checks import DeadKnobError, dead_knobs
from vecdb.bench.measure import dir_bytes
from vecdb.errors import VecdbError
from vecdb.eval import ground_truth, recall_at_k

ROOT = Path(__file__).resolve().parents[1]
K = 10
EXACT_PEERS = "db-vecdb-flat,qdrant-local,lancedb,milvus-lite-flat"
ANN_PEERS = "db-vecdb-hnsw,chroma,lancedb-ivf-hnsw-sq,milvus-lite-ivf"
# one shared grid: each target is timed once per distinct value of its own knobs
PEER_GRID = ";".join(f"ef={ef},nprobe={nprobe},nprobes={nprobes}"
                     for ef, nprobe in ((16, 1), (32, 4), (64, 16), (128, 32), (256, 64)) for nprobes in (2, 16))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- own workload ------------------------------------------------------------------------
def timed_queries(search: Any, queries: np.ndarray, repeats: int, stat: str) -> tuple[np.ndarray, float, list[float]]:
    """Each query in turn through ``search``, ``repeats`` passes; (ids of the reported pass,
    its QPS, the QPS of every pass). The reported pass is the fastest or the median one."""
    search(queries[0])  # warm-up (JIT, caches)
    passes = []
    for _ in range(repeats):
        out = np.full((len(queries), K), -1, np.int64)
        start = time.perf_counter()
        for i, q in enumerate(queries):
            row = np.asarray(search(q), np.int64)[:K]
            out[i, : len(row)] = row
        passes.append((time.perf_counter() - start, out))
    passes.sort(key=lambda p: p[0])
    seconds, ids = passes[0] if stat == "best" else passes[(len(passes) - 1) // 2]
    return ids, len(queries) / seconds, [len(queries) / s for s, _ in passes]


def run_own(args: argparse.Namespace) -> dict[str, Any]:
    """Upsert, reopen and search one collection; QPS with and without filters per ef and mode."""
    import vecdb
    from vecdb.data.synthetic import gaussian_mixture

    n, d = args.n, args.dim
    data = gaussian_mixture(n + args.queries, d, seed=1338)
    base, queries = data[:n], data[n:]
    bucket = np.random.default_rng(5).integers(0, 100, n)
    folder = Path(args.workdir) / "own-db"
    shutil.rmtree(folder, ignore_errors=True)
    params = {"M": args.M, "ef_construction": args.ef_construction, "progress": False} if args.index == "hnsw" else {}
    result: dict[str, Any] = {"workload": "own", "n": n, "dim": d, "metric": "l2", "index": args.index,
                              "index_params": params, "batch": args.batch, "queries": args.queries,
                              "filter_queries": args.filter_queries, "repeats": args.repeats, "stat": args.stat}
    log(f"own: upserting {n} x {d} in batches of {args.batch} ({args.index} {params})")
    watch = machine.Watch()
    db = vecdb.open(folder, map_size=1 << 32)
    col = db.create_collection("bench", dim=d, metric="l2", index=args.index, index_params=params)
    start = time.perf_counter()
    for b0 in range(0, n, args.batch):
        ids = np.arange(b0, min(n, b0 + args.batch))
        col.upsert(ids, base[ids], payloads=[{"bucket": int(v)} for v in bucket[ids].tolist()])
        if (b0 // args.batch) % 10 == 0:
            log(f"  {b0 + len(ids)} points, {(b0 + len(ids)) / (time.perf_counter() - start):.0f} vectors/s")
    result["upsert_seconds"] = time.perf_counter() - start
    result["upsert_vectors_per_s"] = n / result["upsert_seconds"]
    start = time.perf_counter()
    db.close()
    result["close_checkpoint_seconds"] = time.perf_counter() - start
    result["disk_bytes"] = dir_bytes(folder)
    start = time.perf_counter()
    db = vecdb.open(folder)
    col = db.get_collection("bench")
    result["reopen_seconds"] = time.perf_counter() - start
    result["load_quiet"] = dataclasses.asdict(watch.stop())
    log(f"own: upsert {result['upsert_vectors_per_s']:.0f} vectors/s, reopen {result['reopen_seconds']:.2f}s")
    result["stats"] = dataclasses.asdict(col.stats())
    efs = [int(e) for e in args.ef.split(",")] if args.index == "hnsw" else [0]
    runs = []
    for label, pct in [("none", None), ("1%", 1), ("10%", 10), ("50%", 50)]:
        flt = None if pct is None else {"bucket": {"lt": pct}}
        q = queries if pct is None else queries[: args.filter_queries]
        rows = None if pct is None else np.flatnonzero(bucket < pct)
        truth = ground_truth(base, q, K, "l2", allow=rows)[0]
        modes = [None] if pct is None or args.index != "hnsw" else args.filter_modes.split(",")
        for mode in modes:
            for ef in efs:
                knobs: dict[str, Any] = {"ef": ef} if ef else {}
                if mode:
                    knobs["filter_mode"] = mode
                quiet = machine.Watch()
                found, qps, all_qps = timed_queries(lambda v: col.search(v, k=K, filter=flt, params=knobs).ids[0], q,
                                                    args.repeats, args.stat)
                qz = quiet.stop()
                runs.append({"target": "vecdb", "filter": label, "selectivity": None if pct is None else pct / 100,
                             "params": knobs, "threads": 0, "batch": 1, "qps": qps, "qps_passes": all_qps,
                             f"recall_at_{K}": recall_at_k(found, truth, K), "queries": len(q),
                             "others_share": qz.others_share, "busy": qz.busy, "load_before": qz.load_before,
                             "load_after": qz.load_after})
                log(f"  filter {label:>4} {mode or '-':>5} ef={ef:<4} qps={qps:8.1f} "
                    f"recall@10={runs[-1][f'recall_at_{K}']:.4f}{' BUSY' if qz.busy else ''}")
    if args.hnswlib and args.index == "hnsw":
        runs += hnswlib_beside(args, base, queries, bucket)
    result["runs"] = runs
    # every filter case under graph mode (and unfiltered) must respond to ef; auto at 1% scans exactly
    checked = [dict(r, selectivity=None, target=f"{r['target']}[{r['filter']},{r['params'].get('filter_mode', '-')}]",
                    params={"ef": r["params"].get("ef")})
               for r in runs if r["params"].get("filter_mode", "graph") == "graph"]
    dead = dead_knobs(checked, K, {t: ("ef",) for t in {r["target"] for r in checked}}) if len(efs) > 1 else []
    result["knob_check"] = {"ok": not dead, "dead": dead}
    result["busy"] = {"flagged": any(r["busy"] for r in runs) or result["load_quiet"]["busy"],
                      "busy_settings": sum(r["busy"] for r in runs), "settings": len(runs)}
    db.close()
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def hnswlib_beside(args: argparse.Namespace, base: np.ndarray, queries: np.ndarray,
                   bucket: np.ndarray) -> list[dict[str, Any]]:
    """hnswlib on the same data, M, ef_construction and queries: build time, then the same ef
    sweep one query per call, unfiltered and with each filter under both strategies: its graph
    filter (a Python callable per visited node, its only filter API) and the exact scan of the
    allowed rows (numpy, one matrix-vector product per query), as vecdb's auto picks at 1%."""
    import hnswlib
    from numba import config as numba_config

    n, d = base.shape
    threads = numba_config.NUMBA_NUM_THREADS
    index = hnswlib.Index(space="l2", dim=d)
    index.init_index(max_elements=n, M=args.M, ef_construction=args.ef_construction, random_seed=1)
    start = time.perf_counter()
    index.add_items(base, np.arange(n), num_threads=threads)
    build = time.perf_counter() - start
    log(f"hnswlib: built {n} x {d} in {build:.1f}s with {threads} threads")
    efs = [int(e) for e in args.ef.split(",")]
    runs = []
    for label, pct in [("none", None), ("1%", 1), ("10%", 10), ("50%", 50)]:
        q = queries if pct is None else queries[: args.filter_queries]
        rows = None if pct is None else np.flatnonzero(bucket < pct)
        truth = ground_truth(base, q, K, "l2", allow=rows)[0]
        if pct is None:
            cases: list[tuple[str, Any]] = [("graph", None)]
        else:
            allowed = np.zeros(n, bool)
            allowed[rows] = True
            sub, sub_norms = base[rows], np.einsum("ij,ij->i", base[rows], base[rows])

            def scan(v: np.ndarray, sub: np.ndarray = sub, sub_norms: np.ndarray = sub_norms,
                     rows: np.ndarray = rows) -> np.ndarray:
                dist = sub_norms - 2 * (sub @ v)
                top = np.argpartition(dist, K)[:K]
                return rows[top[np.argsort(dist[top])]]
            cases = [("graph", allowed.__getitem__), ("scan", scan)]
        for mode, how in cases:
            for ef in (efs if mode == "graph" else [0]):
                if mode == "graph":
                    index.set_ef(max(ef, K))
                    search = (lambda v: index.knn_query(v, k=K, num_threads=1, filter=how)[0][0])  # noqa: E731
                else:
                    search = how
                quiet = machine.Watch()
                found, qps, all_qps = timed_queries(search, q, args.repeats, args.stat)
                qz = quiet.stop()
                params: dict[str, Any] = {"ef": ef} if ef else {}
                if pct is not None:
                    params["filter_mode"] = mode
                runs.append({"target": "hnswlib", "filter": label, "selectivity": None if pct is None else pct / 100,
                             "params": params, "threads": 0, "batch": 1, "qps": qps, "qps_passes": all_qps,
                             f"recall_at_{K}": recall_at_k(found, truth, K), "queries": len(q),
                             "build_seconds": build, "others_share": qz.others_share, "busy": qz.busy,
                             "load_before": qz.load_before, "load_after": qz.load_after})
                log(f"  hnswlib filter {label:>4} {mode:>5} ef={ef:<4} qps={qps:8.1f} "
                    f"recall@10={runs[-1][f'recall_at_{K}']:.4f}{' BUSY' if qz.busy else ''}")
    return runs


# ---- peers ---------------------------------------------------------------------------------
def run_peers(args: argparse.Namespace) -> int:
    """The peer comparison through the harness (its own lock, checks and provenance)."""
    from vecdb.cli import main as vecdb_main

    targets = args.targets or ",".join(t for t in (EXACT_PEERS, ANN_PEERS))
    argv = ["bench", "--dataset", args.dataset, "--targets", targets, "--baseline", "db-vecdb-flat,db-vecdb-hnsw",
            "--build", f"M={args.M},ef_construction={args.ef_construction},nlist={args.nlist}",
            "--search", args.grid, "--k", str(K), "--threads", "1", "--batch", "1", "--repeats", str(args.repeats),
            "--stat", args.stat, "--memory", "skip", "--out", args.out]
    if args.max_queries:
        argv += ["--max-queries", str(args.max_queries)]
    if args.allow_busy:
        argv.append("--allow-busy")
    return vecdb_main(argv)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    own = sub.add_parser("own", help="1M x 128 synthetic: upsert, reopen, QPS with/without filters")
    own.add_argument("--n", type=int, default=1_000_000)
    own.add_argument("--dim", type=int, default=128)
    own.add_argument("--index", default="hnsw")
    own.add_argument("--ef", default="16,32,64,128,256")
    own.add_argument("--filter-modes", default="auto,graph", help="filter_mode values timed for each filter")
    own.add_argument("--batch", type=int, default=10_000)
    own.add_argument("--queries", type=int, default=1000, help="unfiltered queries")
    own.add_argument("--filter-queries", type=int, default=200, help="queries per filtered setting")
    own.add_argument("--keep", action="store_true", help="keep the database folder")
    own.add_argument("--no-hnswlib", dest="hnswlib", action="store_false",
                     help="skip hnswlib on the same data (built and queried after vecdb)")
    own.add_argument("--workdir", default=str(ROOT / ".bench-work"))
    peers = sub.add_parser("peers", help="vecdb's database against the embedded peers (bench/.venv-peers)")
    peers.add_argument("--dataset", default="arxiv-minilm-384")
    peers.add_argument("--targets", default="", help=f"default: {EXACT_PEERS},{ANN_PEERS}")
    peers.add_argument("--grid", default=PEER_GRID, help="shared search grid (ef, nprobe, nprobes)")
    peers.add_argument("--max-queries", type=int, default=500)
    peers.add_argument("--nlist", type=int, default=256, help="Milvus IVF_FLAT lists")
    for p in (own, peers):
        p.add_argument("--M", type=int, default=16)
        p.add_argument("--ef-construction", type=int, default=100)
        p.add_argument("--repeats", type=int, default=3)
        p.add_argument("--stat", choices=("best", "median"), default="best")
        p.add_argument("--allow-busy", action="store_true", help="run on a busy machine (flagged in the JSON)")
        p.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "peers":
            return run_peers(args)
        with machine.bench_lock():
            start_check = machine.check_quiet(args.allow_busy)
            prov = machine.provenance([sys.executable, *sys.argv] if argv is None else ["bench/database.py", *argv])
            result = run_own(args)
    except VecdbError as exc:
        print(f"database.py: error: {exc}", file=sys.stderr)
        return 2
    result["provenance"], result["start_check"] = prov, start_check
    result["valid"] = result["knob_check"]["ok"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    log(f"wrote {args.out}")
    if result["busy"]["flagged"] or start_check["busy"]:
        log("WARNING: BUSY MACHINE: other processes used more than a quarter of the CPUs; figures not comparable")
    if not result["knob_check"]["ok"]:
        print(f"database.py: error: {DeadKnobError(result['knob_check']['dead'])}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
