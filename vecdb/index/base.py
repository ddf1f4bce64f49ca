"""The Index protocol every vecdb index implements, and the base class that validates input
once at this boundary, maps user ids to slots, and saves/loads any index type."""
from __future__ import annotations

import abc
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Iterable, Protocol, runtime_checkable

import numpy as np

from vecdb.errors import AlreadyExistsError, DataLossError, InvalidArgumentError
from vecdb.index.ids import IdMap
from vecdb.types import F32Matrix, I64Vector, Metric, SearchResult
from vecdb.validation import as_id_array, as_ids, as_k, as_matrix, as_positive_int

FORMAT = "vecdb-index"
FORMAT_VERSION = 1
_REGISTRY: dict[str, type["BaseIndex"]] = {}


@runtime_checkable
class Index(Protocol):
    """What every index offers. Ids are int64 user labels; results are ``SearchResult``."""

    dim: int
    metric: Metric

    def add(self, vectors: Any, ids: Any = None) -> None: ...
    def search(self, queries: Any, k: int, *, allow: Any = None, **params: Any) -> SearchResult: ...
    def remove(self, ids: Any) -> int: ...
    def __len__(self) -> int: ...
    def memory_bytes(self) -> int: ...
    def save(self, path: str | os.PathLike[str]) -> None: ...


