"""Compile (or load from Numba's cache) the kernels a server needs, so the first user
request does not pay JIT time: on a fresh machine that is tens of seconds."""
from __future__ import annotations

import logging
import time

import numpy as np

log = logging.getLogger(__name__)


def warm_up() -> float:
    """Build tiny Flat and HNSW indexes for each metric and search them every way the
    collection layer does (one query, a batch, with an allow-set); returns seconds taken."""
    from vecdb.index.flat import FlatIndex
    from vecdb.index.hnsw import HNSW

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    data = rng.standard_normal((64, 8)).astype(np.float32)
    for metric in ("l2", "ip", "cosine"):
        for index in (FlatIndex(8, metric), HNSW(8, metric, M=4, ef_construction=8, seed=0)):
            index.add(data)
            for queries in (data[:1], data[:20]):
                index.search(queries, 3)
                index.search(queries, 3, allow=np.arange(0, 64, 2))
            index.remove([0])
            index.add(data[:8], 10**12 + np.arange(8))   # sparse ids: the id map's hash kernels
            index.search(queries, 3, allow=10**12 + np.arange(4))
            index.remove(10**12 + np.arange(0, 8, 2))
    seconds = time.perf_counter() - started
    log.info("kernels ready in %.1f s", seconds, extra={"event": "warm_up", "seconds": round(seconds, 2)})
    return seconds
