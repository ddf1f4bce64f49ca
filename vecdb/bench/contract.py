"""The "Done when" figures of issue 11 (index contract v2), each measured the same run against
hnswlib / faiss and reported as a ratio beside its goal. ``bench/contract.py`` is the command;
this module holds the parts (which harness runs, on which data), the RSS and gRPC probes'
wiring, and how each figure is read from a result record.

Parts (1 thread, one query per call, recall@10 >= 0.95 unless stated):
  a  ``vecdb.index.HNSW`` vs hnswlib: best QPS at recall >= 0.95, and at ef=10
  b  ``Collection.search`` embedded (a real LMDB folder, HNSW, no filter) vs hnswlib (and vs
     ``vecdb-hnsw``, the index alone, to show the collection's own cost)
  c  ``FlatIndex`` vs faiss ``IndexFlat``
  d  one batched call (every query in one call) at 1 and 2 threads vs hnswlib
  e  filtered search at 50 % selectivity vs hnswlib with its filter callable (graph) and the
     exact scan of the allowed rows (scan), like with like, plus vecdb's best against hnswlib's
  f  process RSS holding a 50k x 384 HNSW vs hnswlib (fresh process each), and the harness's
     fresh-process build growth beside it
  g  gRPC on loopback, 2,000 x 32: 1 client thread one query per call, 16 threads (QPS, p99)
"""
from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vecdb.bench import machine
from vecdb.bench.runner import RunConfig
from vecdb.errors import FailedPreconditionError, InvalidArgumentError

log = logging.getLogger(__name__)

PARTS = ("a", "b", "c", "d", "e", "f", "g")
ROOT = Path(__file__).resolve().parents[2]
GRPC_SCRIPT = ROOT / "bench" / "grpc_small.py"


@dataclass(frozen=True)
class Sizes:
    """Everything a contract run's size depends on; ``FULL`` is the real run, ``SMOKE`` a tiny
    one that exercises every part in a minute or two (figures meaningless)."""

    hnsw_sets: tuple[str, ...]
    flat_sets: tuple[str, ...]
    memory_set: str
    build: dict[str, Any]
    efs: tuple[int, ...]
    queries: int
    repeats: int
    grpc_n: int = 2000
    grpc_dim: int = 32
    grpc_seconds: float = 10.0
    grpc_warmup: float = 2.0
    build_threads: int = 2
    filter_selectivity: float = 0.5


FULL = Sizes(hnsw_sets=("arxiv-minilm-384", "glove-6b-50d-angular"),
             flat_sets=("digits-64-euclidean", "glove-6b-50d-angular", "synthetic-100k-128"),
             memory_set="arxiv-minilm-384", build={"M": 16, "ef_construction": 200},
             efs=(10, 16, 24, 32, 48, 64, 96, 128), queries=1000, repeats=3)
SMOKE = Sizes(hnsw_sets=("digits-64-euclidean", "synthetic-2k-32-cosine"),
              flat_sets=("digits-64-euclidean", "synthetic-2k-32"), memory_set="synthetic-2k-32-cosine",
              build={"M": 8, "ef_construction": 32}, efs=(1, 10, 64), queries=30, repeats=1,
              grpc_n=500, grpc_dim=8, grpc_seconds=0.5, grpc_warmup=0.3)

#: the goals of the issue: (operator, value) per figure kind
GOALS: dict[str, tuple[str, float]] = {
    "hnsw_at_recall": (">=", 1.0), "hnsw_ef10": (">=", 0.9), "collection_at_recall": (">=", 0.9),
    "flat": (">=", 0.9), "batched": (">=", 1.0), "filtered_graph": (">=", 1.0), "rss_ratio": ("<=", 1.3),
    "grpc_1_qps": (">=", 2000.0), "grpc_16_qps": (">=", 4000.0), "grpc_16_p99_ms": ("<=", 10.0),
}


# ---- the harness runs of each part --------------------------------------------------------
def _hnsw_run(sizes: Sizes, dataset: str, targets: list[str], **kw: Any) -> RunConfig:
    base = dict(dataset=dataset, targets=targets, build_params=dict(sizes.build),
                search_grid=[{"ef": ef} for ef in sizes.efs], threads=[1], batches=[1], baselines=["hnswlib"],
                max_queries=sizes.queries, build_threads=sizes.build_threads, repeats=sizes.repeats, memory="skip")
    return RunConfig(**{**base, **kw})


