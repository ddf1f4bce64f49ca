"""``vecdb bench run``: build every target once per build setting (a grid), sweep the search
settings, thread counts and batch sizes, and append one JSON line per (target, build, search,
threads, batch) and workload (plain k-NN, filters, tenants: workloads.py; churn: churn.py) to
the output as soon as that setting is measured (see jsonl.py), under the harness' conditions:
the lock file, a quiet-machine check, targets interleaved pass by pass."""
from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.util
import logging
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from vecdb.bench import churn, grid, machine, workloads
from vecdb.bench.adapters import TARGETS, Target
from vecdb.bench.jsonl import SCHEMA, ResultWriter, fingerprint
from vecdb.bench.measure import Passes, Timing, duplicate_rows, time_pass, time_tenant_pass
from vecdb.bench.runner import STATS, set_threads
from vecdb.bench.server import ServerTarget
from vecdb.bench.server import target_class as server_target_class
from vecdb.bench.workloads import Workload
from vecdb.data import Dataset, load_dataset
from vecdb.errors import FailedPreconditionError, InvalidArgumentError
from vecdb.eval import ground_truth, recall_at_k
from vecdb.kernels._jit import threads as thread_limit

log = logging.getLogger(__name__)

#: recall depths every line reports (those <= k), beside recall@k itself
RECALL_DEPTHS = (1, 10, 100)
#: optional targets -> (modules they import, the pyproject extra that installs them)
OPTIONAL: dict[str, tuple[tuple[str, ...], str]] = {
    "hnswlib": (("hnswlib",), "bench"),
    "chroma": (("chromadb",), "peers"),
    "qdrant-local": (("qdrant_client",), "peers"),
    "lancedb": (("lancedb", "pyarrow"), "peers"),
    "lancedb-ivf-hnsw-sq": (("lancedb", "pyarrow"), "peers"),
    "milvus-lite-flat": (("pymilvus", "milvus_lite"), "peers"),
    "milvus-lite-ivf": (("pymilvus", "milvus_lite"), "peers"),
}


class MissingPeerError(FailedPreconditionError):
    """A chosen target needs an optional package that is not installed."""


