"""Indexes: one module per index type, all implementing ``vecdb.index.base.Index``."""
from vecdb.index.base import BaseIndex, Index, load_index, registered_kinds, save_index
from vecdb.index.flat import FlatIndex

load = load_index

__all__ = ["BaseIndex", "Index", "FlatIndex", "load", "load_index", "save_index", "registered_kinds"]
