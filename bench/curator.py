"""Curator multi-tenant benchmark, workload 1 of issue 14: arxiv-minilm-384's categories as
tenants (a paper belongs to all its categories), each query sent to its own (primary)
category. Targets, one thread:

  - ``curator``: vecdb's Curator (one shared tree, per-tenant shortlists), sweeping ``budget``;
  - ``hnswlib-per-tenant``: one hnswlib index per tenant holding its members, sweeping ``ef``;
  - ``hnswlib-filter``: one shared hnswlib index searched with its per-label filter callable.

Per setting: recall@10 against exact per-tenant search, QPS one query per call and batched
(all queries of a tenant in one call), latency p50/p99. Per target: build time, counted
memory (Curator's own count; hnswlib by the layout formula of ``vecdb.bench.adapters.hnsw``)
and the RSS growth of the build; Curator's insert / grant / revoke latency. The summary gives
each target's best QPS at recall@10 >= 0.90 and >= 0.95. Prints a table, saves JSON.

    python bench/curator.py                               # the full set (the lead's run)
    python bench/curator.py --n-base 5000 --n-queries 200 --allow-busy   # a quick try
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
def load(name: str, n_base: int | None, n_queries: int | None) -> dict[str, Any]:
    """Base rows, queries, each query's tenant, tenant -> member rows, exact per-tenant top-K."""
    from vecdb.data.registry import search_roots

    folder = next((r / name for r in search_roots() if (r / name / "base.npy").exists()), None)
    if folder is None:
        sys.exit(f"dataset {name!r} not found under {[str(r) for r in search_roots()]}")
    base = np.load(folder / "base.npy", mmap_mode="r")
    n = len(base) if n_base is None else min(n_base, len(base))
    base = np.ascontiguousarray(base[:n], np.float32)
    indptr, indices = np.load(folder / "labels_indptr.npy"), np.load(folder / "labels_indices.npy")
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    keep = rows < n
    rows, labels = rows[keep], indices[keep]
    order = np.argsort(labels, kind="stable")
    tenants, starts = np.unique(labels[order], return_index=True)
    bounds = np.append(starts, len(order))
    members = {int(t): rows[order[bounds[i] : bounds[i + 1]]] for i, t in enumerate(tenants)}
    queries = np.load(folder / "query.npy").astype(np.float32)
    q_tenant = np.load(folder / "query_labels.npy").astype(np.int64)
    ok = np.array([int(t) in members for t in q_tenant])
    queries, q_tenant = queries[ok], q_tenant[ok]
    if n_queries is not None:
        queries, q_tenant = queries[:n_queries], q_tenant[:n_queries]
    gt = np.full((len(queries), K), -1, np.int64)
    for t in np.unique(q_tenant).tolist():
        qi = np.flatnonzero(q_tenant == t)
        mine = members[t]
        scores = queries[qi] @ base[mine].T                     # unit vectors: cosine order
        top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
        gt[qi, : top.shape[1]] = mine[top]
    return {"name": name, "base": base, "queries": queries, "q_tenant": q_tenant, "members": members, "gt": gt}


def recall(ids: np.ndarray, gt: np.ndarray) -> float:
    hits = [len(set(a[a >= 0].tolist()) & set(b[b >= 0].tolist())) / max(1, int((b >= 0).sum()))
            for a, b in zip(ids, gt)]
    return float(np.mean(hits))


def rss() -> int:
    from vecdb.bench.rss import status_bytes

    return status_bytes("VmRSS")


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

    def build(self, data: dict[str, Any]) -> None:
        import hnswlib

        for t, rows in data["members"].items():
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
        return sum(hnswlib_formula_bytes(i.get_current_count(), self.dim, self.M) for i in self.indexes.values())


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
        for t, rows in data["members"].items():
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


TARGETS: dict[str, Callable[..., Any]] = {"curator": CuratorTarget, "hnswlib-per-tenant": PerTenantHnswlib,
                                         "hnswlib-filter": FilteredHnswlib}


