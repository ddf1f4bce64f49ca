#!/usr/bin/env bash
# Database benchmark (issue 5). Part 1: vecdb alone on 1M x 128 synthetic clustered vectors
# (bulk upsert vectors/s, close/checkpoint and reopen seconds, single-query QPS + recall@10 over an
# ef sweep, without a filter and with 1% / 10% / 50% payload filters).
# Part 2: vecdb and the embedded peers that install here, one process each, on the shared
# arxiv-minilm-384 set (50k x 384, cosine, 1,000 held-out queries, exact ground truth), then the
# ratios report (insert throughput, QPS at recall@10 >= 0.95, disk size).
# Usage: bash bench/database.sh [own|peers|all]   (results: bench/results/database_*.json)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
R=bench/results
what="${1:-all}"
if [[ "$what" == own || "$what" == all ]]; then
  $PY bench/database.py own --n 1000000 --dim 128 --index hnsw --ef 16,32,64,128,256 --queries 1000 \
    --out $R/database_own_1m_hnsw.json
fi
if [[ "$what" == peers || "$what" == all ]]; then
  for t in vecdb vecdb-flat chroma milvus-lite lancedb qdrant-local; do
    $PY bench/database.py peer --target $t --dataset arxiv-minilm-384 --out $R/database_peer_arxiv_$t.json || echo "peer $t failed"
  done
  $PY bench/database.py peer --target lancedb --lance-index --dataset arxiv-minilm-384 \
    --out $R/database_peer_arxiv_lancedb-ivfhnswsq.json || echo "lancedb with index failed"
  $PY bench/database.py report $R/database_peer_arxiv_*.json --recall 0.95 --out $R/database_peers_report.json
fi
