"""The answer snapshot: every name of every served zone, with its replies prepared.

The registry calls `update(key)` when one service changes; only that service's names are
rebuilt. Each name's answers are immutable objects replaced whole, and the update runs
without yielding to the event loop, so a query never sees half a change.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence

from globaldns.config.model import Config, ZoneConfig
from globaldns.dns import records as R
from globaldns.dns.message import NXDOMAIN, SERVFAIL, Query, text_to_wire, wire_to_text
from globaldns.dns.wire import Body, Reply
from globaldns.registry.locality import rotations, tiers
from globaldns.registry.model import Endpoint, ServiceKey
from globaldns.registry.store import MergedService, Store

NODATA = 0
"""The key, in a name's table, of the answer for every type it has no records of."""

EDE_OTHER = 0
EDE_NOT_READY = 14  # RFC 8914 "Not Ready": we have not finished our first sync


class AnswerSet:
    """The replies for one name and type; each query takes the next in turn."""

    __slots__ = ("counter", "n", "variants")

    def __init__(self, variants: Sequence[Reply]) -> None:
        self.variants = tuple(variants)
        self.n = len(self.variants)
        self.counter = itertools.count()

    def pick(self, q: Query) -> Reply:
        return self.variants[next(self.counter) % self.n]


NameTable = dict[int, AnswerSet]


class Zone:
    __slots__ = ("config", "name", "negative", "nxdomain", "servfail_unsynced", "wire")

    def __init__(self, config: ZoneConfig, serial: int) -> None:
        self.config = config
        self.name = config.name
        self.wire = text_to_wire(config.name)
        self.negative = [R.soa(config.name, config.negative_ttl, serial=serial,
                               minimum=config.negative_ttl)]
        self.nxdomain = AnswerSet([Reply(R.body(None, rcode=NXDOMAIN,
                                                authority=self.negative))])
        self.servfail_unsynced = AnswerSet([Reply(
            R.body(None, rcode=SERVFAIL, aa=False),
            ede=((EDE_NOT_READY, "not synced: a cluster has not finished its first list"),))])

    def body(self, qname: str, *, answer: list[R.RR] = (), additional: list[R.RR] = (),  # type: ignore[assignment]
             ) -> Body:
        if answer:
            return R.body(qname, answer=answer, additional=additional)
        return R.body(qname, authority=self.negative)


