"""Partitioned vecdb indexes as bench targets: SPANN (heads in memory, postings in LMDB, a
standalone index in the target's own folder) and Curator (the multi-tenant clustering tree,
which keeps a tenant workload's tenants itself).

SPANN build knobs: posting_limit, head_size, replicas, eps1, rng_factor, head_M,
head_ef_construction, exact_heads, head_route ("groups" or "graph"), codes ("float" or "sq8"),
train (sample size); search knobs
(``SPANNParams``): max_postings, eps2, ef, and rerank with codes=sq8.
Curator build knobs: n_root, branching, max_depth, max_shortlist, tier_threshold, codes, train;
search knobs (``CuratorParams``): budget, ef (ef only reaches tenants promoted to a graph), and
rerank with codes=sq8.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vecdb.bench.adapters.base import IndexChurn, Target, register
from vecdb.bench.adapters.codes import _train_rows
from vecdb.bench.measure import dir_bytes
from vecdb.index.allow import AllowSet
from vecdb.index.curator import Curator, CuratorParams
from vecdb.index.spann import SPANN, SPANNParams
from vecdb.types import F32Matrix


def _sq8(build_params: dict[str, Any]) -> bool:
    return str(build_params.get("codes", "float")) == "sq8"


def _narrowed(cls: type[Target], build_params: dict[str, Any]) -> tuple[str, ...]:
    """``rerank`` is read only by a build with SQ8 codes (float postings have nothing to re-rank)."""
    return tuple(k for k in cls.search_knobs if k != "rerank" or _sq8(build_params))


def _knobs(params: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {key: params[key] for key in names if key in params}


def _ints(params: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {key: int(params[key]) for key in names if key in params}


@register
class VecdbSPANN(IndexChurn, Target):
    """vecdb's SPANN, standalone, its LMDB environment in the target's workdir."""

    name = "vecdb-spann"
    params_kind = "spann"
    search_knobs = tuple(sorted(SPANNParams.knobs()))
    build_knobs: ClassVar[tuple[str, ...]] = ("posting_limit", "head_size", "replicas", "eps1", "rng_factor",
                                              "head_M", "head_ef_construction", "exact_heads", "head_route", "codes",
                                              "train")
    supports_filter = True
    filter_paths = {"scan": "postings read for the query, entries outside the allow-set skipped"}
    _INT = ("posting_limit", "head_size", "replicas", "head_M", "head_ef_construction", "exact_heads")
    _FLOAT = ("eps1", "rng_factor")

    def build(self, base: F32Matrix) -> None:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="vecdb-bench-spann-"))
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        kwargs: dict[str, Any] = {**_ints(self.build_params, self._INT),
                                  **{k: float(self.build_params[k]) for k in self._FLOAT if k in self.build_params}}
        if "head_route" in self.build_params:   # checked by SPANN (a clear error names the choices)
            kwargs["head_route"] = str(self.build_params["head_route"])
        self.index = SPANN(self.dim, self.metric, path=self.workdir / "spann",
                           codes="sq8" if _sq8(self.build_params) else None, **kwargs)
        self.index.train(_train_rows(base, self.build_params))
        self.index.add(base, np.arange(len(base), dtype=np.int64))

    @classmethod
    def knobs_for(cls, build_params: dict[str, Any]) -> tuple[str, ...]:
        return _narrowed(cls, build_params)

    def search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None = None) -> np.ndarray:
        allowed = None if allow is None else self.reused(allow, AllowSet.from_ids)
        return self.index.search(queries, k, allow=allowed, **_knobs(params, self.search_knobs)).ids

    def memory_bytes(self) -> int:
        return self.index.memory_bytes()

    def disk_bytes(self) -> int | None:
        return dir_bytes(self.workdir) if self.workdir is not None else None

    def close(self) -> None:
        if getattr(self, "index", None) is not None:
            self.index.close()


@register
class VecdbCurator(IndexChurn, Target):
    """vecdb's Curator. In a tenant workload every tenant's rows are granted at build and a
    tenant's search walks that tenant's sub-tree (``search(q, k, tenant=t)``); otherwise it
    searches every vector (``allow`` as a filter)."""

    name = "vecdb-curator"
    params_kind = "curator"
    search_knobs = tuple(sorted(CuratorParams.knobs()))
    recall_knobs = ("budget", "rerank")
    build_knobs: ClassVar[tuple[str, ...]] = ("n_root", "branching", "max_depth", "max_shortlist", "tier_threshold",
                                              "codes", "train")
    supports_filter = True
    native_tenants = True
    filter_paths = {"scan": "tree walk, members outside the allow-set skipped"}
    _INT = ("n_root", "branching", "max_depth", "max_shortlist", "tier_threshold")

    def build(self, base: F32Matrix) -> None:
        self.index = Curator(self.dim, self.metric, codes="sq8" if _sq8(self.build_params) else "float",
                             **_ints(self.build_params, self._INT))
        self.index.train(_train_rows(base, self.build_params))
        self.index.add(base, np.arange(len(base), dtype=np.int64))
        for tenant, rows in enumerate(self.tenant_members or ()):
            if len(rows):
                self.index.grant(tenant, rows[rows < len(base)])

    @classmethod
    def knobs_for(cls, build_params: dict[str, Any]) -> tuple[str, ...]:
        return _narrowed(cls, build_params)

    def search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None = None) -> np.ndarray:
        allowed = None if allow is None else self.reused(allow, AllowSet.from_ids)
        return self.index.search(queries, k, allow=allowed, **_knobs(params, self.search_knobs)).ids

    def search_tenant(self, queries: F32Matrix, k: int, params: dict[str, Any], tenant: int,
                      members: np.ndarray) -> np.ndarray:
        if self.tenant_members is None:  # built without tenants: filter by the members instead
            return self.search(queries, k, params, members)
        return self.index.search(queries, k, tenant=tenant, **_knobs(params, self.search_knobs)).ids

    def memory_bytes(self) -> int:
        return self.index.memory_bytes()
