"""Memory of a build, measured the same way for every target: a fresh Python process loads the
base vectors, warms the target up on a small build (JIT compilation, library start-up), then
builds the real index; we report its RSS growth (VmRSS after - before), its peak growth (VmHWM,
reset after the warm-up, minus VmRSS before) and the library's own count of its bytes.

Run as ``python -m vecdb.bench.memory '<json spec>'``; the parent reads one JSON line back.
"""
from __future__ import annotations

import gc
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from vecdb.bench.rss import reset_peak, run_child, status_bytes

#: rows of the warm-up build (enough to train PQ with 256 centroids)
WARMUP_ROWS = 1000


def measure_build(spec: dict[str, Any]) -> dict[str, Any]:
    """Build ``spec['target']`` over the .npy at ``spec['base']`` in this process; memory figures."""
    import tempfile
    import time

    from vecdb.bench.adapters import TARGETS
    from vecdb.bench.runner import set_threads
    from vecdb.kernels._jit import threads as thread_limit
    from vecdb.types import Metric

    work = Path(tempfile.mkdtemp(prefix="vecdb-memprobe-"))

    base = np.load(spec["base"])
    metric = Metric.parse(spec["metric"])
    cls = TARGETS[spec["target"]]
    with thread_limit(spec["threads"]):
        set_threads(spec["threads"])
        warm = cls(metric, base.shape[1], spec["build_params"])
        warm.threads, warm.workdir = spec["threads"], work / "warm"
        warm.build(np.ascontiguousarray(base[: min(len(base), WARMUP_ROWS)]))
        warm.close()
        del warm
        gc.collect()
        peak_reset = reset_peak()
        rss0 = status_bytes("VmRSS")
        target = cls(metric, base.shape[1], spec["build_params"])
        target.threads, target.workdir = spec["threads"], work / "build"
        t0 = time.perf_counter()
        target.build(base)
        build_s = time.perf_counter() - t0
        gc.collect()
        rss1, hwm = status_bytes("VmRSS"), status_bytes("VmHWM")
        library = target.memory_bytes()
        target.close()
    shutil.rmtree(work, ignore_errors=True)
    return {"rss_before_bytes": rss0, "rss_after_bytes": rss1, "rss_growth_bytes": rss1 - rss0,
            "peak_growth_bytes": (hwm - rss0) if peak_reset else None, "library_bytes": library,
            "build_s": build_s, "peak_reset": peak_reset}


def probe(target: str, metric: str, base_path: Path, build_params: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run ``measure_build`` in a fresh interpreter and return its figures."""
    spec = {"target": target, "metric": metric, "base": str(base_path), "build_params": build_params,
            "threads": threads}
    return run_child(["-m", "vecdb.bench.memory", json.dumps(spec)], f"memory probe of {target}")


def main(argv: list[str] | None = None) -> int:
    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    print(json.dumps(measure_build(spec)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
