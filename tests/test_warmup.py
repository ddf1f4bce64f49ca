"""The server's start-up warm-up runs every index path it promises to compile."""
from __future__ import annotations

import logging

from vecdb.index.warmup import warm_up


def test_warm_up_searches_each_metric_and_logs(caplog):
    with caplog.at_level(logging.INFO, logger="vecdb.index.warmup"):
        seconds = warm_up()
    assert seconds > 0
    assert any("kernels ready" in r.getMessage() for r in caplog.records)
