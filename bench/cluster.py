"""Cluster benchmark: what fanning a search out over 1, 2 and 4 shards (vecdb.cluster on a
local Ray, one replica per shard) costs against the embedded collection, one query per call
and batched, on a synthetic set; then a model of 1B x 768 vectors on N machines fed with the
per-shard latency distributions measured here.

Measured (this machine): QPS and p50/p99 latency of the embedded collection and of each
cluster, for one query per call and for batches of ``--batch`` queries (one message per
shard per batch), and each shard's own latency as the router sees it (Ray call included);
the cost of one acknowledged write (``--writes`` upserts of one new point each, ``upsert1``:
router -> the cluster's writer actor -> every replica), one query per call asked of a
second router on the same cluster (``reader``) and its own single-point upserts
(``upsert1-2nd``: every router writes through the one writer actor).

Modelled (printed and saved with the assumptions):
  - memory per shard for HNSW (vectors + level-0 links + upper levels) and for SPANN
    (centroids in memory, replicated postings on disk), and the shards needed per machine
    memory;
  - p99 fan-out latency over N shards: the max of N latencies drawn from the measured
    per-shard distribution (scaled to a shard of 1B/N points by log(points), as HNSW's walk
    grows), plus the measured merge cost (resampling cannot go past the largest measured
    latency: measure enough queries, ``--queries``, for the tail of large N);
  - QPS with R replicas of N shards on N x R machines, against linear scaling from the
    smallest layout that fits, and where it stays >= 0.8x linear.

    python bench/cluster.py                                  # the lead's run
    python bench/cluster.py --n 2000 --queries 50 --allow-busy --out /tmp/cluster.json   # a quick try
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np


def stats_ms(secs: np.ndarray) -> dict[str, float]:
    ms = np.asarray(secs) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def timed(call: Callable[[np.ndarray], Any], queries: np.ndarray, batch: int) -> dict[str, Any]:
    """Latency of each call over ``queries`` in calls of ``batch`` rows, and the QPS."""
    call(queries[:batch])   # warm-up
    secs = []
    start = time.perf_counter()
    for i in range(0, len(queries), batch):
        t0 = time.perf_counter()
        call(queries[i:i + batch])
        secs.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    return {"batch": batch, "calls": len(secs), "qps": len(queries) / total, **stats_ms(np.array(secs))}


def measure(coll: Any, queries: np.ndarray, k: int, batch: int, params: dict[str, Any]) -> dict[str, Any]:
    search = lambda q: coll.search(q, k=k, params=params)  # noqa: E731
    return {"single": timed(search, queries, 1), "batched": timed(search, queries, batch)}


def timed_writes(coll: Any, base: np.ndarray, first_id: int, writes: int) -> dict[str, Any]:
    """Latency of ``writes`` upserts of one new point each (acknowledged by every replica)."""
    coll.upsert([first_id], base[:1])   # warm-up
    secs = []
    start = time.perf_counter()
    for i in range(1, writes + 1):
        t0 = time.perf_counter()
        coll.upsert([first_id + i], base[i % len(base)][None, :])
        secs.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    return {"batch": 1, "calls": writes, "qps": writes / total, **stats_ms(np.array(secs))}


def shard_latencies(db: Any, name: str, queries: np.ndarray, k: int, params: dict[str, Any]) -> list[list[float]]:
    """Seconds of each shard's own answer to each query (the router's Ray call included)."""
    import ray
    from vecdb.api import SearchRequest

    coll = db.get_collection(name)
    out = []
    for group in db._shards.groups_now():   # (the bench times each shard alone)
        actor = group.actors[0]
        secs = []
        for q in queries:
            req = SearchRequest.build(coll.info, q[None, :], k, None, None, params, False)._replace(params=dict(params))
            t0 = time.perf_counter()
            ray.get(actor.execute.remote(name, req))
            secs.append(time.perf_counter() - t0)
        out.append(secs)
    return out


def merge_cost(shards: int, nq: int, k: int, trials: int = 200) -> float:
    """Seconds the router spends merging ``shards`` answers of ``nq`` x ``k`` hits."""
    from vecdb.api import QueryResult
    from vecdb.cluster.merge import merge_topk

    rng = np.random.default_rng(0)
    parts = [QueryResult(rng.integers(0, 1 << 40, (nq, k)), np.sort(rng.random((nq, k)).astype(np.float32), axis=1))
             for _ in range(shards)]
    t0 = time.perf_counter()
    for _ in range(trials):
        merge_topk(parts, k, "int")
    return (time.perf_counter() - t0) / trials


# ---- the model ------------------------------------------------------------------------------
def hnsw_bytes(n: float, dim: int, m: int) -> float:
    """Vectors (float32) + level-0 links (2M int32) + upper levels (~M links x 1/(M-1) of points) + ids."""
    return n * (4 * dim + 4 * 2 * m + 4 * m / max(m - 1, 1) + 16)


def spann_bytes(n: float, dim: int, head_ratio: float, replication: float) -> tuple[float, float]:
    """(memory, disk) of SPANN: head vectors + their graph in memory; postings (each vector
    replicated ``replication`` times) on disk."""
    heads = n * head_ratio
    return heads * (4 * dim + 4 * 32 + 16), n * replication * (4 * dim + 8)


def model(latency_s: np.ndarray, measured_points: int, merge_s: dict[int, float], args: argparse.Namespace) -> dict[str, Any]:
    """1B x 768 on N shards x R replicas (see the module docs); every figure with its inputs."""
    rng = np.random.default_rng(1)
    total, dim = args.model_points, args.model_dim
    mem = args.machine_gb * 2**30 * 0.7   # 30 % of a machine's memory kept for the OS, page cache, merges
    need_hnsw = math.ceil(hnsw_bytes(total, dim, args.hnsw_m) / mem)
    spann_mem, spann_disk = spann_bytes(total, dim, args.spann_head_ratio, args.spann_replication)
    need_spann = math.ceil(spann_mem / mem)
    ns = [int(v) for v in args.model_shards.split(",")]
    # merge cost: a + b x shards, fitted to the measured points
    xs = np.array(sorted(merge_s))
    b, a = np.polyfit(xs, [merge_s[x] for x in xs], 1) if len(xs) > 1 else (0.0, merge_s[xs[0]])
    rows = []
    for n in ns:
        per_shard = total / n
        scale = math.log(per_shard) / math.log(max(measured_points, 2))   # HNSW walk grows with log(points)
        lat = latency_s * scale
        draws = rng.choice(lat, size=(args.model_trials, n)).max(axis=1) + (a + b * n)
        service = float(lat.mean())                                        # one shard's cost per query
        qps_per_set = args.cores / service                                 # N machines answer one query each N x service
        rows.append({"shards": n, "points_per_shard": per_shard,
                     "hnsw_gb_per_shard": hnsw_bytes(per_shard, dim, args.hnsw_m) / 2**30,
                     "spann_mem_gb_per_shard": spann_mem / n / 2**30, "spann_disk_gb_per_shard": spann_disk / n / 2**30,
                     "fits_hnsw": n >= need_hnsw, "fits_spann": n >= need_spann,
                     "shard_p50_ms": float(np.percentile(lat, 50) * 1000),
                     "shard_p99_ms": float(np.percentile(lat, 99) * 1000),
                     "fanout_p50_ms": float(np.percentile(draws, 50) * 1000),
                     "fanout_p99_ms": float(np.percentile(draws, 99) * 1000),
                     "qps_per_replica_set": qps_per_set})
    base = next((r for r in rows if r["fits_hnsw"]), rows[-1])
    scaling = []
    for r in rows:
        if not r["fits_hnsw"]:
            continue
        for reps in [int(v) for v in args.model_replicas.split(",")]:
            machines = r["shards"] * reps
            qps = r["qps_per_replica_set"] * reps
            linear = base["qps_per_replica_set"] / base["shards"] * machines
            scaling.append({"shards": r["shards"], "replicas": reps, "machines": machines, "qps": qps,
                            "linear_qps": linear, "efficiency": qps / linear,
                            "fanout_p99_ms": r["fanout_p99_ms"], "tail_over_shard_p99": r["fanout_p99_ms"] / r["shard_p99_ms"],
                            "tail_over_shard_p50": r["fanout_p99_ms"] / r["shard_p50_ms"]})
    return {"assumptions": {"points": total, "dim": dim, "machine_gb": args.machine_gb, "usable_memory_share": 0.7,
                            "cores_per_machine": args.cores, "hnsw_M": args.hnsw_m,
                            "spann_head_ratio": args.spann_head_ratio, "spann_replication": args.spann_replication,
                            "latency_scaling": "measured per-shard latency x log(points per shard)/log(measured points)",
                            "merge_fit_s": {"a": float(a), "b_per_shard": float(b)},
                            "qps": "R x cores / mean shard service time (each query costs one service on each of N shards)",
                            "linear": "QPS per machine of the fewest shards that fit in HNSW, times machines"},
            "shards_needed": {"hnsw": need_hnsw, "spann": need_spann}, "by_shards": rows, "scaling": scaling}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="synthetic points")
    ap.add_argument("--dim", type=int, default=96)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32, help="queries per call, batched")
    ap.add_argument("--index", default="hnsw", choices=["hnsw", "flat"])
    ap.add_argument("--ef", type=int, default=64)
    ap.add_argument("--shards", default="1,2,4")
    ap.add_argument("--writes", type=int, default=200, help="single-point upserts timed per cluster (0: none)")
    ap.add_argument("--model-points", type=float, default=1e9)
    ap.add_argument("--model-dim", type=int, default=768)
    ap.add_argument("--model-shards", default="8,16,32,64,128,256")
    ap.add_argument("--model-replicas", default="1,2,4,8")
    ap.add_argument("--model-trials", type=int, default=20_000)
    ap.add_argument("--machine-gb", type=float, default=256)
    ap.add_argument("--cores", type=int, default=32, help="cores per modelled machine")
    ap.add_argument("--hnsw-m", type=int, default=16)
    ap.add_argument("--spann-head-ratio", type=float, default=0.12)
    ap.add_argument("--spann-replication", type=float, default=8.0)
    ap.add_argument("--out", default="bench/results/cluster.json")
    ap.add_argument("--allow-busy", action="store_true", help="run on a busy machine (the result is flagged busy)")
    args = ap.parse_args(argv)

    from vecdb.bench.machine import run_recorded

    run_recorded(lambda: _run(args), args.allow_busy, Path(args.out), argv)
    return 0


def _run(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    import vecdb
    from vecdb.cluster import connect

    rng = np.random.default_rng(0)
    base = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    params = {"ef": args.ef} if args.index == "hnsw" else {}
    work = Path(tempfile.mkdtemp(prefix="vecdb-cluster-bench-"))
    measured: dict[str, Any] = {}
    try:
        with vecdb.open(str(work / "embedded")) as db:
            coll = db.create_collection("bench", args.dim, metric="l2", index=args.index)
            for i in range(0, args.n, 10_000):
                coll.upsert(np.arange(i, min(i + 10_000, args.n)), base[i:i + 10_000])
            coll.wait_indexed()
            measured["embedded"] = measure(coll, queries, args.k, args.batch, params)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        per_shard: dict[int, list[list[float]]] = {}
        for shards in [int(v) for v in args.shards.split(",")]:
            db = connect(root=str(work / f"cluster-{shards}"), shards=shards, replicas=1)
            try:
                coll = db.create_collection("bench", args.dim, metric="l2", index=args.index)
                for i in range(0, args.n, 10_000):
                    coll.upsert(np.arange(i, min(i + 10_000, args.n)), base[i:i + 10_000])
                coll.wait_indexed()
                measured[f"cluster-{shards}"] = measure(coll, queries, args.k, args.batch, params)
                per_shard[shards] = shard_latencies(db, "bench", queries, args.k, params)
                if args.writes:
                    measured[f"cluster-{shards}"]["upsert1"] = timed_writes(coll, base, args.n, args.writes)
                    reader = connect(root=str(work / f"cluster-{shards}"))   # a second router
                    try:
                        rcoll = reader.get_collection("bench")
                        measured[f"cluster-{shards}"]["reader"] = timed(
                            lambda q: rcoll.search(q, k=args.k, params=params), queries, 1)
                        measured[f"cluster-{shards}"]["upsert1-2nd"] = timed_writes(rcoll, base, 2 * args.n,
                                                                                    args.writes)
                    finally:
                        reader.close()
            finally:
                db.close()
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    merges = {s: merge_cost(s, 1, args.k) for s in (1, 2, 4, 8, 16)}
    one = min(per_shard)
    lat = np.array(per_shard[one]).ravel()
    modelled = model(lat, args.n // one, merges, args)
    _print(measured, per_shard, modelled)
    return {"setup": {k: v for k, v in vars(args).items()}, "measured": measured,
            "shard_latency_s": {str(s): v for s, v in per_shard.items()},
            "merge_s": {str(s): v for s, v in merges.items()}, "model": modelled}


def _print(measured: dict[str, Any], per_shard: dict[int, list[list[float]]], modelled: dict[str, Any]) -> None:
    print(f"{'target':12} {'mode':11} {'qps':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for target, modes in measured.items():
        for mode, r in modes.items():
            print(f"{target:12} {mode:11} {r['qps']:9.0f} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f}")
    for s, lats in per_shard.items():
        flat = np.array(lats).ravel() * 1000
        print(f"cluster-{s}: one shard's answer as the router sees it: p50 {np.percentile(flat, 50):.3f} ms, "
              f"p99 {np.percentile(flat, 99):.3f} ms")
    need = modelled["shards_needed"]
    print(f"model: {modelled['assumptions']['points']:.0e} x {modelled['assumptions']['dim']}: "
          f"HNSW needs >= {need['hnsw']} shards, SPANN >= {need['spann']} (memory)")
    print(f"{'shards':>6} {'HNSW GB':>8} {'SPANN GB':>9} {'disk GB':>8} {'shard p50':>9} {'shard p99':>9} "
          f"{'fan-out p99':>11}  (GB per shard; ms)")
    for r in modelled["by_shards"]:
        taken = "  fan-out tail dominates (p99 > 2x shard p50)" if r["fanout_p99_ms"] > 2 * r["shard_p50_ms"] else ""
        print(f"{r['shards']:6} {r['hnsw_gb_per_shard']:8.1f} {r['spann_mem_gb_per_shard']:9.1f} "
              f"{r['spann_disk_gb_per_shard']:8.1f} {r['shard_p50_ms']:9.3f} {r['shard_p99_ms']:9.3f} "
              f"{r['fanout_p99_ms']:11.3f}{taken}")
    print(f"{'shards':>6} {'replicas':>8} {'machines':>8} {'QPS':>10} {'x linear':>8} {'tail/shard p99':>14}")
    for r in modelled["scaling"]:
        flag = "" if r["efficiency"] >= 0.8 else "  < 0.8x linear"
        print(f"{r['shards']:6} {r['replicas']:8} {r['machines']:8} {r['qps']:10.0f} {r['efficiency']:8.2f} "
              f"{r['tail_over_shard_p99']:14.2f}{flag}")


if __name__ == "__main__":
    sys.exit(main())
