"""Staging (rows published before they reach the index) answers exactly like an index that
already holds the logical state, at every step of moving the work into the index."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vecdb.index import FlatIndex
from vecdb.index.hnsw import HNSW
from vecdb.index.staging import OVERFETCH_LIMIT, Staging

DIM = 6


def oracle(logical: dict[int, np.ndarray], queries: np.ndarray, k: int, allow: np.ndarray | None,
           metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact search over the logical point set (what a search must see)."""
    flat = FlatIndex(DIM, metric)
    ids = np.array(sorted(logical), np.int64)
    if len(ids):
        flat.add(np.stack([logical[i] for i in ids.tolist()]), ids)
    res = flat.search(queries, k, allow=allow)
    return res.ids, res.distances


def check(staging: Staging, index: FlatIndex, logical: dict[int, np.ndarray], queries: np.ndarray, k: int,
          allow: np.ndarray | None, metric: str) -> None:
    got = staging.search_trusted(index, queries, k, allow, None, {})
    want_ids, want_d = oracle(logical, queries, k, allow, metric)
    np.testing.assert_allclose(got.distances, want_d, rtol=1e-5, atol=1e-5)
    # ids may differ only where distances tie; compare the id sets at each distinct distance
    for row in range(len(queries)):
        for dist in np.unique(want_d[row][np.isfinite(want_d[row])]):
            tie = np.isclose(want_d[row], dist, rtol=1e-5, atol=1e-5)
            assert set(got.ids[row][tie]) <= set(logical) and len(set(got.ids[row][tie])) == tie.sum()
        assert (got.ids[row][~np.isfinite(got.distances[row])] == -1).all()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), metric=st.sampled_from(["l2", "cosine", "ip"]), n0=st.integers(0, 40),
       replace=st.integers(0, 40), delete=st.integers(0, 40), fresh=st.integers(0, 40),
       budget=st.integers(1, 50), filtered=st.booleans(), k=st.integers(1, 12))
