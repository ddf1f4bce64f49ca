"""Numba kernels: pure functions over numpy arrays — distances, top-k heaps, Hamming scans.

Nothing here knows about ids, indexes or storage; callers pass slots (row numbers) and get
slots back. Metric codes follow ``vecdb.types.Metric.code``: 0 = l2, 1 = ip, 2 = cosine.
"""
