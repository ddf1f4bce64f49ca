"""The in-memory mirror of one collection's committed store: which internal ids are live
and their user ids, the payload index, tenants, the vector index with its staged changes,
and the counters. ``Collection`` holds one and replaces it whole when it reloads."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
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
    """The AllowSets of recent filters, keyed by (filter node, collection write seq): a
    repeated filter between two writes costs no evaluation. Small LRU, safe from many
    reader threads; at most ``FILTER_CACHE_BYTES`` of bitmaps."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[Hashable, int], AllowSet] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Hashable, int]) -> AllowSet | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
            return hit

    def put(self, key: tuple[Hashable, int], value: AllowSet, size: int) -> None:
        cap = max(1, min(FILTER_CACHE_ENTRIES, FILTER_CACHE_BYTES // max(size, 1)))
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > cap:
                self._entries.popitem(last=False)


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
        """Grow the per-internal-id arrays to hold ids below ``n``."""
        if n > len(self.live) or not len(self.live):
            cap = max(n, int(len(self.live) * 1.5), 1024)
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