def harness_runs(part: str, sizes: Sizes) -> list[RunConfig]:
    """The ``vecdb bench`` runs of ``part`` (empty for the parts that are not harness runs)."""
    if part == "a":
        return [_hnsw_run(sizes, ds, ["vecdb-hnsw", "hnswlib"]) for ds in sizes.hnsw_sets]
    if part == "b":
        # vecdb-hnsw beside them says how much of the gap is the collection's own path
        return [_hnsw_run(sizes, ds, ["vecdb-collection", "vecdb-hnsw", "hnswlib"]) for ds in sizes.hnsw_sets]
    if part == "c":
        return [RunConfig(dataset=ds, targets=["vecdb-flat", "faiss-flat"], threads=[1], batches=[1],
                          baselines=["faiss-flat"], max_queries=sizes.queries, build_threads=sizes.build_threads,
                          repeats=sizes.repeats, memory="skip") for ds in sizes.flat_sets]
    if part == "d":  # one call holds every query of the run
        return [_hnsw_run(sizes, ds, ["vecdb-hnsw", "hnswlib"], threads=[1, 2], batches=[sizes.queries])
                for ds in sizes.hnsw_sets]
    if part == "e":
        return [_hnsw_run(sizes, ds, ["vecdb-hnsw", "hnswlib"], selectivities=[sizes.filter_selectivity],
                          filter_strategies=["graph", "scan"]) for ds in sizes.hnsw_sets]
    if part == "f":  # build growth and peak, measured by the harness in a fresh process per target
        return [_hnsw_run(sizes, sizes.memory_set, ["vecdb-hnsw", "hnswlib"], search_grid=[{"ef": 64}],
                          batches=[sizes.queries], memory="fresh")]
    if part == "g":
        return []
    raise InvalidArgumentError(f"unknown part {part!r}; parts are {', '.join(PARTS)}")


# ---- figures ----------------------------------------------------------------------------
@dataclass
class Figure:
    """One number the issue asks for, with its goal and whether this run met it."""

    part: str
    dataset: str
    what: str
    value: float | None
    goal: str | None = None
    met: bool | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    #: True when other processes used more than the allowed share of the machine meanwhile
    busy: bool | None = None


def figure(part: str, dataset: str, what: str, value: float | None, kind: str | None = None,
           **detail: Any) -> Figure:
    """A Figure with the goal of ``kind`` applied (None: reported without a goal)."""
    if kind is None or value is None:
        return Figure(part, dataset, what, value, None if kind is None else _goal_text(kind), None, detail)
    op, bound = GOALS[kind]
    met = value >= bound if op == ">=" else value <= bound
    return Figure(part, dataset, what, value, _goal_text(kind), met, detail)


def _goal_text(kind: str) -> str:
    op, bound = GOALS[kind]
    return f"{'≥' if op == '>=' else '≤'} {bound:g}"


def _summary(record: dict[str, Any], target: str, **match: Any) -> dict[str, Any] | None:
    for s in record["summary"]:
        if s["target"] == target and all(s[k] == v for k, v in match.items()):
            return s
    return None


def _at_recall(part: str, record: dict[str, Any], vecdb: str, ref: str, kind: str | None, what: str,
               **match: Any) -> Figure:
    """vecdb's best QPS at recall >= the run's bound ÷ the reference's, same conditions."""
    ds = _dataset_name(record)
    mine, theirs = _summary(record, vecdb, **match), _summary(record, ref, **match)
    k = record["meta"]["config"]["k"]
    detail = {"vecdb_qps": mine and mine["qps"], "reference_qps": theirs and theirs["qps"],
              "vecdb_setting": mine and mine["label"], "reference_setting": theirs and theirs["label"],
              f"vecdb_recall_at_{k}": mine and mine[f"recall_at_{k}"],
              f"reference_recall_at_{k}": theirs and theirs[f"recall_at_{k}"],
              "at_recall": record["meta"]["config"]["at_recall"]}
    ratio = mine["qps"] / theirs["qps"] if mine and theirs and mine["qps"] and theirs["qps"] else None
    if ratio is None:
        absent = [t for t, s in ((vecdb, mine), (ref, theirs)) if not (s and s["qps"])]
        detail["missing"] = f"{', '.join(absent)}: recall@{k} >= {detail['at_recall']} not reached"
    return figure(part, ds, what, ratio, kind, **detail)


