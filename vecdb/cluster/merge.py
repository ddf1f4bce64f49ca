"""The exact top k over shards: each shard answers its own top k, and the k best of their
union are the k best of the whole collection (a point of the global top k is in its shard's
top k). Hits are ranked by (distance, user id), so the order does not depend on how points
are spread over shards; a point answered by two shards (while a rebalance copies it) is
kept once."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vecdb.api import Payload, QueryResult


def merge_topk(parts: Sequence[QueryResult], k: int, id_type: str) -> QueryResult:
    """The k nearest hits per query row over the shards' answers ``parts`` (same rows)."""
    if len(parts) == 1:
        return parts[0]
    with_payloads = parts[0].payloads is not None
    ids = np.concatenate([p.ids for p in parts], axis=1)
    dist = np.concatenate([p.distances for p in parts], axis=1)
    pays: list[list[Payload | None]] | None = None
    if with_payloads:
        pays = [sum((p.payloads[row] for p in parts), []) for row in range(ids.shape[0])]  # type: ignore[index]
    if id_type == "int":
        order = _int_order(ids, dist, k)
    else:
        order = _str_order(ids, dist, k)
    out_ids = np.take_along_axis(ids, order, axis=1)
    out_dist = np.take_along_axis(dist, order, axis=1)
    missing = order < 0
    if missing.any():   # fewer distinct hits than k: pad as a collection does
        out_ids[missing] = -1 if id_type == "int" else None
        out_dist[missing] = np.inf
    out_pays = None
    if pays is not None:
        out_pays = [[None if j < 0 else pays[row][j] for j in order[row]] for row in range(len(order))]
    return QueryResult(out_ids, out_dist.astype(np.float32, copy=False), out_pays)


def _int_order(ids: np.ndarray, dist: np.ndarray, k: int) -> np.ndarray:
    """Column positions of the k best distinct hits per row (-1 where fewer)."""
    nq, m = ids.shape
    key_ids = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    order = np.lexsort((key_ids, dist), axis=-1)
    s_ids = np.take_along_axis(ids, order, axis=1)
    hole = np.ones((nq, m), bool)
    for row in range(nq):   # keep each id's first (best) hit: copies may differ in distance (per-shard codes)
        _, first = np.unique(s_ids[row], return_index=True)
        hole[row, first] = False
    hole |= s_ids < 0
    keep = np.argsort(hole, axis=1, kind="stable")[:, :k]      # non-holes first, in rank order
    out = np.take_along_axis(order, keep, axis=1)
    out[np.take_along_axis(hole, keep, axis=1)] = -1
    if out.shape[1] < k:
        out = np.concatenate([out, np.full((nq, k - out.shape[1]), -1, np.int64)], axis=1)
    return out


def _str_order(ids: np.ndarray, dist: np.ndarray, k: int) -> np.ndarray:
    out = np.full((ids.shape[0], k), -1, np.int64)
    for row in range(ids.shape[0]):
        hits = sorted((float(dist[row, j]), ids[row, j], j) for j in range(ids.shape[1]) if ids[row, j] is not None)
        seen: set[str] = set()
        n = 0
        for _, uid, j in hits:
            if uid in seen:
                continue
            seen.add(uid)
            out[row, n] = j
            n += 1
            if n == k:
                break
    return out