# ---- timing -------------------------------------------------------------------------------
def one_pass(target: Any, data: dict[str, Any], value: dict[str, int], batched: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """All queries through ``target``: one per call, or batched per tenant. (ids, per-call s, total s)."""
    queries, q_tenant = data["queries"], data["q_tenant"]
    ids = np.full((len(queries), K), -1, np.int64)
    lat = []
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
    return ids, np.asarray(lat), time.perf_counter() - start


def sweep(targets: dict[str, Any], data: dict[str, Any], grids: dict[str, list[dict[str, int]]], repeats: int) -> list[dict[str, Any]]:
    """Every (target, knob setting, batched) setting, ``repeats`` passes each, interleaved
    (pass 1 of every setting, then pass 2 ...); a row reports the fastest pass."""
    from vecdb.bench.machine import Watch

    settings = [(name, value, batched) for name in targets for value in grids[name] for batched in (False, True)]
    warm = {**data, "queries": data["queries"][:4], "q_tenant": data["q_tenant"][:4]}
    passes: list[list[tuple[np.ndarray, np.ndarray, float]]] = [[] for _ in settings]
    shares: list[list[Any]] = [[] for _ in settings]
    for _ in range(repeats):
        for j, (name, value, batched) in enumerate(settings):
            one_pass(targets[name], warm, value, batched)
            watch = Watch()
            passes[j].append(one_pass(targets[name], data, value, batched))
            shares[j].append(watch.stop())
    rows: list[dict[str, Any]] = []
    for j, (name, value, batched) in enumerate(settings):
        ids, lat, best = min(passes[j], key=lambda p: p[2])
        busy = any(q.busy for q in shares[j])
        row = {"target": name, **value, "batched": batched, "recall@10": round(recall(ids, data["gt"]), 4),
               "qps": round(len(ids) / best, 1), "qps_passes": [round(len(ids) / p[2], 1) for p in passes[j]],
               "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 4),
               "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 4),
               "others_share": max(q.others_share for q in shares[j]), "busy": busy}
        rows.append(row)
        shown = ",".join(f"{k}={v}" for k, v in value.items())
        print(f"{name:20s} {shown:18s} {'batch' if batched else 'one  '} recall@10={row['recall@10']:.4f} "
              f"qps={row['qps']:>9.1f} p50={row['p50_ms']:.3f}ms{' !busy' if busy else ''}", flush=True)
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
    parser.add_argument("--dataset", default="arxiv-minilm-384")
    parser.add_argument("--n-base", type=int, default=None, help="first N base rows only (a quick try)")
    parser.add_argument("--n-queries", type=int, default=None)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--budgets", default="256,512,1024,2048,4096,8192")
    parser.add_argument("--efs", default="10,20,40,80,160,320,640")
    parser.add_argument("--curator-efs", default="",
                        help="with tiering on: ef of the promoted tenants' graphs, one per budget (zipped with --budgets)")
    parser.add_argument("--curator-params", default='{"n_root": 32, "branching": 8, "max_depth": 3, "max_shortlist": 128}')
    parser.add_argument("--M", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
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
        data = load(args.dataset, args.n_base, args.n_queries)
        print(f"{args.dataset}: {len(data['base'])} base rows, {len(data['members'])} tenants, "
              f"{len(data['queries'])} queries", flush=True)
        params = {"curator": json.loads(args.curator_params),
                  "hnswlib-per-tenant": {"M": args.M, "ef_construction": args.ef_construction},
                  "hnswlib-filter": {"M": args.M, "ef_construction": args.ef_construction}}
        budgets = [int(v) for v in args.budgets.split(",")]
        curator_efs = [int(v) for v in args.curator_efs.split(",") if v]
        if curator_efs and len(curator_efs) != len(budgets):
            parser.error("--curator-efs needs one value per --budgets value")
        efs = [{"ef": int(v)} for v in args.efs.split(",")]
        grids = {"curator": [{"budget": b, **({"ef": e} if curator_efs else {})}
                             for b, e in zip(budgets, curator_efs or budgets)],
                 "hnswlib-per-tenant": efs, "hnswlib-filter": efs}
        targets: dict[str, Any] = {}
        builds: dict[str, dict[str, Any]] = {}
        warm = load(args.dataset, WARMUP_ROWS, 8)        # imports, JIT code and thread pools before RSS is read
        for name in names:
            TARGETS[name](warm, params[name]).build(warm)
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
                            "rss_growth_bytes": rss() - before, "params": params[name]}
            if name == "curator":
                builds[name]["write_latency_ms"] = target.write_latency(data, np.random.default_rng(0))
            print(f"built {name}: {build_s:.2f}s, counted {builds[name]['counted_bytes'] / 2**20:.1f} MiB, "
                  f"RSS +{builds[name]['rss_growth_bytes'] / 2**20:.1f} MiB", flush=True)
            targets[name] = target
        rows = sweep(targets, data, grids, args.repeats)
    table = summary(rows, builds)
    print("\ntarget               mode   qps@0.90   qps@0.95   build_s   counted MiB")
    for e in table:
        q90, q95 = e["qps@0.90"], e["qps@0.95"]
        print(f"{e['target']:20s} {'batch' if e['batched'] else 'one  '} {q90 if q90 else '-':>9} {q95 if q95 else '-':>9} "
              f"{e['build_s']:>9.2f} {e['counted_bytes'] / 2**20:>12.1f}")
    record = {"benchmark": "curator", "workload": "categories as tenants, each query to its primary category",
              "dataset": args.dataset, "n_base": len(data["base"]), "n_queries": len(data["queries"]),
              "n_tenants": len(data["members"]), "k": K, "threads": 1, "repeats": args.repeats,
              "start_quiet": start_quiet, "builds": builds, "rows": rows, "summary": table,
              "busy": {"flagged": any(r["busy"] for r in rows) or bool(start_quiet.get("busy"))},
              "provenance": provenance(argv)}
    out = Path(args.out or Path(__file__).parent / "results" / f"curator__{args.dataset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
