"""Fixed-width big-endian keys, so LMDB's byte order equals numeric order and cursors scan
internal ids and sequence numbers in order.

User ids are encoded with a one-byte type tag: ``b"i" + u64`` for int ids, ``b"s" + utf-8``
for string ids. LMDB keys are limited to 511 bytes, hence ``MAX_STR_ID_BYTES``.
"""
from __future__ import annotations

import struct

import numpy as np

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
MAX_STR_ID_BYTES = 400


def u32(n: int) -> bytes:
    """4-byte big-endian key of a non-negative int."""
    return _U32.pack(n)


def u64(n: int) -> bytes:
    """8-byte big-endian key of a non-negative int."""
    return _U64.pack(n)


def read_u32(b: bytes | memoryview) -> int:
    """Inverse of ``u32``."""
    return int(_U32.unpack(bytes(b[:4]))[0])


def read_u64(b: bytes | memoryview) -> int:
    """Inverse of ``u64``."""
    return int(_U64.unpack(bytes(b[:8]))[0])


def u64_many(values: np.ndarray) -> list[bytes]:
    """Keys of many non-negative ints at once (one numpy byte-swap, then one C-level split:
    a raw ``V8`` item converts to its exact 8 bytes, trailing zeros kept)."""
    return np.ascontiguousarray(values, dtype=">u8").view("V8").tolist()


_INT_ID = np.dtype([("tag", "S1"), ("key", ">u8")])


def int_id_keys(values: np.ndarray) -> list[bytes]:
    """``int_id_key`` of many non-negative ints at once (one packed array, then slicing)."""
    packed = np.empty(len(values), _INT_ID)
    packed["tag"] = b"i"
    packed["key"] = values
    return packed.view("V9").tolist()


def int_id_key(ident: int) -> bytes:
    """Key of an int user id."""
    return b"i" + _U64.pack(ident)


def str_id_key(ident: str) -> bytes:
    """Key of a str user id (caller has checked the encoded length)."""
    return b"s" + ident.encode("utf-8")


def decode_id_key(key: bytes) -> int | str:
    """Inverse of ``int_id_key`` / ``str_id_key``."""
    if key[:1] == b"i":
        return int(_U64.unpack(key[1:9])[0])
    return key[1:].decode("utf-8")