def _same_setting(part: str, record: dict[str, Any], vecdb: str, ref: str, ef: int, kind: str | None,
                  what: str) -> Figure:
    """QPS ratio at one ``ef`` (same threads, batch, no filter), whatever recall each reached."""
    ds = _dataset_name(record)
    k = record["meta"]["config"]["k"]
    rows = {r["target"]: r for r in record["runs"]
            if r["selectivity"] is None and r["params"].get("ef") == ef and r["target"] in (vecdb, ref)}
    if len(rows) < 2:
        return figure(part, ds, what, None, kind, missing=f"no ef={ef} rows for both targets")
    a, b = rows[vecdb], rows[ref]
    return figure(part, ds, what, a["qps"] / b["qps"], kind, vecdb_qps=a["qps"], reference_qps=b["qps"],
                  **{f"vecdb_recall_at_{k}": a[f"recall_at_{k}"], f"reference_recall_at_{k}": b[f"recall_at_{k}"]})


def _dataset_name(record: dict[str, Any]) -> str:
    return str(record["meta"]["config"]["dataset"])


def harness_figures(part: str, record: dict[str, Any]) -> list[Figure]:
    """The figures of ``part`` read from one harness record."""
    if part == "a":
        return [_at_recall(part, record, "vecdb-hnsw", "hnswlib", "hnsw_at_recall",
                           "HNSW ÷ hnswlib, 1 query/call, best QPS at recall", threads=1, batch=1, selectivity=None),
                _same_setting(part, record, "vecdb-hnsw", "hnswlib", 10, "hnsw_ef10", "HNSW ÷ hnswlib at ef=10")]
    if part == "b":
        return [_at_recall(part, record, "vecdb-collection", "hnswlib", "collection_at_recall",
                           "Collection.search ÷ hnswlib, 1 query/call, best QPS at recall", threads=1, batch=1,
                           selectivity=None),
                _at_recall(part, record, "vecdb-collection", "vecdb-hnsw", None,
                           "Collection.search ÷ vecdb-hnsw (the collection's own path)", threads=1, batch=1,
                           selectivity=None)]
    if part == "c":
        return [_at_recall(part, record, "vecdb-flat", "faiss-flat", "flat", "FlatIndex ÷ faiss IndexFlat, 1 query/call",
                           threads=1, batch=1, selectivity=None)]
    if part == "d":
        batch = min(record["meta"]["config"]["batches"][0], record["meta"]["n_queries"])  # as the runner clips it
        return [_at_recall(part, record, "vecdb-hnsw", "hnswlib", "batched",
                           f"HNSW ÷ hnswlib, one call of {batch} queries, {t} thread(s)", threads=t, batch=batch,
                           selectivity=None) for t in record["meta"]["config"]["threads"]]
    if part == "e":
        sel = record["meta"]["config"]["selectivities"][0]
        out = [_at_recall(part, record, "vecdb-hnsw", "hnswlib", "filtered_graph" if s == "graph" else None,
                          f"HNSW ÷ hnswlib, {sel:.0%} filter, strategy {s} (like with like)", threads=1, batch=1,
                          selectivity=sel, strategy=s) for s in record["meta"]["config"]["filter_strategies"]]
        out.append(_best_filtered(part, record, sel))
        return out
    if part == "f":
        return _growth_figures(part, record)
    raise InvalidArgumentError(f"part {part!r} has no harness figures")


def _best_filtered(part: str, record: dict[str, Any], sel: float) -> Figure:
    """vecdb's best strategy against hnswlib's own filter callable, both at recall >= the bound."""
    def best(target: str, strategies: tuple[str, ...]) -> dict[str, Any] | None:
        rows = [s for s in record["summary"] if s["target"] == target and s["selectivity"] == sel and s["threads"] == 1
                and s["batch"] == 1 and s["strategy"] in strategies and s["qps"]]
        return max(rows, key=lambda s: s["qps"], default=None)

    mine, theirs = best("vecdb-hnsw", ("graph", "scan", "auto")), best("hnswlib", ("graph",))
    ratio = mine["qps"] / theirs["qps"] if mine and theirs else None
    detail = {} if ratio is not None else {"missing": "recall bound not reached by " + ", ".join(
        t for t, s in (("vecdb-hnsw", mine), ("hnswlib", theirs)) if s is None)}
    return figure(part, _dataset_name(record), f"HNSW best strategy ÷ hnswlib filter callable, {sel:.0%} filter",
                  ratio, None, vecdb_strategy=mine and mine["strategy"], vecdb_qps=mine and mine["qps"],
                  reference_qps=theirs and theirs["qps"], **detail)


