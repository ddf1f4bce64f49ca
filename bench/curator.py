"""Curator multi-tenant benchmark (issue 14), four workloads (``--workload``):

  1. arxiv-minilm-384's categories as tenants (a paper belongs to all its categories), each
     query sent to its own (primary) category;
  2. the same, with half the queries (every other one) sent to small categories (< 0.5 % of
     the set), round-robin over them;
  3. its ~140k authors as tenants (fine-grained, heavily shared), each query sent to its
     author with the most papers in the set (queries with no such author are left out);
  4. synthetic: ``--synth-n`` x ``--synth-dim`` unit vectors around 1,000 centres,
     ``--synth-tenants`` tenants with Zipf sizes, every vector shared by 1-3 of them (picked
     by tenant size), queries sent to tenants in proportion to their size.

Targets, one thread (``--targets``):

  - ``curator``: vecdb's Curator (one shared tree, per-tenant shortlists), sweeping ``budget``;
  - ``hnswlib-per-tenant`` / ``vecdb-per-tenant``: one HNSW per tenant holding its members;
  - ``hnswlib-filter``: one shared hnswlib index searched with its filter callable;
  - ``faiss-bitmap``: one shared faiss ``IndexHNSWFlat`` searched with an ``IDSelectorBitmap``;
  - ``vecdb-filter``: one shared vecdb HNSW searched with the tenant's members as ``allow=``
    (as a collection does today: an exact scan of a small tenant, a filtered walk otherwise);
  - ``vecdb-postfilter``: one shared vecdb HNSW asked for its top ``ef`` without a filter,
    the tenant's members among them kept.
  The HNSW targets sweep ``ef``.

Per setting: recall@10 against exact per-tenant search, QPS one query per call and batched
(all queries of a tenant in one call), latency p50/p99. Per target: build time, counted
memory (vecdb's own count; hnswlib and faiss by their layout formulas) and the RSS growth of
the build; Curator's and vecdb-per-tenant's insert / grant / revoke latency. The summary gives
each target's best QPS at recall@10 >= 0.90 and >= 0.95. Prints a table, saves JSON.

    python bench/curator.py                               # workload 1, the full set (the lead's run)
    python bench/curator.py --workload 2 --n-base 5000 --n-queries 200 --allow-busy   # a quick try
    python bench/curator.py --workload 4 --synth-n 1000000 --synth-tenants 1000
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

K = 10
RECALLS = (0.90, 0.95)
#: rows of the warm-up build of every target, before any build is measured
WARMUP_ROWS = 1000


# ---- data ---------------------------------------------------------------------------------
WORKLOADS = {1: "categories as tenants, each query to its primary category",
             2: "categories as tenants, half the queries to small categories (< 0.5 % of the set)",
             3: "authors as tenants, each query to its author with the most papers",
             4: "synthetic, Zipf-sized tenants, vectors shared by 1-3 tenants"}
#: a small category of workload 2 holds fewer than this share of the base rows
SMALL_SHARE = 0.005


def dataset_folder(name: str) -> Path:
    from vecdb.data.registry import search_roots

    folder = next((r / name for r in search_roots() if (r / name / "base.npy").exists()), None)
    if folder is None:
        sys.exit(f"dataset {name!r} not found under {[str(r) for r in search_roots()]}")
    return folder


def csr_members(indptr: np.ndarray, indices: np.ndarray, n: int) -> dict[int, np.ndarray]:
    """tenant -> sorted member rows (< n) from a row -> tenants CSR."""
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    keep = rows < n
    rows, labels = rows[keep], indices[keep]
    order = np.lexsort((rows, labels))
    tenants, starts = np.unique(labels[order], return_index=True)
    bounds = np.append(starts, len(order))
    return {int(t): rows[order[bounds[i] : bounds[i + 1]]] for i, t in enumerate(tenants)}


def exact_gt(base: np.ndarray, queries: np.ndarray, q_tenant: np.ndarray, members: dict[int, np.ndarray]) -> np.ndarray:
    """Exact per-tenant top-K rows (unit vectors: inner-product order), -1 padded."""
    gt = np.full((len(queries), K), -1, np.int64)
    for t in np.unique(q_tenant).tolist():
        qi = np.flatnonzero(q_tenant == t)
        mine = members[t]
        scores = queries[qi] @ base[mine].T
        if scores.shape[1] > 4 * K:                     # the best 4K by value, then ordered (ties: lower row)
            part = np.argpartition(-scores, 4 * K, axis=1)[:, : 4 * K]
            part.sort(axis=1)
            order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")[:, :K]
            top = np.take_along_axis(part, order, 1)
        else:
            top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
        gt[qi, : top.shape[1]] = mine[top]
    return gt


def load(name: str, n_base: int | None, n_queries: int | None, workload: int = 1) -> dict[str, Any]:
    """Base rows, queries, each query's tenant, tenant -> member rows, exact per-tenant top-K
    (workloads 1-3 on a dataset with category and author lists)."""
    folder = dataset_folder(name)
    base = np.load(folder / "base.npy", mmap_mode="r")
    n = len(base) if n_base is None else min(n_base, len(base))
    base = np.ascontiguousarray(base[:n], np.float32)
    queries = np.load(folder / "query.npy").astype(np.float32)
    if workload == 3:
        members = csr_members(np.load(folder / "authors_indptr.npy"), np.load(folder / "authors_indices.npy"), n)
        qptr, qidx = np.load(folder / "query_authors_indptr.npy"), np.load(folder / "query_authors_indices.npy")
        q_tenant = np.full(len(queries), -1, np.int64)
        for i in range(len(queries)):
            mine = [int(a) for a in qidx[qptr[i] : qptr[i + 1]] if int(a) in members]
            if mine:
                q_tenant[i] = max(mine, key=lambda a: (len(members[a]), -a))
    else:
        members = csr_members(np.load(folder / "labels_indptr.npy"), np.load(folder / "labels_indices.npy"), n)
        q_tenant = np.load(folder / "query_labels.npy").astype(np.int64)
        q_tenant = np.where([int(t) in members for t in q_tenant], q_tenant, -1)
    ok = q_tenant >= 0
    queries, q_tenant = queries[ok], q_tenant[ok]
    if n_queries is not None:
        queries, q_tenant = queries[:n_queries], q_tenant[:n_queries]
    if workload == 2:
        small = sorted(t for t, rows in members.items() if len(rows) < SMALL_SHARE * n)
        if not small:
            sys.exit(f"no category holds fewer than {SMALL_SHARE:.1%} of {n} rows")
        q_tenant = q_tenant.copy()
        q_tenant[1::2] = np.resize(np.array(small, np.int64), len(q_tenant[1::2]))
    return {"name": name, "base": base, "queries": queries, "q_tenant": q_tenant, "members": members,
            "gt": exact_gt(base, queries, q_tenant, members)}


def synthetic(n: int, dim: int, n_tenants: int, n_queries: int, seed: int = 0, zipf: float = 1.0) -> dict[str, Any]:
    """Workload 4: unit vectors around 1,000 centres; tenant t (rank t + 1) has weight
    1 / (t + 1) ** zipf, every vector belongs to 1-3 distinct tenants drawn by weight (each
    tenant gets at least one vector); queries go to tenants drawn by weight."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim), np.float32)

    def points(m: int) -> np.ndarray:
        x = centres[rng.integers(0, len(centres), m)] + np.float32(0.6) * rng.standard_normal((m, dim), np.float32)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    base = points(n)
    weight = 1.0 / np.arange(1, n_tenants + 1) ** zipf
    weight /= weight.sum()
    shares = rng.integers(1, 4, n)
    pairs_row, pairs_t = [], []
    for m in (1, 2, 3):
        rows = np.flatnonzero(shares == m)
        picks = rng.choice(n_tenants, (len(rows), m), p=weight)
        for _ in range(1000):                          # redraw rows that drew a tenant twice
            srt = np.sort(picks, axis=1)
            again = np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))
            if not len(again):
                break
            picks[again] = rng.choice(n_tenants, (len(again), m), p=weight)
        pairs_row.append(np.repeat(rows, m))
        pairs_t.append(picks.reshape(-1))
    row_of, tenant_of = np.concatenate(pairs_row), np.concatenate(pairs_t)
    empty = np.setdiff1d(np.arange(n_tenants), tenant_of)
    row_of = np.append(row_of, rng.choice(n, len(empty), replace=False))
    tenant_of = np.append(tenant_of, empty)
    key = np.unique(tenant_of.astype(np.int64) * n + row_of)          # sorted by (tenant, row), each pair once
    tenant_of, row_of = key // n, key % n
    tenants, starts = np.unique(tenant_of, return_index=True)
    bounds = np.append(starts, len(key))
    members = {int(t): row_of[bounds[i] : bounds[i + 1]] for i, t in enumerate(tenants)}
    queries = points(n_queries)
    q_tenant = rng.choice(n_tenants, n_queries, p=weight).astype(np.int64)
    return {"name": f"synthetic-{n}x{dim}-{n_tenants}t", "base": base, "queries": queries, "q_tenant": q_tenant,
            "members": members, "gt": exact_gt(base, queries, q_tenant, members)}