@dataclass
class RunSpec:
    """One ``vecdb bench run`` invocation (recorded in every line as ``config``)."""

    dataset: str
    targets: list[str]
    output: str
    build: dict[str, list[Any]] = field(default_factory=dict)
    search: dict[str, list[Any]] = field(default_factory=dict)
    k: int = 10
    threads: list[int] = field(default_factory=lambda: [1])
    batches: list[int] = field(default_factory=lambda: [1])
    #: the same-run reference every line names (default: the first exact target, else the first)
    reference: str | None = None
    repeats: int = 3
    stat: str = "best"
    max_queries: int | None = None
    build_threads: int | None = None
    allow_busy: bool = False
    #: server mode: ``grpc://HOST:PORT`` of a running ``vecdb serve``, searched by each of
    #: ``concurrency`` client counts, in a collection of ``server_index`` (named ``collection``)
    server: str | None = None
    concurrency: list[int] = field(default_factory=lambda: [1])
    collection: str | None = None
    server_index: str = "hnsw"
    #: workloads beyond plain k-NN (see workloads.py): filter selectivities, a tenants spec
    #: ("dataset" or "zipf:N"); churn (churn.py): the fraction of rows held out and replaced
    #: ``churn_rounds`` rounds per pass while searched, at most ``churn_rate`` rows per second
    filters: list[float] = field(default_factory=list)
    tenants: str | None = None
    churn: float | None = None
    churn_rounds: int = 4
    churn_rate: float | None = None

    def classes(self) -> dict[str, type[Target]]:
        """Every measured target by name: the registered ones, then the server (if any)."""
        out: dict[str, type[Target]] = {t: TARGETS[t] for t in self.targets}
        if self.server:
            out[self.server] = server_target_class(self.server, self.server_index)
        return out

    def validate(self) -> None:
        """Check names, knobs and numbers before anything is loaded or built."""
        if not self.targets and not self.server:
            raise InvalidArgumentError("give at least one target (--targets, or --target grpc://HOST:PORT)")
        if self.reference and self.reference not in self.targets and self.reference != self.server:
            self.targets.append(self.reference)  # measured too: that is what makes it a same-run reference
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown:
            raise InvalidArgumentError(f"unknown target(s) {unknown}; known: {', '.join(sorted(TARGETS))}")
        if len(set(self.targets)) != len(self.targets):
            raise InvalidArgumentError(f"a target is listed twice: {self.targets}")
        grid.check_knobs(self.classes(), self.build, self.search)
        for name, cls in self.classes().items():  # bad knob values fail here, not after the builds
            for build in grid.expand(self.build):
                knobs = tuple(cls.knobs_for(grid.own(build, grid.build_knobs(cls))))
                for setting in grid.expand(self.search):
                    own = grid.own(setting, knobs)
                    try:
                        cls.check_search(own)
                    except InvalidArgumentError as exc:
                        raise InvalidArgumentError(f"--search: target {name} rejects {own}: {exc}") from None
        for name, values in (("--threads", self.threads), ("--batch", self.batches),
                             ("--concurrency", self.concurrency)):
            if not values or min(values) < 1:
                raise InvalidArgumentError(f"{name} takes positive integers, got {values}")
        if self.k < 1:
            raise InvalidArgumentError(f"--k must be >= 1, got {self.k}")
        if self.repeats < 1:
            raise InvalidArgumentError(f"--repeats must be >= 1, got {self.repeats}")
        if self.stat not in STATS:
            raise InvalidArgumentError(f"--stat must be one of {STATS}, got {self.stat!r}")
        if self.max_queries is not None and self.max_queries < 1:
            raise InvalidArgumentError(f"--max-queries must be >= 1, got {self.max_queries}")
        check_installed(self.targets)
        if self.tenants is not None:
            workloads.check_tenants_spec(self.tenants)
        if self.churn is not None:
            if self.filters or self.tenants is not None:
                raise InvalidArgumentError("--churn changes the index between searches: run it apart from "
                                           "--filter / --tenants")
            if not 0 < self.churn < 1 or self.churn_rounds < 1:
                raise InvalidArgumentError(f"--churn takes a fraction in (0, 1) and --churn-rounds >= 1, got "
                                           f"{self.churn} and {self.churn_rounds}")
            if self.churn_rate is not None and not self.churn_rate > 0:
                raise InvalidArgumentError(f"--churn-rate takes rows per second > 0, got {self.churn_rate}")
        elif self.churn_rate is not None:
            raise InvalidArgumentError("--churn-rate needs --churn")
        workloads.check_support(self.classes(), self.filters, self.tenants, self.churn)
        if self.reference is None:
            names = list(self.classes())
            exact = [t for t, c in self.classes().items() if c.algorithm == "exact"]
            self.reference = (exact or names)[0]


def check_installed(targets: list[str]) -> None:
    """Raise MissingPeerError naming the extra to install when a target's package is absent."""
    for name in targets:
        modules, extra = OPTIONAL.get(name, ((), ""))
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            hint = " (or `bash bench/peers-venv.sh` for a separate venv with every peer)" if extra == "peers" else ""
            raise MissingPeerError(f"target {name} needs the Python package(s) {', '.join(missing)}, which are not "
                                   f"installed: pip install 'vecdb[{extra}]'{hint}")