def test_every_step_answers_like_the_logical_state(seed: int, metric: str, n0: int, replace: int, delete: int,
                                                    fresh: int, budget: int, filtered: bool, k: int) -> None:
    rng = np.random.default_rng(seed)
    index = FlatIndex(DIM, metric)
    logical = {i: rng.normal(size=DIM).astype(np.float32) for i in range(n0)}
    if n0:
        index.add(np.stack(list(logical.values())), np.arange(n0))
    staging = Staging(DIM, metric)
    # one batch: replace some, add fresh ones; then one delete batch
    replaced = rng.choice(n0, size=min(replace, n0), replace=False) if n0 else np.zeros(0, np.int64)
    new_ids = np.arange(n0, n0 + fresh)
    ids = np.concatenate([replaced, new_ids]).astype(np.int64)
    x = rng.normal(size=(len(ids), DIM)).astype(np.float32)
    staging.stage(x, ids, stale=replaced.astype(np.int64))
    logical.update({int(i): row for i, row in zip(ids, x)})
    gone = rng.choice(sorted(logical), size=min(delete, len(logical)), replace=False).astype(np.int64) \
        if logical else np.zeros(0, np.int64)
    staging.unstage(gone)
    staging.hide(gone)
    for i in gone.tolist():
        del logical[i]
    queries = rng.normal(size=(3, DIM)).astype(np.float32)
    allow = None
    if filtered:
        pool = np.arange(n0 + fresh)
        allow = np.sort(rng.choice(pool, size=len(pool) // 2, replace=False)).astype(np.int64) if len(pool) else None
    check(staging, index, logical, queries, k, allow, metric)
    steps = 0
    while staging.busy:
        staging.step(index, budget)
        steps += 1
        check(staging, index, logical, queries, k, allow, metric)
        assert steps < 1000
    assert len(staging) == 0 and sorted(index.ids.tolist()) == sorted(logical)


def test_many_stale_ids_use_an_allow_set_instead_of_overfetching() -> None:
    rng = np.random.default_rng(3)
    n = OVERFETCH_LIMIT * 4
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    index = HNSW(DIM, "l2", M=8, seed=1)
    index.add(x, np.arange(n))
    staging = Staging(DIM, "l2")
    gone = np.arange(0, n, 2, dtype=np.int64)           # more stale ids than the over-fetch limit
    staging.hide(gone)
    res = staging.search_trusted(index, x[:20], 5, None, None, {"ef": 64})
    assert not np.isin(res.ids, gone).any()
    assert (res.ids[:, 0][1::2] == np.arange(1, 20, 2)).all()   # odd rows find themselves
    while staging.busy:
        staging.step(index, 100)
    assert len(index) == n // 2


def test_searches_during_a_stepped_batch_see_it_whole_or_not_at_all(tmp_path) -> None:
    """A reader racing a replace-everything upsert sees the old or the new vectors, never a
    mix, while the batch moves into the index in several exclusive steps."""
    import threading

    import vecdb
    from vecdb.storage.locks import hold_stats

    n = 3000
    rng = np.random.default_rng(5)
    old = rng.normal(size=(n, DIM)).astype(np.float32)
    new = old + np.float32(100.0)
    query = np.zeros((1, DIM), np.float32)
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="flat")
        col.upsert(np.arange(n), old)
        want_old = np.sort(((old - query) ** 2).sum(1))[:n]
        want_new = np.sort(((new - query) ** 2).sum(1))[:n]
        seen: list[str] = []
        done = threading.Event()

        def reader() -> None:
            while not done.is_set() or not seen:
                got = np.sort(col.search(query, k=n).distances[0])
                if np.allclose(got, want_old, rtol=1e-4):
                    seen.append("old")
                elif np.allclose(got, want_new, rtol=1e-4):
                    seen.append("new")
                else:
                    seen.append("mixed")

        writes_before = hold_stats().get(("collection", "write", "wall"))
        count_before = 0 if writes_before is None else writes_before.count
        thread = threading.Thread(target=reader)
        thread.start()
        col.upsert(np.arange(n), new)
        assert col.wait_indexed()                 # the background indexer's steps ran during the reads
        done.set()
        thread.join()
        assert "mixed" not in seen
        assert hold_stats()[("collection", "write", "wall")].count - count_before >= 3   # publish + >= 2 steps
        got = np.sort(col.search(query, k=n).distances[0])
        np.testing.assert_allclose(got, want_new, rtol=1e-4)


def test_a_move_links_while_searched_and_survives_replacements_and_deletes() -> None:
    """Rows moving into an HNSW graph (placed, linked with searches in between, published)
    are answered once at every stage; a moving row replaced or deleted meanwhile keeps its
    new state (its fresh index entry is hidden, then removed)."""
    rng = np.random.default_rng(21)
    n0, fresh = 300, 200
    index = HNSW(DIM, "l2", M=8, seed=2)
    logical = {i: rng.normal(size=DIM).astype(np.float32) for i in range(n0)}
    index.add(np.stack(list(logical.values())), np.arange(n0))
    staging = Staging(DIM, "l2")
    ids = np.arange(n0, n0 + fresh)
    x = rng.normal(size=(fresh, DIM)).astype(np.float32)
    staging.stage(x, ids, stale=np.zeros(0, np.int64))
    logical.update(zip(ids.tolist(), x))

    def check_all_found() -> None:
        probe = np.array(sorted(logical))[::7]
        res = staging.search_trusted(index, np.stack([logical[i] for i in probe.tolist()]), 5, None, None,
                                     {"ef": 64})
        assert (res.ids[:, 0] == probe).mean() >= 0.97
        for row in res.ids:
            hits = row[row >= 0]
            assert len(set(hits.tolist())) == len(hits) and set(hits.tolist()) <= set(logical)

    staging.reserve(index)
    move = staging.begin(index, 150)
    assert move is not None and staging.busy and len(staging) == fresh
    check_all_found()                                    # placed, not linked: answered from staging
    Staging.link(index, move)
    check_all_found()                                    # linked, not published: from both, once each
    replaced, deleted = int(move.ids[3]), int(move.ids[4])
    new_row = rng.normal(size=(1, DIM)).astype(np.float32) + np.float32(50.0)
    staging.stage(new_row, np.array([replaced]), stale=np.array([replaced]))   # as apply_upsert does
    logical[replaced] = new_row[0]
    staging.unstage(np.array([deleted]))                                        # as apply_delete does
    staging.hide(np.array([deleted]))
    del logical[deleted]
    staging.finish(move)
    assert staging.moving is None
    check_all_found()
    got = staging.search_trusted(index, new_row, 3, None, None, {"ef": 64})
    assert got.ids[0, 0] == replaced and np.isclose(got.distances[0, 0], 0, atol=1e-4)
    while staging.busy:
        if len(staging.stale):                           # stale entries go first, beside searches
            removal = staging.plan_removal(index)
            check_all_found()                            # unlinked, not freed: still hidden
            staging.finish_removal(index, removal)
        move = staging.begin(index, 64)
        if move is not None:
            Staging.link(index, move)
            staging.finish(move)
        check_all_found()
    assert len(staging) == 0 and sorted(index.ids.tolist()) == sorted(logical)


def test_searches_between_placing_and_linking_the_first_rows_of_an_empty_graph() -> None:
    """Placed but unlinked rows of an empty graph: the index answers nothing (no entry point
    yet) and the staged rows answer exactly; no padding slot leaks out as a hit."""
    rng = np.random.default_rng(22)
    x = (rng.integers(-3, 4, size=(5, DIM)) / 2).astype(np.float32)
    q = (rng.integers(-3, 4, size=(3, DIM)) / 2).astype(np.float32)
    for metric in ("ip", "l2", "cosine"):
        index = HNSW(DIM, metric, M=8, seed=3)
        staging = Staging(DIM, metric)
        staging.stage(x, np.arange(5), stale=np.zeros(0, np.int64))
        staging.reserve(index)
        move = staging.begin(index, 16)
        assert move is not None and len(index) == 5
        alone = index.search(q, 8)
        assert (alone.ids == -1).all() and np.isinf(alone.distances).all()
        logical = dict(enumerate(x))
        check(staging, index, logical, q, 8, None, metric)
        Staging.link(index, move)
        check(staging, index, logical, q, 8, None, metric)
        staging.finish(move)
        check(staging, index, logical, q, 8, None, metric)
        assert not staging.busy


def test_a_prepared_batch_is_published_whole_after_indexer_steps() -> None:
    """The writer copies a batch in (``prepare``, growing the arrays) while the indexer keeps
    moving the oldest rows out; publishing it then answers like the logical state: a replaced
    row still staged is dropped, one moved out meanwhile stays hidden as stale, and a prepared
    batch made for an older tail is made again."""
    rng = np.random.default_rng(11)
    index = FlatIndex(DIM, "l2")
    staging = Staging(DIM, "l2")
    n0 = 1500
    first = rng.normal(size=(n0, DIM)).astype(np.float32)
    staging.stage(first, np.arange(n0), stale=np.zeros(0, np.int64))
    logical = {i: first[i] for i in range(n0)}
    staging.step(index, 300)                      # rows 0..299 reach the index
    replaced = np.array([350, 1400], np.int64)    # 350 moves out between prepare and publish; 1400 stays staged
    ids = np.concatenate([replaced, np.arange(n0, n0 + 1000)]).astype(np.int64)
    x = rng.normal(size=(len(ids), DIM)).astype(np.float32)
    prepared = staging.prepare(x, ids)
    assert prepared.arrays is not None            # 1500 + 1000 rows do not fit: grown into new arrays
    staging.step(index, 200)                      # rows 300..499 (350 among them) reach the index meanwhile
    staging.stage(x, ids, stale=replaced, prepared=prepared)
    logical.update({int(i): row for i, row in zip(ids, x)})
    queries = np.concatenate([x[:2], rng.normal(size=(3, DIM)).astype(np.float32)])
    check(staging, index, logical, queries, 7, None, "l2")
    check(staging, index, logical, queries, 7, np.arange(0, n0 + 1000, 3), "l2")
    assert len(staging) == len(logical) - 500 + 1          # 350 is staged again; 1400 once
    old = staging.prepare(x[:1], ids[:1])
    more = rng.normal(size=(2, DIM)).astype(np.float32)
    staging.stage(more, np.array([n0 + 1000, n0 + 1001]), stale=np.zeros(0, np.int64))
    staging.stage(x[:1] + 1, ids[:1], stale=ids[:1], prepared=old)   # for an older tail: made again here
    logical.update({n0 + 1000: more[0], n0 + 1001: more[1], int(ids[0]): x[0] + 1})
    check(staging, index, logical, queries, 7, None, "l2")
    while staging.busy:
        staging.step(index, 257)
    assert len(staging) == 0 and sorted(index.ids.tolist()) == sorted(logical)
    check(staging, index, logical, queries, 7, None, "l2")


def test_a_plan_made_beside_the_writer_is_used_only_while_it_holds() -> None:
    """The indexer copies the next rows into the graph's arrays before its exclusive step
    (``plan``); ``begin`` publishes exactly those rows when nothing they depend on changed,
    (a row at a position never changes: also when the writer has swapped in grown arrays
    since) and takes the rows again itself when one of them was unstaged, so searches answer
    like the logical state either way."""
    rng = np.random.default_rng(23)
    n0, fresh = 200, 300
    index = HNSW(DIM, "cosine", M=8, seed=4)
    logical = {i: rng.normal(size=DIM).astype(np.float32) for i in range(n0)}
    index.add(np.stack(list(logical.values())), np.arange(n0))
    staging = Staging(DIM, "cosine")
    ids = np.arange(n0, n0 + fresh)
    x = rng.normal(size=(fresh, DIM)).astype(np.float32)
    staging.stage(x, ids, stale=np.zeros(0, np.int64))
    logical.update(zip(ids.tolist(), x))
    queries = rng.normal(size=(4, DIM)).astype(np.float32)

    def publish(move: object) -> None:
        assert move is not None
        Staging.link(index, move)
        check(staging, index, logical, queries, 6, None, "cosine")
        staging.finish(move)

    staging.reserve(index)
    plan = staging.plan(index, 100)                      # held: its placement is published as made
    assert plan is not None and plan.placement is not None
    later = rng.normal(size=(5, DIM)).astype(np.float32)  # the writer publishes more rows meanwhile
    staging.stage(later, np.arange(900, 905), stale=np.zeros(0, np.int64))
    logical.update(zip(range(900, 905), later))
    move = staging.begin(index, 100, plan)
    assert move is not None and np.array_equal(move.slots, plan.placement.slots)
    assert np.array_equal(move.ids, ids[:100])
    check(staging, index, logical, queries, 6, None, "cosine")
    publish(move)

    plan = staging.plan(index, 100)                      # one of its rows is deleted meanwhile
    assert plan is not None
    gone = int(plan.ids[7])
    staging.unstage(np.array([gone]))
    staging.hide(np.array([gone]))
    del logical[gone]
    assert staging.begin(index, 100, plan) is None        # the stale entry goes first; the plan is dropped
    check(staging, index, logical, queries, 6, None, "cosine")
    removal = staging.plan_removal(index)                 # it never reached the index: nothing to unlink
    assert np.array_equal(removal.ids, [gone])
    check(staging, index, logical, queries, 6, None, "cosine")
    staging.finish_removal(index, removal)
    assert gone not in index and not len(staging.stale)
    check(staging, index, logical, queries, 6, None, "cosine")

    plan = staging.plan(index, 50)                       # the staged arrays regrow meanwhile
    assert plan is not None
    big = rng.normal(size=(3000, DIM)).astype(np.float32)
    staging.stage(big, np.arange(2000, 5000), stale=np.zeros(0, np.int64))
    logical.update(zip(range(2000, 5000), big))
    move = staging.begin(index, 50, plan)
    assert move is not None and plan.vecs is not staging._vecs and plan.base != staging._base
    assert np.array_equal(move.slots, plan.placement.slots) and np.array_equal(move.ids, plan.ids)   # still used
    publish(move)
    while staging.busy:
        if len(staging.stale):
            staging.finish_removal(index, staging.plan_removal(index))
        move = staging.begin(index, 512, staging.plan(index, 512))
        if move is not None:
            publish(move)
    assert len(staging) == 0 and sorted(index.ids.tolist()) == sorted(logical)
    check(staging, index, logical, queries, 6, None, "cosine")


def test_cosine_staged_rows_are_scored_from_the_raw_query() -> None:
    """The staged scan does not normalise cosine queries (the index does): its distances,
    scaled by the query's norm, equal the exact ones, a zero query included (cosine 0 to
    every row), with +inf padding kept where fewer rows than k are staged."""
    rng = np.random.default_rng(24)
    x = rng.normal(size=(5, DIM)).astype(np.float32)
    index = FlatIndex(DIM, "cosine")
    staging = Staging(DIM, "cosine")
    staging.stage(x, np.arange(5), stale=np.zeros(0, np.int64))
    queries = np.concatenate([rng.normal(size=(2, DIM)).astype(np.float32) * np.float32(7),
                              np.zeros((1, DIM), np.float32)])
    check(staging, index, dict(enumerate(x)), queries, 8, None, "cosine")
    got = staging.search_trusted(index, queries, 8, None, None, {})
    assert np.allclose(got.distances[2, :5], 1.0) and np.isinf(got.distances[:, 5:]).all()
    assert (got.ids[:, 5:] == -1).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), metric=st.sampled_from(["l2", "ip"]),
       n_stale=st.sampled_from([0, 7, OVERFETCH_LIMIT + 5]), k=st.integers(1, 10))
