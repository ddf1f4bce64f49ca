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


# ---- timing primitives shared by every script ----------------------------------------------------
def test_time_passes_warms_up_once_and_times_every_call():
    from vecdb.bench.measure import time_passes

    calls = []

    def search(block):
        calls.append(len(block))
        return np.tile(np.arange(3, dtype=np.int64), (len(block), 1)) + block[:, :1].astype(np.int64)

    queries = np.arange(10, dtype=np.float32).reshape(10, 1)
    passes = time_passes(search, queries, k=5, repeats=2, batch=4)
    assert calls == [4] + [4, 4, 2] * 2            # one warm-up call, then 2 passes of 3 calls
    assert len(passes.timings) == 2
    t = passes.pick("best")
    assert t.batch == 4 and len(t.latencies_s) == 3 and t.total_s >= t.latencies_s.sum()
    assert t.ids.shape == (10, 5) and (t.ids[:, 3:] == -1).all()  # short rows padded with -1
    assert t.ids[7].tolist() == [7, 8, 9, -1, -1]


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_gathered_scan_is_exact_over_the_allowed_rows(metric):
    from vecdb.bench.adapters.base import GatheredScan
    from vecdb.eval import ground_truth

    rng = np.random.default_rng(11)
    base = rng.standard_normal((600, 12)).astype(np.float32)
    queries = rng.standard_normal((7, 12)).astype(np.float32)
    allow = np.sort(rng.choice(600, 150, replace=False)).astype(np.int64)
    scan = GatheredScan(base, Metric.parse(metric))
    got = scan.search(queries, 10, allow)
    truth = ground_truth(base, queries, 10, metric, allow=allow)[0]
    assert np.array_equal(got, truth)
    assert np.isin(got, allow).all()
    few = allow[:4]  # fewer allowed rows than k: all of them, then -1
    short = scan.search(queries[:2], 10, few)
    assert sorted(short[0, :4].tolist()) == few.tolist() and (short[:, 4:] == -1).all()


# ---- bench/database.py: a thin script over vecdb.bench --------------------------------------------
OWN_FIELDS = {"workload", "n", "dim", "metric", "index", "index_params", "batch", "queries", "filter_queries",
              "repeats", "stat", "upsert_seconds", "upsert_vectors_per_s", "indexed_seconds", "close_checkpoint_seconds",
              "disk_bytes",
              "reopen_seconds", "load_quiet", "stats", "runs", "knob_check", "busy", "provenance", "start_check",
              "valid"}
OWN_ROW_FIELDS = {"target", "filter", "selectivity", "params", "threads", "batch", "qps", "qps_passes",
                  "recall_at_10", "queries", "others_share", "busy", "load_before", "load_after"}


def _script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / name
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, path.read_text()


