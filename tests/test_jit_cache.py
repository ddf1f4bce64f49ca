"""Numba's cache of vecdb's kernels follows every source a kernel takes code from
(``vecdb.kernels.jit_cache``): a changed file compiles the kernels of unchanged files again."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import vecdb
from vecdb.kernels import jit_cache

PACKAGE = Path(vecdb.__file__).resolve().parent

#: a kernel of one file (spann/kernels.py) calling a kernel of another (kernels/distances.py)
PROBE = """
import numpy as np
from vecdb.index.spann.kernels import pair_sq_dists
x = np.zeros((1, 4), np.float32)
print(float(pair_sq_dists(x, np.ones((1, 4), np.float32), np.zeros((1, 1), np.int64))[0, 0]))
"""

#: appended to the copy of kernels/distances.py: l2_sq redefined, 1,000 more than before
CHANGED_L2 = '''

@kernel(F32(F32_ROW, F32_ROW), fastmath=ARITH)
def l2_sq(x, y):
    acc = np.float32(1000.0)
    for i in range(x.shape[0]):
        d = x[i] - y[i]
        acc += d * d
    return acc
'''


def run_probe(root: Path, cache: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(root), "NUMBA_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return float(out.stdout.strip().splitlines()[-1])


def test_a_kernel_is_compiled_again_when_a_file_it_calls_into_changes(tmp_path: Path) -> None:
    root, cache = tmp_path / "src", tmp_path / "cache"
    shutil.copytree(PACKAGE, root / "vecdb", ignore=shutil.ignore_patterns("__pycache__"))
    assert run_probe(root, cache) == 4.0
    assert run_probe(root, cache) == 4.0                  # served from the cache
    with open(root / "vecdb" / "kernels" / "distances.py", "a") as f:
        f.write(CHANGED_L2)
    assert run_probe(root, cache) == 1004.0               # not the cached caller's old l2_sq


def test_kernel_files_import_only_from_the_stamped_sources() -> None:
    """Every file defining kernels or intrinsics takes vecdb code only from ``SOURCES``
    (else a change there would not reach its cached kernels)."""
    roots = tuple(name.removesuffix(".py").replace("/", ".") for name in jit_cache.SOURCES)
    outside = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if "@kernel" not in text and "intrinsic" not in text:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vecdb."):
                if not node.module.removeprefix("vecdb.").startswith(roots):
                    outside.append(f"{path.relative_to(PACKAGE)}: {node.module}")
    assert not outside, outside


def test_the_digest_covers_each_source() -> None:
    digest = jit_cache.sources_digest()
    assert len(digest) == 64 and digest == jit_cache.sources_digest()
    for name in jit_cache.SOURCES:
        assert (jit_cache.PACKAGE / name).exists(), name
