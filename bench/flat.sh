#!/usr/bin/env bash
# Exact search: vecdb FlatIndex against faiss IndexFlat, batch 1 and 1000, 1 and 2 threads.
# Usage: bash bench/flat.sh   (results: bench/results/flat__*.json, tables on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."
for ds in ${DATASETS:-digits-64-euclidean mnist-784-euclidean glove-6b-50d-angular arxiv-minilm-384 synthetic-100k-128}; do
  .venv/bin/vecdb bench --dataset "$ds" --targets vecdb-flat,faiss-flat --baseline faiss-flat \
    --threads 1,2 --batch 1,1000 --repeats 3 --out "bench/results/flat__${ds}.json"
done
