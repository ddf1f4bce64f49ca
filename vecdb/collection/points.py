"""Reading stored points of one collection back from LMDB (vectors, payloads).

A vector or payload is stored either in a per-point record (``vec`` / ``pay``: a replaced
point, or any point of a collection written before blocks existed) or as a row of its
batch's block (``vblk`` / ``pblk``, see ``blocks``); the per-point record takes precedence."""
from __future__ import annotations

from typing import Any

import numpy as np

from vecdb import calls
from vecdb.api import CollectionInfo, Payload
from vecdb.collection import blocks
from vecdb.errors import DataLossError
from vecdb.storage import keys as K
from vecdb.storage.arrays import F32_LE, decode_json
from vecdb.storage.env import Store


def read_vectors(txn: Any, handles: dict[str, Any], info: CollectionInfo, iids: np.ndarray) -> np.ndarray:
    """Stored float32 rows of ``iids`` (n, dim) read in ``txn`` (open it with
    ``buffers=True``: blocks are then read in place); DataLossError when one has no whole
    stored vector. Per-point records are looked up one by one when there are fewer of them
    than ids asked, else scanned."""
    d = info.dim
    iids = np.asarray(iids, np.int64)
    out = np.empty((len(iids), d), np.float32)
    want = np.ones(len(iids), bool)
    if not len(iids):
        return out
    vec_db = handles["vec"]
    singles = int(txn.stat(vec_db)["entries"])
    if singles:
        if singles < len(iids):
            rows: dict[int, list[int]] = {}
            for row, iid in enumerate(iids.tolist()):
                rows.setdefault(iid, []).append(row)
            for key, val in txn.cursor(vec_db).iternext():
                hit = rows.get(K.read_u64(key))
                if hit is not None:
                    out[hit] = _row(val, d, hit[0], iids)
                    want[hit] = False
        else:
            for row, key in enumerate(K.u64_many(iids)):
                val = txn.get(key, db=vec_db)
                if val is not None:
                    out[row] = _row(val, d, row, iids)
                    want[row] = False
    blocks.gather(txn, handles["vblk"], iids, out, want)
    if want.any():
        missing = iids[want]
        raise DataLossError(f"collection {info.name!r}: {len(missing)} point(s) have no stored vector, "
                            f"e.g. internal id {int(missing[0])}")
    return out


def read_payloads(txn: Any, handles: dict[str, Any], iids: np.ndarray) -> list[bytes | None]:
    """Stored JSON bytes of the payloads of ``iids`` (None: no payload), read in ``txn``: a
    per-point ``pay`` record when there is one (b"": none), else the row of the point's
    payload block."""
    iids = np.asarray(iids, np.int64)
    out: list[bytes | None] = [None] * len(iids)
    want = np.ones(len(iids), bool)
    pay_db = handles["pay"]
    if len(iids) and txn.stat(pay_db)["entries"]:
        for row, key in enumerate(K.u64_many(iids)):
            raw = txn.get(key, db=pay_db)
            if raw is not None:
                out[row] = bytes(raw) if len(raw) else None
                want[row] = False
    blocks.gather_payloads(txn, handles["pblk"], iids, out, want)
    return out


def decode_payloads(raws: list[bytes | None]) -> list[Payload | None]:
    """Payloads of stored JSON bytes, each charged to the server's per-call budget before decoding."""
    out: list[Payload | None] = []
    for raw in raws:
        if raw is not None:
            calls.spend_payload_bytes(len(raw))
        out.append(None if raw is None else decode_json(raw))
    return out


def _row(val: bytes | memoryview, d: int, row: int, iids: np.ndarray) -> np.ndarray:
    if len(val) != 4 * d:
        raise DataLossError(f"stored vector of internal id {int(iids[row])} has {len(val)} bytes, expected {4 * d}")
    return np.frombuffer(val, F32_LE, count=d)


class StoredPoints:
    """Reads of the vectors (``vec``, ``vblk``) and payloads (``pay``, ``pblk``) of one collection."""

    def __init__(self, store: Store, handles: dict[str, Any], info: CollectionInfo) -> None:
        self._store = store
        self._h = handles
        self._info = info

    def vectors(self, iids: np.ndarray) -> np.ndarray:
        """Stored float32 rows of ``iids`` (n, dim), read in one transaction."""
        with self._store.read(buffers=True) as txn:
            return read_vectors(txn, self._h, self._info, iids)

    def points(self, txn: Any, iids: np.ndarray, uids: list[Any]) -> tuple[np.ndarray, list[Payload | None]]:
        """Stored vectors and payloads of ``iids`` (read in ``txn``, best opened with ``buffers=True``)."""
        vectors = read_vectors(txn, self._h, self._info, iids)
        return vectors, decode_payloads(read_payloads(txn, self._h, iids))

    def hit_payloads(self, iids: np.ndarray) -> list[list[Payload | None]]:
        """Payloads of search hits (iids (nq, k), -1 where no hit), each read once."""
        hits = np.unique(iids[iids >= 0])
        with self._store.read(buffers=True) as txn:
            raws = read_payloads(txn, self._h, hits)
        cache = dict(zip(hits.tolist(), decode_payloads(raws)))
        return [[cache.get(i) if i >= 0 else None for i in row] for row in iids.tolist()]
