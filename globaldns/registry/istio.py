"""Istio's ServiceEntry, WorkloadEntry and WorkloadGroup, as registry records.

Pure conversion, no I/O: the Kubernetes source (`sources/k8s/istio.py`) hands it the
objects it watches, the config parser the `service_entries:` items (ServiceEntry-shaped),
and both get the same records; `services()` turns them into one `ServiceData` per host.

A host is keyed `("", host)`: the empty namespace is no Kubernetes namespace, so a host
never merges with a Service (`answers/snapshot.py` decides where a host is answered).

Every field is hostile: each list is bounded, each name and address checked; what cannot
be used is skipped through the `skip(reason, detail)` callback (the registry's skipped
reasons), the rest of the object still counts. `Invalid` means the whole object is unusable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from globaldns.registry.model import (
    Endpoint,
    Locality,
    Port,
    ServiceData,
    ServiceKey,
    canonical_ip,
    is_label,
    is_special,
)

Skip = Callable[[str, str], None]
"""`skip(reason, detail)`: one part of an object could not be used."""

# Istio's own validation caps nothing but what etcd holds; these bound what one object
# can cost us (an entry of 1,000 hosts times 1,000 endpoints would be a million endpoints).
MAX_HOSTS = 64
MAX_PORTS = 64
MAX_LABELS = 64
MAX_WEIGHT = 10_000
"""Istio's bound for an endpoint weight is 2^32-1; SRV carries 16 bits, routing 10,000."""

RESOLUTIONS = ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN")
LOCATIONS = ("MESH_EXTERNAL", "MESH_INTERNAL")
HEALTH_CHECKS_ANNOTATION = "proxy.istio.io/health-checks-enabled"
"""Istio: a WorkloadEntry with this annotation is unhealthy until a `Healthy` condition
says otherwise."""


class Invalid(ValueError):
    """The object (or, inside an entry, one endpoint) cannot be used."""

    def __init__(self, text: str, reason: str = "bad_object") -> None:
        super().__init__(text)
        self.reason = reason
        """Its skipped reason, when it costs only a part of an object."""


@dataclass(frozen=True, slots=True)
class Probe:
    """A WorkloadGroup's readiness probe, as the active health checker runs it."""

    kind: str
    """`http` or `tcp`."""
    port: int
    path: str = "/"
    interval: float = 10.0
    timeout: float = 1.0
    healthy_threshold: int = 1
    unhealthy_threshold: int = 3


@dataclass(frozen=True, slots=True)
class EntryEndpoint:
    address: str
    """A canonical IP address, or (resolution DNS) a lowercase host name."""
    ports: tuple[tuple[str, int], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    locality: Locality = Locality()
    weight: int = 1
    network: str = ""
    is_ip: bool = True
    """False: `address` is a host name (a CNAME target)."""


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    namespace: str
    name: str
    hosts: tuple[str, ...]
    ports: tuple[Port, ...]
    endpoints: tuple[EntryEndpoint, ...]
    selector: tuple[tuple[str, str], ...] | None
    """`workloadSelector.labels`: WorkloadEntries of the namespace whose labels hold these."""
    resolution: str = "STATIC"
    external: bool = False
    cluster: str = ""


@dataclass(frozen=True, slots=True)
class WorkloadEntry:
    namespace: str
    name: str
    endpoint: EntryEndpoint
    healthy: bool
    """False when Istio's health checking wrote `Healthy: False` (or has not written yet
    on an entry that asks for health checks)."""
    group: str = ""
    """The WorkloadGroup that owns it (its ownerReference), if any."""


@dataclass(frozen=True, slots=True)
class WorkloadGroup:
    namespace: str
    name: str
    probe: Probe | None


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"{what} is not a mapping")
    return value


def _list(value: Any, what: str, limit: int) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Invalid(f"{what} is not a list")
    if len(value) > limit:
        raise Invalid(f"{what} has more than {limit} items")
    return value


def _labels(value: Any, what: str) -> tuple[tuple[str, str], ...]:
    raw = _mapping(value, what)
    if len(raw) > MAX_LABELS:
        raise Invalid(f"{what} has more than {MAX_LABELS} labels")
    out = []
    for k, v in raw.items():
        if not isinstance(k, str) or not isinstance(v, str) or len(k) > 317 or len(v) > 63:
            raise Invalid(f"{what}: {str(k)[:80]!r} is not a label")
        out.append((k, v))
    return tuple(sorted(out))


