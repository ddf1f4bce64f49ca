#!/usr/bin/env bash
# Database benchmark. Part 1 (own, main .venv): vecdb alone on 1M x 128 synthetic clustered
# vectors: bulk upsert vectors/s, close/checkpoint and reopen seconds, single-query QPS +
# recall@10 over an ef sweep without a filter (1,000 queries) and with 1% / 10% / 50% payload
# filters (200 queries each) under filter_mode=auto and filter_mode=graph; 3 passes per
# setting. ~45 min (upsert ~20, searches ~25).
# Part 2 (peers, bench/.venv-peers): vecdb's database and the embedded peers on arxiv-minilm-384
# (50k x 384, cosine, 300 held-out queries, exact ground truth), exact against exact and indexed
# against indexed, targets alternating per setting, 3 passes. ~35 min.
#   bash bench/database.sh [own|peers|all]     (results: bench/results/database_*.json)
set -euo pipefail
cd "$(dirname "$0")/.."
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.numba_cache}" NUMBA_NUM_THREADS="${NUMBA_NUM_THREADS:-2}"
R=bench/results
what="${1:-all}"
if [[ "$what" == own || "$what" == all ]]; then
  .venv/bin/python bench/database.py own --n 1000000 --dim 128 --index hnsw --ef 16,32,64,128,256 \
    --queries 1000 --filter-queries 200 --filter-modes auto,graph --repeats 3 ${BENCH_FLAGS:-} \
    --out $R/database_own_1m_hnsw.json
fi
if [[ "$what" == peers || "$what" == all ]]; then
  bash bench/peers-venv.sh
  bench/.venv-peers/bin/python bench/database.py peers --dataset arxiv-minilm-384 --max-queries 300 \
    --repeats 3 ${BENCH_FLAGS:-} --out $R/database_peers_arxiv.json
fi
