"""The search processes of the SPANN benchmark's synthetic run: SPANN and faiss's on-disk IVF,
each served by its own process under the same memory cap (cgroup v2 ``memory.max``), one query
per call on one thread, their sweep points timed in interleaved rounds.

Why rounds: this machine is shared and its speed drifts by 30-50 % within minutes, so two
targets timed one after the other can differ by the drift alone. The driver (``serve_capped``,
in the benchmark's process) keeps both processes open and asks them in turn: every round times
one pass of every sweep point of both targets (the order rotated each round), and each point
reports its pass of median speed with every round's QPS. Why a process each: in one process
the two runtimes disturbed each other (faiss's passes right after SPANN's ran 2-8x slower than
faiss alone), and each target then gets the whole cap, as DiskANN does in its own process.

A worker (``--worker``) reads one JSON command a line on stdin and answers one JSON line.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from spann_measure import current_rss, eps2_list, peak_rss, per_query, read_stats, read_work, resident_pages, row

#: timed rounds per sweep point (each round times every point of every target once)
ROUNDS = 5


def capped_cgroup(limit_bytes: int, name: str) -> Path | None:
    """A cgroup v2 group with ``memory.max`` = ``limit_bytes`` (None where /sys/fs/cgroup is
    not a writable cgroup v2 hierarchy)."""
    root = Path("/sys/fs/cgroup")
    if not (root / "cgroup.controllers").exists():
        return None
    group = root / f"vecdb-spann-bench-{os.getpid()}-{name}"
    try:
        group.mkdir()
        (group / "memory.max").write_text(str(limit_bytes))
        return group
    except OSError:
        try:
            group.rmdir()
        except OSError:
            pass
        return None


# ---- the worker: one target's index, its sweep points, passes on request --------------------
def spann_searches(path: Path, dim: int, metric: str, k: int, knobs: list[tuple[int, float | None, dict[str, Any]]]
                   ) -> tuple[Any, list[Callable[[np.ndarray], np.ndarray]]]:
    """SPANN at ``path`` and one search per (max_postings, eps2, search knobs) of ``knobs``."""
    from vecdb.index import SPANN

    index = SPANN(dim, metric, path)
    searches = []
    for mp, eps2, search in knobs:
        def one(q: np.ndarray, mp: int = mp, eps2: float | None = eps2, search: dict[str, Any] = search) -> np.ndarray:
            return index.search(q, k, max_postings=mp, eps2=eps2, **search).ids

        searches.append(one)
    return index, searches


def search_sets(text: str) -> list[dict[str, Any]]:
    """``--spann-search``: one JSON object of search knobs, or a list of them (each a variant
    swept over every max_postings and eps2, e.g. '[{"rerank": 10}, {"rerank": 20}]')."""
    value = json.loads(text)
    sets = value if isinstance(value, list) else [value]
    if not sets or not all(isinstance(one, dict) for one in sets):
        raise ValueError(f"--spann-search: a JSON object or a non-empty list of objects, got {text!r}")
    return sets


def spann_knobs(args: argparse.Namespace) -> list[tuple[int, float | None, dict[str, Any]]]:
    """Every SPANN sweep point: (max_postings, eps2, search knobs), search sets outermost."""
    sweep = [int(v) for v in args.spann_sweep.split(",") if v]
    return [(mp, eps2, search) for search in search_sets(args.spann_search)
            for eps2 in eps2_list(args.spann_eps2) for mp in sweep]


def ivf_searches(path: Path, k: int, sweep: list[int]) -> tuple[Any, list[Callable[[np.ndarray], np.ndarray]]]:
    """faiss's IndexIVFFlat read from ``path`` (written with its OnDiskInvertedLists, which
    map its lists file again), one search per nprobe. The lists' prefetch threads are turned
    off: one query on one thread, as SPANN's (with faiss's default 32 prefetch threads per
    search its one-query calls took 1.2-1.4 ms on this 2-core machine at 5M, 0.42-0.46 without)."""
    import faiss

    index = faiss.read_index(str(path))
    lists = faiss.downcast_InvertedLists(index.invlists)
    if hasattr(lists, "prefetch_nthread"):
        lists.prefetch_nthread = 0
    searches = []
    for nprobe in sweep:
        params = faiss.SearchParametersIVF(nprobe=nprobe)

        def search(q: np.ndarray, params: Any = params) -> np.ndarray:
            return index.search(q, k, params=params)[1]

        searches.append(search)
    return index, searches


def worker(args: argparse.Namespace) -> int:
    """Open one target, then answer commands: {"pass": i, "cold": bool} (ids and per-query
    seconds of one pass of point i; cold: the data file evicted first), {"reads": i} (SPANN's
    reads per query at point i, untimed, and the file's page-cache residency), {"quit": 1}."""
    ints = lambda text: [int(v) for v in text.split(",") if v]  # noqa: E731
    queries = np.load(args.queries)
    if args.ivf:
        import faiss

        faiss.omp_set_num_threads(1)             # one query per call on one thread, as SPANN's path
    from vecdb.kernels._jit import threads      # after faiss: its OpenMP runtime is limited too

    def open_target() -> tuple[Any, list[Callable[[np.ndarray], np.ndarray]]]:
        if args.spann:
            return spann_searches(Path(args.spann), queries.shape[1], args.metric, args.k, knobs)
        return ivf_searches(Path(args.ivf), args.k, ints(args.ivf_sweep))

    with threads(1):
        knobs = spann_knobs(args) if args.spann else []
        data_file = Path(args.spann) / "data.mdb" if args.spann else Path(args.ivf).with_suffix(".ivfdata")
        index, searches = open_target()
        reply({"ready": True, "rss_after_open": current_rss()})
        for line in sys.stdin:
            cmd = json.loads(line)
            if "pass" in cmd:
                if cmd["cold"]:                   # DONTNEED skips pages this process maps: drop the maps
                    if args.spann:               # (the target opened again), then evict (``per_query``)
                        index.close()
                    index = searches = None
                    gc.collect()                 # (a closed target in a reference cycle would keep its maps)
                    index, searches = open_target()
                cached: list[int] = []
                ids, secs = per_query(searches[cmd["pass"]], queries, evict_first=data_file if cmd["cold"] else None,
                                      after_evict=lambda: cached.append(resident_pages(data_file)[0]))
                reply({"ids": ids.tolist(), "secs": secs.tolist(), "cached_at_start": cached[0] if cached else None})
            elif "reads" in cmd:
                mp, eps2, search = knobs[cmd["reads"]]
                cached, pages = resident_pages(data_file)
                stats = read_stats(read_work(index, queries, args.k, mp, eps2, **search), mp)
                reply({**stats, "file_pages_cached": cached, "file_pages": pages, "rss_bytes": current_rss()})
            else:
                break
        info = {"rss_peak": peak_rss(), "rss_bytes": current_rss()}
        if args.spann:
            info["resident_bytes"] = index.memory_bytes()
            index.close()
        reply(info)
    return 0


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# ---- the driver ------------------------------------------------------------------------------
class Worker:
    """A worker process of one target, in its own capped cgroup when one can be made."""

    def __init__(self, name: str, target_args: list[str], common: list[str], cap: int) -> None:
        self.group = capped_cgroup(cap, name)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", *target_args, *common]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.group is not None:
            (self.group / "cgroup.procs").write_text(str(self.proc.pid))
        self.ready = self.ask(None)

    def ask(self, cmd: dict[str, Any] | None) -> dict[str, Any]:
        """Send ``cmd`` (None: only read) and return the worker's answer."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if cmd is not None:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a search process exited ({self.proc.wait()}); see its stderr above")
        return json.loads(line)

    def close(self) -> dict[str, Any]:
        """Stop the worker; its last figures (RSS peak, SPANN's resident bytes)."""
        try:
            return self.ask({"quit": 1})
        finally:
            self.proc.wait()
            if self.group is not None:
                try:
                    self.group.rmdir()
                except OSError:
                    pass


class Point:
    """One sweep point of one worker: its row's fixed fields and the passes timed so far."""

    def __init__(self, worker: Worker, at: int, target: str, knob: str, value: int, **extra: Any) -> None:
        self.worker, self.at, self.target, self.knob, self.value, self.extra = worker, at, target, knob, value, extra
        self.passes: list[tuple[np.ndarray, np.ndarray]] = []

    def run_pass(self, cold: bool) -> None:
        got = self.worker.ask({"pass": self.at, "cold": cold})
        self.passes.append((np.asarray(got["ids"]), np.asarray(got["secs"])))
        if got.get("cached_at_start") is not None:          # how cold the pass began (pages of the file)
            self.extra.setdefault("cached_pages_at_start", []).append(got["cached_at_start"])

    def result(self, gt: np.ndarray, cache: str) -> dict[str, Any]:
        """The row of the pass of median speed, with every pass's QPS."""
        qps = [len(secs) / secs.sum() for _, secs in self.passes]
        ids, secs = self.passes[int(np.argsort(qps)[len(qps) // 2])]
        return row(self.target, self.knob, self.value, ids, secs, gt, cache=cache,
                   qps_rounds=[round(float(v), 1) for v in qps], **self.extra)


def run_rounds(points: list[Point], rounds: int, cold: bool) -> None:
    """Warm: one untimed pass per point first (pages and kernels loaded). Then ``rounds``
    rounds each timing every point once, the order rotated by one each round."""
    for point in points:
        point.passes.clear()
        if not cold:
            point.run_pass(False)
            point.passes.clear()
    for r in range(rounds):
        for point in points[r % len(points):] + points[: r % len(points)]:
            point.run_pass(cold)


def serve_capped(spann: Path | None, ivf: Path | None, queries: np.ndarray, gt: np.ndarray, metric: str,
                 args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """SPANN at ``spann`` and the faiss index file ``ivf`` (either may be None), each served by
    a worker process under ``args.mem_cap_mb``, timed in interleaved rounds: (SPANN's serving
    info, rows)."""
    np.save(workdir / "serve-queries.npy", queries)
    ints = lambda text: [int(v) for v in text.split(",") if v]  # noqa: E731
    common = ["--queries", str(workdir / "serve-queries.npy"), "--metric", metric, "--k", str(args.k),
              "--spann-sweep", args.spann_sweep, "--spann-eps2", args.spann_eps2, "--ivf-sweep", args.ivf_sweep,
              "--spann-search", args.spann_search]
    cap = args.mem_cap_mb * 2**20
    workers: dict[str, Worker] = {}
    points: list[Point] = []
    try:
        if spann is not None:
            w = workers["spann"] = Worker("spann", ["--spann", str(spann)], common, cap)
            points += [Point(w, i, "spann", "max_postings", mp, eps2=eps2, **({"search": search} if search else {}))
                       for i, (mp, eps2, search) in enumerate(spann_knobs(args))]
        if ivf is not None:
            w = workers["ivf"] = Worker("ivf", ["--ivf", str(ivf)], common, cap)
            points += [Point(w, i, "faiss-ivfflat", "nprobe", nprobe) for i, nprobe in enumerate(ints(args.ivf_sweep))]
        rows = []
        for cache in (["warm", "cold"] if args.cold else ["warm"]):
            run_rounds(points, args.rounds, cache == "cold")
            for point in points:
                out = point.result(gt, cache)
                if point.target == "spann":
                    out.update(point.worker.ask({"reads": point.at}))
                rows.append(out)
    finally:
        last = {name: w.close() for name, w in workers.items()}
    groups = {w.group is not None for w in workers.values()}
    info: dict[str, Any] = {"rounds": args.rounds, "threads": 1, "memory_cap": (
        f"cgroup v2 memory.max={cap} per search process" if groups == {True} else
        "none (no writable cgroup v2): RSS and page-cache residency reported")}
    if "spann" in workers:
        info.update(rss_after_open=workers["spann"].ready["rss_after_open"], **last["spann"])
    return info, rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", required=True, help="serve commands on stdin")
    ap.add_argument("--spann", default=None, help="SPANN index directory")
    ap.add_argument("--ivf", default=None, help="faiss index file (on-disk inverted lists)")
    ap.add_argument("--queries", required=True)
    ap.add_argument("--metric", default="l2")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--spann-sweep", default="4,5,6,8")
    ap.add_argument("--spann-eps2", default="")
    ap.add_argument("--ivf-sweep", default="2,3,4,8")
    ap.add_argument("--spann-search", default="{}",
                    help="JSON of SPANN search knobs (e.g. rerank), or a list of such objects (each swept)")
    args = ap.parse_args(argv)
    if bool(args.spann) == bool(args.ivf):
        ap.error("one of --spann and --ivf")
    return worker(args)


if __name__ == "__main__":
    sys.exit(main())