_HOST = re.compile(r"[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?")


def host_name(text: Any) -> str:
    """A ServiceEntry host (or a DNS endpoint address): lowercase, no trailing dot, labels
    of at most 63 and 253 in all; Invalid for a wildcard or anything else."""
    if not isinstance(text, str):
        raise Invalid(f"{text!r} is not a host name")
    name = text.lower().rstrip(".")
    if (not name or len(name) > 253 or "." not in name
            or not all(_HOST.fullmatch(label) for label in name.split("."))):
        raise Invalid(f"{text[:260]!r} is not a host name (wildcards are not served)")
    return name


def _weight(value: Any, what: str) -> int:
    if value is None:
        return 1
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Invalid(f"{what}.weight {value!r} is not a whole number ≥ 0")
    # Istio: 0 means unset, i.e. 1.
    return min(value, MAX_WEIGHT) or 1


def _endpoint(raw: Any, what: str, *, resolution: str, allow_special: bool) -> EntryEndpoint:
    d = _mapping(raw, what)
    address = d.get("address")
    if not isinstance(address, str) or not address:
        raise Invalid(f"{what}.address is missing", "bad_address")
    if address.startswith("unix://"):
        raise Invalid(f"{what}.address {address[:80]!r}: unix sockets name no DNS answer",
                      "bad_address")
    is_ip = True
    try:
        text = canonical_ip(address)
    except ValueError:
        if resolution not in ("DNS", "DNS_ROUND_ROBIN"):
            raise Invalid(f"{what}.address {address[:80]!r} is no IP address (a host name "
                          "needs resolution DNS)", "bad_address") from None
        text, is_ip = host_name(address), False
    else:
        if not allow_special and is_special(text):
            raise Invalid(f"{what}.address {text} is loopback, link-local, unspecified or "
                          "multicast", "special_address")
    ports = []
    for name, number in _mapping(d.get("ports"), f"{what}.ports").items():
        if not isinstance(number, int) or isinstance(number, bool) or not 0 < number < 65536:
            raise Invalid(f"{what}.ports.{str(name)[:63]}: {number!r} is not a port")
        ports.append((str(name).lower(), number))
    if len(ports) > MAX_PORTS:
        raise Invalid(f"{what}.ports has more than {MAX_PORTS} ports")
    locality = d.get("locality")
    try:
        where = Locality.parse(locality if isinstance(locality, str) else None)
    except ValueError as exc:
        raise Invalid(f"{what}.locality: {exc}") from None
    if locality is not None and not isinstance(locality, str):
        raise Invalid(f"{what}.locality is not text")
    network = d.get("network") or ""
    if not isinstance(network, str) or len(network) > 253:
        raise Invalid(f"{what}.network is not a name")
    return EntryEndpoint(address=text, ports=tuple(sorted(ports)),
                         labels=_labels(d.get("labels"), f"{what}.labels"),
                         locality=where, weight=_weight(d.get("weight"), what),
                         network=network, is_ip=is_ip)


def _ports(raws: Any, what: str, skip: Skip) -> tuple[Port, ...]:
    out = []
    for i, raw in enumerate(_list(raws, what, MAX_PORTS)):
        d = _mapping(raw, f"{what}[{i}]")
        number = d.get("number")
        name = str(d.get("name") or "").lower()
        if not isinstance(number, int) or isinstance(number, bool) or not 0 < number < 65536:
            skip("bad_port", f"{what}[{i}].number {number!r}")
            continue
        # The SRV owner `_<name>._<protocol>` needs `_` + name within one 63-byte label.
        if name and (len(name) > 62 or not is_label(name)):
            skip("bad_port", f"{what}[{i}].name {name[:80]!r}")
            continue
        protocol = "udp" if str(d.get("protocol") or "").upper() == "UDP" else "tcp"
        out.append(Port(name=name, port=number, protocol=protocol))
    return tuple(out)