class BaseIndex(abc.ABC):
    """Shared boundary of all indexes. Subclasses implement the underscored hooks on slots.

    Subclass contract:
      - ``kind``: registry name stored in saved files; ``metrics``: supported metrics;
        ``search_params``: names of keyword knobs ``search`` accepts (checked here).
      - ``_add(vectors, ids)`` stores validated float32 rows under new, unused ids and
        records them in ``self._ids``.
      - ``_search(queries, k, allowed, **params) -> (slots, dists)``, int64/float32 (nq, k),
        sorted, padded with -1/+inf; ``allowed`` is None or a sorted int64 array of live slots.
      - ``_remove(slots)`` forgets the given slots (already released from ``self._ids``).
      - ``_state() -> (params, arrays)`` and ``_from_state(dim, metric, params, arrays)``.
      - ``_memory_bytes()`` bytes held besides the id map.
    """

    kind: ClassVar[str] = ""
    metrics: ClassVar[tuple[Metric, ...]] = (Metric.L2, Metric.IP, Metric.COSINE)
    search_params: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            _REGISTRY[cls.kind] = cls

    def __init__(self, dim: int, metric: Metric | str = Metric.L2) -> None:
        self.dim = as_positive_int(dim, "dim")
        self.metric = Metric.parse(metric)
        if self.metric not in self.metrics:
            valid = ", ".join(m.value for m in self.metrics)
            raise InvalidArgumentError(f"{type(self).__name__} does not support metric {self.metric.value!r}; use {valid}")
        self._ids = IdMap()

    # ---- public surface -------------------------------------------------------------
    def add(self, vectors: Any, ids: Any = None) -> None:
        """Add float32 rows ``vectors`` (n, dim) under int64 ``ids`` (default: sequential).

        Raises InvalidArgumentError / DimensionMismatchError for bad vectors or ids and
        AlreadyExistsError when an id is already stored; nothing is added then.
        """
        x = as_matrix(vectors, self.dim)
        ids_arr = self._ids.next_free_ids(len(x)) if ids is None else as_ids(ids, len(x))
        present = self._ids.contains(ids_arr)
        if present.any():
            raise AlreadyExistsError(f"ids already in the index: {ids_arr[present][:5].tolist()}")
        if len(x):
            self._add(x, ids_arr)

    def search(self, queries: Any, k: int, *, allow: Any = None, **params: Any) -> SearchResult:
        """The ``k`` nearest stored vectors to each query, closest first.

        ``queries``: (nq, dim) or one (dim,) row. ``allow``: optional ids; only those can be
        returned. ``params``: per-call knobs of this index type (``search_params``).
        """
        q = as_matrix(queries, self.dim, what="queries")
        k = as_k(k)
        unknown = set(params) - self.search_params
        if unknown:
            known = ", ".join(sorted(self.search_params)) or "none"
            raise InvalidArgumentError(f"unknown search parameter(s) {sorted(unknown)} for {type(self).__name__}; known: {known}")
        allowed = None if allow is None else self._allowed_slots(allow)
        if len(self) == 0 or len(q) == 0 or (allowed is not None and len(allowed) == 0):
            return SearchResult.empty(len(q), k)
        slots, dists = self._search(q, k, allowed, **params)
        return SearchResult(self._ids.ids_of(slots), dists)

    def remove(self, ids: Any) -> int:
        """Remove the stored ones among ``ids``; returns how many were removed."""
        slots = self._ids.release(np.unique(as_id_array(ids)))
        if len(slots):
            self._remove(slots)
        return int(len(slots))

    def reserve(self, n: int) -> None:
        """Make room for ``n`` stored vectors ahead of time, so a later ``add`` need not grow
        (copy) its arrays. Safe while searches run (never while adds or removes run): growth
        only copies, and readers see the old or the new arrays, both holding every row."""

    def __contains__(self, ident: int) -> bool:
        return bool(self._ids.contains(np.array([ident], np.int64))[0])

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> I64Vector:
        """Stored ids, in slot order."""
        live = self._ids.slot_ids
        return live[live >= 0].copy()

    def memory_bytes(self) -> int:
        """Bytes held in memory by this index: its structures plus the id map."""
        return int(self._memory_bytes() + self._ids.memory_bytes())

    def params(self) -> dict[str, Any]:
        """Construction parameters (what ``save`` records besides arrays)."""
        return self._state()[0]

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}(dim={self.dim}, metric={self.metric.value!r}{extra}, n={len(self)})"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to directory ``path`` (replaced atomically): meta.json + .npy arrays."""
        save_index(self, path)

    # ---- hooks ----------------------------------------------------------------------
    @abc.abstractmethod
    def _add(self, vectors: F32Matrix, ids: I64Vector) -> None: ...

    @abc.abstractmethod
    def _search(self, queries: F32Matrix, k: int, allowed: I64Vector | None, **params: Any) -> tuple[np.ndarray, np.ndarray]: ...

    @abc.abstractmethod
    def _remove(self, slots: I64Vector) -> None: ...

    @abc.abstractmethod
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...

    @classmethod
    @abc.abstractmethod
    def _from_state(cls, dim: int, metric: Metric, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> "BaseIndex": ...

    @abc.abstractmethod
    def _memory_bytes(self) -> int: ...

    # ---- helpers for subclasses -----------------------------------------------------
    def _allowed_slots(self, allow: Any) -> I64Vector:
        """Sorted unique live slots of the ids in ``allow`` (unknown ids are ignored)."""
        if isinstance(allow, (set, frozenset)):
            allow = np.fromiter(allow, np.int64, len(allow))
        slots = self._ids.lookup(as_id_array(allow, what="allow ids"))
        return np.unique(slots[slots >= 0])


def save_index(index: BaseIndex, path: str | os.PathLike[str]) -> None:
    """Write ``index`` to directory ``path``; a crash mid-write leaves any old copy intact."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    params, arrays = index._state()
    arrays = dict(arrays, slot_ids=index._ids.slot_ids)
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "kind": index.kind, "dim": index.dim,
            "metric": index.metric.value, "params": params, "arrays": sorted(arrays)}
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_index(path: str | os.PathLike[str], *, mmap: bool = False) -> BaseIndex:
    """Load any index written by ``save``; ``mmap=True`` maps arrays read-only instead of reading.

    Raises DataLossError for a missing, corrupt or unknown-version file.
    """
    import vecdb.index  # noqa: F401  (registers every index type)

    folder = Path(path)
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except FileNotFoundError:
        raise DataLossError(f"no index at {folder} (meta.json missing)") from None
    except (OSError, ValueError) as exc:
        raise DataLossError(f"corrupt index metadata at {folder}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataLossError(f"{folder} is not a vecdb index")
    if meta.get("version") != FORMAT_VERSION:
        raise DataLossError(f"index format version {meta.get('version')} not supported (expected {FORMAT_VERSION})")
    cls = _REGISTRY.get(str(meta.get("kind")))
    if cls is None:
        raise DataLossError(f"unknown index kind {meta.get('kind')!r} in {folder}; known: {sorted(_REGISTRY)}")
    arrays: dict[str, np.ndarray] = {}
    try:
        for name in meta["arrays"]:
            arrays[name] = np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        index = cls._from_state(int(meta["dim"]), Metric.parse(meta["metric"]), dict(meta["params"]), arrays)
        index._ids = IdMap(np.array(arrays["slot_ids"], np.int64))
    except DataLossError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise DataLossError(f"corrupt index data at {folder}: {exc}") from None
    return index


def registered_kinds() -> Iterable[str]:
    """Names of all index kinds that ``load_index`` can restore."""
    import vecdb.index  # noqa: F401

    return sorted(_REGISTRY)
