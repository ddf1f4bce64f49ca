"""The search process of the SPANN benchmark's synthetic run: SPANN and faiss's on-disk IVF
served side by side from one process whose memory is capped (cgroup v2 ``memory.max``), one
query per call on one thread each, their sweep points timed in interleaved rounds.

Why one process and rounds: this machine is shared and its speed drifts by 30-50 % within
minutes, so two targets timed one after the other can differ by the drift alone. Here every
round times one pass of every sweep point (the order rotated each round), both targets live
under the same memory cap and thread limits (faiss's OpenMP and BLAS at one thread, as
SPANN's one-query path; idle OpenMP threads of a second pool spin on the other core), and each
point reports the pass of median speed and every round's QPS.

    python bench/spann_serve.py --spann DIR --ivf FILE --queries Q.npy --gt GT.npy   # by bench/spann.py
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from spann_measure import current_rss, eps2_list, peak_rss, per_query, read_stats, read_work, resident_pages, row

#: timed rounds per sweep point (each round times every point once)
ROUNDS = 5


def capped_cgroup(limit_bytes: int) -> Path | None:
    """A cgroup v2 group with ``memory.max`` = ``limit_bytes`` (None where /sys/fs/cgroup is
    not a writable cgroup v2 hierarchy)."""
    root = Path("/sys/fs/cgroup")
    if not (root / "cgroup.controllers").exists():
        return None
    group = root / f"vecdb-spann-bench-{os.getpid()}"
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


def serve_capped(spann: Path | None, ivf: Path | None, queries: np.ndarray, gt: np.ndarray, metric: str,
                 args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run this script in a subprocess inside a memory-capped cgroup (when one can be made):
    the SPANN index at ``spann`` and the faiss index file ``ivf`` (either may be None)."""
    np.save(workdir / "serve-queries.npy", queries)
    np.save(workdir / "serve-gt.npy", gt)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--queries", str(workdir / "serve-queries.npy"),
           "--gt", str(workdir / "serve-gt.npy"), "--metric", metric, "--k", str(args.k), "--rounds", str(args.rounds),
           "--spann-sweep", args.spann_sweep, "--spann-eps2", args.spann_eps2, "--ivf-sweep", args.ivf_sweep]
    cmd += ["--spann", str(spann)] if spann is not None else []
    cmd += ["--ivf", str(ivf)] if ivf is not None else []
    cmd += ["--cold"] if args.cold else []
    cap = args.mem_cap_mb * 2**20
    group = capped_cgroup(cap)
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if group is not None:
        (group / "cgroup.procs").write_text(str(child.pid))
    out, err = child.communicate()
    if group is not None:
        try:
            group.rmdir()
        except OSError:
            pass
    if child.returncode != 0:
        raise RuntimeError(f"the search process failed ({child.returncode}): {err[-2000:]}")
    got = json.loads(out.strip().splitlines()[-1])
    got["info"]["memory_cap"] = (f"cgroup v2 memory.max={cap}" if group is not None else
                                 "none (no writable cgroup v2): RSS and page-cache residency reported")
    return got["info"], got["rows"]


