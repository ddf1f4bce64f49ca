"""Routers in child processes for the cluster tests, on the tests' local Ray.

``start_router``: a router that writes five acknowledged batches of ten ids, then makes the
cluster's writer stop between two replicas' commits of a sixth (ids 100-109) and waits
there for the test to kill the writer. ``Router``: a router answering one command a line
(create, drop, upsert, delete, count, has, list, sync, stream) for the tests of several
routers writing at once. Vectors are row i of the tests' own seeded matrix."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import ray

CRASH = textwrap.dedent("""
    import sys
    import numpy as np
    import ray
    from vecdb.cluster import connect

    X = np.random.default_rng(int(sys.argv[3])).standard_normal((int(sys.argv[4]), 8)).astype(np.float32)
    db = connect(sys.argv[1], root=sys.argv[2], shards=1, replicas=2)
    coll = db.create_collection("crash", 8, metric="l2", index="flat")
    print("ready", flush=True)
    for b in range(5):
        ids = list(range(10 * b, 10 * b + 10))
        coll.upsert(ids, X[ids])
        print("acked", *ids, flush=True)
    ray.get(db._writer.handle().hold_between_replicas.remote())
    print("holding", db._writer.name, flush=True)
    coll.upsert(list(range(100, 110)), X[100:110])   # held in the writer until it is killed
    print("acked", *range(100, 110), flush=True)
    sys.stdin.read()
""")

ROUTER = textwrap.dedent("""
    import sys
    import numpy as np
    from vecdb.cluster import connect

    X = np.random.default_rng(int(sys.argv[3])).standard_normal((int(sys.argv[4]), 8)).astype(np.float32)
    db = connect(sys.argv[1], root=sys.argv[2])
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, *a = line.split()
        try:
            out = ""
            if cmd == "exit":
                break
            if cmd == "create":
                db.create_collection(a[0], 8, metric="l2", index="flat", multi_tenant=a[1:] == ["mt"])
            elif cmd == "drop":
                db.drop_collection(a[0])
            elif cmd == "list":
                out = " ".join(i.name for i in db.list_collections())
            elif cmd == "sync":   # a whole refresh of this router's view, begun now
                out = str(db._refresher.wait_round(60))
            else:
                coll = db.get_collection(a[0])
                ids = list(range(int(a[1]), int(a[2]))) if len(a) > 2 else []
                if cmd == "upsert":
                    coll.upsert(ids, X[ids])
                elif cmd == "delete":
                    out = str(coll.delete(ids))
                elif cmd == "count":
                    out = str(coll.count())
                elif cmd == "has":   # every id, with its vector
                    out = str(bool(np.array_equal(coll.get(ids).vectors, X[ids])))
                elif cmd == "stream":   # batches of 5 ids from a[1] up to a[2], each acknowledgement printed
                    for lo in range(int(a[1]), int(a[2]), 5):
                        coll.upsert(list(range(lo, lo + 5)), X[lo:lo + 5])
                        print("acked", *range(lo, lo + 5), flush=True)
            print("ok", out, flush=True)
        except Exception as exc:
            print("err", type(exc).__name__, str(exc).replace(chr(10), " ")[:300], flush=True)
    db.close()
""")


def _spawn(tmp_path: Path, script: str, text: str, root: Path, seed: int, rows: int) -> subprocess.Popen[str]:
    path = tmp_path / script
    path.write_text(text)
    gcs = ray.get_runtime_context().gcs_address
    return subprocess.Popen([sys.executable, str(path), gcs, str(root), str(seed), str(rows)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)


def start_router(tmp_path: Path, root: Path, seed: int, rows: int) -> subprocess.Popen[str]:
    """The crash child on the test's local Ray, writing collection "crash" under ``root``
    with the 8-d vectors of ``np.random.default_rng(seed)`` (``rows`` rows)."""
    return _spawn(tmp_path, "crash_router.py", CRASH, root, seed, rows)


def until_paused(proc: subprocess.Popen[str], on_ready: Callable[[], None] | None = None) -> tuple[list[int], Any]:
    """Read the crash child's lines until the writer holds between two replicas' commits:
    the ids the child had acknowledged, and the writer actor. ``on_ready`` runs once its
    collection exists."""
    acked: list[int] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        word, *rest = line.split() or [""]
        if word == "ready" and on_ready is not None:
            on_ready()
        if word == "acked":
            acked += [int(v) for v in rest]
        if word == "holding":
            writer = ray.get_actor(rest[0], namespace="vecdb")
            for _ in range(1200):   # bounded: the held write reaches the writer
                if ray.get(writer.holding.remote()):
                    return acked, writer
                time.sleep(0.05)
            raise AssertionError("the writer never held the write")
    raise AssertionError(f"the router exited ({proc.wait()}) before its pause point")


class Router:
    """A router in a child process, one command a line (see the module docs)."""

    def __init__(self, tmp_path: Path, root: Path, seed: int, rows: int) -> None:
        self.proc = _spawn(tmp_path, "router.py", ROUTER, root, seed, rows)
        self.acked: list[int] = []
        line = self._line()
        assert line == "ready", line

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the child router exited ({self.proc.wait()})")
        return line.strip()

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def answer(self, on_acked: Callable[[list[int]], None] | None = None) -> str:
        """The answer to the command sent last ("" when it had none); its error as
        AssertionError. Ids acknowledged meanwhile (``stream``) go to ``acked`` and ``on_acked``."""
        while True:
            word, _, rest = self._line().partition(" ")
            if word == "acked":
                ids = [int(v) for v in rest.split()]
                self.acked += ids
                if on_acked is not None:
                    on_acked(ids)
            elif word == "ok":
                return rest
            else:
                raise ChildError(rest)

    def ask(self, command: str) -> str:
        self.send(command)
        return self.answer()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("exit")
                self.proc.wait(60)
            except Exception:  # noqa: BLE001 - killed below
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class ChildError(AssertionError):
    """A command the child router answered with an error: "<class name> <message>"."""
