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
        mp.setenv("VECDB_CACHE", str(tmp / "cache"))
        code = main(_run_args(data, out))
    assert code == 0
    return {"data": data, "out": out, "lines": read_lines([out]), "tmp": tmp}


@pytest.fixture(autouse=True)
def private_lock(tmp_path, monkeypatch):
    """Tests take their own lock file, so a real benchmark running nearby never blocks them, and
    their own cache folder (computed ground truth), so nothing outside the test's folders is used."""
    monkeypatch.setenv("VECDB_BENCH_LOCK", str(tmp_path / "bench.lock"))
    monkeypatch.setenv("VECDB_CACHE", str(tmp_path / "cache"))


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
    # SIGINT back to its default in the child: a shell's background job (`make test &`) starts with
    # it ignored, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
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
    # knob values the index rejects fail before any build, naming the target
    assert "target vecdb-hnsw rejects {'ef': 0}: ef must be >= 1" in err("--search", "ef=0")
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


# ---- every index kind as a target; workloads beyond plain k-NN ---------------------------------------
def _exact_rows(base: np.ndarray, queries: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Exact l2 top-k over ``rows`` of base by plain numpy (independent of vecdb's scan)."""
    d = ((queries[:, None, :].astype(np.float64) - base[rows][None].astype(np.float64)) ** 2).sum(-1)
    return rows[np.argsort(d, axis=1, kind="stable")[:, :k]]


def _by(lines: list[dict[str, Any]], target: str, **search: Any) -> list[dict[str, Any]]:
    return [ln for ln in lines if ln["target"] == target and all(ln["search"].get(k) == v for k, v in search.items())]


def _cli(data: Path, out: Path, targets: str, *extra: str) -> int:
    return main(["bench", "run", "--dataset", str(data), "--targets", targets, "--repeats", "1", "--allow-busy",
                 "--output", str(out), *extra])


def test_every_index_kind_runs_and_its_knobs_move_recall(tmp_path, caplog):
    data = _dataset(tmp_path / "tiny")
    out = tmp_path / "kinds.jsonl"
    targets = "vecdb-flat,vecdb-spann,vecdb-curator,vecdb-pq,vecdb-binary,vecdb-sq8"
    assert _cli(data, out, targets, "--build", "posting_limit=64;head_size=16;n_root=8;m=4",
                "--search", "max_postings=1,16;budget=20,400;rerank=0,40") == 0
    lines = read_lines([out])
    truth = ground_truth(np.load(data / "base.npy"), np.load(data / "query.npy"), 10, Metric.L2)[0]
    got = sorted((ln["target"], tuple(sorted(ln["search"].items()))) for ln in lines)
    expected = [("vecdb-flat", ())] + [("vecdb-spann", (("max_postings", m),)) for m in (1, 16)]
    expected += [("vecdb-curator", (("budget", b),)) for b in (20, 400)]
    expected += [(t, (("rerank", r),)) for t in ("vecdb-pq", "vecdb-binary", "vecdb-sq8") for r in (0, 40)]
    assert got == sorted(expected)
    for ln in lines:
        assert ln["workload"] == {"label": "knn", "kind": "knn"} and ln["index_memory_bytes"] > 0
        assert recall_at_k(load_raw(ln)["ids"], truth, 10) == pytest.approx(ln["recall_at_10"])
    spann = {ln["search"]["max_postings"]: ln for ln in _by(lines, "vecdb-spann")}
    assert spann[16]["recall_at_10"] > spann[1]["recall_at_10"] and spann[16]["disk_bytes"] > 0
    assert spann[1]["build"] == {"posting_limit": 64, "head_size": 16}
    curator = {ln["search"]["budget"]: ln["recall_at_10"] for ln in _by(lines, "vecdb-curator")}
    assert curator[400] > curator[20]
    for t in ("vecdb-pq", "vecdb-binary"):
        r = {ln["search"]["rerank"]: ln["recall_at_10"] for ln in _by(lines, t)}
        assert r[40] > r[0], t
    assert not [r for r in caplog.records if "does not move recall" in r.getMessage()]
    # a budget past the collection's size scans everything either way: the run warns
    caplog.clear()
    assert _cli(data, tmp_path / "dead.jsonl", "vecdb-curator", "--build", "n_root=8",
                "--search", "budget=2000,4000") == 0
    dead = [r.getMessage() for r in caplog.records if "does not move recall" in r.getMessage()]
    assert len(dead) == 1 and "vecdb-curator: swept budget over 2000, 4000" in dead[0] and "1.0000" in dead[0]
    # SQ8 postings: SPANN then reads rerank (float postings do not: one line for them)
    sq8 = tmp_path / "sq8.jsonl"
    assert _cli(data, sq8, "vecdb-spann", "--build", "codes=float,sq8;posting_limit=64;head_size=16",
                "--search", "max_postings=16;rerank=10,200") == 0
    got = {(ln["build"]["codes"], ln["search"].get("rerank")): ln["recall_at_10"] for ln in read_lines([sq8])}
    assert set(got) == {("float", None), ("sq8", 10), ("sq8", 200)} and got[("sq8", 200)] > got[("sq8", 10)]
    # the head route is a build knob (exact_heads 0: every query and insert routes through it)
    routes = tmp_path / "routes.jsonl"
    assert _cli(data, routes, "vecdb-spann", "--build", "head_route=groups,graph;exact_heads=0;posting_limit=64;head_size=16",
                "--search", "max_postings=1,16") == 0
    got = {(ln["build"]["head_route"], ln["search"]["max_postings"]): ln["recall_at_10"] for ln in read_lines([routes])}
    assert set(got) == {(r, m) for r in ("groups", "graph") for m in (1, 16)}
    assert all(got[(r, 16)] > got[(r, 1)] for r in ("groups", "graph"))


def test_filter_workload_scores_against_the_filtered_rows_and_caches_them(tmp_path, monkeypatch, capsys):
    from vecdb.bench import workloads

    data = _dataset(tmp_path / "tiny")
    out = tmp_path / "filter.jsonl"
    targets = ["vecdb-flat", "vecdb-hnsw", "faiss-hnsw", "vecdb-curator", "vecdb-spann", "vecdb-collection",
               "db-vecdb-flat"] + HNSW_TARGETS[2:]
    assert _cli(data, out, ",".join(targets), "--filter", "0.05,0.5",
                "--build", "M=8;ef_construction=32;n_root=8;posting_limit=64;head_size=16",
                "--search", "ef=10,80;budget=50,1000;max_postings=4,32") == 0
    lines = read_lines([out])
    base, queries = np.load(data / "base.npy"), np.load(data / "query.npy")
    attr = workloads.filter_attribute(len(base))
    for s in (0.05, 0.5):
        mine = [ln for ln in lines if ln["workload"]["label"] == f"filter {s:g}"]
        assert {ln["target"] for ln in mine} == set(targets)
        allow = np.flatnonzero(attr < s)
        exact = _exact_rows(base, queries, allow, 10)
        for ln in mine:
            w = ln["workload"]
            assert (w["kind"], w["selectivity"], w["n_allowed"]) == ("filter", s, len(allow))
            raw = load_raw(ln)
            assert recall_at_k(raw["truth"], exact, 10) == 1.0  # the stored truth is the filtered exact top-10
            ids = raw["ids"][raw["ids"] >= 0]
            assert np.isin(ids, allow).all(), ln["target"]  # nothing outside the filter comes back
            assert recall_at_k(raw["ids"], exact, 10) == pytest.approx(ln["recall_at_10"])
        assert all(ln["recall_at_10"] == 1.0 for ln in mine if ln["target"] in ("vecdb-flat", "db-vecdb-flat"))
        assert max(ln["recall_at_10"] for ln in mine if ln["target"] == "vecdb-hnsw") >= 0.9
    # the filtered truths are cached: a second computation reads them instead of scanning
    ds = workloads.Dataset("tiny", Metric.L2, base, queries)
    hashes = (array_sha256(base), array_sha256(queries))

    def boom(*a: Any, **kw: Any) -> Any:
        raise AssertionError("ground truth recomputed despite the cache")

    monkeypatch.setattr(workloads, "ground_truth", boom)
    again = workloads.filter_workloads(ds, queries, hashes, 10, [0.05, 0.5])
    assert [np.array_equal(w.truth, load_raw(next(ln for ln in lines if ln["workload"]["label"] == w.label))["truth"])
            for w in again] == [True, True]
    # the plot picks one workload; peers without filters and too small selectivities are clear errors
    png = tmp_path / "f.png"
    assert main(["bench", "plot", str(out), "-o", str(png), "--workload", "filter 0.05"]) == 0
    assert "filter 0.05" in figure(lines, workload="filter 0.05").axes[0].get_title()
    capsys.readouterr()
    assert _cli(data, tmp_path / "x.jsonl", "vecdb-flat,faiss-pq", "--filter", "0.1") == 2
    assert "--filter: target(s) ['faiss-pq'] do not support this workload" in capsys.readouterr().err
    assert _cli(data, tmp_path / "x.jsonl", "vecdb-flat", "--filter", "0.001") == 2
    assert "fewer than k=10" in capsys.readouterr().err
    assert _cli(data, tmp_path / "x.jsonl", "vecdb-flat", "--filter", "1.5") == 2
    assert "(0, 1]" in capsys.readouterr().err


def _labelled(folder: Path, n_tenants: int = 12) -> tuple[Path, np.ndarray, np.ndarray]:
    from vecdb.data.synthetic import tenant_labels

    x = gaussian_mixture(1500 + N_QUERIES, 16, n_clusters=12, seed=5)
    indptr, indices = tenant_labels(1500, n_tenants, seed=3)
    q_labels = np.random.default_rng(4).integers(0, n_tenants, N_QUERIES)
    write_npy_folder(folder, Dataset("tenants", Metric.L2, x[:1500].copy(), x[1500:].copy(), labels_indptr=indptr,
                                     labels_indices=indices, query_labels=q_labels))
    return folder, indptr, indices


def test_tenant_workload_searches_each_query_in_its_tenant(tmp_path, capsys):
    from vecdb.bench.workloads import members_of

    data, indptr, indices = _labelled(tmp_path / "lab")
    members = members_of(indptr, indices)
    base, queries = np.load(data / "base.npy"), np.load(data / "query.npy")
    q_labels = np.load(data / "query_labels.npy")
    out = tmp_path / "tenants.jsonl"
    targets = ["vecdb-flat", "vecdb-curator", "vecdb-hnsw", "vecdb-collection"] + (HNSW_TARGETS[2:] or ["faiss-hnsw"])
    assert _cli(data, out, ",".join(targets), "--tenants", "dataset", "--batch", "1,16",
                "--build", "M=8;ef_construction=32;n_root=8;max_shortlist=16",
                "--search", "ef=10,80;budget=10,1000") == 0
    lines = read_lines([out])
    assert {ln["target"] for ln in lines} == set(targets)
    # each query's truth: its own label's rows (every tenant here has >= k rows), by plain numpy
    exact = np.vstack([_exact_rows(base, queries[i : i + 1], members[q_labels[i]], 10) for i in range(N_QUERIES)])
    for ln in lines:
        w = ln["workload"]
        assert (w["kind"], w["tenants"], w["n_tenants"], w["own_query_labels"]) == ("tenants", "dataset", 12, True)
        raw = load_raw(ln)
        assert recall_at_k(raw["truth"], exact, 10) == 1.0
        for i in range(N_QUERIES):
            found = raw["ids"][i][raw["ids"][i] >= 0]
            assert np.isin(found, members[q_labels[i]]).all(), (ln["target"], i)
        assert recall_at_k(raw["ids"], raw["truth"], 10) == pytest.approx(ln["recall_at_10"])
    assert all(ln["recall_at_10"] == 1.0 for ln in lines if ln["target"] == "vecdb-flat")
    curator = {(ln["search"]["budget"], ln["batch"]): ln["recall_at_10"] for ln in _by(lines, "vecdb-curator", ef=10)}
    assert curator[(1000, 1)] == 1.0 and curator[(10, 1)] < 1.0 and curator[(10, 16)] == curator[(10, 1)]
    # synthetic Zipf tenants on the same set; a set without labels is a clear error
    out2 = tmp_path / "zipf.jsonl"
    assert _cli(data, out2, "vecdb-flat,vecdb-curator", "--tenants", "zipf:20", "--build", "n_root=8") == 0
    z = read_lines([out2])
    assert {ln["workload"]["tenants"] for ln in z} == {"zipf:20"} and all(ln["recall_at_10"] == 1.0 for ln in z)
    capsys.readouterr()
    plain = _dataset(tmp_path / "plain", n=300, n_queries=5)
    assert _cli(plain, tmp_path / "x.jsonl", "vecdb-flat", "--tenants", "dataset") == 2
    assert "has no labels" in capsys.readouterr().err
    assert _cli(plain, tmp_path / "x.jsonl", "vecdb-flat", "--tenants", "zipf") == 2
    assert "'dataset' or 'zipf:N'" in capsys.readouterr().err


def _replay(raw: dict[str, np.ndarray],
            n: int) -> tuple[np.ndarray, list[tuple[int, np.ndarray]], np.ndarray, np.ndarray]:
    """From a churn line's raw arrays: the live rows when its phase began, its write batches
    (kind, rows) and per query searched the batches acknowledged before its start (c) and
    begun before its end (d)."""
    live0 = np.unpackbits(raw["live_start_bits"], count=n).astype(bool)
    ptr = raw["batch_indptr"]
    batches = [(int(kd), raw["batch_rows"][ptr[j] : ptr[j + 1]]) for j, kd in enumerate(raw["batch_kind"])]
    c = np.array([(raw["batch_ack_s"] < s).sum() for s in raw["query_start_s"]])
    d = np.array([(raw["batch_begin_s"] < e).sum() for e in raw["query_end_s"]])
    return live0, batches, c, np.maximum(c, d)


def _rescore(base: np.ndarray, queries: np.ndarray, raw: dict[str, np.ndarray], k: int,
             depths: tuple[int, ...]) -> tuple[dict[int, float], np.ndarray, int]:
    """recall@r of a churn line recomputed from its stored ids and write log by the documented
    rule with plain numpy; also the truths, and how many returned rows were neither live when
    their query started nor inserted by a batch in flight (a read-your-writes violation)."""
    live0, batches, c, d = _replay(raw, len(base))
    ids = raw["ids"]
    hits, slots = dict.fromkeys(depths, 0), dict.fromkeys(depths, 0)
    truth = np.full((len(ids), k), -1, np.int64)
    stale = 0
    for i, qi in enumerate(raw["query"]):
        live = live0.copy()
        for kind, rows in batches[: c[i]]:
            live[rows] = kind > 0
        flight = batches[c[i] : d[i]]
        ok = live.copy()
        for kind, rows in flight:  # deleted in flight and not returned: out of the truth
            if kind < 0:
                ok[np.setdiff1d(rows, ids[i])] = False
        truth[i] = _exact_rows(base, queries[qi : qi + 1], np.flatnonzero(ok), k)[0]
        found = ids[i]
        late = np.zeros(k, bool)  # inserted in flight: neither hit nor miss
        for kind, rows in flight:
            if kind > 0:
                late |= np.isin(found, rows) & ~live[np.maximum(found, 0)] & (found >= 0)
        stale += int((~live[found[found >= 0]] & ~late[found >= 0]).sum())
        for r in depths:
            keep = found[:r][~late[:r] & (found[:r] >= 0)]
            hits[r] += np.intersect1d(keep, truth[i, :r]).size
            slots[r] += r - int(late[:r].sum())
    return {r: hits[r] / slots[r] for r in depths}, truth, stale


def test_churn_searches_while_a_writer_inserts_and_deletes(tmp_path, capsys):
    """`--churn`: each target is searched while a writer thread replaces rows (vecdb-hnsw links
    while searched, the collection writes concurrently, hnswlib is serialised); recall recomputes
    from the stored ids and write log; no query returns a row deleted before it started."""
    data = _dataset(tmp_path / "tiny")
    out = tmp_path / "churn.jsonl"
    targets = ["vecdb-flat", "vecdb-hnsw", "vecdb-collection"] + HNSW_TARGETS[2:]
    assert _cli(data, out, ",".join(targets), "--churn", "0.2", "--churn-rounds", "30", "--repeats", "5",
                "--build", "M=8;ef_construction=32", "--search", "ef=20") == 0
    lines = read_lines([out])
    base, queries = np.load(data / "base.npy"), np.load(data / "query.npy")
    assert sorted((ln["target"], ln["search"].get("ef")) for ln in lines) == sorted(
        [("vecdb-flat", None)] + [(t, 20) for t in targets[1:]])
    modes = {"vecdb-flat": "serialised", "vecdb-hnsw": "linked", "vecdb-collection": "concurrent",
             "hnswlib": "serialised"}
    exercised = {"in_flight": 0, "after_writes": 0}
    for ln in lines:
        w, ch = ln["workload"], ln["workload"]["churn"]
        assert (w["kind"], w["label"], w["n_initial"], w["batch_rows"]) == ("churn", "churn 0.2", 1200, 10)
        assert "start state" in w["truth_rule"] and ch["write_mode"] == modes[ln["target"]] and ch["write_note"]
        raw = load_raw(ln)
        live0, batches, c, d = _replay(raw, len(base))
        n_live = live0.sum() + np.cumsum([kind * len(rows) for kind, rows in batches])
        assert ch["write_batches"] == len(batches) >= 1 and ch["passes"] == 5 and len(raw["ids"]) == 5 * N_QUERIES
        assert (ch["n_live_min"], ch["n_live_max"]) == (min(live0.sum(), n_live.min()), max(live0.sum(), n_live.max()))
        assert 1200 <= ch["n_live_min"] <= ch["n_live_max"] <= 1210
        assert ch["rows_inserted"] == sum(len(r) for kd, r in batches if kd > 0) and ch["write_rows_per_s"] > 0
        assert ch["queries_with_writes_in_flight"] == int((d > c).sum())
        exercised["in_flight"] += int((d > c).sum())
        exercised["after_writes"] += int((c > 0).sum())
        recalls, truth, stale = _rescore(base, queries, raw, 10, (1, 10))
        assert [recalls[1], recalls[10]] == pytest.approx([ln["recall_at_1"], ln["recall_at_10"]]), ln["target"]
        assert np.array_equal(truth, raw["truth"])
        # read-your-writes: a row deleted (or not yet inserted) when a query started never comes
        # back unless a batch in flight inserted it
        assert stale == 0, ln["target"]
        # the idle figures: the same setting just before, over the rows then live
        idle = w["idle"]
        assert idle["n_live"] == live0.sum() and idle["p50_ms"] <= idle["p99_ms"] and ln["p50_ms"] <= ln["p99_ms"]
        idle_truth = _exact_rows(base, queries, np.flatnonzero(live0), 10)
        assert np.array_equal(raw["idle_truth"], idle_truth)
        assert recall_at_k(raw["idle_ids"], idle_truth, 10) == pytest.approx(idle["recall_at_10"])
        assert ln["recall_at_10"] >= (1.0 if ln["target"] == "vecdb-flat" else 0.8), ln["target"]
    # both halves of the rule ran: queries with writes in flight, and queries after acknowledged writes
    assert exercised["in_flight"] > 0 and exercised["after_writes"] > 0
    # report: a churn table, recall and p99 under churn beside idle, one row per line
    capsys.readouterr()
    assert main(["bench", "report", str(out), "--markdown"]) == 0
    text = capsys.readouterr().out
    assert "searched while a writer inserts and deletes" in text
    rows = {(c[0], c[3]): c for c in ([x.strip() for x in row.strip().strip("|").split("|")]
                                      for row in text.split("searched while a writer")[1].splitlines()
                                      if row.startswith("|") and not row.startswith("|--"))}
    for ln in lines:
        cells = rows[(ln["target"], " ".join(f"{k}={v}" for k, v in {**ln["build"], **ln["search"]}.items()) or "-")]
        idle = ln["workload"]["idle"]
        assert cells[4] == ln["workload"]["churn"]["write_mode"]
        assert [float(c) for c in (cells[8], cells[9], cells[14], cells[15])] == pytest.approx(
            [ln["recall_at_10"], idle["recall_at_10"], ln["p99_ms"], idle["p99_ms"]], abs=6e-4)
    assert len(rows) == len(lines) + 1  # + the header row
    # plot: a third panel of p99 against recall, churn and idle per target
    fig = figure(lines, workload="churn 0.2")
    assert len(fig.axes) == 3 and "churn 0.2" in fig.axes[0].get_title()
    assert sorted(c.get_label() for c in fig.axes[2].get_lines()) == sorted(
        f"{t} {when}" for t in targets for when in ("churn", "idle"))
    capsys.readouterr()
    assert _cli(data, tmp_path / "x.jsonl", "vecdb-flat,faiss-hnsw", "--churn") == 2
    assert "--churn: target(s) ['faiss-hnsw'] do not support this workload" in capsys.readouterr().err
    assert _cli(data, tmp_path / "x.jsonl", "vecdb-flat", "--churn", "--filter", "0.5") == 2
    assert "apart from --filter" in capsys.readouterr().err
    assert _cli(data, tmp_path / "x.jsonl", "vecdb-flat", "--churn-rate", "100") == 2
    assert "--churn-rate needs --churn" in capsys.readouterr().err


def test_churn_truth_rule_on_a_hand_made_write_log():
    """The rule on a write log made by hand: a returned row deleted before the query started is
    a miss (a rule ignoring acknowledged deletes would count it), a row deleted in flight may be
    returned or not, a row inserted in flight is neither hit nor miss, one inserted before is
    owed."""
    from vecdb.bench.churn import DELETE, INSERT, WriteLog, score

    base = np.array([[float(i), 0.0] for i in range(10)], np.float32)   # row i at distance i from the query
    q = np.zeros((1, 2), np.float32)
    live0 = np.zeros(10, bool)
    live0[1:10] = True                                                  # row 0 (the nearest) held out
    log = WriteLog()
    log.add(DELETE, np.array([1]), 1.0, 2.0)    # row 1 gone, acknowledged at t=2
    log.add(DELETE, np.array([2]), 3.0, 4.0)    # row 2 deleted in [3, 4]
    log.add(INSERT, np.array([0]), 5.0, 6.0)    # row 0 inserted in [5, 6]
    queries = np.repeat(q, 6, axis=0)
    starts = np.array([0.0, 2.5, 3.5, 3.5, 5.5, 6.5])
    ends = starts + 0.2
    ids = np.array([[1, 2], [1, 2], [2, 3], [3, 4], [0, 3], [3, 4]])
    got = score(base, queries, Metric.L2, live0, log, starts, ends, ids, 2, (1, 2))
    assert got.truth.tolist() == [[1, 2], [2, 3], [2, 3], [3, 4], [3, 4], [0, 3]]
    assert got.dropped.tolist() == [[False] * 2] * 4 + [[True, False], [False, False]]
    # hits: 2, 1 (row 1 was deleted before the query: a miss), 2, 2, 1 of 1 scored, 1 (row 0 owed)
    assert got.recalls[2] == pytest.approx(9 / 11)
    assert got.recalls[1] == pytest.approx(3 / 5)   # first slots: hit, miss, hit, hit, (dropped), miss (0 owed)
    assert got.stats["queries_with_writes_in_flight"] == 3 and got.stats["slots_dropped"] == 1
    # the query that returns row 1 after its delete was acknowledged: that slot is wrong
    alone = score(base, queries[1:2], Metric.L2, live0, log, starts[1:2], ends[1:2], ids[1:2], 2, (2,))
    assert alone.recalls[2] == 0.5 and alone.truth.tolist() == [[2, 3]]
    # rules that ignore acknowledged deletes (every query against the rows live before any write),
    # or writes in flight (each query against its start state only), get other figures
    assert recall_at_k(ids, np.array([[1, 2]] * 6), 2) != pytest.approx(got.recalls[2])
    start_only = np.array([[1, 2], [2, 3], [2, 3], [2, 3], [2, 3], [0, 3]])
    assert recall_at_k(ids, start_only, 2) != pytest.approx(got.recalls[2])


def test_every_missing_peer_names_its_extra(tmp_path, capsys):
    from vecdb.bench.cli_run import OPTIONAL

    data = _dataset(tmp_path / "tiny", n=200, n_queries=5)
    missing = [t for t, (mods, _) in OPTIONAL.items() if any(importlib.util.find_spec(m) is None for m in mods)]
    for target in missing:
        assert _cli(data, tmp_path / "x.jsonl", f"vecdb-flat,{target}") == 2
        err = capsys.readouterr().err
        assert f"target {target} needs the Python package(s)" in err
        assert f"pip install 'vecdb[{OPTIONAL[target][1]}]'" in err
    assert not (tmp_path / "x.jsonl").exists()


PEERS_PYTHON = REPO / "bench" / ".venv-peers" / "bin" / "python"


@pytest.mark.slow
@pytest.mark.skipif(not PEERS_PYTHON.exists(), reason="no bench/.venv-peers (bash bench/peers-venv.sh)")
def test_peers_run_through_the_cli_from_the_peers_venv(tmp_path):
    """`vecdb bench run` from the peers venv (vecdb installed editable there) measures every
    embedded peer behind the same target interface, one line per setting, recall recomputable."""
    data = _dataset(tmp_path / "small", n=600, n_queries=20)
    out = tmp_path / "peers.jsonl"
    peers = ["chroma", "qdrant-local", "lancedb", "milvus-lite-flat", "milvus-lite-ivf"]
    cmd = [str(PEERS_PYTHON), "-m", "vecdb.cli", "bench", "run", "--dataset", str(data), "--targets",
           ",".join(["vecdb-flat", *peers]), "--build", "nlist=8", "--search", "ef=10,40;nprobe=1,8", "--repeats", "1",
           "--allow-busy", "--output", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    lines = read_lines([out])
    assert {ln["target"] for ln in lines} == {"vecdb-flat", *peers}
    truth = ground_truth(np.load(data / "base.npy"), np.load(data / "query.npy"), 10, Metric.L2)[0]
    for ln in lines:
        assert recall_at_k(load_raw(ln)["ids"], truth, 10) == pytest.approx(ln["recall_at_10"])
        if ln["algorithm"] == "exact":
            assert ln["recall_at_10"] == 1.0, ln["target"]


def test_texmex_folder_without_truth_gets_it_computed_once_and_cached(tmp_path, monkeypatch):
    from vecdb.bench import cli_run
    from vecdb.data.formats import write_vecs

    folder = tmp_path / "sift-like"
    folder.mkdir()
    x = gaussian_mixture(820, 16, n_clusters=12, seed=5)
    write_vecs(folder / "s_base.fvecs", x[:800])
    write_vecs(folder / "s_query.fvecs", x[800:])
    out = tmp_path / "vecs.jsonl"
    assert _cli(folder, out, "vecdb-flat,vecdb-hnsw", "--build", "M=8;ef_construction=32") == 0
    cached = list((tmp_path / "cache" / "truth").glob("*-knn.npy"))
    assert len(cached) == 1
    exact = _exact_rows(x[:800], x[800:], np.arange(800), 10)
    assert recall_at_k(np.load(cached[0]), exact, 10) == 1.0

    def boom(*a: Any, **kw: Any) -> Any:
        raise AssertionError("ground truth recomputed despite the cache")

    monkeypatch.setattr(cli_run, "ground_truth", boom)
    assert _cli(folder, out, "vecdb-flat", "--k", "5") == 0  # a shallower k reads the same file
    lines = read_lines([out])
    assert [ln["k"] for ln in lines][-1] == 5 and lines[-1]["recall_at_5"] == 1.0
    assert lines[0]["dataset"]["name"] == "sift-like" and lines[0]["dataset"]["n_base"] == 800
