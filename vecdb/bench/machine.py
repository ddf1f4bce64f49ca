"""The conditions a benchmark runs under: one benchmark at a time (a lock file), how busy the
machine is apart from us (CPU of other processes from /proc), and the provenance every result
file records (commit, dirty tree, library versions, machine, load, command line)."""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

from vecdb.errors import FailedPreconditionError

#: other processes may use at most this share of all CPUs before a run is refused or flagged
BUSY_SHARE = 0.25
#: seconds the start-of-run check watches the machine
START_WINDOW_S = 2.0
DEFAULT_LOCK = "/tmp/vecdb-bench.lock"
#: distributions whose versions every result records (None when not installed)
VERSIONED = ("numpy", "numba", "faiss-cpu", "hnswlib", "vecdb", "chromadb", "lancedb", "pymilvus", "milvus-lite",
             "qdrant-client")


class MachineBusyError(FailedPreconditionError):
    """Other processes use more than the allowed share of the machine (see ``--allow-busy``)."""


class BenchLockedError(FailedPreconditionError):
    """Another vecdb benchmark holds the lock file."""


# ---- one benchmark at a time ---------------------------------------------------------------
def lock_path() -> Path:
    """The lock file: $VECDB_BENCH_LOCK or /tmp/vecdb-bench.lock."""
    return Path(os.environ.get("VECDB_BENCH_LOCK", DEFAULT_LOCK))


@contextlib.contextmanager
def bench_lock(path: Path | None = None) -> Iterator[Path]:
    """Hold an exclusive ``flock`` for the block; raise at once if another benchmark holds it."""
    path = path or lock_path()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown process"
            raise BenchLockedError(f"another vecdb benchmark is running ({holder}; lock {path}); "
                                   "benchmarks run one at a time") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {shlex.join(sys.argv)}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing drops the lock


# ---- CPU used by others ---------------------------------------------------------------------
@dataclass(frozen=True)
class CpuSample:
    """Cumulative clock ticks: all CPUs busy, all CPUs total, and this process tree's own CPU."""

    busy: int
    total: int
    own: int
    when: float = 0.0


