"""Readers (and writers, for tests and conversions) of common vector file formats."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vecdb.data.dataset import Dataset, metric_from_name
from vecdb.errors import DataLossError, InvalidArgumentError

_VECS_DTYPES = {".fvecs": np.float32, ".ivecs": np.int32, ".bvecs": np.uint8}


def read_vecs(path: str | Path) -> np.ndarray:
    """Read a TEXMEX ``.fvecs`` / ``.ivecs`` / ``.bvecs`` file: each row is an int32 dim then
    dim values (float32, int32 or uint8). Returns (n, dim); DataLossError on a bad file."""
    path = Path(path)
    dtype = _VECS_DTYPES.get(path.suffix)
    if dtype is None:
        raise InvalidArgumentError(f"{path.name}: expected .fvecs, .ivecs or .bvecs")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0:
        return np.zeros((0, 0), dtype)
    if raw.size < 4:
        raise DataLossError(f"{path}: truncated header")
    dim = int(raw[:4].view(np.int32)[0])
    itemsize = np.dtype(dtype).itemsize
    row_bytes = 4 + dim * itemsize
    if dim <= 0 or raw.size % row_bytes:
        raise DataLossError(f"{path}: size {raw.size} is not a multiple of the row size {row_bytes} (dim {dim})")
    rows = raw.reshape(-1, row_bytes)
    if not (rows[:, :4].copy().view(np.int32).ravel() == dim).all():
        raise DataLossError(f"{path}: rows have differing dimensions")
    return rows[:, 4:].copy().view(dtype).reshape(len(rows), dim)


def write_vecs(path: str | Path, x: np.ndarray) -> None:
    """Write ``x`` (n, dim) in the ``.fvecs``/``.ivecs``/``.bvecs`` layout chosen by suffix."""
    path = Path(path)
    dtype = _VECS_DTYPES.get(path.suffix)
    if dtype is None:
        raise InvalidArgumentError(f"{path.name}: expected .fvecs, .ivecs or .bvecs")
    x = np.ascontiguousarray(x, dtype)
    header = np.full((len(x), 1), x.shape[1], np.int32).view(np.uint8)
    np.hstack([header, x.view(np.uint8).reshape(len(x), -1)]).tofile(path)


def read_vecs_folder(folder: str | Path, metric: str | None = None) -> Dataset:
    """A TEXMEX folder (SIFT layout): ``*base.fvecs`` (or .bvecs / .ivecs), ``*query.*vecs``,
    optional ``*groundtruth.ivecs``. The metric: ``metric``, else ``info.json``'s ``metric``,
    else the folder name's ending (``-angular``, ``-euclidean``, ``-ip``, ``-dot``), else euclidean."""
    folder = Path(folder)
    if metric is None:
        metric = _folder_metric(folder)

    def one(pattern: str, required: bool = True) -> Path | None:
        found = sorted(folder.glob(pattern))
        if not found and required:
            raise InvalidArgumentError(f"{folder}: no file matching {pattern}")
        return found[0] if found else None

    base = read_vecs(one("*base.*vecs")).astype(np.float32)
    queries = read_vecs(one("*query.*vecs")).astype(np.float32)
    gt_path = one("*groundtruth.ivecs", required=False)
    gt = read_vecs(gt_path).astype(np.int64) if gt_path else None
    return Dataset(folder.name, metric_from_name(metric), base, queries, gt)


def _folder_metric(folder: Path) -> str:
    info = folder / "info.json"
    if info.exists():
        try:
            named = json.loads(info.read_text()).get("metric")
        except ValueError as exc:
            raise DataLossError(f"{info}: {exc}") from None
        if named:
            return str(named)
    ending = folder.name.rsplit("-", 1)[-1].lower()
    return ending if ending in ("angular", "euclidean", "ip", "dot", "cosine", "l2") else "euclidean"


