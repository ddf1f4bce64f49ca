"""Vector blocks: the rows of one upsert batch's new points in one LMDB record (``vblk``).

An upsert hands out consecutive internal ids to its new points, so their rows form one
block keyed by ``u64(last iid) + u64(first iid)``: a cursor's ``set_range(u64(iid))`` lands
on the only block that can hold ``iid`` (the first whose last id is >= it), and the key
alone says which ids a block spans, without reading its value. The value is a small header
(magic, count, dim) and the rows as float32 LE. One record per batch instead of one per
point is what lets an upsert write less than the raw per-point figure.

A block is never rewritten: a replaced point's new row is a per-point ``vec`` record, which
takes precedence over its block row (so do the per-point records of collections written
before blocks existed, read the same way). A deleted point's row stays in its block until
no id of the block is live (no ``rev`` record in its range); then the block is deleted in
the same transaction (``drop_dead``).

Payloads are kept the same way (``pblk``, same keys): a header, ``count + 1`` u32 LE offsets
and the concatenated JSON bytes, so one payload is a slice (an empty one: no payload). A
replaced point's payload is a per-point ``pay`` record, an empty one (b"") saying "none".
"""
from __future__ import annotations

import struct
from typing import Any, Iterator

import numpy as np

from vecdb.errors import DataLossError, InvalidArgumentError
from vecdb.storage import keys as K
from vecdb.storage.arrays import F32_LE

MAGIC = b"vbk1"
_HEAD = struct.Struct("<4sII")   # magic, row count, dim
HEAD = _HEAD.size


def block_key(first: int, count: int) -> bytes:
    """Key of the block holding ids ``first .. first + count - 1``."""
    return K.u64(first + count - 1) + K.u64(first)


def key_span(key: bytes | memoryview) -> tuple[int, int]:
    """(first, last) internal id of the block stored under ``key``."""
    if len(key) != 16:
        raise DataLossError(f"vector block key of {len(key)} bytes, expected 16")
    last, first = K.read_u64(key[:8]), K.read_u64(key[8:16])
    if first > last:
        raise DataLossError(f"vector block key spans ids {first}..{last}")
    return first, last


def encode(rows: np.ndarray) -> memoryview:
    """One block's value: the header and the float32 LE rows of ``rows`` (n, dim), in one buffer."""
    n, dim = rows.shape
    buf = np.empty(HEAD + 4 * n * dim, np.uint8)
    buf[:HEAD] = np.frombuffer(_HEAD.pack(MAGIC, n, dim), np.uint8)
    buf[HEAD:].view(F32_LE).reshape(n, dim)[:] = rows
    return memoryview(buf).toreadonly()


def decode(key: bytes | memoryview, value: bytes | memoryview, dim: int) -> tuple[int, np.ndarray]:
    """(first id, rows (count, dim) viewing ``value``) of a stored block; DataLossError when
    the block is truncated or its header disagrees with its key or the collection."""
    first, last = key_span(key)
    count = last - first + 1
    if len(value) < HEAD:
        raise DataLossError(f"vector block of ids {first}..{last} is truncated ({len(value)} bytes)")
    magic, n, d = _HEAD.unpack(bytes(value[:HEAD]))
    if magic != MAGIC or n != count or d != dim or len(value) != HEAD + 4 * count * dim:
        raise DataLossError(f"vector block of ids {first}..{last} is corrupt or truncated (header {magic!r}, "
                            f"{n} rows of {d}, {len(value)} bytes; expected {count} rows of {dim})")
    return first, np.frombuffer(value, F32_LE, count=count * dim, offset=HEAD).reshape(count, dim)


def _spans(txn: Any, db: Any, iids: np.ndarray, want: np.ndarray) -> Iterator[tuple[Any, Any, np.ndarray, np.ndarray]]:
    """For each block holding some of ``iids[want]``: (key, value, positions in ``iids``, their
    ids); one ``set_range`` per block touched. In a transaction opened with ``buffers=True`` a
    block is read in place, not copied."""
    rows = np.flatnonzero(want)
    if not len(rows):
        return
    order = rows[np.argsort(iids[rows], kind="stable")]
    wanted = iids[order]
    cur = txn.cursor(db)
    i, n = 0, len(order)
    while i < n:
        if not cur.set_range(K.u64(int(wanted[i]))):
            return
        key = cur.key()
        first, last = key_span(key)
        j = int(np.searchsorted(wanted, last, side="right"))
        inside = wanted[i:j] >= first
        if inside.any():
            yield key, cur.value(), order[i:j][inside], wanted[i:j][inside]
        i = j