def service_entry(raw: Any, *, namespace: str = "", cluster: str, skip: Skip,
                  max_endpoints: int = 1000, allow_special: bool = False) -> ServiceEntry:
    """One ServiceEntry (a Kubernetes object, or `spec` plus `metadata` from the config)."""
    obj = _mapping(raw, "serviceentry")
    meta = _mapping(obj.get("metadata"), "metadata")
    name = str(meta.get("name") or "").lower()
    namespace = str(meta.get("namespace") or namespace).lower()
    spec = _mapping(obj.get("spec"), "spec")
    resolution = str(spec.get("resolution") or "NONE")
    if resolution not in RESOLUTIONS:
        raise Invalid(f"spec.resolution {resolution[:40]!r} is not one of {', '.join(RESOLUTIONS)}")
    location = str(spec.get("location") or "MESH_EXTERNAL")
    if location not in LOCATIONS:
        raise Invalid(f"spec.location {location[:40]!r} is not one of {', '.join(LOCATIONS)}")
    hosts = []
    for i, host in enumerate(_list(spec.get("hosts"), "spec.hosts", MAX_HOSTS)):
        try:
            hosts.append(host_name(host))
        except Invalid as exc:
            skip("bad_host", f"spec.hosts[{i}]: {exc}")
    raws = _list(spec.get("endpoints"), "spec.endpoints", max_endpoints)
    endpoints = []
    for i, ep in enumerate(raws):
        try:
            endpoints.append(_endpoint(ep, f"spec.endpoints[{i}]", resolution=resolution,
                                       allow_special=allow_special))
        except Invalid as exc:
            skip(exc.reason if exc.reason != "bad_object" else "bad_address", str(exc))
    selector = None
    if spec.get("workloadSelector") is not None:
        selector = _labels(_mapping(spec["workloadSelector"], "spec.workloadSelector")
                           .get("labels"), "spec.workloadSelector.labels")
    return ServiceEntry(namespace=namespace, name=name, hosts=tuple(dict.fromkeys(hosts)),
                        ports=_ports(spec.get("ports"), "spec.ports", skip),
                        endpoints=tuple(endpoints), selector=selector, resolution=resolution,
                        external=location == "MESH_EXTERNAL", cluster=cluster)


def _healthy(obj: Mapping[str, Any], meta: Mapping[str, Any]) -> bool:
    conditions = _mapping(obj.get("status"), "status").get("conditions")
    for condition in _list(conditions, "status.conditions", 64):
        if isinstance(condition, dict) and condition.get("type") == "Healthy":
            return condition.get("status") != "False"
    annotations = _mapping(meta.get("annotations"), "metadata.annotations")
    return annotations.get(HEALTH_CHECKS_ANNOTATION) != "true"


def workload_entry(raw: Any, *, allow_special: bool = False) -> WorkloadEntry:
    obj = _mapping(raw, "workloadentry")
    meta = _mapping(obj.get("metadata"), "metadata")
    name = str(meta.get("name") or "").lower()
    namespace = str(meta.get("namespace") or "").lower()
    if not name:
        raise Invalid("workloadentry without metadata.name")
    spec = _mapping(obj.get("spec"), "spec")
    # A WorkloadEntry names one workload: its address is an IP, or a host name that a
    # DNS ServiceEntry answers as a CNAME.
    endpoint = _endpoint(spec, "spec", resolution="DNS", allow_special=allow_special)
    group = ""
    for ref in _list(meta.get("ownerReferences"), "metadata.ownerReferences", 16):
        if isinstance(ref, dict) and ref.get("kind") == "WorkloadGroup":
            group = str(ref.get("name") or "").lower()
    return WorkloadEntry(namespace=namespace, name=name, endpoint=endpoint,
                         healthy=_healthy(obj, meta), group=group)


def _seconds(value: Any, default: float, what: str) -> float:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 3600:
        raise Invalid(f"{what} {value!r} is not 1..3600 seconds")
    return float(value)


def _count(value: Any, default: int, what: str) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 100:
        raise Invalid(f"{what} {value!r} is not 1..100")
    return value


