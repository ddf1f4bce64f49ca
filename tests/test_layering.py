"""The package's layers, read from the source: every import of every module (top-level and
inside functions) must point at its own layer or one below, and every module must import on
its own (no import cycle hidden by the order in which a test session happens to load them).

Layers, bottom to top:
  0 base        errors, types, validation, calls, worker (shared leaf helpers)
  1 kernels/    Numba kernels       } nothing from vecdb but errors and types
  1 storage/    LMDB environment    }  (and their own package)
  2 quant/      codecs
  3 index/      vector indexes; filters.py (the payload index and filter parser: used by
                collections, and by the server to validate filters, so it sits below both)
  4 api         the shared API contract (SearchRequest validates with filters)
  5 collection/ and database.py
  6 cluster/    vecdb on Ray (shards of embedded databases behind the same API); the only
                package that imports ray, and nothing below it imports it
  7 server/, client, aio_client, wire, v1 (generated), cli, bench/, data/, eval, the package
    itself
  8 integrations/  LangChain / LlamaIndex vector stores; the only package that imports either
                framework, and nothing below it imports it
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "vecdb"

BOTTOM_ALLOWED = {"vecdb.errors", "vecdb.types"}
LAYERS: list[tuple[int, tuple[str, ...]]] = [
    (0, ("vecdb.errors", "vecdb.types", "vecdb.validation", "vecdb.calls", "vecdb.worker")),
    (1, ("vecdb.kernels", "vecdb.storage")),
    (2, ("vecdb.quant",)),
    (3, ("vecdb.index", "vecdb.filters")),
    (4, ("vecdb.api",)),
    (5, ("vecdb.collection", "vecdb.database")),
    (6, ("vecdb.cluster",)),
    (7, ("vecdb.server", "vecdb.client", "vecdb.aio_client", "vecdb.wire", "vecdb.v1", "vecdb.cli",
         "vecdb.bench", "vecdb.data", "vecdb.eval", "vecdb.__main__", "vecdb")),
    (8, ("vecdb.integrations",)),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> tuple[int, str]:
    """(level, group prefix) of a vecdb module: the longest matching prefix wins."""
    best = None
    for level, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
                best = (level, prefix)
    assert best is not None, f"{module} is in no layer; add it to LAYERS"
    return best


def vecdb_imports(path: Path, name: str) -> set[str]:
    """Every vecdb module ``path`` imports anywhere (``from vecdb import calls`` -> vecdb.calls)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "vecdb")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "vecdb":
                continue
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                found.add(sub if sub in MODULES else mod)
    return found


def test_every_module_is_in_a_layer() -> None:
    for name in MODULES:
        layer_of(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_respect_the_layers(name: str) -> None:
    level, group = layer_of(name)
    for target in sorted(vecdb_imports(MODULES[name], name)):
        if target.startswith(group + ".") or target == group:
            continue
        t_level, _ = layer_of(target)
        if level == 1:
            assert target in BOTTOM_ALLOWED, f"{name} (bottom layer) imports {target}: only errors and types may be"
        else:
            assert t_level <= level, f"{name} (layer {level}) imports {target} (layer {t_level}), which sits above it"


def test_collection_does_not_import_the_database() -> None:
    """The database imports the collection package, never the reverse: a collection is handed
    what it needs (store, manifest handle, checkpoint lock) explicitly."""
    for name, path in MODULES.items():
        if name.startswith("vecdb.collection"):
            assert not any(t.startswith("vecdb.database") for t in vecdb_imports(path, name)), name


def test_every_module_imports_on_its_own(tmp_path: Path) -> None:
    """Fresh interpreters import each module with every vecdb module forgotten before it,
    so each import runs from a clean slate. Kept loaded: the generated ``vecdb.v1`` protos
    (protobuf's descriptor pool refuses a second registration) and, except when a kernel module
    itself is imported, the Numba kernels (re-loading them takes seconds each time). Byte code
    goes to a scratch folder so each module is compiled once, not once per import. Two
    interpreters share the modules (one per core), each importing every other one."""
    names = [n for n in MODULES if n != "vecdb.__main__"]  # __main__ runs the CLI
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path / "pyc")
    procs = [subprocess.Popen([sys.executable, "-c", _import_each(names[half::2])], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, cwd=ROOT.parent, env=env) for half in (0, 1)]
    outputs = [proc.communicate()[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(outputs)


def _import_each(names: list[str]) -> str:
    """A script importing each of ``names`` from a clean slate; exits 1 listing the failures."""
    return (
        "import importlib, sys, traceback\n"
        f"names = {names!r}\n"
        "bad = []\n"
        "for name in names:\n"
        "    keep = ('vecdb.v1',) if name.startswith('vecdb.kernels') else ('vecdb.v1', 'vecdb.kernels')\n"
        "    for mod in [m for m in sys.modules if (m == 'vecdb' or m.startswith('vecdb.')) and not m.startswith(keep)]:\n"
        "        del sys.modules[mod]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except BaseException:\n"
        "        bad.append(name + ': ' + traceback.format_exc(limit=3))\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )


@pytest.fixture(scope="module")
def optional_imports() -> dict[str, list[str]]:
    """What one fresh interpreter has loaded after importing the client SDK alone ("client":
    the index layer or Numba), then vecdb, its server, clients and CLI ("ray", "frameworks")."""
    script = ("import json, sys, vecdb.client, vecdb.aio_client\n"
              "seen = {'client': sorted(m for m in sys.modules\n"
              "                         if m == 'numba' or m.startswith(('vecdb.index', 'vecdb.kernels')))}\n"
              "import vecdb, vecdb.database, vecdb.server.app, vecdb.cli\n"
              "seen['ray'] = sorted(m for m in sys.modules if m.split('.')[0] == 'ray')\n"
              "seen['frameworks'] = sorted(m for m in sys.modules\n"
              "                            if m.split('.')[0] in ('langchain_core', 'langchain', 'llama_index'))\n"
              "print(json.dumps(seen))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_the_client_sdk_loads_no_numba(optional_imports: dict[str, list[str]]) -> None:
    """``vecdb.client`` / ``vecdb.aio_client`` share ``vecdb.api`` with the embedded engine but
    never load the index layer or Numba (about 110 MB and seconds of import for a client)."""
    assert optional_imports["client"] == []


def test_only_the_cluster_package_imports_ray(optional_imports: dict[str, list[str]]) -> None:
    """Ray is the optional extra ``vecdb[cluster]``: importing vecdb, its server and its
    clients never loads it."""
    assert optional_imports["ray"] == []


def test_only_the_integrations_import_the_frameworks(optional_imports: dict[str, list[str]]) -> None:
    """LangChain and LlamaIndex are the optional extras ``vecdb[langchain]`` /
    ``vecdb[llamaindex]``: importing vecdb, its server, clients and CLI never loads them."""
    assert optional_imports["frameworks"] == []
