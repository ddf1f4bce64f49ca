"""Workloads of ``vecdb bench run`` beyond plain k-NN, each with its exact ground truth:

- ``filter``: a payload filter keeping a fraction ``s`` of the base rows (a synthetic uniform
  attribute drawn with a fixed seed; the rows with attribute < s pass), truth over those rows;
- ``tenants``: every query searches one tenant's rows (dataset labels, or synthetic Zipf
  tenants), truth over that tenant's rows;
- ``churn``: searches while a writer thread inserts and deletes rows (churn.py), each query
  scored against the rows live when it started.

Filter and tenant truths are cached under ``cache_dir()/truth`` keyed by the hashes of the
base and query arrays, so a second run (or another k up to the cached depth) skips the scan.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vecdb.bench.churn import CHURN_SEED, TRUTH_RULE, ChurnStream
from vecdb.data import Dataset
from vecdb.data.registry import cache_dir
from vecdb.data.synthetic import tenant_labels
from vecdb.errors import FailedPreconditionError, InvalidArgumentError
from vecdb.eval import ground_truth

log = logging.getLogger(__name__)

#: seed of the synthetic filter attribute, of synthetic tenants and of the queries' tenants
FILTER_SEED = 1338
TENANT_SEED = 7
QUERY_TENANT_SEED = 11
_ZIPF = re.compile(r"^zipf:(\d+)$")


@dataclass
class Workload:
    """One searched workload: what the lines record (``info``), its exact truth (rows of base,
    -1 padded) and what a search needs (an allow-set, or a tenant per query)."""

    label: str
    info: dict[str, Any]
    truth: np.ndarray
    allow: np.ndarray | None = None
    query_tenants: np.ndarray | None = None
    members: list[np.ndarray] | None = None


def parse_filters(text: str) -> list[float]:
    """``"0.01,0.1,0.5"`` -> selectivities in (0, 1]."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            s = float(part)
        except ValueError:
            raise InvalidArgumentError(f"--filter takes selectivities such as 0.01,0.1,0.5; got {part!r}") from None
        if not 0 < s <= 1:
            raise InvalidArgumentError(f"--filter selectivity must be in (0, 1], got {s}")
        out.append(s)
    if len(set(out)) != len(out):
        raise InvalidArgumentError(f"--filter lists a selectivity twice: {text!r}")
    return out


def check_tenants_spec(spec: str) -> None:
    """``dataset`` or ``zipf:N`` (N >= 1)."""
    m = _ZIPF.match(spec)
    if spec != "dataset" and not (m and int(m.group(1)) >= 1):
        raise InvalidArgumentError(f"--tenants takes 'dataset' or 'zipf:N' (N tenants >= 1), got {spec!r}")


def check_support(classes: dict[str, type], filters: list[float], tenants: str | None, churn: float | None) -> None:
    """A clear error naming the targets that cannot run a chosen workload, before any build."""
    for flag, wanted, ok in (
            ("--filter", bool(filters), lambda c: c.supports_filter or c.payload_filter),
            ("--tenants", tenants is not None, lambda c: c.supports_filter or c.native_tenants),
            ("--churn", churn is not None, lambda c: c.supports_churn)):
        bad = sorted(name for name, cls in classes.items() if wanted and not ok(cls))
        if bad:
            good = sorted(name for name, cls in _all_targets().items() if ok(cls))
            raise InvalidArgumentError(f"{flag}: target(s) {bad} do not support this workload; "
                                       f"targets that do: {', '.join(good)}")


def _all_targets() -> dict[str, type]:
    from vecdb.bench.adapters import TARGETS

    return TARGETS


# ---- ground truth, cached ---------------------------------------------------------------------
def _cache_path(ds_hash: str, q_hash: str, metric: str, key: str) -> Path:
    return cache_dir() / "truth" / f"{ds_hash[:16]}-{q_hash[:16]}-{metric}-{key}.npy"


def cached_truth(ds: Dataset, queries: np.ndarray, hashes: tuple[str, str], key: str, k: int,
                 compute: Callable[[int], np.ndarray]) -> np.ndarray:
    """The truth of ``key`` at depth >= k from the cache, else ``compute(k)`` saved there."""
    path = _cache_path(*hashes, ds.metric.value, key)
    if path.exists():
        try:
            got = np.load(path, allow_pickle=False)
            if got.ndim == 2 and got.shape[0] == len(queries) and got.shape[1] >= k:
                log.info("ground truth %s from cache %s", key, path)
                return np.ascontiguousarray(got[:, :k])
        except (OSError, ValueError):
            log.warning("ignoring an unreadable ground-truth cache file %s", path)
    truth = np.asarray(compute(k), np.int64)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.part")
        with open(tmp, "wb") as f:
            np.save(f, truth)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache costs a recomputation next time, nothing else
        log.warning("could not cache ground truth in %s: %s", path, exc)
    return truth


