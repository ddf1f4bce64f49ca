"""The LMDB sub-databases one index owns in an environment (an ``IndexSpace``): how an index
with persistence "self" keeps its state on disk, beside the records of its collection.

A space is a name prefix: ``db("postings")`` is the sub-database ``<prefix>postings``. Inside a
collection the prefix is given by the collection layer (``c<cid>.x<generation>.``) and the
index writes only in the write transaction it is handed with each batch; a standalone index
may give itself a space in an environment of its own and write with ``write``.
"""
from __future__ import annotations

import re
from contextlib import AbstractContextManager
from typing import Any, Callable, TypeVar

import lmdb

from vecdb.errors import InvalidArgumentError, ResourceExhaustedError
from vecdb.storage.env import Store
from vecdb.storage.pages import PageMap

T = TypeVar("T")
#: most sub-databases one space may own (the database sizes LMDB's table of names for it)
MAX_SPACE_DBS = 4
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # always used with fullmatch


class IndexSpace:
    """The sub-databases named ``<prefix><name>`` of ``store``, owned by one index.

    ``db(name)`` opens (creating when missing) one of them; open them when the index is
    attached, never inside a transaction (LMDB opens names in a write transaction of its own).
    ``read()`` is a short read transaction of the whole environment; ``write(batch)`` runs
    ``batch(txn)`` in one write transaction (standalone use: inside a collection an index
    writes only in the transaction it is handed, so its state commits with the batch).
    """

    def __init__(self, store: Store, prefix: str) -> None:
        self.store = store
        self.prefix = prefix
        self._handles: dict[str, "lmdb._Database"] = {}

    def __repr__(self) -> str:
        return f"IndexSpace({str(self.store.path)!r}, prefix={self.prefix!r})"

    def db(self, name: str) -> "lmdb._Database":
        """Handle of sub-database ``name`` of this space (lowercase letters, digits and '_',
        starting with a letter, at most 32 characters), created when missing. Handles are
        cached, so asking again for an open one is free (also inside a transaction)."""
        handle = self._handles.get(name) if isinstance(name, str) else None
        if handle is not None:
            return handle
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidArgumentError(f"index sub-database name must be 1-32 lowercase letters, digits or '_' "
                                       f"starting with a letter; got {name!r:.60}")
        full = self.prefix + name
        existing = self.names()
        if full not in existing and len(existing) >= MAX_SPACE_DBS:
            raise ResourceExhaustedError(f"an index may own at most {MAX_SPACE_DBS} sub-databases; "
                                         f"{self.prefix!r} holds {sorted(existing)}")
        handle = self._handles[name] = self.store.db(full)
        return handle

    def names(self) -> list[str]:
        """Full names of the sub-databases this space holds now, sorted."""
        return self.store.names(self.prefix)

    def page_map(self) -> PageMap:
        """The read-only map of the environment's pages (``Store.page_map``)."""
        return self.store.page_map()

    def root(self, txn: Any, name: str) -> int | None:
        """Root page of sub-database ``name`` in the read snapshot ``txn`` (``Store.root``)."""
        return self.store.root(txn, self.prefix + name)

    def read(self, *, buffers: bool = False) -> AbstractContextManager[Any]:
        """A short read-only transaction (see ``Store.read``)."""
        return self.store.read(buffers=buffers)

    def write(self, batch: Callable[[Any], T]) -> T:
        """Run ``batch(txn)`` in one write transaction and commit it (see ``Store.write``)."""
        return self.store.write(batch)
