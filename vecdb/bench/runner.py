"""Run targets over a dataset and a parameter sweep under the same conditions: one benchmark at a
time (lock file), a quiet machine (checked at the start, watched per setting), every target
built once, then each setting timed target after target in turn (A, B, A, B ...) for
``repeats`` passes; memory measured in a fresh process per target; every swept knob checked to
move recall; the result records its provenance."""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vecdb.bench import machine
from vecdb.bench.adapters import TARGETS, Target
from vecdb.bench.adapters.base import SubsetScan
from vecdb.bench.checks import DeadKnobError, dead_knobs
from vecdb.bench.measure import Passes, duplicate_rows, time_pass
from vecdb.bench.memory import probe
from vecdb.data import Dataset, load_dataset
from vecdb.errors import InvalidArgumentError
from vecdb.eval import ground_truth, recall_at_k
from vecdb.kernels._jit import threads as thread_limit

log = logging.getLogger(__name__)

STRATEGIES = ("graph", "scan", "auto")
STATS = ("best", "median")
MEMORY_MODES = ("fresh", "skip")


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
    #: filter strategies timed for targets that have a choice (see adapters/hnsw.py)
    filter_strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    #: ratios divide by the first of these of the row's algorithm class (exact / ann)
    baselines: list[str] = field(default_factory=list)
    at_recall: float = 0.95
    max_queries: int | None = None
    build_threads: int | None = None
    repeats: int = 3
    #: which pass a row reports: the fastest ("best") or the median one
    stat: str = "best"
    #: "fresh": measure each build's memory in a fresh process too; "skip": don't
    memory: str = "fresh"
    allow_busy: bool = False
    busy_share: float = machine.BUSY_SHARE
    check_knobs: bool = True
    seed: int = 1338

    def validate(self) -> None:
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown:
            raise InvalidArgumentError(f"unknown target(s) {unknown}; known: {sorted(TARGETS)}")
        if not self.targets:
            raise InvalidArgumentError("give at least one target")
        bad = [s for s in self.filter_strategies if s not in STRATEGIES]
        if bad or not self.filter_strategies:
            raise InvalidArgumentError(f"filter strategies must be among {STRATEGIES}, got {self.filter_strategies}")
        if self.stat not in STATS:
            raise InvalidArgumentError(f"stat must be one of {STATS}, got {self.stat!r}")
        if self.memory not in MEMORY_MODES:
            raise InvalidArgumentError(f"memory must be one of {MEMORY_MODES}, got {self.memory!r}")
        if self.repeats < 1:
            raise InvalidArgumentError(f"repeats must be >= 1, got {self.repeats}")
        missing = [b for b in self.baselines if b not in self.targets]
        if missing:
            raise InvalidArgumentError(f"baseline(s) {missing} are not among the targets {self.targets}")


@dataclass
class Case:
    """One filter condition: none, or a selectivity with its allowed rows, truth and strategy."""

    selectivity: float | None
    allow: np.ndarray | None
    truth: np.ndarray
    strategy: str | None


def set_threads(n: int) -> None:
    """faiss keeps its own OpenMP thread count; set it beside Numba's and BLAS'."""
    import faiss

    faiss.omp_set_num_threads(n)


def _allow_rows(n: int, selectivity: float, seed: int) -> np.ndarray:
    """A seeded random subset of ``selectivity * n`` base rows (at least one), sorted."""
    rng = np.random.default_rng(seed)
    size = max(1, int(round(selectivity * n)))
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


def case_targets(case: Case, targets: dict[str, Target], strategies: list[str]) -> list[str]:
    """Targets timed under ``case``: all for the unfiltered case; for a filtered one, those that
    offer its strategy (a target without a choice runs under its own single strategy)."""
    if case.strategy is None:
        return list(targets)
    out = []
    for name, t in targets.items():
        if not t.supports_filter:
            continue
        own = t.filter_strategies
        joins = (case.strategy in own) if len(own) > 1 else (case.strategy == _single_case(own[0], strategies))
        if joins:
            out.append(name)
    return out


