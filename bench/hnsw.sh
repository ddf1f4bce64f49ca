#!/usr/bin/env bash
# Issue 3 benchmark: vecdb HNSW vs hnswlib vs faiss IndexHNSWFlat, same harness, same run,
# same M / ef_construction, 1 and 2 threads, one query per call and batches of 1000,
# unfiltered and at 1% / 10% / 50% selectivity. Results: bench/results/hnsw-<dataset>.json
set -euo pipefail
cd "$(dirname "$0")/.."
EF="ef=10;ef=16;ef=24;ef=32;ef=48;ef=64;ef=96;ef=128;ef=192;ef=256"
for ds in "${@:-arxiv-minilm-384 synthetic-200k-128 glove-6b-50d-angular mnist-784-euclidean}"; do
  for name in $ds; do
    .venv/bin/vecdb bench --dataset "$name" --targets vecdb-hnsw,hnswlib,faiss-hnsw \
      --build M=16,ef_construction=200 --search "$EF" --k 10 --threads 1,2 --batch 1,1000 \
      --baseline hnswlib --filter 0.01,0.1,0.5 --max-queries 500 \
      --out "bench/results/hnsw-$name.json" 2>&1 | tee "bench/results/hnsw-$name.log"
  done
done
