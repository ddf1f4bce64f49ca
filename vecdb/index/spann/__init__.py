"""SPANN: heads in memory (searched with HNSW), balanced posting lists in LMDB, query-aware
pruning, in-place updates (SPFresh). ``SPANN`` is the index; the modules are its parts."""
from vecdb.index.spann.index import SPANN, SPANNParams, SearchStats

__all__ = ["SPANN", "SPANNParams", "SearchStats"]