def _single_case(own: str, strategies: list[str]) -> str:
    """The case a single-strategy target joins: its own strategy if timed, else the first one."""
    return own if own in strategies else strategies[0]


def _cases(strategies: list[str], targets: dict[str, Target], filters: list[tuple[float, np.ndarray]],
           filter_gt: dict[float, np.ndarray], gt: np.ndarray) -> list[Case]:
    cases = [Case(None, None, gt, None)]
    wanted = list(strategies)
    for t in targets.values():  # a single-strategy target's own strategy is always timed
        if t.supports_filter and len(t.filter_strategies) == 1:
            own = _single_case(t.filter_strategies[0], strategies)
            if own not in wanted:
                wanted.append(own)
    for s, allow in filters:
        cases += [Case(s, allow, filter_gt[s], strategy) for strategy in wanted]
    return cases


def run(config: RunConfig, dataset: Dataset | None = None, argv: list[str] | None = None, *,
        lock: bool = True) -> dict[str, Any]:
    """Execute ``config`` under the benchmark lock (``lock=False``: the caller holds it for a
    sequence of runs); returns the result record."""
    config.validate()
    if not lock:
        return _run_locked(config, dataset, argv)
    with machine.bench_lock():
        return _run_locked(config, dataset, argv)


def _run_locked(config: RunConfig, dataset: Dataset | None, argv: list[str] | None) -> dict[str, Any]:
    started = time.perf_counter()
    start_check = machine.check_quiet(config.allow_busy, limit=config.busy_share)
    prov = machine.provenance(argv)
    ds = dataset if dataset is not None else load_dataset(config.dataset)
    ds.with_ground_truth(max(config.k, 10))
    queries = ds.queries if config.max_queries is None else ds.queries[: config.max_queries]
    gt = ds.gt_ids[: len(queries)]
    filters = [(s, _allow_rows(len(ds.base), s, config.seed + i)) for i, s in enumerate(config.selectivities)]
    filter_gt = {s: ground_truth(ds.base, queries, config.k, ds.metric, allow=a)[0] for s, a in filters}
    build_threads = config.build_threads or max(config.threads)
    with tempfile.TemporaryDirectory(prefix="vecdb-bench-") as work:
        builds, targets = _build_all(config, ds, Path(work), build_threads)
        if filters and any(hasattr(t, "attach_scan") for t in targets.values()):
            scan = SubsetScan(ds.base, ds.metric)
            for t in targets.values():
                if hasattr(t, "attach_scan"):
                    t.attach_scan(scan)
        cases = _cases(config.filter_strategies, targets, filters, filter_gt, gt)
        runs = _time_all(config, targets, cases, queries)
        for t in targets.values():
            t.close()
        for b in builds:  # after close: what a store leaves on disk once checkpointed
            b["disk_bytes"] = targets[b["target"]].disk_bytes()
    record: dict[str, Any] = {
        "meta": _meta(config, ds, len(queries)), "provenance": prov, "start_check": start_check,
        "builds": builds, "runs": runs,
        "filter_paths": {name: dict(TARGETS[name].filter_paths) for name in config.targets},
    }
    busy = [r for r in runs if r["busy"]]
    record["busy"] = {"flagged": bool(busy) or start_check["busy"], "busy_settings": len({r["setting"] for r in busy}),
                      "settings": len({r["setting"] for r in runs}), "allowed": config.allow_busy}
    record["summary"] = summarize(record, config)
    dead = dead_knobs(runs, config.k, {n: t.knobs_for_recall() for n, t in targets.items()}) \
        if config.check_knobs else []
    record["knob_check"] = {"checked": config.check_knobs, "ok": not dead, "dead": dead}
    record["valid"] = not dead
    record["provenance"]["seconds"] = round(time.perf_counter() - started, 1)
    record["provenance"]["load_average_end"] = list(os.getloadavg())
    return record


