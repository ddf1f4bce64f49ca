"""The resident state of a SPANN index as LMDB records: a JSON meta record and numpy arrays
cut into checksummed chunks, so that a batch rewrites only the chunks it changed."""
from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np

from vecdb.errors import DataLossError
from vecdb.storage.arrays import decode_json, encode_json

META_KEY = b"meta"
#: bytes per array chunk record
CHUNK = 1 << 16
_CRC = struct.Struct("<I")


def chunk_key(name: str, i: int) -> bytes:
    """Key of chunk ``i`` of array ``name``."""
    return f"a/{name}/{i:010d}".encode()


def _bytes_of(arr: np.ndarray) -> np.ndarray:
    return np.frombuffer(np.ascontiguousarray(arr).data, np.uint8) if arr.size else np.zeros(0, np.uint8)


def write_arrays(txn: Any, db: Any, arrays: dict[str, np.ndarray], old: dict[str, np.ndarray] | None) -> dict[str, Any]:
    """Write ``arrays`` as chunk records, skipping chunks equal to those of ``old`` (the arrays
    the records hold now; None: write all) and deleting chunks past the new end. Returns the
    description of each array for the meta record."""
    described: dict[str, Any] = {}
    for name, arr in arrays.items():
        new_b = _bytes_of(arr)
        prev = None if old is None else old.get(name)
        old_b = None if prev is None else _bytes_of(prev)
        n_new = -(-len(new_b) // CHUNK)
        n_old = 0 if old_b is None else -(-len(old_b) // CHUNK)
        for i in range(n_new):
            part = new_b[i * CHUNK : (i + 1) * CHUNK]
            if old_b is not None and np.array_equal(part, old_b[i * CHUNK : (i + 1) * CHUNK]):
                continue
            raw = part.tobytes()
            txn.put(chunk_key(name, i), raw + _CRC.pack(zlib.crc32(raw)), db=db)
        for i in range(n_new, n_old):
            txn.delete(chunk_key(name, i), db=db)
        described[name] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "chunks": n_new}
    return described


def write_grown(txn: Any, db: Any, name: str, base: np.ndarray, tail: np.ndarray, cleared: np.ndarray) -> dict[str, Any]:
    """Write array ``name`` changed from ``base`` (what its records hold now) to ``base`` with
    ``tail`` appended and the positions ``cleared`` set to -1, rewriting only the chunks that
    change (those holding a cleared position or the tail): the cost of a batch is its own
    size, not the array's. Returns the array's description for the meta record."""
    item = base.dtype.itemsize
    per = CHUNK // item
    n0, n1 = len(base), len(base) + len(tail)
    dirty = set((np.asarray(cleared, np.int64) // per).tolist())
    if n1 > n0:
        dirty.update(range(n0 // per, -(-n1 // per)))
    for i in sorted(dirty):
        lo, hi = i * per, min((i + 1) * per, n1)
        part = np.empty(hi - lo, base.dtype)
        old_hi = min(hi, n0)
        if old_hi > lo:
            part[: old_hi - lo] = base[lo:old_hi]
        if hi > n0:
            part[max(lo, n0) - lo :] = tail[max(lo, n0) - n0 : hi - n0]
        inside = cleared[(cleared >= lo) & (cleared < hi)]
        part[inside - lo] = -1
        raw = part.tobytes()
        txn.put(chunk_key(name, i), raw + _CRC.pack(zlib.crc32(raw)), db=db)
    return {"dtype": base.dtype.str, "shape": [n1], "chunks": -(-n1 * item // CHUNK)}


def read_arrays(txn: Any, db: Any, described: dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays the meta record describes; DataLossError for a missing or corrupt chunk."""
    out: dict[str, np.ndarray] = {}
    for name, desc in described.items():
        parts = []
        for i in range(int(desc["chunks"])):
            raw = txn.get(chunk_key(name, i), db=db)
            if raw is None or len(raw) < _CRC.size:
                raise DataLossError(f"SPANN state array {name!r} lost chunk {i}")
            body = bytes(raw[: -_CRC.size])
            if zlib.crc32(body) != _CRC.unpack_from(raw, len(raw) - _CRC.size)[0]:
                raise DataLossError(f"SPANN state array {name!r} chunk {i} fails its checksum")
            parts.append(body)
        try:
            arr = np.frombuffer(b"".join(parts), np.dtype(desc["dtype"])).reshape(desc["shape"])
        except (TypeError, ValueError) as exc:
            raise DataLossError(f"SPANN state array {name!r} does not match its description: {exc}") from None
        out[name] = arr.copy()
    return out


def write_meta(txn: Any, db: Any, meta: dict[str, Any]) -> None:
    """Store the meta record."""
    txn.put(META_KEY, encode_json(meta), db=db)


def read_meta(txn: Any, db: Any) -> dict[str, Any] | None:
    """The meta record, None when the space holds no SPANN state; DataLossError if corrupt."""
    raw = txn.get(META_KEY, db=db)
    if raw is None:
        return None
    try:
        meta = decode_json(bytes(raw))
    except (ValueError, TypeError) as exc:
        raise DataLossError(f"corrupt SPANN meta record: {exc}") from None
    if not isinstance(meta, dict):
        raise DataLossError("corrupt SPANN meta record: not an object")
    return meta
