"""Shared fixtures: seeded generators, small datasets, Hypothesis profiles."""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Profiles: fast (default, CI), normal, slow — picked by one validated variable.
settings.register_profile("fast", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("normal", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("slow", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_PROFILE = os.environ.get("VECDB_HYPOTHESIS_PROFILE", "fast")
if _PROFILE not in ("fast", "normal", "slow"):
    raise RuntimeError(f"VECDB_HYPOTHESIS_PROFILE must be fast, normal or slow, not {_PROFILE!r}")
settings.load_profile(_PROFILE)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1338)


@pytest.fixture(scope="session")
def clustered() -> tuple[np.ndarray, np.ndarray]:
    """(base 3000 x 32, queries 200 x 32) from a seeded Gaussian mixture."""
    from vecdb.data.synthetic import gaussian_mixture

    x = gaussian_mixture(3200, 32, n_clusters=20, seed=1338)
    return x[:3000].copy(), x[3000:].copy()


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """One local Ray (2 CPUs, no dashboard) shared by every cluster test of the session. Its
    workers run at normal priority, not Ray's default nice 15: beside a busy process (the other
    xdist worker of ``make test``) a nice-15 replica gets about 1/30 of a core's share."""
    ray = pytest.importorskip("ray")
    for attempt in range(RAY_START_ATTEMPTS):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _system_config={"worker_niceness": 0})
            break
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception for this one
            # Ray gives its raylet a fixed 30 s to register, and waits a fixed time for its GCS
            # server to write its port; a first start from a fresh venv beside the other xdist
            # worker's compiling once took longer for each (every cluster test then errored).
            # Another try starts warm.
            if "timed out" not in str(exc).lower() or attempt == RAY_START_ATTEMPTS - 1:
                raise
            ray.shutdown()
    yield
    ray.shutdown()


#: tries at starting the session's local Ray (see ``local_ray``)
RAY_START_ATTEMPTS = 3


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``make test`` runs pytest-xdist with ``-n 2 --dist loadgroup``: each file's tests run in
    one worker (a module fixture such as a server starts once; a file's kernels compile in one
    worker, not in both at once on a cold cache), and every file that uses the session's local
    Ray (``local_ray``; a fixture may ask for it at run time, so the file's text decides) in one
    group, so the run starts one Ray, not one per worker. (xdist's own loadgroup reads marks
    through a test id it rewrites, which pytest 9 ignores: hence this scheduler.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    uses_ray: dict[str, bool] = {}

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if path not in uses_ray:
                source = config.rootpath / path
                uses_ray[path] = source.is_file() and "local_ray" in source.read_text(encoding="utf-8")
            return "ray" if uses_ray[path] else path

    return FileScheduling(config, log)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the request-path kernels once, into Numba's disk cache, before any test starts
    a server or a child process: on a fresh checkout (CI) every such process would otherwise
    compile them again, each on its own (the server's own warm-up then loads them). SPANN's
    too: a server warms them once a test makes a SPANN collection, and a server stopped in
    the middle of a long compile waits for it (``WARM_UP_JOIN_SECONDS``)."""
    from vecdb.index.warmup import DEFAULT_KINDS, warm_up

    warm_up(kinds=(*DEFAULT_KINDS, "spann"))
