"""Numba kernels: pure functions over numpy arrays — distances, heaps, scans, graph walks.

Nothing here knows about ids, indexes or storage; callers pass slots (row numbers) and get
slots back. Metric codes follow ``vecdb.types.Metric.code``: 0 = l2, 1 = ip, 2 = cosine.
One heap implementation (``heaps``) serves top-k scans and graph search alike, and every
exhaustive top-k scan (float rows, PQ, SQ8, binary codes) runs on one skeleton (``scan``).
"""