def parse_proc_stat(text: str) -> tuple[int, int]:
    """(busy, total) ticks from the aggregate ``cpu`` line of /proc/stat (guest time is already
    inside user time, so it is not added twice)."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            f = [int(v) for v in line.split()[1:]]
            f += [0] * (8 - len(f))
            user, nice, system, idle, iowait, irq, softirq, steal = f[:8]
            busy = user + nice + system + irq + softirq + steal
            return busy, busy + idle + iowait
    raise ValueError("no aggregate cpu line in /proc/stat")


def parse_pid_stat(text: str) -> tuple[int, int, int]:
    """(ppid, own ticks = utime + stime, reaped children's ticks = cutime + cstime) from a
    /proc/<pid>/stat line (the command name may hold spaces and parentheses)."""
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is the state (field 3); field n sits at rest[n - 3]
    return int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14])


def tree_ticks(pid: int, stats: dict[int, str]) -> int:
    """CPU ticks of ``pid`` and every live descendant, plus what their reaped children used.

    ``stats`` maps pid -> its /proc/<pid>/stat text (a snapshot; vanished pids are absent).
    """
    parsed = {}
    for p, text in stats.items():
        with contextlib.suppress(ValueError, IndexError):
            parsed[p] = parse_pid_stat(text)
    children: dict[int, list[int]] = {}
    for p, (ppid, _, _) in parsed.items():
        children.setdefault(ppid, []).append(p)
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        if p in parsed:
            total += parsed[p][1] + parsed[p][2]
        todo.extend(children.get(p, ()))
    return total


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def cpu_sample() -> CpuSample:
    """A snapshot of /proc/stat and of this process tree's CPU time."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            text = _read(f"/proc/{entry}/stat")
            if text:
                stats[int(entry)] = text
    busy, total = parse_proc_stat(_read("/proc/stat") or "")
    return CpuSample(busy, total, tree_ticks(os.getpid(), stats), time.monotonic())


def others_share(before: CpuSample, after: CpuSample) -> float:
    """Share of the whole machine (all CPUs = 1.0) that processes outside our tree used
    between two samples; 0 when no time passed."""
    total = after.total - before.total
    if total <= 0:
        return 0.0
    others = (after.busy - before.busy) - (after.own - before.own)
    return min(1.0, max(0.0, others / total))


def is_busy(share: float, limit: float = BUSY_SHARE) -> bool:
    """True when others used more than ``limit`` of the machine."""
    return share > limit


@dataclass
class Quietness:
    """What the machine looked like over one stretch of a run."""

    others_share: float
    busy: bool
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    seconds: float


class Watch:
    """Measures the share of the machine others use while a block of the benchmark runs."""

    def __init__(self, limit: float = BUSY_SHARE) -> None:
        self.limit = limit
        self._start = cpu_sample()
        self._load = os.getloadavg()

    def stop(self) -> Quietness:
        end = cpu_sample()
        share = others_share(self._start, end)
        return Quietness(round(share, 4), is_busy(share, self.limit), self._load, os.getloadavg(),
                         round(end.when - self._start.when, 3))


def check_quiet(allow_busy: bool, window_s: float = START_WINDOW_S, limit: float = BUSY_SHARE) -> dict[str, Any]:
    """Watch the machine for ``window_s`` before a run; refuse (MachineBusyError) when others use
    more than ``limit`` of it, unless ``allow_busy`` (then the run is flagged instead)."""
    watch = Watch(limit)
    time.sleep(window_s)
    q = watch.stop()
    if q.busy and not allow_busy:
        raise MachineBusyError(f"other processes use {q.others_share:.0%} of this {os.cpu_count()}-CPU machine "
                               f"(limit {limit:.0%}; load average {q.load_after[0]:.2f}); wait for a quiet machine "
                               "or pass --allow-busy to run anyway with the run flagged as busy")
    return asdict(q)


# ---- provenance -----------------------------------------------------------------------------
def _git(*args: str) -> str | None:
    repo = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def versions() -> dict[str, str | None]:
    """Installed versions of python and of every library a result may depend on."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def machine() -> dict[str, Any]:
    """CPU model, core counts, memory and kernel of this machine."""
    cpuinfo = _read("/proc/cpuinfo") or ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    meminfo = _read("/proc/meminfo") or ""
    mem_kb = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), 0)
    return {"cpu_model": model, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "memory_bytes": mem_kb * 1024, "host": platform.node(), "kernel": platform.release(),
            "arch": platform.machine()}


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """Everything needed to say which code, libraries and machine made a result, and how."""
    commit = _git("rev-parse", "HEAD")
    # tracked files changed since the commit; saved results (bench/results/) are not code
    changed = _git("diff", "--name-only", "HEAD")
    files = None if changed is None else [f for f in changed.splitlines() if f and not f.startswith("bench/results/")]
    return {
        "commit": commit,
        "dirty": None if files is None else bool(files),
        "dirty_files": files or None,
        "versions": versions(),
        "machine": machine(),
        "load_average": os.getloadavg(),
        "command": shlex.join(sys.argv if argv is None else argv),
        "cwd": os.getcwd(),
        "env": {k: os.environ[k] for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_CACHE_DIR")
                if k in os.environ},
        "when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def run_recorded(run: Callable[[], dict[str, Any]], allow_busy: bool, out: Path,
                 argv: list[str] | None = None) -> dict[str, Any]:
    """A benchmark script's run: under the benchmark lock, after the quiet check (refused on a
    busy machine unless ``allow_busy``; flagged busy then), its results saved to ``out`` as
    JSON with their provenance. Returns the record saved."""
    with bench_lock():
        start_quiet = check_quiet(allow_busy)
        results = run()
    results["start_quiet"] = start_quiet
    results["busy"] = {"flagged": bool(start_quiet.get("busy"))}
    results["provenance"] = provenance(argv)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return results