def test_one_query_searches_over_a_graph_fold_the_staged_rows_in_like_the_oracle(seed: int, metric: str,
                                                                                 n_stale: int, k: int) -> None:
    """With rows staged, a one-query search over an HNSW graph answers like the oracle: the
    graph merges them in (``search_folded``) when no stale entry is over-fetched (none, or many
    hidden by an allow-set), else they are merged after the stale ones are dropped."""
    rng = np.random.default_rng(seed)
    n = 3 * OVERFETCH_LIMIT
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    index = HNSW(DIM, metric, M=8, seed=seed % 1000)
    index.add(x, np.arange(n))
    logical = {i: x[i] for i in range(n)}
    staging = Staging(DIM, metric)
    replaced = rng.choice(n, n_stale, replace=False).astype(np.int64)
    ids = np.concatenate([replaced, np.arange(n, n + 30)]).astype(np.int64)
    rows = rng.normal(size=(len(ids), DIM)).astype(np.float32)
    staging.stage(rows, ids, stale=replaced)
    logical.update({int(i): r for i, r in zip(ids, rows)})
    for j in range(5):
        q = rows[j * 7:j * 7 + 1] if j % 2 else rng.normal(size=(1, DIM)).astype(np.float32)
        got = staging.search_trusted(index, q, k, None, None, {"ef": n})   # ef >= n: the walk sees every node
        want_ids, want_d = oracle(logical, q, k, None, metric)
        np.testing.assert_allclose(got.distances, want_d, rtol=1e-5, atol=1e-5)
        assert len(set(got.ids[0].tolist())) == k and set(got.ids[0].tolist()) <= set(logical)
