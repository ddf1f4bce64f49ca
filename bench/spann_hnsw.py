"""Our in-memory HNSW beside SPANN on the larger-than-RAM synthetic set (issue 13): built once
(about an hour on 2 threads at 5M) and saved under the workdir, so a later benchmark run
searches the saved index instead of building it again. The build's figures (wall and CPU
seconds, the load average at its end) are kept with it in ``build.json``; a build that ran
beside other work says so there, and its CPU seconds are the comparable figure.

    python bench/spann_hnsw.py --synthetic 5000000 --workdir .bench-work     # build only
    python bench/spann.py --synthetic 5000000 --targets spann,hnsw,... --workdir .bench-work
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

#: graph parameters of every HNSW row in bench/spann.py
M, EF_CONSTRUCTION = 16, 200
CHUNK = 250_000


def _cpu_seconds() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def build_saved(base: np.ndarray, metric: str, folder: Path) -> dict[str, Any]:
    """Build our HNSW over ``base`` (added in chunks, a line of progress each) and save it
    with its build figures in ``folder``; returns those figures."""
    from vecdb.index import HNSW

    record = folder / "build.json"
    record.unlink(missing_ok=True)
    index = HNSW(base.shape[1], metric, M=M, ef_construction=EF_CONSTRUCTION, progress=False)
    index.reserve(len(base))
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    for start in range(0, len(base), CHUNK):
        index.add(np.ascontiguousarray(base[start:start + CHUNK], np.float32))
        print(f"hnsw: {start + min(CHUNK, len(base) - start):,} / {len(base):,} rows, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    built = {"target": "hnsw", "build_s": time.perf_counter() - t0, "build_cpu_s": _cpu_seconds() - cpu0,
             "n": len(base), "M": M, "ef_construction": EF_CONSTRUCTION, "resident_bytes": index.memory_bytes(),
             "raw_bytes": int(base.nbytes), "load_avg_at_end": os.getloadavg()}
    index.save(folder / "index")
    record.write_text(json.dumps(built))
    return built


def search_saved(base: np.ndarray, queries: np.ndarray, gt: np.ndarray, k: int, folder: Path, sweep: list[int],
                 per_query: Callable[..., tuple[np.ndarray, np.ndarray]],
                 row: Callable[..., dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The saved HNSW of ``folder`` searched one query per call at each ef of ``sweep``
    (``per_query`` and ``row``: bench/spann.py's timing and row helpers)."""
    from vecdb.index.base import load_index

    record = folder / "build.json"
    if not record.exists():
        raise SystemExit(f"no finished HNSW build in {folder}: run bench/spann_hnsw.py first")
    built = json.loads(record.read_text())
    if built["n"] != len(base):
        raise SystemExit(f"{folder} holds an HNSW of {built['n']} rows, not {len(base)}")
    index = load_index(folder / "index")
    rows = []
    for ef in sweep:
        ids, secs = per_query(lambda q, ef=ef: index.search(q, k, ef=max(ef, k)).ids, queries)
        rows.append(row("hnsw", "ef", ef, ids, secs, gt, cache="memory"))
    return {**built, "reused_build": True}, rows


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import spann

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", type=int, required=True, help="N of bench/spann.py's synthetic set")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--n-queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args(argv)
    name = f"synthetic-{args.synthetic}-{args.dim}"
    root = Path(args.workdir)
    base, _, _ = spann.synthetic(args.synthetic, args.dim, args.n_queries, args.k, root / name)
    folder = root / name / "hnsw"
    folder.mkdir(parents=True, exist_ok=True)
    print(json.dumps(build_saved(base, "l2", folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
