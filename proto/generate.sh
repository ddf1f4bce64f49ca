#!/usr/bin/env bash
# Regenerate the Python gRPC code in vecdb/v1/ from proto/vecdb/v1/*.proto.
#
#   proto/generate.sh            write into the repository (vecdb/v1/*_pb2*.py[i])
#   proto/generate.sh OUT_DIR    write into OUT_DIR/vecdb/v1/ instead (used by
#                                tests/test_proto_sync.py to diff against the committed code)
#
# The generator is pinned: the generated files embed the protobuf/grpcio versions that
# produced them and refuse older runtimes, so every regeneration must use the same
# grpcio-tools. PYTHON defaults to the project venv. Generated files are committed so
# installing vecdb does not need grpcio-tools; never edit them by hand.
set -euo pipefail

GRPCIO_TOOLS_VERSION="1.85.1"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
PYTHON="${PYTHON:-$root/.venv/bin/python}"
out="${1:-$root}"

have="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))' 2>/dev/null || true)"
if [[ "$have" != "$GRPCIO_TOOLS_VERSION" ]]; then
    echo "generate.sh: need grpcio-tools==$GRPCIO_TOOLS_VERSION in $PYTHON (found: ${have:-none})" >&2
    echo "  install it with: $PYTHON -m pip install grpcio-tools==$GRPCIO_TOOLS_VERSION" >&2
    exit 1
fi

mkdir -p "$out/vecdb/v1"
cd "$root/proto"
"$PYTHON" -m grpc_tools.protoc -I . \
    --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" \
    vecdb/v1/types.proto vecdb/v1/vecdb.proto
