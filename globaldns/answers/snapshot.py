"""The answer snapshot: every name of every served zone, with its replies prepared.

The registry calls `update(key)` when one service changes; only that service's names are
rebuilt. Each name's answers are immutable objects replaced whole, and the update runs
without yielding to the event loop, so a query never sees half a change. Both `update`
and `rebuild` build first and swap after: a service that fails to build keeps its
previous answers (counted as `build_failed`) and every other name stays exactly as it was;
a name that cannot be one (past 255 bytes, a label past 63) is left out and counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence

from globaldns.answers import clusterset
from globaldns.answers.tables import (
    NODATA,
    STEP,
    Answers,
    AnswerSet,
    Encoder,
    NameTable,
    PerClient,
    Router,
    WeightedAnswers,
    Zone,
    answer,
    fits,
    port_of,
    ports,
    srv_encoder,
    ttl_of,
    typed,
    unique,
)
from globaldns.config.model import AliasConfig, Config, RoutingRule, SubsetConfig, ZoneConfig
from globaldns.dns import records as R
from globaldns.dns.message import presentation, text_to_wire
from globaldns.dns.names import Ede, QType
from globaldns.dns.wire import Body
from globaldns.registry.model import Endpoint, Locality, ServiceKey
from globaldns.registry.store import MergedService, Store, printable
from globaldns.routing.annotated import annotated
from globaldns.routing.locality import Rotations, tiers
from globaldns.routing.policy import (
    ClientLocator,
    Plan,
    Profile,
    Rules,
    cluster_health,
    plan,
)

log = logging.getLogger("globaldns.registry")

ASIDE = 1000
"""A service of more endpoints than this is prepared aside, in steps, then swapped in."""

# What `rebuild` replaces, restored when it fails.
_REBUILT = ("config", "locator", "rules", "subsets", "aliases", "zones", "names", "_owned",
            "_namespaces", "_health", "host_zones", "_host_patterns", "_host_owner")


def answer_plan(members: Sequence[Endpoint], *, rule: tuple[int, RoutingRule] | None,
                rules: Rules, profile: Profile, zone: ZoneConfig, health: dict[str, bool]
                ) -> Plan:
    """The one plan of a service's answers for a client profile: the answers are built
    from it, and `explain` shows it (through `Snapshot.plan`), so the two cannot drift."""
    return plan(members, rule=rule[1] if rule else None, rule_index=rule[0] if rule else 0,
                rules=rules, profile=profile, zone=zone, healthy_clusters=health)


class Snapshot:
    """Prepared answers for every served zone, kept current from the registry."""

    def __init__(self, config: Config, store: Store, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.serial = int(clock())
        self.synced = True
        self.names: dict[bytes, NameTable] = {}
        self.zones: dict[bytes, Zone] = {}
        self._owned: dict[ServiceKey, list[bytes]] = {}
        self._namespaces: dict[bytes, int] = {}
        self._health: dict[ServiceKey, dict[str, bool]] = {}
        self.stale: dict[str, str] = {}
        """Unreachable clusters whose last known endpoints are still answered → why."""
        self.listeners: list[Callable[[Iterable[bytes] | None], None]] = []
        """Told which names were replaced (None: all of them), e.g. the wire cache."""
        self._pending: dict[ServiceKey, asyncio.Task[None]] = {}
        """Big services being prepared in steps."""
        self.yields = 0
        """Times preparing a big service gave the loop back."""
        self.rebuild(config)
        store.subscribe(self.update)

    @property
    def health(self) -> Mapping[ServiceKey, dict[str, bool]]:
        """Service → cluster → at least the rule's `min_healthy` of its endpoints ready
        (only services under such a rule appear)."""
        return self._health

    def rebuild(self, config: Config) -> None:
        """Whole rebuild, for a new config (not for registry changes). If it fails, the
        snapshot stays as it was, and the failure is raised (the reload is rejected)."""
        kept = {attr: getattr(self, attr) for attr in _REBUILT if hasattr(self, attr)}
        try:
            self._rebuild(config)
        except Exception:
            for attr, value in kept.items():
                setattr(self, attr, value)
            raise
        # Every service was just built whole from the store, with the new config.
        for pending in self._pending.values():
            pending.cancel()
        self._pending.clear()
        self._tell(None)

    def _rebuild(self, config: Config) -> None:
        self.config = config
        self.locator = ClientLocator(config)
        self.rules = Rules(config)
        self.subsets = {(s.namespace, s.name): s.subsets for s in config.services}
        self.aliases: dict[str, list[AliasConfig]] = {}
        for alias in config.aliases:
            self.aliases.setdefault(alias.target, []).append(alias)
        names: dict[bytes, NameTable] = {}
        zones: dict[bytes, Zone] = {}
        for zc in config.zones:
            zone = Zone(zc, self.serial)
            zones[zone.wire] = zone
            names.update(self._apex(zone))
        self.zones = zones
        # ServiceEntry hosts outside every zone (`serve_hosts`): an exact name is a zone of
        # its own from the start (never forwarded); a `*.domain` pattern makes one for each
        # matching host while a ServiceEntry names it.
        self._host_patterns = tuple(h[1:] for h in config.serve_hosts if h.startswith("*."))
        self.host_zones: dict[bytes, Zone] = {}
        self._host_owner: dict[bytes, ServiceKey] = {}
        for host in config.serve_hosts:
            if not host.startswith("*.") and self.zone_of(text_to_wire(host)) is None:
                self.host_zones[text_to_wire(host)] = self._host_zone(host)
        for alias in config.aliases:
            names[text_to_wire(alias.name)] = self._dangling_alias(alias)
        self.names = names
        self._owned = {}
        self._namespaces = {}
        self._health = dict(self._health)
        for key in self.store.service_keys():
            self._update(key, self.store.get(key))

    def _tell(self, names: Iterable[bytes] | None) -> None:
        for listener in self.listeners:
            listener(names)

    def set_synced(self, synced: bool) -> None:
        """Until every source has synced, an unknown name is SERVFAIL, not NXDOMAIN:
        resolvers cache negative answers, so we give them only from complete data."""
        if synced != self.synced:
            self.synced = synced
            self._tell(None)

    def set_stale(self, stale: dict[str, str]) -> None:
        """Clusters now served from their last known data: answers that include their
        endpoints carry EDE 3 (Stale Answer) saying so. Re-prepares only the services
        with endpoints in a cluster that changed."""
        changed = {c for c in stale.keys() | self.stale.keys()
                   if stale.get(c) != self.stale.get(c)}
        self.stale = dict(stale)
        if not changed:
            return
        for key in [k for k, health in self._health.items() if changed & health.keys()]:
            self.update(key)

    def negative(self, qname: bytes) -> AnswerSet | None:
        """The answer for a name that is not in the table: NXDOMAIN (or SERVFAIL before
        sync) inside a served zone, None outside every one."""
        zone = self.zone_of(qname)
        if zone is None:
            return None
        return zone.nxdomain if self.synced else zone.servfail_unsynced

    def zone_of(self, qname: bytes) -> Zone | None:
        i = 0
        zones = self.zones
        hosts = self.host_zones
        while True:
            zone = zones.get(qname[i:]) or hosts.get(qname[i:])
            if zone is not None or not qname[i]:
                return zone
            i += qname[i] + 1

    def _host_zone(self, host: str) -> Zone:
        """A zone whose apex is a served host: the first zone's settings (ttl, negative_ttl,
        max_answers, on_all_unhealthy), named after the host."""
        base = self.config.zones[0] if self.config.zones else ZoneConfig(host)
        return Zone(dataclasses.replace(base, name=host), self.serial)

    def zone_of_host(self, host: str) -> Zone | None:
        """Where a ServiceEntry host is answered: the served zone holding it, else a zone
        of its own when `serve_hosts` names it or a pattern there matches; None: not
        served (left to the forwarders)."""
        wire = text_to_wire(host)
        zone = self.zone_of(wire)
        if zone is not None:
            return zone
        if any(host.endswith(p) for p in self._host_patterns):
            zone = self.host_zones[wire] = self._host_zone(host)
            return zone
        return None

    def subsets_of(self, key: ServiceKey, rule: tuple[int, RoutingRule] | None
                   ) -> tuple[SubsetConfig, ...]:
        """The subsets of a service: its own, then its routing rule's."""
        subsets: tuple[SubsetConfig, ...] = self.subsets.get(key, ())
        return subsets + rule[1].subsets if rule else subsets

    def plan(self, key: ServiceKey, members: Sequence[Endpoint], profile: Profile,
             zone: ZoneConfig) -> tuple[Plan, tuple[int, RoutingRule] | None, dict[str, bool]]:
        """The plan answers for `members` of a service are built from, with the rule and
        the cluster health it used (for `explain`: the same function the answers use)."""
        service = self.store.get(key)
        rule = self.rule_for(service)[0] if service is not None \
            else self.rules.match(key[1], key[0])
        health = self._health.get(key, {})
        return answer_plan(members, rule=rule, rules=self.rules, profile=profile, zone=zone,
                           health=health), rule, health

    def _apex(self, zone: Zone) -> dict[bytes, NameTable]:
        name = zone.name
        ttl = zone.config.ttl
        listen = self.config.dns.listen.host
        glue = [] if listen in ("0.0.0.0", "::") else [R.address(f"ns.{name}", ttl, listen)]
        soa = R.soa(name, ttl, serial=self.serial, minimum=zone.config.negative_ttl)
        out: dict[bytes, NameTable] = {zone.wire: {
            QType.SOA: AnswerSet([answer(R.body(name, answer=[soa]))]),
            QType.NS: AnswerSet([answer(R.body(name, answer=[R.ns(name, ttl, f"ns.{name}")],
                                          additional=glue))]),
            QType.ANY: AnswerSet([answer(R.body(name, answer=[R.hinfo_rfc8482(name, ttl)]))]),
            NODATA: zone.nodata,
        }}
        if name == clusterset.ZONE:
            out.update(clusterset.apex(zone))
        if glue:
            ns_name = f"ns.{name}"
            out[text_to_wire(ns_name)] = {
                glue[0].rtype: AnswerSet([answer(R.body(ns_name, answer=glue))]),
                NODATA: zone.nodata,
            }
        return out

    def update(self, key: ServiceKey) -> None:
        """Re-prepare the names of one service, in every zone. A service of more than
        `ASIDE` endpoints is prepared in steps that yield to the event loop, and swapped in
        whole when done (queries meanwhile get its previous answers). One that has no
        answers yet is prepared at once: a name that exists is never NXDOMAIN."""
        pending = self._pending.pop(key, None)
        if pending is not None:
            pending.cancel()
        service = self.store.get(key)
        if service is not None and len(service.endpoints) > ASIDE and key in self._owned:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a CLI tool): at once
                pass
            else:
                self._pending[key] = loop.create_task(self._update_later(key, service),
                                                      name=f"snapshot {'/'.join(key)}")
                return
        self._tell(self._update(key, service))

    async def _update_later(self, key: ServiceKey, service: MergedService) -> None:
        steps = self._build(key, service)
        try:
            while True:
                next(steps)
                self.yields += 1
                await asyncio.sleep(0)
        except StopIteration as done:
            built: tuple[dict[bytes, NameTable], dict[str, bool]] | None = done.value
        if self._pending.get(key) is asyncio.current_task():
            del self._pending[key]
        self._tell(self._swap(key, service, built))
        # Its answers live until the service changes: out of the collector's full passes
        # (as App.run does for the first snapshot), which would otherwise walk them on
        # every later big change, for tens of ms. They hold no reference cycles
        # (tests/test_registry.py), so refcounting frees them when they are replaced; a
        # cycle among whatever else is young at this moment would be kept (big changes
        # are rare, and bounded by limits.max_endpoints_per_service).
        gc.freeze()

    def _update(self, key: ServiceKey, service: MergedService | None) -> set[bytes]:
        steps = self._build(key, service)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return self._swap(key, service, done.value)

    def _build(self, key: ServiceKey, service: MergedService | None
               ) -> Generator[None, None, tuple[dict[bytes, NameTable], dict[str, bool]] | None]:
        """The service's names and cluster health, built aside; None if it failed."""
        new: dict[bytes, NameTable] = {}
        if service is None:
            return new, {}
        try:
            rule, _ = self.rule_for(service)
            previous = self._health.get(key, {})
            health = cluster_health(rule[1] if rule else None, service.endpoints, previous)
            if not key[0]:  # a ServiceEntry host: one name, where it is served
                zone = self.zone_of_host(key[1])
                if zone is None:
                    self.store.skipped.skip("host_not_served", key[1],
                                            "outside every zone and not in serve_hosts")
                else:
                    new.update((yield from self._service_names(zone, service, rule, health,
                                                               base=key[1])))
            for zone in self.zones.values() if key[0] else ():
                if zone.name == clusterset.ZONE:
                    new.update((yield from clusterset.names(
                        zone, service, self.router(zone, rule, health), self.store.skipped)))
                elif service.exists:
                    new.update((yield from self._service_names(zone, service, rule, health)))
        except Exception:
            # A source gave data we cannot answer from (a bug, or a check missed): this
            # service keeps its previous answers, every other name is untouched.
            what = "/".join(key)
            log.exception("registry: answers for %s failed to build; the previous ones "
                          "stay", printable(what))
            self.store.skipped.skip("build_failed", what)
            return None
        return new, health

    def _swap(self, key: ServiceKey, service: MergedService | None,
              built: tuple[dict[bytes, NameTable], dict[str, bool]] | None) -> set[bytes]:
        if built is None:
            return set()
        new, health = built
        if service is not None:
            self._health[key] = health
        else:
            self._health.pop(key, None)
        old = self._owned.pop(key, [])
        names = self.names
        if not key[0]:
            new = self._claim(key, new, old)
        else:
            self._evict_hosts(new)
        for name in old:
            if name not in new:
                names.pop(name, None)
        names.update(new)
        changed = set(old)
        changed.update(new)
        if not key[0]:
            self._swap_host(key, new, old)
            ents = self._host_ents(key[1])
            if new:
                self._owned[key] = list(new)
                if not old:
                    self._count_namespace(ents, +1)
                    changed.update(ents)
            elif old:
                self._count_namespace(ents, -1)
                changed.update(ents)
            return changed
        if service is None or service.external_name:
            for zone in self.zones.values():
                for alias in self._aliases_of(zone, f"{key[1]}.{key[0]}"):
                    wire = text_to_wire(alias.name)
                    names[wire] = self._dangling_alias(alias)
                    changed.add(wire)
        namespace_names = [text_to_wire(clusterset.namespace_name(key[0], z.name))
                           for z in self.zones.values()]
        if new:
            self._owned[key] = list(new)
            if not old:
                self._count_namespace(namespace_names, +1)
                changed.update(namespace_names)
        elif old:
            self._count_namespace(namespace_names, -1)
            changed.update(namespace_names)
        return changed

    def _claim(self, key: ServiceKey, new: dict[bytes, NameTable], old: list[bytes]
               ) -> dict[bytes, NameTable]:
        """A host's names, without those another service or zone already answers (the
        first one keeps a name; a Kubernetes service always wins over a host)."""
        mine = set(old)
        taken = [w for w in new if w in self.names and w not in mine and not self._is_ent(w)]
        for wire in taken:
            self.store.skipped.skip("bad_host", key[1],
                                    f"{presentation(wire)} is already a name of another service")
            del new[wire]
        return new

    def _evict_hosts(self, new: dict[bytes, NameTable]) -> None:
        """A service's names take over any a ServiceEntry host had."""
        for wire in new:
            owner = self._host_owner.pop(wire, None)
            if owner is not None:
                self.store.skipped.skip("bad_host", owner[1],
                                        f"{presentation(wire)} is a name of a service")
                owned = self._owned.get(owner)
                if owned is not None and wire in owned:
                    owned.remove(wire)

    def _swap_host(self, key: ServiceKey, new: dict[bytes, NameTable],
                   old: list[bytes]) -> None:
        for wire in old:
            if wire not in new:
                self._host_owner.pop(wire, None)
        for wire in new:
            self._host_owner[wire] = key
        if not new:
            # A zone a pattern made for this host goes with it; an exact serve_hosts
            # name stays a zone.
            host = key[1]
            if host not in self.config.serve_hosts:
                self.host_zones.pop(text_to_wire(host), None)

    def _count_namespace(self, wires: list[bytes], delta: int) -> None:
        """A namespace is an empty non-terminal while any service lives in it."""
        for wire in wires:
            count = self._namespaces.get(wire, 0) + delta
            if count > 0:
                self._namespaces[wire] = count
                if wire not in self.names:
                    zone = self.zone_of(wire)
                    assert zone is not None
                    self.names[wire] = {NODATA: zone.nodata}
            else:
                self._namespaces.pop(wire, None)
                if self._is_ent(wire):  # never a name a service or host has taken since
                    self.names.pop(wire, None)

    def _is_ent(self, wire: bytes) -> bool:
        """`wire` is an empty non-terminal we made (a namespace, or a name above a host)."""
        table = self.names.get(wire)
        zone = self.zone_of(wire)
        return (table is not None and zone is not None and table.keys() == {NODATA}
                and table[NODATA] is zone.nodata)

    def _host_ents(self, host: str) -> list[bytes]:
        """The names between a host and the served zone holding it (`default.global` for
        `vm-user-service.default.global`): empty non-terminals while the host is there
        (RFC 8020: an NXDOMAIN there would deny the host too)."""
        for zone in self.zones.values():
            if host.endswith("." + zone.name):
                labels = host[: -len(zone.name) - 1].split(".")
                return [text_to_wire(".".join(labels[i:]) + "." + zone.name)
                        for i in range(1, len(labels))]
        return []

    def _aliases_of(self, zone: Zone, base: str) -> list[AliasConfig]:
        return self.aliases.get(f"{base}.{zone.name}", [])

    def _dangling_alias(self, alias: AliasConfig) -> NameTable:
        """An alias whose target does not exist (yet): a bare CNAME, or NODATA when flat."""
        zone = self.zone_of(text_to_wire(alias.target))
        ttl = zone.config.ttl if zone else 5
        if alias.mode == "cname":
            return {NODATA: AnswerSet([answer(R.body(alias.name, answer=[
                R.cname(alias.name, ttl, alias.target)]))])}
        return {NODATA: AnswerSet([answer(R.body(alias.name))])}

    def _service_names(self, zone: Zone, service: MergedService,
                       rule: tuple[int, RoutingRule] | None,
                       health: dict[str, bool], base: str = ""
                       ) -> Generator[None, None, dict[bytes, NameTable]]:
        namespace, name = service.key
        base = base or f"{name}.{namespace}.{zone.name}"
        ttl = ttl_of(zone, service)
        out: dict[bytes, NameTable] = {}
        skipped = self.store.skipped
        if not fits(base):
            skipped.skip("name_too_long", base)
            return out

        if service.external_name:
            out[text_to_wire(base)] = {NODATA: AnswerSet([answer(R.body(base, answer=[
                R.cname(base, ttl, service.external_name)]))])}
            return out

        answers = self.router(zone, rule, health)

        records: dict[str, bytes] = {}

        def address_record(e: Endpoint) -> bytes:
            part = records.get(e.address)
            if part is None:
                part = records[e.address] = R.record(R.QUESTION, *typed(e, ttl))
            return part

        def addresses() -> Encoder:
            def encode(order: list[Endpoint], _locality: Locality) -> Body:
                if not order:
                    return zone.nodata.replies[0].body
                return R.joined([address_record(e) for e in unique(order)])
            return encode

        subsets = self.subsets_of(service.key, rule)
        owners: list[tuple[str, list[Endpoint]]] = [(base, list(service.endpoints))]
        for subset in subsets:
            wanted = set(subset.labels)
            owners.append((f"{subset.name}.{base}",
                           [e for e in service.endpoints if wanted <= set(e.labels)]))
        for owner, members in owners:
            yield
            if not fits(owner):
                skipped.skip("name_too_long", owner)
                continue
            table: NameTable = {NODATA: zone.nodata,
                                QType.ANY: AnswerSet([answer(R.body(owner, answer=[
                                    R.hinfo_rfc8482(owner, ttl)]))])}
            for rtype, family in ((QType.A, 4), (QType.AAAA, 6)):
                subset_ = [e for e in members if e.family == family]
                if subset_:
                    table[rtype] = answers(subset_, addresses())
            out[text_to_wire(owner)] = table
            for alias in self._aliases_of(zone, owner[: -len(zone.name) - 1]):
                out[text_to_wire(alias.name)] = self._alias_table(alias, zone, members,
                                                                  answers)

        by_cluster: dict[str, list[Endpoint]] = {}
        unnamed: set[int] = set()
        """ids of endpoints whose own name cannot be one: no name, and no SRV target."""
        yield
        for count, endpoint in enumerate(service.endpoints, 1):
            if count % STEP == 0:
                yield
            by_cluster.setdefault(endpoint.cluster, []).append(endpoint)
            part = address_record(endpoint)  # an address that is none fails here, now
            label = endpoint.label()
            ename = f"{label}.{endpoint.cluster}.{base}"
            # fits(ename), knowing base fits: the endpoint's label and cluster are checked.
            if not (0 < len(label) <= 63 and len(ename) <= 253 and label.isascii()
                    and "." not in label and 0 < len(endpoint.cluster) <= 63
                    and endpoint.cluster.isascii() and "." not in endpoint.cluster):
                skipped.skip("name_too_long", ename)
                unnamed.add(id(endpoint))
                continue
            out[text_to_wire(ename)] = {
                QType.A if endpoint.family == 4 else QType.AAAA:
                    AnswerSet([answer(R.joined([part]))]),
                NODATA: zone.nodata,
            }
        locality = self.config.resolver.locality
        for cluster, members in by_cluster.items():
            yield
            cname = f"{cluster}.{base}"
            if not fits(cname):
                skipped.skip("name_too_long", cname)
                continue
            ctable: NameTable = {NODATA: zone.nodata}
            ready = [e for e in members if e.ready] or (
                members if zone.config.on_all_unhealthy == "all" else [])
            stale = ((Ede.STALE_ANSWER, f"cluster {cluster} {self.stale[cluster]}"),) \
                if cluster in self.stale else ()
            for rtype, family in ((QType.A, 4), (QType.AAAA, 6)):
                subset_ = [e for e in ready if e.family == family]
                if subset_:
                    encode = addresses()
                    ctable[rtype] = WeightedAnswers(
                        [(1, Rotations(tiers(locality, subset_), zone.config.max_answers))],
                        lambda order, encode=encode, stale=stale: answer(  # type: ignore[misc]
                            encode(order, locality), ede=stale))
            out.setdefault(text_to_wire(cname), ctable)

        for port in ports(service):
            yield
            proto = f"_{port.protocol}.{base}"
            sname = f"_{port.name}.{proto}"
            if not fits(sname):
                skipped.skip("name_too_long", sname)
                continue
            out.setdefault(text_to_wire(proto), {NODATA: zone.nodata})
            targets = [e for e in service.endpoints
                       if port_of(e, port) and id(e) not in unnamed]
            table = {NODATA: zone.nodata}
            if targets:
                table[QType.SRV] = answers(targets, srv_encoder(zone, base, sname, port,
                                                                      ttl=ttl))
            out[text_to_wire(sname)] = table
        return out

    def router(self, zone: Zone, rule: tuple[int, RoutingRule] | None,
               health: dict[str, bool]) -> Router:
        """How a service's endpoints become answers: planned per client profile (routing,
        health, locality), each planned order encoded by the caller's encoder."""
        def answers(members: Sequence[Endpoint], encode: Encoder) -> Answers:
            def build(profile: Profile) -> WeightedAnswers:
                p = answer_plan(members, rule=rule, rules=self.rules, profile=profile,
                                zone=zone.config, health=health)
                ede: tuple[tuple[int, str], ...] = ((Ede.OTHER, p.ede),) if p.ede else ()
                if self.stale:
                    stale = sorted({e.cluster for _, orders in p.groups
                                    for group in orders.groups for e in group
                                    if e.cluster in self.stale})
                    ede += tuple((Ede.STALE_ANSWER, f"cluster {c} {self.stale[c]}") for c in stale)
                locality, scope = profile.locality, profile.scope
                return WeightedAnswers(
                    p.groups, lambda order: answer(encode(order, locality), ede=ede,
                                                    ecs_scope=scope))
            if self.locator.dependent:
                return PerClient(build)
            return build(self.locator.default_profile)
        return answers

    def rule_for(self, service: MergedService) -> tuple[tuple[int, RoutingRule] | None, str]:
        """The routing of a service and where it comes from: its annotations over the
        config's rule (`routing/annotated.py`), else the rule, else none."""
        key = service.key
        matched = self.rules.match(key[1], key[0])
        if service.policy is None:  # the usual service: no walk over its endpoints
            return annotated(matched, None, ())
        return annotated(matched, service.policy, sorted({e.cluster
                                                          for e in service.endpoints}))

    def _alias_table(self, alias: AliasConfig, zone: Zone, members: list[Endpoint],
                     answers: Callable[[Sequence[Endpoint], Encoder], Answers]) -> NameTable:
        ttl = zone.config.ttl
        owner = alias.name
        target = alias.target
        table: NameTable = {}
        for rtype, family in ((QType.A, 4), (QType.AAAA, 6)):
            subset_ = [e for e in members if e.family == family]
            if not subset_:
                continue
            if alias.mode == "cname":
                def encode(order: list[Endpoint], _locality: Locality) -> Body:
                    return R.body(owner, answer=[R.cname(owner, ttl, target)] + [
                        R.address(target, ttl, e.address) for e in unique(order)])
            else:
                def encode(order: list[Endpoint], _locality: Locality) -> Body:
                    return R.body(owner, answer=[R.address(owner, ttl, e.address)
                                                 for e in unique(order)])
            table[rtype] = answers(subset_, encode)
        if alias.mode == "cname":
            table[NODATA] = AnswerSet([answer(R.body(owner, answer=[
                R.cname(owner, ttl, target)]))])
        else:
            table[NODATA] = AnswerSet([answer(R.body(owner, authority=zone.negative))])
        return table
