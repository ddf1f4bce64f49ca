"""The churn workload of ``vecdb bench run --churn``: a writer thread inserts and deletes rows
through a target while the harness searches it, and every query is scored against the rows
live when it started, the writes in flight during it handled by ``TRUTH_RULE``.

The write sequence (``ChurnStream``) is the same for every target; how much of it a target
gets through depends on its write speed. The writer logs each batch's begin and acknowledgement
times (``WriteLog``); the searcher's calls carry their start and end times; ``score`` turns
both into per-query truths, computed once per distinct live state by a chunked numpy scan.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from vecdb.errors import FailedPreconditionError, InvalidArgumentError
from vecdb.storage.locks import RWLock
from vecdb.types import Metric

if TYPE_CHECKING:
    from vecdb.bench.adapters.base import Target
    from vecdb.bench.measure import Timing

CHURN_SEED = 23
INSERT, DELETE = 1, -1
#: queries and base rows per block of the exact scan (bounds its memory)
QUERY_CHUNK = 256
ROW_CHUNK = 32768

TRUTH_RULE = (
    "per query: the truth is the exact top-k over its start state, the rows live once every write batch "
    "acknowledged before the query started is applied. Batches acknowledged after it started and begun before "
    "it ended are in flight: a returned row they insert is dropped from the result and from the query's scored "
    "slots (neither hit nor miss); a row they delete is a hit when returned (it is in the start state) and, when "
    "not returned, leaves the truth, which reaches one row deeper into the start state instead. A returned row "
    "deleted before the query started is a miss. recall@r = hits among the first r results that are kept / "
    "scored slots (r minus the dropped ones), summed over queries.")

WRITE_MODES = {
    "concurrent": "writes run while searches run (the target's own locking)",
    "linked": "rows are placed with searches held off and linked while searches run; deletes hold searches off",
    "serialised": "each write batch holds searches off (a readers-writer lock around every batch and search call)",
}


class ChurnStream:
    """The steady-state write sequence every target replays (fixed seed). The build holds
    ``base[:n_initial]``; round r inserts the ``batch`` rows that have been out longest (first
    the held-back rows, in order), then deletes ``batch`` rows drawn from those live before the
    round, which join the back of the out queue. ``live`` is the state after every batch
    handed out (the writer applies each before it takes the next)."""

    def __init__(self, n: int, fraction: float, rounds: int, k: int) -> None:
        if not 0 < fraction < 1:
            raise InvalidArgumentError(f"--churn takes the fraction of rows held out, in (0, 1); got {fraction}")
        if rounds < 1:
            raise InvalidArgumentError(f"--churn-rounds must be >= 1, got {rounds}")
        held = int(round(n * fraction))
        self.n_initial = n - held
        if held < rounds or self.n_initial - held < k:
            raise InvalidArgumentError(f"--churn {fraction} with {rounds} rounds needs more rows than {n}")
        self.fraction, self.rounds, self.batch = fraction, rounds, held // rounds
        self.live = np.zeros(n, bool)
        self.live[: self.n_initial] = True
        self._out = np.arange(self.n_initial, n, dtype=np.int64)
        self._rng = np.random.default_rng(CHURN_SEED)
        self._pending: np.ndarray | None = None
        #: batches handed out so far
        self.handed = 0

    def next(self) -> tuple[int, np.ndarray]:
        """The next batch: (INSERT or DELETE, sorted int64 rows)."""
        if self._pending is None:
            rows, self._out = self._out[: self.batch], self._out[self.batch :]
            self._pending = np.sort(self._rng.choice(np.flatnonzero(self.live), size=self.batch, replace=False))
            self.live[rows] = True
            kind = INSERT
        else:
            rows, self._pending = self._pending, None
            self.live[rows] = False
            self._out = np.concatenate([self._out, rows])
            kind = DELETE
        self.handed += 1
        return kind, np.sort(rows)


@dataclass
class WriteLog:
    """The batches one phase's writer applied, in order, with perf_counter times: ``begin``
    (the write call started) and ``ack`` (it returned: the write is acknowledged)."""

    kinds: list[int] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    begin: list[float] = field(default_factory=list)
    ack: list[float] = field(default_factory=list)

    def add(self, kind: int, rows: np.ndarray, begin: float, ack: float) -> None:
        self.kinds.append(kind)
        self.rows.append(rows)
        self.begin.append(begin)
        self.ack.append(ack)

    def arrays(self, t0: float) -> dict[str, np.ndarray]:
        """The log as arrays (times in seconds from ``t0``; rows of batch j are
        ``batch_rows[batch_indptr[j]:batch_indptr[j + 1]]``)."""
        sizes = np.array([len(r) for r in self.rows], np.int64)
        return {"batch_kind": np.asarray(self.kinds, np.int8),
                "batch_begin_s": np.asarray(self.begin, np.float64) - t0,
                "batch_ack_s": np.asarray(self.ack, np.float64) - t0,
                "batch_indptr": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                "batch_rows": np.concatenate(self.rows).astype(np.int64) if self.rows else np.zeros(0, np.int64)}


class Guard:
    """Where the writer's batches meet the searches, by the target's ``churn_writes`` mode;
    searched in place of the target (same ``search`` signature)."""

    def __init__(self, target: "Target") -> None:
        if target.churn_writes not in WRITE_MODES:
            raise FailedPreconditionError(f"target {target.name}: churn_writes must be one of {list(WRITE_MODES)}, "
                                          f"got {target.churn_writes!r}")
        self.target, self.mode = target, target.churn_writes
        self.lock = None if self.mode == "concurrent" else RWLock("bench-churn")

    def write(self, kind: int, rows: np.ndarray, vectors: np.ndarray | None) -> None:
        t = self.target
        if kind == INSERT and self.mode == "linked":
            assert self.lock is not None
            t.insert_linked(vectors, rows, self.lock.write)
            return
        apply = (lambda: t.insert(vectors, rows)) if kind == INSERT else (lambda: t.delete(rows))
        if self.lock is None:
            apply()
            return
        with self.lock.write():
            apply()

    def search(self, queries: np.ndarray, k: int, params: dict[str, Any],
               allow: np.ndarray | None = None) -> np.ndarray:
        if self.lock is None:
            return self.target.search(queries, k, params, allow)
        with self.lock.read():
            return self.target.search(queries, k, params, allow)


class _Writer(threading.Thread):
    """Applies the stream's batches until stopped, at most ``rate`` rows per second (None: as
    fast as the target takes them), logging each."""

    def __init__(self, guard: Guard, stream: ChurnStream, base: np.ndarray, rate: float | None,
                 threads: int | None) -> None:
        super().__init__(name="bench-churn-writer", daemon=True)
        self.guard, self.stream, self.base, self.rate, self.threads = guard, stream, base, rate, threads
        self.stop = threading.Event()
        self.begun = threading.Event()
        self.log = WriteLog()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if self.threads:
                import numba

                numba.set_num_threads(max(1, min(self.threads, numba.config.NUMBA_NUM_THREADS)))  # per thread
            t0, written = time.perf_counter(), 0
            while not self.stop.is_set():
                if self.rate:
                    wait = t0 + written / self.rate - time.perf_counter()
                    if wait > 0 and self.stop.wait(wait):
                        break
                kind, rows = self.stream.next()
                vectors = np.ascontiguousarray(self.base[rows]) if kind == INSERT else None
                begin = time.perf_counter()
                self.begun.set()
                self.guard.write(kind, rows, vectors)
                self.log.add(kind, rows, begin, time.perf_counter())
                written += len(rows)
        except BaseException as exc:  # re-raised by run_phase in the searching thread
            self.error = exc
        finally:
            self.begun.set()


@dataclass
class Phase:
    """One search phase under churn: the live rows when it began, the writer's log, its wall
    times and the searcher's timed passes."""

    live_start: np.ndarray
    log: WriteLog
    t0: float
    t1: float
    timings: list["Timing"]
    mode: str
    rate: float | None
    writer_threads: int | None

    def figures(self, stream: ChurnStream) -> dict[str, Any]:
        """What the line records of the writes: batches, rounds, rows, rates, n_live range."""
        kinds = np.asarray(self.log.kinds, np.int64)
        sizes = np.array([len(r) for r in self.log.rows], np.int64)
        took = np.asarray(self.log.ack) - np.asarray(self.log.begin)
        wall = self.t1 - self.t0
        n0 = int(self.live_start.sum())
        counts = n0 + np.cumsum(kinds * sizes) if len(kinds) else np.array([n0])
        ins, dels = kinds == INSERT, kinds == DELETE
        return {"write_mode": self.mode, "write_mode_means": WRITE_MODES[self.mode],
                "write_batches": int(len(kinds)), "rounds": int(dels.sum()), "batch_rows": stream.batch,
                "rows_inserted": int(sizes[ins].sum()), "rows_deleted": int(sizes[dels].sum()),
                "phase_s": wall, "write_rows_per_s": float(sizes.sum() / wall) if wall > 0 else None,
                "rate_asked": self.rate,
                "insert_rows_per_s": float(sizes[ins].sum() / took[ins].sum()) if took[ins].sum() > 0 else None,
                "delete_rows_per_s": float(sizes[dels].sum() / took[dels].sum()) if took[dels].sum() > 0 else None,
                "write_busy_share": float(took.sum() / wall) if wall > 0 else None,
                "writer_threads": self.writer_threads,
                "n_live_start": n0, "n_live_min": int(min(n0, counts.min())), "n_live_max": int(max(n0, counts.max()))}


