"""Where the writer's time goes in issue 12's acknowledged upserts (bench/write_path.py part b),
stage by stage, and how each stage grows with the collection's size.

Loads a collection as part b does (n x 128 clustered float32, payload {"sel": i % 100},
batches of --batch, HNSW M 16 ef_construction 200, max_pending = n) and times the writer
thread's stages by wrapping the functions that do them (timed only in the writer thread,
so the background indexer's calls of the same functions are not counted). The wrappers
cost about a microsecond per call, i.e. well under 0.01 us per point at 5,000-point
batches. Stages are reported in us per point over windows of the load (e.g. the first
and the last 200k points), so what grows with n stands out.

    NUMBA_NUM_THREADS=2 .venv/bin/python bench/write_profile.py --n 1000000 [--no-indexer]

It holds the benchmark lock (``vecdb.bench.machine.bench_lock``) like the other benchmarks.
``--no-indexer`` keeps the background indexer asleep (nothing leaves staging), to tell the
writer's own work from contention with the indexer. ``--cprofile FILE`` also runs cProfile
in the writer thread (slower; for finding what a stage spends its time on).
"""
from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "2")
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                    "..", ".numba_cache")))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Iterator  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import write_path  # noqa: E402

import vecdb  # noqa: E402
from vecdb.bench import machine  # noqa: E402
from vecdb.collection import apply as apply_mod  # noqa: E402
from vecdb.collection import blocks, oplog  # noqa: E402
from vecdb.collection import collection as col_mod  # noqa: E402
from vecdb.collection.memory import ChangeLog, Memory  # noqa: E402
from vecdb.filters import PayloadIndex  # noqa: E402
from vecdb.index.staging import Staging  # noqa: E402
from vecdb.storage import env as env_mod  # noqa: E402
from vecdb.storage.locks import RWLock  # noqa: E402

#: seconds per stage in the current window (writer thread only)
TIMES: dict[str, float] = defaultdict(float)
WRITER: list[int] = []


def _mine() -> bool:
    return bool(WRITER) and threading.get_ident() == WRITER[0]


