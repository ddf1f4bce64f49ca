#!/usr/bin/env bash
# Creates bench/.venv-diskann: diskannpy 0.7.0 (DiskANN's Python bindings, from the package
# registry) and numpy, apart from the test venv; bench/spann.py runs bench/diskann_run.py
# with it in a subprocess (--targets ...,diskann).
#   bash bench/diskann-venv.sh          (idempotent)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=bench/.venv-diskann
PYTHON=${PYTHON:-python3}
STAMP=$VENV/.installed
if [[ -f $STAMP ]]; then
  echo "$VENV is up to date"; exit 0
fi
test -x $VENV/bin/python || "$PYTHON" -m venv $VENV
$VENV/bin/python -m pip install --quiet --upgrade pip
$VENV/bin/python -m pip install --quiet 'diskannpy==0.7.0' 'numpy<2'
$VENV/bin/python -c "import diskannpy, numpy; print('diskannpy', diskannpy.__version__ if hasattr(diskannpy, '__version__') else '0.7.0', 'ok')"
touch $STAMP
