"""Reads during a rebalance are complete whatever the timing, on the router driving it and on
other routers (``Shards.consistent``, ``Placement.waves``, ``Shards.read_points``).

A rebalance is driven batch by batch (``Paced``: the router driving it pauses after every
batch until the test lets it take the next), so each interleaving below happens for certain:
- a router whose refresher is stopped (it never learns of the rebalance by itself)
  searches, gets and counts completely after every batch, and after shards are removed;
- a read whose layout changed while it ran (the rebalance started, or finished, between
  its start and its end) is run again, and the second answer is complete;
- a search whose first shard answered before a batch moved and whose second shard is asked
  after (the race of one move step) still sees the moved points: shards are asked in
  waves, points moving only from an earlier wave to a later one;
- a get asked of a shard the point left meanwhile asks again where it went."""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from vecdb.api import SearchRequest  # noqa: E402
from vecdb.cluster import ClusterDatabase, connect  # noqa: E402
from vecdb.cluster.merge import merge_topk  # noqa: E402
from vecdb.collection.idkeys import id_keys  # noqa: E402

DIM = 8
N = 240
X = np.random.default_rng(31).standard_normal((N, DIM)).astype(np.float32)   # row i: the vector of id i
Q = np.random.default_rng(32).standard_normal((2, DIM)).astype(np.float32)
#: how long a test waits for the rebalance thread at most (a bound against a hang, not a timing assert)
BOUND = 120.0


class Paced:
    """``db.rebalance(shards, batch)`` in a thread that pauses after every batch moved until
    ``step()`` lets it move the next one (``finish()``: all the rest)."""

    def __init__(self, db: ClusterDatabase, shards: int, batch: int) -> None:
        self.moved: queue.Queue[int | None] = queue.Queue()
        self.resume: queue.Queue[None] = queue.Queue()
        self.free = False
        self.errors: list[BaseException] = []

        def on_batch(total: int) -> None:
            self.moved.put(total)
            if not self.free:
                self.resume.get(timeout=BOUND)

        def run() -> None:
            try:
                db.rebalance(shards, batch=batch, on_batch=on_batch)
            except BaseException as exc:  # noqa: BLE001 - reported by finish()
                self.errors.append(exc)
            finally:
                self.moved.put(None)

        self.thread = threading.Thread(target=run)
        self.thread.start()
        self.done = False
        self.total = self._next()   # the record names the new layout and one batch has moved

    def _next(self) -> int | None:
        total = self.moved.get(timeout=BOUND)
        if total is None:
            self.done = True
        return total

    def step(self) -> int | None:
        """Let one more batch move; the points moved so far (None: the rebalance ended)."""
        assert not self.done
        self.resume.put(None)
        self.total = self._next()
        return self.total

    def finish(self) -> None:
        self.free = True
        self.resume.put(None)
        self.thread.join(BOUND)
        assert not self.thread.is_alive() and not self.errors, self.errors


def plain(req: SearchRequest) -> SearchRequest:
    """The request as a router sends it to a shard (its knobs as a plain dict)."""
    return req._replace(params=dict(req.params))


def every_id(result: Any) -> list[list[int]]:
    return [sorted(int(i) for i in row if i >= 0) for row in result.ids]


def cluster(tmp_path: Path, name: str, shards: int) -> tuple[ClusterDatabase, ClusterDatabase]:
    """A router (``shards`` shards, one replica) that wrote ids 0..N-1 into collection "c"
    and drives the rebalances, and a second router whose refresher is stopped: it learns of
    layout changes only from its reads."""
    root = str(tmp_path / name)
    a = connect(root=root, shards=shards, replicas=1)
    a.create_collection("c", DIM, metric="l2", index="flat").upsert(np.arange(N), X)
    b = connect(root=root, wait_seconds=30.0)
    b._refresher.close()
    return a, b


