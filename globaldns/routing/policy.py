"""Routing policy: who is asking (client locality), which rule applies, and the plan for
one answer: which endpoints, in which groups, with which weights, and why."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from math import gcd

from globaldns.config.model import Config, RoutingRule, ZoneConfig
from globaldns.registry.model import Endpoint, Locality
from globaldns.routing.locality import Rotations, tiers

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Client profiles are cached per client address; past this many, the cache starts over.
MAX_CLIENT_CACHE = 65536


@dataclass(frozen=True, slots=True)
class Profile:
    """What the answer depends on about a client: its locality, which view CIDRs it falls
    in, and the ECS scope to answer with."""

    id: int
    locality: Locality
    origin: str
    """`ecs`, `client_localities` or `resolver`: where the locality came from."""
    views: frozenset[int]
    scope: int


def locality_matches(pattern: str, locality: Locality) -> bool:
    """`us-central1/*` matches every zone of us-central1; `eu-*` every region starting eu-."""
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        value = locality[i] if i < 3 else ""
        if part == "*":
            continue
        if not value or not re.fullmatch(part.replace(".", r"\.").replace("*", ".*"), value):
            return False
    return True


class ClientLocator:
    """In this order: the EDNS Client Subnet (RFC 7871), else the source address looked up
    in `client_localities` (longest prefix wins), else `resolver.locality`."""

    def __init__(self, config: Config) -> None:
        self.default = config.resolver.locality
        self.table: list[tuple[IPNetwork, Locality]] = sorted(
            ((ipaddress.ip_network(c.cidr), c.locality) for c in config.client_localities),
            key=lambda item: -item[0].prefixlen)
        self.view_nets: list[IPNetwork] = []
        for rule in config.routing:
            for view in rule.views:
                self.view_nets.extend(ipaddress.ip_network(c) for c in view.clients)
        self.dependent = bool(self.table or self.view_nets)
        """False when every client gets the same answers (then nothing is looked up)."""
        self.profiles: dict[tuple[Locality, frozenset[int], int], Profile] = {}
        self.default_profile = self._profile(self.default, "resolver", frozenset(), 0)
        self._cache: dict[object, Profile] = {}

    def _profile(self, locality: Locality, origin: str, views: frozenset[int],
                 scope: int) -> Profile:
        key = (locality, views, scope)
        profile = self.profiles.get(key)
        if profile is None:
            profile = Profile(len(self.profiles), locality, origin, views, scope)
            self.profiles[key] = profile
        return profile

    def locate(self, client_ip: str, ecs: tuple[int, int, bytes] | None) -> Profile:
        if not self.dependent:
            return self.default_profile
        key: object = ecs if ecs is not None else client_ip
        profile = self._cache.get(key)
        if profile is None:
            if len(self._cache) >= MAX_CLIENT_CACHE:
                self._cache.clear()
            profile = self._cache[key] = self._resolve(client_ip, ecs)
        return profile

    def _resolve(self, client_ip: str, ecs: tuple[int, int, bytes] | None) -> Profile:
        if ecs is not None:
            family, source, raw = ecs
            width = 4 if family == 1 else 16
            address = ipaddress.ip_address(raw + b"\0" * (width - len(raw)))
            origin = "ecs"
        else:
            address = ipaddress.ip_address(client_ip.split("%")[0])
            source = address.max_prefixlen
            origin = "client_localities"
        locality, scope = self.default, 0
        for network, where in self.table:
            if address in network:
                locality, scope = where, network.prefixlen
                break
        else:
            origin = "ecs" if ecs is not None else "resolver"
        views = frozenset(i for i, net in enumerate(self.view_nets) if address in net)
        for i in views:
            scope = max(scope, self.view_nets[i].prefixlen)
        if ecs is not None:
            scope = min(scope, source) if scope else 0
        return self._profile(locality, origin, views, scope if ecs is not None else 0)


def compile_match(pattern: str) -> re.Pattern[str]:
    return re.compile(re.escape(pattern).replace(r"\*", "[^.]*") + r"\Z")


class Rules:
    def __init__(self, config: Config) -> None:
        self.rules = [(compile_match(r.match), r) for r in config.routing]
        self.view_offsets: list[int] = []
        offset = 0
        for rule in config.routing:
            self.view_offsets.append(offset)
            offset += sum(len(v.clients) for v in rule.views)

    def match(self, service: str, namespace: str) -> tuple[int, RoutingRule] | None:
        name = f"{service}.{namespace}"
        for i, (regex, rule) in enumerate(self.rules):
            if regex.match(name):
                return i, rule
        return None


@dataclass(slots=True)
class Plan:
    """One answer's plan for one client: groups of endpoint orders, each chosen with its
    weight to lead the answer; `notes` explain the decision (EDE text, explain)."""

    groups: list[tuple[int, Rotations]]
    ede: str = ""
    notes: tuple[str, ...] = ()
    view: int = -1
    leads: tuple[tuple[Endpoint, ...], ...] = ()
    """Per group, the endpoints that lead its answers (a cluster, a locality, a tier)."""


def cluster_health(rule: RoutingRule | None, endpoints: Sequence[Endpoint],
                   previous: dict[str, bool]) -> dict[str, bool]:
    """Per cluster: healthy while at least `min_healthy` of its endpoints are ready. With
    hysteresis: an unhealthy cluster comes back only one endpoint (or 10 points) above the
    threshold, so a cluster at the edge does not flap in and out of answers."""
    amount, percent = rule.min_healthy if rule else (0, False)
    totals: dict[str, list[int]] = {}
    for e in endpoints:
        counts = totals.setdefault(e.cluster, [0, 0])
        counts[0] += 1
        counts[1] += e.ready
    out = {}
    for cluster, (total, ready) in totals.items():
        value = ready * 100 / total if percent else ready
        margin = (10 if percent else 1) if previous.get(cluster) is False else 0
        out[cluster] = amount == 0 or value >= min(amount + margin, 100 if percent else total)
    return out


def plan(endpoints: Sequence[Endpoint], *, rule: RoutingRule | None, rule_index: int,
         rules: Rules, profile: Profile, zone: ZoneConfig,
         healthy_clusters: dict[str, bool]) -> Plan:
    notes: list[str] = []
    ede = ""
    candidates = list(endpoints)
    view_index = -1
    if rule is not None and rule.views:
        offset = rules.view_offsets[rule_index]
        for i, view in enumerate(rule.views):
            nets = range(offset, offset + len(view.clients))
            offset += len(view.clients)
            if any(n in profile.views for n in nets) or any(
                    locality_matches(p, profile.locality) for p in view.localities):
                view_index = i
                wanted = set(view.labels)
                candidates = [e for e in candidates
                              if (not view.clusters or e.cluster in view.clusters)
                              and wanted <= set(e.labels)]
                notes.append(f"view {i} matched: restricted to "
                             f"{', '.join(view.clusters) or dict(view.labels)}")
                break

    ready = [e for e in candidates if e.ready]
    healthy = [e for e in ready if healthy_clusters.get(e.cluster, True)]
    unhealthy_clusters = sorted(c for c, ok in healthy_clusters.items() if not ok)
    if unhealthy_clusters and rule is not None and rule.min_healthy[0]:
        notes.append(f"below min_healthy: {', '.join(unhealthy_clusters)}")
    panic = rule.panic_threshold if rule else 0.0
    if candidates and panic and len(ready) * 100 / len(candidates) < panic:
        ede = (f"panic: {len(ready)} of {len(candidates)} endpoints healthy, below "
               f"{panic:g}%; answering all")
        healthy = candidates
    elif not healthy and candidates:
        if zone.on_all_unhealthy == "all":
            ede = f"fail-open: no healthy endpoint; answering all {len(candidates)}"
            healthy = candidates
        else:
            notes.append("no healthy endpoint; on_all_unhealthy: none")
    if ede:
        notes.append(ede)

    locality = profile.locality
    groups: list[tuple[int, list[Endpoint]]] = []
    if rule is not None and rule.weights:
        weighted = [(c, w) for c, w in rule.weights if w > 0]
        backups = [c for c, w in rule.weights if w == 0]
        by_cluster: dict[str, list[Endpoint]] = {}
        for e in healthy:
            by_cluster.setdefault(e.cluster, []).append(e)
        groups = [(w, by_cluster[c]) for c, w in weighted if c in by_cluster]
        if groups:
            healthy = [e for e in healthy if e.cluster not in backups]
        else:
            groups = [(1, by_cluster[c]) for c in backups if c in by_cluster]
            if groups:
                used = ", ".join(c for c in backups if c in by_cluster)
                ede = ede or (f"failover: no healthy endpoint in "
                              f"{', '.join(c for c, _ in weighted)}; answering from backup {used}")
                notes.append(ede)
    elif rule is not None and rule.distribute:
        for entry in rule.distribute:
            if locality_matches(entry.source, locality):
                for pattern, weight in entry.to:
                    members = [e for e in healthy if locality_matches(pattern, e.locality)]
                    if members and weight:
                        groups.append((weight, members))
                notes.append(f"distribute from {entry.source}: "
                             + ", ".join(f"{p} {w}" for p, w in entry.to))
                break

    failover_region = ""
    if rule is not None and rule.failover and locality.region and not any(
            e.locality.region == locality.region for e in healthy):
        for failover in rule.failover:
            if failover.source == locality.region:
                failover_region = failover.to
                ede = ede or (f"failover: no healthy endpoint in {locality.region}; "
                              f"answering from {failover.to}")
                notes.append(ede)
                break

    def tiered(members: Sequence[Endpoint]) -> list[list[Endpoint]]:
        groups_ = tiers(locality, members)
        if failover_region:
            first = [e for e in members if e.locality.region == failover_region]
            rest = [e for e in members if e.locality.region != failover_region]
            groups_ = tiers(locality, first) + tiers(locality, rest)
        return groups_

    limit = rule.max_answers if rule is not None and rule.max_answers is not None \
        else zone.max_answers
    best = rule is not None and rule.answer == "best_tier"
    spill = rule.spill if rule is not None else 0
    shuffle = rule.shuffle if rule is not None else True

    def orders(lead: list[list[Endpoint]], rest: list[list[Endpoint]]) -> Rotations:
        """Rotated orders: `lead` first, then `rest`; best_tier keeps `lead` + spill."""
        cut = sum(len(g) for g in lead) + spill if best else 0
        if limit and (not cut or limit < cut):
            cut = limit
        return Rotations(lead + rest, cut, rotate=shuffle)

    if groups:
        result = []
        flat = rule is not None and not rule.weights
        for weight, members in groups:
            ids = {id(e) for e in members}
            # A distribute target (`us-central1/*`) is one tier: its weight is shared
            # evenly by its endpoints, as Istio does; a weighted cluster keeps locality.
            lead = [list(members)] if flat else tiered(members)
            rest = tiered([e for e in healthy if id(e) not in ids])
            result.append((weight, orders(lead, rest)))
        return Plan(result, ede, tuple(notes), view_index,
                    tuple(tuple(members) for _, members in groups))
    layered = tiered(healthy)
    if not layered:
        return Plan([(1, Rotations([]))], ede, tuple(notes), view_index)
    return Plan([(1, orders(layered[:1], layered[1:]))], ede, tuple(notes), view_index,
                (tuple(layered[0]),))


def schedule(weights: Sequence[int]) -> tuple[int, ...]:
    """A smooth weighted round-robin sequence (nginx's): over one cycle each index appears
    exactly in proportion to its weight, spread out rather than in runs."""
    divisor = 0
    for w in weights:
        divisor = gcd(divisor, w)
    reduced = [w // divisor for w in weights] if divisor else [1] * len(weights)
    total = sum(reduced)
    current = [0] * len(reduced)
    out = []
    for _ in range(total):
        for i, w in enumerate(reduced):
            current[i] += w
        best = max(range(len(reduced)), key=lambda i: current[i])
        current[best] -= total
        out.append(best)
    return tuple(out)