def read_ann_hdf5(path: str | Path) -> Dataset:
    """An ann-benchmarks HDF5 file: ``train``, ``test``, ``neighbors``, ``distances``, attr ``distance``."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            metric = metric_from_name(str(f.attrs.get("distance", "euclidean")))
            base = np.ascontiguousarray(f["train"][:], np.float32)
            queries = np.ascontiguousarray(f["test"][:], np.float32)
            gt = f["neighbors"][:].astype(np.int64) if "neighbors" in f else None
            gt_d = f["distances"][:].astype(np.float32) if "distances" in f else None
    except (OSError, KeyError) as exc:
        raise DataLossError(f"{path}: not a readable ann-benchmarks HDF5 file: {exc}") from None
    return Dataset(path.stem, metric, base, queries, gt, gt_d)


def write_ann_hdf5(path: str | Path, ds: Dataset) -> None:
    """Write ``ds`` in the ann-benchmarks HDF5 layout (used by tests and conversions)."""
    import h5py

    names = {"l2": "euclidean", "cosine": "angular", "ip": "ip", "hamming": "hamming"}
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = names[ds.metric.value]
        f.attrs["dimension"] = ds.dim
        f["train"] = ds.base
        f["test"] = ds.queries
        if ds.gt_ids is not None:
            f["neighbors"] = ds.gt_ids
        if ds.gt_dists is not None:
            f["distances"] = ds.gt_dists


def read_npy_folder(folder: str | Path) -> Dataset:
    """A folder of ``base.npy``, ``query.npy``, optional ``gt_ids.npy``/``gt_dist.npy``,
    labels (``labels_indptr.npy``/``labels_indices.npy``, else one per row in ``labels.npy``),
    the queries' primary labels (``query_labels.npy`` or its CSR) and ``info.json`` (``metric``)."""
    folder = Path(folder)
    info: dict = {}
    if (folder / "info.json").exists():
        try:
            info = json.loads((folder / "info.json").read_text())
        except ValueError as exc:
            raise DataLossError(f"{folder}/info.json: {exc}") from None
    metric = info.get("metric") or info.get("distance") or "euclidean"

    def opt(name: str) -> np.ndarray | None:
        p = folder / name
        return np.load(p, allow_pickle=False) if p.exists() else None

    try:
        base = np.ascontiguousarray(np.load(folder / "base.npy", allow_pickle=False), np.float32)
        queries = np.ascontiguousarray(np.load(folder / "query.npy", allow_pickle=False), np.float32)
    except FileNotFoundError as exc:
        raise InvalidArgumentError(f"{folder}: missing {Path(exc.filename).name}") from None
    except ValueError as exc:
        raise DataLossError(f"{folder}: corrupt array file: {exc}") from None
    gt = opt("gt_ids.npy")
    gt_d = opt("gt_dist.npy")
    indptr, indices = opt("labels_indptr.npy"), opt("labels_indices.npy")
    if indptr is None or indices is None:
        indptr, indices = _single_label_csr(opt("labels.npy"), len(base))
    return Dataset(folder.name, metric_from_name(str(metric)), base, queries,
                   None if gt is None else gt.astype(np.int64), gt_d, indptr, indices, info,
                   _query_labels(opt("query_labels.npy"), opt("query_labels_indptr.npy"),
                                 opt("query_labels_indices.npy"), len(queries)))


def _single_label_csr(labels: np.ndarray | None, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """One label per row (``labels.npy``, int (n,)) as a CSR; (None, None) without labels."""
    if labels is None:
        return None, None
    if labels.ndim != 1 or len(labels) != n or not np.issubdtype(labels.dtype, np.integer):
        raise DataLossError(f"labels.npy: expected int ({n},), got {labels.dtype} {labels.shape}")
    return np.arange(n + 1, dtype=np.int64), labels.astype(np.int32)


def _query_labels(primary: np.ndarray | None, indptr: np.ndarray | None, indices: np.ndarray | None,
                  n: int) -> np.ndarray | None:
    """Each query's primary label: ``query_labels.npy``, else the first of its CSR labels (-1: none)."""
    if primary is not None:
        if primary.ndim != 1 or len(primary) != n:
            raise DataLossError(f"query_labels.npy: expected ({n},), got {primary.shape}")
        return primary.astype(np.int64)
    if indptr is None or indices is None:
        return None
    if len(indptr) != n + 1:
        raise DataLossError(f"query_labels_indptr.npy: expected {n + 1} entries, got {len(indptr)}")
    first = np.full(n, -1, np.int64)
    has = np.diff(indptr) > 0
    first[has] = indices[indptr[:-1][has]]
    return first


def write_npy_folder(folder: str | Path, ds: Dataset) -> None:
    """Write ``ds`` as a ``.npy`` folder readable by ``read_npy_folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "base.npy", ds.base)
    np.save(folder / "query.npy", ds.queries)
    for name, arr in (("gt_ids", ds.gt_ids), ("gt_dist", ds.gt_dists),
                      ("labels_indptr", ds.labels_indptr), ("labels_indices", ds.labels_indices),
                      ("query_labels", ds.query_labels)):
        if arr is not None:
            np.save(folder / f"{name}.npy", arr)
    names = {"l2": "euclidean", "cosine": "angular", "ip": "ip", "hamming": "hamming"}
    info = dict(ds.info, metric=names[ds.metric.value], dim=ds.dim, n_base=len(ds.base), n_query=len(ds.queries))
    (folder / "info.json").write_text(json.dumps(info, indent=1))
