"""`vecdb bench run|report|plot` end to end on a small synthetic set: complete JSON lines whose
recall recomputes from the stored ids, the report's best-QPS rows, a PNG with one curve per
target, an interrupted run that leaves valid lines, and clear errors for bad input."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vecdb.bench import grid
from vecdb.bench.jsonl import SCHEMA, array_sha256, load_raw, read_lines
from vecdb.bench.plot import figure, pareto
from vecdb.bench.report import render_best
from vecdb.cli import main
from vecdb.data.dataset import Dataset
from vecdb.data.formats import write_npy_folder
from vecdb.data.synthetic import gaussian_mixture
from vecdb.errors import DataLossError, InvalidArgumentError
from vecdb.eval import ground_truth, recall_at_k
from vecdb.types import Metric

REPO = Path(__file__).resolve().parents[1]
HNSW_TARGETS = ["vecdb-hnsw", "faiss-hnsw"] + (["hnswlib"] if importlib.util.find_spec("hnswlib") else [])
TARGETS = ["vecdb-flat", *HNSW_TARGETS]
BUILD = {"M": [4, 8], "ef_construction": [16]}
EFS = [10, 40]
BATCHES = [1, 20]
N_QUERIES = 60


def _dataset(folder: Path, n: int = 1500, dim: int = 16, n_queries: int = N_QUERIES) -> Path:
    x = gaussian_mixture(n + n_queries, dim, n_clusters=12, seed=5)
    write_npy_folder(folder, Dataset("tiny", Metric.L2, x[:n].copy(), x[n:].copy()))
    return folder


def _run_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["bench", "run", "--dataset", str(data), "--targets", ",".join(TARGETS), "--build",
            "M=4,8;ef_construction=16", "--search", "ef=" + ",".join(map(str, EFS)), "--k", "10", "--threads", "1",
            "--batch", ",".join(map(str, BATCHES)), "--repeats", "2", "--allow-busy", "--output", str(out), *extra]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Any]:
    """One real run of the CLI over every embedded target (shared by the tests below)."""
    tmp = tmp_path_factory.mktemp("bench-cli")
    data = _dataset(tmp / "tiny")
    out = tmp / "results.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VECDB_BENCH_LOCK", str(tmp / "bench.lock"))
        code = main(_run_args(data, out))
    assert code == 0
    return {"data": data, "out": out, "lines": read_lines([out]), "tmp": tmp}


@pytest.fixture(autouse=True)
def private_lock(tmp_path, monkeypatch):
    """Tests take their own lock file, so a real benchmark running nearby never blocks them."""
    monkeypatch.setenv("VECDB_BENCH_LOCK", str(tmp_path / "bench.lock"))


def test_run_writes_one_complete_line_per_setting(run):
    lines = run["lines"]
    # a target is built once per distinct value of the build knobs it reads, and searched once
    # per distinct value of its search knobs: flat once, each HNSW per M and per ef
    expected = {("vecdb-flat", (), (), b) for b in BATCHES}
    expected |= {(t, (("M", m), ("ef_construction", 16)), (("ef", ef),), b)
                 for t in HNSW_TARGETS for m in BUILD["M"] for ef in EFS for b in BATCHES}
    got = [(ln["target"], tuple(ln["build"].items()), tuple(ln["search"].items()), ln["batch"]) for ln in lines]
    assert sorted(got) == sorted(expected) and len(got) == len(set(got))
    base = np.load(run["data"] / "base.npy")
    queries = np.load(run["data"] / "query.npy")
    for i, ln in enumerate(lines):
        assert ln["schema"] == SCHEMA and ln["line"] == i and ln["run_id"] == lines[0]["run_id"]
        assert ln["k"] == 10 and ln["threads"] == 1 and ln["repeats"] == 2 and len(ln["qps_passes"]) == 2
        assert set(ln) >= {"recall_at_1", "recall_at_10", "qps", "p50_ms", "p95_ms", "p99_ms", "build_s",
                           "index_memory_bytes", "started_at", "finished_at", "run_started_at", "built_at"}
        assert "recall_at_100" not in ln  # only depths <= k
        assert ln["p50_ms"] <= ln["p95_ms"] <= ln["p99_ms"] and ln["build_s"] > 0 and ln["index_memory_bytes"] > 0
        assert ln["started_at"] <= ln["finished_at"] and ln["built_at"] <= ln["started_at"]
        d = ln["dataset"]
        assert (d["n_base"], d["dim"], d["n_queries"], d["metric"]) == (1500, 16, N_QUERIES, "l2")
        assert d["base_sha256"] == array_sha256(base) and d["queries_sha256"] == array_sha256(queries)
        prov = ln["provenance"]
        assert len(prov["commit"]) == 40 and prov["machine"]["cores"] >= 1 and prov["versions"]["numpy"]
        assert prov["command"].startswith("vecdb bench run --dataset")
        assert ln["config"]["build"] == BUILD and ln["config"]["search"] == {"ef": EFS}
        assert ln["reference"] == "vecdb-flat"
    assert all(ln["recall_at_10"] == 1.0 for ln in lines if ln["target"] == "vecdb-flat")
    # the progress bar's total is the number of lines an uninterrupted run writes
    from vecdb.bench.cli_run import RunSpec, Session, load
    from vecdb.bench.jsonl import ResultWriter

    spec = RunSpec(dataset=str(run["data"]), targets=list(TARGETS), output=str(run["tmp"] / "unused.jsonl"),
                   build=BUILD, search={"ef": EFS}, batches=BATCHES)
    spec.validate()
    ds, q, truth = load(spec.dataset, spec.k, None)
    assert Session(spec, ds, q, truth, ResultWriter(Path(spec.output), "x", truth), None).planned_lines() == len(lines)
    assert not Path(spec.output).exists()


def test_recall_and_latencies_recompute_from_the_stored_arrays(run):
    truth = ground_truth(np.load(run["data"] / "base.npy"), np.load(run["data"] / "query.npy"), 10, Metric.L2)[0]
    ref = {(ln["threads"], ln["batch"]): ln["qps"] for ln in run["lines"] if ln["target"] == "vecdb-flat"}
    for ln in run["lines"]:
        raw = load_raw(ln)
        assert raw["ids"].shape == (N_QUERIES, 10) and np.array_equal(raw["truth"], truth)
        for r in (1, 10):
            assert recall_at_k(raw["ids"], truth, r) == pytest.approx(ln[f"recall_at_{r}"])
        lat = raw["latencies_s"]
        assert len(lat) == math.ceil(N_QUERIES / ln["batch"])
        # the wall time of a pass covers all its calls: QPS can not exceed queries / summed call time
        assert ln["qps"] <= N_QUERIES / lat.sum() * (1 + 1e-9) and ln["qps"] == max(ln["qps_passes"])
        assert ln["qps_vs_reference"] == pytest.approx(ln["qps"] / ref[(ln["threads"], ln["batch"])])
    # ef moves recall for vecdb's HNSW on the smaller graph
    r = {ln["search"]["ef"]: ln["recall_at_10"] for ln in run["lines"]
         if ln["target"] == "vecdb-hnsw" and ln["build"]["M"] == 4 and ln["batch"] == 1}
    assert r[EFS[0]] <= r[EFS[1]]


def _md_rows(text: str) -> dict[tuple[str, int], list[str]]:
    rows = {}
    for row in text.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if row.startswith("|") and cells[1].isdigit():
            rows[(cells[0], int(cells[2]))] = cells
    return rows


def test_report_rows_are_the_best_qps_reaching_each_recall(run, capsys):
    assert main(["bench", "report", str(run["out"]), "--markdown", "--baseline", "faiss-hnsw"]) == 0
    rows = _md_rows(capsys.readouterr().out)
    assert {t for t, _ in rows} == set(TARGETS) and {b for _, b in rows} == set(BATCHES)
    for (target, batch), cells in rows.items():
        mine = [ln for ln in run["lines"] if ln["target"] == target and ln["batch"] == batch]
        base = [ln for ln in run["lines"] if ln["target"] == "faiss-hnsw" and ln["batch"] == batch]
        for j, level in enumerate((0.90, 0.95, 0.99)):
            ok = [ln for ln in mine if ln["recall_at_10"] >= level]
            qps_cell, setting_cell, ratio_cell = cells[3 + 3 * j : 6 + 3 * j]
            if not ok:
                assert (qps_cell, setting_cell) == ("-", "(not reached)")
                continue
            best = max(ok, key=lambda ln: ln["qps"])
            assert float(qps_cell.replace(",", "")) == pytest.approx(best["qps"], abs=0.5)
            knobs = {**best["build"], **best["search"]}
            assert setting_cell == (" ".join(f"{k}={v}" for k, v in knobs.items()) or "-")
            base_ok = [ln["qps"] for ln in base if ln["recall_at_10"] >= level]
            if base_ok:
                assert float(ratio_cell) == pytest.approx(best["qps"] / max(base_ok), abs=0.006)
            else:
                assert ratio_cell == "-"


def _line(target: str, recall: float, qps: float, **extra: Any) -> dict[str, Any]:
    return {"schema": SCHEMA, "target": target, "threads": 1, "batch": 1, "k": 10, "recall_at_10": recall, "qps": qps,
            "build": {}, "search": extra, "reference": "flat", "index_memory_bytes": 2**20,
            "dataset": {"name": "fab", "n_base": 100, "queries_sha256": "ab" * 32}}


def test_report_on_fabricated_lines_reads_levels_and_ratios():
    lines = [_line("flat", 1.0, 100.0),
             _line("ann", 0.89, 5000.0, ef=8), _line("ann", 0.93, 3000.0, ef=16), _line("ann", 0.97, 1000.0, ef=32),
             _line("ann", 0.96, 800.0, ef=64)]
    rows = _md_rows(render_best(lines, markdown=True))
    assert rows[("ann", 1)][3:12] == ["3,000", "ef=16", "30", "1,000", "ef=32", "10", "-", "(not reached)", "-"]
    assert rows[("flat", 1)][3:6] == ["100", "-", "1"] and rows[("ann", 1)][12] == "0.97"
    assert rows[("ann", 1)][13] == "" and "not comparable" not in render_best(lines)
    lines[2]["busy"] = True  # the best line at 0.90 was measured on a busy machine: flagged
    text = render_best(lines, markdown=True)
    assert _md_rows(text)[("ann", 1)][13] == "!" and "not comparable" in text
    # server rows: the server's own CPU counts as others', so busy is not judged there
    server = {**_line("grpc://h:1", 0.95, 500.0, ef=16), "busy": True, "others_include_server": True}
    text = render_best([*lines, server], markdown=True)
    assert _md_rows(text)[("grpc://h:1", 1)][13] == "n/a" and "busy n/a: server rows" in text


def test_plot_is_a_png_with_one_curve_per_target(run, capsys):
    png = run["tmp"] / "plots" / "pareto.png"
    assert main(["bench", "plot", str(run["out"]), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    img = matplotlib.image.imread(str(png))
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    fig = figure(run["lines"])
    ax_qps, ax_mem = fig.axes[:2]
    assert sorted(ln.get_label() for ln in ax_qps.get_lines()) == sorted(TARGETS)
    assert sorted(ln.get_label() for ln in ax_mem.get_lines()) == sorted(TARGETS)
    assert ax_qps.get_yscale() == "log"
    for curve in ax_qps.get_lines():  # a Pareto curve: recall up, QPS down
        x, y = curve.get_xdata(), curve.get_ydata()
        assert list(x) == sorted(x) and list(y) == sorted(y, reverse=True)


def test_pareto_keeps_the_undominated_points():
    pts = [(0.5, 100.0), (0.6, 90.0), (0.55, 50.0), (0.9, 10.0), (0.9, 20.0), (0.4, 80.0)]
    assert pareto(pts) == [(0.5, 100.0), (0.6, 90.0), (0.9, 20.0)]
    assert pareto([(0.5, 3.0), (0.9, 2.0), (0.95, 4.0)], higher_is_better=False) == [(0.9, 2.0), (0.95, 4.0)]


def test_interrupted_run_leaves_valid_lines(tmp_path):
    data = _dataset(tmp_path / "tiny", n=2000, n_queries=200)
    out = tmp_path / "r.jsonl"
    efs = ",".join(str(e) for e in range(10, 400))  # far more settings than run before the signal
    cmd = [sys.executable, "-m", "vecdb.cli", "bench", "run", "--dataset", str(data), "--targets", "vecdb-hnsw",
           "--build", "M=8;ef_construction=32", "--search", f"ef={efs}", "--batch", "1", "--repeats", "3",
           "--allow-busy", "--output", str(out)]
    env = {**os.environ, "VECDB_BENCH_LOCK": str(tmp_path / "lock")}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(1200):  # bounded wait for the first lines (not a timing assertion)
            if out.exists() and out.read_text().count("\n") >= 2 or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in err, err
    lines = read_lines([out])
    assert 2 <= len(lines) < 390 and out.read_text().endswith("\n")
    for i, ln in enumerate(lines):
        assert ln["line"] == i and ln["search"] == {"ef": 10 + i} and 0 <= ln["recall_at_10"] <= 1
        assert load_raw(ln)["ids"].shape == (200, 10)
    # a writer killed mid-line leaves a torn last line: readers skip it, keep the rest
    torn = tmp_path / "torn.jsonl"
    torn.write_text(out.read_text() + '{"schema": "vecdb-bench-run/1", "tar')
    assert len(read_lines([torn])) == len(lines)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"schema": "vecdb-bench-run/1", "tar\n' + out.read_text())
    with pytest.raises(DataLossError):
        read_lines([bad])


def test_clear_errors(tmp_path, capsys, monkeypatch):
    data = _dataset(tmp_path / "tiny", n=200, n_queries=5)
    out = str(tmp_path / "r.jsonl")

    def err(*args: str) -> str:
        argv = ["bench", "run", "--dataset", str(data), "--targets", "vecdb-hnsw", "--output", out, "--allow-busy"]
        for i in range(0, len(args), 2):
            if args[i] in argv:
                argv[argv.index(args[i]) + 1] = args[i + 1]
            else:
                argv += [args[i], args[i + 1]]
        assert main(argv) == 2
        return capsys.readouterr().err

    assert "unknown dataset 'no-such-set'" in err("--dataset", "no-such-set")
    (tmp_path / "noq").mkdir()
    np.save(tmp_path / "noq" / "base.npy", np.zeros((10, 4), np.float32))
    assert "has no queries" in err("--dataset", str(tmp_path / "noq"))
    write_npy_folder(tmp_path / "emptyq", Dataset("e", Metric.L2, np.ones((10, 4), np.float32),
                                                  np.zeros((0, 4), np.float32)))
    assert "has no queries" in err("--dataset", str(tmp_path / "emptyq"))
    assert "unknown target(s) ['nope']" in err("--targets", "vecdb-hnsw,nope")
    assert "unknown build knob(s) ['MM']" in err("--build", "MM=4")
    assert "unknown search knob(s) ['rerank']" in err("--search", "rerank=10")
    assert "separate knobs with ';'" in err("--build", "M=16,ef_construction=200")
    assert "--threads" in err("--threads", "one")
    if importlib.util.find_spec("chromadb") is None:
        assert "pip install 'vecdb[peers]'" in err("--targets", "chroma")
    from vecdb.bench import cli_run

    # the same check for any optional module: a target whose package is absent names its extra
    monkeypatch.setitem(cli_run.OPTIONAL, "vecdb-hnsw", (("vecdb_no_such_module",), "bench"))
    msg = err()
    assert "vecdb_no_such_module" in msg and "pip install 'vecdb[bench]'" in msg
    assert not Path(out).exists()  # nothing was run or written
    assert main(["bench", "report", str(tmp_path / "missing.jsonl")]) == 2
    assert "no result file" in capsys.readouterr().err


def test_grid_parsing():
    assert grid.parse_axes("M=16,32;ef_construction=200", "--build") == {"M": [16, 32], "ef_construction": [200]}
    assert grid.expand({"M": [16, 32], "ef_construction": [200]}) == [{"M": 16, "ef_construction": 200},
                                                                       {"M": 32, "ef_construction": 200}]
    assert grid.expand(grid.parse_axes("", "--search")) == [{}]
    for bad in ("M", "M=", "M=1;M=2", "=3"):
        with pytest.raises(InvalidArgumentError):
            grid.parse_axes(bad, "--build")


def test_legacy_bench_command_still_parses_its_flags(tmp_path):
    out = tmp_path / "r.json"
    code = main(["bench", "--dataset", "digits-64-euclidean", "--targets", "vecdb-flat", "--batch", "50",
                 "--max-queries", "20", "--repeats", "1", "--memory", "skip", "--allow-busy", "--out", str(out)])
    assert code == 0 and json.loads(out.read_text())["runs"][0]["target"] == "vecdb-flat"


def test_server_mode_loads_once_and_drives_two_clients(tmp_path):
    """A real `vecdb serve` child on 127.0.0.1: concurrency 1 and 2, the embedded HNSW beside it,
    complete lines whose recall recomputes, and the collection reused by a second run."""
    from vecdb.server.process import start_server_process

    data = _dataset(tmp_path / "tiny", n=1500, n_queries=40)
    out = tmp_path / "server.jsonl"
    server = start_server_process(tmp_path / "server-data", tmp_path / "server.log", args=["--no-metrics"])
    try:
        url = f"grpc://{server.address}"
        args = ["bench", "run", "--dataset", str(data), "--targets", "vecdb-hnsw", "--target", url, "--build",
                "M=8;ef_construction=32", "--search", "ef=10,40", "--concurrency", "1,2", "--batch", "1,8",
                "--repeats", "1", "--allow-busy", "--output", str(out)]
        assert main(args) == 0
        first = len(read_lines([out]))
        assert main(args) == 0
    finally:
        server.stop()
    lines = read_lines([out])
    runs = list(dict.fromkeys(ln["run_id"] for ln in lines))
    assert len(runs) == 2 and len(lines) == 2 * first
    truth = ground_truth(np.load(data / "base.npy"), np.load(data / "query.npy"), 10, Metric.L2)[0]
    for run_id, reused in zip(runs, (False, True)):
        mine = [ln for ln in lines if ln["run_id"] == run_id]
        remote = [ln for ln in mine if ln["target"] == url]
        assert sorted((ln["concurrency"], ln["search"]["ef"], ln["batch"]) for ln in remote) == sorted(
            (c, ef, b) for c in (1, 2) for ef in (10, 40) for b in (1, 8))
        assert {ln["target"] for ln in mine} == {url, "vecdb-hnsw"}
        assert all(ln["reference"] == "vecdb-hnsw" for ln in mine)
        for ln in remote:
            assert ln["threads"] == ln["concurrency"] and ln["server"]["reused"] is reused
            assert ln["server"]["collection"].startswith("bench-") and ln["index_memory_bytes"] > 0
            assert ln["build"] == {"M": 8, "ef_construction": 32} and ln["others_include_server"] is True
            raw = load_raw(ln)
            assert recall_at_k(raw["ids"], truth, 10) == pytest.approx(ln["recall_at_10"])
            assert len(raw["latencies_s"]) == math.ceil(40 / ln["batch"]) and (raw["latencies_s"] > 0).all()
            assert ln["qps"] <= 40 / (raw["latencies_s"].sum() / ln["concurrency"]) * (1 + 1e-9)
            if ln["concurrency"] == 1:
                assert ln["qps_vs_reference"] == pytest.approx(ln["qps"] / ln["reference_qps"])
        # the plot gains a third panel: p50 and p99 against 1 and 2 clients per server setting
        fig = figure(mine)
        lat = fig.axes[2].get_lines()
        assert len(fig.axes) == 3 and len(lat) == 4 and all(list(c.get_xdata()) == [1, 2] for c in lat)
        assert sorted(c.get_label() for c in fig.axes[0].get_lines()) == sorted([url, "vecdb-hnsw"])
        # ef reaches the server's index
        r_remote = {ln["search"]["ef"]: ln["recall_at_10"] for ln in remote if ln["batch"] == 1}
        assert r_remote[40] >= r_remote[10] and r_remote[40] > 0.9


def test_unreachable_server_is_a_clear_error(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = _dataset(tmp_path / "tiny", n=200, n_queries=5)
    out = tmp_path / "r.jsonl"
    assert main(["bench", "run", "--dataset", str(data), "--target", f"grpc://127.0.0.1:{port}", "--allow-busy",
                 "--output", str(out)]) == 2
    assert f"cannot reach the vecdb server at 127.0.0.1:{port}" in capsys.readouterr().err
    assert not out.exists()
    assert main(["bench", "run", "--dataset", str(data), "--target", "http://x:1", "--output", str(out)]) == 2
    assert "grpc://HOST:PORT" in capsys.readouterr().err
