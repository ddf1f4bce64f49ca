"""SPANN: a memory-disk index. Heads (posting centroids) and their HNSW graph stay in memory;
posting lists (ids + float32 vectors) live in LMDB, one record each. After Chen et al.,
"SPANN" (NeurIPS 2021), with in-place updates after Xu et al., "SPFresh" (SOSP 2023).

Every change goes through a ``Plan``: the postings it rewrites, the heads it splits or
creates, the new resident arrays. A plan is computed from the last committed state plus the
postings it reads, and written through one write transaction with a fresh token; the plan
becomes the committed state once the token is seen on disk (by the next batch, search, add
or remove), so a transaction that aborts or runs again leaves nothing behind. Standalone,
``add``/``remove`` write through the index's own environment and commit at once. Inside a
collection ``persist_batch`` writes each batch, searches follow the committed postings and
heads, and ``add``/``remove`` only move the ids the index answers with (the collection's
staged points reach it in steps).

Updates are SPFresh's: an insert only appends to its postings; a posting left over its limit
is queued (a bounded queue; past it, or past twice the limit, the writer splits it itself)
and split, with LIRE reassignment of its neighbours' boundary vectors, by a background step
(``maintain``, in ``maintenance``) that also purges tombstones. Each step is one plan in one
write transaction, so a search sees the postings and heads before it or after it, never half
of it. A standalone index runs the steps on a thread of its own (stopped by ``close``); in a
collection the collection's indexer calls ``maintain``. SQ8 posting codes: ``codes``.
"""
from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vecdb.errors import AlreadyExistsError, DataLossError, FailedPreconditionError, InvalidArgumentError, UnavailableError
from vecdb.index.allow import NO_MASK, AllowSet, as_allow
from vecdb.index.base import BaseIndex, IndexBatch, SearchParams
from vecdb.index.hnsw import HNSW, MAX_EF
from vecdb.index.ids import IdMap
from vecdb.index.spann import postings, state
from vecdb.worker import Worker
from vecdb.index.spann.clustering import centroids_of, refine, split_until
from vecdb.index.spann.codes import CODES, MAX_RERANK, CodePostings, new_codec
from vecdb.index.spann.kernels import scan_postings, scan_postings_serial
from vecdb.index.spann.records import RUN, RUN_PAD, check_scan_records
from vecdb.index.spann.mapped import MappedReads
from vecdb.index.spann.maintenance import Maintenance, maintain_weakly
from vecdb.index.spann.one_query import OneQuery
from vecdb.index.spann.replication import DEFAULT_REPLICAS, assign_heads, group_by_head
from vecdb.index.spann.routing import EXACT_HEADS, ROUTES, plan_heads, plan_one, prepare, route_bytes
from vecdb.index.spann.updates import FANOUT, HeadState, Plan, Source, Work, graph_from
from vecdb.storage.env import Store
from vecdb.storage.space import IndexSpace
from vecdb.types import F32Matrix, I64Vector, Metric, SearchResult
from vecdb.validation import as_finite_float, as_fs_path, as_id_array, as_k, as_matrix, as_positive_int

FORMAT = "vecdb-spann"
FORMAT_VERSION = 1
#: most postings one query may read
MAX_POSTINGS = 4096
#: prefix of the sub-databases of a standalone index in its own environment
OWN_PREFIX = "spann."
#: below this many queries the posting scan runs on the calling thread
SERIAL_QUERIES = 4
#: scan float32 postings where LMDB maps them (no copy; each record checked in the same pass)
#: at any number of queries, not copied into one buffer, checked, then scanned in parallel:
#: the copy and check cost more than the scan (100k x 128, 2 cores, 200 queries: copy+check
#: 25 ms, parallel scan 5 ms; in place 0.4x the time, 2,000 queries reading each posting ~10
#: times 0.9x). The copied scan remains for postings not yet written (the overlay). SQ8
#: postings are scanned in place below ``SERIAL_QUERIES`` only (each query re-ranks with its
#: own float-row reads: 2,000 queries 1.26x the batched re-rank)
FLOAT_IN_PLACE = True
#: searches look their postings (and SQ8 re-rank rows) up in LMDB's pages inside their kernel
#: calls (``mapped``; one query: one call), not through py-lmdb (~1.5 us a record): False
#: reads by cursor (the reference path, also taken for pages the map reader does not follow)
MAPPED_READS = True
#: meta key of the token of the committed state
TOKEN_KEY = b"token"
#: committed states a search may still be reading (older snapshots retry with a new one)
RECENT_STATES = 8
#: read attempts of a search whose snapshot is older than every remembered state
SEARCH_RETRIES = 64
#: heads whose postings one step of a collection build extends and writes
BUILD_HEADS = 256
#: default eps2 by routing metric: squared L2 grows fast away from a head, -ip does not
DEFAULT_EPS2 = {Metric.L2: 1.0, Metric.IP: 0.3}
#: positions 0, 1, ...: where a one-query scan counts the entries of its i-th posting
_POSITIONS = np.arange(MAX_POSTINGS, dtype=np.int64)
_EMPTY_IDS = np.zeros(0, np.int64)
#: padded result rows by (queries, k), copied for each search of a few queries
_PADDED: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
#: each thread's scratch for what a one-query scan counts and nobody reads
_SCRATCH = threading.local()