def load(name: str, k: int, max_queries: int | None) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """The dataset, the queries searched and their exact top-k rows (clear errors when the
    dataset is missing or has no queries)."""
    path = Path(name)
    if path.is_dir() and (path / "base.npy").exists() and not (path / "query.npy").exists():
        raise InvalidArgumentError(f"dataset {path} has no queries (query.npy); a benchmark needs held-out queries")
    ds = load_dataset(name)
    if len(ds.queries) == 0:
        raise InvalidArgumentError(f"dataset {ds.name} has no queries; a benchmark needs held-out queries")
    if len(ds.base) == 0:
        raise InvalidArgumentError(f"dataset {ds.name} has no base vectors")
    queries = ds.queries if max_queries is None else ds.queries[:max_queries]
    depth = min(k, len(ds.base))
    if ds.gt_ids is not None and ds.gt_ids.shape[1] >= depth and len(ds.gt_ids) >= len(queries):
        truth = ds.gt_ids[: len(queries), :depth]
    else:  # the file lacks it: computed once, then read from the cache (see workloads.cached_truth)
        fp = fingerprint(ds, queries)
        truth = workloads.cached_truth(ds, queries, (fp["base_sha256"], fp["queries_sha256"]), "knn", depth,
                                       lambda d: ground_truth(ds.base, queries, d, ds.metric)[0])
    return ds, np.ascontiguousarray(queries), np.asarray(truth, np.int64)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class _Built:
    """One target built under one build setting."""

    name: str
    target: Target
    build: dict[str, Any]
    info: dict[str, Any]
    #: this target's copy of the churn sequence (churn runs only)
    stream: churn.ChurnStream | None = None


