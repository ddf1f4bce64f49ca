"""Result files of ``vecdb bench run``: JSON lines, one per measured setting, each written and
flushed whole as soon as the setting finishes (an interrupted run leaves valid lines), with
the raw per-call latencies and result ids in a side ``.npz`` per line so every metric can be
recomputed; plus the dataset fingerprint and a reader that tolerates a torn last line."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import IO, Any, Iterable

import numpy as np

from vecdb.data import Dataset
from vecdb.errors import DataLossError, InvalidArgumentError, NotFoundError

log = logging.getLogger(__name__)

SCHEMA = "vecdb-bench-run/1"


def array_sha256(x: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and C-order bytes."""
    h = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
    h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def fingerprint(ds: Dataset, queries: np.ndarray) -> dict[str, Any]:
    """What identifies a dataset across runs: name, metric, shapes and hashes of the base rows
    and of the queries actually searched."""
    return {"name": ds.name, "metric": ds.metric.value, "n_base": int(len(ds.base)), "dim": ds.dim,
            "n_queries": int(len(queries)), "base_sha256": array_sha256(ds.base),
            "queries_sha256": array_sha256(queries)}


def raw_dir(output: Path) -> Path:
    """The folder beside ``output`` holding its side arrays: ``results.jsonl`` -> ``results.raw``."""
    return output.with_name(output.stem + ".raw")


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write an .npz atomically (a temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


class ResultWriter:
    """Appends result lines to ``path``; each line's raw arrays go to ``<stem>.raw/`` first,
    and the run's ground truth once (``truth_path``). Nothing is created before the first line."""

    def __init__(self, path: Path, run_id: str, truth: np.ndarray) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self.raw = raw_dir(self.path)
        self.truth = np.asarray(truth, np.int64)
        #: where lines find the ground truth, relative to the result file's folder
        self.truth_path = f"{self.raw.name}/{run_id}-truth.npz"
        self._file: IO[str] | None = None
        self.lines = 0
        #: truth files of the workloads beyond the run's own truth, by workload label
        self._truths: dict[str, str] = {}

    def _open(self) -> IO[str]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _save_npz(self.path.parent / self.truth_path, ids=self.truth)
            self._file = open(self.path, "a", encoding="utf-8")
        return self._file

    def _truth_file(self, label: str, truth: np.ndarray) -> str:
        """The relative path of workload ``label``'s truth, saved on first use."""
        rel = self._truths.get(label)
        if rel is None:
            rel = f"{self.raw.name}/{self.run_id}-truth-{len(self._truths) + 1:03d}.npz"
            _save_npz(self.path.parent / rel, ids=np.asarray(truth, np.int64))
            self._truths[label] = rel
        return rel

    def write(self, line: dict[str, Any], ids: np.ndarray, latencies_s: np.ndarray,
              truth: tuple[str, np.ndarray] | None = None, extra: dict[str, np.ndarray] | None = None) -> None:
        """Save the raw arrays, then the line (one write, flushed and fsynced). ``truth``: the
        (workload label, truth) the line is scored against when it is not the run's own;
        ``extra``: more arrays for the line's own file (one named ``truth`` is the line's own
        truth, e.g. the per-query truths of a churn line)."""
        out = self._open()
        rel = f"{self.raw.name}/{self.run_id}-{self.lines:05d}.npz"
        _save_npz(self.path.parent / rel, ids=np.asarray(ids, np.int64),
                  latencies_s=np.asarray(latencies_s, np.float64), **(extra or {}))
        own = extra is not None and "truth" in extra
        truth_rel = rel if own else self.truth_path if truth is None else self._truth_file(*truth)
        line = {**line, "raw": {**line.get("raw", {}), "path": rel, "truth": truth_rel}}
        out.write(json.dumps(line, default=_jsonable, separators=(",", ":")) + "\n")
        out.flush()
        os.fsync(out.fileno())
        self.lines += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def read_lines(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """All result lines of the given files, each tagged with ``_file``. A torn last line (a
    killed writer) is skipped with a warning; a bad line elsewhere is DataLossError."""
    out: list[dict[str, Any]] = []
    for p in map(Path, paths):
        if not p.is_file():
            raise NotFoundError(f"no result file {p}")
        text = p.read_text(encoding="utf-8")
        rows = text.split("\n")
        for i, row in enumerate(rows):
            if not row.strip():
                continue
            try:
                line = json.loads(row)
            except ValueError:
                if i == len(rows) - 1:  # no newline after it: the writer was stopped mid-line
                    log.warning("%s: skipping a torn last line", p)
                    continue
                raise DataLossError(f"{p}:{i + 1}: not a JSON line") from None
            if not isinstance(line, dict) or line.get("schema") != SCHEMA:
                raise InvalidArgumentError(f"{p}:{i + 1}: not a `vecdb bench run` result line (schema {SCHEMA})")
            line["_file"] = str(p)
            out.append(line)
    return out


def load_raw(line: dict[str, Any]) -> dict[str, np.ndarray]:
    """The raw arrays of a line read by ``read_lines``: ``ids``, ``latencies_s``, ``truth``, and
    any others the line saved (a churn line: its write log and query times, see churn.py)."""
    base = Path(line["_file"]).parent
    try:
        with np.load(base / line["raw"]["path"]) as got:
            arrays = {name: got[name] for name in got.files}
        if line["raw"]["truth"] != line["raw"]["path"]:
            with np.load(base / line["raw"]["truth"]) as got:
                arrays["truth"] = got["ids"]
        missing = {"ids", "latencies_s", "truth"} - set(arrays)
        if missing:
            raise KeyError(f"no array {sorted(missing)}")
    except (OSError, KeyError, ValueError) as exc:
        raise DataLossError(f"{line['_file']}: raw arrays of line {line.get('line')} unreadable: {exc}") from None
    return arrays