class Snapshot:
    """Prepared answers for every served zone, kept current from the registry."""

    def __init__(self, config: Config, store: Store, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.serial = int(clock())
        self.synced = True
        self.names: dict[bytes, NameTable] = {}
        self.zones: dict[bytes, Zone] = {}
        self._owned: dict[ServiceKey, list[bytes]] = {}
        self._namespaces: dict[bytes, int] = {}
        self.rebuild(config)
        store.subscribe(self.update)

    def rebuild(self, config: Config) -> None:
        """Whole rebuild, for a new config (not for registry changes)."""
        self.config = config
        self.names = {}
        self._owned = {}
        self._namespaces = {}
        self.zones = {}
        for zc in config.zones:
            zone = Zone(zc, self.serial)
            self.zones[zone.wire] = zone
            self.names[zone.wire] = self._apex(zone)
        for key in self.store.service_keys():
            self.update(key)

    def set_synced(self, synced: bool) -> None:
        """Until every source has synced, an unknown name is SERVFAIL, not NXDOMAIN:
        resolvers cache negative answers, so we give them only from complete data."""
        self.synced = synced

    def negative(self, qname: bytes) -> AnswerSet | None:
        """The answer for a name that is not in the table: NXDOMAIN (or SERVFAIL before
        sync) inside a served zone, None outside every one."""
        i = 0
        zones = self.zones
        while qname[i]:
            zone = zones.get(qname[i:])
            if zone is not None:
                return zone.nxdomain if self.synced else zone.servfail_unsynced
            i += qname[i] + 1
        zone = zones.get(qname[i:])
        if zone is None:
            return None
        return zone.nxdomain if self.synced else zone.servfail_unsynced

    def zone_of(self, qname: bytes) -> Zone | None:
        i = 0
        while True:
            zone = self.zones.get(qname[i:])
            if zone is not None or not qname[i]:
                return zone
            i += qname[i] + 1

    def _apex(self, zone: Zone) -> NameTable:
        name = zone.name
        ttl = zone.config.ttl
        listen = self.config.dns.listen.host
        glue = [] if listen in ("0.0.0.0", "::") else [R.address(f"ns.{name}", ttl, listen)]
        soa = R.soa(name, ttl, serial=self.serial, minimum=zone.config.negative_ttl)
        table: NameTable = {
            R.SOA: AnswerSet([Reply(R.body(name, answer=[soa]))]),
            R.NS: AnswerSet([Reply(R.body(name, answer=[R.ns(name, ttl, f"ns.{name}")],
                                          additional=glue))]),
            R.ANY: AnswerSet([Reply(R.body(name, answer=[R.hinfo_rfc8482(name, ttl)]))]),
            NODATA: AnswerSet([Reply(zone.body(name))]),
        }
        if glue:
            ns_name = f"ns.{name}"
            self.names[text_to_wire(ns_name)] = {
                R.A if "." in listen else R.AAAA: AnswerSet([Reply(R.body(ns_name, answer=glue))]),
                R.ANY: AnswerSet([Reply(R.body(ns_name, answer=[R.hinfo_rfc8482(ns_name, ttl)]))]),
                NODATA: AnswerSet([Reply(zone.body(ns_name))]),
            }
        return table

    def update(self, key: ServiceKey) -> None:
        """Re-prepare the names of one service, in every zone."""
        service = self.store.get(key)
        new: dict[bytes, NameTable] = {}
        if service is not None:
            for zone in self.zones.values():
                new.update(self._service_names(zone, service))
        old = self._owned.pop(key, [])
        names = self.names
        for name in old:
            if name not in new:
                names.pop(name, None)
        names.update(new)
        namespace_names = [text_to_wire(f"{key[0]}.{z.name}") for z in self.zones.values()]
        if new:
            self._owned[key] = list(new)
            if not old:
                self._count_namespace(namespace_names, +1)
        elif old:
            self._count_namespace(namespace_names, -1)

    def _count_namespace(self, wires: list[bytes], delta: int) -> None:
        """A namespace is an empty non-terminal while any service lives in it."""
        for wire in wires:
            count = self._namespaces.get(wire, 0) + delta
            if count > 0:
                self._namespaces[wire] = count
                if wire not in self.names:
                    zone = self.zone_of(wire)
                    assert zone is not None
                    self.names[wire] = {NODATA: AnswerSet([Reply(zone.body(
                        wire_to_text(wire)))])}
            else:
                self._namespaces.pop(wire, None)
                self.names.pop(wire, None)

    def _service_names(self, zone: Zone, service: MergedService) -> dict[bytes, NameTable]:
        base = f"{service.key[1]}.{service.key[0]}.{zone.name}"
        ttl = zone.config.ttl
        out: dict[bytes, NameTable] = {}

        def nodata(name: str) -> AnswerSet:
            return AnswerSet([Reply(zone.body(name))])

        if service.external_name:
            answer = AnswerSet([Reply(R.body(base, answer=[
                R.cname(base, ttl, service.external_name)]))])
            out[text_to_wire(base)] = {NODATA: answer}
            return out

        endpoints = self.answerable(zone, service.endpoints)
        locality = self.config.resolver.locality
        limit = zone.config.max_answers
        table: NameTable = {NODATA: nodata(base),
                            R.ANY: AnswerSet([Reply(R.body(base, answer=[
                                R.hinfo_rfc8482(base, ttl)]))])}
        for rtype, family in ((R.A, 4), (R.AAAA, 6)):
            subset = [e for e in endpoints if e.family == family]
            if subset:
                table[rtype] = AnswerSet([
                    Reply(zone.body(base, answer=[R.address(base, ttl, e.address) for e in order]))
                    for order in rotations(tiers(locality, subset), limit)])
        out[text_to_wire(base)] = table

        by_cluster: dict[str, list[Endpoint]] = {}
        for endpoint in service.endpoints:
            by_cluster.setdefault(endpoint.cluster, []).append(endpoint)
            name = self.endpoint_name(base, endpoint)
            out[text_to_wire(name)] = {
                R.A if endpoint.family == 4 else R.AAAA: AnswerSet([Reply(zone.body(
                    name, answer=[R.address(name, ttl, endpoint.address)]))]),
                NODATA: nodata(name),
            }
        for cluster, members in by_cluster.items():
            name = f"{cluster}.{base}"
            ctable: NameTable = {NODATA: nodata(name)}
            ready = self.answerable(zone, members)
            for rtype, family in ((R.A, 4), (R.AAAA, 6)):
                subset = [e for e in ready if e.family == family]
                if subset:
                    ctable[rtype] = AnswerSet([
                        Reply(zone.body(name, answer=[R.address(name, ttl, e.address)
                                                      for e in order]))
                        for order in rotations(tiers(locality, subset), limit)])
            out[text_to_wire(name)] = ctable

        for port in self.ports(service):
            proto = f"_{port.protocol}.{base}"
            name = f"_{port.name}.{proto}"
            out.setdefault(text_to_wire(proto), {NODATA: nodata(proto)})
            targets = [e for e in endpoints if self.port_of(e, port.name, port.port)]
            if not targets:
                out[text_to_wire(name)] = {NODATA: nodata(name)}
                continue
            groups = tiers(locality, targets)
            variants = []
            for order in rotations(groups, limit):
                rank = {id(e): t for t, group in enumerate(groups) for e in group}
                answer = [R.srv(name, ttl, priority=rank[id(e)], weight=max(e.weight, 1),
                                port=self.port_of(e, port.name, port.port),
                                target=self.endpoint_name(base, e)) for e in order]
                additional = [R.address(self.endpoint_name(base, e), ttl, e.address)
                              for e in order]
                variants.append(Reply(zone.body(name, answer=answer, additional=additional)))
            out[text_to_wire(name)] = {R.SRV: AnswerSet(variants), NODATA: nodata(name)}
        return out

    def answerable(self, zone: Zone, endpoints: Sequence[Endpoint]) -> list[Endpoint]:
        """Ready endpoints; when none is ready, all of them (fail open) or none."""
        ready = [e for e in endpoints if e.ready]
        if ready or zone.config.on_all_unhealthy == "none":
            return ready
        return list(endpoints)

    @staticmethod
    def ports(service: MergedService) -> list:
        seen = {(p.name, p.protocol): p for p in service.ports}
        for endpoint in service.endpoints:
            for p in endpoint.ports or ():
                seen.setdefault((p.name, p.protocol), p)
        return [p for p in seen.values() if p.name]

    @staticmethod
    def port_of(endpoint: Endpoint, name: str, default: int) -> int:
        if endpoint.ports is None:
            return default
        for p in endpoint.ports:
            if p.name == name:
                return p.port
        return 0

    @staticmethod
    def endpoint_name(base: str, endpoint: Endpoint) -> str:
        return f"{endpoint.label()}.{endpoint.cluster}.{base}"