def _growth_figures(part: str, record: dict[str, Any]) -> list[Figure]:
    builds = {b["target"]: b for b in record["builds"]}
    mine, theirs = builds.get("vecdb-hnsw"), builds.get("hnswlib")
    out = []
    for key, what in (("rss_growth_bytes", "RSS growth of the build"), ("peak_growth_bytes", "peak growth of the build")):
        a = mine and (mine.get("fresh_process") or {}).get(key)
        b = theirs and (theirs.get("fresh_process") or {}).get(key)
        out.append(figure(part, _dataset_name(record), f"{what}, HNSW ÷ hnswlib (harness, fresh process)",
                          a / b if a and b else None, None, vecdb_bytes=a, reference_bytes=b))
    return out


def rss_figures(part: str, dataset: str, probes: dict[str, dict[str, Any]]) -> list[Figure]:
    """Whole-process RSS holding the index (vecdb ÷ hnswlib, goal ≤ 1.3) and each fixed cost."""
    mine, theirs = probes["vecdb-hnsw"], probes["hnswlib"]
    a, b = mine["rss_bytes"]["holding"], theirs["rss_bytes"]["holding"]
    numba = mine["rss_bytes"]["numba"] - mine["rss_bytes"]["start"]
    return [figure(part, dataset, "process RSS holding the index, HNSW ÷ hnswlib", a / b if b else None, "rss_ratio",
                   vecdb_mib=a / 2**20, reference_mib=b / 2**20),
            figure(part, dataset, "fixed cost MiB (warm runtime - python+numpy), vecdb", mine["fixed_bytes"] / 2**20,
                   None, numba_import_mib=numba / 2**20,
                   vecdb_import_mib=(mine["rss_bytes"]["imported"] - mine["rss_bytes"]["numba"]) / 2**20,
                   warmup_mib=(mine["rss_bytes"]["warm"] - mine["rss_bytes"]["imported"]) / 2**20),
            figure(part, dataset, "fixed cost MiB (warm runtime - python+numpy), hnswlib", theirs["fixed_bytes"] / 2**20,
                   None),
            figure(part, dataset, "index MiB held (holding - warm), HNSW ÷ hnswlib",
                   mine["index_bytes"] / theirs["index_bytes"] if theirs["index_bytes"] > 0 else None, None,
                   vecdb_mib=mine["index_bytes"] / 2**20, reference_mib=theirs["index_bytes"] / 2**20,
                   vecdb_counted_mib=(mine["counted_bytes"] or 0) / 2**20)]


def grpc_figures(part: str, result: dict[str, Any]) -> list[Figure]:
    """gRPC small-request figures from ``bench/grpc_small.py --one``'s JSON."""
    phases = {ph["threads"]: ph for ph in result["phases"]}
    ds = f"{result.get('n', '?')}x{result.get('dim', '?')}"
    out = []
    if 1 in phases:
        out.append(figure(part, ds, "gRPC 1 client thread, 1 query/call, QPS", phases[1]["qps"], "grpc_1_qps",
                          p50_ms=phases[1]["p50_ms"], p99_ms=phases[1]["p99_ms"], errors=phases[1]["errors"]))
    if 16 in phases:
        out.append(figure(part, ds, "gRPC 16 client threads, QPS", phases[16]["qps"], "grpc_16_qps",
                          errors=phases[16]["errors"]))
        out.append(figure(part, ds, "gRPC 16 client threads, p99 ms", phases[16]["p99_ms"], "grpc_16_p99_ms",
                          p50_ms=phases[16]["p50_ms"]))
    return out


