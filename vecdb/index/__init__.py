"""Indexes: one module per index type, all implementing ``vecdb.index.base.Index``."""
from vecdb.index.allow import AllowSet
from vecdb.index.base import BaseIndex, Index, SearchParams, index_class, index_kinds, load_index, save_index
from vecdb.index.binary import BinaryIndex
from vecdb.index.curator import Curator, CuratorParams
from vecdb.index.flat import FlatIndex
from vecdb.index.hnsw import HNSW, HNSWParams
from vecdb.index.pq import PQIndex
from vecdb.index.sq8 import SQ8Index
from vecdb.index.spann import SPANN, SPANNParams

load = load_index

__all__ = ["AllowSet", "BaseIndex", "BinaryIndex", "Curator", "CuratorParams", "FlatIndex", "HNSW", "HNSWParams", "Index",
           "PQIndex", "SPANN", "SPANNParams", "SQ8Index", "SearchParams", "index_class", "index_kinds", "load", "load_index", "save_index"]
