"""Locality tiers and rotation: which endpoints come first, and how answers rotate."""

from __future__ import annotations

from collections.abc import Sequence
from math import lcm

from globaldns.registry.model import Endpoint, Locality

# At most this many rotated variants of one answer are prepared: enough that each endpoint
# of a tier leads some answers, bounded so a large service does not cost quadratic memory.
MAX_VARIANTS = 64

TIER_NAMES = ("same subzone", "same zone", "same region", "other region", "no locality")


def tier(client: Locality, endpoint: Locality) -> int:
    """0 same subzone, 1 same zone, 2 same region, 3 other region, 4 endpoint without one."""
    if not endpoint.region:
        return 4
    if endpoint.region != client.region:
        return 3
    if not endpoint.zone or endpoint.zone != client.zone:
        return 2
    if not endpoint.subzone or endpoint.subzone != client.subzone:
        return 1
    return 0


def tiers(client: Locality, endpoints: Sequence[Endpoint]) -> list[list[Endpoint]]:
    """Endpoints grouped by tier, best first, empty tiers left out; stable within a tier."""
    groups: dict[int, list[Endpoint]] = {}
    ranks: dict[Locality, list[Endpoint]] = {}  # a service has few localities: rank each once
    for endpoint in endpoints:
        group = ranks.get(endpoint.locality)
        if group is None:
            group = ranks[endpoint.locality] = groups.setdefault(
                tier(client, endpoint.locality), [])
        group.append(endpoint)
    return [groups[t] for t in sorted(groups)]


class Rotations(Sequence[list[Endpoint]]):
    """The rotated orders to serve in turn, made on demand: order k rotates every tier by
    k, so each endpoint leads its tier equally often. `cut` keeps that many endpoints of
    each order (0: all). A service of many endpoints costs its tiers, not its orders."""

    __slots__ = ("cut", "groups", "size")

    def __init__(self, groups: list[list[Endpoint]], cut: int = 0, *,
                 rotate: bool = True) -> None:
        self.groups = groups
        self.cut = cut
        count = lcm(*(len(g) for g in groups)) if groups and rotate else 1
        if count > MAX_VARIANTS:
            count = min(max(len(g) for g in groups), MAX_VARIANTS)
        self.size = count

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, k: int) -> list[Endpoint]:  # type: ignore[override]
        if not 0 <= k < self.size:
            raise IndexError(k)
        order: list[Endpoint] = []
        count = self.size
        for group in self.groups:
            n = len(group)
            shift = (k * n // count) if n > count else k % n
            order.extend(group[shift:])
            order.extend(group[:shift])
        return order[: self.cut] if self.cut else order

