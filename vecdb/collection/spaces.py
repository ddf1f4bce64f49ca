"""The LMDB state of a collection's index when it persists itself (persistence "self"): the
generations of its sub-databases, which one is live, and the batches it writes before each
commit.

The index of generation ``g`` owns the sub-databases ``c<cid>.x<g in hex>.<name>``
(``layout.index_space_prefix``); the ``ctr`` record ``index_gen`` names the live generation
(absent: no index state is committed, e.g. while the exact-scan stand-in serves an index that
needs training). Every committed batch reaches the live generation inside the batch's write
transaction (``persist``), so after a crash the index's state is exactly the committed batches,
each once: such an index is never checkpointed to a folder and never replayed. A build or
training writes the new index into the next generation and makes it live in one transaction
while the old index keeps serving from its own generation; the old one is dropped after the
swap, and a generation that is not live (left by a crash in between) when the collection loads.
"""
from __future__ import annotations

from typing import Any, Callable

import lmdb
import numpy as np

from vecdb.collection.layout import index_space_prefix
from vecdb.errors import InternalError, VecdbError
from vecdb.index.base import BaseIndex, IndexBatch
from vecdb.storage import keys as K
from vecdb.storage.env import Store
from vecdb.storage.space import IndexSpace

#: ``ctr`` key naming the live generation of a "self" index's sub-databases
INDEX_GEN = b"index_gen"


def persist(index: BaseIndex, txn: Any, batch: IndexBatch) -> None:
    """Hand ``batch`` to a "self" index inside the batch's write transaction (nothing for the
    others). An error of the index aborts the transaction: LMDB's own errors pass unchanged
    (the store grows the map and runs the batch again), others become InternalError."""
    if index.persistence != "self":
        return
    try:
        index.persist_batch(txn, batch)
    except (VecdbError, lmdb.Error):
        raise
    except Exception as exc:
        raise InternalError(f"the {index.kind!r} index could not write batch {batch.seq} ({type(exc).__name__}: "
                            f"{exc}); nothing was written") from exc


def index_batch(seq: int, dim: int, *, ids: np.ndarray | None = None, vectors: np.ndarray | None = None,
                removed: np.ndarray | None = None, membership: tuple[Any, ...] = ()) -> IndexBatch:
    """An ``IndexBatch`` with empty arrays for the parts a write does not have."""
    none = np.zeros(0, np.int64)
    return IndexBatch(seq=seq, ids=none if ids is None else ids,
                      vectors=np.zeros((0, dim), np.float32) if vectors is None else vectors,
                      removed=none if removed is None else removed, membership=membership)


class IndexSpaces:
    """Generations of the sub-databases of collection number ``cid``'s "self" index; the live
    one is recorded in the collection's ``ctr`` sub-database (handle ``ctr_db``)."""

    def __init__(self, store: Store, cid: int, ctr_db: Any) -> None:
        self._store = store
        self._cid = cid
        self._ctr = ctr_db

    def live(self) -> int | None:
        """The live generation (None when no index state is committed)."""
        with self._store.read() as txn:
            raw = txn.get(INDEX_GEN, db=self._ctr)
        return None if raw is None else K.read_u64(raw)

    def space(self, gen: int) -> IndexSpace:
        """The sub-databases of generation ``gen``."""
        return IndexSpace(self._store, index_space_prefix(self._cid, gen))

    def names(self) -> list[str]:
        """Names of every sub-database of every generation, sorted."""
        return self._store.names(index_space_prefix(self._cid))

    def build(self, make: Callable[[IndexSpace], BaseIndex]) -> BaseIndex:
        """The index ``make(space)`` builds (attached to the fresh ``space`` of the next
        generation), written whole and made live in one transaction. The previous generation
        stays until ``drop_others`` (its index may still serve meanwhile)."""
        live = self.live()
        gen = 1 if live is None else live + 1
        self._drop([n for n in self.names() if n.startswith(index_space_prefix(self._cid, gen))])
        index = make(self.space(gen))
        record = K.u64(gen)

        def batch(txn: Any) -> None:
            index.persist_all(txn)
            txn.put(INDEX_GEN, record, db=self._ctr)

        self._store.write(batch)
        return index

    def retire(self) -> None:
        """Forget the index state (no generation live) and drop every generation: the
        collection serves without its configured index, so later batches do not reach it."""
        if self.live() is not None:
            self._store.write(lambda txn: txn.delete(INDEX_GEN, db=self._ctr))
        self._drop(self.names())

    def drop_others(self, gen: int | None) -> None:
        """Drop the sub-databases of every generation but ``gen`` (all when None)."""
        keep = None if gen is None else index_space_prefix(self._cid, gen)
        self._drop([n for n in self.names() if keep is None or not n.startswith(keep)])

    def _drop(self, names: list[str]) -> None:
        if not names:
            return
        handles = list(self._store.dbs(names).values())

        def batch(txn: Any) -> None:
            for handle in handles:
                Store.drop_in(txn, handle)

        self._store.write(batch)
        self._store.forget(names)
