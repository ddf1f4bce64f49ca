"""The in-memory mirror of one collection's committed store: which internal ids are live
and their user ids, the payload index, tenants, the vector index with its staged changes,
and the counters. ``Collection`` holds one and replaces it whole when it reloads.

Filter results are cached per filter and kept across writes: each write records the points
it touched (``ChangeLog``), and a cached result older than the current write is brought up
to date for those points only (``filter_allow``), so a filtered search under a steady writer
costs no pass over the whole collection."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Hashable

import numpy as np

from vecdb.api import CollectionInfo
from vecdb.collection.tenants import Tenants
from vecdb.filters import PayloadIndex
from vecdb.index.allow import AllowSet
from vecdb.index.base import BaseIndex
from vecdb.index.flat import FlatIndex
from vecdb.index.staging import Staging
from vecdb.types import Metric

#: filter results kept per collection (fewer when one result is large, see FilterCache).
FILTER_CACHE_ENTRIES = 32
FILTER_CACHE_BYTES = 64 << 20
#: most point ids the change log remembers (older changes: a cached result is re-evaluated)
CHANGE_LOG_IDS = 1 << 18
#: a cached filter result is updated in place while the points changed since it are at most
#: this fraction of the collection (beyond it one full evaluation is cheaper)
UPDATE_FRACTION = 0.125


class ExactScan(FlatIndex):
    """Stands in for a collection's configured index while that cannot serve (it needs
    training and the collection holds too few points, or building it failed): exact search
    over the stored vectors. Search knobs are resolved by the configured index, so callers
    see the same validation, and then ignored. Never checkpointed (``kind`` is empty, so it
    is not registered)."""

    kind = ""

    def __init__(self, dim: int, metric: Metric | str, configured: BaseIndex) -> None:
        super().__init__(dim, metric)
        self.configured = configured
        self._own_params = FlatIndex.resolve_params(self, {})

    def resolve_params(self, params: Any) -> Any:
        self.configured.resolve_params(params)
        return self._own_params


class FilterCache:
    """Recent filter results by key (see ``filter_allow``): a repeated filter between two
    writes costs no evaluation. Small LRU, safe from many reader threads; at most
    ``FILTER_CACHE_BYTES`` of bitmaps."""

    def __init__(self) -> None:
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
            return hit

    def put(self, key: Hashable, value: Any, size: int) -> None:
        cap = max(1, min(FILTER_CACHE_ENTRIES, FILTER_CACHE_BYTES // max(size, 1)))
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > cap:
                self._entries.popitem(last=False)


@dataclass(frozen=True)
class CachedFilter:
    """A filter's matching live points as of write ``seq`` and payload-index ``generation``."""

    seq: int
    generation: int
    allow: AllowSet


class ChangeLog:
    """The internal ids each recent write touched (upserted, replaced or deleted), by write
    sequence, up to about ``CHANGE_LOG_IDS`` ids. Appended by the writer under the
    collection's exclusive lock, read by searches under its shared lock."""

    def __init__(self) -> None:
        self._entries: deque[tuple[int, np.ndarray]] = deque()
        self._ids = 0
        self.floor = 0   # changes after this write sequence are all remembered

    def record(self, seq: int, iids: np.ndarray) -> None:
        """Remember that write ``seq`` touched ``iids``."""
        if not len(iids):
            return
        self._entries.append((seq, iids))
        self._ids += len(iids)
        while self._ids > CHANGE_LOG_IDS and len(self._entries) > 1:
            old_seq, old = self._entries.popleft()
            self._ids -= len(old)
            self.floor = old_seq

    def since(self, seq: int, limit: int) -> np.ndarray | None:
        """Sorted unique ids touched by writes after ``seq``; None when those are not all
        remembered or more than ``limit``."""
        if seq < self.floor:
            return None
        parts = []
        total = 0
        for entry_seq, iids in reversed(self._entries):
            if entry_seq <= seq:
                break
            parts.append(iids)
            total += len(iids)
            if total > limit:
                return None
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def filter_allow(mem: "Memory", node: Hashable) -> AllowSet:
    """Live points matching the filter ``node``: cached per filter; a result cached before
    the latest writes is updated for the points they touched (from the payload index's
    tails) while no column was re-sorted since and they are few, else evaluated afresh."""
    seq, payidx = mem.seq, mem.payidx
    hit: CachedFilter | None = mem.filters.get(node)
    if hit is not None and hit.seq == seq and hit.generation == payidx.generation:
        return hit.allow
    allow = None
    n = len(mem.live)
    if hit is not None and hit.generation == payidx.generation:
        touched = mem.changes.since(hit.seq, int(UPDATE_FRACTION * n))
        if touched is not None:
            allow = _updated(hit.allow, touched, payidx.evaluate_ids(node, touched, mem.live[touched]), n)
    if allow is None:
        allow = AllowSet.from_mask(payidx.evaluate(node, mem.live))
    mem.filters.put(node, CachedFilter(seq, payidx.generation, allow), n)
    return allow


