"""The building blocks of the answer tables, shared by the snapshot and the
`clusterset.local` zone: the answer objects a name's table holds, a zone's negative
answers, and the encoders of address and SRV records.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from functools import partial

from globaldns.config.model import ZoneConfig
from globaldns.dns import records as R
from globaldns.dns.message import text_to_wire
from globaldns.dns.names import Ede, QType, Rcode
from globaldns.dns.wire import ZONE, Body, Reply
from globaldns.registry.model import Endpoint, Locality, Port
from globaldns.registry.store import MergedService
from globaldns.routing.locality import tier
from globaldns.routing.policy import Profile, schedule

NODATA = 0
"""The key, in a name's table, of the answer for every type it has no records of."""

answer = partial(Reply, by=ZONE)
"""A reply of the served zones."""


class AnswerSet:
    """The replies for one name and type; each query takes the next in turn."""

    __slots__ = ("counter", "replies", "variants")

    owned = True  # the snapshot holds the replies

    def __init__(self, replies: Sequence[Reply]) -> None:
        self.replies = tuple(replies)
        self.variants = len(self.replies)
        self.counter = itertools.count()

    def pick(self) -> Reply:
        return self.replies[next(self.counter) % self.variants]


class WeightedAnswers:
    """Groups of rotated replies; a smooth weighted schedule picks the group that leads
    each answer, so over any full cycle the split is exactly the configured weights.
    A reply is encoded the first time it is due: a name nobody asks costs its plan only."""

    __slots__ = ("counter", "counters", "groups", "make", "orders", "schedule", "slots",
                 "variants")

    owned = True  # the snapshot holds the replies

    def __init__(self, groups: Sequence[tuple[int, Sequence[list[Endpoint]]]],
                 make: Callable[[list[Endpoint]], Reply]) -> None:
        self.orders = [orders for _, orders in groups]
        self.groups: list[list[Reply | None]] = [[None] * len(orders) for _, orders in groups]
        self.make = make
        self.schedule = schedule([w for w, _ in groups])
        self.slots = len(self.schedule)
        self.counter = itertools.count()
        self.counters = [itertools.count() for _ in groups]
        self.variants = sum(len(orders) for orders in self.orders)

    def pick(self) -> Reply:
        g = self.schedule[next(self.counter) % self.slots]
        replies = self.groups[g]
        i = next(self.counters[g]) % len(replies)
        reply = replies[i]
        if reply is None:
            reply = replies[i] = self.make(self.orders[g][i])
        return reply


class PerClient:
    """Answers that depend on who asks: one WeightedAnswers per client profile, prepared the
    first time a client of that profile asks for this name (then kept until the service
    changes)."""

    __slots__ = ("build", "by_profile")

    def __init__(self, build: Callable[[Profile], WeightedAnswers]) -> None:
        self.build = build
        self.by_profile: dict[int, WeightedAnswers] = {}

    def for_profile(self, profile: Profile) -> WeightedAnswers:
        answers = self.by_profile.get(profile.id)
        if answers is None:
            answers = self.by_profile[profile.id] = self.build(profile)
        return answers


Answers = AnswerSet | WeightedAnswers | PerClient
NameTable = dict[int, Answers]
Encoder = Callable[[list[Endpoint], Locality], Body]
Router = Callable[[Sequence[Endpoint], Encoder], Answers]
"""`router(members, encode)`: the answers of these endpoints."""


def ttl_of(zone: Zone, service: MergedService) -> int:
    """The TTL of a service's records: its `globaldns.io/ttl` annotation, else the zone's."""
    if service.policy is not None and service.policy.ttl is not None:
        return service.policy.ttl
    return zone.config.ttl


