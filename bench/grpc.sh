#!/usr/bin/env bash
# gRPC load test and gRPC/embedded throughput. Loopback only; bounded runs; takes the benchmark
# lock, refuses a busy machine (BENCH_FLAGS=--allow-busy flags instead), records provenance.
#   bash bench/grpc.sh        both runs below, about 6 minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.numba_cache}"
export NUMBA_NUM_THREADS="${NUMBA_NUM_THREADS:-2}"
PY="${PYTHON:-.venv/bin/python}"

# 20k x 64 float32 points, HNSW (M=16 default, ef=64 at search, k=10). gRPC/embedded throughput
# for batches of 1 and 100 queries (3 alternating rounds of 3 s, best counts); then 1, 4, 16
# search threads for 10 s each while one writer upserts 100 new points per call back to back.
"$PY" bench/grpc_load.py --n 20000 --dim 64 --index hnsw --ef 64 --k 10 --threads 1,4,16 \
    --seconds 10 ${BENCH_FLAGS:-} --out bench/results/grpc_load.json

# Same, with the writer pausing 100 ms between upserts (at most ~1000 points/s).
"$PY" bench/grpc_load.py --n 20000 --dim 64 --index hnsw --ef 64 --k 10 --threads 1,4,16 \
    --seconds 10 --write-pause 0.1 ${BENCH_FLAGS:-} --out bench/results/grpc_load_paced.json