class Session:
    """The state one run shares across its lines: spec, dataset, truth, writer, provenance."""

    def __init__(self, spec: RunSpec, ds: Dataset, queries: np.ndarray, truth: np.ndarray, writer: ResultWriter,
                 argv: list[str] | None) -> None:
        self.spec, self.ds, self.queries, self.truth, self.writer = spec, ds, queries, truth, writer
        self.provenance = machine.provenance(argv)
        self.fingerprint = fingerprint(ds, queries)
        self.started_at = _now()
        self.reference_qps: dict[tuple[int, int], float] = {}
        self.config = asdict(spec)
        self.classes = spec.classes()
        #: a tqdm bar over the planned lines (None: no bar)
        self.progress: Any = None
        hashes = (self.fingerprint["base_sha256"], self.fingerprint["queries_sha256"])
        k = truth.shape[1]
        #: the non-mutating workloads every build is searched under (plain k-NN when none is asked)
        self.workloads: list[Workload] = [
            *workloads.filter_workloads(ds, queries, hashes, k, spec.filters),
            *([workloads.tenant_workload(ds, queries, hashes, k, spec.tenants)] if spec.tenants else [])]
        #: the churn workload's sequence (each built target replays its own copy), or None
        self.churn = None if spec.churn is None else churn.ChurnStream(len(ds.base), spec.churn,
                                                                       spec.churn_rounds, k)
        if self.churn is not None:
            self.workloads = [workloads.churn_workload(self.churn, spec.churn_rate)]
        if not self.workloads:
            self.workloads = [Workload("knn", {"kind": "knn"}, truth)]
        #: per (target, build, threads, batch, concurrency, workload, other knobs): recall per knob value
        self.sweeps: dict[tuple, dict[str, float]] = {}

    def plan(self) -> list[tuple[int, list[str]]]:
        """Per build setting (by index), the targets it builds: each target once per distinct
        value of the build knobs it reads."""
        seen: set[tuple] = set()
        rounds = []
        for bi, setting in enumerate(grid.expand(self.spec.build)):
            names = []
            for name in self._reference_first(list(self.classes)):
                own = grid.own(setting, grid.build_knobs(self.classes[name]))
                key = (name, tuple(sorted((k, str(v)) for k, v in own.items())))
                if key not in seen:
                    seen.add(key)
                    names.append(name)
            rounds.append((bi, names))
        return rounds

    def planned_lines(self) -> int:
        """How many lines the run writes when it is not interrupted (for the progress bar)."""
        total = 0
        settings = grid.expand(self.spec.build)
        passes = len(self.workloads)
        for bi, names in self.plan():
            for name in names:
                cls = self.classes[name]
                knobs = tuple(cls.knobs_for(grid.own(settings[bi], grid.build_knobs(cls))))
                n_search = len({tuple(sorted((k, str(v)) for k, v in grid.own(s, knobs).items()))
                                for s in grid.expand(self.spec.search)})
                per = len(self.spec.concurrency) if name == self.spec.server else len(self.spec.threads) * passes
                total += per * n_search * len(self.spec.batches)
        return total

    def builds(self, workdir: Path) -> Iterator[list[_Built]]:
        """Per build setting, the targets it (re)builds (a target is built once per distinct
        value of the knobs it reads); each round's targets are closed after it is measured."""
        threads = self.spec.build_threads or max(self.spec.threads)
        settings = grid.expand(self.spec.build)
        for bi, names in self.plan():
            round_: list[_Built] = []
            try:
                for name in names:
                    own = grid.own(settings[bi], grid.build_knobs(self.classes[name]))
                    if self.progress is not None:
                        self.progress.set_postfix_str(f"building {name} {own or ''}".strip())
                    round_.append(self._build(name, own, workdir / f"b{bi}-{name}", threads))
                yield round_
            finally:
                for b in round_:
                    b.target.close()

    def _reference_first(self, names: list[str]) -> list[str]:
        return sorted(names, key=lambda n: n != self.spec.reference)

    def _build(self, name: str, build: dict[str, Any], workdir: Path, threads: int) -> _Built:
        target = self.classes[name](self.ds.metric, self.ds.dim, build)
        target.workdir = workdir
        tenants = [w for w in self.workloads if w.members is not None]
        if tenants:
            target.tenant_members = tenants[0].members
        if self.spec.filters:
            target.filter_attribute = workloads.filter_attribute(len(self.ds.base))
        base = self.ds.base
        stream = None
        if self.churn is not None:
            target.capacity = len(base)
            stream = churn.ChurnStream(len(base), self.churn.fraction, self.churn.rounds, self.truth.shape[1])
            base = np.ascontiguousarray(base[: stream.n_initial])
        if isinstance(target, ServerTarget):
            target.collection, target.data_hash = self.spec.collection, self.fingerprint["base_sha256"]
        watch = machine.Watch()
        built_at = _now()
        with thread_limit(threads):
            set_threads(threads)
            target.threads = threads
            t0 = time.perf_counter()
            target.build(base)
            build_s = time.perf_counter() - t0
        quiet = watch.stop()
        log.info("built %s %s in %.2fs", name, build, build_s)
        info = {"build_s": build_s, "build_threads": threads, "built_at": built_at,
                "index_memory_bytes": target.memory_bytes(), "memory_source": target.memory_source,
                "disk_bytes": target.disk_bytes(), "build_busy": quiet.busy, **target.build_info()}
        return _Built(name, target, build, info, stream)

    def measure(self, built: list[_Built]) -> None:
        """Every (threads, search setting, batch) over the round's embedded targets, then every
        (concurrency, search setting, batch) of the server; one line each."""
        embedded = [b for b in built if not isinstance(b.target, ServerTarget)]
        for w in self.workloads:
            self._measure_embedded(embedded, w)
        self._measure_server([b for b in built if isinstance(b.target, ServerTarget)], self.workloads[0])

    def _settings(self, built: list[_Built]) -> Iterator[list[tuple[_Built, dict[str, Any]]]]:
        """Per search setting, the targets it gives a new value of their own knobs."""
        seen: set[tuple] = set()
        for setting in grid.expand(self.spec.search):
            group = []
            for b in built:
                own = grid.own(setting, tuple(b.target.search_knobs))
                key = (b.name, tuple(sorted((k, str(v)) for k, v in own.items())))
                if key not in seen:
                    seen.add(key)
                    group.append((b, own))
            if group:
                yield group

    def _measure_server(self, built: list[_Built], w: Workload) -> None:
        spec = self.spec
        for clients in spec.concurrency:
            for group in self._settings(built):
                for batch in spec.batches:
                    for b, own in group:
                        started, watch, passes = _now(), machine.Watch(), Passes()
                        for _ in range(spec.repeats):
                            passes.add(b.target.time_concurrent(self.queries, spec.k, own, batch, clients))
                        self._write(b, own, clients, passes, started, watch.stop(), w, concurrency=clients)

    def _measure_embedded(self, built: list[_Built], w: Workload) -> None:
        spec = self.spec
        if not built:
            return
        for n_threads in spec.threads:
            with thread_limit(n_threads):
                set_threads(n_threads)
                for b in built:
                    b.target.threads = n_threads
                for group in self._settings(built):
                    for batch in spec.batches:
                        self._measure_group(group, n_threads, batch, w)

    def _time(self, target: Target, w: Workload, own: dict[str, Any], batch: int,
              queries: np.ndarray | None = None) -> Timing:
        """One pass of workload ``w`` over ``queries`` (default: all) in calls of ``batch``."""
        q = self.queries if queries is None else queries
        if w.query_tenants is not None:
            assert w.members is not None
            return time_tenant_pass(target, q, w.query_tenants[: len(q)], w.members, self.spec.k, own, batch)
        return time_pass(target, q, self.spec.k, own, batch, w.allow)

    def _measure_group(self, group: list[tuple[_Built, dict[str, Any]]], n_threads: int, batch: int,
                       w: Workload) -> None:
        """Warm up, time ``repeats`` passes with the targets interleaved, write one line each."""
        spec = self.spec
        if w.info["kind"] == "churn":
            for b, own in group:
                self._measure_churn(b, own, n_threads, batch, w)
            return
        started = _now()
        watch = machine.Watch()
        passes = {b.name: Passes() for b, _ in group}
        for b, own in group:  # warm-up with a whole call: a block's first call may compile its own path
            self._time(b.target, w, own, batch, self.queries[:batch])
        for _ in range(spec.repeats):
            for b, own in group:
                passes[b.name].add(self._time(b.target, w, own, batch))
        quiet = watch.stop()
        for b, own in group:
            self._write(b, own, n_threads, passes[b.name], started, quiet, w)

    def _measure_churn(self, b: _Built, own: dict[str, Any], n_threads: int, batch: int, w: Workload) -> None:
        """One target at one setting under churn: ``repeats`` idle passes over the live rows as
        they stand (after the target settles), then ``repeats`` passes while the writer thread
        inserts and deletes (churn.py); one line with both, scored by ``churn.TRUTH_RULE``."""
        spec, k = self.spec, self.spec.k
        assert b.stream is not None
        if self.progress is not None:
            self.progress.set_postfix_str(f"churn {b.name} {own or ''}".strip())
        started, watch = _now(), machine.Watch()
        b.target.settle()
        live = b.stream.live.copy()
        idle_truth = churn.exact_topk(self.ds.base, self.queries, self.ds.metric, live, k)
        self._time(b.target, w, own, batch, self.queries[:batch])  # warm-up
        idle = Passes()
        for _ in range(spec.repeats):
            idle.add(self._time(b.target, w, own, batch))
        phase = churn.run_phase(
            b.target, b.stream, self.ds.base,
            lambda guard: [time_pass(guard, self.queries, k, own, batch) for _ in range(spec.repeats)],
            rate=spec.churn_rate, writer_threads=b.info["build_threads"])
        quiet = watch.stop()
        # every pass under writes counts (picking the fastest would pick the least disturbed one)
        during = Passes([churn.combined(phase.timings)])
        chosen, idle_chosen = during.timings[0], idle.pick(spec.stat)
        starts, ends = churn.query_times(phase.timings)
        depths = tuple(sorted({*(r for r in RECALL_DEPTHS if r <= k), k}))
        query_of = np.tile(np.arange(len(self.queries)), len(phase.timings))
        scored = churn.score(self.ds.base, self.queries, self.ds.metric, phase.live_start, phase.log, starts, ends,
                             chosen.ids, k, depths, query_of)
        idle_recalls = {f"recall_at_{r}": recall_at_k(idle_chosen.ids, idle_truth, r) for r in depths}
        figures = {**phase.figures(b.stream), "write_note": b.target.churn_note, **scored.stats,
                   "passes": len(phase.timings), "queries_searched": int(len(chosen.ids)),
                   "index_memory_bytes": b.target.memory_bytes()}
        idle_fig = {"qps": idle_chosen.qps, "qps_passes": idle.qps_list(), "p50_ms": idle.percentile_ms(50),
                    "p95_ms": idle.percentile_ms(95), "p99_ms": idle.percentile_ms(99), "n_live": int(live.sum()),
                    **idle_recalls}
        extra = {"truth": scored.truth, "dropped": scored.dropped,
                 "query": query_of, "query_start_s": starts - phase.t0,
                 "query_end_s": ends - phase.t0, "live_start_bits": np.packbits(phase.live_start),
                 **phase.log.arrays(phase.t0), "idle_ids": idle_chosen.ids, "idle_latencies_s": idle_chosen.latencies_s,
                 "idle_truth": idle_truth}
        recalls = {f"recall_at_{r}": v for r, v in scored.recalls.items()}
        self._write(b, own, n_threads, during, started, quiet, w, recalls=recalls, extra=extra,
                    workload={"churn": figures, "idle": idle_fig},
                    overrides={"stat": "all", "qps_passes": [t.qps for t in phase.timings]})

    def _write(self, b: _Built, own: dict[str, Any], n_threads: int, p: Passes, started: str,
               quiet: machine.Quietness, w: Workload, concurrency: int = 1, recalls: dict[str, float] | None = None,
               extra: dict[str, np.ndarray] | None = None, workload: dict[str, Any] | None = None,
               overrides: dict[str, Any] | None = None) -> None:
        """One result line (and its raw arrays) for the chosen pass of ``p`` (``recalls``,
        ``extra`` arrays, ``workload`` figures and field ``overrides``: a churn line's own)."""
        spec, k = self.spec, self.spec.k
        chosen = p.pick(spec.stat)
        if b.name == spec.reference:
            self.reference_qps.setdefault((n_threads, chosen.batch, w.label), chosen.qps)
        line = {**self._line(b, own, n_threads, chosen, p, started, _now(), quiet, concurrency, w, recalls, workload),
                **(overrides or {})}
        self.writer.write(line, chosen.ids, chosen.latencies_s,
                          None if w.truth is self.truth else (w.label, w.truth), extra)
        self._note_sweep(b, own, n_threads, chosen.batch, concurrency, w, line[f"recall_at_{k}"])
        if self.progress is not None:
            self.progress.set_postfix_str(f"{b.name} {own or ''}".strip())
            self.progress.update(1)
        log.info("%s %s threads=%d batch=%d recall@%d=%.3f qps=%.1f", b.name, own, n_threads, chosen.batch, k,
                 line[f"recall_at_{k}"], chosen.qps)

    def _note_sweep(self, b: _Built, own: dict[str, Any], n_threads: int, batch: int, concurrency: int,
                    w: Workload, recall: float) -> None:
        """Remember the recall of each value of each recall knob, all else equal."""
        build = tuple(sorted((key, str(v)) for key, v in b.build.items()))
        for knob in b.target.knobs_for_recall():
            if knob in own:
                rest = tuple(sorted((key, str(v)) for key, v in own.items() if key != knob))
                key = (b.name, build, n_threads, batch, concurrency, w.label, knob, rest)
                self.sweeps.setdefault(key, {})[str(own[knob])] = recall

    def dead_knobs(self) -> list[str]:
        """One warning per swept knob that left recall@k unchanged across its values (all else
        equal): a knob that does not reach the index, or a sweep outside the range that matters."""
        out: dict[tuple, str] = {}
        for (name, build, _, _, _, label, knob, rest), seen in self.sweeps.items():
            if len(seen) >= 2 and len(set(seen.values())) == 1:
                where = ", ".join(f"{k}={v}" for k, v in (*build, *rest))
                msg = (f"{name}: swept {knob} over {', '.join(seen)} but recall@{self.spec.k} stayed at "
                       f"{next(iter(seen.values())):.4f} ({label}{'; ' + where if where else ''}): the knob does "
                       f"not move recall here")
                out.setdefault((name, build, label, knob, rest, tuple(seen)), msg)
        return list(out.values())

    def _line(self, b: _Built, own: dict[str, Any], n_threads: int, chosen: Any, p: Passes, started: str,
              finished: str, quiet: machine.Quietness, concurrency: int, w: Workload,
              recalls: dict[str, float] | None = None, workload: dict[str, Any] | None = None) -> dict[str, Any]:
        spec, k = self.spec, self.spec.k
        if recalls is None:
            recalls = {f"recall_at_{r}": recall_at_k(chosen.ids, w.truth, r)
                       for r in sorted({*(r for r in RECALL_DEPTHS if r <= k), k})}
        ref_qps = self.reference_qps.get((n_threads, chosen.batch, w.label))
        return {
            "schema": SCHEMA, "run_id": self.writer.run_id, "line": self.writer.lines,
            "target": b.name, "algorithm": b.target.algorithm, "label": b.target.label(own),
            "reference": spec.reference, "reference_qps": ref_qps,
            "qps_vs_reference": chosen.qps / ref_qps if ref_qps else None,
            "workload": {"label": w.label, **w.info, **(workload or {})},
            "build": b.build, "search": own, "k": k, "threads": n_threads, "concurrency": concurrency,
            "batch": chosen.batch,
            **recalls,
            "qps": chosen.qps, "qps_passes": p.qps_list(), "stat": spec.stat, "repeats": spec.repeats,
            "p50_ms": p.percentile_ms(50), "p95_ms": p.percentile_ms(95), "p99_ms": p.percentile_ms(99),
            **b.info, "duplicate_rows": duplicate_rows(chosen.ids),
            "others_share": quiet.others_share, "busy": quiet.busy,
            # the server is outside this process tree: its CPU counts as "others" on one machine
            "others_include_server": isinstance(b.target, ServerTarget),
            "load_before": list(quiet.load_before), "load_after": list(quiet.load_after),
            "run_started_at": self.started_at, "started_at": started, "finished_at": finished,
            "dataset": self.fingerprint, "config": self.config, "provenance": self.provenance,
            "raw": {"ids": "int64 (n_queries, k) row numbers of the chosen pass",
                    "latencies_s": "seconds per call of the chosen pass (batch queries per call)"},
        }