class Zone:
    __slots__ = ("config", "name", "negative", "nodata", "nxdomain", "servfail_unsynced",
                 "wire")

    def __init__(self, config: ZoneConfig, serial: int) -> None:
        self.config = config
        self.name = config.name
        self.wire = text_to_wire(config.name)
        self.negative = [R.soa(config.name, config.negative_ttl, serial=serial,
                               minimum=config.negative_ttl)]
        self.nxdomain = AnswerSet([answer(R.body(None, rcode=Rcode.NXDOMAIN,
                                                  authority=self.negative))])
        self.nodata = AnswerSet([answer(R.body(None, authority=self.negative))])
        """NOERROR, no records, SOA in authority: one body for every name of the zone,
        encoded without compression against the question so any question can carry it."""
        self.servfail_unsynced = AnswerSet([answer(
            R.body(None, rcode=Rcode.SERVFAIL, aa=False),
            ede=((Ede.NOT_READY, "not synced: a cluster has not finished its first list"),))])


STEP = 100
"""Endpoints prepared between two yields to the loop when a big service changes (a few
ms)."""
def fits(name: str) -> bool:
    """`name` can be a DNS name: at most 253 characters of ASCII, labels of at most 63
    (RFC 1035 §2.3.4, 255 bytes in wire form)."""
    return len(name) <= 253 and name.isascii() and all(
        0 < len(label) <= 63 for label in name.split("."))


def unique(order: Sequence[Endpoint]) -> list[Endpoint]:
    """One record per address: the same address from two clusters is one record of the
    RRset (RFC 2181 §5), kept where it first comes in the order."""
    seen: set[str] = set()
    out = []
    for e in order:
        if e.address not in seen:
            seen.add(e.address)
            out.append(e)
    return out


def typed(endpoint: Endpoint, ttl: int) -> tuple[int, int, bytes]:
    rtype, rdata = R.address_rdata(endpoint.address)
    return rtype, ttl, rdata


def ports(service: MergedService) -> list[Port]:
    seen = {(p.name, p.protocol): p for p in service.ports}
    for endpoint in service.endpoints:
        for p in endpoint.ports or ():
            seen.setdefault((p.name, p.protocol), p)
    return [p for p in seen.values() if p.name]

def port_of(endpoint: Endpoint, port: Port) -> int:
    if endpoint.ports is None:
        return port.port
    for p in endpoint.ports:
        if p.name == port.name and p.protocol == port.protocol:
            return p.port
    return 0

def endpoint_name(base: str, endpoint: Endpoint) -> str:
    return f"{endpoint.label()}.{endpoint.cluster}.{base}"


def srv_encoder(zone: Zone, base: str, sname: str, port: Port, *,
                 ttl: int | None = None) -> Encoder:
    ttl = zone.config.ttl if ttl is None else ttl
    answers: dict[tuple[str, int], bytes] = {}
    glue: dict[str, bytes] = {}
    # The body starts after the header and the question (name, type, class).
    start = 12 + len(text_to_wire(sname)) + 4

    def encode(order: list[Endpoint], locality: Locality) -> Body:
        if not order:
            return zone.nodata.replies[0].body
        # Priority is the locality tier relative to the client, counted from 0 for
        # the best tier present: SRV clients then prefer nearest, as A clients do.
        ranks = sorted({tier(locality, e.locality) for e in order})
        answer, additional = [], []
        offset = start
        for e in order:
            priority = ranks.index(tier(locality, e.locality))
            part = answers.get((e.address, priority))
            if part is None:
                part = answers[(e.address, priority)] = R.record(
                    R.QUESTION, QType.SRV, ttl, R.srv_rdata(
                        priority=priority, weight=max(e.weight, 1),
                        port=port_of(e, port), target=endpoint_name(base, e)))
                glue[e.address] = R.record(b"", *typed(e, ttl))
            # The glue's owner points at the target inside the SRV record (the target
            # itself is never compressed, RFC 2782): pointer, fixed part, 6 bytes.
            pointer = offset + 2 + 10 + 6
            additional.append((0xC000 | pointer).to_bytes(2, "big") + glue[e.address]
                              if pointer < 0x4000 else
                              R.record(text_to_wire(endpoint_name(base, e)),
                                       *typed(e, ttl)))
            answer.append(part)
            offset += len(part)
        return R.joined(answer, additional)
    return encode
