"""The embedded database's own workload (``bench/database.py own``): one collection of synthetic
clustered vectors with a payload bucket per point; bulk upsert, close/checkpoint and reopen
timed; then one query per call over an ``ef`` sweep, unfiltered and with 1 % / 10 % / 50 %
payload filters under each ``filter_mode``; hnswlib beside it on the same data through the
harness's own ``hnswlib`` target (its filter callable, and an exact scan of the allowed rows).
Timing, recall, folder sizes, the knob check and the quiet-machine watch are the harness's."""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vecdb.bench import machine
from vecdb.bench.adapters.base import GatheredScan
from vecdb.bench.adapters.hnsw import Hnswlib
from vecdb.bench.checks import dead_knobs
from vecdb.bench.measure import dir_bytes, time_passes
from vecdb.eval import ground_truth, recall_at_k
from vecdb.types import Metric

log = logging.getLogger(__name__)

K = 10
#: (label, percent of buckets allowed) of each filter case; payload filter {"bucket": {"lt": percent}}
FILTERS: tuple[tuple[str, int | None], ...] = (("none", None), ("1%", 1), ("10%", 10), ("50%", 50))
EXACT_PEERS = "db-vecdb-flat,qdrant-local,lancedb,milvus-lite-flat"
ANN_PEERS = "db-vecdb-hnsw,chroma,lancedb-ivf-hnsw-sq,milvus-lite-ivf"
#: one shared grid for the peers: each target is timed once per distinct value of its own knobs
PEER_GRID = ";".join(f"ef={ef},nprobe={nprobe},nprobes={nprobes}"
                     for ef, nprobe in ((16, 1), (32, 4), (64, 16), (128, 32), (256, 64)) for nprobes in (2, 16))


@dataclasses.dataclass
class OwnConfig:
    """The own workload's settings (the defaults are bench/database.sh's 1M x 128 run)."""

    out: str
    workdir: str
    n: int = 1_000_000
    dim: int = 128
    index: str = "hnsw"
    ef: str = "16,32,64,128,256"
    filter_modes: str = "auto,graph"
    batch: int = 10_000
    queries: int = 1000
    filter_queries: int = 200
    keep: bool = False
    hnswlib: bool = True
    M: int = 16
    ef_construction: int = 100
    repeats: int = 3
    stat: str = "best"
    allow_busy: bool = False


@dataclasses.dataclass
class _Case:
    label: str
    pct: int | None
    queries: np.ndarray
    rows: np.ndarray | None
    truth: np.ndarray

    @property
    def selectivity(self) -> float | None:
        return None if self.pct is None else self.pct / 100


def _row(target: str, case: _Case, params: dict[str, Any], passes: Any, stat: str, quiet: machine.Quietness,
         **extra: Any) -> dict[str, Any]:
    """One result row in the field layout bench/results/database_own_*.json has always had."""
    chosen = passes.pick(stat)
    return {"target": target, "filter": case.label, "selectivity": case.selectivity, "params": params, "threads": 0,
            "batch": 1, "qps": chosen.qps, "qps_passes": passes.qps_list(),
            f"recall_at_{K}": recall_at_k(chosen.ids, case.truth, K), "queries": len(case.queries), **extra,
            "others_share": quiet.others_share, "busy": quiet.busy, "load_before": quiet.load_before,
            "load_after": quiet.load_after}


def _timed(search: Callable[[np.ndarray], np.ndarray], case: _Case, cfg: OwnConfig) -> tuple[Any, machine.Quietness]:
    watch = machine.Watch()
    passes = time_passes(search, case.queries, K, cfg.repeats)
    return passes, watch.stop()


def _say(target: str, row: dict[str, Any], mode: str) -> None:
    ef = row["params"].get("ef", 0)
    log.info("%s filter %4s %5s ef=%-4s qps=%8.1f recall@10=%.4f%s", target, row["filter"], mode, ef, row["qps"],
             row[f"recall_at_{K}"], " BUSY" if row["busy"] else "")