def run_phase(target: "Target", stream: ChurnStream, base: np.ndarray, passes: Callable[[Guard], list["Timing"]],
              rate: float | None = None, writer_threads: int | None = None) -> Phase:
    """Start the writer on ``target``, run ``passes(guard)`` (the timed searches, through the
    guard) once its first batch has begun, then stop it after its current batch."""
    guard = Guard(target)
    live_start = stream.live.copy()
    writer = _Writer(guard, stream, base, rate, writer_threads)
    timings: list[Timing] = []
    t0 = time.perf_counter()
    writer.start()
    try:
        writer.begun.wait()
        if writer.error is None:
            timings = passes(guard)
    finally:
        writer.stop.set()
        writer.join()
    t1 = time.perf_counter()
    if writer.error is not None:
        raise FailedPreconditionError(f"target {target.name}: a churn write failed: "
                                      f"{type(writer.error).__name__}: {writer.error}") from writer.error
    return Phase(live_start, writer.log, t0, t1, timings, guard.mode, rate, writer_threads)


def combined(timings: list["Timing"]) -> "Timing":
    """All passes of a phase as one timing: ids and call latencies stacked pass after pass,
    the summed wall time (QPS over every query searched under writes)."""
    from vecdb.bench.measure import Timing

    return Timing(np.vstack([t.ids for t in timings]), np.concatenate([t.latencies_s for t in timings]),
                  float(sum(t.total_s for t in timings)), timings[0].batch,
                  np.concatenate([t.starts_s for t in timings if t.starts_s is not None]))


