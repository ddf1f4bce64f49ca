"""Curator: the multi-tenant index (a shared clustering tree with per-tenant shortlists)."""
from vecdb.index.curator.index import Curator, CuratorParams

__all__ = ["Curator", "CuratorParams"]
