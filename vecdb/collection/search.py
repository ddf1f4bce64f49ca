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


def run_search(mem: Memory, req: SearchRequest, tenant: TenantSet | None) -> SearchResult:
    """Internal ids and distances of the ``req.k`` nearest points per query row.

    The index resolves the knobs once. A tenant search on an index that keeps no tenants
    passes the tenant's cached AllowSet as ``allow`` (intersected with the filter's); on a
    tenant-aware index it passes ``tenant=number``, with ``allow`` only for a filter."""
    index = mem.index
    params = index.resolve_params(req.params)
    q, k = req.queries, req.k
    allow = None if req.filter is None else filter_allow(mem, req.filter)
    number = None
    if tenant is not None:
        if index.tenant_aware:
            number = tenant.number
        elif allow is None:
            allow = tenant.allow()
        else:
            allow = tenant_filter_allow(mem, req.filter, tenant, allow)
    if not len(q) or (allow is not None and not len(allow)):
        return SearchResult.empty(len(q), k)
    if mem.staging.busy:
        return mem.staging.search_trusted(index, q, k, allow, number, params)
    return index.search_trusted(q, k, allow, number, params)


def filter_allow(mem: Memory, node: object) -> AllowSet:
    """Live points matching the filter ``node``: cached per filter and brought up to date
    for the points written since (``memory.filter_allow``), not re-evaluated per write."""
    return cached_filter_allow(mem, node)


def tenant_filter_allow(mem: Memory, node: object, tenant: TenantSet, matching: AllowSet) -> AllowSet:
    """The tenant's members among the filter's ``matching`` points, cached like filter results
    (keyed by tenant number too; a membership change bumps the write seq)."""
    key = ((node, tenant.number), mem.seq)
    hit = mem.filters.get(key)
    if hit is None:
        hit = tenant.allow().intersect_mask(matching.bitmap(len(mem.live)))
        mem.filters.put(key, hit, len(mem.live) + hit.ids.nbytes)
    return hit
