"""Writes tests/data/per_point_v1: a database in the per-point layout (one ``vec`` record per
point, before vector blocks), made by running this script with vecdb at commit 087c57d on the
import path: ``PYTHONPATH=<checkout of 087c57d> python tests/data/make_per_point_db.py OUT``.
OUT is a snapshot taken after writes newer than the index checkpoint, so opening it replays
per-point records too. ``expected.json`` holds what the collection must answer."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

import vecdb

DIM = 8


def main(out: Path) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((70, DIM)).astype(np.float32).round(3)
    state: dict[int, tuple[list[float], object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = vecdb.open(Path(tmp) / "db", map_size=1 << 20)
        col = db.create_collection("c", DIM, metric="l2", index="hnsw", index_params={"M": 8})
        col.create_tenant("t")

        def upsert(ids: list[int], rows: np.ndarray, pays: list[object], tenant: str | None = None) -> None:
            col.upsert(ids, rows, pays, tenant=tenant)
            state.update({i: (r.tolist(), p) for i, r, p in zip(ids, rows, pays)})

        upsert(list(range(30)), x[:30], [{"n": i, "tag": "a"} for i in range(30)])
        upsert(list(range(30, 50)), x[30:50], [{"n": i} if i % 3 else None for i in range(30, 50)], tenant="t")
        upsert(list(range(10, 20)), x[50:60], [None if i % 2 else {"n": -i} for i in range(10, 20)])
        col.delete([3, 4, 5, 44])
        for i in (3, 4, 5, 44):
            state.pop(i)
        db.close()   # checkpointed here
        db = vecdb.open(Path(tmp) / "db", map_size=1 << 20)
        col = db.get_collection("c")
        upsert([60, 61, 62, 63, 64, 1], x[60:66], [{"n": 100 + i} for i in range(6)])
        col.delete([2, 62])
        for i in (2, 62):
            state.pop(i)
        db.snapshot(out)   # holds the writes since the checkpoint in the log: opening replays them
        db.close()
    ids = sorted(state)
    (out / "expected.json").write_text(json.dumps({
        "ids": ids, "vectors": [state[i][0] for i in ids], "payloads": [state[i][1] for i in ids],
        "tenant_t": sorted(i for i in range(30, 50) if i in state)}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