def _build_all(config: RunConfig, ds: Dataset, work: Path, threads: int) -> tuple[list[dict[str, Any]], dict[str, Target]]:
    """Build every target in this process (timed); with memory="fresh" also in a fresh process each."""
    base_path = work / "base.npy"
    if config.memory == "fresh":
        np.save(base_path, np.ascontiguousarray(ds.base, np.float32))
    builds, targets = [], {}
    for name in config.targets:
        fresh = None
        if config.memory == "fresh":
            watch = machine.Watch(config.busy_share)
            fresh = probe(name, ds.metric.value, base_path, config.build_params, threads)
            fresh["quiet"] = asdict(watch.stop())
        target: Target = TARGETS[name](ds.metric, ds.dim, config.build_params)
        target.workdir = work / f"target-{name}"
        watch = machine.Watch(config.busy_share)
        with thread_limit(threads):
            set_threads(threads)
            target.threads = threads
            t0 = time.perf_counter()
            target.build(ds.base)
            build_s = time.perf_counter() - t0
        quiet = watch.stop()
        builds.append({"target": name, "algorithm": target.algorithm, "build_s": build_s, "build_threads": threads,
                       "memory_bytes": target.memory_bytes(), "memory_source": target.memory_source,
                       "fresh_process": fresh, "busy": quiet.busy, "quiet": asdict(quiet), **target.build_info()})
        log.info("built %s in %.2fs", name, build_s)
        targets[name] = target
    return builds, targets


def _own_knobs(target: Target, params: dict[str, Any]) -> tuple:
    return tuple((k, str(params[k])) for k in target.search_knobs if k in params)


def _time_all(config: RunConfig, targets: dict[str, Target], cases: list[Case], queries: np.ndarray) -> list[dict[str, Any]]:
    """Every setting, targets interleaved pass by pass; one row per (setting, target). A target
    is timed once per distinct value of its own knobs (the grid is shared: an exact target
    ignores every knob, an exact scan ignores the graph knobs)."""
    runs: list[dict[str, Any]] = []
    setting = 0
    for n_threads in config.threads:
        with thread_limit(n_threads):
            set_threads(n_threads)
            for t in targets.values():
                t.threads = n_threads
            for ci, case in enumerate(cases):
                seen: set[tuple] = set()
                for params in config.search_grid:
                    names = []
                    for name in case_targets(case, targets, config.filter_strategies):
                        own = () if case.strategy == "scan" else _own_knobs(targets[name], params)
                        if (name, own) not in seen:
                            seen.add((name, own))
                            names.append(name)
                    if not names:
                        continue
                    p = dict(params) if case.strategy is None else {**params, "filter_strategy": case.strategy}
                    for batch in config.batches:
                        runs += _time_setting(config, targets, names, case, p, batch, queries, setting)
                        setting += 1
    return runs


