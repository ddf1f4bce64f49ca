"""Reading a collection's committed points out whole (id, vector, payload, owner tenants and
grants), in internal-id order and bounded batches: what moving points into another
collection needs (a cluster's rebalancing, a snapshot merged from shards). The store is the
truth here, not memory; the caller keeps writers of those points away meanwhile."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from vecdb.api import CollectionInfo, Payload
from vecdb.collection.layout import OWNER, WRITE
from vecdb.collection.points import read_payloads, read_vectors
from vecdb.storage import keys as K
from vecdb.storage.arrays import decode_json
from vecdb.storage.env import Store

#: chooses, from the scanned points' id keys and owner tenants, which to read whole
Select = Callable[[list[bytes], list[tuple[str, ...]]], list[bool]]


@dataclass(frozen=True)
class ExportedPoints:
    """Points read out of a collection. ``keys`` are their stored id keys
    (``vecdb.storage.keys``), ``owners`` each point's owner tenants (sorted), ``grants`` each
    point's other tenants with their write flag; ``last_iid`` is where the scan stopped (pass
    it back as ``after`` to go on) and ``done`` says the scan reached the end."""

    uids: list[Any]
    keys: list[bytes]
    owners: list[tuple[str, ...]]
    grants: list[dict[str, bool]]
    vectors: np.ndarray
    payloads: list[Payload | None]
    last_iid: int
    done: bool

    def __len__(self) -> int:
        return len(self.uids)


def read_points(store: Store, handles: dict[str, Any], info: CollectionInfo, after: int, limit: int,
                select: Select | None = None) -> ExportedPoints:
    """The next ``limit`` points with internal id > ``after`` (all when ``after`` < 0 at the
    start), those ``select`` keeps (every one when None) read whole, in one read transaction."""
    h = handles
    uids: list[Any] = []
    keys: list[bytes] = []
    iids: list[int] = []
    last = after
    with store.read(buffers=True) as txn:   # vector blocks read in place
        cur = txn.cursor(h["rev"])
        found = cur.set_range(K.u64(after + 1)) if after >= 0 else cur.first()
        while found and len(iids) < limit:
            iid = K.read_u64(cur.key())
            key = bytes(cur.value())
            last = iid
            uids.append(K.decode_id_key(key))
            keys.append(key)
            iids.append(iid)
            found = cur.next()
        tenants = sorted((bytes(k).decode("utf-8"), K.read_u32(v)) for k, v in txn.cursor(h["ten"]).iternext())
        owners: list[list[str]] = [[] for _ in iids]
        grants: list[dict[str, bool]] = [{} for _ in iids]
        for name, number in tenants:
            prefix = K.u32(number)
            for i, iid in enumerate(iids):
                level = txn.get(prefix + K.u64(iid), db=h["mem"])
                if level is None:
                    continue
                if bytes(level) == OWNER:
                    owners[i].append(name)
                else:
                    grants[i][name] = bytes(level) == WRITE
        owned = [tuple(o) for o in owners]
        chosen = range(len(iids)) if select is None else [i for i, keep in enumerate(select(keys, owned)) if keep]
        picked = np.array([iids[i] for i in chosen], np.int64)
        vectors = read_vectors(txn, h, info, picked)
        payloads = [None if raw is None else decode_json(raw) for raw in read_payloads(txn, h, picked)]
    return ExportedPoints([uids[i] for i in chosen], [keys[i] for i in chosen], [owned[i] for i in chosen],
                          [grants[i] for i in chosen], vectors, payloads, last, not found)


def stored_keys(store: Store, handles: dict[str, Any], keys: list[bytes]) -> list[bool]:
    """Whether each id key is stored (committed records)."""
    with store.read() as txn:
        found = dict(txn.cursor(handles["ids"]).getmulti(list(dict.fromkeys(keys))))
    return [key in found for key in keys]
