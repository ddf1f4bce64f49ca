"""Workloads of ``vecdb bench run`` beyond plain k-NN, each with its exact ground truth:

- ``filter``: a payload filter keeping a fraction ``s`` of the base rows (a synthetic uniform
  attribute drawn with a fixed seed; the rows with attribute < s pass), truth over those rows;
- ``tenants``: every query searches one tenant's rows (dataset labels, or synthetic Zipf
  tenants), truth over that tenant's rows;
- ``churn``: rounds of inserts and deletes between searches, truth over the live rows.

Filter and tenant truths are cached under ``cache_dir()/truth`` keyed by the hashes of the
base and query arrays, so a second run (or another k up to the cached depth) skips the scan.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from vecdb.data import Dataset
from vecdb.data.registry import cache_dir
from vecdb.data.synthetic import tenant_labels
from vecdb.errors import FailedPreconditionError, InvalidArgumentError
from vecdb.eval import ground_truth

if TYPE_CHECKING:
    from vecdb.bench.adapters.base import Target

log = logging.getLogger(__name__)

#: seed of the synthetic filter attribute, of synthetic tenants and of the queries' tenants
FILTER_SEED = 1338
TENANT_SEED = 7
QUERY_TENANT_SEED = 11
CHURN_SEED = 23
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
    #: figures of the churn round measured before this workload, per target name
    churn: dict[str, dict[str, Any]] = field(default_factory=dict)


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
@dataclass
class ChurnPlan:
    """The churn sequence every target replays: the build holds ``base[:n_initial]``; round r
    inserts ``inserts[r]`` (held-back rows) and deletes ``deletes[r]`` (rows drawn, fixed seed,
    from the rows live before the round)."""

    fraction: float
    n_initial: int
    inserts: list[np.ndarray]
    deletes: list[np.ndarray]
    live: list[np.ndarray]


def churn_plan(n: int, fraction: float, rounds: int, k: int) -> ChurnPlan:
    """Hold back ``fraction`` of the rows (the last ones: insertion order), replay them in
    ``rounds`` rounds, each deleting as many live rows as it inserts."""
    if not 0 < fraction < 1:
        raise InvalidArgumentError(f"--churn takes the fraction of rows replaced, in (0, 1); got {fraction}")
    if rounds < 1:
        raise InvalidArgumentError(f"--churn-rounds must be >= 1, got {rounds}")
    held = int(round(n * fraction))
    n_initial = n - held
    if held < rounds or n_initial - held < k:
        raise InvalidArgumentError(f"--churn {fraction} with {rounds} rounds needs more rows than {n}")
    rng = np.random.default_rng(CHURN_SEED)
    live = np.arange(n_initial, dtype=np.int64)
    inserts, deletes, lives = [], [], []
    for chunk in np.array_split(np.arange(n_initial, n, dtype=np.int64), rounds):
        gone = np.sort(rng.choice(live, size=len(chunk), replace=False))
        live = np.union1d(np.setdiff1d(live, gone, assume_unique=True), chunk)
        inserts.append(chunk)
        deletes.append(gone)
        lives.append(live)
    return ChurnPlan(fraction, n_initial, inserts, deletes, lives)


def churn_round(ds: Dataset, queries: np.ndarray, plan: ChurnPlan, r: int, k: int) -> Workload:
    """The workload searched after round ``r`` (truth over the rows live then)."""
    live = plan.live[r]
    info = {"kind": "churn", "fraction": plan.fraction, "round": r + 1, "rounds": len(plan.inserts),
            "n_initial": plan.n_initial, "inserted": int(len(plan.inserts[r])), "deleted": int(len(plan.deletes[r])),
            "n_live": int(len(live)), "seed": CHURN_SEED}
    return Workload(f"churn {plan.fraction:g} round {r + 1}/{len(plan.inserts)}", info,
                    _subset_truth(ds, queries, live, k))


def apply_churn(target: Target, ds: Dataset, plan: ChurnPlan, r: int) -> dict[str, Any]:
    """Insert then delete round ``r``'s rows in ``target``, timed apart; its memory after."""
    import time

    ins, dels = plan.inserts[r], plan.deletes[r]
    t0 = time.perf_counter()
    target.insert(np.ascontiguousarray(ds.base[ins]), ins)
    insert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    target.delete(dels)
    delete_s = time.perf_counter() - t0
    return {"insert_s": insert_s, "delete_s": delete_s,
            "inserts_per_s": len(ins) / insert_s if insert_s > 0 else None,
            "deletes_per_s": len(dels) / delete_s if delete_s > 0 else None,
            "index_memory_bytes": target.memory_bytes()}
