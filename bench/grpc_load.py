"""Load test of the gRPC server on loopback, against a real ``python -m vecdb.server`` process.

1. Loads the same points into the server and into an embedded database in this process.
2. Compares single-thread gRPC and embedded search throughput for a batch of 1 and of 100
   queries per call (same data; alternating rounds, best round of each counts).
3. For each thread count (1, 4, 16 by default): that many search threads while one writer
   upserts batches of 100 new points; reports search QPS and p50/p99 latency, counts
   errors (must be 0) and checks every write the server acknowledged is readable after.

Traffic goes only to 127.0.0.1; every loop is bounded in time. Exact commands: bench/grpc.sh.

    python bench/grpc_load.py --n 20000 --dim 64 --seconds 10 --out bench/results/grpc_load.json
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

import vecdb
from vecdb.api import CollectionAPI
from vecdb.bench import machine
from vecdb.bench.loadgen import run_load
from vecdb.bench.machine import Watch
from vecdb.errors import VecdbError
from vecdb.server.process import start_server_process

WRITE_BATCH = 100
FIRST_WRITE_ID = 10_000_000


@dataclass
class PhaseResult:
    """Figures of one load phase."""

    threads: int
    seconds: float
    searches: int
    qps: float
    p50_ms: float
    p99_ms: float
    errors: int
    writes_acked: int
    writes_readable: int


def write_loop(coll: CollectionAPI, dim: int, first_id: int, stop: threading.Event, acked: list[int],
               errors: list[BaseException], pause: float = 0.0) -> None:
    """Upsert batches of new points until ``stop``; remember the acknowledged ids."""
    rng = np.random.default_rng(first_id)
    next_id = first_id
    while not stop.is_set():
        ids = np.arange(next_id, next_id + WRITE_BATCH)
        try:
            coll.upsert(ids, rng.standard_normal((WRITE_BATCH, dim)).astype(np.float32),
                        [{"w": int(i)} for i in ids])
        except Exception as exc:  # counted and reported
            errors.append(exc)
            continue
        acked.extend(ids.tolist())
        next_id += WRITE_BATCH
        if pause:
            stop.wait(pause)


def readable(coll: CollectionAPI, ids: list[int]) -> int:
    """How many of ``ids`` ``get`` returns with their payload intact."""
    found = 0
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        got = coll.get(chunk)
        found += sum(1 for i, p in zip(got.ids.tolist(), got.payloads, strict=True) if p == {"w": i})
    return found


def run_phase(coll: CollectionAPI, queries: np.ndarray, threads: int, seconds: float, k: int,
              params: dict[str, Any], first_write_id: int, write_pause: float = 0.0) -> PhaseResult:
    """``threads`` searchers plus one writer for ``seconds``; then verify the writes."""
    acked: list[int] = []

    def writer(stop: threading.Event, errors: list[BaseException]) -> None:
        write_loop(coll, queries.shape[1], first_write_id, stop, acked, errors, write_pause)

    run = run_load(functools.partial(coll.search, k=k, params=params), queries, threads, seconds, [writer])
    return PhaseResult(
        threads=threads, seconds=round(run.seconds, 2), searches=run.calls, qps=round(run.qps, 1),
        p50_ms=run.percentile_ms(50), p99_ms=run.percentile_ms(99),
        errors=len(run.errors), writes_acked=len(acked), writes_readable=readable(coll, acked),
    )


def throughput(search: Callable[[np.ndarray], object], queries: np.ndarray, batch: int, seconds: float) -> float:
    """Queries per second of back-to-back ``search`` calls of ``batch`` queries each."""
    done = 0
    i = 0
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        rows = np.take(queries, range(i, i + batch), axis=0, mode="wrap")
        search(rows)
        done += batch
        i += batch
    return done / (time.perf_counter() - start)


def load_points(coll: CollectionAPI, base: np.ndarray) -> None:
    """Upsert ``base`` in batches of 5000 under ids 0..n-1, then wait until it is indexed."""
    for start in range(0, len(base), 5000):
        coll.upsert(np.arange(start, min(start + 5000, len(base))), base[start:start + 5000])
    coll.wait_indexed()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="points loaded before the run")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--index", default="hnsw")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--ef", type=int, default=64, help="HNSW ef for searches (ignored by other indexes)")
    p.add_argument("--threads", default="1,4,16")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each load phase")
    p.add_argument("--ratio-seconds", type=float, default=3.0, help="length of each gRPC/embedded throughput round")
    p.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds per backend (best counts)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds to wait after loading before timing")
    p.add_argument("--write-pause", type=float, default=0.0,
                   help="seconds the writer sleeps between upserts (0: write back to back, the worst case)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-busy", action="store_true", help="run on a busy machine (the result is flagged)")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    try:
        with machine.bench_lock():
            start_check = machine.check_quiet(args.allow_busy)
            prov = machine.provenance(None if argv is None else ["bench/grpc_load.py", *argv])
            return _run(args, start_check, prov)
    except VecdbError as exc:
        print(f"grpc_load.py: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, start_check: dict[str, Any], prov: dict[str, Any]) -> int:
    """The load test proper (under the benchmark lock); the server process counts as ours."""
    rng = np.random.default_rng(args.seed)
    base = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    queries = rng.standard_normal((1000, args.dim)).astype(np.float32)
    params = {"ef": args.ef} if args.index == "hnsw" else {}
    work = Path(tempfile.mkdtemp(prefix="vecdb-grpc-load-"))
    server = start_server_process(work / "server-data", work / "server.log", args=["--no-metrics"])
    report: dict[str, Any] = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                              "provenance": prov, "start_check": start_check}
    try:
        with vecdb.connect(server.address, timeout=120) as remote, vecdb.open(str(work / "embedded-data")) as local:
            colls = {}
            for name, db in (("grpc", remote), ("embedded", local)):
                colls[name] = db.create_collection("load", args.dim, metric="l2", index=args.index)
                t0 = time.perf_counter()
                load_points(colls[name], base)
                print(f"{name}: loaded {args.n} x {args.dim} ({args.index}) in {time.perf_counter() - t0:.1f} s", flush=True)
                for batch in (1, 100):  # compile and warm every code path before timing it
                    throughput(lambda q, c=colls[name]: c.search(q, k=args.k, params=params), queries, batch, 1.0)
            time.sleep(args.settle)  # let background index checkpoints after the load finish
            ratios = {}
            for batch in (1, 100):  # same data in both; rounds alternate, best round counts
                watch = Watch()
                best = {"grpc": 0.0, "embedded": 0.0}
                for _ in range(args.rounds):
                    for name, c in colls.items():
                        qps = throughput(lambda q, c=c: c.search(q, k=args.k, params=params), queries, batch,
                                         args.ratio_seconds)
                        best[name] = max(best[name], qps)
                ratios[f"batch_{batch}"] = {"grpc_qps": round(best["grpc"], 1), "embedded_qps": round(best["embedded"], 1),
                                            "ratio": round(best["grpc"] / best["embedded"], 3),
                                            "quiet": asdict(watch.stop())}
                print(f"batch={batch:>3}  grpc={best['grpc']:>9.1f} q/s  embedded={best['embedded']:>9.1f} q/s  "
                      f"ratio={best['grpc'] / best['embedded']:.3f}", flush=True)
            phases = []
            for i, threads in enumerate(int(t) for t in args.threads.split(",")):
                watch = Watch()
                res = run_phase(colls["grpc"], queries, threads, args.seconds, args.k, params,
                                FIRST_WRITE_ID + i * 10_000_000, args.write_pause)
                phases.append({**asdict(res), "quiet": asdict(watch.stop())})
                print(f"threads={res.threads:>2}  qps={res.qps:>8.1f}  p50={res.p50_ms:7.2f} ms  p99={res.p99_ms:7.2f} ms  "
                      f"errors={res.errors}  writes acked={res.writes_acked} readable={res.writes_readable}", flush=True)
            report["phases"] = phases
            report["ratio"] = ratios
    finally:
        code = server.stop()
    report["server_exit_code"] = code
    ok = code == 0 and all(ph["errors"] == 0 and ph["writes_acked"] == ph["writes_readable"]
                           for ph in report.get("phases", []))
    report["ok"] = ok
    busy = start_check["busy"] or any(ph["quiet"]["busy"] for ph in report.get("phases", [])) or any(
        r["quiet"]["busy"] for r in report.get("ratio", {}).values())
    report["busy"] = {"flagged": busy, "allowed": args.allow_busy}
    if busy:
        print("WARNING: BUSY MACHINE: other processes used more than a quarter of the CPUs; figures not comparable")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    print("OK" if ok else "FAILED: errors, unreadable acknowledged writes or an unclean server exit")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
