"""A router in a child process for the cluster crash tests: it writes five acknowledged
batches of ten ids, then stops between two replicas' commits of a sixth (ids 100-109) and
waits there to be SIGKILLed. Its vectors are row i of the tests' own seeded matrix."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import ray

SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    from vecdb.cluster import connect

    X = np.random.default_rng(int(sys.argv[3])).standard_normal((int(sys.argv[4]), 8)).astype(np.float32)
    db = connect(sys.argv[1], root=sys.argv[2], shards=1, replicas=2)
    coll = db.create_collection("crash", 8, metric="l2", index="flat")
    print("ready", flush=True)
    for b in range(5):
        ids = list(range(10 * b, 10 * b + 10))
        coll.upsert(ids, X[ids])
        print("acked", *ids, flush=True)

    def hold(shard, n):   # the first replica committed write n; the router dies before the second does
        print("paused", shard, n, flush=True)
        time.sleep(3600)

    for group in db._groups_now():
        group.after_first_commit = hold
    coll.upsert(list(range(100, 110)), X[100:110])
""")


def start_router(tmp_path: Path, root: Path, seed: int, rows: int) -> subprocess.Popen[str]:
    """The child router on the test's local Ray, writing collection "crash" under ``root``
    with the 8-d vectors of ``np.random.default_rng(seed)`` (``rows`` rows)."""
    script = tmp_path / "router.py"
    script.write_text(SCRIPT)
    gcs = ray.get_runtime_context().gcs_address
    return subprocess.Popen([sys.executable, str(script), gcs, str(root), str(seed), str(rows)],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)


def until_paused(proc: subprocess.Popen[str], on_ready: Callable[[], None] | None = None) -> list[int]:
    """Read the child's lines until it holds between the two commits; the ids it had
    acknowledged. ``on_ready`` runs once its collection exists."""
    acked: list[int] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        word, *rest = line.split() or [""]
        if word == "ready" and on_ready is not None:
            on_ready()
        if word == "acked":
            acked += [int(v) for v in rest]
        if word == "paused":
            return acked
    raise AssertionError(f"the router exited ({proc.wait()}) before its pause point")