def timed(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its wall time added to ``TIMES[stage]`` when called in the writer thread."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not _mine():
            return fn(*args, **kwargs)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[stage] += time.perf_counter() - start
    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


def timed_cm(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A context-manager factory whose ``__enter__`` (the wait to acquire) is timed."""
    @contextlib.contextmanager
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        cm = fn(*args, **kwargs)
        start = time.perf_counter()
        value = cm.__enter__()
        if _mine():
            TIMES[stage] += time.perf_counter() - start
        try:
            yield value
        except BaseException:
            if not cm.__exit__(*sys.exc_info()):
                raise
        else:
            cm.__exit__(None, None, None)
    return wrapper


def timed_whole_cm(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A context-manager factory whose whole block is timed (the id lookup's read txn)."""
    @contextlib.contextmanager
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        start = time.perf_counter()
        with fn(*args, **kwargs) as value:
            yield value
        if _mine():
            TIMES[stage] += time.perf_counter() - start
    return wrapper


class TimedLock:
    """A lock whose acquisition by the writer thread is timed (the writer lock)."""

    def __init__(self, lock: Any, stage: str) -> None:
        self._lock, self._stage = lock, stage

    def __enter__(self) -> Any:
        start = time.perf_counter()
        got = self._lock.__enter__()
        if _mine():
            TIMES[self._stage] += time.perf_counter() - start
        return got

    def __exit__(self, *exc: Any) -> Any:
        return self._lock.__exit__(*exc)

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        return self._lock.acquire(*args, **kwargs)

    def release(self) -> None:
        self._lock.release()


def store_write(orig: Callable[..., Any]) -> Callable[..., Any]:
    """``Store.write`` with the batch (LMDB puts) and the rest (begin + commit + fsync) split."""
    def write(self: Any, batch: Callable[[Any], Any]) -> Any:
        if not _mine():
            return orig(self, batch)
        inner = [0.0]

        def puts(txn: Any) -> Any:
            s = time.perf_counter()
            try:
                return batch(txn)
            finally:
                inner[0] += time.perf_counter() - s

        start = time.perf_counter()
        try:
            return orig(self, puts)
        finally:
            TIMES["lmdb puts (all)"] += inner[0]
            TIMES["lmdb begin+commit+fsync"] += time.perf_counter() - start - inner[0]
    return write


def instrument(no_indexer: bool) -> None:
    """Wrap the writer path's functions (module attributes, looked up at call time)."""
    col_mod.id_keys = timed("validate ids -> keys", col_mod.id_keys)
    col_mod.as_matrix = timed("validate vectors", col_mod.as_matrix)
    for name in ("check_payloads", "check_payloads_shaped"):   # the name the tree's collection module uses
        if hasattr(col_mod, name):
            setattr(col_mod, name, timed("validate payloads", getattr(col_mod, name)))
    col_mod.encode_checked_json_many = timed("encode payload JSON", col_mod.encode_checked_json_many)
    col_mod.row_views = timed("records: row views", col_mod.row_views)
    col_mod._in_key_order = timed("records: id order", col_mod._in_key_order)
    col_mod._put_sorted = timed("lmdb puts: id records", col_mod._put_sorted)
    col_mod.Collection._assign_iids = timed("assign iids", col_mod.Collection._assign_iids)
    blocks.encode = timed("records: vector block", blocks.encode)
    blocks.encode_payloads = timed("records: payload block", blocks.encode_payloads)
    oplog.encode = timed("records: oplog", oplog.encode)
    col_mod.K.u64_many = timed("records: u64 keys", col_mod.K.u64_many)
    env_mod.Store.read = timed_whole_cm("id lookup (read txn)", env_mod.Store.read)
    env_mod.Store.write = store_write(env_mod.Store.write)
    Staging.prepare = timed("staging prepare (copy/regrow)", Staging.prepare)
    col_mod.Collection._apply = timed("publish (exclusive step)", col_mod.Collection._apply)
    RWLock.write = timed_cm("wait: collection lock (write)", RWLock.write)
    col_mod.Collection._wait_for_room = timed("wait: back-pressure", col_mod.Collection._wait_for_room)
    col_mod.Collection.stats = timed("bench: stats() every 20 batches", col_mod.Collection.stats)
    Memory.reserve = timed("  publish: mem.reserve", Memory.reserve)
    Staging.stage = timed("  publish: staging.stage", Staging.stage)
    PayloadIndex.add_many = timed("  publish: payidx.add_many", PayloadIndex.add_many)
    PayloadIndex.compaction = timed("payidx.compaction (built, readers reading)", PayloadIndex.compaction)
    PayloadIndex.install = timed("  publish: payidx.install (swap)", PayloadIndex.install)
    PayloadIndex.remove = timed("  publish: payidx.remove", PayloadIndex.remove)
    ChangeLog.record = timed("  publish: changes.record", ChangeLog.record)
    apply_mod.hand_ops = timed("  publish: hand_ops", apply_mod.hand_ops)
    if no_indexer:
        from vecdb import worker
        worker.Worker.wake = lambda self: None   # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--window", type=int, default=200_000, help="points per reported window")
    ap.add_argument("--no-indexer", action="store_true", help="keep the background indexer asleep")
    ap.add_argument("--cprofile", default=None, help="also cProfile the writer thread into this file")
    ap.add_argument("--work", default=None)
    args = ap.parse_args(argv)
    instrument(args.no_indexer)
    n, batch = args.n, args.batch
    x = write_path.synthetic(n, seed=12)
    sel = np.random.default_rng(13).integers(0, 100, n)
    work = Path(args.work or tempfile.mkdtemp(prefix="vecdb-write-profile-"))
    windows: list[tuple[int, int, float, float, dict[str, float]]] = []
    prof = cProfile.Profile() if args.cprofile else None
    lock = machine.bench_lock()   # one benchmark at a time; held until the process exits
    lock.__enter__()
    try:
        db = vecdb.open(work / "db", max_pending=n, map_size=4 * x.nbytes + (1 << 30))
        col = db.create_collection("w", write_path.DIM, metric="l2", index="hnsw",
                                   index_params={"M": write_path.M, "ef_construction": write_path.EF_C})
        WRITER.append(threading.get_ident())
        col._writer = TimedLock(col._writer, "wait: writer lock")   # noqa: SLF001 - profiling probe
        if prof:
            prof.enable()
        w0, wall0, cpu0 = 0, time.perf_counter(), time.thread_time()
        for s in range(0, n, batch):
            e = min(n, s + batch)
            start = time.perf_counter()
            col.upsert(np.arange(s, e), x[s:e], [{"sel": int(v)} for v in sel[s:e]])
            TIMES["upsert() total"] += time.perf_counter() - start
            if (s // batch) % 20 == 0:
                col.stats()
            if e - w0 >= args.window or e == n:
                windows.append((w0, e, time.perf_counter() - wall0, time.thread_time() - cpu0, dict(TIMES)))
                TIMES.clear()
                w0, wall0, cpu0 = e, time.perf_counter(), time.thread_time()
        if prof:
            prof.disable()
            prof.dump_stats(args.cprofile)
    finally:
        shutil.rmtree(work, ignore_errors=True)   # the open environment's files go; its pages stay mapped
    stages = sorted({k for *_, t in windows for k in t}, key=lambda k: (k.startswith("  "), k))
    order = [k for k in stages if not k.startswith("  ")]
    ordered: list[str] = []
    for k in order:
        ordered.append(k)
        if k.startswith("publish"):
            ordered += [s for s in stages if s.startswith("  ")]
    spans = "".join(f"{f'{a // 1000}k-{b // 1000}k':>12}" for a, b, *_ in windows)
    head = f"{'stage (us/point, writer thread wall)':40}" + spans
    print(f"n={n} batch={batch} indexer={'asleep' if args.no_indexer else 'running'}")
    print(head)
    for k in ordered:
        print(f"{k:40}" + "".join(f"{t.get(k, 0.0) / (b - a) * 1e6:12.3f}" for a, b, _, _, t in windows))
    print(f"{'loop wall':40}" + "".join(f"{w / (b - a) * 1e6:12.3f}" for a, b, w, _, _ in windows))
    print(f"{'loop thread CPU':40}" + "".join(f"{c / (b - a) * 1e6:12.3f}" for a, b, _, c, _ in windows))
    print(f"{'acknowledged vec/s':40}" + "".join(f"{(b - a) / w:12,.0f}" for a, b, w, _, _ in windows))
    sys.stdout.flush()
    os._exit(0)   # no close: it would move every staged row into the index first (minutes at 1M)


if __name__ == "__main__":
    sys.exit(main())