def workload_data(args: Any, n_base: int | None, n_queries: int | None) -> dict[str, Any]:
    if args.workload == 4:
        n = args.synth_n if n_base is None else min(n_base, args.synth_n)
        return synthetic(n, args.synth_dim, min(args.synth_tenants, n), n_queries or args.synth_queries, args.seed)
    return load(args.dataset, n_base, n_queries, args.workload)


def recall(ids: np.ndarray, gt: np.ndarray) -> float:
    hits = [len(set(a[a >= 0].tolist()) & set(b[b >= 0].tolist())) / max(1, int((b >= 0).sum()))
            for a, b in zip(ids, gt)]
    return float(np.mean(hits))


def rss() -> int:
    from vecdb.bench.rss import status_bytes

    return status_bytes("VmRSS")


def anon_huge_pages() -> int | None:
    """Bytes of the process's anonymous memory on transparent huge pages (Linux; None elsewhere):
    random row reads cost a page walk each on 4 KiB pages, so a run's QPS depends on it."""
    try:
        text = Path("/proc/self/smaps_rollup").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) * 1024 for line in text.splitlines() if line.startswith("AnonHugePages:")), None)


def hnswlib_formula_bytes(n: int, dim: int, M: int) -> int:
    """hnswlib's layout (the formula ``vecdb.bench.adapters.hnsw.Hnswlib.memory_bytes`` documents)."""
    per_element = (2 * M + 1) * 4 + dim * 4 + 8 + 8 + 4 + 40 + 40 + 2
    return int(n * per_element + n / (M - 1) * (M + 1) * 4 + 65536 * 40)


