"""The benchmark harness end to end on the bundled dataset: tables, JSON and sane numbers."""
from __future__ import annotations

import json

import pytest

from vecdb.cli import main, parse_grid, parse_params
from vecdb.errors import InvalidArgumentError


def test_bench_cli_runs_flat_against_faiss_and_saves_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["bench", "--dataset", "digits-64-euclidean", "--targets", "vecdb-flat,faiss-flat",
                 "--threads", "1", "--batch", "1,50", "--filter", "0.1", "--max-queries", "30", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "Best QPS at recall@10" in text and "faiss-flat" in text
    record = json.loads(out.read_text())
    assert {b["target"] for b in record["builds"]} == {"vecdb-flat", "faiss-flat"}
    for run in record["runs"]:
        assert run["recall_at_10"] == pytest.approx(1.0)      # both are exact
        assert run["duplicate_rows"] == 0 and run["qps"] > 0
    assert {r["selectivity"] for r in record["runs"]} == {None, 0.1}
    flat = [s for s in record["summary"] if s["target"] == "faiss-flat"]
    assert all(s["ratio_vs_baseline"] == pytest.approx(1.0) for s in flat)


def test_bench_rejects_unknown_target(tmp_path, capsys):
    assert main(["bench", "--dataset", "digits-64-euclidean", "--targets", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown target" in capsys.readouterr().err


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
