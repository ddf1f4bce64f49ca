#!/usr/bin/env bash
# HNSW: vecdb HNSW vs hnswlib vs faiss IndexHNSWFlat in one process per dataset, same M /
# ef_construction, 1 and 2 threads, one query per call and batches of 200 (200 queries), ef 10-128, unfiltered and at
# 1% / 10% / 50% selectivity under three filter strategies for every target (graph-only, exact
# scan of the allowed rows, and auto = vecdb's rule applied to all). Targets alternate per
# setting, 3 passes each (best reported); memory measured in a fresh process per build.
# ~120 min in all (~30 per dataset on 2 quiet cores).
#   bash bench/hnsw.sh [dataset ...]      results: bench/results/hnsw-<dataset>.json
set -euo pipefail
cd "$(dirname "$0")/.."
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.numba_cache}" NUMBA_NUM_THREADS="${NUMBA_NUM_THREADS:-2}"
EF="ef=10;ef=16;ef=32;ef=64;ef=128"
for name in ${@:-arxiv-minilm-384 synthetic-200k-128 glove-6b-50d-angular mnist-784-euclidean}; do
  .venv/bin/vecdb bench --dataset "$name" --targets vecdb-hnsw,hnswlib,faiss-hnsw \
    --build M=16,ef_construction=200 --search "$EF" --k 10 --threads 1,2 --batch 1,500 \
    --baseline hnswlib --filter 0.01,0.1,0.5 --filter-strategies graph,scan,auto --max-queries 200 \
    --repeats 3 --stat best --memory fresh ${BENCH_FLAGS:-} --out "bench/results/hnsw-$name.json"
done
