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
    for endpoint in endpoints:
        groups.setdefault(tier(client, endpoint.locality), []).append(endpoint)
    return [groups[t] for t in sorted(groups)]


def rotations(groups: list[list[Endpoint]], limit: int = 0) -> list[list[Endpoint]]:
    """The rotated orders to serve in turn: variant k rotates every tier by k, so each
    endpoint leads its tier equally often; `limit` cuts each order to that many answers."""
    if not groups:
        return [[]]
    count = lcm(*(len(g) for g in groups))
    if count > MAX_VARIANTS:
        count = min(max(len(g) for g in groups), MAX_VARIANTS)
    orders = []
    for k in range(count):
        order: list[Endpoint] = []
        for group in groups:
            shift = (k * len(group) // count) if len(group) > count else k % len(group)
            order.extend(group[shift:] + group[:shift])
        orders.append(order[:limit] if limit else order)
    return orders
