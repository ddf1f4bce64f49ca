"""Sanity checks on a finished run: every swept search knob must move recall, or the sweep
shows nothing (a knob the library ignores, an index that was never used)."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from vecdb.errors import FailedPreconditionError


class DeadKnobError(FailedPreconditionError):
    """A swept knob left recall unchanged: the benchmark measured something else than it says."""

    def __init__(self, dead: list[dict[str, Any]]) -> None:
        self.dead = dead
        lines = [f"{d['target']}: {d['knob']} swept over {d['values']} left recall@{d['k']} at {d['recalls']}"
                 + (" (saturated: sweep lower values)" if d["saturated"] else "") for d in dead]
        super().__init__("swept knob(s) did not move recall; the result is marked invalid:\n  " + "\n  ".join(lines))


def dead_knobs(runs: list[dict[str, Any]], k: int, knobs: dict[str, tuple[str, ...]]) -> list[dict[str, Any]]:
    """Knobs that take >= 2 values in the unfiltered runs of a target but never change its
    recall@k. Runs are compared with the target's other knobs fixed where the sweep allows it
    (else, for a sweep that moves knobs together, across all its settings); thread count and
    batch size are always fixed. ``knobs`` maps target -> knobs to check."""
    key_recall = f"recall_at_{k}"
    dead = []
    for target, names in knobs.items():
        rows = [r for r in runs if r["target"] == target and r["selectivity"] is None]
        for knob in names:
            values = sorted({r["params"][knob] for r in rows if knob in r["params"]}, key=str)
            if len(values) < 2:
                continue
            groups = _groups(rows, knob, [n for n in names if n != knob], key_recall)
            varied = [g for g in groups.values() if len(g[0]) > 1]
            if not varied:  # the sweep never holds the other knobs fixed: compare across them
                varied = [g for g in _groups(rows, knob, [], key_recall).values() if len(g[0]) > 1]
            if not any(len(recalls) > 1 for _, recalls in varied):
                recalls = sorted(set().union(*(r for _, r in varied)))
                dead.append({"target": target, "knob": knob, "values": values, "k": k, "recalls": recalls,
                             "saturated": recalls == [1.0]})
    return dead


def _groups(rows: list[dict[str, Any]], knob: str, fixed: list[str], key_recall: str) -> dict[tuple, tuple[set, set]]:
    """(knob values, recalls) per (threads, batch, values of the ``fixed`` knobs)."""
    groups: dict[tuple, tuple[set, set]] = defaultdict(lambda: (set(), set()))
    for r in rows:
        if knob in r["params"]:
            key = (r["threads"], r["batch"], tuple(str(r["params"].get(f)) for f in fixed))
            groups[key][0].add(str(r["params"][knob]))
            groups[key][1].add(round(r[key_recall], 9))
    return groups