def _time_setting(config: RunConfig, targets: dict[str, Target], names: list[str], case: Case, params: dict[str, Any],
                  batch: int, queries: np.ndarray, setting: int) -> list[dict[str, Any]]:
    watch = machine.Watch(config.busy_share)
    passes = {name: Passes() for name in names}
    for name in names:  # warm-up: one-off costs (lazy compilation, page faults) are not timed
        targets[name].search(queries[: min(batch, 8)], config.k, params, case.allow)
    for _ in range(config.repeats):
        for name in names:  # A, B, C, A, B, C ...: each target sees the same stretch of machine time
            passes[name].add(time_pass(targets[name], queries, config.k, params, batch, case.allow))
    quiet = watch.stop()
    rows = []
    for name in names:
        t, p = targets[name], passes[name]
        chosen = p.pick(config.stat)
        scan_row = case.strategy == "scan"
        used = None if case.allow is None else t.strategy_used(params, case.allow, config.k)
        label = t.name if scan_row else t.label(params)
        own = dict(_own_knobs(t, params)) if not scan_row else {}
        rows.append({
            "setting": setting, "target": name, "label": label,
            "params": {k: params[k] for k in own} | ({"filter_strategy": case.strategy} if case.strategy else {}), "threads": t.threads,
            "batch": chosen.batch, "selectivity": case.selectivity, "strategy": case.strategy,
            "strategy_used": used, "filter_path": None if case.strategy is None else t.filter_paths.get(
                case.strategy if len(t.filter_strategies) > 1 else t.filter_strategies[0]),
            "algorithm": "exact" if used == "scan" else t.algorithm,
            "recall_at_1": recall_at_k(chosen.ids, case.truth, 1),
            f"recall_at_{config.k}": recall_at_k(chosen.ids, case.truth, config.k),
            "qps": chosen.qps, "stat": config.stat, "qps_passes": p.qps_list(),
            "p50_ms": p.percentile_ms(50), "p99_ms": p.percentile_ms(99),
            "duplicate_rows": duplicate_rows(chosen.ids),
            "others_share": quiet.others_share, "busy": quiet.busy,
            "load_before": list(quiet.load_before), "load_after": list(quiet.load_after),
        })
        log.info("%s", rows[-1])
    return rows


def _row_class(row: dict[str, Any]) -> str:
    return row.get("algorithm", "ann")


def summarize(record: dict[str, Any], config: RunConfig) -> list[dict[str, Any]]:
    """Best QPS per (target, threads, batch, selectivity, strategy) among settings reaching
    recall@k >= ``at_recall`` (the ann-benchmarks Pareto reading), with the ratio to the
    baseline of the same algorithm class under the same conditions."""
    key_recall = f"recall_at_{config.k}"
    best: dict[tuple, dict[str, Any]] = {}
    for r in record["runs"]:
        key = (r["target"], r["threads"], r["batch"], r["selectivity"], r["strategy"])
        empty = {"target": r["target"], "threads": r["threads"], "batch": r["batch"], "selectivity": r["selectivity"],
                 "strategy": r["strategy"], "strategy_used": None, "algorithm": _row_class(r), "qps": None,
                 "label": None, key_recall: None, "busy": r["busy"]}
        if r[key_recall] + 1e-9 < config.at_recall:
            best.setdefault(key, empty)
            continue
        cur = best.get(key)
        if cur is None or cur["qps"] is None or r["qps"] > cur["qps"]:
            best[key] = {**empty, "strategy_used": r["strategy_used"], "algorithm": _row_class(r), "qps": r["qps"],
                         "label": r["label"], key_recall: r[key_recall]}
    rows = list(best.values())
    for row in rows:
        row["baseline"] = None
        row["ratio_vs_baseline"] = None
        for name in config.baselines:
            base = best.get((name, row["threads"], row["batch"], row["selectivity"], row["strategy"]))
            if base is None or base["algorithm"] != row["algorithm"]:
                continue
            row["baseline"] = name
            if base["qps"] and row["qps"]:
                row["ratio_vs_baseline"] = row["qps"] / base["qps"]
            break
    return rows


def _meta(config: RunConfig, ds: Dataset, n_queries: int) -> dict[str, Any]:
    return {"config": asdict(config), "dataset": ds.describe(), "n_base": len(ds.base), "n_queries": n_queries,
            "dim": ds.dim, "metric": ds.metric.value,
            "when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def save(record: dict[str, Any], path: Path) -> Path:
    """Write ``record`` as JSON to ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=float))
    return path


def raise_if_invalid(record: dict[str, Any]) -> None:
    """Fail loudly (DeadKnobError) when a swept knob did not move recall."""
    if not record["knob_check"]["ok"]:
        raise DeadKnobError(record["knob_check"]["dead"])