def query_times(timings: list["Timing"]) -> tuple[np.ndarray, np.ndarray]:
    """Per query searched (pass after pass), the start and end of the call that held it."""
    starts, ends = [], []
    for t in timings:
        assert t.starts_s is not None
        starts.append(np.repeat(t.starts_s, t.batch)[: len(t.ids)])
        ends.append(np.repeat(t.starts_s + t.latencies_s, t.batch)[: len(t.ids)])
    return np.concatenate(starts), np.concatenate(ends)


# ---- exact truth over live states -------------------------------------------------------------------
def _prepared(x: np.ndarray, metric: Metric) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    if metric is Metric.COSINE:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms > 0, norms, 1)
    return x


def _dist32(q: np.ndarray, x: np.ndarray, metric: Metric) -> np.ndarray:
    """Ranking distances (float32, smaller is closer) of prepared queries to prepared rows."""
    dots = q @ x.T
    if metric is Metric.L2:
        return np.einsum("ij,ij->i", x, x)[None, :] - 2 * dots
    return -dots


def _dist64(q: np.ndarray, x: np.ndarray, metric: Metric) -> np.ndarray:
    """Exact float64 distances of one prepared query to prepared rows (final ranking)."""
    q64, x64 = q.astype(np.float64), x.astype(np.float64)
    if metric is Metric.L2:
        return ((x64 - q64) ** 2).sum(1)
    return -(x64 @ q64)


