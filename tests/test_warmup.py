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
import time
from pathlib import Path
from typing import Any, Iterator

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


SPANN_PROBE = r'''
import importlib, json, pkgutil, tempfile
import numpy as np
from numba.core.registry import CPUDispatcher
import vecdb, vecdb.kernels, vecdb.index.spann

def signatures():
    out = {}
    for package in (vecdb.kernels, vecdb.index.spann):
        for info in pkgutil.iter_modules(package.__path__):
            mod = importlib.import_module(f"{package.__name__}.{info.name}")
            for name, obj in vars(mod).items():
                if isinstance(obj, CPUDispatcher) and obj.__module__ == mod.__name__:
                    out[f"{mod.__name__}.{name}"] = sorted(map(str, obj.signatures))
    return out

from vecdb.index.warmup import warm_up
warm_up()
before = signatures()
warm_up(kinds=("spann",))
warm = signatures()
with tempfile.TemporaryDirectory() as tmp, vecdb.open(tmp + "/db") as db:
    rng = np.random.default_rng(1)
    for metric in ("l2", "ip", "cosine"):
        for name, dim, params in (("float", 48, {}), ("sq8", 48, {"codes": "sq8"}), ("long", 136, {}),
                                  ("long_sq8", 136, {"codes": "sq8"}), ("groups", 48, {"codes": "sq8", "exact_heads": 0})):
            coll = db.create_collection(f"{name}_{metric}", dim=dim, metric=metric, index="spann",
                                        index_params={"min_train": 200, "posting_limit": 32, "head_size": 16, **params})
            coll.create_tenant("t")
            x = rng.standard_normal((600, dim)).astype(np.float32)
            coll.upsert(np.arange(600), x, [{"i": i} for i in range(600)])
            coll.grant("t", [1, 2, 3])
            assert coll.wait_indexed(300)
            for q in (x[0], x[:3], x[:20]):
                coll.search(q, k=5)
                coll.search(q, k=5, filter={"i": {"lt": 300}})
                coll.search(q, k=5, tenant="t")
            coll.delete(np.arange(5, 60))
            coll.upsert(np.arange(600, 700), rng.standard_normal((100, dim)).astype(np.float32))
            assert coll.wait_indexed(300)
            coll.search(x[:20], k=5)
            coll.search(x[0], k=5)
after = signatures()
print(json.dumps({"before": before, "warm": warm, "after": after}))
'''

#: SPANN's request-path kernels: the one-query search, the batch's plan and scan
SPANN_KERNELS = {"vecdb.index.spann.mapped.search_one", "vecdb.index.spann.kernels.route_exact"}


def test_a_spann_collection_compiles_nothing_after_its_kind_is_warmed() -> None:
    """A server warms SPANN once a SPANN collection is opened or made: after that, a
    collection of every metric and form (float32 and SQ8 postings; the exact route over short
    and over long head rows, the grouped route; one query, a batch, filters, tenants, deletes, inserts and splits) finds every
    kernel signature it needs (a first search of a fresh machine compiled for ~20 s)."""
    out = subprocess.run([sys.executable, "-c", SPANN_PROBE], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    probe = json.loads(out.stdout.splitlines()[-1])
    before, warm, after = probe["before"], probe["warm"], probe["after"]
    assert SPANN_KERNELS <= set(before), "a kernel was renamed; update SPANN_KERNELS"
    assert all(warm[name] for name in SPANN_KERNELS)
    new = {name: sorted(set(after[name]) - set(warm.get(name, []))) for name in after}
    assert not {name: sigs for name, sigs in new.items() if sigs}, (new, warm)


def _wait_logged(caplog: pytest.LogCaptureFixture, text: str, seconds: float) -> None:
    """Wait (at most ``seconds``) until a captured log message contains ``text``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not any(text in r.getMessage() for r in caplog.records):
        time.sleep(0.05)


def test_the_warmer_warms_each_kind_once_and_skips_kinds_without_a_workload(
        caplog: pytest.LogCaptureFixture) -> None:
    from vecdb.index.warmup import Warmer

    warmer = Warmer()
    with caplog.at_level(logging.INFO, logger="vecdb.index.warmup"):
        warmer.want(["flat", "pq", "flat"])
        warmer.want(["flat"])
        _wait_logged(caplog, "kernels ready", 120)
        time.sleep(0.6)                            # a second flat warm-up would have begun by now
        warmer.stop(60)
    ready = [r for r in caplog.records if "kernels ready" in r.getMessage()]
    assert [r.kinds for r in ready] == [["flat"]]  # type: ignore[attr-defined]
    warmer.want(["hnsw"])                          # a stopped warmer starts nothing
    assert not any(t.name == "vecdb-warm-up" and t.is_alive() for t in threading.enumerate())


def test_warm_up_names_a_kind_it_has_no_workload_for() -> None:
    with pytest.raises(ValueError, match="no warm-up workload"):
        warm_up(kinds=("pq",))


def test_a_server_warms_spann_once_a_spann_collection_is_made_or_found(tmp_path: Path) -> None:
    """The server warms its default kinds at start, SPANN when a client makes a SPANN
    collection, and SPANN with the defaults when it starts over data that holds one."""
    from vecdb.client import connect
    from vecdb.server.process import start_server_process

    def warmed(server: Any, deadline: float) -> list[list[str]]:
        """The kinds of each warm-up the server began, once one named SPANN has begun."""
        while time.monotonic() < deadline:
            started = [e["kinds"] for e in server.log_events() if e.get("event") == "warm_up_start"]
            if any("spann" in kinds for kinds in started):
                return started
            time.sleep(0.1)
        return [e["kinds"] for e in server.log_events() if e.get("event") == "warm_up_start"]

    data = tmp_path / "db"
    server = start_server_process(data, tmp_path / "first.log")
    try:
        with connect(server.address) as db:
            db.create_collection("s", 8, metric="l2", index="spann")
            db.create_collection("t", 8, metric="l2", index="spann")
        started = warmed(server, time.monotonic() + 60)
    finally:
        server.stop()
    assert started[0] == ["flat", "hnsw"] and started[1:] == [["spann"]]
    server = start_server_process(data, tmp_path / "second.log")
    try:
        started = warmed(server, time.monotonic() + 60)
    finally:
        server.stop()
    assert started == [["flat", "hnsw", "spann"]]


def test_a_failed_warm_up_is_logged_and_the_warmer_goes_on(caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A workload that raises (a full temporary directory, say) leaves its kernels to compile
    on first use: the thread logs it and still warms the kinds asked for after."""
    from vecdb.index import warmup

    def failing() -> Iterator[None]:
        raise OSError("no space left on device")
        yield

    monkeypatch.setitem(warmup.WORKLOADS, "spann", failing)
    warmer = warmup.Warmer()
    with caplog.at_level(logging.INFO, logger="vecdb.index.warmup"):
        warmer.want(["spann"])
        _wait_logged(caplog, "failed", 60)
        warmer.want(["flat"])
        _wait_logged(caplog, "kernels ready", 60)
        warmer.stop(60)
    failed = [r for r in caplog.records if r.getMessage() == "warm-up of spann failed"]
    assert len(failed) == 1 and failed[0].levelname == "WARNING"
    assert [r.kinds for r in caplog.records if "kernels ready" in r.getMessage()] == [["flat"]]  # type: ignore[attr-defined]