def execute(spec: RunSpec, argv: list[str] | None = None, progress: bool = False) -> int:
    """Run ``spec`` under the benchmark lock; returns the number of lines written. On Ctrl-C
    (KeyboardInterrupt) the lines already written stay complete and the exception propagates."""
    spec.validate()
    with machine.bench_lock():  # before loading: computing ground truth would disturb another run
        ds, queries, truth = load(spec.dataset, spec.k, spec.max_queries)
        if not spec.allow_busy:  # with --allow-busy the window decides nothing: each line records its own share
            machine.check_quiet(spec.allow_busy)
        run_id = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        with ResultWriter(Path(spec.output), run_id, truth) as writer, \
                tempfile.TemporaryDirectory(prefix="vecdb-bench-run-") as work:
            session = Session(spec, ds, queries, truth, writer, argv)
            if progress:
                from tqdm import tqdm

                session.progress = tqdm(total=session.planned_lines(), unit="line", file=sys.stderr,
                                        desc="vecdb bench run")
            try:
                with contextlib.closing(session.builds(Path(work))) as rounds:  # closes targets on Ctrl-C too
                    for built in rounds:
                        session.measure(built)
                for msg in session.dead_knobs():
                    log.warning("%s", msg)
            finally:
                if session.progress is not None:
                    session.progress.close()
                log.info("%d lines in %s", writer.lines, writer.path)
            return writer.lines