def gather(txn: Any, db: Any, iids: np.ndarray, out: np.ndarray, want: np.ndarray) -> None:
    """Copy the block rows of ``iids[want]`` into ``out`` (rows in ``iids`` order) and clear
    ``want`` where found."""
    dim = out.shape[1]
    for key, value, hit, ids in _spans(txn, db, iids, want):
        first, block = decode(key, value, dim)
        out[hit] = block[ids - first]
        want[hit] = False


PAY_MAGIC = b"pbk1"
_PAY_HEAD = struct.Struct("<4sI")   # magic, row count


def encode_payloads(parts: list[bytes | None]) -> bytes:
    """One payload block's value: the header, ``len(parts) + 1`` u32 offsets and the JSON
    bytes (None: an empty slice)."""
    if None in parts:
        parts = [b"" if p is None else p for p in parts]
    ends = np.cumsum(np.fromiter(map(len, parts), np.int64, len(parts)))
    if len(ends) and ends[-1] >= 2**32:
        raise InvalidArgumentError(f"the payloads of one upsert take {int(ends[-1])} bytes; at most 4 GiB fit")
    offsets = np.zeros(len(parts) + 1, "<u4")
    offsets[1:] = ends
    return b"".join([_PAY_HEAD.pack(PAY_MAGIC, len(parts)), offsets.tobytes(), *parts])


def payload_slices(key: Any, value: Any, rows: np.ndarray) -> list[bytes | None]:
    """The payload bytes of ``rows`` (positions in the block) of a stored payload block (None
    where a row holds none); DataLossError when the block is truncated or inconsistent."""
    first, last = key_span(key)
    count = last - first + 1
    start = _PAY_HEAD.size + 4 * (count + 1)
    if len(value) < start:
        raise DataLossError(f"payload block of ids {first}..{last} is truncated ({len(value)} bytes)")
    magic, n = _PAY_HEAD.unpack(bytes(value[:_PAY_HEAD.size]))
    offsets = np.frombuffer(value, "<u4", count=count + 1, offset=_PAY_HEAD.size)
    if magic != PAY_MAGIC or n != count or int(offsets[-1]) != len(value) - start:
        raise DataLossError(f"payload block of ids {first}..{last} is corrupt or truncated (header {magic!r}, "
                            f"{n} rows, {len(value)} bytes; expected {count} rows)")
    a, b = offsets[rows].tolist(), offsets[rows + 1].tolist()
    if any(x > y for x, y in zip(a, b)):
        raise DataLossError(f"payload block of ids {first}..{last} holds offsets out of order")
    return [bytes(value[start + x:start + y]) if y > x else None for x, y in zip(a, b)]


def gather_payloads(txn: Any, db: Any, iids: np.ndarray, out: list[bytes | None], want: np.ndarray) -> None:
    """Put the block payload bytes of ``iids[want]`` into ``out`` (in ``iids`` order; None
    where a row holds none) and clear ``want`` where a block holds the id."""
    for key, value, hit, ids in _spans(txn, db, iids, want):
        first, _ = key_span(key)
        for pos, raw in zip(hit.tolist(), payload_slices(key, value, ids - first)):
            out[pos] = raw
        want[hit] = False


def all_payloads(txn: Any, db: Any) -> Iterator[tuple[np.ndarray, list[bytes | None]]]:
    """Every payload block: (its internal ids, its rows' payload bytes)."""
    for key, value in txn.cursor(db).iternext():
        first, last = key_span(key)
        rows = np.arange(last - first + 1)
        yield rows + first, payload_slices(key, value, rows)


def drop_dead(txn: Any, blocks_db: Any, rev_db: Any, iids: np.ndarray) -> int:
    """Delete the blocks holding any of ``iids`` that no longer hold a live id (no ``rev``
    record in their span), inside the write transaction that removed them; returns how many."""
    if not len(iids):
        return 0
    wanted = np.unique(iids)
    blocks = txn.cursor(blocks_db)
    rev = txn.cursor(rev_db)
    dead: list[bytes] = []
    i, n = 0, len(wanted)
    while i < n:
        if not blocks.set_range(K.u64(int(wanted[i]))):
            break
        key = bytes(blocks.key())
        first, last = key_span(key)
        if not rev.set_range(K.u64(first)) or K.read_u64(rev.key()) > last:
            dead.append(key)
        i = int(np.searchsorted(wanted, last, side="right"))
    for key in dead:
        txn.delete(key, db=blocks_db)
    return len(dead)
