"""Small-request gRPC speed on loopback: one query per call against a `vecdb serve` child.

A 2,000 x 32 collection (HNSW by default); one client thread doing one query per call, then
16 client threads together; prints QPS, p50 and p99 for each. Each phase is bounded in time
(a whole run takes well under a minute on 2 cores).

To compare two source trees in one run (e.g. before/after a change), give them with
``--src``: each is run in its own child process (``PYTHONPATH=<src>``, its own server), in
alternating rounds, and the ratios of the last tree to the first are printed. An old tree can
be exported without touching the working tree: ``git archive HEAD | tar -x -C /tmp/old``.

    python bench/grpc_small.py                          # this checkout
    python bench/grpc_small.py --src /tmp/old --src .   # before/after, alternating rounds

Besides QPS and latency it prints the CPU each side spent per call (client: this process,
server: the child), which says more than QPS on a machine shared with other work. With
``--floor`` it first times a bare gRPC echo of a search's size against a plain gRPC server
(same client loop, vecdb's default worker count): the cost of gRPC itself on this machine.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np


def _load_generator() -> ModuleType:
    """``vecdb/bench/loadgen.py`` of this script's own checkout, loaded by path: with ``--src``
    the vecdb on the import path is the tree being measured, which may predate it."""
    path = Path(__file__).resolve().parents[1] / "vecdb" / "bench" / "loadgen.py"
    spec = importlib.util.spec_from_file_location("_grpc_small_loadgen", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


loadgen = _load_generator()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _phase(coll: Any, queries: np.ndarray, k: int, threads: int, seconds: float, server_pid: int) -> dict[str, Any]:
    """``threads`` client threads searching for ``seconds``: QPS, latency percentiles and the
    CPU each side spent per call (client: this process; server: the child)."""
    cpu_client, cpu_server = time.process_time(), _cpu_seconds(server_pid)
    run = loadgen.run_load(functools.partial(coll.search, k=k), queries, threads, seconds)
    cpu_client, cpu_server = time.process_time() - cpu_client, _cpu_seconds(server_pid) - cpu_server
    return {"threads": threads, "calls": run.calls, "qps": round(run.qps, 1),
            "p50_ms": run.percentile_ms(50) if run.calls else None,
            "p99_ms": run.percentile_ms(99) if run.calls else None,
            "client_cpu_us": round(cpu_client / max(run.calls, 1) * 1e6, 1),
            "server_cpu_us": round(cpu_server / max(run.calls, 1) * 1e6, 1),
            "errors": len(run.errors), "first_error": repr(run.errors[0]) if run.errors else None}


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Start a server from the importable vecdb, load the points, time each thread count."""
    import vecdb  # here, not at the top: with --src only the children import a tree
    from vecdb.server.process import start_server_process

    rng = np.random.default_rng(args.seed)
    base = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    queries = rng.standard_normal((1000, args.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="vecdb-grpc-small-") as tmp:
        work = Path(tmp)
        server = start_server_process(work / "data", work / "server.log", args=["--no-metrics", *args.server_arg])
        try:
            deadline = time.monotonic() + 120  # the server compiles (or loads) its kernels in the background
            while not any(e.get("event") == "warm_up" for e in server.log_events()) and time.monotonic() < deadline:
                time.sleep(0.1)
            with vecdb.connect(server.address, timeout=60) as db:
                coll = db.create_collection("small", args.dim, metric=args.metric, index=args.index)
                coll.upsert(np.arange(args.n), base)
                pid = server.process.pid
                _phase(coll, queries, args.k, 1, args.warmup, pid)  # compile and warm every path first
                phases = [_phase(coll, queries, args.k, t, args.seconds, pid) for t in args.threads]
        finally:
            code = server.stop()
    return {"vecdb": str(Path(vecdb.__file__).resolve().parent.parent), "phases": phases, "server_exit": code}


class _Echo:
    """The floor: a bare gRPC unary call of a search's size to a server that echoes it."""

    def __init__(self, address: str, size: int) -> None:
        import grpc

        self._channel = grpc.insecure_channel(address)
        self._call = self._channel.unary_unary("/floor.Echo/Echo")
        self._payload = bytes(size)

    def search(self, q: np.ndarray, k: int) -> bytes:
        return self._call(self._payload, timeout=60)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._channel.close()


def echo_server(workers: int) -> None:
    """Serve the echo method on a free loopback port (printed on stdout) until stdin closes."""
    from concurrent import futures

    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("floor.Echo", {"Echo": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(None)


def run_floor(args: argparse.Namespace) -> dict[str, Any]:
    """The same phases against ``echo_server`` (gRPC's own cost, with vecdb's default workers)."""
    from vecdb.server.config import default_workers

    child = subprocess.Popen([sys.executable, __file__, "--echo-server", str(default_workers())],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        echo = _Echo(f"127.0.0.1:{int(child.stdout.readline())}", 4 * args.dim + 40)
        try:
            queries = np.zeros((1, args.dim), np.float32)
            _phase(echo, queries, args.k, 1, args.warmup, child.pid)
            phases = [_phase(echo, queries, args.k, t, args.seconds, child.pid) for t in args.threads]
        finally:
            echo.close()
    finally:
        child.communicate(timeout=30)  # closes its stdin: it stops
    return {"vecdb": "gRPC echo floor", "phases": phases, "server_exit": child.returncode}


def _child(src: Path, argv: list[str]) -> dict[str, Any]:
    """Run this script's ``--one`` mode with ``src`` first on the import path."""
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run([sys.executable, __file__, "--one", *argv], env=env, cwd=src, check=True,
                         capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _show(label: str, result: dict[str, Any]) -> None:
    """One line per phase."""
    for ph in result["phases"]:
        print(f"{label}  threads={ph['threads']:>2}  qps={ph['qps']:>8.1f}  p50={ph['p50_ms']:6.3f} ms  "
              f"p99={ph['p99_ms']:6.3f} ms  cpu/call client={ph['client_cpu_us']:5.0f} us "
              f"server={ph['server_cpu_us']:5.0f} us  errors={ph['errors']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--index", default="hnsw")
    p.add_argument("--metric", default="l2")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=lambda s: [int(t) for t in s.split(",")], default=[1, 16])
    p.add_argument("--seconds", type=float, default=5.0, help="length of each timed phase")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--server-arg", action="append", default=[], help="extra `vecdb serve` flag (repeatable)")
    p.add_argument("--src", type=Path, action="append", default=[], help="source tree to run (repeatable)")
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds over the --src trees")
    p.add_argument("--one", action="store_true",
                   help="run the importable vecdb once and print the figures as one JSON line (vecdb.bench.contract)")
    p.add_argument("--floor", action="store_true",
                   help="also time a bare gRPC echo of the same size (what gRPC alone costs here)")
    p.add_argument("--echo-server", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.echo_server is not None:
        echo_server(args.echo_server)
        return 0
    if args.one:
        print(json.dumps(run_one(args)))
        return 0
    if args.floor:
        _show("floor", run_floor(args))
    if not args.src:
        result = run_one(args)
        _show("this", result)
        return 0 if all(ph["errors"] == 0 for ph in result["phases"]) else 1
    forwarded = [f"--n={args.n}", f"--dim={args.dim}", f"--index={args.index}", f"--metric={args.metric}",
                 f"--k={args.k}", f"--threads={','.join(map(str, args.threads))}", f"--seconds={args.seconds}",
                 f"--warmup={args.warmup}", f"--seed={args.seed}", *(f"--server-arg={a}" for a in args.server_arg)]
    best: dict[Path, dict[int, dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for src in args.src:
            result = _child(src.resolve(), forwarded)
            _show(str(src), result)
            for ph in result["phases"]:
                kept = best.setdefault(src, {}).get(ph["threads"])
                if kept is None or ph["qps"] > kept["qps"]:
                    best[src][ph["threads"]] = ph
    first, last = args.src[0], args.src[-1]
    for t in args.threads:
        a, b = best[first][t], best[last][t]
        print(f"threads={t:>2}  best qps {a['qps']:.1f} -> {b['qps']:.1f} ({b['qps'] / a['qps']:.2f}x)  "
              f"p99 {a['p99_ms']:.3f} -> {b['p99_ms']:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
