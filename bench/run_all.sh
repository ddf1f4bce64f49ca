#!/usr/bin/env bash
# Regenerate every benchmark result, one benchmark after another (never two at once: each also
# takes /tmp/vecdb-bench.lock and refuses to start on a busy machine). Run on a quiet machine at
# the commit whose figures you want; each result JSON records that commit, a dirty-tree flag,
# library versions, the machine, load averages and the command line.
# Durations on the 2-core machine, measured at commit 495b785 (codes.sh estimated; add ~20% margin):
#   flat.sh        4 min (measured at 495b785)
#   hnsw.sh        33 min (4 datasets)
#   codes.sh       ~35 min
#   database.sh    29 min (own 1M x 128 15, peers 14; creates bench/.venv-peers first if needed)
#   grpc.sh        3 min
#   total          under 2 hours
#   bash bench/run_all.sh            (BENCH_FLAGS=--allow-busy to run anyway, results flagged busy)
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "[$(date -u +%H:%M:%S)] $*"; }
for script in flat.sh hnsw.sh codes.sh database.sh grpc.sh; do
  log "start $script"
  start=$(date +%s)
  bash "bench/$script"
  log "done $script in $(( ($(date +%s) - start) / 60 )) min"
done
log "all benchmarks done; quote figures in bench/README.md with the commit from each JSON's provenance"
