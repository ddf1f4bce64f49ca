"""The benchmark harness: end-to-end runs on the bundled dataset (tables, JSON, provenance,
memory in a fresh process, strategies, ratios within a class), the knob-moves-recall check,
the lock file and the busy-machine arithmetic on fabricated /proc numbers."""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from vecdb.bench import machine
from vecdb.bench.adapters import TARGETS
from vecdb.bench.adapters.base import Target, register
from vecdb.bench.adapters.hnsw import scan_preferred
from vecdb.bench.checks import dead_knobs
from vecdb.cli import main, parse_grid, parse_params
from vecdb.errors import FailedPreconditionError, InvalidArgumentError
from vecdb.index.flat import FlatIndex
from vecdb.index.hnsw import HNSW
from vecdb.types import Metric

QUIET = ["--allow-busy", "--repeats", "2"]  # the test machine is shared: never refuse, flag instead


@pytest.fixture(autouse=True)
def private_lock(tmp_path, monkeypatch):
    """Tests take their own lock file, so a real benchmark running nearby never blocks them."""
    monkeypatch.setenv("VECDB_BENCH_LOCK", str(tmp_path / "bench.lock"))


def _bench(tmp_path, *args: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "r.json"
    code = main(["bench", "--dataset", "digits-64-euclidean", *QUIET, "--out", str(out), *args])
    return code, json.loads(out.read_text()) if out.exists() else {}


def test_flat_against_faiss_saves_json_with_provenance_and_fresh_memory(tmp_path, capsys):
    code, record = _bench(tmp_path, "--targets", "vecdb-flat,faiss-flat", "--threads", "1", "--batch", "1,50",
                          "--filter", "0.1", "--max-queries", "30")
    assert code == 0
    text = capsys.readouterr().out
    assert "Best QPS" in text and "faiss-flat" in text and "commit " in text
    assert {b["target"] for b in record["builds"]} == {"vecdb-flat", "faiss-flat"}
    for run in record["runs"]:
        assert run["recall_at_10"] == pytest.approx(1.0)      # both are exact
        assert run["duplicate_rows"] == 0 and run["qps"] > 0
        assert len(run["qps_passes"]) == 2 and run["stat"] == "best" and run["qps"] == max(run["qps_passes"])
        assert 0.0 <= run["others_share"] <= 1.0 and len(run["load_before"]) == 3
    assert {r["selectivity"] for r in record["runs"]} == {None, 0.1}
    assert {r["strategy"] for r in record["runs"] if r["selectivity"]} == {"scan"}
    # targets of one setting were timed together (interleaved): same setting id, one row each
    by_setting: dict[int, list[str]] = {}
    for r in record["runs"]:
        by_setting.setdefault(r["setting"], []).append(r["target"])
    assert all(sorted(v) == ["faiss-flat", "vecdb-flat"] for v in by_setting.values())
    flat = [s for s in record["summary"] if s["target"] == "faiss-flat"]
    assert all(s["ratio_vs_baseline"] == pytest.approx(1.0) for s in flat)
    # provenance: which code, libraries, machine and command made the file
    prov = record["provenance"]
    assert len(prov["commit"]) == 40 and isinstance(prov["dirty"], bool)
    for lib in ("python", "numpy", "numba", "faiss-cpu", "hnswlib", "vecdb"):
        assert prov["versions"][lib], lib
    assert prov["machine"]["cores"] >= 1 and prov["machine"]["memory_bytes"] > 0 and prov["machine"]["cpu_model"]
    assert len(prov["load_average"]) == 3 and prov["command"].startswith("vecdb bench --dataset digits")
    assert record["start_check"]["others_share"] >= 0 and record["valid"] is True
    # memory measured in a fresh process, beside the library's count
    for b in record["builds"]:
        fresh = b["fresh_process"]
        assert fresh["library_bytes"] == b["memory_bytes"] > 0
        assert fresh["rss_after_bytes"] > 0 and fresh["rss_growth_bytes"] == fresh["rss_after_bytes"] - fresh["rss_before_bytes"]


def test_fresh_process_rss_growth_sees_the_vectors(tmp_path):
    """20k x 64 float32 = 5 MiB: a FlatIndex build must grow a fresh process by about that."""
    from vecdb.bench.memory import probe

    base = np.random.default_rng(3).standard_normal((20_000, 64)).astype(np.float32)
    np.save(tmp_path / "base.npy", base)
    got = probe("vecdb-flat", "l2", tmp_path / "base.npy", {}, 1)
    assert got["rss_growth_bytes"] >= 0.8 * base.nbytes
    assert got["library_bytes"] >= base.nbytes


class _IgnoresEf(Target):
    """A test-only reference that claims an ``ef`` knob but never uses it (an exact scan)."""

    name = "test-ignores-ef"
    search_knobs = ("ef",)

    def build(self, base):
        self.index = FlatIndex(self.dim, self.metric)
        self.index.add(base)

    def search(self, queries, k, params, allow=None):
        return self.index.search(queries, k).ids

    def memory_bytes(self):
        return self.index.memory_bytes()


def test_knob_that_does_not_move_recall_fails_loudly(tmp_path, capsys):
    register(_IgnoresEf)
    try:
        code, record = _bench(tmp_path, "--targets", "test-ignores-ef", "--search", "ef=8,64", "--threads", "1",
                              "--batch", "50", "--max-queries", "20", "--memory", "skip", "--baseline",
                              "test-ignores-ef")
    finally:
        TARGETS.pop(_IgnoresEf.name)
    assert code == 2
    err = capsys.readouterr().err
    assert "did not move recall" in err and "test-ignores-ef: ef" in err and "saturated" in err
    assert record["valid"] is False and record["knob_check"]["dead"][0]["knob"] == "ef"


def test_knob_that_moves_recall_passes(tmp_path):
    code, record = _bench(tmp_path, "--targets", "vecdb-hnsw", "--build", "M=4,ef_construction=8", "--search",
                          "ef=1,128", "--threads", "1", "--batch", "100", "--max-queries", "100", "--memory", "skip")
    assert code == 0 and record["knob_check"] == {"checked": True, "ok": True, "dead": []}
    recalls = {r["params"]["ef"]: r["recall_at_10"] for r in record["runs"]}
    assert recalls[1] < recalls[128]


def test_dead_knob_check_on_fabricated_rows():
    def row(target, params, recall, batch=1):
        return {"target": target, "selectivity": None, "threads": 1, "batch": batch, "params": params,
                "recall_at_10": recall}

    runs = [row("a", {"ef": 8}, 0.9), row("a", {"ef": 64}, 0.9),                     # dead
            row("b", {"ef": 8}, 0.8), row("b", {"ef": 64}, 0.95),                    # live
            row("c", {"nprobe": 1, "ef": 8}, 0.7), row("c", {"nprobe": 8, "ef": 8}, 0.7),
            row("c", {"nprobe": 1, "ef": 64}, 0.6), row("c", {"nprobe": 8, "ef": 64}, 0.6),  # nprobe dead, ef live
            row("d", {"x": 1, "ef": 8}, 0.5), row("d", {"x": 2, "ef": 64}, 0.6)]     # moved together: live
    dead = dead_knobs(runs, 10, {"a": ("ef",), "b": ("ef",), "c": ("nprobe", "ef"), "d": ("x", "ef")})
    assert [(d["target"], d["knob"]) for d in dead] == [("a", "ef"), ("c", "nprobe")]


def test_filter_strategies_are_labelled_and_shared_fairly(tmp_path):
    code, record = _bench(tmp_path, "--targets", "vecdb-hnsw,hnswlib,faiss-hnsw", "--build", "M=8,ef_construction=40",
                          "--search", "ef=10;ef=64", "--threads", "1", "--batch", "25", "--filter", "0.02,0.5",
                          "--max-queries", "25", "--memory", "skip", "--baseline", "hnswlib")
    assert code == 0
    filtered = [r for r in record["runs"] if r["selectivity"] is not None]
    assert {(r["target"], r["strategy"]) for r in filtered} == {
        (t, s) for t in ("vecdb-hnsw", "hnswlib", "faiss-hnsw") for s in ("graph", "scan", "auto")}
    n = record["meta"]["n_base"]
    for r in filtered:
        assert r["filter_path"] and r["strategy_used"] in ("graph", "scan")
        if r["strategy"] != "auto":
            assert r["strategy_used"] == r["strategy"]
        if r["strategy_used"] == "scan":
            assert r["recall_at_10"] == pytest.approx(1.0) and r["algorithm"] == "exact"
        if r["strategy"] == "auto" and r["target"] != "vecdb-hnsw":
            ef = max(10, r["params"]["ef"])
            assert (r["strategy_used"] == "scan") == scan_preferred(round(r["selectivity"] * n), n, ef, 8)
    # the scan ignores ef: timed once per filter and target
    assert sum(1 for r in filtered if r["strategy"] == "scan") == 2 * 3
    assert "Python callable" in record["filter_paths"]["hnswlib"]["graph"]
    assert {p["scan"] for t, p in record["filter_paths"].items() if t != "vecdb-hnsw"} == {
        record["filter_paths"]["hnswlib"]["scan"]}
    # 2 % of digits at ef=64 is below vecdb's rule: every target's auto row scans there
    auto_small = {r["target"]: r["strategy_used"] for r in filtered
                  if r["strategy"] == "auto" and r["selectivity"] == 0.02 and r["params"]["ef"] == 64}
    assert auto_small == {"vecdb-hnsw": "scan", "hnswlib": "scan", "faiss-hnsw": "scan"}
    # ratios only within a class and strategy
    for s in record["summary"]:
        if s["ratio_vs_baseline"] is not None:
            base = next(b for b in record["summary"] if b["target"] == s["baseline"] and b["batch"] == s["batch"]
                        and b["selectivity"] == s["selectivity"] and b["strategy"] == s["strategy"])
            assert base["algorithm"] == s["algorithm"]


def test_auto_rule_matches_vecdb_prefers_exact(rng):
    index = HNSW(16, "l2", M=8, ef_construction=20, seed=1, progress=False)
    index.add(rng.standard_normal((3000, 16)).astype(np.float32))
    for n_allowed in (1, 10, 30, 100, 300, 1000, 2999):
        for ef in (10, 64, 256):
            assert scan_preferred(n_allowed, 3000, ef, 8) == index.prefers_exact(n_allowed, ef), (n_allowed, ef)


def test_database_targets_report_disk_and_insert(tmp_path):
    code, record = _bench(tmp_path, "--targets", "db-vecdb-flat,db-vecdb-hnsw", "--search", "ef=2;ef=64",
                          "--build", "M=4,ef_construction=8", "--threads", "1", "--batch", "1",
                          "--max-queries", "30", "--memory", "skip", "--baseline", "db-vecdb-flat,db-vecdb-hnsw")
    assert code == 0
    builds = {b["target"]: b for b in record["builds"]}
    assert builds["db-vecdb-flat"]["algorithm"] == "exact" and builds["db-vecdb-hnsw"]["algorithm"] == "ann"
    for b in builds.values():
        assert b["disk_bytes"] > 0 and b["insert_vectors_per_s"] > 0
    flat_rows = [r for r in record["runs"] if r["target"] == "db-vecdb-flat"]
    assert len(flat_rows) == 1  # an exact target ignores ef: timed once
    for s in record["summary"]:
        assert s["baseline"] == ("db-vecdb-flat" if s["algorithm"] == "exact" else "db-vecdb-hnsw")


def test_peer_without_its_package_says_how_to_get_it(tmp_path):
    try:
        import chromadb  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("chromadb is installed here (peers venv)")
    target = TARGETS["chroma"](Metric.L2, 4, {})
    target.workdir = tmp_path / "c"
    with pytest.raises(FailedPreconditionError, match="peers-venv.sh"):
        target.build(np.zeros((3, 4), np.float32))


# ---- the machine: lock and busy arithmetic ----------------------------------------------------
def test_second_benchmark_is_refused_while_the_lock_is_held(tmp_path, capsys):
    with machine.bench_lock():
        with pytest.raises(machine.BenchLockedError, match="one at a time"):
            with machine.bench_lock():
                pass
        assert main(["bench", "--dataset", "digits-64-euclidean", "--targets", "vecdb-flat", "--allow-busy",
                     "--out", str(tmp_path / "x.json")]) == 2
        assert "another vecdb benchmark is running" in capsys.readouterr().err
    with machine.bench_lock():  # released on exit
        pass


def test_proc_parsing_and_others_share_on_fabricated_numbers():
    stat = "cpu  100 5 50 800 20 0 5 10 0 0\ncpu0 50 2 25 400 10 0 2 5 0 0\n"
    assert machine.parse_proc_stat(stat) == (100 + 5 + 50 + 5 + 10, 100 + 5 + 50 + 5 + 10 + 800 + 20)
    line = "42 (a (weird) name) S 7 42 42 0 -1 4194304 100 0 0 0 300 40 25 5 20 0 4 0 1 1 1"
    assert machine.parse_pid_stat(line) == (7, 340, 30)
    stats = {10: "10 (me) S 1 " + "0 " * 9 + "100 20 5 5 rest",
             11: "11 (child) R 10 " + "0 " * 9 + "50 10 0 0 rest",
             12: "12 (grandchild) R 11 " + "0 " * 9 + "7 3 0 0 rest",
             13: "13 (stranger) R 1 " + "0 " * 9 + "999 999 0 0 rest"}
    assert machine.tree_ticks(10, stats) == (100 + 20 + 5 + 5) + (50 + 10) + (7 + 3)
    # 2 CPUs over 1 s = 200 ticks; busy grew 150, we used 100 -> others 50 / 200 = 25 %
    before, after = machine.CpuSample(1000, 5000, 300), machine.CpuSample(1150, 5200, 400)
    assert machine.others_share(before, after) == pytest.approx(0.25)
    assert not machine.is_busy(0.25) and machine.is_busy(0.26)
    assert machine.others_share(after, after) == 0.0
    assert machine.others_share(before, machine.CpuSample(1190, 5200, 300)) == pytest.approx(0.95)


def test_busy_machine_is_refused_unless_allowed():
    with pytest.raises(machine.MachineBusyError, match="--allow-busy"):
        machine.check_quiet(False, window_s=0.05, limit=-1.0)  # any share exceeds a negative limit
    flagged = machine.check_quiet(True, window_s=0.05, limit=-1.0)
    assert flagged["busy"] is True and len(flagged["load_after"]) == 3


def test_cpu_sample_counts_our_own_work():
    s0 = machine.cpu_sample()
    x = 0
    for i in range(3_000_000):  # bounded busy loop: a few hundred ms of our own CPU
        x += i
    s1 = machine.cpu_sample()
    assert s1.own > s0.own and s1.total >= s0.total and x > 0


def test_bench_rejects_unknown_target_and_strategy(tmp_path, capsys):
    assert main(["bench", "--dataset", "digits-64-euclidean", "--targets", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown target" in capsys.readouterr().err
    assert main(["bench", "--dataset", "digits-64-euclidean", "--targets", "vecdb-hnsw", "--filter-strategies",
                 "magic", "--out", str(tmp_path / "x")]) == 2
    assert "filter strategies" in capsys.readouterr().err


def test_param_parsing():
    assert parse_params("M=16,ef_construction=200,x=a") == {"M": 16, "ef_construction": 200, "x": "a"}
    assert parse_grid("ef=16,32") == [{"ef": 16}, {"ef": 32}]
    assert parse_grid("ef=16,r=2;ef=32,r=0.5") == [{"ef": 16, "r": 2}, {"ef": 32, "r": 0.5}]
    assert parse_grid("") == [{}]
    with pytest.raises(InvalidArgumentError):
        parse_params("M16")


def test_version_command(capsys):
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("vecdb ")
