"""The committed generated code in vecdb/v1/ is exactly what proto/generate.sh produces
from proto/vecdb/v1/*.proto with the pinned grpcio-tools."""
from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "proto" / "generate.sh"


def pinned_version() -> str:
    match = re.search(r'^GRPCIO_TOOLS_VERSION="([^"]+)"', SCRIPT.read_text(), re.M)
    assert match, "proto/generate.sh must pin GRPCIO_TOOLS_VERSION"
    return match.group(1)


def test_generated_code_is_in_sync(tmp_path: Path) -> None:
    try:
        installed = importlib.metadata.version("grpcio-tools")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("grpcio-tools is not installed (pip install grpcio-tools==%s)" % pinned_version())
    assert installed == pinned_version(), "regenerate with the pinned grpcio-tools"
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], check=True, env={**os.environ, "PYTHON": sys.executable})
    fresh = sorted(p.relative_to(tmp_path) for p in (tmp_path / "vecdb" / "v1").iterdir())
    committed = sorted(p.relative_to(ROOT) for p in (ROOT / "vecdb" / "v1").iterdir()
                       if p.suffix in (".py", ".pyi") and p.name != "__init__.py")
    assert fresh == committed, "proto files and generated files differ in number: run proto/generate.sh"
    for rel in fresh:
        assert (tmp_path / rel).read_bytes() == (ROOT / rel).read_bytes(), f"{rel} is stale: run proto/generate.sh"


def test_every_rpc_follows_the_naming_rule() -> None:
    from vecdb.v1 import vecdb_pb2

    for service in vecdb_pb2.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            assert method.input_type.name == f"{method.name}Request", method.full_name
            assert method.output_type.name == f"{method.name}Response", method.full_name
    assert vecdb_pb2.DESCRIPTOR.package == "vecdb.v1"
