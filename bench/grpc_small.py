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
server: the child), which says more than QPS on a machine shared with other work. In the same
run (unless ``--no-floor``) it times the floor: a bare gRPC echo of a search's size on the
server shape ``vecdb serve`` uses (``vecdb.server.app.bare_server``: same thread pool, options
and limits) from a client shaped like vecdb's (same channel options, deadline and metadata per
call), alternating floor and vecdb phases, and prints vecdb ÷ floor ratios: what gRPC itself
costs on this machine, and what vecdb's own work adds to it.
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
    """Start a server from the importable vecdb (and, unless ``--no-floor``, the echo floor),
    load the points, then time each thread count: the floor's phase, then vecdb's."""
    import vecdb  # here, not at the top: with --src only the children import a tree
    from vecdb.server.process import start_server_process

    rng = np.random.default_rng(args.seed)
    base = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    queries = rng.standard_normal((1000, args.dim)).astype(np.float32)
    floor: list[dict[str, Any]] | None = None if args.no_floor else []
    with tempfile.TemporaryDirectory(prefix="vecdb-grpc-small-") as tmp:
        work = Path(tmp)
        server = start_server_process(work / "data", work / "server.log", args=["--no-metrics", *args.server_arg])
        echo = None if floor is None else EchoFloor(4 * args.dim + 40)
        try:
            deadline = time.monotonic() + 120  # the server compiles (or loads) its kernels in the background
            while not any(e.get("event") == "warm_up" for e in server.log_events()) and time.monotonic() < deadline:
                time.sleep(0.1)
            with vecdb.connect(server.address, timeout=60) as db:
                coll = db.create_collection("small", args.dim, metric=args.metric, index=args.index)
                coll.upsert(np.arange(args.n), base)
                coll.wait_indexed()   # acknowledged on commit: measure the index, not the staged scan
                pid = server.process.pid
                _phase(coll, queries, args.k, 1, args.warmup, pid)  # compile and warm every path first
                if echo is not None:
                    _phase(echo, queries, args.k, 1, args.warmup, echo.pid)
                phases = []
                for t in args.threads:  # alternating, so both see the same machine
                    if echo is not None and floor is not None:
                        floor.append(_phase(echo, queries, args.k, t, args.seconds, echo.pid))
                    phases.append(_phase(coll, queries, args.k, t, args.seconds, pid))
        finally:
            code = server.stop()
            if echo is not None:
                echo.close()
    return {"vecdb": str(Path(vecdb.__file__).resolve().parent.parent), "phases": phases, "server_exit": code,
            "floor": floor, "ratios": None if floor is None else _ratios(phases, floor)}


def _ratios(phases: list[dict[str, Any]], floor: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """vecdb against the floor per thread count: QPS and p99 ratios, and the CPU per call vecdb
    adds on each side (microseconds)."""
    out = []
    for mine, bare in zip(phases, floor, strict=True):
        out.append({"threads": mine["threads"],
                    "qps_ratio": round(mine["qps"] / bare["qps"], 3) if bare["qps"] else None,
                    "p99_ratio": round(mine["p99_ms"] / bare["p99_ms"], 3) if bare["p99_ms"] else None,
                    "client_cpu_added_us": round(mine["client_cpu_us"] - bare["client_cpu_us"], 1),
                    "server_cpu_added_us": round(mine["server_cpu_us"] - bare["server_cpu_us"], 1)})
    return out


def echo_server() -> None:
    """Serve an echo method on ``vecdb serve``'s server shape (``bare_server`` with the default
    config), on a free loopback port printed on stdout, until stdin closes."""
    import grpc

    from vecdb.server.config import ServerConfig

    try:
        from vecdb.server.app import bare_server
        server = bare_server(ServerConfig())
    except ImportError:  # a tree from before bare_server (--src): the thread-pool server it used
        from concurrent import futures

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=ServerConfig().workers))
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("floor.Echo", {"Echo": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(None)


class EchoFloor:
    """The floor: an ``echo_server`` child, and a client making the calls vecdb's sync client
    makes (same channel options, a deadline and metadata per call) with no vecdb code around them."""

    def __init__(self, size: int) -> None:
        import grpc

        self._child = subprocess.Popen([sys.executable, __file__, "--echo-server"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)
        assert self._child.stdout is not None
        self.pid = self._child.pid
        try:
            from vecdb.client import channel_options
            options = channel_options(64)
        except ImportError:
            options = []
        self._channel = grpc.insecure_channel(f"127.0.0.1:{int(self._child.stdout.readline())}", options)
        self._call = self._channel.unary_unary("/floor.Echo/Echo")
        self._payload = bytes(size)

    def search(self, q: np.ndarray, k: int) -> bytes:
        return self._call(self._payload, timeout=60, metadata=())  # type: ignore[no-any-return]

    def close(self) -> None:
        self._channel.close()
        self._child.communicate(timeout=30)  # closes its stdin: it stops


def _child(src: Path, argv: list[str]) -> dict[str, Any]:
    """Run this script's ``--one`` mode with ``src`` first on the import path."""
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run([sys.executable, __file__, "--one", *argv], env=env, cwd=src, check=True,
                         capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _line(label: str, ph: dict[str, Any]) -> None:
    print(f"{label}  threads={ph['threads']:>2}  qps={ph['qps']:>8.1f}  p50={ph['p50_ms']:6.3f} ms  "
          f"p99={ph['p99_ms']:6.3f} ms  cpu/call client={ph['client_cpu_us']:5.0f} us "
          f"server={ph['server_cpu_us']:5.0f} us  errors={ph['errors']}", flush=True)


def _show(label: str, result: dict[str, Any]) -> None:
    """One line per phase: the floor's (when measured), vecdb's, and their ratios."""
    floor = {ph["threads"]: ph for ph in result.get("floor") or []}
    ratios = {r["threads"]: r for r in result.get("ratios") or []}
    width = max(len(label), 5)
    for ph in result["phases"]:
        if ph["threads"] in floor:
            _line(f"{'floor':<{width}}", floor[ph["threads"]])
        _line(f"{label:<{width}}", ph)
        r = ratios.get(ph["threads"])
        if r is not None:
            print(f"{'ratio':<{width}}  threads={r['threads']:>2}  vecdb/floor qps={r['qps_ratio']:.2f}x  "
                  f"p99={r['p99_ratio']:.2f}x  cpu/call added client={r['client_cpu_added_us']:+.0f} us "
                  f"server={r['server_cpu_added_us']:+.0f} us", flush=True)


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
    p.add_argument("--no-floor", action="store_true",
                   help="skip the echo floor (a bare gRPC echo of a search's size on the same server shape)")
    p.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old commands
    p.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.echo_server:
        echo_server()
        return 0
    if args.one:
        print(json.dumps(run_one(args)))
        return 0
    if not args.src:
        result = run_one(args)
        _show("this", result)
        return 0 if all(ph["errors"] == 0 for ph in result["phases"]) else 1
    forwarded = [f"--n={args.n}", f"--dim={args.dim}", f"--index={args.index}", f"--metric={args.metric}",
                 f"--k={args.k}", f"--threads={','.join(map(str, args.threads))}", f"--seconds={args.seconds}",
                 f"--warmup={args.warmup}", f"--seed={args.seed}", *(f"--server-arg={a}" for a in args.server_arg),
                 *(["--no-floor"] if args.no_floor else [])]
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
