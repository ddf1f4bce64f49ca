"""Bringing a shard's lagging replicas back to its latest write, from a current replica.

A replica is lagging when the writer does not know it holds the shard's latest write: it
was down longer than the write wait, it refused a write the others committed, or (on
connect) its write number is below the others'. ``catch_up`` asks each lagging replica
its number: one that holds the latest write (it came back from a restart with it) is
current again at once; one that missed only writes the writer still logs gets them again,
in order; the others copy a current replica whole (``ShardReplica.copy_from``). Both run
while the writer holds the shard's write lock, so the source does not change meanwhile.
Reads keep going to the current replicas throughout. The writer's ``CatchUpWorker``
retries lagging replicas in the background until they answer; a lagging replica whose
actor is dead for good (killed, or Ray gave up restarting it) is started again from its
directory. A replica found with an epoch below the writer's (it was down while this writer
started: its number may count writes of the writer before) is fenced first,
then copied whole, never trusted by its number. Only the writer catches up."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError

from vecdb.cluster.replicas import ShardGroup, unwrap

log = logging.getLogger(__name__)

#: how long a probe waits for a lagging replica to answer (it may be restarting)
PROBE_SECONDS = 1.0
#: longest pause between two rounds of probes while some replica lags
MAX_PAUSE = 2.0
#: least time between two starts of a replica that keeps dying (e.g. it cannot open its database)
REVIVE_SECONDS = 5.0


def catch_up(group: ShardGroup, probe_seconds: float = PROBE_SECONDS) -> bool:
    """Bring ``group``'s lagging replicas that answer up to its latest write (taking its
    write lock); True when none lags any more (False on a router's group)."""
    if group.epoch is None:
        return False
    up = _numbers(group, group.lagging(), probe_seconds)   # without the lock: writes go on while replicas are down
    if not up:
        return not group.lagging()
    with group.lock:
        epoch = group.epoch
        if epoch is None:
            return False
        held, stale = _fenced(group, _numbers(group, [r for r in group.lagging() if r in up], probe_seconds), epoch,
                              probe_seconds)
        if not group.current():
            # No replica is known to hold the latest acknowledged write: one that answers with
            # at least that number holds every acknowledged write (and maybe an unacknowledged
            # one, which then stands); it becomes the shard's reference.
            best = max((n for n in held.values() if n >= group.seq), default=None)
            if best is None:
                return False
            group.seq = best
        for r, n in sorted(held.items()):
            if n == group.seq and (r not in stale or not group.current()):
                group.caught_up(r, n)
        source = group.current()
        for r in sorted(held):
            if r in source or not source:
                continue
            if r not in stale and _replay(group, r, held[r], epoch):
                continue
            try:
                n = ray.get(group.actors[r].copy_from.remote(group.actors[source[0]], group.seq, epoch))
            except RayActorError:
                continue   # one of the two went down: tried again later
            except Exception as exc:  # noqa: BLE001 - the replica's own error, logged and retried
                log.error("copying replica %d of shard %d from replica %d failed: %s", r, group.shard, source[0],
                          unwrap(exc))
                continue
            group.caught_up(r, n)
            log.info("replica %d of shard %d caught up to write %d", r, group.shard, n)
        return not group.lagging()


def _fenced(group: ShardGroup, found: dict[int, tuple[int, int]], epoch: int,
            probe_seconds: float) -> tuple[dict[int, int], set[int]]:
    """The write numbers of ``found`` (replica -> (number, epoch)) once each is fenced with
    ``epoch``, and the replicas that had a lower epoch (to be copied); those that do not
    answer the fence are left out. Nothing when a newer writer fenced one (``group`` then
    stops writing)."""
    held: dict[int, int] = {}
    stale: set[int] = set()
    for r, (n, had) in found.items():
        if had < epoch:
            try:
                now = int(ray.get(group.actors[r].fence.remote(epoch), timeout=probe_seconds))
                n = int(ray.get(group.actors[r].ping.remote(), timeout=probe_seconds)[3])
            except (GetTimeoutError, RayActorError):
                continue
            if now > epoch:   # a newer writer fenced it: that one writes now, this one no more
                group.epoch = None
                return {}, set()
            stale.add(r)
        held[r] = n
    return held, stale


def _replay(group: ShardGroup, replica: int, held: int, epoch: int) -> bool:
    """Send ``replica`` the writes it missed again, in order, when the writer's log holds
    them all (caller holds the write lock); True when it holds the latest write then."""
    missed = group.log.between(held, group.seq) if held < group.seq else None
    if not missed:
        return False
    actor = group.actors[replica]
    for write in missed:
        try:
            outcome = ray.get(actor.apply.remote(write.n, write.method, write.args, epoch))
        except RayActorError:
            return False
        if outcome.applied != write.n:   # refused what the others committed: it differs, copy it
            return False
    group.caught_up(replica, group.seq)
    log.info("replica %d of shard %d caught up to write %d by replaying %d", replica, group.shard, group.seq,
             len(missed))
    return True


def _numbers(group: ShardGroup, replicas: list[int], probe_seconds: float) -> dict[int, tuple[int, int]]:
    """(write number, epoch) of each of ``replicas`` that answers within ``probe_seconds``."""
    refs = {r: group.actors[r].ping.remote() for r in replicas}
    held: dict[int, tuple[int, int]] = {}
    for r, ref in refs.items():
        try:
            answer = ray.get(ref, timeout=probe_seconds)
            held[r] = (int(answer[3]), int(answer[4]))
        except ActorDiedError:   # dead for good: started again from its directory, asked next round
            now = time.monotonic()
            if group.revive is not None and now >= group.revive_after[r]:
                group.revive_after[r] = now + REVIVE_SECONDS
                group.actors[r] = group.revive(r)
        except (GetTimeoutError, RayActorError):
            continue
    return held


class CatchUpWorker:
    """A daemon thread of the writer: while some replica lags, ``catch_up`` every shard
    with lagging replicas, pausing between rounds; woken when a replica falls behind."""

    def __init__(self, groups: Callable[[], list[ShardGroup]]) -> None:
        self._groups = groups
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vecdb-catch-up", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        pause = 0.1
        while not self._stop.is_set():
            self._wake.wait(pause if self._lagging() else None)
            self._wake.clear()
            if self._stop.is_set():
                return
            done = True
            for group in self._lagging():
                try:
                    done = catch_up(group) and done
                except Exception:  # noqa: BLE001 - logged; the next round tries again
                    log.exception("catching up shard %d failed", group.shard)
                    done = False
            pause = 0.1 if done else min(MAX_PAUSE, pause * 2)

    def _lagging(self) -> list[ShardGroup]:
        return [g for g in self._groups() if g.epoch is not None and g.lagging()]