def _keep(best_d: np.ndarray, best_r: np.ndarray, d: np.ndarray, r: np.ndarray,
          m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` smallest of the kept and the new candidates per query (unordered)."""
    all_d = np.concatenate([best_d, d], axis=1)
    all_r = np.concatenate([best_r, np.broadcast_to(r, d.shape) if r.ndim == 1 else r], axis=1)
    if all_d.shape[1] <= m:
        return all_d, all_r
    part = np.argpartition(all_d, m - 1, axis=1)[:, :m]
    return np.take_along_axis(all_d, part, 1), np.take_along_axis(all_r, part, 1)


def _scan(base: np.ndarray, q: np.ndarray, metric: Metric, rows: np.ndarray, m: int,
          mask: Callable[[slice], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Float32 candidates: the ``m`` nearest of ``rows`` per prepared query, scanned in chunks;
    ``mask(chunk)`` (nq, chunk) hides rows per query (+inf)."""
    best_d = np.full((len(q), 0), np.inf, np.float32)
    best_r = np.full((len(q), 0), -1, np.int64)
    for s in range(0, len(rows), ROW_CHUNK):
        part = slice(s, s + ROW_CHUNK)
        d = _dist32(q, _prepared(base[rows[part]], metric), metric)
        if mask is not None:
            d[~mask(part)] = np.inf
        best_d, best_r = _keep(best_d, best_r, d, rows[part], m)
    return best_d, best_r


def _ranked(base: np.ndarray, q: np.ndarray, metric: Metric, cand: np.ndarray, cand_d: np.ndarray) -> list[np.ndarray]:
    """Per query, its finite candidates ranked by exact float64 distance (ties: lower row)."""
    out = []
    for i in range(len(q)):
        rows = np.unique(cand[i][np.isfinite(cand_d[i]) & (cand[i] >= 0)])
        d = _dist64(q[i], _prepared(base[rows], metric), metric)
        out.append(rows[np.lexsort((rows, d))])
    return out


def exact_topk(base: np.ndarray, queries: np.ndarray, metric: Metric, live: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k over the rows where ``live`` is True (int64 row numbers, -1 padded)."""
    q = _prepared(queries, metric)
    rows = np.flatnonzero(live).astype(np.int64)
    out = np.full((len(q), k), -1, np.int64)
    for s in range(0, len(q), QUERY_CHUNK):
        cand_d, cand = _scan(base, q[s : s + QUERY_CHUNK], metric, rows, 2 * k)
        for i, ranked in enumerate(_ranked(base, q[s : s + QUERY_CHUNK], metric, cand, cand_d)):
            out[s + i, : min(k, len(ranked))] = ranked[:k]
    return out


class _States:
    """Liveness of rows at state c (after the first c batches of a log), by a table of the
    log's events sorted by (row, batch)."""

    def __init__(self, live_start: np.ndarray, log: WriteLog) -> None:
        self.live_start = live_start
        nb = len(log.kinds)
        self.stride = nb + 1
        rows = np.concatenate(log.rows).astype(np.int64) if nb else np.zeros(0, np.int64)
        batch = np.repeat(np.arange(nb, dtype=np.int64), [len(r) for r in log.rows])
        kind = np.repeat(np.asarray(log.kinds, np.int64), [len(r) for r in log.rows])
        key = rows * self.stride + batch
        order = np.argsort(key, kind="stable")
        self.key, self.rows, self.kind = key[order], rows[order], kind[order]
        #: every row some batch of the log touched
        self.touched = np.unique(rows)

    def live_at(self, rows: np.ndarray, c: int) -> np.ndarray:
        """Whether each of ``rows`` is live after the first ``c`` batches."""
        pos = np.searchsorted(self.key, rows * self.stride + c, side="left") - 1
        ok = pos >= 0
        hit = np.zeros(len(rows), bool)
        hit[ok] = self.rows[pos[ok]] == rows[ok]
        out = self.live_start[rows].copy()
        out[hit] = self.kind[pos[hit]] == INSERT
        return out


@dataclass
class Scored:
    """A churn pass scored by ``TRUTH_RULE``: per-query truth (nq, k) (-1 padded), which result
    slots were dropped (rows inserted in flight), recall per depth, and counts."""

    truth: np.ndarray
    dropped: np.ndarray
    recalls: dict[int, float]
    stats: dict[str, Any]


def recall_kept(ids: np.ndarray, truth: np.ndarray, dropped: np.ndarray, r: int) -> float:
    """recall@r over the kept slots: hits among the first r results not dropped, over the
    valid truth entries of depth r minus the dropped slots, summed over queries."""
    hits = slots = 0
    for f, t, drop in zip(ids[:, :r], truth[:, :r], dropped[:, :r]):
        keep = f[(f >= 0) & ~drop]
        hits += np.intersect1d(keep, t[t >= 0]).size
        slots += int((t >= 0).sum()) - int(drop.sum())
    return hits / slots if slots > 0 else 1.0


def score(base: np.ndarray, queries: np.ndarray, metric: Metric, live_start: np.ndarray, log: WriteLog,
          starts: np.ndarray, ends: np.ndarray, ids: np.ndarray, k: int, depths: tuple[int, ...],
          query_of: np.ndarray | None = None) -> Scored:
    """Score the results ``ids`` of the searches that ran from ``starts`` to ``ends``
    (perf_counter, per search) while ``log``'s batches were applied over ``live_start``, by
    ``TRUTH_RULE``; search i is of ``queries[query_of[i]]`` (default: of query i). The exact
    scan runs once per query over the rows no batch touched, and once per distinct start state
    over the rows some batch touched."""
    nq = len(ids)
    query_of = np.arange(nq) if query_of is None else np.asarray(query_of, np.int64)
    states = _States(live_start, log)
    acks, begins = np.asarray(log.ack, np.float64), np.asarray(log.begin, np.float64)
    c = np.searchsorted(acks, starts, side="left")           # batches acknowledged before the start
    d = np.maximum(np.searchsorted(begins, ends, side="left"), c)   # ... and begun before the end
    kinds = np.asarray(log.kinds, np.int64)
    dropped = np.zeros(ids.shape, bool)
    removed: list[np.ndarray] = [np.zeros(0, np.int64)] * nq
    for i in np.flatnonzero(d > c):
        js = range(int(c[i]), int(d[i]))
        ins = [log.rows[j] for j in js if kinds[j] == INSERT]
        dels = [log.rows[j] for j in js if kinds[j] == DELETE]
        found = ids[i][ids[i] >= 0]
        if ins:
            flight = np.isin(ids[i], np.concatenate(ins)) & (ids[i] >= 0)
            flight[flight] &= ~states.live_at(ids[i][flight], int(c[i]))
            dropped[i] = flight
        if dels:
            gone = np.setdiff1d(np.concatenate(dels), found)
            removed[i] = gone[states.live_at(gone, int(c[i]))]
    extra = min(max((len(r) for r in removed), default=0), 2 * k)
    m = 2 * (k + extra)
    q = _prepared(queries, metric)
    static = live_start.copy()
    static[states.touched] = False
    static_rows = np.flatnonzero(static).astype(np.int64)
    static_d = np.full((len(q), m), np.inf, np.float32)
    static_r = np.full((len(q), m), -1, np.int64)
    for s in range(0, len(q), QUERY_CHUNK):   # the rows no batch touched: live in every state
        got_d, got_r = _scan(base, q[s : s + QUERY_CHUNK], metric, static_rows, m)
        static_d[s : s + QUERY_CHUNK, : got_d.shape[1]], static_r[s : s + QUERY_CHUNK, : got_d.shape[1]] = got_d, got_r
    touched = states.touched
    truth = np.full((nq, k), -1, np.int64)
    order = np.argsort(c, kind="stable")
    fallback = 0
    for s in range(0, nq, QUERY_CHUNK):
        qi = order[s : s + QUERY_CHUNK]
        sq = q[query_of[qi]]
        cand_d, cand = static_d[query_of[qi]], static_r[query_of[qi]]
        if len(touched):
            # one mask per distinct start state in this block (the cache per state)
            distinct, which = np.unique(c[qi], return_inverse=True)
            qmask = np.stack([states.live_at(touched, int(state)) for state in distinct])[which]
            more_d, more = _scan(base, sq, metric, touched, m, lambda part: qmask[:, part])
            cand_d, cand = _keep(cand_d, cand, more_d, more, m)
        for j, ranked in enumerate(_ranked(base, sq, metric, cand, cand_d)):
            i = int(qi[j])
            kept = ranked[~np.isin(ranked, removed[i])] if len(removed[i]) else ranked
            if len(kept) < k and len(ranked) >= m:   # the candidates ran out: scan this query's state in full
                fallback += 1
                live = live_start.copy()
                live[touched] = states.live_at(touched, int(c[i]))
                live[removed[i]] = False
                kept = exact_topk(base, queries[query_of[i] : query_of[i] + 1], metric, live, k)[0]
                kept = kept[kept >= 0]
            truth[i, : min(k, len(kept))] = kept[:k]
    recalls = {r: recall_kept(ids, truth, dropped, r) for r in depths}
    stats = {"queries_with_writes_in_flight": int((d > c).sum()), "slots_dropped": int(dropped.sum()),
             "queries_missing_in_flight_deletes": int(sum(len(r) > 0 for r in removed)),
             "distinct_start_states": int(len(np.unique(c))), "truth_fallback_scans": fallback}
    return Scored(truth, dropped, recalls, stats)