def _updated(allow: AllowSet, ids: np.ndarray, member: np.ndarray, n: int) -> AllowSet:
    """``allow`` with ``ids`` (sorted unique) in it exactly where ``member``: a copy in
    O(len(allow) + n / 8) memory traffic, no evaluation."""
    if not len(ids):
        return allow
    old = allow.ids
    pos = np.searchsorted(old, ids)
    present = (pos < len(old)) & (old[np.minimum(pos, len(old) - 1)] == ids) if len(old) else np.zeros(len(ids), bool)
    rest = np.delete(old, pos[present])
    add = ids[member]
    new_ids = np.insert(rest, np.searchsorted(rest, add), add) if len(add) else rest
    bitmap = allow.bitmap(n).copy()
    if len(bitmap) < n:
        bitmap = np.concatenate([bitmap, np.zeros(n - len(bitmap), np.uint8)])
    bitmap[ids[ids < len(bitmap)]] = 0
    bitmap[add] = 1
    return AllowSet(new_ids, bitmap)


class Memory:
    """State of one collection in memory, equal to the committed store once a batch is
    applied. Mutated by the collection's writer under its exclusive lock; read by searches
    under its shared lock."""

    def __init__(self, info: CollectionInfo) -> None:
        self.info = info
        self.live = np.zeros(0, bool)
        self.uid_of = np.zeros(0, np.int64 if info.id_type == "int" else object)
        self.n_live = 0
        self.payidx = PayloadIndex()
        self.tenants = Tenants()
        self.index: BaseIndex = FlatIndex(info.dim, info.metric)
        self.staging = Staging(info.dim, info.metric)
        self.filters = FilterCache()
        self.changes = ChangeLog()
        self.seq = 0
        self.next_iid = 0
        self.next_tenant = 0
        self.dirty = 0
        self.ckpt_seq = 0
        self.last_ckpt = time.monotonic()
        #: points at which the writer trains the configured index (None: no automatic training)
        self.train_at: int | None = None
        self.index_problem: str | None = None
        self.payload_problem: str | None = None

    @property
    def trained(self) -> bool:
        """True when the configured index serves (False while the exact-scan stand-in does)."""
        return not isinstance(self.index, ExactScan)

    @property
    def degraded(self) -> str | None:
        """Why the collection serves in a reduced way (None when it does not)."""
        return "; ".join(p for p in (self.index_problem, self.payload_problem) if p) or None

    def reserve(self, n: int) -> None:
        """Grow the per-internal-id arrays to hold ids below ``n``, plus at least one unused
        entry at the end: ``uid_of[-1]`` is always the no-hit value (-1 / None), so a search's
        -1 padding translates by one ``take``."""
        if n >= len(self.live):
            cap = max(n + 1, int(len(self.live) * 1.5), 1024)
            live = np.zeros(cap, bool)
            live[: len(self.live)] = self.live
            uid = np.full(cap, -1, np.int64) if self.uid_of.dtype != object else np.empty(cap, object)
            uid[: len(self.uid_of)] = self.uid_of
            self.live, self.uid_of = live, uid
        self.payidx.reserve(len(self.live))

    def memory_bytes(self) -> int:
        """Bytes held: index, staged rows, payload index, id arrays, tenant sets."""
        str_ids = 50 * self.n_live if self.info.id_type == "str" else 0
        return int(self.index.memory_bytes() + self.staging.memory_bytes() + self.payidx.memory_bytes()
                   + self.live.nbytes + self.uid_of.nbytes + str_ids + self.tenants.memory_bytes())
