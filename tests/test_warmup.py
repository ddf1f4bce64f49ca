"""The server's start-up warm-up runs every index path it promises to compile.

Numba dispatchers are process-wide, and earlier tests in this process have compiled most
kernels already, so the check runs in a fresh interpreter: it lists each kernel's compiled
signatures before ``warm_up``, after it, and after a collection-layer workload (flat and
HNSW, every metric, one query, a batch, payload filters, tenants, deletes). The workload must
find every signature it needs already there: nothing is compiled on the request path.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading

import pytest

from vecdb.index.warmup import warm_up

PROBE = r'''
import importlib, json, pkgutil, tempfile
import numpy as np
from numba.core.registry import CPUDispatcher
import vecdb, vecdb.kernels

def signatures():
    out = {}
    for info in pkgutil.iter_modules(vecdb.kernels.__path__):
        mod = importlib.import_module(f"vecdb.kernels.{info.name}")
        for name, obj in vars(mod).items():
            if isinstance(obj, CPUDispatcher) and obj.__module__ == mod.__name__:
                out[f"{info.name}.{name}"] = sorted(map(str, obj.signatures))
    return out

before = signatures()
from vecdb.index.warmup import warm_up
warm_up()
warm = signatures()
with tempfile.TemporaryDirectory() as tmp, vecdb.open(tmp + "/db") as db:
    rng = np.random.default_rng(1)
    for metric in ("l2", "ip", "cosine"):
        for index in ("flat", "hnsw"):
            coll = db.create_collection(f"{index}_{metric}", dim=8, metric=metric, index=index)
            coll.create_tenant("t")
            x = rng.standard_normal((100, 8)).astype(np.float32)
            coll.upsert(np.arange(100), x, [{"i": i} for i in range(100)])
            coll.grant("t", [1, 2, 3])
            for q in (x[0], x[:3], x[:20], x[:20].astype(np.float64)):
                coll.search(q, k=5)
                coll.search(q, k=5, filter={"i": {"lt": 50}})
                coll.search(q, k=5, tenant="t")
            coll.delete([5, 6])
            coll.search(x[:20], k=5)
after = signatures()
print(json.dumps({"before": before, "warm": warm, "after": after}))
'''

#: kernels that compile lazily (no eager signature) and serve searches, inserts and deletes (a
#: one-query search, filtered or not, is one ``search_serial_ids`` call)
REQUEST_KERNELS = {"graph.search_serial_ids", "graph.search_batch", "graph_build.insert_nodes", "graph_build.unlink",
                   "topk.scan_topk", "topk.scan_topk_subset"}


@pytest.fixture(scope="module")
def probe() -> dict[str, dict[str, list[str]]]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_warm_up_compiles_the_request_path_kernels(probe: dict[str, dict[str, list[str]]]) -> None:
    before, warm = probe["before"], probe["warm"]
    assert REQUEST_KERNELS <= set(before), "a kernel was renamed; update REQUEST_KERNELS"
    assert all(before[name] == [] for name in REQUEST_KERNELS)  # a fresh process has none of them
    assert all(warm[name] for name in REQUEST_KERNELS), {name: warm[name] for name in REQUEST_KERNELS}


def test_no_kernel_compiles_on_the_request_path_after_warm_up(probe: dict[str, dict[str, list[str]]]) -> None:
    warm, after = probe["warm"], probe["after"]
    new = {name: sorted(set(after[name]) - set(warm.get(name, []))) for name in after}
    assert not {name: sigs for name, sigs in new.items() if sigs}


def test_warm_up_logs_its_time(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="vecdb.index.warmup"):
        seconds = warm_up()
    records = [r for r in caplog.records if "kernels ready" in r.getMessage()]
    assert len(records) == 1 and records[0].seconds == round(seconds, 2)  # type: ignore[attr-defined]


def test_warm_up_stops_after_the_call_in_progress(caplog: pytest.LogCaptureFixture) -> None:
    """A stopping server sets the event and joins the warm-up thread: it must return early
    (a native kernel still running at interpreter exit aborts the process)."""
    stop = threading.Event()
    stop.set()
    with caplog.at_level(logging.INFO, logger="vecdb.index.warmup"):
        warm_up(stop)
    messages = [r.getMessage() for r in caplog.records]
    assert "warm-up stopped early" in messages and not any("kernels ready" in m for m in messages)
