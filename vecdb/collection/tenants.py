"""Tenants of one collection in memory: each tenant's accessible points by level, with its
allow-set cached until its membership changes, and each point's tenants."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from vecdb.collection.layout import OWNER, WRITE, READ
from vecdb.errors import DataLossError
from vecdb.index.allow import AllowSet


class TenantSet:
    """Points (internal ids) one tenant may access, by level. ``members`` holds every
    accessible point; ``owned`` the ones it owns (created by a write scoped to it);
    ``writable`` its write grants. ``allow()`` is the members as an AllowSet, built once per
    membership change (racing readers may build equal copies; either is kept)."""

    def __init__(self, number: int, members: set[int] | None = None) -> None:
        self.number = number
        self.members: set[int] = members if members is not None else set()
        self.owned: set[int] = set()
        self.writable: set[int] = set()
        self._allow: AllowSet | None = None

    def level(self, iid: int) -> bytes | None:
        """OWNER, WRITE or READ for an accessible point, None otherwise."""
        if iid not in self.members:
            return None
        return OWNER if iid in self.owned else WRITE if iid in self.writable else READ

    def can_write(self, iid: int) -> bool:
        """True if this tenant may replace the point (it owns it or has a write grant)."""
        return iid in self.owned or iid in self.writable

    def set_level(self, iid: int, level: bytes) -> None:
        """Give access at ``level`` (replacing any other level)."""
        if iid not in self.members:
            self.members.add(iid)
            self._allow = None
        (self.owned.add if level == OWNER else self.owned.discard)(iid)
        (self.writable.add if level == WRITE else self.writable.discard)(iid)

    def discard(self, iid: int) -> None:
        """Take every access to the point away."""
        if iid in self.members:
            self.members.discard(iid)
            self._allow = None
        self.owned.discard(iid)
        self.writable.discard(iid)

    def allow(self) -> AllowSet:
        """The members as an AllowSet (cached until the membership changes)."""
        cached = self._allow
        if cached is None:
            arr = np.fromiter(self.members, np.int64, len(self.members))
            arr.sort()
            cached = self._allow = AllowSet.from_sorted(arr)
        return cached


class Tenants:
    """Every tenant of a collection by name, and each point's tenant numbers."""

    def __init__(self, by_name: dict[str, TenantSet] | None = None) -> None:
        self.by_name: dict[str, TenantSet] = by_name if by_name is not None else {}
        self.of_point: dict[int, set[int]] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def __len__(self) -> int:
        return len(self.by_name)

    def get(self, name: str) -> TenantSet | None:
        return self.by_name.get(name)

    def names(self) -> list[str]:
        return sorted(self.by_name)

    def by_number(self) -> dict[int, TenantSet]:
        return {ts.number: ts for ts in self.by_name.values()}

    def add(self, name: str, number: int) -> TenantSet:
        ts = self.by_name[name] = TenantSet(number)
        return ts

    def drop(self, name: str) -> TenantSet:
        """Remove the tenant and its memberships; returns it."""
        ts = self.by_name.pop(name)
        for iid in ts.members:
            self.of_point.get(iid, set()).discard(ts.number)
        return ts

    def set_access(self, tsets: Iterable[TenantSet], iids: list[int], level: bytes | None) -> None:
        """Give each tenant in ``tsets`` access at ``level`` to ``iids`` (None takes it away)."""
        for ts in tsets:
            for iid in iids:
                if level is None:
                    ts.discard(iid)
                    self.of_point.get(iid, set()).discard(ts.number)
                else:
                    ts.set_level(iid, level)
                    self.of_point.setdefault(iid, set()).add(ts.number)

    def forget_points(self, iids: list[int]) -> dict[int, list[int]]:
        """Drop deleted points from every tenant; returns tenant number -> the ids it lost."""
        by_number = self.by_number()
        lost: dict[int, list[int]] = {}
        for iid in iids:
            for number in sorted(self.of_point.pop(iid, ())):
                by_number[number].discard(iid)
                lost.setdefault(number, []).append(iid)
        return lost

    def memory_bytes(self) -> int:
        """Rough bytes of the membership sets (Python sets: about 64 B per entry)."""
        return 64 * sum(len(ts.members) for ts in self.by_name.values())

    @classmethod
    def load(cls, tenants: dict[str, int], members: bytes, levels: bytes, where: str) -> "Tenants":
        """Tenants from the ``ten`` records, the concatenated 12-byte ``mem`` keys and one
        level byte per key (b"o" owner, b"w" write grant, b"r" read grant)."""
        out = cls({name: TenantSet(num) for name, num in tenants.items()})
        by_number = out.by_number()
        pairs = np.frombuffer(members, np.uint8).reshape(-1, 12)
        numbers = pairs[:, :4].copy().view(">u4").reshape(-1).astype(np.int64)
        member_iids = pairs[:, 4:].copy().view(">u8").reshape(-1).astype(np.int64)
        level = np.frombuffer(levels, np.uint8)
        unknown = set(np.unique(numbers).tolist()) - set(by_number)
        if unknown:
            raise DataLossError(f"collection {where!r}: memberships of unknown tenant numbers {sorted(unknown)}")
        for number, ts in by_number.items():
            mine = numbers == number
            ts.members = set(member_iids[mine].tolist())
            ts.owned = set(member_iids[mine & (level == ord(OWNER))].tolist())
            ts.writable = set(member_iids[mine & (level == ord(WRITE))].tolist())
        for number, iid in zip(numbers.tolist(), member_iids.tolist()):
            out.of_point.setdefault(iid, set()).add(number)
        return out