# ---- the probes ----------------------------------------------------------------------------
def run_rss(sizes: Sizes, workdir: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """Both RSS probes over the memory set (vecdb first, then hnswlib, each in a fresh process)."""
    from vecdb.bench.rss import probe
    from vecdb.data import load_dataset

    ds = load_dataset(sizes.memory_set)
    path = workdir / "rss-base.npy"
    np.save(path, np.ascontiguousarray(ds.base[:2000], np.float32))
    # a throwaway run first, so that the JIT cache on disk is filled and the measured
    # process loads compiled code instead of compiling (LLVM's memory would count)
    probe("vecdb-hnsw", path, ds.metric.value, M=int(sizes.build["M"]), ef_construction=8, threads=sizes.build_threads)
    np.save(path, np.ascontiguousarray(ds.base, np.float32))
    probes = {lib: probe(lib, path, ds.metric.value, M=int(sizes.build["M"]),
                         ef_construction=int(sizes.build["ef_construction"]), threads=sizes.build_threads)
              for lib in ("vecdb-hnsw", "hnswlib")}
    path.unlink()
    return sizes.memory_set, probes


def run_grpc(sizes: Sizes, script: Path = GRPC_SCRIPT) -> dict[str, Any]:
    """``bench/grpc_small.py`` (helper script: a real ``vecdb serve`` child on 127.0.0.1) in its
    one-tree mode, 1 then 16 client threads; its JSON plus the sizes asked for."""
    if not script.exists():
        raise FailedPreconditionError(f"{script} is missing: part g runs the small-request gRPC benchmark from it")
    argv = [sys.executable, str(script), "--one", "--n", str(sizes.grpc_n), "--dim", str(sizes.grpc_dim),
            "--threads", "1,16", "--seconds", str(sizes.grpc_seconds), "--warmup", str(sizes.grpc_warmup)]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if out.returncode != 0:
        raise FailedPreconditionError(f"{script.name} failed (exit {out.returncode}): {out.stderr.strip()[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "n": sizes.grpc_n, "dim": sizes.grpc_dim, "seconds": sizes.grpc_seconds, "command": argv[1:]}


# ---- one whole contract run ------------------------------------------------------------------
def run_part(part: str, sizes: Sizes, out_dir: Path, *, allow_busy: bool, argv: list[str],
             show: Callable[[str], None] = print) -> list[Figure]:
    """Run ``part`` (the caller holds the benchmark lock); save each record under ``out_dir``;
    return its figures."""
    from vecdb.bench.report import render
    from vecdb.bench.runner import run, save

    figures: list[Figure] = []
    for config in harness_runs(part, sizes):
        config = dataclasses.replace(config, allow_busy=allow_busy)
        record = run(config, argv=argv, lock=False)
        got = harness_figures(part, record)
        for f in got:
            f.busy = record["busy"]["flagged"]
        record["contract"] = {"part": part, "figures": [dataclasses.asdict(f) for f in got]}
        show(render(record))
        path = save(record, out_dir / f"{part}-{config.dataset}.json")
        show(f"saved {path}")
        if not record["valid"]:
            got.append(figure(part, config.dataset, "INVALID: a swept knob did not move recall", None, None,
                              dead=record["knob_check"]["dead"]))
        figures += got
    if part in ("f", "g"):
        start_check = machine.check_quiet(allow_busy)
        watch = machine.Watch()
        with tempfile.TemporaryDirectory(prefix="vecdb-contract-") as work:
            if part == "f":
                dataset, probes = run_rss(sizes, Path(work))
                got, raw = rss_figures(part, dataset, probes), {"dataset": dataset, "probes": probes}
            else:
                raw = run_grpc(sizes)
                got = grpc_figures(part, raw)
        quiet = watch.stop()
        for f in got:
            f.busy = quiet.busy or start_check["busy"]
        record = {"part": part, "raw": raw, "figures": [dataclasses.asdict(f) for f in got],
                  "provenance": machine.provenance(argv), "start_check": start_check,
                  "busy": {"flagged": quiet.busy or start_check["busy"], "quiet": dataclasses.asdict(quiet)}}
        name = "rss" if part == "f" else "grpc"
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{part}-{name}.json"
        path.write_text(json.dumps(record, indent=1, default=float))
        show(f"saved {path}")
        figures += got
    return figures


def figures_table(figures: list[Figure]) -> str:
    """The figures as a text table: part, data, what, value, goal, met."""
    from tabulate import tabulate

    rows = [[f.part, f.dataset, f.what, "-" if f.value is None else f"{f.value:.3g}" if abs(f.value) < 1e4
             else f"{f.value:.0f}", f.goal or "-", {True: "yes", False: "NO", None: "-"}[f.met],
             "!" if f.busy else "", f.detail.get("missing", "")] for f in figures]
    return tabulate(rows, headers=["part", "data", "figure", "value", "goal", "met", "busy", "note"],
                    tablefmt="github")
