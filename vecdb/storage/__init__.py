"""LMDB storage layer: one environment per database, named sub-databases, fixed-width
big-endian keys, raw little-endian arrays and JSON payloads as values (never pickle), locks,
the sub-databases one index owns (``IndexSpace``), and the files beside the environment.

A base layer beside ``vecdb.kernels``: it imports nothing from vecdb but ``errors`` (and
``types``), so indexes and collections can both build on it (``tests/test_layering.py``)."""
from vecdb.storage.env import Store
from vecdb.storage.locks import RWLock
from vecdb.storage.space import IndexSpace

__all__ = ["IndexSpace", "RWLock", "Store"]
