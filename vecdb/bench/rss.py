"""Whole-process memory of a library holding an index: a fresh interpreter that imports numpy
and then only the library under test (vecdb's HNSW, or hnswlib), so each process carries its
own runtime and nothing else. VmRSS is read at each stage: numpy loaded; numba imported (vecdb
only: the Numba runtime's share of the fixed cost); the library imported; warmed up (a
1,000-row build and a search: JIT code loaded from the cache, thread pools started); holding
the built index with the input vectors freed and a few searches done. ``holding`` is what "a
process holding the index" costs; ``fixed`` (warm - start) is the runtime's part of it.

The harness's ``--memory fresh`` probe (``vecdb.bench.memory``) measures RSS growth of a build;
this one measures the whole process, which that probe cannot: it imports vecdb for every target.
Both read /proc and run their child through the helpers here (this file imports nothing of vecdb).

The child runs this file by path (``python rss.py '<json spec>'``): nothing of vecdb is imported
before the stage that asks for it.
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

LIBRARIES = ("vecdb-hnsw", "hnswlib")
WARMUP_ROWS = 1000
SEARCH_ROWS = 100
STAGES = ("start", "numba", "imported", "warm", "holding")


def status_bytes(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM) in bytes; 0 where /proc is missing."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_child(argv: list[str], what: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a probe's fresh interpreter (``argv`` after the Python executable) and return the JSON
    line it prints last; VecdbError naming ``what`` with the end of its stderr when it fails."""
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        from vecdb.errors import VecdbError

        raise VecdbError(f"{what} failed (exit {out.returncode}): {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _vecdb_builder(spec: dict[str, Any]) -> Any:
    from vecdb.index import HNSW

    def build(rows: Any) -> Any:
        index = HNSW(rows.shape[1], spec["metric"], M=spec["M"], ef_construction=spec["ef_construction"], seed=1,
                     progress=False)
        index.add(rows)
        return index

    def search(index: Any, rows: Any) -> None:
        index.search(rows, 10, ef=spec["ef"])

    return build, search, lambda index: int(index.memory_bytes())


def _hnswlib_builder(spec: dict[str, Any]) -> Any:
    import hnswlib
    import numpy as np

    space = {"l2": "l2", "ip": "ip", "cosine": "cosine"}[spec["metric"]]

    def build(rows: Any) -> Any:
        index = hnswlib.Index(space=space, dim=rows.shape[1])
        index.init_index(max_elements=len(rows), M=spec["M"], ef_construction=spec["ef_construction"], random_seed=1)
        index.add_items(rows, np.arange(len(rows)), num_threads=spec["threads"])
        return index

    def search(index: Any, rows: Any) -> None:
        index.set_ef(max(10, spec["ef"]))
        index.knn_query(rows, k=10, num_threads=1)

    return build, search, lambda index: None


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """The measurement itself, in the fresh process (see the module docs for the stages)."""
    import numpy as np

    rss = {"start": status_bytes("VmRSS")}
    if spec["library"] == "vecdb-hnsw":
        import numba  # noqa: F401  (the runtime's own share, before vecdb)

        rss["numba"] = status_bytes("VmRSS")
        build, search, counted = _vecdb_builder(spec)
    else:
        rss["numba"] = rss["start"]
        build, search, counted = _hnswlib_builder(spec)
    rss["imported"] = status_bytes("VmRSS")
    base = np.load(spec["base"])
    probe = np.ascontiguousarray(base[:SEARCH_ROWS])
    warm = build(np.ascontiguousarray(base[: min(len(base), WARMUP_ROWS)]))
    search(warm, probe)
    del warm, base
    gc.collect()
    rss["warm"] = status_bytes("VmRSS")
    peak_reset = reset_peak()
    base = np.load(spec["base"])
    index = build(base)
    del base
    gc.collect()
    search(index, probe)
    rss["holding"] = status_bytes("VmRSS")
    return {"library": spec["library"], "rss_bytes": rss, "peak_bytes": status_bytes("VmHWM") if peak_reset else None,
            "fixed_bytes": rss["warm"] - rss["start"], "index_bytes": rss["holding"] - rss["warm"],
            "counted_bytes": counted(index), "threads": spec["threads"],
            "loaded": {name: name in sys.modules for name in ("numba", "vecdb", "hnswlib")}}


def probe(library: str, base_path: Path, metric: str, *, M: int = 16, ef_construction: int = 200, ef: int = 64,
          threads: int = 1) -> dict[str, Any]:
    """Run ``child`` for ``library`` over the .npy at ``base_path`` in a fresh interpreter."""
    from vecdb.errors import InvalidArgumentError

    if library not in LIBRARIES:
        raise InvalidArgumentError(f"library must be one of {LIBRARIES}, got {library!r}")
    spec = {"library": library, "base": str(base_path), "metric": metric, "M": M, "ef_construction": ef_construction,
            "ef": ef, "threads": threads}
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    return run_child([str(Path(__file__).resolve()), json.dumps(spec)], f"RSS probe of {library}", env)


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)  # run by path: this folder's modules must not shadow anything
    print(json.dumps(child(json.loads(sys.argv[1]))), flush=True)
