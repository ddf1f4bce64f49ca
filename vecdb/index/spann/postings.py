"""The on-disk posting format: one LMDB record per posting, read with one lookup.

Key: the head number as 8 bytes big-endian. Value: a 24-byte header (magic ``SPNP``, format
version (u16), flags (u16: 0 float32 vectors, 1 SQ8 codes), entry count (u32), dimension
(u32), 64-bit checksum of the body), then the body: the entries' slots (int64
little-endian), their vectors (float32 little-endian, row-major; or SQ8 codes, one byte per
component, when the index stores codes), zero padding to a multiple of 8 bytes. Format 3
(written for float32 postings) and format 2 (read) differ only in the checksum (``records``:
format 3's is checked in the same pass as a one-query scan). Format 4 (written for SQ8
postings) puts each entry's norm (float32: |s (c - 128)|^2 of its codes c, the codec's
steps s) between the slots and the codes, so that a scan ranks a row with one integer dot
product (``kernels.fold_int_query``), and sums its words mod 2^32. A record whose header,
length or checksum does not match raises DataLossError: no result of a corrupt or
truncated posting is ever returned. Where a search copies the records it reads (several
queries over SQ8 codes, or postings not yet written), they are laid end to end and checked in
one Numba call (``check_many``); ``read_many`` also copies them out (for rewrites).
"""
from __future__ import annotations

import struct
from typing import Any

import numpy as np

from vecdb.errors import DataLossError
from vecdb.index.spann import kernels, records
from vecdb.types import F32Matrix, I64Vector

MAGIC = b"SPNP"
#: the formats written for float32 and for SQ8 postings (``records.FORMATS`` are read)
VERSION = records.LATEST
CODES_VERSION = records.LATEST_CODES
_HEADER = struct.Struct("<4sHHIIQ")
HEADER_BYTES = _HEADER.size
assert HEADER_BYTES == kernels.HEADER_BYTES
_KEY = struct.Struct(">Q")
_I64 = np.dtype("<i8")
_F32 = np.dtype("<f4")
_PROBLEMS = {records.TRUNCATED: "is truncated (its length does not match its header)",
             records.FOREIGN: "has an unknown format or version",
             records.WRONG_DIM: "holds vectors of another dimension",
             records.BAD_CHECKSUM: "fails its checksum (corrupt)"}


def key(head: int) -> bytes:
    """LMDB key of head ``head``'s posting (sorted like the head numbers)."""
    return _KEY.pack(head)


def keys(heads: list[int]) -> list[bytes]:
    """``key`` of each of ``heads`` (one call for many: a search's re-rank reads a record per
    candidate, and a Python call per key cost ~0.3 us of its ~1.5)."""
    return list(map(_KEY.pack, heads))


def encode(slots: I64Vector, vectors: F32Matrix, codec: Any = None, version: int | None = None) -> bytes:
    """The record of a posting holding ``slots`` with their ``vectors`` (as the codes of
    ``codec``, a trained SQ8, when given), in format ``version`` (None: the latest, 3 for
    float32 and 4 for SQ8 postings; formats 2 and 3 of SQ8 postings are kept for tests of
    old data)."""
    if version is None:
        version = VERSION if codec is None else CODES_VERSION
    if version not in records.FORMATS or (version == 4 and codec is None):
        raise ValueError(f"SPANN posting format {version} is not one of {records.FORMATS} "
                         f"(4: SQ8 postings only)")
    if codec is None:
        rows = np.ascontiguousarray(vectors, _F32)
    else:
        rows = codec.encode_trusted(np.asarray(vectors, np.float32))
    body = np.ascontiguousarray(slots, _I64).tobytes()
    if version == 4:
        body += codec.centred_norms(rows).tobytes()
    body += rows.tobytes()
    body += b"\0" * (-len(body) % 8)
    raw = np.frombuffer(body, np.uint8) if body else np.zeros(8, np.uint8)
    n = len(body)
    sums = {2: records.checksum_v2, 3: records.checksum_v3, 4: records.checksum_v4}[version](raw, 0, n)
    flags = 0 if codec is None else 1
    return _HEADER.pack(MAGIC, version, flags, len(slots), vectors.shape[1], int(sums)) + body


def decode(raw: bytes | memoryview, dim: int, head: int, codec: Any = None) -> tuple[I64Vector, F32Matrix]:
    """(slots, vectors) of one posting record, copied (codes decoded by ``codec``);
    DataLossError when it is truncated, of another format or fails its checksum."""
    slots, vectors, _ = read_many([raw], np.array([head], np.int64), dim, codec)
    return slots, vectors


def check_many(raws: list[Any], heads: np.ndarray, dim: int, codec: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The posting records ``raws`` (bytes or memoryviews; ``heads`` names them in errors)
    laid end to end in one buffer and checked: (buffer, record starts, entry counts).
    DataLossError for the first that is truncated, of another format or corrupt."""
    ends = np.cumsum(np.array([len(r) for r in raws], np.int64))
    starts = ends - np.array([len(r) for r in raws], np.int64)
    buf = np.frombuffer(b"".join(raws), np.uint8) if len(raws) else np.zeros(0, np.uint8)
    counts = np.zeros(len(raws), np.int64)
    width, flags = (4, 0) if codec is None else (1, 1)
    bad, problem = records.check_records(buf, starts, ends, dim, width, flags, counts)
    if bad >= 0:
        raise DataLossError(problem_message(int(heads[bad]), int(problem)))
    return buf, starts, counts


def lost_message(head: int, expected: int) -> str:
    """The DataLossError message of posting ``head`` having no record while it should hold
    ``expected`` entries."""
    return f"SPANN posting {head} is missing ({expected} entries expected)"


def bad_row_message(slot: int, dim: int) -> str:
    """The DataLossError message of the float record of ``slot`` (SQ8 postings re-rank with
    it) not being ``dim`` float32 values."""
    return f"SPANN vector record of slot {slot} is not {4 * dim} bytes"


def problem_message(head: int, code: int) -> str:
    """The DataLossError message of posting ``head`` failing its check with ``code``."""
    return f"SPANN posting {head} {_PROBLEMS.get(code, 'is corrupt')}"


def read_many(raws: list[Any], heads: np.ndarray, dim: int, codec: Any = None) -> tuple[I64Vector, F32Matrix, np.ndarray]:
    """Slots, vectors and row offsets (len(raws) + 1) of the posting records ``raws``,
    checked (see ``check_many``) and copied out (codes decoded by ``codec`` when given)."""
    buf, starts, counts = check_many(raws, heads, dim, codec)
    offsets = np.zeros(len(raws) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    if codec is not None:
        slot_parts, code_parts = [np.zeros(0, np.int64)], [np.zeros((0, dim), np.uint8)]
        for a, c in zip((starts + HEADER_BYTES).tolist(), counts.tolist()):
            at = a + (records.V4_ENTRY if buf[a - HEADER_BYTES + 4] == 4 else 8) * c   # past the norms of format 4
            slot_parts.append(buf[a : a + 8 * c].view(np.int64))
            code_parts.append(buf[at : at + c * dim].reshape(c, dim))
        codes = np.concatenate(code_parts)
        return np.concatenate(slot_parts), codec.decode_trusted(codes), offsets
    slots = np.empty(total, np.int64)
    vectors = np.empty(total * dim, np.float32)
    records.gather_records(buf, starts, counts, offsets, dim, slots, vectors)
    return slots, vectors.reshape(total, dim), offsets