# ---- targets ------------------------------------------------------------------------------
class CuratorTarget:
    name = "curator"

    def __init__(self, data: dict[str, Any], params: dict[str, Any]) -> None:
        from vecdb.index import Curator

        self.index = Curator(data["base"].shape[1], "cosine", **params)
        self.params = params

    def build(self, data: dict[str, Any]) -> None:
        base = data["base"]
        self.index.train(base)
        self.index.add(base, np.arange(len(base)))
        for t, rows in data["members"].items():
            self.index.grant(t, rows)

    def search(self, q: np.ndarray, tenant: int, setting: dict[str, int]) -> np.ndarray:
        return self.index.search(q, K, tenant=tenant, **setting).ids

    def counted_bytes(self) -> int:
        return self.index.memory_bytes()

    def memory_parts(self) -> dict[str, int]:
        """The counted bytes by part (``Curator.memory_parts``), recorded in the JSON."""
        return self.index.memory_parts()

    def write_latency(self, data: dict[str, Any], rng: np.random.Generator) -> dict[str, float]:
        """Median ms of one call: add 10 new vectors to a tenant, grant 10 ids, revoke them."""
        index, base = self.index, data["base"]
        tenants = sorted(data["members"])
        out: dict[str, list[float]] = {"insert_10": [], "grant_10": [], "revoke_10": []}
        next_id = len(base)
        for rep in range(30):
            t = tenants[rep % len(tenants)]
            rows = rng.choice(len(base), 10, replace=False)
            t0 = time.perf_counter()
            index.add(base[rows], np.arange(next_id, next_id + 10), tenant=t)
            out["insert_10"].append(time.perf_counter() - t0)
            next_id += 10
            t0 = time.perf_counter()
            index.grant(t, rows)
            out["grant_10"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            index.revoke(t, rows)
            out["revoke_10"].append(time.perf_counter() - t0)
        index.remove(np.arange(len(base), next_id))
        return {k: round(float(np.median(v)) * 1e3, 4) for k, v in out.items()}


class PerTenantHnswlib:
    name = "hnswlib-per-tenant"

    def __init__(self, data: dict[str, Any], params: dict[str, Any]) -> None:
        self.M, self.efc = params["M"], params["ef_construction"]
        self.indexes: dict[int, Any] = {}
        self.dim = data["base"].shape[1]
        self.all_sizes = [len(rows) for rows in data["members"].values()]

    def build(self, data: dict[str, Any]) -> None:
        import hnswlib

        for t, rows in built_tenants(data).items():
            index = hnswlib.Index(space="ip", dim=self.dim)
            index.init_index(max_elements=len(rows), M=self.M, ef_construction=self.efc, random_seed=0)
            index.set_num_threads(1)
            index.add_items(data["base"][rows], rows)
            self.indexes[t] = index

    def search(self, q: np.ndarray, tenant: int, setting: dict[str, int]) -> np.ndarray:
        index = self.indexes[tenant]
        index.set_ef(max(setting["ef"], K))
        k = min(K, index.get_current_count())
        labels, _ = index.knn_query(q, k=k, num_threads=1)
        out = np.full((len(q), K), -1, np.int64)
        out[:, :k] = labels
        return out

    def counted_bytes(self) -> int:
        """By formula for every tenant (also those not built: see ``built_tenants``)."""
        return sum(hnswlib_formula_bytes(n, self.dim, self.M) for n in self.all_sizes)


class FilteredHnswlib:
    name = "hnswlib-filter"

    def __init__(self, data: dict[str, Any], params: dict[str, Any]) -> None:
        self.M, self.efc = params["M"], params["ef_construction"]
        self.dim = data["base"].shape[1]
        self.masks: dict[int, tuple[np.ndarray, int]] = {}

    def build(self, data: dict[str, Any]) -> None:
        import hnswlib

        base = data["base"]
        self.index = hnswlib.Index(space="ip", dim=self.dim)
        self.index.init_index(max_elements=len(base), M=self.M, ef_construction=self.efc, random_seed=0)
        self.index.set_num_threads(1)
        self.index.add_items(base, np.arange(len(base)))
        for t, rows in queried_tenants(data).items():
            mask = np.zeros(len(base), bool)
            mask[rows] = True
            self.masks[t] = (mask, len(rows))

    def search(self, q: np.ndarray, tenant: int, setting: dict[str, int]) -> np.ndarray:
        mask, size = self.masks[tenant]
        self.index.set_ef(max(setting["ef"], K))
        k = min(K, size)
        out = np.full((len(q), K), -1, np.int64)
        try:
            labels, _ = self.index.knn_query(q, k=k, num_threads=1, filter=lambda label: bool(mask[label]))
        except RuntimeError:            # hnswlib raises when the filtered walk finds fewer than k
            return out
        out[:, :k] = labels
        return out

    def counted_bytes(self) -> int:
        return hnswlib_formula_bytes(self.index.get_current_count(), self.dim, self.M)


def faiss_hnsw_formula_bytes(n: int, dim: int, M: int) -> int:
    """faiss ``IndexHNSWFlat``: flat storage, level-0 lists of 2M and upper lists of M ids
    (int32) for the ~1/(M-1) nodes above level 0, offsets (8 B) and levels (4 B) per node."""
    return int(n * (dim * 4 + 2 * M * 4 + 8 + 4) + n / (M - 1) * M * 4)


class PerTenantVecdb:
    name = "vecdb-per-tenant"

    def __init__(self, data: dict[str, Any], params: dict[str, Any]) -> None:
        self.M, self.efc = params["M"], params["ef_construction"]
        self.indexes: dict[int, Any] = {}
        self.dim = data["base"].shape[1]

    def _new(self) -> Any:
        from vecdb.index import HNSW

        return HNSW(self.dim, "cosine", M=self.M, ef_construction=self.efc, seed=0, progress=False)

    def build(self, data: dict[str, Any]) -> None:
        self.built_share = 1.0
        built = built_tenants(data)
        if len(built) < len(data["members"]):
            self.built_share = sum(map(len, built.values())) / sum(map(len, data["members"].values()))
        for t, rows in built.items():
            index = self._new()
            index.add(data["base"][rows], rows)
            self.indexes[t] = index

    def search(self, q: np.ndarray, tenant: int, setting: dict[str, int]) -> np.ndarray:
        return self.indexes[tenant].search(q, K, **setting).ids

    def counted_bytes(self) -> int:
        """Measured; scaled by memberships when only the queried tenants were built (an estimate)."""
        return int(sum(i.memory_bytes() for i in self.indexes.values()) / self.built_share)

    def write_latency(self, data: dict[str, Any], rng: np.random.Generator) -> dict[str, float]:
        """Median ms of one call, as ``CuratorTarget.write_latency``: an insert adds 10 new
        vectors to the tenant's index, a grant copies 10 stored ones into it, a revoke removes
        those again."""
        base = data["base"]
        tenants = sorted(self.indexes)
        out: dict[str, list[float]] = {"insert_10": [], "grant_10": [], "revoke_10": []}
        next_id = len(base)
        for rep in range(30):
            index = self.indexes[tenants[rep % len(tenants)]]
            fresh = np.arange(next_id, next_id + 10)
            next_id += 10
            rows = rng.choice(len(base), 10, replace=False)
            t0 = time.perf_counter()
            index.add(base[rows], fresh)
            out["insert_10"].append(time.perf_counter() - t0)
            index.remove(fresh)
            rows = rows[~np.isin(rows, index.ids)]
            t0 = time.perf_counter()
            index.add(base[rows], rows)
            out["grant_10"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            index.remove(rows)
            out["revoke_10"].append(time.perf_counter() - t0)
        return {k: round(float(np.median(v)) * 1e3, 4) for k, v in out.items()}


class SharedVecdb:
    """One vecdb HNSW over every vector; ``post`` picks post-filtering over ``allow=``."""

    def __init__(self, data: dict[str, Any], params: dict[str, Any], post: bool = False) -> None:
        self.M, self.efc, self.post = params["M"], params["ef_construction"], post
        self.dim = data["base"].shape[1]
        self.allow: dict[int, Any] = {}
        self.member_mask: dict[int, np.ndarray] = {}

    def build(self, data: dict[str, Any]) -> None:
        from vecdb.index import HNSW
        from vecdb.index.allow import AllowSet

        base = data["base"]
        self.index = HNSW(self.dim, "cosine", M=self.M, ef_construction=self.efc, seed=0, progress=False)
        self.index.add(base, np.arange(len(base)))
        for t, rows in queried_tenants(data).items():
            if self.post:
                mask = np.zeros(len(base), bool)
                mask[rows] = True
                self.member_mask[t] = mask
            else:
                self.allow[t] = AllowSet.from_ids(rows)      # one per tenant: its bitmap is built once

    def search(self, q: np.ndarray, tenant: int, setting: dict[str, int]) -> np.ndarray:
        if not self.post:
            return self.index.search(q, K, allow=self.allow[tenant], **setting).ids
        ef = setting["ef"]
        ids = self.index.search(q, max(ef, K), ef=ef).ids
        keep = self.member_mask[tenant][np.maximum(ids, 0)] & (ids >= 0)
        out = np.full((len(q), K), -1, np.int64)
        for i in range(len(q)):
            mine = ids[i][keep[i]][:K]
            out[i, : len(mine)] = mine
        return out

    def counted_bytes(self) -> int:
        return self.index.memory_bytes()


class FilteredVecdb(SharedVecdb):
    name = "vecdb-filter"


class PostFilteredVecdb(SharedVecdb):
    name = "vecdb-postfilter"

    def __init__(self, data: dict[str, Any], params: dict[str, Any]) -> None:
        super().__init__(data, params, post=True)


class BitmapFaiss:
    name = "faiss-bitmap"

    def __init__(self, data: dict[str, Any], params: dict[str, Any]) -> None:
        self.M, self.efc = params["M"], params["ef_construction"]
        self.dim = data["base"].shape[1]
        self.selectors: dict[int, tuple[Any, np.ndarray, int]] = {}

    def build(self, data: dict[str, Any]) -> None:
        import faiss

        faiss.omp_set_num_threads(1)
        base = data["base"]
        self.index = faiss.IndexHNSWFlat(self.dim, self.M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = self.efc
        self.index.add(base)
        for t, rows in queried_tenants(data).items():
            mask = np.zeros(len(base), bool)
            mask[rows] = True
            bits = np.packbits(mask, bitorder="little")      # faiss reads bit i as bits[i >> 3] >> (i & 7)
            self.selectors[t] = (faiss.IDSelectorBitmap(len(base), faiss.swig_ptr(bits)), bits, len(rows))

    def search(self, q: np.ndarray, tenant: int, setting: dict[str, int]) -> np.ndarray:
        import faiss

        selector, _, size = self.selectors[tenant]
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(setting["ef"], K))
        _, labels = self.index.search(q, K, params=params)
        return labels.astype(np.int64)

    def counted_bytes(self) -> int:
        return faiss_hnsw_formula_bytes(self.index.ntotal, self.dim, self.M)


def queried_tenants(data: dict[str, Any]) -> dict[int, np.ndarray]:
    """The tenants that receive queries: the shared-index targets build a filter (a bitmap of
    the base rows) for these only (one per tenant of workload 3 would take ~7 GB)."""
    return {t: data["members"][t] for t in np.unique(data["q_tenant"]).tolist()}


def built_tenants(data: dict[str, Any]) -> dict[int, np.ndarray]:
    """The tenants a one-index-per-tenant target builds: all, or with ``queried_only`` (the
    default of workload 3: ~140k hnswlib indexes would take ~2.5 MB of RSS each) those that
    receive queries; memory then counts every tenant by formula or by scaling."""
    if not data.get("queried_only"):
        return data["members"]
    return queried_tenants(data)


TARGETS: dict[str, Callable[..., Any]] = {"curator": CuratorTarget, "hnswlib-per-tenant": PerTenantHnswlib,
                                         "vecdb-per-tenant": PerTenantVecdb, "hnswlib-filter": FilteredHnswlib,
                                         "faiss-bitmap": BitmapFaiss, "vecdb-filter": FilteredVecdb,
                                         "vecdb-postfilter": PostFilteredVecdb}
#: targets run when ``--targets`` is not given
DEFAULT_TARGETS = ("curator", "hnswlib-per-tenant", "hnswlib-filter")


# ---- timing -------------------------------------------------------------------------------
def one_pass(target: Any, data: dict[str, Any], value: dict[str, int],
             batched: bool) -> tuple[np.ndarray, np.ndarray, float, float]:
    """All queries through ``target``: one per call, or batched per tenant. (ids, per-call s,
    total s, the calling thread's CPU s: less than the total by the time it was not running)."""
    queries, q_tenant = data["queries"], data["q_tenant"]
    ids = np.full((len(queries), K), -1, np.int64)
    lat = []
    cpu = time.thread_time()
    start = time.perf_counter()
    if batched:
        for t in np.unique(q_tenant).tolist():
            qi = np.flatnonzero(q_tenant == t)
            t0 = time.perf_counter()
            ids[qi] = target.search(queries[qi], t, value)
            lat.append(time.perf_counter() - t0)
    else:
        for i in range(len(queries)):
            t0 = time.perf_counter()
            ids[i] = target.search(queries[i : i + 1], int(q_tenant[i]), value)[0]
            lat.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    return ids, np.asarray(lat), total, time.thread_time() - cpu


def sweep(targets: dict[str, Any], data: dict[str, Any], grids: dict[str, list[dict[str, int]]], repeats: int,
          target_repeats: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Every (target, knob setting, batched) setting, ``repeats`` passes each (``target_repeats``:
    fewer for the named targets), interleaved (pass 1 of every setting, then pass 2 ...); a row
    reports the fastest pass."""
    from vecdb.bench.machine import Watch

    settings = [(name, value, batched) for name in targets for value in grids[name] for batched in (False, True)]
    warm = {**data, "queries": data["queries"][:4], "q_tenant": data["q_tenant"][:4]}
    passes: list[list[tuple[np.ndarray, np.ndarray, float, float]]] = [[] for _ in settings]
    shares: list[list[Any]] = [[] for _ in settings]
    own = target_repeats or {}
    for rep in range(repeats):
        for j, (name, value, batched) in enumerate(settings):
            if rep >= own.get(name, repeats):
                continue
            one_pass(targets[name], warm, value, batched)
            watch = Watch()
            passes[j].append(one_pass(targets[name], data, value, batched))
            shares[j].append(watch.stop())
    rows: list[dict[str, Any]] = []
    for j, (name, value, batched) in enumerate(settings):
        ids, lat, best, cpu = min(passes[j], key=lambda p: p[2])
        busy = any(q.busy for q in shares[j])
        row = {"target": name, **value, "batched": batched, "recall@10": round(recall(ids, data["gt"]), 4),
               "qps": round(len(ids) / best, 1), "qps_passes": [round(len(ids) / p[2], 1) for p in passes[j]],
               "cpu_qps": round(len(ids) / max(cpu, 1e-9), 1),
               "cpu_qps_passes": [round(len(ids) / max(p[3], 1e-9), 1) for p in passes[j]],
               "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 4),
               "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 4),
               "others_share": max(q.others_share for q in shares[j]), "busy": busy}
        rows.append(row)
        shown = ",".join(f"{k}={v}" for k, v in value.items())
        print(f"{name:20s} {shown:18s} {'batch' if batched else 'one  '} recall@10={row['recall@10']:.4f} "
              f"qps={row['qps']:>9.1f} (cpu {row['cpu_qps']:>9.1f}) p50={row['p50_ms']:.3f}ms"
              f"{' !busy' if busy else ''}", flush=True)
    return rows


def summary(rows: list[dict[str, Any]], builds: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target and mode: the best QPS among settings reaching each recall, beside memory and build time."""
    out = []
    for name, build in builds.items():
        for batched in (False, True):
            mine = [r for r in rows if r["target"] == name and r["batched"] == batched]
            entry: dict[str, Any] = {"target": name, "batched": batched, **build}
            for goal in RECALLS:
                ok = [r for r in mine if r["recall@10"] >= goal]
                entry[f"qps@{goal:.2f}"] = max((r["qps"] for r in ok), default=None)
            out.append(entry)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", type=int, choices=sorted(WORKLOADS), default=1)
    parser.add_argument("--dataset", default="arxiv-minilm-384", help="workloads 1-3")
    parser.add_argument("--synth-n", type=int, default=1_000_000, help="workload 4: vectors")
    parser.add_argument("--synth-dim", type=int, default=128)
    parser.add_argument("--synth-tenants", type=int, default=1000)
    parser.add_argument("--synth-queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-tenant", choices=("auto", "all", "queried"), default="auto",
                        help="tenants the one-index-per-tenant targets build (auto: queried ones on workload 3)")
    parser.add_argument("--n-base", type=int, default=None, help="first N base rows only (a quick try)")
    parser.add_argument("--n-queries", type=int, default=None)
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS), help=f"any of {', '.join(TARGETS)}")
    parser.add_argument("--budgets", default="256,512,1024,2048,4096,8192")
    parser.add_argument("--efs", default="10,20,40,80,160,320,640")
    parser.add_argument("--curator-efs", default="",
                        help="with tiering on: ef of the promoted tenants' graphs, one per budget (zipped with --budgets)")
    parser.add_argument("--curator-params", default='{"n_root": 32, "branching": 8, "max_depth": 3, "max_shortlist": 128}')
    parser.add_argument("--M", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--target-efs", default="{}",
                        help='JSON: an --efs list per HNSW target, e.g. \'{"hnswlib-filter": "10,40"}\' (its filtered '
                             'walk exhausts the graph on small tenants: ~50 ms a query on workload 3)')
    parser.add_argument("--target-repeats", default="{}", help='JSON: fewer passes for the named targets, e.g. \'{"hnswlib-filter": 1}\'')
    parser.add_argument("--allow-busy", action="store_true")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/curator__<dataset>.json)")
    args = parser.parse_args(argv)

    import numba

    from vecdb.bench.machine import bench_lock, check_quiet, provenance

    numba.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:
        pass
    names = [n for n in args.targets.split(",") if n]
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    with bench_lock():
        start_quiet = check_quiet(args.allow_busy)
        data = workload_data(args, args.n_base, args.n_queries)
        data["queried_only"] = args.per_tenant == "queried" or (args.per_tenant == "auto" and args.workload == 3)
        print(f"workload {args.workload} ({WORKLOADS[args.workload]}), {data['name']}: {len(data['base'])} base rows, "
              f"{len(data['members'])} tenants, {len(data['queries'])} queries", flush=True)
        hnsw = {"M": args.M, "ef_construction": args.ef_construction}
        params = {name: (json.loads(args.curator_params) if name == "curator" else hnsw) for name in TARGETS}
        budgets = [int(v) for v in args.budgets.split(",")]
        curator_efs = [int(v) for v in args.curator_efs.split(",") if v]
        if curator_efs and len(curator_efs) != len(budgets):
            parser.error("--curator-efs needs one value per --budgets value")
        efs = [{"ef": int(v)} for v in args.efs.split(",")]
        grids = {name: efs for name in TARGETS}
        target_efs = json.loads(args.target_efs)
        target_repeats = {name: int(v) for name, v in json.loads(args.target_repeats).items()}
        for name in [*target_efs, *target_repeats]:
            if name not in TARGETS or name == "curator" and name in target_efs:
                parser.error(f"--target-efs / --target-repeats name HNSW targets (of {', '.join(TARGETS)}), got {name!r}")
        for name, values in target_efs.items():
            grids[name] = [{"ef": int(v)} for v in str(values).split(",") if v]
        grids["curator"] = [{"budget": b, **({"ef": e} if curator_efs else {})} for b, e in zip(budgets, curator_efs or budgets)]
        targets: dict[str, Any] = {}
        builds: dict[str, dict[str, Any]] = {}
        warm = workload_data(argparse.Namespace(**{**vars(args), "workload": 4 if args.workload == 4 else 1}),
                             WARMUP_ROWS, 8)            # imports, JIT code and thread pools before RSS is read
        for name in names:
            warm_params = dict(params[name])
            if warm_params.get("tier_threshold"):        # promote some tenant: the tier kernels load here too
                warm_params["tier_threshold"] = 20
            TARGETS[name](warm, warm_params).build(warm)
        del warm
        for name in names:
            gc.collect()
            before = rss()
            target = TARGETS[name](data, params[name])
            t0 = time.perf_counter()
            target.build(data)
            build_s = time.perf_counter() - t0
            gc.collect()
            builds[name] = {"build_s": round(build_s, 3), "counted_bytes": int(target.counted_bytes()),
                            "rss_growth_bytes": rss() - before, "params": params[name],
                            "process_anon_huge_pages_bytes": anon_huge_pages()}
            if hasattr(target, "memory_parts"):
                builds[name]["memory_parts"] = target.memory_parts()
            if hasattr(target, "write_latency"):
                builds[name]["write_latency_ms"] = target.write_latency(data, np.random.default_rng(0))
            print(f"built {name}: {build_s:.2f}s, counted {builds[name]['counted_bytes'] / 2**20:.1f} MiB, "
                  f"RSS +{builds[name]['rss_growth_bytes'] / 2**20:.1f} MiB", flush=True)
            targets[name] = target
        rows = sweep(targets, data, grids, args.repeats, target_repeats)
    table = summary(rows, builds)
    print("\ntarget               mode   qps@0.90   qps@0.95   build_s   counted MiB")
    for e in table:
        q90, q95 = e["qps@0.90"], e["qps@0.95"]
        print(f"{e['target']:20s} {'batch' if e['batched'] else 'one  '} {q90 if q90 else '-':>9} {q95 if q95 else '-':>9} "
              f"{e['build_s']:>9.2f} {e['counted_bytes'] / 2**20:>12.1f}")
    sizes = np.array([len(m) for m in data["members"].values()])
    record = {"benchmark": "curator", "workload": args.workload, "workload_text": WORKLOADS[args.workload],
              "dataset": data["name"], "tenant_sizes": {"min": int(sizes.min()), "median": float(np.median(sizes)),
                                                        "max": int(sizes.max()), "memberships": int(sizes.sum())},
              "n_base": len(data["base"]), "n_queries": len(data["queries"]),
              "n_tenants": len(data["members"]), "per_tenant_built": "queried" if data["queried_only"] else "all",
              "k": K, "threads": 1, "repeats": args.repeats, "target_repeats": target_repeats,
              "start_quiet": start_quiet, "builds": builds, "rows": rows, "summary": table,
              "busy": {"flagged": any(r["busy"] for r in rows) or bool(start_quiet.get("busy"))},
              "provenance": provenance(argv)}
    suffix = "" if args.workload == 1 else f"__w{args.workload}"
    out = Path(args.out or Path(__file__).parent / "results" / f"curator__{data['name']}{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
