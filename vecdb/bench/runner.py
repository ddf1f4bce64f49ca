"""Run targets over a dataset and a parameter sweep: build once, then time every search
configuration at each thread count and batch size, with and without filters."""
from __future__ import annotations

import datetime as _dt
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vecdb.bench.adapters import TARGETS, Target
from vecdb.bench.measure import duplicate_rows, rss_bytes, time_search
from vecdb.data import Dataset, load_dataset
from vecdb.errors import InvalidArgumentError
from vecdb.eval import ground_truth, recall_at_k
from vecdb.kernels._jit import threads as thread_limit

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """Everything that defines one benchmark run (stored in the result JSON)."""

    dataset: str
    targets: list[str]
    build_params: dict[str, Any] = field(default_factory=dict)
    search_grid: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    k: int = 10
    threads: list[int] = field(default_factory=lambda: [1])
    batches: list[int] = field(default_factory=lambda: [1, 1000])
    selectivities: list[float] = field(default_factory=list)
    baseline: str | None = None
    at_recall: float = 0.95
    max_queries: int | None = None
    build_threads: int | None = None
    repeats: int = 1
    seed: int = 1338



def _set_threads(n: int) -> None:
    """faiss keeps its own OpenMP thread count; set it beside Numba's and BLAS'."""
    import faiss

    faiss.omp_set_num_threads(n)


def _allow_rows(n: int, selectivity: float, seed: int) -> np.ndarray:
    """A seeded random subset of ``selectivity * n`` base rows (at least one), sorted."""
    rng = np.random.default_rng(seed)
    size = max(1, int(round(selectivity * n)))
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


def run(config: RunConfig, dataset: Dataset | None = None) -> dict[str, Any]:
    """Execute ``config``; returns the result record (meta, builds, runs, summary)."""
    unknown = [t for t in config.targets if t not in TARGETS]
    if unknown:
        raise InvalidArgumentError(f"unknown target(s) {unknown}; known: {sorted(TARGETS)}")
    ds = dataset if dataset is not None else load_dataset(config.dataset)
    ds.with_ground_truth(max(config.k, 10))
    queries = ds.queries if config.max_queries is None else ds.queries[: config.max_queries]
    gt = ds.gt_ids[: len(queries)]
    filters = [(s, _allow_rows(len(ds.base), s, config.seed + i)) for i, s in enumerate(config.selectivities)]
    filter_gt = {s: ground_truth(ds.base, queries, config.k, ds.metric, allow=a)[0] for s, a in filters}
    build_threads = config.build_threads or max(config.threads)
    builds, runs = [], []
    for name in config.targets:
        target: Target = TARGETS[name](ds.metric, ds.dim, config.build_params)
        rss0 = rss_bytes()
        with thread_limit(build_threads):
            _set_threads(build_threads)
            target.threads = build_threads
            t0 = time.perf_counter()
            target.build(ds.base)
            build_s = time.perf_counter() - t0
        builds.append({"target": name, "build_s": build_s, "build_threads": build_threads,
                       "memory_bytes": target.memory_bytes(), "rss_delta_bytes": rss_bytes() - rss0})
        log.info("built %s in %.2fs", name, build_s)
        cases = [(None, None, gt)] + [(s, a, filter_gt[s]) for s, a in filters if target.supports_filter]
        for n_threads in config.threads:
            with thread_limit(n_threads):
                _set_threads(n_threads)
                target.threads = n_threads
                for params in config.search_grid:
                    for selectivity, allow, truth in cases:
                        for batch in config.batches:
                            timing = time_search(target, queries, config.k, params, batch, allow, config.repeats)
                            runs.append({
                                "target": name, "label": target.label(params), "params": params,
                                "threads": n_threads, "batch": timing.batch, "selectivity": selectivity,
                                "recall_at_1": recall_at_k(timing.ids, truth, 1),
                                f"recall_at_{config.k}": recall_at_k(timing.ids, truth, config.k),
                                "qps": timing.qps, "p50_ms": timing.percentile_ms(50),
                                "p99_ms": timing.percentile_ms(99), "duplicate_rows": duplicate_rows(timing.ids),
                            })
                            log.info("%s", runs[-1])
        target.close()
    record = {"meta": _meta(config, ds, len(queries)), "builds": builds, "runs": runs}
    record["summary"] = summarize(record, config)
    return record


def summarize(record: dict[str, Any], config: RunConfig) -> list[dict[str, Any]]:
    """Best QPS per (target, threads, batch, selectivity) among settings reaching recall@k >=
    ``at_recall`` (the ann-benchmarks Pareto reading), with the ratio to the baseline."""
    key_recall = f"recall_at_{config.k}"
    best: dict[tuple, dict[str, Any]] = {}
    for r in record["runs"]:
        key = (r["target"], r["threads"], r["batch"], r["selectivity"])
        if r[key_recall] + 1e-9 < config.at_recall:
            best.setdefault(key, {"target": r["target"], "threads": r["threads"], "batch": r["batch"],
                                  "selectivity": r["selectivity"], "qps": None, "label": None, key_recall: None})
            continue
        cur = best.get(key)
        if cur is None or cur["qps"] is None or r["qps"] > cur["qps"]:
            best[key] = {"target": r["target"], "threads": r["threads"], "batch": r["batch"],
                         "selectivity": r["selectivity"], "qps": r["qps"], "label": r["label"], key_recall: r[key_recall]}
    rows = list(best.values())
    for row in rows:
        base = best.get((config.baseline, row["threads"], row["batch"], row["selectivity"]))
        ok = base is not None and base["qps"] and row["qps"]
        row["ratio_vs_baseline"] = row["qps"] / base["qps"] if ok else None
    return rows


def _meta(config: RunConfig, ds: Dataset, n_queries: int) -> dict[str, Any]:
    import faiss
    import numba

    import vecdb

    return {"config": asdict(config), "dataset": ds.describe(), "n_base": len(ds.base), "n_queries": n_queries,
            "dim": ds.dim, "metric": ds.metric.value, "when": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "host": platform.node(), "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
            "versions": {"vecdb": vecdb.__version__, "numpy": np.__version__, "numba": numba.__version__,
                         "faiss": getattr(faiss, "__version__", "?")}}


def save(record: dict[str, Any], path: Path) -> Path:
    """Write ``record`` as JSON to ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=float))
    return path
