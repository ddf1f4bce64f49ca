"""Reading stored points of one collection back from LMDB (vectors, payloads)."""
from __future__ import annotations

from typing import Any

import numpy as np

from vecdb import calls
from vecdb.api import CollectionInfo, Payload
from vecdb.errors import DataLossError
from vecdb.storage import keys as K
from vecdb.storage.arrays import F32_LE, decode_json, from_bytes
from vecdb.storage.env import Store


class StoredPoints:
    """Reads of the ``vec`` and ``pay`` sub-databases of one collection."""

    def __init__(self, store: Store, handles: dict[str, Any], info: CollectionInfo) -> None:
        self._store = store
        self._h = handles
        self._info = info

    def vectors(self, iids: np.ndarray, n_live: int) -> np.ndarray:
        """Stored float32 rows of ``iids`` (n, dim), read in one transaction (a cursor scan
        when they are more than half of the ``n_live`` points, else point reads)."""
        d = self._info.dim
        out = np.empty((len(iids), d), np.float32)
        if not len(iids):
            return out
        db = self._h["vec"]
        with self._store.read(buffers=True) as txn:
            if len(iids) > 0.5 * n_live:
                want = {iid: row for row, iid in enumerate(iids.tolist())}
                for key, val in txn.cursor(db).iternext():
                    row = want.pop(K.read_u64(key), None)
                    if row is not None:
                        out[row] = np.frombuffer(val, F32_LE, count=d)
                missing = list(want)
            else:
                missing = []
                for row, key in enumerate(K.u64_many(iids)):
                    val = txn.get(key, db=db)
                    if val is None:
                        missing.append(int(iids[row]))
                    else:
                        out[row] = np.frombuffer(val, F32_LE, count=d)
        if missing:
            raise DataLossError(f"collection {self._info.name!r}: {len(missing)} point(s) have no stored vector, "
                                f"e.g. internal id {missing[0]}")
        return out

    def points(self, txn: Any, iids: np.ndarray, uids: list[Any]) -> tuple[np.ndarray, list[Payload | None]]:
        """Stored vectors and payloads of ``iids`` (read in ``txn``)."""
        d = self._info.dim
        vectors = np.empty((len(iids), d), np.float32)
        payloads: list[Payload | None] = []
        for row, iid in enumerate(iids.tolist()):
            key = K.u64(iid)
            raw = txn.get(key, db=self._h["vec"])
            if raw is None:
                raise DataLossError(f"point {uids[row]!r} has no stored vector")
            vectors[row] = from_bytes(raw, F32_LE, count=d)
            pay = txn.get(key, db=self._h["pay"])
            if pay is not None:
                calls.spend_payload_bytes(len(pay))  # the server's per-call budget, before decoding
            payloads.append(None if pay is None else decode_json(pay))
        return vectors, payloads

    def hit_payloads(self, iids: np.ndarray) -> list[list[Payload | None]]:
        """Payloads of search hits (iids (nq, k), -1 where no hit), each read once."""
        cache: dict[int, Payload | None] = {}
        with self._store.read() as txn:
            for iid in np.unique(iids[iids >= 0]).tolist():
                raw = txn.get(K.u64(iid), db=self._h["pay"])
                if raw is not None:
                    calls.spend_payload_bytes(len(raw))  # the server's per-call budget, before decoding
                cache[iid] = None if raw is None else decode_json(raw)
        return [[cache.get(i) if i >= 0 else None for i in row] for row in iids.tolist()]
