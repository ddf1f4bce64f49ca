"""What one collection keeps where, and what the database hands a collection explicitly.

Sub-databases of one collection, named ``c<cid as 8 hex>.<part>``::

    ids  user-id key -> u64 iid          rev  u64 iid -> user-id key
    vblk u64 last iid + u64 first iid -> a block: the float32 LE rows of one upsert's new
         points (``blocks``)
    vec  u64 iid -> float32 LE row (a replaced point's row, taking precedence over its block
         row; every row of a collection written before blocks)
    pblk u64 last iid + u64 first iid -> a block: the JSON payloads of one upsert's new
         points (offsets + bytes; ``blocks``)
    pay  u64 iid -> JSON payload (a replaced point's, b"" for none, taking precedence over
         its block row; every payload of a collection written before blocks)
    ten  tenant name -> u32 tenant no.   mem  u32 tenant no. + u64 iid -> access level
    log  u64 seq -> op record (``oplog``) ctr  b"seq" / b"next_iid" / b"next_tenant" /
                                              b"index_gen" -> u64

An index with persistence "self" owns ``c<cid as 8 hex>.x<generation in hex>.<name>``
(``index_space_prefix``; the live generation is ``ctr``'s ``index_gen``, see ``spaces``).
Index checkpoints live in ``<index root>/c<cid as 8 hex>/<seq as 16 hex>/`` (for a "self"
index they hold the payload index and user ids only).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vecdb.storage.env import Store

PARTS = ("ids", "rev", "vec", "vblk", "pay", "pblk", "ten", "mem", "log", "ctr")

#: default of ``CollectionHost.max_pending`` (about 100 MB of staged rows at 128 dimensions)
DEFAULT_MAX_PENDING = 200_000
#: default of ``CollectionHost.serving_rest``: while searches are served, the indexer's work
#: beside them (linking staged rows, unlinking removed ones: ``Pace``) rests this many times as
#: long as each ~1 ms chunk of it took (its CPU time). That work reads vectors and lists all
#: over memory, and the searches' own random reads wait behind it: a real unlink pass beside 4
#: searching threads (1M collection) added ~1.2 ms to their p99 run straight, ~0.3 ms in short
#: chunks with rests (bench/README, session 27). The work then takes about twice as long while
#: searches go on: under a replacing writer the replaced entries stay hidden (searches filter
#: them out) for longer, which raised the median search there (see ``vecdb.open``).
DEFAULT_SERVING_REST = 1.0

# Access levels, as stored in ``mem`` values. Databases written before owners existed hold
# b"" for every membership, which therefore reads as a read grant (the least access).
OWNER, WRITE, READ = b"o", b"w", b""


@dataclass(frozen=True)
class CheckpointPolicy:
    """When to save the index: once ``points`` points changed (or half the collection when
    that is larger, so the cost per point stays bounded), or ``seconds`` after the last
    checkpoint if anything changed; always on close. Replay on open costs time proportional
    to the changes since the last checkpoint."""

    points: int = 100_000
    seconds: float = 600.0


@dataclass(frozen=True)
class CollectionHost:
    """What a collection gets from its database: the LMDB store, the handle of the
    ``manifest`` sub-database (collection number -> newest checkpoint), the lock that keeps
    checkpoints apart from snapshots, the folder of index checkpoints, the policy, and
    ``max_pending``: how many committed points may wait for the background indexer (staged,
    searched exactly) before writers wait for it; ``serving_rest``: how long the indexer
    rests between chunks of its work while searches are served, per second of work (0: never)."""

    store: Store
    manifest: Any
    checkpoint_lock: threading.Lock
    index_root: Path
    policy: CheckpointPolicy
    max_pending: int = DEFAULT_MAX_PENDING
    serving_rest: float = DEFAULT_SERVING_REST


def part_names(cid: int) -> dict[str, str]:
    """Sub-database name of each part of collection number ``cid``."""
    return {part: f"c{cid:08x}.{part}" for part in PARTS}


def checkpoint_root(index_root: Path, cid: int) -> Path:
    """Folder holding the checkpoints of collection number ``cid``."""
    return index_root / f"c{cid:08x}"


def index_space_prefix(cid: int, gen: int | None = None) -> str:
    """Name prefix of the sub-databases that collection ``cid``'s "self" index owns in
    generation ``gen`` (of every generation when None)."""
    base = f"c{cid:08x}.x"
    return base if gen is None else f"{base}{gen:x}."
