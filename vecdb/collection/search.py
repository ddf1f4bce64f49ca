"""The trusted search path of a collection: a validated ``SearchRequest`` turned into the
serving index's call, with the tenant and the filter as allow-sets or as the index's own
tenant argument. Runs under the collection's shared lock."""
from __future__ import annotations

from vecdb.api import SearchRequest
from vecdb.collection.memory import Memory
from vecdb.collection.memory import filter_allow as cached_filter_allow
from vecdb.collection.tenants import TenantSet
from vecdb.index.allow import AllowSet
from vecdb.types import SearchResult


def run_search(mem: Memory, req: SearchRequest, tenants: list[TenantSet] | None) -> SearchResult:
    """Internal ids and distances of the ``req.k`` nearest points per query row.

    The index resolves the knobs once. A tenant search on an index that keeps no tenants
    passes the tenants' cached AllowSet (the union when several) as ``allow``, intersected
    with the filter's; on a tenant-aware index it passes ``tenant=number`` (or a tuple of
    numbers, when it searches several tenants at once), with ``allow`` only for a filter."""
    index = mem.index
    params = index.resolve_params(req.params)
    q, k = req.queries, req.k
    allow = None if req.filter is None else filter_allow(mem, req.filter)
    number: int | tuple[int, ...] | None = None
    if tenants:
        if index.tenant_aware and (len(tenants) == 1 or index.multi_tenant_search):
            number = tenants[0].number if len(tenants) == 1 else tuple(ts.number for ts in tenants)
        elif allow is None:
            allow = tenants[0].allow() if len(tenants) == 1 else tenants_allow(mem, tenants)
        else:
            allow = tenant_filter_allow(mem, req.filter, tenants, allow)
    if not len(q) or (allow is not None and not len(allow)):
        return SearchResult.empty(len(q), k)
    if mem.staging.busy:
        return mem.staging.search_trusted(index, q, k, allow, number, params)
    return index.search_trusted(q, k, allow, number, params)


def filter_allow(mem: Memory, node: object) -> AllowSet:
    """Live points matching the filter ``node``: cached per filter and brought up to date
    for the points written since (``memory.filter_allow``), not re-evaluated per write."""
    return cached_filter_allow(mem, node)


def tenants_allow(mem: Memory, tenants: list[TenantSet]) -> AllowSet:
    """The points any of several tenants may access, cached until a write (keyed by their
    numbers; a membership change bumps the write seq)."""
    key = (("tenants", tuple(ts.number for ts in tenants)), mem.seq)
    hit = mem.filters.get(key)
    if hit is None:
        hit = AllowSet.union([ts.allow() for ts in tenants])
        mem.filters.put(key, hit, hit.nbytes())
    return hit


def tenant_filter_allow(mem: Memory, node: object, tenants: list[TenantSet], matching: AllowSet) -> AllowSet:
    """The tenants' members among the filter's ``matching`` points, cached like filter results
    (keyed by the tenant numbers too; a membership change bumps the write seq)."""
    key = ((node, tuple(ts.number for ts in tenants)), mem.seq)
    hit = mem.filters.get(key)
    if hit is None:
        members = tenants[0].allow() if len(tenants) == 1 else tenants_allow(mem, tenants)
        hit = members.intersect_mask(matching.bitmap(len(mem.live)))
        mem.filters.put(key, hit, len(mem.live) + hit.ids.nbytes)
    return hit
