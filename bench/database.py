"""Benchmark of the embedded database (``vecdb.open``) and of the embedded peers.

``own``    vecdb alone on synthetic clustered data (default 1M x 128, l2): bulk upsert
           throughput, close/checkpoint and reopen time, then single-query QPS and recall@10 over
           an ``ef`` sweep without a filter and with payload filters of 1% / 10% / 50%
           (``{"bucket": {"lt": s}}``), each filter under vecdb's own choice (filter_mode=auto)
           and graph-only (filter_mode=graph). Every swept ef must move recall.
``peers``  vecdb's database and the embedded peers through the ``vecdb bench`` harness, like
           with like: exact against exact (db-vecdb-flat, qdrant-local, lancedb without an
           index, milvus-lite-flat) and indexed against indexed (db-vecdb-hnsw, chroma,
           lancedb-ivf-hnsw-sq, milvus-lite-ivf); one query per call, targets interleaved per
           setting, every swept knob checked to move recall. Run it with bench/.venv-peers's
           python (``bash bench/peers-venv.sh`` creates it).

Both take the benchmark lock, refuse a busy machine (``--allow-busy`` flags instead), repeat
each setting (``--repeats``, best pass reported unless ``--stat median``) and record the
provenance (commit, dirty tree, versions, machine, load, command line) in their JSON. This script
only parses the command line: the workload, its timing and recall (``vecdb.bench.embedded``,
``vecdb.bench.measure``) and the peers (``vecdb.bench.adapters.peers``) live in the harness.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from vecdb.bench import machine
from vecdb.bench.checks import DeadKnobError
from vecdb.bench.embedded import ANN_PEERS, EXACT_PEERS, PEER_GRID, OwnConfig, peers_argv, run_own
from vecdb.errors import VecdbError

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench.database")


def run_peers(args: argparse.Namespace) -> int:
    """The peer comparison through the harness (its own lock, checks and provenance)."""
    from vecdb.cli import main as vecdb_main

    return vecdb_main(peers_argv(args.dataset, args.out, targets=args.targets, grid=args.grid, M=args.M,
                                 ef_construction=args.ef_construction, nlist=args.nlist, repeats=args.repeats,
                                 stat=args.stat, max_queries=args.max_queries, allow_busy=args.allow_busy))


def own_config(args: argparse.Namespace) -> OwnConfig:
    """The ``own`` command line as the workload's settings."""
    fields = {f for f in OwnConfig.__dataclass_fields__}
    return OwnConfig(**{k: v for k, v in vars(args).items() if k in fields})


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    own = sub.add_parser("own", help="1M x 128 synthetic: upsert, reopen, QPS with/without filters")
    own.add_argument("--n", type=int, default=1_000_000)
    own.add_argument("--dim", type=int, default=128)
    own.add_argument("--index", default="hnsw")
    own.add_argument("--ef", default="16,32,64,128,256")
    own.add_argument("--filter-modes", default="auto,graph", help="filter_mode values timed for each filter")
    own.add_argument("--batch", type=int, default=10_000)
    own.add_argument("--queries", type=int, default=1000, help="unfiltered queries")
    own.add_argument("--filter-queries", type=int, default=200, help="queries per filtered setting")
    own.add_argument("--keep", action="store_true", help="keep the database folder")
    own.add_argument("--no-hnswlib", dest="hnswlib", action="store_false",
                     help="skip hnswlib on the same data (built and queried after vecdb)")
    own.add_argument("--workdir", default=str(ROOT / ".bench-work"))
    peers = sub.add_parser("peers", help="vecdb's database against the embedded peers (bench/.venv-peers)")
    peers.add_argument("--dataset", default="arxiv-minilm-384")
    peers.add_argument("--targets", default="", help=f"default: {EXACT_PEERS},{ANN_PEERS}")
    peers.add_argument("--grid", default=PEER_GRID, help="shared search grid (ef, nprobe, nprobes)")
    peers.add_argument("--max-queries", type=int, default=500)
    peers.add_argument("--nlist", type=int, default=256, help="Milvus IVF_FLAT lists")
    for p in (own, peers):
        p.add_argument("--M", type=int, default=16)
        p.add_argument("--ef-construction", type=int, default=100)
        p.add_argument("--repeats", type=int, default=3)
        p.add_argument("--stat", choices=("best", "median"), default="best")
        p.add_argument("--allow-busy", action="store_true", help="run on a busy machine (flagged in the JSON)")
        p.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "peers":
            return run_peers(args)
        with machine.bench_lock():
            start_check = machine.check_quiet(args.allow_busy)
            prov = machine.provenance([sys.executable, *sys.argv] if argv is None else ["bench/database.py", *argv])
            result = run_own(own_config(args))
    except VecdbError as exc:
        print(f"database.py: error: {exc}", file=sys.stderr)
        return 2
    result["provenance"], result["start_check"] = prov, start_check
    result["valid"] = result["knob_check"]["ok"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    log.info("wrote %s", args.out)
    if result["busy"]["flagged"] or start_check["busy"]:
        log.warning("WARNING: BUSY MACHINE: other processes used more than a quarter of the CPUs; figures not comparable")
    if not result["knob_check"]["ok"]:
        print(f"database.py: error: {DeadKnobError(result['knob_check']['dead'])}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
