"""Dataset names for the CLI: bundled and shared ``.npy`` folders, synthetic sets, ann-benchmarks
downloads, or any path given by the user."""
from __future__ import annotations

import os
import re
import urllib.request
from pathlib import Path

from vecdb.data.dataset import Dataset
from vecdb.data.formats import read_ann_hdf5, read_npy_folder, read_vecs_folder
from vecdb.data.synthetic import synthetic_dataset
from vecdb.errors import InvalidArgumentError, NotFoundError
from vecdb.types import Metric

ANN_BENCHMARKS_URL = "http://ann-benchmarks.com/{name}.hdf5"
ANN_BENCHMARKS_SETS = ("fashion-mnist-784-euclidean", "gist-960-euclidean", "glove-25-angular", "glove-50-angular",
                       "glove-100-angular", "glove-200-angular", "mnist-784-euclidean", "nytimes-256-angular",
                       "sift-128-euclidean", "deep-image-96-angular", "lastfm-64-dot")
_SYNTHETIC = re.compile(r"^synthetic-(\d+)(k|m)?-(\d+)(?:-(l2|ip|cosine))?$")


def search_roots() -> list[Path]:
    """Folders searched for ``.npy`` datasets, in order: $VECDB_DATASETS (``:``-separated),
    ./datasets, ../shared/datasets, and the repository's datasets/ folder."""
    roots = [Path(p) for p in os.environ.get("VECDB_DATASETS", "").split(os.pathsep) if p]
    repo = Path(__file__).resolve().parents[2]
    roots += [Path("datasets"), Path("../shared/datasets"), repo / "datasets", repo.parent / "shared" / "datasets"]
    return [r for r in roots if r.is_dir()]


def cache_dir() -> Path:
    """Where downloaded datasets go: $VECDB_CACHE or ~/.cache/vecdb/datasets."""
    return Path(os.environ.get("VECDB_CACHE", Path.home() / ".cache" / "vecdb" / "datasets"))


def dataset_names() -> list[str]:
    """Names resolvable now: local folders, synthetic examples and ann-benchmarks sets."""
    local = sorted({p.name for r in search_roots() for p in r.iterdir() if (p / "base.npy").exists()})
    return local + ["synthetic-<n>[k|m]-<dim>[-l2|-ip|-cosine]"] + [f"ann:{n}" for n in ANN_BENCHMARKS_SETS]


def load_dataset(name: str) -> Dataset:
    """Resolve ``name``: a path (npy folder, .hdf5 file, TEXMEX folder), a synthetic spec such
    as ``synthetic-100k-128``, ``ann:<name>`` (downloaded once), or a local folder name."""
    path = Path(name)
    if path.exists():
        return _load_path(path)
    m = _SYNTHETIC.match(name)
    if m:
        n = int(m.group(1)) * {None: 1, "k": 1000, "m": 1_000_000}[m.group(2)]
        return synthetic_dataset(n, int(m.group(3)), metric=Metric.parse(m.group(4) or "l2"))
    if name.startswith("ann:"):
        return read_ann_hdf5(_download_ann(name[4:]))
    for root in search_roots():
        if (root / name / "base.npy").exists():
            return read_npy_folder(root / name)
    raise NotFoundError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}")


def _load_path(path: Path) -> Dataset:
    if path.is_dir() and (path / "base.npy").exists():
        return read_npy_folder(path)
    if path.suffix in (".hdf5", ".h5"):
        return read_ann_hdf5(path)
    if path.is_dir() and any(path.glob("*base.*vecs")):
        return read_vecs_folder(path)
    raise InvalidArgumentError(f"{path}: not a .npy dataset folder, an HDF5 file or a TEXMEX folder")


def _download_ann(name: str) -> Path:
    if name not in ANN_BENCHMARKS_SETS:
        raise NotFoundError(f"unknown ann-benchmarks set {name!r}; known: {', '.join(ANN_BENCHMARKS_SETS)}")
    target = cache_dir() / f"{name}.hdf5"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        urllib.request.urlretrieve(ANN_BENCHMARKS_URL.format(name=name), partial)
        partial.rename(target)
    return target