def test_database_own_keeps_its_json_fields_and_uses_the_harness(tmp_path):
    database, source = _script("database.py")
    # the script only parses its command line: timing, recall, ground truth and the
    # reference library live in vecdb.bench (one harness)
    for own_code in ("perf_counter", "recall_at_k", "ground_truth", "import hnswlib", "def timed_queries"):
        assert own_code not in source, own_code
    out = tmp_path / "own.json"
    code = database.main(["own", "--n", "2500", "--dim", "16", "--ef", "1,64", "--M", "4", "--ef-construction", "8",
                          "--queries", "40", "--filter-queries", "30", "--batch", "1000", "--repeats", "2",
                          "--allow-busy", "--workdir", str(tmp_path / "work"), "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result) == OWN_FIELDS                                  # comparable with saved results
    assert result["knob_check"] == {"ok": True, "dead": []} and result["valid"] is True
    assert result["disk_bytes"] > 0 and result["stats"]["count"] == 2500
    runs = result["runs"]
    for r in runs:
        assert OWN_ROW_FIELDS <= set(r) and len(r["qps_passes"]) == 2 and r["qps"] == max(r["qps_passes"])
    assert {r["target"] for r in runs} == {"vecdb", "hnswlib"}
    assert all("build_seconds" in r for r in runs if r["target"] == "hnswlib")
    # hnswlib under each strategy: the exact scan of the allowed rows finds the exact answer
    scans = [r for r in runs if r["target"] == "hnswlib" and r["params"].get("filter_mode") == "scan"]
    assert {r["filter"] for r in scans} == {"1%", "10%", "50%"} and all(r["recall_at_10"] == 1.0 for r in scans)
    graph = {(r["filter"], r["params"]["ef"]): r["recall_at_10"] for r in runs
             if r["target"] == "hnswlib" and r["params"].get("filter_mode") == "graph"}
    assert set(graph) == {(f, ef) for f in ("1%", "10%", "50%") for ef in (1, 64)}
    vecdb_modes = {(r["filter"], r["params"].get("filter_mode")) for r in runs if r["target"] == "vecdb"}
    assert vecdb_modes == {("none", None)} | {(f, m) for f in ("1%", "10%", "50%") for m in ("auto", "graph")}
    assert not (tmp_path / "work" / "own-db").exists()  # removed unless --keep


def test_peer_command_line_comes_from_the_harness():
    from vecdb.bench.embedded import ANN_PEERS, EXACT_PEERS, peers_argv
    from vecdb.cli import build_parser

    argv = peers_argv("arxiv-minilm-384", "/tmp/x.json", max_queries=300, allow_busy=True)
    args = build_parser().parse_args(argv)
    assert args.targets == f"{EXACT_PEERS},{ANN_PEERS}" and args.baseline == "db-vecdb-flat,db-vecdb-hnsw"
    assert args.batch == "1" and args.threads == "1" and args.max_queries == 300 and args.allow_busy
    assert all(t in TARGETS for t in args.targets.split(","))


# ---- vecdb-collection: Collection.search in the harness -------------------------------------------
def test_collection_target_searches_a_real_database_and_ef_reaches_the_index(tmp_path):
    code, record = _bench(tmp_path, "--targets", "vecdb-collection,hnswlib", "--build", "M=8,ef_construction=32",
                          "--search", "ef=1;ef=128", "--threads", "1", "--batch", "1,20", "--max-queries", "40",
                          "--memory", "skip", "--baseline", "hnswlib")
    assert code == 0 and record["knob_check"]["ok"]  # ef moved the collection's recall: it reaches the index
    build = next(b for b in record["builds"] if b["target"] == "vecdb-collection")
    assert build["disk_bytes"] > 0 and build["memory_source"] == "library" and build["memory_bytes"] > 0
    rows = {(r["params"]["ef"], r["batch"]): r for r in record["runs"] if r["target"] == "vecdb-collection"}
    assert rows[(128, 1)]["recall_at_10"] >= 0.9 and rows[(1, 1)]["recall_at_10"] < rows[(128, 1)]["recall_at_10"]
    for ef in (1, 128):  # one call per query or 20 per call: the same answers
        assert rows[(ef, 1)]["recall_at_10"] == rows[(ef, 20)]["recall_at_10"]
    assert all(r["duplicate_rows"] == 0 for r in rows.values())
    summary = [s for s in record["summary"] if s["target"] == "vecdb-collection" and s["ratio_vs_baseline"]]
    assert summary and all(s["baseline"] == "hnswlib" for s in summary)


# ---- bench/contract.py: issue 11's "Done when" figures ---------------------------------------------
def _summary_row(target, qps, label, recall=0.97, threads=1, batch=1, selectivity=None, strategy=None):
    return {"target": target, "threads": threads, "batch": batch, "selectivity": selectivity, "strategy": strategy,
            "qps": qps, "label": label, "recall_at_10": recall if qps else None}


def test_contract_figures_from_a_fabricated_record():
    from vecdb.bench.contract import harness_figures

    def run_row(target, ef, qps, recall):
        return {"target": target, "selectivity": None, "params": {"ef": ef}, "qps": qps, "recall_at_10": recall}

    record = {"meta": {"config": {"dataset": "arxiv", "k": 10, "at_recall": 0.95}, "n_queries": 1000},
              "summary": [_summary_row("vecdb-hnsw", 3000.0, "vecdb-hnsw ef=32"),
                          _summary_row("hnswlib", 4000.0, "hnswlib ef=32")],
              "runs": [run_row("vecdb-hnsw", 10, 6000.0, 0.80), run_row("hnswlib", 10, 6000.0, 0.81),
                       run_row("vecdb-hnsw", 32, 3000.0, 0.97), run_row("hnswlib", 32, 4000.0, 0.96)]}
    at_recall, ef10 = harness_figures("a", record)
    assert at_recall.value == pytest.approx(0.75) and at_recall.met is False and at_recall.goal == "≥ 1"
    assert at_recall.detail["vecdb_setting"] == "vecdb-hnsw ef=32" and at_recall.detail["reference_qps"] == 4000.0
    assert ef10.value == pytest.approx(1.0) and ef10.met is True and ef10.goal == "≥ 0.9"
    assert ef10.detail["vecdb_recall_at_10"] == 0.80
    # a target that never reached the recall bound: no ratio, and the note says why
    record["summary"][0] = _summary_row("vecdb-hnsw", None, None)
    missing = harness_figures("a", record)[0]
    assert missing.value is None and missing.met is None and "vecdb-hnsw" in missing.detail["missing"]
    # filtered: like with like per strategy (goal on the graph one), and vecdb's best against hnswlib's callable
    record = {"meta": {"config": {"dataset": "glove", "k": 10, "at_recall": 0.95, "selectivities": [0.5],
                                  "filter_strategies": ["graph", "scan"]}, "n_queries": 1000},
              "summary": [_summary_row("vecdb-hnsw", 900.0, "g", selectivity=0.5, strategy="graph"),
                          _summary_row("hnswlib", 1000.0, "g", selectivity=0.5, strategy="graph"),
                          _summary_row("vecdb-hnsw", 1500.0, "s", selectivity=0.5, strategy="scan"),
                          _summary_row("hnswlib", 500.0, "s", selectivity=0.5, strategy="scan")], "runs": []}
    graph, scan, best = harness_figures("e", record)
    assert graph.value == pytest.approx(0.9) and graph.met is False
    assert scan.value == pytest.approx(3.0) and scan.goal is None
    assert best.value == pytest.approx(1.5) and best.detail["vecdb_strategy"] == "scan"


def test_contract_rss_and_grpc_figures():
    from vecdb.bench.contract import grpc_figures, rss_figures

    mib = 2**20

    def probe(start, numba, imported, warm, holding, counted):
        return {"rss_bytes": {"start": start * mib, "numba": numba * mib, "imported": imported * mib,
                              "warm": warm * mib, "holding": holding * mib},
                "fixed_bytes": (warm - start) * mib, "index_bytes": (holding - warm) * mib, "counted_bytes": counted}

    figs = rss_figures("f", "arxiv", {"vecdb-hnsw": probe(30, 90, 160, 170, 260, 85 * mib),
                                      "hnswlib": probe(30, 30, 31, 32, 120, None)})
    ratio, fixed_vecdb, fixed_ref, held = figs
    assert ratio.value == pytest.approx(260 / 120) and ratio.met is False and ratio.goal == "≤ 1.3"
    assert fixed_vecdb.value == pytest.approx(140) and fixed_vecdb.detail["numba_import_mib"] == pytest.approx(60)
    assert fixed_ref.value == pytest.approx(2) and held.value == pytest.approx(90 / 88)
    result = {"n": 2000, "dim": 32, "phases": [
        {"threads": 1, "qps": 2500.0, "p50_ms": 0.3, "p99_ms": 0.9, "errors": 0},
        {"threads": 16, "qps": 3900.0, "p50_ms": 3.0, "p99_ms": 9.0, "errors": 0}]}
    one, many, p99 = grpc_figures("g", result)
    assert (one.met, many.met, p99.met) == (True, False, True) and one.dataset == "2000x32"


def test_rss_probe_measures_each_library_in_its_own_process(tmp_path):
    from vecdb.bench.rss import probe

    base = np.random.default_rng(5).standard_normal((3000, 16)).astype(np.float32)
    np.save(tmp_path / "base.npy", base)
    mine = probe("vecdb-hnsw", tmp_path / "base.npy", "l2", M=8, ef_construction=32, threads=1)
    theirs = probe("hnswlib", tmp_path / "base.npy", "l2", M=8, ef_construction=32, threads=1)
    assert theirs["loaded"] == {"numba": False, "vecdb": False, "hnswlib": True}  # nothing of ours in its process
    assert mine["loaded"] == {"numba": True, "vecdb": True, "hnswlib": False}
    r = mine["rss_bytes"]
    assert r["numba"] > r["start"] > 0 and r["imported"] > r["numba"]  # Numba's runtime and vecdb's imports cost
    assert mine["fixed_bytes"] == r["warm"] - r["start"] and mine["index_bytes"] == r["holding"] - r["warm"]
    assert mine["counted_bytes"] >= base.nbytes and theirs["counted_bytes"] is None
    assert theirs["rss_bytes"]["numba"] == theirs["rss_bytes"]["start"]
    with pytest.raises(InvalidArgumentError, match="library"):
        probe("faiss", tmp_path / "base.npy", "l2")


def test_contract_harness_part_saves_its_record_with_figures(tmp_path):
    import dataclasses

    from vecdb.bench.contract import SMOKE, figures_table, run_part

    sizes = dataclasses.replace(SMOKE, flat_sets=("digits-64-euclidean",), queries=20)
    shown = []
    figures = run_part("c", sizes, tmp_path, allow_busy=True, argv=["bench/contract.py", "--smoke"],
                       show=shown.append)
    assert len(figures) == 1 and figures[0].part == "c" and figures[0].value > 0 and figures[0].goal == "≥ 0.9"
    record = json.loads((tmp_path / "c-digits-64-euclidean.json").read_text())
    assert record["contract"]["figures"][0]["value"] == figures[0].value
    assert {b["target"] for b in record["builds"]} == {"vecdb-flat", "faiss-flat"}
    assert {(r["threads"], r["batch"]) for r in record["runs"]} == {(1, 1)}
    assert record["provenance"]["command"].startswith("bench/contract.py")
    assert any("Best QPS" in text for text in shown)
    assert "FlatIndex ÷ faiss IndexFlat" in figures_table(figures)


def test_contract_script_rejects_unknown_parts_and_smoke_without_out(capsys):
    contract, source = _script("contract.py")
    assert contract.main(["--parts", "a,z"]) == 2 and "unknown part" in capsys.readouterr().err
    assert contract.main(["--smoke"]) == 2 and "needs --out" in capsys.readouterr().err
    for part in "abcdefg":  # the expected duration of every part is written at the top
        assert f"\n  {part}  " in source.split('"""')[1]


@pytest.mark.slow
def test_contract_smoke_run_covers_every_part(tmp_path):
    """The whole script on tiny sizes, gRPC server and fresh processes included (about a minute)."""
    contract, _ = _script("contract.py")
    assert contract.main(["--smoke", "--allow-busy", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["smoke"] is True and {f["part"] for f in summary["figures"]} == set("abcdefg")
    assert (tmp_path / "f-rss.json").exists() and (tmp_path / "g-grpc.json").exists()
    grpc = json.loads((tmp_path / "g-grpc.json").read_text())
    assert all(ph["errors"] == 0 and ph["calls"] > 0 for ph in grpc["raw"]["phases"])


def test_spann_bench_compares_qps_at_a_recall_on_both_curves() -> None:
    """``bench/spann_measure.py``: QPS at a recall is interpolated between the sweep points
    that bracket it (log QPS linear in recall), so a coarse sweep is not favoured; ratios
    are taken against faiss in the same cache."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("spann_measure_t", Path(__file__).resolve().parents[1] / "bench" / "spann_measure.py")
    assert spec and spec.loader
    measure = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(measure)
    faiss = [(0.8, 20_000.0), (1.0, 5_000.0)]
    assert measure.qps_at_recall(faiss, 0.9) == pytest.approx(10_000.0)       # the geometric middle
    assert measure.qps_at_recall(faiss, 0.8) == pytest.approx(20_000.0)
    assert measure.qps_at_recall([(0.5, 9.0), (0.7, 8.0)], 0.9) is None         # not reached
    assert measure.qps_at_recall([(0.95, 100.0), (0.91, 300.0), (0.85, 50.0)], 0.9) == pytest.approx(300.0)  # best
    rows = ([{"target": "faiss-ivfflat", "cache": "warm", "recall": r, "qps": q} for r, q in faiss]
            + [{"target": "spann", "cache": "warm", "recall": r, "qps": q, "search": {"rerank": 10}}
               for r, q in [(0.85, 9_000.0), (0.95, 6_000.0)]]
            + [{"target": "spann", "cache": "cold", "recall": 0.92, "qps": 700.0}])
    got = {(a["target"], a["cache"], a["recall"]): a for a in measure.at_recall(rows)}
    warm = got["spann", "warm", 0.9]
    assert warm["search"] == {"rerank": 10} and warm["qps"] == pytest.approx((9_000.0 * 6_000.0) ** 0.5)
    assert warm["ratio"] == pytest.approx(warm["qps"] / 10_000.0)
    assert got["spann", "cold", 0.9]["qps"] == 700.0 and got["spann", "cold", 0.9]["ratio"] is None   # no cold faiss
    assert got["spann", "warm", 0.95]["qps"] == pytest.approx(6_000.0)
