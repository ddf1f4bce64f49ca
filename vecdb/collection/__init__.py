"""The collection layer: one collection's durable points in LMDB and the in-memory state
(index, payload index, tenants) that mirrors them.

Modules: ``collection`` (the public ``Collection``), ``layout`` (what is stored where, and
what the database hands a collection), ``oplog`` (log records replayed after a checkpoint),
``memory`` (the in-memory mirror), ``tenants``, ``points`` (reading stored points),
``recovery`` (checkpoint + replay, or rebuild), ``checkpoint``, ``training`` (building and
training the configured index), ``apply`` (committed batches, the staged drain),
``spaces`` (the LMDB sub-databases of an index that persists itself), ``search`` (the
trusted search path), ``idkeys`` (user ids -> stored keys) and ``export`` (reading points out
whole, to copy them into another collection).
"""
from vecdb.collection.collection import Collection
from vecdb.collection.layout import PARTS, CheckpointPolicy, CollectionHost

__all__ = ["PARTS", "CheckpointPolicy", "Collection", "CollectionHost"]