def _subset_truth(ds: Dataset, queries: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k over ``rows`` of base, as base row numbers (-1 padded)."""
    sub, _ = ground_truth(np.ascontiguousarray(ds.base[rows]), queries, k, ds.metric)
    return np.where(sub >= 0, rows[np.maximum(sub, 0)], -1)


# ---- filters ------------------------------------------------------------------------------------
def filter_attribute(n: int) -> np.ndarray:
    """The synthetic payload attribute of every base row: uniform in [0, 1), fixed seed."""
    return np.random.default_rng(FILTER_SEED).random(n)


def filter_workloads(ds: Dataset, queries: np.ndarray, hashes: tuple[str, str], k: int,
                     selectivities: list[float]) -> list[Workload]:
    attr = filter_attribute(len(ds.base))
    out = []
    for s in selectivities:
        allow = np.flatnonzero(attr < s).astype(np.int64)
        if len(allow) < k:
            raise InvalidArgumentError(f"--filter {s}: only {len(allow)} of {len(ds.base)} rows pass, fewer than "
                                       f"k={k}; use a larger selectivity")
        truth = cached_truth(ds, queries, hashes, f"filter-{s:g}-seed{FILTER_SEED}", k,
                             lambda depth, a=allow: _subset_truth(ds, queries, a, depth))
        out.append(Workload(f"filter {s:g}", {"kind": "filter", "selectivity": s, "n_allowed": int(len(allow)),
                                               "attribute_seed": FILTER_SEED}, truth, allow=allow))
    return out


# ---- tenants ------------------------------------------------------------------------------------
def members_of(indptr: np.ndarray, indices: np.ndarray, n_tenants: int | None = None) -> list[np.ndarray]:
    """Rows per tenant (sorted int64) from a CSR of tenants per row."""
    indptr = np.asarray(indptr, np.int64)
    indices = np.asarray(indices, np.int64)
    rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    n_t = int(indices.max()) + 1 if len(indices) else 0
    n_t = max(n_t, n_tenants or 0)
    order = np.argsort(indices, kind="stable")
    bounds = np.searchsorted(indices[order], np.arange(n_t + 1))
    return [np.unique(rows[order[bounds[t] : bounds[t + 1]]]) for t in range(n_t)]


def _tenant_labels(ds: Dataset, spec: str) -> tuple[np.ndarray, np.ndarray, str]:
    m = _ZIPF.match(spec)
    if m:
        indptr, indices = tenant_labels(len(ds.base), int(m.group(1)), seed=TENANT_SEED)
        return indptr, indices, f"zipf{m.group(1)}-seed{TENANT_SEED}"
    if ds.labels_indptr is None or ds.labels_indices is None:
        raise FailedPreconditionError(f"--tenants dataset: {ds.name} has no labels (labels.npy or "
                                      f"labels_indptr.npy/labels_indices.npy); use --tenants zipf:N")
    return ds.labels_indptr, ds.labels_indices, "dataset"


def tenant_workload(ds: Dataset, queries: np.ndarray, hashes: tuple[str, str], k: int, spec: str) -> Workload:
    """Every query searches one tenant with at least k rows: the query's own (primary) label
    when the dataset labels its queries and that tenant is large enough, else a tenant drawn
    (fixed seed) with probability proportional to its size, as requests follow tenant sizes."""
    indptr, indices, key = _tenant_labels(ds, spec)
    members = members_of(indptr, indices)
    sizes = np.array([len(m) for m in members], np.int64)
    eligible = np.flatnonzero(sizes >= k)
    if not len(eligible):
        raise InvalidArgumentError(f"--tenants {spec}: no tenant has k={k} rows")
    rng = np.random.default_rng(QUERY_TENANT_SEED)
    drawn = rng.choice(eligible, size=len(queries), p=sizes[eligible] / sizes[eligible].sum())
    own = ds.query_labels if key == "dataset" else None
    if own is not None:
        own = np.asarray(own, np.int64)[: len(queries)]
        ok = (own >= 0) & (own < len(sizes))
        ok[ok] &= sizes[own[ok]] >= k
        drawn = np.where(ok, own, drawn)
    q_tenants = drawn.astype(np.int64)

    def compute(depth: int) -> np.ndarray:
        out = np.full((len(queries), depth), -1, np.int64)
        for t in np.unique(q_tenants):
            qs = np.flatnonzero(q_tenants == t)
            out[qs] = _subset_truth(ds, np.ascontiguousarray(queries[qs]), members[t], depth)
        return out

    truth = cached_truth(ds, queries, hashes, f"tenants-{key}-min{k}-q{QUERY_TENANT_SEED}", k, compute)
    used = np.unique(q_tenants)
    info = {"kind": "tenants", "tenants": spec, "n_tenants": int(len(members)), "tenants_searched": int(len(used)),
            "query_tenant_rows_mean": float(sizes[q_tenants].mean()), "own_query_labels": own is not None}
    return Workload(f"tenants {spec}", info, truth, query_tenants=q_tenants, members=members)


# ---- churn --------------------------------------------------------------------------------------
def churn_workload(stream: ChurnStream, rate: float | None) -> Workload:
    """The churn workload's description (searched while a writer replays ``stream``; each line
    carries its own per-query truths, see churn.py: ``truth`` here is unused)."""
    info = {"kind": "churn", "fraction": stream.fraction, "rounds_per_pass": stream.rounds, "batch_rows": stream.batch,
            "n_initial": stream.n_initial, "n_live_bounds": [stream.n_initial, stream.n_initial + stream.batch],
            "rate_asked": rate, "seed": CHURN_SEED, "truth_rule": TRUTH_RULE}
    return Workload(f"churn {stream.fraction:g}", info, np.zeros((0, 0), np.int64))
