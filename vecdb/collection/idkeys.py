"""User ids -> the LMDB keys a collection stores them under (``ids``/``rev``, see ``layout``),
validated once with the messages every implementation of the API gives (embedded
collections, and the cluster's router before it splits a request by shard)."""
from __future__ import annotations

from typing import Any

import numpy as np

from vecdb.api import CollectionInfo
from vecdb.errors import InvalidArgumentError
from vecdb.storage import keys as K
from vecdb.validation import as_id_array


def id_keys(info: CollectionInfo, ids: Any, *, unique: bool) -> tuple[list[bytes], list[Any]]:
    """Validated user ids of collection ``info`` -> (id keys, the ids as Python values): int
    ids non-negative int64, str ids non-empty and at most ``K.MAX_STR_ID_BYTES``; with
    ``unique`` a repeated id is an InvalidArgumentError."""
    if info.id_type == "int":
        if isinstance(ids, str) or (isinstance(ids, (list, tuple)) and any(isinstance(i, (str, bool)) for i in ids)):
            raise InvalidArgumentError(f"collection {info.name!r} has int ids; got {ids!r:.80}")
        arr = as_id_array(ids)
        uids: list[Any] = arr.tolist()
        keys = K.int_id_keys(arr)
        if unique and (len(arr) < 2 or bool((arr[1:] > arr[:-1]).all()) or len(np.unique(arr)) == len(arr)):
            return keys, uids   # unique, told by numpy (ascending ids, the common batch, in one pass)
    else:
        seq = [ids] if isinstance(ids, str) else list(np.asarray(ids, dtype=object).reshape(-1)) \
            if isinstance(ids, np.ndarray) else list(ids)
        uids = []
        for ident in seq:
            if isinstance(ident, np.str_):
                ident = str(ident)
            if not isinstance(ident, str) or not ident:
                raise InvalidArgumentError(f"collection {info.name!r} has str ids; got {ident!r}")
            if len(ident.encode("utf-8")) > K.MAX_STR_ID_BYTES:
                raise InvalidArgumentError(f"str id longer than {K.MAX_STR_ID_BYTES} bytes: {ident[:40]!r}...")
            uids.append(ident)
        keys = [K.str_id_key(i) for i in uids]
    if unique and len(set(keys)) != len(keys):
        seen: set[bytes] = set()
        dups = [u for u, key in zip(uids, keys) if key in seen or seen.add(key)]  # type: ignore[func-returns-value]
        raise InvalidArgumentError(f"duplicate ids in one batch: {dups[:5]}")
    return keys, uids