def _padded_rows(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Fresh (nq, k) result rows, -1 / +inf: copies of kept ones for a few queries (a copy
    costs half of ``np.full``), made for more."""
    if nq > SERIAL_QUERIES:
        out_s = np.empty((nq, k), np.int64)
        out_s.fill(-1)
        out_d = np.empty((nq, k), np.float32)
        out_d.fill(np.inf)
        return out_s, out_d
    kept = _PADDED.get((nq, k))
    if kept is None:
        if len(_PADDED) >= 64:
            _PADDED.clear()
        kept = _PADDED[nq, k] = (np.full((nq, k), -1, np.int64), np.full((nq, k), np.inf, np.float32))
    return kept[0].copy(), kept[1].copy()


def _scratch_counts() -> tuple[np.ndarray, np.ndarray]:
    """This thread's arrays for the per-posting counts a one-query scan writes and nobody
    reads (a search without stats)."""
    got = getattr(_SCRATCH, "counts", None)
    if got is None:
        got = _SCRATCH.counts = (np.empty(MAX_POSTINGS, np.int64), np.empty(MAX_POSTINGS, np.int64))
    return got


class _EmptyRecords(dict):
    """The record of an empty posting, per (dimension, codes or not): a stand-in for a head
    with no record (an empty posting has no codes, so no codec is needed to write it)."""

    def __missing__(self, key: tuple[int, bool]) -> bytes:
        dim, codes = key
        raw = postings.encode(_EMPTY_IDS, np.zeros((0, dim), np.float32))
        if codes:                                # the same empty body, flagged as codes
            raw = raw[:6] + (1).to_bytes(2, "little") + raw[8:]
        record = self[key] = raw
        return record


_EMPTY_RECORD = _EmptyRecords()


@dataclass(frozen=True)
class SPANNParams(SearchParams):
    """SPANN search knobs: ``max_postings`` (postings read per query at most, default 64),
    ``eps2`` (query-aware pruning: read posting i only while d(q, c_i) - d(q, c_1) <=
    eps2 * |d(q, c_1)|, squared L2 or -ip; None = ``DEFAULT_EPS2`` of the metric) and ``ef``
    (past ``exact_heads``: the graph route's beam, or the heads the grouped route scans at
    least; None = max(64, 2 * max_postings)); with SQ8 codes, ``rerank``
    (candidates per query ranked on codes and re-ranked with their float vectors read from
    LMDB; None = max(4 * k, 40))."""

    max_postings: int = 64
    eps2: float | None = None
    ef: int | None = None
    rerank: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_postings", as_positive_int(self.max_postings, "max_postings", maximum=MAX_POSTINGS))
        if self.eps2 is not None:
            object.__setattr__(self, "eps2", as_finite_float(self.eps2, "eps2"))
        if self.ef is not None:
            object.__setattr__(self, "ef", as_positive_int(self.ef, "ef", maximum=MAX_EF))
        if self.rerank is not None:
            object.__setattr__(self, "rerank", as_positive_int(self.rerank, "rerank", maximum=MAX_RERANK))


@dataclass(frozen=True)
class SearchStats:
    """Work one ``SPANN.search_with_stats`` call did: postings read per query (nq,), distinct
    postings read for the whole batch, their bytes, and entries scanned per query (nq,)."""

    postings: np.ndarray
    distinct_postings: int
    bytes_read: int
    entries: np.ndarray
    rerank_bytes: int = 0                    # of bytes_read: float vectors read to re-rank (SQ8 codes)


class SPANN(OneQuery, Maintenance, CodePostings, BaseIndex):
    """Approximate k-NN with heads in memory and posting lists in LMDB.

    Parameters
    ----------
    dim, metric : as every index ("l2", "ip", "cosine"; cosine stores unit rows; heads are
        found by squared L2 for l2/cosine and by inner product for ip).
    path : standalone use: the LMDB environment holding the postings (created when missing,
        loaded when it holds an index: its stored parameters then win); None = a temporary
        directory, removed by ``close`` or garbage collection. Inside a collection the
        collection attaches sub-databases of its own environment instead.
    posting_limit : most entries (vectors, replicas included) of one posting; a posting
        growing past it is split by balanced k-means into parts of about half of it.
    head_size : training splits the sample into clusters of about this many points (at most
        twice as many; global k-means rounds then hold each to 1.5x the mean size,
        ``clustering.refine``): the initial head count is about len(sample) / head_size. More heads
        (smaller head_size / posting_limit) cost memory (dim * 4 bytes + the graph's links
        per head) and buy recall per posting read where the data has locality below the
        posting size; where it has none (an isotropic cluster larger than a posting: its
        neighbours lie anywhere in it) smaller postings only add replicas and reads. Let
        training make the heads: a sample of ~N / 10 with head_size ~ (sample / N) x the
        posting size wanted leaves the adds no splits to do (a small sample makes each head
        cover several clusters until thousands of splits cut them apart).
    replicas : most postings one vector is stored in (boundary replication).
    eps1 : closure rule: head j also stores x when d(x, c_j) - d(x, c_1) <= eps1 * |d(x, c_1)|
        (squared L2, or -ip for ip).
    rng_factor : RNG pruning of replicas (skip c_j when a chosen c_i, times this factor, is
        closer to c_j than x is). Heads are cluster means, nearer to each other than to the
        points in high dimensions: about 2 gives text embeddings (384-d) their replicas
        (more disk, higher recall per posting read); 1 suits lower dimensions.
    head_M, head_ef_construction : the HNSW over heads.
    exact_heads : up to this many heads, nearest heads are found by an exact scan of the
        centroids; past it by ``head_route``. 0 = always ``head_route``. Recorded with the index.
    head_route : "groups" (default): the heads of the nearest groups of heads scanned exactly
        (a two-level scan; ~99 % of the exact route's heads at a few % of its distances on
        clustered data), or "graph": the HNSW over the heads (which on clustered data misses
        nearest heads: see ``vecdb.index.spann.routing``). Recorded with the index.
    min_train : points a collection gathers before training the index.
    seed : seeds the clustering and the head graph.
    codes : None (postings hold float32 vectors) or "sq8": postings hold SQ8 codes (a
        quarter of the bytes), trained with the heads; searches rank on codes and re-rank the
        best ``rerank`` candidates with float32 vectors kept in LMDB, one record per vector.
        Recorded with the index.
    background : standalone: run splits, reassignment and tombstone purges on a thread of
        the index's own (False: only when ``maintain`` / ``wait_idle`` is called). Inside a
        collection the collection's indexer runs them.

    Search knobs (``SPANNParams``): ``max_postings``, ``eps2``, ``ef``.

    Memory: besides the resident part (``memory_bytes``), one ``add`` holds the postings it
    rewrites until it commits, so add a collection larger than RAM in chunks.
    """

    kind = "spann"
    params_type = SPANNParams
    needs_training = True
    persistence = "self"

    def __init__(self, dim: int, metric: Metric | str = Metric.L2, path: Any = None, *, posting_limit: int = 256,
                 head_size: int = 48, replicas: int = DEFAULT_REPLICAS, eps1: float = 0.5, rng_factor: float = 1.0,
                 head_M: int = 16, head_ef_construction: int = 128, min_train: int = 512, seed: int = 0,
                 codes: str | None = None, background: bool = True, exact_heads: int = EXACT_HEADS,
                 head_route: str = "groups") -> None:
        super().__init__(dim, metric)
        self.posting_limit = as_positive_int(posting_limit, "posting_limit", minimum=4, maximum=1 << 20)
        self.head_size = as_positive_int(head_size, "head_size", maximum=self.posting_limit)
        self.replicas = as_positive_int(replicas, "replicas", maximum=64)
        self.eps1 = as_finite_float(eps1, "eps1")
        self.rng_factor = as_finite_float(rng_factor, "rng_factor", strict=True)
        self.head_M = as_positive_int(head_M, "head_M", minimum=2, maximum=256)
        self.head_ef_construction = as_positive_int(head_ef_construction, "head_ef_construction", maximum=MAX_EF)
        self.min_train = as_positive_int(min_train, "min_train")
        self.seed = as_positive_int(seed, "seed", minimum=0)
        self.exact_heads = as_positive_int(exact_heads, "exact_heads", minimum=0, maximum=1 << 24)
        if not isinstance(head_route, str) or head_route not in ROUTES:
            raise InvalidArgumentError(f"head_route must be one of {ROUTES}, got {head_route!r}")
        self.head_route = head_route
        if not isinstance(background, bool):
            raise InvalidArgumentError(f"background must be True or False, got {background!r}")
        self.background = background
        if codes is not None and codes not in CODES:
            raise InvalidArgumentError(f"codes must be None or one of {CODES}, got {codes!r}")
        self.codes = codes
        self._codec = new_codec(codes, self.dim)
        self._route = Metric.IP if self.metric is Metric.IP else Metric.L2
        self._scan_code = 0 if self.metric is Metric.L2 else 1
        self._disk: HeadState | None = None        # heads of the last committed state
        self._disk_ids = self._ids                 # ids of the last committed state (served: self._ids)
        self._inflight: Plan | None = None         # written, commit not yet seen
        self._overlay: dict[int, tuple[I64Vector, F32Matrix]] | None = None
        self._lock = threading.RLock()             # one writer at a time (batches, adds, removes)
        self._sync_lock = threading.Lock()         # promotion of the in-flight plan
        self._splits = 0
        self._bg_splits = 0
        self._pending: dict[int, None] = {}        # heads queued for a split (insertion order)
        self._dead = 0                             # removals not yet purged from the postings
        self._purge: list[int] | None = None       # [next head, removals the running sweep covers]
        self._recent: dict[bytes, HeadState] = {}  # recent committed states by token
        self._bg: Worker | None = None
        self._pdb: Any = None                      # sub-databases of the attached space: postings,
        self._mdb: Any = None                      # meta (resident arrays, token),
        self._vdb: Any = None                      # float vectors (SQ8 codes)
        self._mapped: MappedReads | None = None    # one-query reads through the page map
        self._route_knobs: tuple[Any, Any, int, tuple[int, int, float]] = (None, None, -1, (0, 0, 0.0))
        self._lean_key: tuple = (None,) * 7        # the one-call route of the last (params, heads, k, ...)
        self._lean_heads: tuple = (-1, None)       # (read snapshot id, the committed heads it found)
        self._own = False
        self._store: Store | None = None
        self._finalizer: Any = None
        if path is not None:
            self._open_own(Path(as_fs_path(path)), temporary=False)

    # ---- standalone environment --------------------------------------------------------
    def _open_own(self, path: Path, *, temporary: bool) -> None:
        store = Store(path)
        self._own = True
        self._store = store
        self._bg = Worker(path.name, maintain_weakly(self), role="spann") if self.background else None
        self._finalizer = weakref.finalize(self, _close_own, store, path if temporary else None, self._bg)
        try:
            BaseIndex.attach(self, IndexSpace(store, OWN_PREFIX))
        except BaseException:
            self._finalizer()
            raise

    def _own_space(self) -> IndexSpace:
        """The space a standalone index writes to (a temporary environment made on first use)."""
        if self._space is None:
            self._open_own(Path(tempfile.mkdtemp(prefix="vecdb-spann-")), temporary=True)
        assert self._space is not None
        return self._space

    def close(self) -> None:
        """Close a standalone index's own environment (a temporary one is removed); the
        index is empty and untrained afterwards. A no-op inside a collection."""
        if self._own and self._finalizer is not None:
            self._finalizer()
            self._space = None
            self._store = None
            self._mapped = None
            self._own = False
            self._disk = None
            self._inflight = None
            self._ids = IdMap()
            self._disk_ids = self._ids
            self._bg = None
            self._pending.clear()
            self._recent.clear()
            self._dead, self._purge = 0, None

    @property
    def path(self) -> Path | None:
        """Directory of a standalone index's LMDB environment (None until it has one, and
        inside a collection)."""
        return self._store.path if self._own and self._store is not None else None

    # ---- training ----------------------------------------------------------------------
    @property
    def is_trained(self) -> bool:
        return self._disk is not None

    @property
    def min_train_points(self) -> int:
        return self.min_train

    def _train(self, sample: F32Matrix) -> None:
        if len(self) or len(self._cids):
            raise FailedPreconditionError("SPANN holds vectors; train a new index instead of retraining this one")
        if not len(sample):
            raise InvalidArgumentError("SPANN needs at least one training vector")
        rng = np.random.default_rng(self.seed)
        clusters = refine(sample, split_until(sample, self.head_size, rng, fanout=FANOUT))
        graph = self._new_graph()
        graph.add(centroids_of(sample, clusters), np.arange(len(clusters), dtype=np.int64))
        prepare(graph, self.exact_heads, self.head_route)
        self._train_codes(sample)
        with self._lock:
            self._disk = HeadState(graph, np.zeros(len(clusters), np.int64), None)
            self._inflight = None
            self._overlay = None
            if self._own or self._space is None:
                self._own_space().write(self._persist_all)
                self._sync(self._inflight.state.token if self._inflight else None)

    def _new_graph(self) -> HNSW:
        return HNSW(self.dim, self._route, M=self.head_M, ef_construction=self.head_ef_construction,
                    seed=self.seed, progress=False)

    # ---- committed state ---------------------------------------------------------------
    @property
    def _cids(self) -> IdMap:
        """Ids of the last committed state: the served id map itself for a standalone index
        (its writes commit at once); a separate map inside a collection, whose staged points
        reach ``add`` after their batch committed."""
        return self._ids if self._own else self._disk_ids

    def _sync(self, token: Any) -> HeadState | None:
        """The heads matching the committed state whose token is ``token`` (read from the
        store): the in-flight plan becomes the committed state when it is that one; a
        recent older state when a reader's snapshot predates the last promotion; None when
        the snapshot is older still (the reader retries with a new one). Searches take no
        lock unless they promote."""
        disk = self._disk
        assert disk is not None
        if token is None or disk.token == token:   # bytes against LMDB's bytes or memoryview: no copy
            return disk
        tok = bytes(token)
        plan = self._inflight
        if plan is not None and plan.state.token == tok:
            with self._sync_lock:
                if self._inflight is plan:
                    self._promote(plan)
                    self._inflight = None
            assert self._disk is not None
            return self._disk
        return self._recent.get(tok)

    def _heads_of(self, txn: Any) -> HeadState | None:
        """``_sync`` to the committed state of ``txn``'s snapshot."""
        return self._sync(txn.get(TOKEN_KEY, db=self._mdb))

    def _sync_writer(self, txn: Any) -> HeadState:
        """``_sync`` for a writer, inside its write transaction: the state it plans from."""
        heads = self._heads_of(txn)
        if heads is not self._disk:
            raise FailedPreconditionError("SPANN: the stored state is not the one in memory (another writer?)")
        self._inflight = None                # not committed (aborted, or run again after the map grew)
        return heads

    def _read_token(self) -> Any:
        if self._space is None:
            return None
        with self._space.read() as txn:
            return txn.get(TOKEN_KEY, db=self._mdb)

    def _promote(self, plan: Plan) -> None:
        """Make ``plan`` the committed state (its ids enter / leave the committed id map;
        the postings it left over the limit join the split queue)."""
        if len(plan.removed):
            self._cids.release(plan.removed)
            self._dead += len(plan.removed)
        if len(plan.ids):
            slots = self._cids.append(plan.ids)
            if not np.array_equal(slots, plan.new_slots):
                raise FailedPreconditionError("SPANN: a plan does not match the committed state (concurrent writers?)")
        old = self._disk
        if old is not None and old.token is not None:
            self._recent[old.token] = old
            while len(self._recent) > RECENT_STATES:
                del self._recent[next(iter(self._recent))]
        self._disk = plan.state
        self._splits += plan.splits
        if plan.dequeued:
            self._bg_splits += plan.splits
        for head in plan.dequeued:
            self._pending.pop(head, None)
        if plan.sweep is not None:
            nxt, covers = plan.sweep
            self._purge = None if nxt < 0 else [nxt, covers]
            if nxt < 0:
                self._dead = max(0, self._dead - covers)
        for head in plan.oversized:
            self._pending[head] = None
        if plan.written:
            self._overlay = None
        else:
            overlay = self._overlay if self._overlay is not None else {}
            overlay.update(plan.postings)
            self._overlay = overlay

    def _write_step(self, step: Any) -> Plan | None:
        """Run ``step(txn)`` (returning the plan it wrote, or None) in one write transaction
        of a standalone index's own environment (or the collection's, for ``maintain``) and
        make its plan the committed state once it committed."""
        assert self._space is not None
        plan = self._space.write(step)
        if plan is not None and plan.written:
            self._sync(plan.state.token)
        return plan

    # ---- adding and removing -----------------------------------------------------------
    def _add(self, vectors: F32Matrix, ids: I64Vector) -> None:
        if self._disk is None:
            raise FailedPreconditionError("SPANN must be trained before vectors are added (call train(sample))")
        if self._own:
            self._own_space()
            self._write_step(lambda txn: self._locked_write(txn, _EMPTY_IDS, ids, vectors))
            self._wake()
            return
        token = self._read_token()               # outside the lock: a writer holds the lock inside its transaction
        with self._lock:
            self._sync(token)
            slots = self._cids.lookup(ids)
            if (slots >= 0).all():              # committed by persist_batch: memory catches up
                self._ids.assign(ids, slots)
                return
            if (slots >= 0).any():
                raise FailedPreconditionError("SPANN: some of the ids added are committed, others not")
            if self._disk.token is None and self._space is not None:
                self._build_add(ids, vectors)     # a build: postings go to disk in bounded steps
                return
            plan = self._make_plan(None, _EMPTY_IDS, ids, vectors)   # kept in memory, written by persist_all
            self._promote(plan)
            self._ids.assign(ids, plan.new_slots)

    def _locked_write(self, txn: Any, removed: I64Vector, ids: I64Vector, vectors: F32Matrix) -> Plan:
        with self._lock:
            self._sync_writer(txn)
            plan = self._plan_and_write(txn, removed, ids, vectors)
            self._inflight = plan
            return plan

    def remove(self, ids: Any) -> int:
        """Remove the stored ones among ``ids``; returns how many were removed. Their entries
        stay in the postings as tombstones (skipped by searches) until a background purge or
        a rewrite of their posting drops them."""
        want = np.unique(as_id_array(ids))
        if self._own:
            present = want[self._ids.contains(want)]
            if not len(present):
                return 0
            empty = np.zeros((0, self.dim), np.float32)

            def step(txn: Any) -> Plan:
                with self._lock:
                    self._sync_writer(txn)
                    gone = want[self._ids.contains(want)]
                    plan = self._plan_and_write(txn, gone, _EMPTY_IDS, empty)
                    self._inflight = plan
                    return plan

            plan = self._write_step(step)
            self._wake()
            return int(len(plan.removed)) if plan is not None else 0
        with self._lock:
            present = want[self._ids.contains(want)]
            self._ids.release(present)          # their batch wrote the removal (persist_batch)
            return int(len(present))

    def _remove(self, slots: I64Vector) -> None:
        """Removal keeps nothing else in memory: postings hold tombstones (see ``remove``)."""

    def _empty_plan(self, heads: HeadState) -> Plan:
        return Plan(removed=_EMPTY_IDS, ids=_EMPTY_IDS, new_slots=_EMPTY_IDS, rem_slots=_EMPTY_IDS, postings={},
                    state=HeadState(heads.graph, heads.count.copy(), None))

    # ---- persistence "self" ------------------------------------------------------------
    def _attach(self, space: IndexSpace) -> None:
        self._pdb = space.db("postings")
        self._mdb = space.db("meta")
        if not self._own:
            self._disk_ids = IdMap()
        with space.read() as txn:
            meta = state.read_meta(txn, self._mdb)
        if meta is None:
            self._vdb = space.db("vectors") if self._codec is not None else None
            self._mapped = MappedReads(space, self._codec is not None) if MAPPED_READS else None
            return
        with space.read() as txn:
            if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
                raise DataLossError(f"{space!r} does not hold a SPANN index of format version {FORMAT_VERSION}")
            if meta.get("dim") != self.dim or meta.get("metric") != self.metric.value:
                raise InvalidArgumentError(f"{space!r} holds a SPANN index of dim {meta.get('dim')} and metric "
                                           f"{meta.get('metric')!r}, not dim {self.dim} / {self.metric.value!r}")
            arrays = state.read_arrays(txn, self._mdb, meta.get("arrays", {}))
            token = txn.get(TOKEN_KEY, db=self._mdb)
        try:
            self._set_params(meta["params"])
            graph = graph_from(self.dim, self._route, meta["graph"], arrays)
            count = np.asarray(arrays["h_count"], np.int64)
            slot_ids = np.asarray(arrays["slot_ids"], np.int64)
            self._restore_codes(arrays)
        except (KeyError, ValueError, TypeError) as exc:
            raise DataLossError(f"corrupt SPANN state in {space!r}: {exc}") from None
        gids = graph.ids
        if token is None or (len(gids) and (gids.max() >= len(count) or (count[gids] < 0).any())):
            raise DataLossError(f"corrupt SPANN state in {space!r}: the head counts do not match the head graph")
        prepare(graph, self.exact_heads, self.head_route)
        self._disk = HeadState(graph, count, bytes(token))
        self._ids = IdMap(slot_ids)
        self._disk_ids = IdMap(slot_ids) if not self._own else self._ids
        self._dead = int(meta.get("dead", np.count_nonzero(slot_ids < 0)))
        self._vdb = space.db("vectors") if self._codec is not None else None
        self._mapped = MappedReads(space, self._codec is not None) if MAPPED_READS else None
        self._requeue()

    def _set_params(self, params: dict[str, Any]) -> None:
        """Construction parameters recorded with a stored index (they win over the given ones)."""
        for name in ("posting_limit", "head_size", "replicas", "head_M", "head_ef_construction", "min_train", "seed"):
            setattr(self, name, int(params[name]))
        self.eps1 = float(params["eps1"])
        self.rng_factor = float(params["rng_factor"])
        self.exact_heads = int(params.get("exact_heads", EXACT_HEADS))   # stored before it: the default
        self.head_route = params.get("head_route", "groups")
        if self.head_route not in ROUTES:
            raise ValueError(f"unknown head_route {self.head_route!r}")
        self.codes = params.get("codes")
        if self.codes is not None and self.codes not in CODES:
            raise ValueError(f"unknown codes {self.codes!r}")
        self._codec = new_codec(self.codes, self.dim)

    def _persist_batch(self, txn: Any, batch: IndexBatch) -> None:
        if self._disk is None:
            raise FailedPreconditionError("SPANN is not trained; it cannot write a batch")
        with self._lock:
            self._sync_writer(txn)
            asked = np.unique(np.asarray(batch.removed, np.int64))
            removed = asked[self._cids.contains(asked)] if len(asked) else _EMPTY_IDS
            ids = np.asarray(batch.ids, np.int64)
            clash = self._cids.contains(ids) & ~np.isin(ids, removed) if len(ids) else np.zeros(0, bool)
            if clash.any():
                raise AlreadyExistsError(f"SPANN already holds ids {ids[clash][:5].tolist()}")
            vectors = self._prepare_vectors(batch.vectors) if len(ids) else np.zeros((0, self.dim), np.float32)
            self._inflight = self._plan_and_write(txn, removed, ids, vectors)

    def _persist_all(self, txn: Any) -> None:
        if self._disk is None:
            raise FailedPreconditionError("SPANN is not trained; there is nothing to write")
        with self._lock:
            disk = self._disk
            overlay = self._overlay or {}
            for head in np.flatnonzero(disk.count > 0).tolist():
                if head in overlay:
                    slots, vectors = overlay[head]
                    txn.put(postings.key(head), postings.encode(slots, vectors, self._codec), db=self._pdb)
                    if self._codec is not None:
                        self._write_vectors(txn, slots, vectors)
                elif txn.get(postings.key(head), db=self._pdb) is None:
                    raise FailedPreconditionError(f"SPANN posting {head} is neither in memory nor on disk")
            arrays = self._arrays(disk.graph, disk.count)
            arrays["slot_ids"] = self._cids.slot_ids
            described = state.write_arrays(txn, self._mdb, arrays, None)
            token = secrets.token_hex(8).encode()
            state.write_meta(txn, self._mdb, self._meta(disk.graph, described, self._dead))
            txn.put(TOKEN_KEY, token, db=self._mdb)
            self._inflight = Plan(removed=_EMPTY_IDS, ids=_EMPTY_IDS, new_slots=_EMPTY_IDS, rem_slots=_EMPTY_IDS,
                                  postings={}, state=HeadState(disk.graph, disk.count, token), written=True)

    def _arrays(self, graph: HNSW, count: np.ndarray) -> dict[str, np.ndarray]:
        """The resident arrays but the slot -> id map (written apart, by its changes)."""
        _, arrays = graph.state()
        out = {f"g_{name}": arr for name, arr in arrays.items()}
        out["h_count"] = count
        out.update(self._code_arrays())
        return out

    def _meta(self, graph: HNSW, described: dict[str, Any], dead: int) -> dict[str, Any]:
        """The meta record; ``dead``: removals not yet purged (a reopened index resumes the purge)."""
        return {"format": FORMAT, "version": FORMAT_VERSION, "dim": self.dim, "metric": self.metric.value,
                "params": self.params(), "graph": graph.state()[0], "arrays": described, "dead": int(dead)}

    def _write_plan(self, txn: Any, plan: Plan) -> None:
        """Write ``plan``'s postings, the changed chunks of the resident arrays and a new token."""
        disk = self._disk
        assert disk is not None
        for head, (slots, vectors) in plan.postings.items():
            if len(slots):
                txn.put(postings.key(head), postings.encode(slots, vectors, self._codec), db=self._pdb)
            else:
                txn.delete(postings.key(head), db=self._pdb)
        if self._codec is not None:
            self._write_vectors(txn, plan.new_slots, plan.rows)
            for slot in plan.rem_slots.tolist():
                txn.delete(postings.key(slot), db=self._vdb)
        old = self._arrays(disk.graph, disk.count)
        new = self._arrays(plan.state.graph, plan.state.count)
        described = state.write_arrays(txn, self._mdb, new, old)
        described["slot_ids"] = state.write_grown(txn, self._mdb, "slot_ids", self._cids.slot_ids, plan.ids,
                                                  plan.rem_slots)
        dead = self._dead + len(plan.removed)
        if plan.sweep is not None and plan.sweep[0] < 0:
            dead -= plan.sweep[1]
        state.write_meta(txn, self._mdb, self._meta(plan.state.graph, described, max(dead, 0)))
        plan.state.token = secrets.token_hex(8).encode()
        txn.put(TOKEN_KEY, plan.state.token, db=self._mdb)
        plan.written = True

    def _plan_and_write(self, txn: Any, removed: I64Vector, ids: I64Vector, vectors: F32Matrix) -> Plan:
        plan = self._make_plan(txn, removed, ids, vectors)
        self._write_plan(txn, plan)
        return plan

    # ---- planning (reads postings, changes nothing) ------------------------------------
    def _source(self) -> Source:
        """What a ``Work`` reads of this index: its settings and its committed state now."""
        disk = self._disk
        return Source(dim=self.dim, route=self._route, codec=self._codec, posting_limit=self.posting_limit,
                      eps1=self.eps1, seed=self.seed, exact_heads=self.exact_heads, head_route=self.head_route,
                      base=None if disk is None else disk.count, committed=self._cids.slot_ids,
                      overlay=self._overlay, space=self._space, pdb=self._pdb)

    def _make_plan(self, txn: Any, removed: I64Vector, ids: I64Vector, vectors: F32Matrix) -> Plan:
        """The plan of one write: removed ids become tombstones, new rows join their postings
        under the closure rule; postings left over the limit are queued for the background or
        split here (``Maintenance._schedule_splits``)."""
        disk = self._disk
        assert disk is not None
        idmap = self._disk_ids
        rem_slots = idmap.lookup(removed) if len(removed) else _EMPTY_IDS
        n0 = idmap.n_slots
        new_slots = np.arange(n0, n0 + len(ids), dtype=np.int64)
        plan = Plan(removed=np.asarray(removed, np.int64), ids=np.asarray(ids, np.int64), new_slots=new_slots,
                    rem_slots=np.sort(rem_slots[rem_slots >= 0]), postings={},
                    state=HeadState(disk.graph, disk.count.copy(), None), rows=vectors)
        work = Work(self._source(), plan, txn)
        if len(ids):
            x = np.ascontiguousarray(vectors, np.float32)
            cand, cand_d = work.nearest(x, min(2 * self.replicas, max(len(work.graph), 1)))
            assigned = assign_heads(x, cand, cand_d, work.centroids, self.eps1, self.replicas, self.rng_factor)
            heads, starts, rows = group_by_head(assigned)
            for i, head in enumerate(heads.tolist()):
                r = rows[starts[i] : starts[i + 1]]
                slots, vecs = work.get(head)
                work.put(head, np.concatenate([slots, new_slots[r]]), np.concatenate([vecs, x[r]]))
        self._schedule_splits(work, building=disk.token is None or not len(idmap), lire=len(idmap) > 0)
        return plan

    def _build_add(self, ids: I64Vector, vectors: F32Matrix) -> None:
        """Add rows to an index being built in a collection (nothing committed yet): rows are
        assigned to heads at once, then the postings are extended (and split) ``BUILD_HEADS``
        heads at a time, each group written in its own write transaction of the not yet live
        space, so a build holds one group of postings in memory, never all of them;
        ``persist_all`` then writes the resident state and makes the space live (a crash
        before that leaves a generation that is never live and is dropped by the next build)."""
        assert self._space is not None and self._disk is not None
        x = np.ascontiguousarray(vectors, np.float32)
        n0 = self._cids.n_slots
        new_slots = np.arange(n0, n0 + len(ids), dtype=np.int64)
        probe = Work(self._source(), self._empty_plan(self._disk), None)
        cand, cand_d = probe.nearest(x, min(2 * self.replicas, max(len(probe.graph), 1)))
        assigned = assign_heads(x, cand, cand_d, probe.centroids, self.eps1, self.replicas, self.rng_factor)
        heads, starts, rows = group_by_head(assigned)
        del probe, cand, cand_d, assigned
        lire = len(self._cids) > 0
        for g in range(0, max(len(heads), 1), BUILD_HEADS):
            first = g == 0
            plan = self._empty_plan(self._disk)
            if first:                            # the ids enter with the first group
                plan.ids, plan.new_slots = np.asarray(ids, np.int64), new_slots
            work = Work(self._source(), plan, None)
            for i in range(g, min(g + BUILD_HEADS, len(heads))):
                r = rows[starts[i] : starts[i + 1]]
                slots, vecs = work.get(int(heads[i]))
                work.put(int(heads[i]), np.concatenate([slots, new_slots[r]]), np.concatenate([vecs, x[r]]))
            work.split_oversized(lire=lire)

            def write(txn: Any, plan: Plan = plan, first: bool = first) -> None:
                if first and self._codec is not None:
                    self._write_vectors(txn, new_slots, x)
                for head, (slots, vecs) in plan.postings.items():
                    if len(slots):
                        txn.put(postings.key(head), postings.encode(slots, vecs, self._codec), db=self._pdb)
                    else:
                        txn.delete(postings.key(head), db=self._pdb)

            if plan.postings or first:
                self._space.write(write)
            plan.written = True                  # on disk (live once persist_all commits)
            self._promote(plan)
        self._ids.assign(np.asarray(ids, np.int64), new_slots)

    # ---- search ------------------------------------------------------------------------
    def _search_slots(self, queries: F32Matrix, k: int, allow: AllowSet | None, tenant: int | None,
                      params: SearchParams) -> tuple[np.ndarray, np.ndarray]:
        slots, dists, _ = self._search_work(queries, k, allow, params)  # type: ignore[arg-type]
        return slots, dists

    def _search_work(self, queries: F32Matrix, k: int, allow: AllowSet | None, p: SPANNParams,
                     stats: bool = False) -> tuple[np.ndarray, np.ndarray, SearchStats | None]:
        """Top-k slots and kernel distances of prepared queries, and (when ``stats``) the work."""
        nq = len(queries)
        out_s, out_d = _padded_rows(nq, k)
        if self._disk is None or not len(self._disk.graph):
            return out_s, out_d, _no_work(nq) if stats else None
        mask = NO_MASK if allow is None else allow.bitmap(self._ids.n_slots)
        serial = nq < SERIAL_QUERIES
        rerank_bytes = 0
        in_place = None
        if self._space is None:
            found = self._gather(None, self._disk, queries, k, p)
        else:
            found = None
            for _ in range(SEARCH_RETRIES):
                with self._space.read(buffers=True) as txn:
                    heads = self._heads_of(txn)   # drops the overlay once it is committed
                    if heads is None:            # a snapshot older than every state remembered: read again
                        continue
                    overlay = self._overlay is not None
                    if not overlay and nq == 1:  # one query: its own path, fewest calls
                        in_place = self._search_one(txn, heads, queries, k, allow, mask, p, out_s[0], out_d[0], stats)
                        if not stats:
                            return out_s, out_d, None
                        break
                    if not overlay and (serial or (FLOAT_IN_PLACE and self._codec is None)):   # no copy
                        in_place = self._scan_in_place(txn, heads, queries, k, allow, mask, p, out_s, out_d, stats)
                        if not stats:            # the rows are the result
                            return out_s, out_d, None
                        break
                    found = self._gather(None if overlay else txn, heads, queries, k, p, self._codec is not None)
                    if self._codec is not None:   # rank on codes, re-rank with floats of the same snapshot
                        rerank_bytes = self._scan_codes(None if overlay else txn, queries, found, allow, mask, serial,
                                                        p.rerank, out_s, out_d)
                    break
            if found is None and in_place is None:
                raise UnavailableError("SPANN: the postings kept changing under the search; try again")
        if in_place is not None:
            read, rerank_bytes, counts, qptr, qlist = in_place
        else:
            buf, starts, counts, qptr, qlist, read = found
            if self._codec is None or self._space is None:
                scan = scan_postings_serial if serial else scan_postings
                scan(queries, buf, starts, counts, qptr, qlist, self._ids.slot_ids, mask, allow is not None,
                     self._scan_code, out_s, out_d)
        if not stats:
            return out_s, out_d, None
        per_query = np.diff(qptr)
        entries = np.zeros(nq, np.int64)
        if len(qlist):
            sums = np.add.reduceat(counts[qlist], np.minimum(qptr[:-1], len(qlist) - 1))
            entries = np.where(per_query > 0, sums, 0).astype(np.int64)
        return out_s, out_d, SearchStats(per_query, len(counts), int(read) + rerank_bytes, entries, rerank_bytes)

    def _nprobe_ef_eps2(self, heads: HeadState, p: SPANNParams) -> tuple[int, int, float]:
        """The heads a query routes to, the route's beam and the pruning's eps2 of ``p``
        (remembered for the last ``p`` and heads: the same on every call of a sweep)."""
        last, n = self._route_knobs, len(heads.count)
        if last[0] is p and last[1] is heads and last[2] == n:
            return last[3]
        nprobe = min(p.max_postings, len(heads.graph))
        ef = p.ef if p.ef is not None else max(64, 2 * nprobe)
        knobs = nprobe, max(ef, nprobe), DEFAULT_EPS2[self._route] if p.eps2 is None else p.eps2
        self._route_knobs = (p, heads, n, knobs)
        return knobs

    def _plan(self, heads: HeadState, queries: F32Matrix, k: int, p: SPANNParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The postings the queries read (nearest heads, then query-aware pruning): (wanted
        heads, sorted; qptr; qlist), as ``plan_reads`` returns them."""
        nprobe, ef, eps2 = self._nprobe_ef_eps2(heads, p)
        return plan_heads(heads.graph, queries, nprobe, ef, self.exact_heads, self.head_route, heads.count, eps2, k)

    def _gather(self, txn: Any, heads: HeadState, queries: F32Matrix, k: int, p: SPANNParams,
                in_place: bool = False) -> Any:
        """The posting records the queries read (query-aware pruning), checked (read through
        ``txn``; from the overlay when None; ``in_place``: see ``_read_records``): (buffer,
        starts, counts, qptr, qlist, bytes of the records)."""
        wanted, qptr, qlist = self._plan(heads, queries, k, p)
        buf, starts, counts, nbytes = self._read_records(txn, heads, wanted, in_place)
        return buf, starts, counts, qptr, qlist, nbytes

    def _search_one(self, txn: Any, heads: HeadState, query: F32Matrix, k: int, allow: AllowSet | None,
                    mask: np.ndarray, p: SPANNParams, out_s: np.ndarray, out_d: np.ndarray, stats: bool) -> Any:
        """``_scan_in_place`` for one query (``query`` (1, dim)) with the fewest calls: its
        postings planned in one kernel call (``plan_one``), read nearest first and ranked into
        the rows ``out_s``/``out_d``; with ``stats`` the same tuple as ``_scan_in_place``."""
        q = query[0]
        nprobe, ef, eps2 = self._nprobe_ef_eps2(heads, p)
        read = plan_one(heads.graph, q, nprobe, ef, self.exact_heads, self.head_route, heads.count, eps2, k)
        mapped = self._mapped
        if mapped is not None:                   # looked up, checked and ranked in one kernel call
            if stats:
                counts, sizes = np.zeros(len(read), np.int64), np.empty(len(read), np.int64)
            else:                                # what the kernel counts goes unread: this thread's scratch
                counts, sizes = _scratch_counts()
            done = mapped.scan(txn, read, heads.count, q, self._ids.slot_ids, mask, allow is not None, self._scan_code,
                               self._codec, self._rerank_width(k, p.rerank), counts, sizes, out_s, out_d)
            if done is not None:
                return (done[0], done[1], counts, np.array([0, len(read)], np.int64), _POSITIONS[: len(read)]) \
                    if stats else None
        raws = self._posting_records(txn, read)
        recs, at = raws, _POSITIONS[: len(raws)]
        if not all(raws):                        # a missing record: an empty posting (or a lost one: raises)
            _check_present(heads, read, raws)
            recs, at = _records_at(raws, range(len(raws)))
        counts = np.zeros(len(raws), np.int64)
        floats = 0
        if self._codec is not None:
            floats = self._rank_codes(txn.cursor(db=self._vdb), q, recs, at, read, counts,
                                      self._rerank_width(k, p.rerank), allow is not None, mask, out_s, out_d)
        else:
            self._rank_floats(q, recs, at, read, counts, allow is not None, mask, out_s, out_d)
        if not stats:
            return None
        return _bytes_of(raws), floats, counts, np.array([0, len(raws)], np.int64), _POSITIONS[: len(raws)]

    def _scan_in_place(self, txn: Any, heads: HeadState, queries: F32Matrix, k: int, allow: AllowSet | None,
                       mask: np.ndarray, p: SPANNParams, out_s: np.ndarray, out_d: np.ndarray, stats: bool) -> Any:
        """Top-k of the queries over postings scanned where LMDB maps them (no copy; a
        format-3 or 4 record is checked in the same pass, see ``records``; SQ8 codes then
        re-ranked, ``_rank_codes``), into ``out_s``/``out_d``: with ``stats``, (bytes of
        postings read, bytes of float rows read to re-rank, entries per posting, qptr, qlist),
        else None. DataLossError for a corrupt, truncated or missing posting, as
        ``_read_records`` (the rows then hold partial results: never returned)."""
        wanted, qptr, qlist = self._plan(heads, queries, k, p)
        if self._mapped is not None:
            done = self._scan_mapped(txn, heads, queries, k, allow, mask, p, out_s, out_d, wanted, qptr, qlist)
            if done is not None:
                return done if stats else None
        raws = self._posting_records(txn, wanted)
        all_found = all(raws)
        if not all_found:                        # a missing record: an empty posting (or a lost one: raises)
            _check_present(heads, wanted, raws)
        counts = np.zeros(len(raws), np.int64)
        use_allow = allow is not None
        codes = self._codec is not None
        cursor = txn.cursor(db=self._vdb) if codes else None
        width = self._rerank_width(k, p.rerank)
        bounds, order = qptr.tolist(), qlist.tolist()
        floats = 0
        for qi in range(len(queries)):
            lo, hi = bounds[qi], bounds[qi + 1]
            if all_found:
                recs, at = [raws[pos] for pos in order[lo:hi]], qlist[lo:hi]
            else:
                recs, at = _records_at(raws, order[lo:hi])
            if codes:
                floats += self._rank_codes(cursor, queries[qi], recs, at, wanted, counts, width, use_allow, mask,
                                           out_s[qi], out_d[qi])
            else:
                self._rank_floats(queries[qi], recs, at, wanted, counts, use_allow, mask, out_s[qi], out_d[qi])
        return (_bytes_of(raws), floats, counts, qptr, qlist) if stats else None

    def _scan_mapped(self, txn: Any, heads: HeadState, queries: F32Matrix, k: int, allow: AllowSet | None,
                     mask: np.ndarray, p: SPANNParams, out_s: np.ndarray, out_d: np.ndarray, wanted: np.ndarray,
                     qptr: np.ndarray, qlist: np.ndarray) -> Any:
        """``_scan_in_place`` through the page map (``mapped``): each query's postings looked
        up, checked and ranked (SQ8: re-ranked) in one kernel call (float postings from
        ``SERIAL_QUERIES`` queries up: all queries in one parallel call). Returns the tuple of
        ``_scan_in_place``'s stats, or None when the pages are not ones the map reader
        follows (the rows are reset: the caller reads by cursor)."""
        assert self._mapped is not None
        scan, count, live, code, codec = self._mapped.scan, heads.count, self._ids.slot_ids, self._scan_code, self._codec
        use_allow, width = allow is not None, self._rerank_width(k, p.rerank)
        counts = np.zeros(len(wanted), np.int64)
        sizes = np.full(len(wanted), -1, np.int64)
        floats = 0
        if codec is None and len(queries) >= SERIAL_QUERIES:     # float postings: queries in parallel
            if not self._mapped.scan_many(txn, wanted, qptr, qlist, count, queries, live, mask, use_allow, code,
                                          counts, sizes, out_s, out_d):
                return None
            return int(sizes[sizes > 0].sum()), 0, counts, qptr, qlist
        for qi in range(len(queries)):
            at = qlist[qptr[qi] : qptr[qi + 1]]
            got_counts, got_sizes = np.empty(len(at), np.int64), np.empty(len(at), np.int64)
            done = scan(txn, wanted[at], count, queries[qi], live, mask, use_allow, code, codec, width, got_counts,
                        got_sizes, out_s[qi], out_d[qi])
            if done is None:
                out_s.fill(-1)
                out_d.fill(np.inf)
                return None
            counts[at] = got_counts
            sizes[at] = got_sizes
            floats += done[1]
        return int(sizes[sizes > 0].sum()), floats, counts, qptr, qlist

    def _posting_records(self, txn: Any, heads: np.ndarray) -> list[Any]:
        """The posting records of ``heads`` read through ``txn`` (None: no record, an empty
        posting or a lost one), by cursor: ~15% less than ``txn.get``."""
        cursor = txn.cursor(db=self._pdb)
        find, value = cursor.set_key, cursor.value
        return [value() if find(key) else None for key in postings.keys(heads.tolist())]

    def _rank_floats(self, query: np.ndarray, recs: list[Any], at: np.ndarray, heads: np.ndarray, counts: np.ndarray,
                     use_allow: bool, mask: np.ndarray, out_s: np.ndarray, out_d: np.ndarray) -> None:
        """Top-k of ``query`` over the float32 posting records ``recs`` (record i: posting
        ``heads[at[i]]``, its entries counted in ``counts[at[i]]``) into the heap rows
        ``out_s``/``out_d`` (+inf / -1: the heap itself), ``RUN`` records per kernel call,
        each checked in the same pass. DataLossError for a corrupt or truncated one."""
        n = len(recs)
        live, dim, code = self._ids.slot_ids, self.dim, self._scan_code
        for lo in range(0, n, RUN):
            hi = min(lo + RUN, n)
            run = recs[lo:hi] if n > RUN else recs
            bad, problem = check_scan_records(tuple(run) if hi - lo == RUN else tuple(run + [RUN_PAD] * (RUN - hi + lo)),
                                              hi - lo, at[lo:hi] if n > RUN else at, dim, query, live, mask, use_allow,
                                              code, counts, out_d, out_s, hi == n)
            if problem:
                raise DataLossError(postings.problem_message(int(heads[at[lo + bad]]), int(problem)))

    def search_with_stats(self, queries: Any, k: int, *, allow: Any = None, **params: Any) -> tuple[SearchResult, SearchStats]:
        """``search`` (same arguments and checks) plus the postings and bytes it read."""
        q = as_matrix(queries, self.dim, what="queries")
        k = as_k(k)
        p = self.resolve_params(params)
        nq = len(q)
        empty = _no_work(nq)
        if nq == 0 or not len(self):
            return SearchResult.empty(nq, k), empty
        slot_allow = None
        if allow is not None:
            slot_allow = self._slot_allow(as_allow(allow))
            if not len(slot_allow):
                return SearchResult.empty(nq, k), empty
        slots, dists, stats = self._search_work(self._prepare_vectors(q), k, slot_allow, p, True)  # type: ignore[arg-type]
        assert stats is not None
        return SearchResult(self._ids.ids_of(slots), self._finish_distances(dists)), stats

    def _read_records(self, txn: Any, heads: HeadState, wanted: np.ndarray,
                      in_place: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """The posting records of ``wanted`` (sorted heads) read through ``txn`` (encoded from
        the overlay when None), checked: (buffer, starts, counts, bytes of the records); laid
        end to end in a copy, or with ``in_place`` (SQ8 postings scanned before ``txn`` ends)
        where LMDB's pages hold them (``mapped``: the buffer is the page map). A head whose
        posting is empty has no record; DataLossError for a corrupt, truncated or missing one."""
        if txn is None:
            overlay = self._overlay or {}
            empty = (_EMPTY_IDS, _no_rows(self.dim))
            raws = [postings.encode(*overlay.get(head, empty), self._codec) for head in wanted.tolist()]
        else:
            mapped = self._mapped
            if in_place and mapped is not None and self._codec is not None:
                found = mapped.records(txn, wanted, heads.count, self.dim)
                if found is not None:
                    return found
            raws = self._posting_records(txn, wanted)
            if not all(raws):                    # a missing one (an empty one fails the check)
                _check_present(heads, wanted, raws)
                nbytes = _bytes_of(raws)         # read: the stand-ins below are not
                raws = [raw if raw is not None else _EMPTY_RECORD[self.dim, self._codec is not None] for raw in raws]
                buf, starts, counts = postings.check_many(raws, wanted, self.dim, self._codec)
                return buf, starts, counts, nbytes
        buf, starts, counts = postings.check_many(raws, wanted, self.dim, self._codec)
        return buf, starts, counts, len(buf)

    # ---- the rest of the surface -------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {"posting_limit": self.posting_limit, "head_size": self.head_size, "replicas": self.replicas,
                "eps1": self.eps1, "rng_factor": self.rng_factor, "head_M": self.head_M,
                "head_ef_construction": self.head_ef_construction, "min_train": self.min_train, "seed": self.seed,
                "codes": self.codes, "exact_heads": self.exact_heads, "head_route": self.head_route}

    @property
    def n_heads(self) -> int:
        """Live heads (postings)."""
        return 0 if self._disk is None else len(self._disk.graph)

    def posting_sizes(self) -> np.ndarray:
        """Entries (replicas and tombstones included) of every live posting."""
        if self._disk is None:
            return _EMPTY_IDS.copy()
        return self._disk.count[self._disk.count >= 0].copy()

    def _memory_bytes(self) -> int:
        total = 0
        disk = self._disk
        if disk is not None:
            total += disk.count.nbytes + disk.graph.memory_bytes() + route_bytes(disk.graph, self.exact_heads)
        if not self._own:
            total += self._disk_ids.memory_bytes()
        for slots, vectors in (self._overlay or {}).values():
            total += slots.nbytes + vectors.nbytes
        if self._codec is not None:
            total += self._codec.memory_bytes()
        if self._mapped is not None:
            total += self._mapped.memory_bytes()
        return int(total)

    def disk_bytes(self) -> int:
        """Bytes of the LMDB pages holding the postings (what they occupy on disk)."""
        if self._space is None:
            return 0
        with self._space.read() as txn:
            stat = txn.stat(self._pdb)
        return int(stat["psize"] * (stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]))

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The whole index (heads, graph, every posting) as arrays, for ``save``."""
        if self._disk is None:
            raise FailedPreconditionError("an untrained SPANN index has nothing to save")
        disk = self._disk
        live = np.flatnonzero(disk.count > 0).astype(np.int64)
        if self._overlay is not None or self._space is None:
            overlay = self._overlay or {}
            raws = [postings.encode(*overlay[h], self._codec) for h in live.tolist()]
        else:
            with self._space.read() as txn:
                raws = [txn.get(postings.key(h), db=self._pdb) for h in live.tolist()]
            if None in raws:
                raise DataLossError("SPANN posting missing while saving")
        slots, vectors, offsets = postings.read_many(raws, live, self.dim, self._codec)
        if self._codec is not None and self._overlay is None and self._space is not None:
            unique, back = np.unique(slots, return_inverse=True)      # the exact rows, not decoded codes
            with self._space.read() as txn:
                rows = self._float_rows(txn, unique)
            exact = rows[back]
            lost = np.isnan(exact).any(1)
            if (self._cids.slot_ids[slots[lost]] >= 0).any():
                raise DataLossError("SPANN vector record of a stored vector is missing")
            vectors = np.where(lost[:, None], vectors, exact)     # tombstones keep their decoded codes
        arrays = self._arrays(disk.graph, disk.count)
        arrays.update(p_heads=live, p_offsets=offsets, p_slots=slots, p_vectors=vectors)
        return dict(self.params(), graph=disk.graph.state()[0]), arrays

    @classmethod
    def _from_state(cls, dim: int, metric: Metric, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> "SPANN":
        params = dict(params)
        graph = params.pop("graph")
        index = cls(dim, metric, **params)
        disk = HeadState(graph_from(dim, index._route, graph, arrays), np.array(arrays["h_count"], np.int64), None)
        offsets = np.asarray(arrays["p_offsets"], np.int64)
        heads = np.asarray(arrays["p_heads"], np.int64)
        if len(offsets) != len(heads) + 1 or offsets[-1] != len(arrays["p_slots"]):
            raise ValueError("posting offsets do not match the posting arrays")
        index._restore_codes(arrays)
        prepare(disk.graph, index.exact_heads, index.head_route)
        index._disk = disk
        index._overlay = {int(h): (np.array(arrays["p_slots"][offsets[i] : offsets[i + 1]], np.int64),
                                   np.array(arrays["p_vectors"][offsets[i] : offsets[i + 1]], np.float32))
                          for i, h in enumerate(heads.tolist())}
        space = index._own_space()
        index._ids = index._disk_ids = IdMap(np.asarray(arrays["slot_ids"], np.int64))
        space.write(index._persist_all)
        index._sync(index._inflight.state.token if index._inflight else None)
        return index


def _check_present(heads: HeadState, read: np.ndarray, raws: list[Any]) -> None:
    """DataLossError when a posting of ``read`` with no record (None in ``raws``) should hold
    entries (a lost record); with none it is an empty posting."""
    count = heads.count
    for head, raw in zip(read.tolist(), raws):
        if raw is None and count[head] > 0:
            raise DataLossError(postings.lost_message(head, int(count[head])))


def _records_at(raws: list[Any], positions: Any) -> tuple[list[Any], np.ndarray]:
    """The records of ``raws`` at ``positions`` that exist (an empty posting has none), and
    their positions: a scan's run, and where it counts each record's entries."""
    kept = [pos for pos in positions if raws[pos] is not None]
    return [raws[pos] for pos in kept], np.array(kept, np.int64)


def _bytes_of(raws: list[Any]) -> int:
    """Bytes of the posting records read (None: a posting with no record)."""
    return sum(len(raw) for raw in raws if raw is not None)


def _no_work(nq: int) -> SearchStats:
    return SearchStats(np.zeros(nq, np.int64), 0, 0, np.zeros(nq, np.int64))


def _no_rows(dim: int) -> F32Matrix:
    return np.zeros((0, dim), np.float32)


def _close_own(store: Store, temporary: Path | None, background: Worker | None) -> None:
    """Stop a standalone index's background thread, close its environment and remove it
    when it was temporary."""
    if background is not None:
        background.stop()
    store.close()
    if temporary is not None:
        shutil.rmtree(temporary, ignore_errors=True)