class Point:
    """One sweep point: how to search one query, the data file a cold pass evicts, and the
    row's fixed fields; ``passes`` collects each timed pass's (ids, per-query seconds)."""

    def __init__(self, target: str, knob: str, value: int, search: Callable[[np.ndarray], np.ndarray],
                 data_file: Path, **extra: Any) -> None:
        self.target, self.knob, self.value, self.search, self.data_file = target, knob, value, search, data_file
        self.extra = extra
        self.passes: list[tuple[np.ndarray, np.ndarray]] = []

    def timed_pass(self, queries: np.ndarray, cold: bool) -> None:
        self.passes.append(per_query(self.search, queries, evict_first=self.data_file if cold else None))

    def result(self, gt: np.ndarray, cache: str) -> dict[str, Any]:
        """The row of the pass of median speed, with every pass's QPS."""
        qps = [len(secs) / secs.sum() for _, secs in self.passes]
        ids, secs = self.passes[int(np.argsort(qps)[len(qps) // 2])]
        return row(self.target, self.knob, self.value, ids, secs, gt, cache=cache,
                   qps_rounds=[round(float(v), 1) for v in qps], **self.extra)


def spann_points(path: Path, dim: int, metric: str, k: int, sweep: list[int],
                 eps2s: list[float | None]) -> tuple[Any, list[Point]]:
    from vecdb.index import SPANN

    index = SPANN(dim, metric, path)
    points = []
    for eps2 in eps2s:
        for mp in sweep:
            def search(q: np.ndarray, mp: int = mp, eps2: float | None = eps2) -> np.ndarray:
                return index.search(q, k, max_postings=mp, eps2=eps2).ids

            points.append(Point("spann", "max_postings", mp, search, path / "data.mdb", eps2=eps2))
    return index, points


def ivf_points(path: Path, k: int, sweep: list[int]) -> tuple[Any, list[Point]]:
    """faiss's IndexIVFFlat read from ``path`` (written with its OnDiskInvertedLists, which
    map ``path``'s lists file again), one point per nprobe."""
    import faiss

    index = faiss.read_index(str(path))
    lists = path.with_suffix(".ivfdata")
    points = []
    for nprobe in sweep:
        params = faiss.SearchParametersIVF(nprobe=nprobe)

        def search(q: np.ndarray, params: Any = params) -> np.ndarray:
            return index.search(q, k, params=params)[1]

        points.append(Point("faiss-ivfflat", "nprobe", nprobe, search, lists))
    return index, points


def run_rounds(points: list[Point], queries: np.ndarray, rounds: int, cold: bool) -> None:
    """One untimed pass per point (pages and kernels loaded), then ``rounds`` rounds each
    timing every point once, the order rotated by one each round (a cold pass evicts its
    target's files first)."""
    for point in points:
        point.passes.clear()
        if not cold:
            per_query(point.search, queries)
    for r in range(rounds):
        for point in points[r % len(points):] + points[: r % len(points)]:
            point.timed_pass(queries, cold)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spann", default=None, help="SPANN index directory")
    ap.add_argument("--ivf", default=None, help="faiss index file (on-disk inverted lists)")
    ap.add_argument("--queries", required=True)
    ap.add_argument("--gt", required=True)
    ap.add_argument("--metric", default="l2")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--spann-sweep", default="4,5,6,8")
    ap.add_argument("--spann-eps2", default="")
    ap.add_argument("--ivf-sweep", default="2,3,4,8")
    ap.add_argument("--cold", action="store_true")
    args = ap.parse_args(argv)
    ints = lambda text: [int(v) for v in text.split(",") if v]  # noqa: E731
    queries, gt = np.load(args.queries), np.load(args.gt)
    if args.ivf:
        import faiss

        faiss.omp_set_num_threads(1)             # one query per call on one thread, as SPANN's path
    from vecdb.kernels._jit import threads      # after faiss: its OpenMP runtime is limited too

    info: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    with threads(1):
        spann = ivf = None
        points: list[Point] = []
        if args.spann:
            spann, got = spann_points(Path(args.spann), queries.shape[1], args.metric, args.k, ints(args.spann_sweep),
                                      eps2_list(args.spann_eps2))
            info["rss_after_open"] = current_rss()
            points += got
        if args.ivf:
            ivf, got = ivf_points(Path(args.ivf), args.k, ints(args.ivf_sweep))
            points += got
        for cache in (["warm", "cold"] if args.cold else ["warm"]):
            run_rounds(points, queries, args.rounds, cache == "cold")
            for point in points:
                out = point.result(gt, cache)
                if point.target == "spann":   # the reads, in an untimed pass after the timed ones
                    cached, pages = resident_pages(Path(args.spann) / "data.mdb")
                    stats = read_work(spann, queries, args.k, point.value, point.extra["eps2"])
                    out.update(read_stats(stats, point.value), file_pages_cached=cached, file_pages=pages)
                out["rss_bytes"] = current_rss()
                rows.append(out)
        if spann is not None:
            info["resident_bytes"] = spann.memory_bytes()
            spann.close()
    info.update(rss_peak=peak_rss(), rounds=args.rounds, threads=1)
    print(json.dumps({"info": info, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