def run_own(cfg: OwnConfig) -> dict[str, Any]:
    """Upsert, reopen and search one collection; QPS with and without filters per ef and mode
    (the caller holds the benchmark lock)."""
    import vecdb
    from vecdb.data.synthetic import gaussian_mixture

    n, d = cfg.n, cfg.dim
    data = gaussian_mixture(n + cfg.queries, d, seed=1338)
    base, queries = data[:n], data[n:]
    bucket = np.random.default_rng(5).integers(0, 100, n)
    folder = Path(cfg.workdir) / "own-db"
    shutil.rmtree(folder, ignore_errors=True)
    params = {"M": cfg.M, "ef_construction": cfg.ef_construction, "progress": False} if cfg.index == "hnsw" else {}
    result: dict[str, Any] = {"workload": "own", "n": n, "dim": d, "metric": "l2", "index": cfg.index,
                              "index_params": params, "batch": cfg.batch, "queries": cfg.queries,
                              "filter_queries": cfg.filter_queries, "repeats": cfg.repeats, "stat": cfg.stat}
    log.info("own: upserting %d x %d in batches of %d (%s %s)", n, d, cfg.batch, cfg.index, params)
    watch = machine.Watch()
    db = vecdb.open(folder, map_size=1 << 32)
    col = db.create_collection("bench", dim=d, metric="l2", index=cfg.index, index_params=params)
    start = time.perf_counter()
    for b0 in range(0, n, cfg.batch):
        ids = np.arange(b0, min(n, b0 + cfg.batch))
        col.upsert(ids, base[ids], payloads=[{"bucket": int(v)} for v in bucket[ids].tolist()])
        if (b0 // cfg.batch) % 10 == 0:
            log.info("  %d points, %.0f vectors/s", b0 + len(ids), (b0 + len(ids)) / (time.perf_counter() - start))
    result["upsert_seconds"] = time.perf_counter() - start
    result["upsert_vectors_per_s"] = n / result["upsert_seconds"]
    col.wait_indexed()   # upserts are acknowledged on commit; the index catches up in the background
    result["indexed_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    db.close()
    result["close_checkpoint_seconds"] = time.perf_counter() - start
    result["disk_bytes"] = dir_bytes(folder)
    start = time.perf_counter()
    db = vecdb.open(folder)
    col = db.get_collection("bench")
    result["reopen_seconds"] = time.perf_counter() - start
    result["load_quiet"] = dataclasses.asdict(watch.stop())
    log.info("own: upsert %.0f vectors/s, reopen %.2fs", result["upsert_vectors_per_s"], result["reopen_seconds"])
    result["stats"] = dataclasses.asdict(col.stats())
    efs = [int(e) for e in cfg.ef.split(",")] if cfg.index == "hnsw" else [0]
    cases = []
    for label, pct in FILTERS:
        q = queries if pct is None else queries[: cfg.filter_queries]
        rows = None if pct is None else np.flatnonzero(bucket < pct).astype(np.int64)
        cases.append(_Case(label, pct, q, rows, ground_truth(base, q, K, "l2", allow=rows)[0]))
    runs = []
    for case in cases:
        flt = None if case.pct is None else {"bucket": {"lt": case.pct}}
        modes = [None] if case.pct is None or cfg.index != "hnsw" else cfg.filter_modes.split(",")
        for mode in modes:
            for ef in efs:
                knobs: dict[str, Any] = {"ef": ef} if ef else {}
                if mode:
                    knobs["filter_mode"] = mode
                passes, quiet = _timed(lambda block, f=flt, p=knobs: col.search(block, k=K, filter=f, params=p).ids,
                                       case, cfg)
                runs.append(_row("vecdb", case, knobs, passes, cfg.stat, quiet))
                _say("vecdb", runs[-1], mode or "-")
    if cfg.hnswlib and cfg.index == "hnsw":
        runs += hnswlib_beside(cfg, base, cases, efs)
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
    if not cfg.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def hnswlib_beside(cfg: OwnConfig, base: np.ndarray, cases: list[_Case], efs: list[int]) -> list[dict[str, Any]]:
    """hnswlib on the same data, M, ef_construction and queries (the harness's ``hnswlib``
    target, built with Numba's thread count): build time, then the same ef sweep one query per
    call, unfiltered and with each filter under both strategies: its graph filter (a Python
    callable per visited node, its only filter API) and an exact scan of the allowed rows
    gathered once (numpy, one matrix-vector product per query), as vecdb's auto picks at 1%."""
    from numba import config as numba_config

    threads = numba_config.NUMBA_NUM_THREADS
    target = Hnswlib(Metric.L2, base.shape[1], {"M": cfg.M, "ef_construction": cfg.ef_construction})
    target.threads = threads
    start = time.perf_counter()
    target.build(base)
    build = time.perf_counter() - start
    target.threads = 1  # searches: one thread, one query per call
    target.attach_scan(GatheredScan(base, Metric.L2))
    log.info("hnswlib: built %d x %d in %.1fs with %d threads", len(base), base.shape[1], build, threads)
    runs = []
    for case in cases:
        for mode in (["graph"] if case.pct is None else ["graph", "scan"]):
            for ef in (efs if mode == "graph" else [0]):
                knobs = {"ef": ef, "filter_strategy": mode}
                passes, quiet = _timed(lambda block, p=knobs, c=case: target.search(block, K, p, c.rows), case, cfg)
                params: dict[str, Any] = {"ef": ef} if ef else {}
                if case.pct is not None:
                    params["filter_mode"] = mode
                runs.append(_row("hnswlib", case, params, passes, cfg.stat, quiet, build_seconds=build))
                _say("hnswlib", runs[-1], mode)
    target.close()
    return runs


def peers_argv(dataset: str, out: str, *, targets: str = "", grid: str = PEER_GRID, M: int = 16,
               ef_construction: int = 100, nlist: int = 256, repeats: int = 3, stat: str = "best",
               max_queries: int | None = 500, allow_busy: bool = False) -> list[str]:
    """The ``vecdb bench`` command line of the peer comparison: exact against exact, indexed
    against indexed, one query per call, each class divided by vecdb's database."""
    argv = ["bench", "--dataset", dataset, "--targets", targets or f"{EXACT_PEERS},{ANN_PEERS}",
            "--baseline", "db-vecdb-flat,db-vecdb-hnsw",
            "--build", f"M={M},ef_construction={ef_construction},nlist={nlist}",
            "--search", grid, "--k", str(K), "--threads", "1", "--batch", "1", "--repeats", str(repeats),
            "--stat", stat, "--memory", "skip", "--out", out]
    if max_queries:
        argv += ["--max-queries", str(max_queries)]
    if allow_busy:
        argv.append("--allow-busy")
    return argv
