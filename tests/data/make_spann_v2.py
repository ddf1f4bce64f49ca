"""Writes tests/data/spann_v2: a standalone SPANN index whose posting records are format 2
(the multiply-xorshift checksum, before format 3), made by running this script with vecdb at
commit e5bda7d on the import path: ``PYTHONPATH=<checkout of e5bda7d> python
tests/data/make_spann_v2.py OUT``. The rows are ``rows()`` below (``tests/test_spann_format.py``
makes the same ones and checks the index against an exact search of them)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

DIM = 20            # not a multiple of 8 (nor 16): the dimension the lanes of a checksum would not fit
N = 400


def rows() -> np.ndarray:
    """The indexed rows (ids 0..N-1): four seeded gaussian clusters, rounded so every
    platform makes the same float32 values."""
    rng = np.random.default_rng(2029)
    centres = rng.standard_normal((4, DIM)) * 3
    return (centres[rng.integers(0, 4, N)] + rng.standard_normal((N, DIM))).round(3).astype(np.float32)


def main(out: Path) -> None:
    from vecdb.index import SPANN

    x = rows()
    index = SPANN(DIM, "l2", out, posting_limit=64, head_size=16, background=False, min_train=64)
    index.train(x)
    index.add(x, np.arange(N))
    index.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