def probe(raw: Any) -> Probe | None:
    """A WorkloadGroup `probe`: httpGet and tcpSocket are run by us; exec (run by the
    Istio agent on the VM) is not ours to run, so it gives none."""
    d = _mapping(raw, "spec.probe")
    if not d:
        return None
    kind, target = ("http", d.get("httpGet")) if d.get("httpGet") is not None else \
        ("tcp", d.get("tcpSocket"))
    if target is None:
        return None
    t = _mapping(target, f"spec.probe.{'httpGet' if kind == 'http' else 'tcpSocket'}")
    port = t.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise Invalid(f"spec.probe port {port!r} is not a port number")
    path = str(t.get("path") or "/")
    if kind == "http" and (not path.startswith("/") or len(path) > 1024
                           or not path.isprintable() or " " in path):
        raise Invalid("spec.probe.httpGet.path is not an absolute path")
    # Kubernetes' probe defaults: every 10 s, 1 s timeout, 1 success, 3 failures.
    return Probe(kind=kind, port=port, path=path,
                 interval=_seconds(d.get("periodSeconds"), 10.0, "periodSeconds"),
                 timeout=_seconds(d.get("timeoutSeconds"), 1.0, "timeoutSeconds"),
                 healthy_threshold=_count(d.get("successThreshold"), 1, "successThreshold"),
                 unhealthy_threshold=_count(d.get("failureThreshold"), 3, "failureThreshold"))


def workload_group(raw: Any) -> WorkloadGroup:
    obj = _mapping(raw, "workloadgroup")
    meta = _mapping(obj.get("metadata"), "metadata")
    name = str(meta.get("name") or "").lower()
    if not name:
        raise Invalid("workloadgroup without metadata.name")
    spec = _mapping(obj.get("spec"), "spec")
    return WorkloadGroup(namespace=str(meta.get("namespace") or "").lower(), name=name,
                         probe=probe(spec.get("probe")))


ProbeHealth = Callable[[WorkloadEntry], bool]
"""Whether the probe of the entry's WorkloadGroup (if any) finds it healthy."""


def services(entries: Iterable[ServiceEntry], workloads: Iterable[WorkloadEntry], *,
             probed: ProbeHealth = lambda _w: True, max_endpoints: int = 1000,
             skip: Skip) -> dict[ServiceKey, ServiceData]:
    """One ServiceData per host of `entries`, keyed `("", host)`.

    Endpoints: each entry's own, then the WorkloadEntries of its namespace its selector
    matches. IP endpoints are answered as A/AAAA; when a host has none, its first
    host-name endpoint (resolution DNS) is answered as a CNAME. An entry with neither
    gives its hosts nothing (Istio resolves them elsewhere).
    """
    by_namespace: dict[str, list[WorkloadEntry]] = {}
    for w in workloads:
        by_namespace.setdefault(w.namespace, []).append(w)
    ports: dict[str, dict[tuple[str, str], Port]] = {}
    ips: dict[str, dict[str, Endpoint]] = {}
    cnames: dict[str, str] = {}
    for entry in sorted(entries, key=lambda e: (e.namespace, e.name)):
        members: list[tuple[EntryEndpoint, bool]] = [(ep, True) for ep in entry.endpoints]
        if entry.selector is not None:
            wanted = set(entry.selector)
            members += [(w.endpoint, w.healthy and probed(w))
                        for w in sorted(by_namespace.get(entry.namespace, ()),
                                        key=lambda w: w.name)
                        if wanted <= set(w.endpoint.labels)]
        made: list[Endpoint] = []
        target = ""
        for ep, ready in members:
            if not ep.is_ip:
                target = target or ep.address
                continue
            made.append(Endpoint(
                address=ep.address, cluster=entry.cluster, locality=ep.locality,
                ready=ready, labels=ep.labels, weight=ep.weight, serving=ready,
                ports=tuple(Port(p.name, dict(ep.ports).get(p.name, p.port), p.protocol)
                            for p in entry.ports) if ep.ports else None,
                network=ep.network, external=entry.external))
        if not made and not target:
            continue
        for host in entry.hosts:
            merged = ips.setdefault(host, {})
            for e in made:
                if len(merged) >= max_endpoints:
                    skip("too_many_endpoints", f"host {host}: more than {max_endpoints} "
                         "endpoints (limits.max_endpoints_per_service)")
                    break
                merged.setdefault(e.address, e)
            if target:
                cnames.setdefault(host, target)
            for p in entry.ports:
                ports.setdefault(host, {}).setdefault((p.name, p.protocol), p)
    out: dict[ServiceKey, ServiceData] = {}
    for host in ips.keys() | cnames.keys():
        endpoints = tuple(ips.get(host, {}).values())
        out[("", host)] = ServiceData(
            ports=tuple(ports.get(host, {}).values()), endpoints=endpoints,
            external_name="" if endpoints else cnames.get(host, ""))
    return out