def test_a_reading_router_without_its_refresher_reads_completely_through_rebalances(local_ray: None,
                                                                                     tmp_path: Path) -> None:
    """1 -> 2 shards, then 2 -> 1 (the removed shard stopped): after every batch the reading
    router (which never refreshes by itself) searches every point, gets each id, and after
    each rebalance counts them all and reads the new layout."""
    a, b = cluster(tmp_path, "stale", 1)
    try:
        other = b.get_collection("c")
        ids = np.arange(N)

        def check() -> None:
            assert every_id(other.search(Q, k=N)) == [list(range(N))] * len(Q)
            np.testing.assert_array_equal(other.get(ids).vectors, X)

        for shards in (2, 1):
            paced = Paced(a, shards, batch=max(1, N // 8))
            steps = 0
            while not paced.done:
                check()
                paced.step()
                steps += 1
            paced.finish()
            assert steps >= 2 and a.placement.shards == tuple(range(shards))
            check()
            assert other.count() == N and b.placement == a.placement
    finally:
        b.close()
        a.close()


def complete(result: Any) -> bool:
    return every_id(result) == [list(range(N))] * len(Q)


def test_a_read_whose_layout_changed_meanwhile_is_run_again(local_ray: None, tmp_path: Path) -> None:
    """A search that took its layout before a rebalance started (1 -> 2 on the reading
    router, 2 -> 3 on the writer) and asks the shards after a batch moved misses that batch;
    the router sees the layout changed (the record's bytes, or the writer's own layout) and
    searches again, completely. A search that took its layout mid-move and asks after the
    rebalance finished (3 -> 2: shard 2 stopped) fails on the removed shard and is run again."""
    a, b = cluster(tmp_path, "late", 1)
    req = plain(SearchRequest.build(a.get_collection("c").info, Q, N, None, None, None, False))
    try:
        for db, shards in ((b, 2), (a, 3)):
            answers: list[bool] = []
            paced: list[Paced] = []

            def search(view: Any) -> Any:
                if not paced:   # the rebalance starts (and moves a batch) after this read took its layout
                    paced.append(Paced(a, shards, batch=N // 8))
                got = merge_topk(list(db._shards.fan_out(view, view.shards(), lambda g: g.read("execute", "c", req)).values()),
                                 N, "int")
                answers.append(complete(got))
                return got

            assert complete(db._shards.consistent(search))
            paced[0].finish()
            assert answers == [False, True], answers   # the first pass really missed the moved batch

        shrink = Paced(a, 2, batch=N // 8)
        b._shards.consistent(lambda v: None)   # the reading router holds the layout mid-move, shard 2 in it
        failed: list[BaseException] = []

        def late(view: Any) -> Any:
            if not shrink.done:
                shrink.finish()   # shard 2 is emptied and stopped before this read asks it
            try:
                return merge_topk(list(b._shards.fan_out(view, view.shards(), lambda g: g.read("execute", "c", req)).values()),
                                  N, "int")
            except Exception as exc:
                failed.append(exc)
                raise

        assert complete(b._shards.consistent(late))
        assert len(failed) == 1 and b.placement.shards == (0, 1) and sorted(b._shards.groups) == [0, 1]
    finally:
        b.close()
        a.close()


def one_step_between(paced: Paced, send: Callable[[Any], Any]) -> tuple[Callable[[Any], Any], list[int]]:
    """``send`` for ``_fan_out`` that, before asking a second shard, waits for the first one's
    answer and lets one batch move: the interleaving of a search racing one move step."""
    asked: list[Any] = []
    order: list[int] = []

    def paced_send(g: Any) -> Any:
        if asked:
            asked[-1].result()
            paced.step()
        order.append(g.shard)
        asked.append(send(g))
        return asked[-1]

    return paced_send, order


def test_reads_racing_one_move_step_see_the_moved_points(local_ray: None, tmp_path: Path) -> None:
    """2 -> 1 shards: points move from shard 1 to shard 0, one batch at a time. On the writer
    and on a reading router: a search asks shard 1 (its first wave), then a batch moves,
    then it asks shard 0, where the batch is by then (asking shard 0 first, then shard 1
    after the move, would miss it); a get computes where its ids are, then a batch moves,
    then it asks: ids missing where it asked are asked again where they went."""
    a, b = cluster(tmp_path, "race", 2)
    info = a.get_collection("c").info
    req = plain(SearchRequest.build(info, Q, N, None, None, None, False))
    keys, uids = id_keys(info, np.arange(N), unique=False)
    paced = Paced(a, 1, batch=N // 16)
    try:
        b._shards.consistent(lambda v: None)   # the reading router reads the record (moving_to) now
        for db in (a, b):
            view = db._shards.layout
            assert view.placement.moving_to == (0,)
            before = paced.total
            send, order = one_step_between(paced, lambda g: g.read("execute", "c", req))
            got = merge_topk(list(db._shards.fan_out(view, view.shards(), send).values()), N, "int")
            assert paced.total is not None and paced.total > before   # a batch moved in between
            assert complete(got), f"shards asked in the order {order}: {[len(r) for r in every_id(got)]} hits"
            assert order == [1, 0]
        for db in (a, b):
            view = db._shards.layout
            before = paced.total
            stepped: list[int | None] = []

            def get(g: Any, rows: np.ndarray) -> Any:
                if not stepped:   # after the owners were computed, before any shard is asked
                    stepped.append(paced.step())
                return g.read("get", "c", [uids[i] for i in rows], None)

            found, missing = db._shards.read_points(view, "c", keys, get)
            assert stepped[0] is not None and stepped[0] > before   # a batch moved in between
            assert not len(missing)
            vectors = np.zeros((N, DIM), np.float32)
            for rows, points in found:
                if len(rows):
                    vectors[rows] = points.vectors
            np.testing.assert_array_equal(vectors, X)
    finally:
        paced.finish()
        b.close()
        a.close()
