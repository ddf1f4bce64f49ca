"""Issue 11 ("Index contract v2") "Done when" benchmark: every figure of the list, one part after
another, vecdb beside hnswlib / faiss in the same run, ratios printed beside the goals.

Expected duration on the 2-core machine, quiet (estimated from the sizes and the 495b785 figures,
not yet measured; add ~30 % margin):
  a  HNSW vs hnswlib, 1 thread, 1 query/call, ef 10-128 (arxiv-minilm-384, glove-6b-50d-angular)   ~3 min
  b  Collection.search (LMDB, HNSW) vs hnswlib and vecdb-hnsw, same sweep and data                   ~4 min
  c  FlatIndex vs faiss IndexFlat, 1 query/call (digits, glove, synthetic 100k x 128)                ~2 min
  d  one batched call of 1000 queries at 1 and 2 threads vs hnswlib (arxiv, glove)                  ~2 min
  e  50 % filter, 1 query/call, strategies graph and scan, vs hnswlib (arxiv, glove)                 ~5 min
  f  RSS holding a 50k x 384 HNSW vs hnswlib (fresh process each) + the harness's build growth      ~3 min
  g  gRPC loopback 2,000 x 32: 1 client thread 1 query/call, 16 threads (QPS, p99)                  ~1 min
  total                                                                                              ~21 min

Every harness part goes through ``vecdb bench``'s runner (targets interleaved per setting, 3
passes, best reported, recall against exact ground truth, every swept knob must move recall)
and saves its record, with the part's figures under ``"contract"``, as
``<out>/<part>-<dataset>.json``; f and g save ``<out>/f-rss.json`` and ``<out>/g-grpc.json``; the
run ends with ``<out>/summary.json`` (every figure, its goal, met or not, and the provenance). The
whole run holds the benchmark lock; each part checks that the machine is quiet first.

    full run:   NUMBA_NUM_THREADS=2 .venv/bin/python bench/contract.py [--parts a,b,...]
    smoke run:  CONTRACT_SMOKE=1 .venv/bin/python bench/contract.py --out /tmp/contract-smoke
                (tiny data, every part in a couple of minutes; the figures mean nothing)
"""
from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "2")  # before numba loads: part d times 2 threads
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                    "..", ".numba_cache")))

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from vecdb.bench import machine  # noqa: E402
from vecdb.bench.contract import FULL, PARTS, SMOKE, figures_table, run_part  # noqa: E402
from vecdb.errors import VecdbError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default=",".join(PARTS), help="comma list of parts to run (default: all)")
    ap.add_argument("--smoke", action="store_true", default=os.environ.get("CONTRACT_SMOKE") == "1",
                    help="tiny sizes (also CONTRACT_SMOKE=1): checks the script, measures nothing")
    ap.add_argument("--out", default=None, help="result folder (default bench/results/contract; smoke: required)")
    ap.add_argument("--allow-busy", action="store_true", help="run on a busy machine (results flagged busy)")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every setting")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        print(f"contract.py: error: unknown part(s) {unknown}; parts are {', '.join(PARTS)}", file=sys.stderr)
        return 2
    if args.smoke and args.out is None:
        print("contract.py: error: a smoke run needs --out (its figures must not land in bench/results)",
              file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / "contract"
    sizes = SMOKE if args.smoke else FULL
    command = ["bench/contract.py", *(sys.argv[1:] if argv is None else argv)]
    figures = []
    started = time.perf_counter()
    try:
        with machine.bench_lock():
            for part in parts:
                t0 = time.perf_counter()
                print(f"\n=== part {part} ===", flush=True)
                got = run_part(part, sizes, out, allow_busy=args.allow_busy, argv=command,
                               show=lambda text: print(text, flush=True))
                print(f"\npart {part}: {time.perf_counter() - t0:.0f} s\n{figures_table(got)}", flush=True)
                figures += got
    except VecdbError as exc:
        print(f"contract.py: error: {exc}", file=sys.stderr)
        return 2
    summary = {"smoke": args.smoke, "parts": parts, "seconds": round(time.perf_counter() - started, 1),
               "sizes": dataclasses.asdict(sizes), "figures": [dataclasses.asdict(f) for f in figures],
               "provenance": machine.provenance(command)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    print(f"\n=== issue 11 figures ({summary['seconds']:.0f} s) ===\n{figures_table(figures)}\nsaved {out / 'summary.json'}")
    invalid = [f for f in figures if f.what.startswith("INVALID")]
    return 3 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
