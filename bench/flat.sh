#!/usr/bin/env bash
# Exact search: vecdb FlatIndex against faiss IndexFlat, batch 1 and 1000, 1 and 2 threads,
# with a 10% filter; targets alternate per setting, 3 passes each (best reported).
# ~15 min in all on 2 quiet cores.
#   bash bench/flat.sh   (results: bench/results/flat__<dataset>.json, tables on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.numba_cache}" NUMBA_NUM_THREADS="${NUMBA_NUM_THREADS:-2}"
for ds in ${DATASETS:-digits-64-euclidean mnist-784-euclidean glove-6b-50d-angular arxiv-minilm-384 synthetic-100k-128}; do
  .venv/bin/vecdb bench --dataset "$ds" --targets vecdb-flat,faiss-flat --baseline faiss-flat \
    --threads 1,2 --batch 1,1000 --filter 0.1 --max-queries 500 --repeats 3 --stat best --memory fresh \
    ${BENCH_FLAGS:-} --out "bench/results/flat__${ds}.json"
done
