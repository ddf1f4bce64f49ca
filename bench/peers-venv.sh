#!/usr/bin/env bash
# Creates bench/.venv-peers: vecdb (editable) plus the embedded peers (chromadb, LanceDB,
# Milvus Lite, qdrant-client) and the reference libraries, apart from the main .venv so the
# peers' dependency pins never touch the environment the tests run in.
#   bash bench/peers-venv.sh          (idempotent; re-run after pyproject.toml changes)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=bench/.venv-peers
PYTHON=${PYTHON:-python3}
STAMP=$VENV/.installed
if [[ -f $STAMP && $STAMP -nt pyproject.toml ]]; then
  echo "$VENV is up to date"; exit 0
fi
test -x $VENV/bin/python || "$PYTHON" -m venv $VENV
$VENV/bin/python -m pip install --quiet --upgrade pip
$VENV/bin/python -m pip install --quiet -e '.[bench,peers]'
# every peer must import, and vecdb with them (one failure here beats a failed 20-minute run)
$VENV/bin/python -c "import chromadb, lancedb, pymilvus, milvus_lite, qdrant_client, hnswlib, vecdb; print('peers ok')"
touch $STAMP
