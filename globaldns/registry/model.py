"""The registry's records: what a source says about one service.

Every source (static config, a Kubernetes cluster, an Istio source, health checks)
speaks in these frozen records; names are lowercased once, here, at the edge.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import NamedTuple

ServiceKey = tuple[str, str]
"""(namespace, name), lowercased."""


class Locality(NamedTuple):
    """Istio's `region/zone/subzone`; empty strings for the parts not known."""

    region: str = ""
    zone: str = ""
    subzone: str = ""

    @classmethod
    def parse(cls, text: str | None) -> Locality:
        if not text:
            return cls()
        parts = text.strip("/").split("/")
        if len(parts) > 3 or any(not p for p in parts):
            raise ValueError(f"{text!r} is not a locality of the form region[/zone[/subzone]]")
        return cls(*parts)

    def __str__(self) -> str:
        return "/".join(p for p in self if p)


@dataclass(frozen=True, slots=True)
class Port:
    name: str
    port: int
    protocol: str = "tcp"
    """Lowercase `tcp` or `udp` (as in the SRV name `_name._tcp`)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    """Canonical text form of an IPv4 or IPv6 address."""
    cluster: str
    locality: Locality = Locality()
    ready: bool = True
    hostname: str = ""
    node_name: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    weight: int = 1
    serving: bool = True
    terminating: bool = False
    ports: tuple[Port, ...] | None = None
    """Ports of this endpoint when they differ from the service's (EndpointSlice ports)."""
    network: str = ""
    """Istio's network of the endpoint (ServiceEntry and WorkloadEntry `network`)."""
    external: bool = False
    """From a ServiceEntry with `location: MESH_EXTERNAL`: outside the mesh."""

    @property
    def family(self) -> int:
        return 6 if ":" in self.address else 4

    def label(self) -> str:
        """The DNS label naming this endpoint: its hostname, else its address with dashes."""
        if self.hostname:
            return self.hostname.lower()
        return self.address.replace(".", "-").replace(":", "-")


@dataclass(frozen=True, slots=True)
class ServicePolicy:
    """A service's own routing, from its annotations (`globaldns.io/strategy`...): it
    overrides the config's `routing` rule for that service (docs/mcs.md)."""

    origin: str
    """Where it was read, e.g. `k8s/east Service prod/web`."""
    strategy: str = ""
    """`failover`, `distribute`, `weighted`, `geo`, or "" (the rule's own)."""
    primary_cluster: str = ""
    weights: tuple[tuple[str, int], ...] = ()
    ttl: int | None = None


@dataclass(frozen=True, slots=True)
class ServiceImport:
    """A ServiceImport of the cluster globaldns runs in (KEP-1645)."""

    headless: bool
    ips: tuple[str, ...] = ()
    """The clusterset IPs (canonical), for a `ClusterSetIP` import."""


@dataclass(frozen=True, slots=True)
class ServiceData:
    """What one source knows about one service."""

    ports: tuple[Port, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    external_name: str = ""
    """A Kubernetes ExternalName service: answered with a CNAME to this name."""
    labels: tuple[tuple[str, str], ...] = field(default=())
    policy: ServicePolicy | None = None
    imported: ServiceImport | None = None
    service: bool = True
    """False when the source knows only a ServiceImport of this name (no Service, no
    slices): the name then exists in `clusterset.local` only."""


_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_CLUSTER = re.compile(r"[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?")


def is_label(text: str) -> bool:
    """A DNS-1123 label (what Kubernetes names a Service, namespace or hostname with):
    lowercase letters, digits and inner '-', 1 to 63 bytes."""
    return _LABEL.fullmatch(text) is not None


def is_cluster_name(text: str) -> bool:
    """A cluster name: one DNS label (as config's `clusters[].name`, '_' allowed)."""
    return _CLUSTER.fullmatch(text) is not None


def is_special(address: str) -> bool:
    """Loopback, link-local, unspecified or multicast (IPv4-mapped IPv6 too): an
    address that names no endpoint reachable from another host. `address` is canonical."""
    if ":" not in address:  # canonical IPv4: the cheap test, run per endpoint
        first, _, rest = address.partition(".")
        n = int(first)
        return (n == 127 or 224 <= n <= 239 or address == "0.0.0.0"
                or (n == 169 and rest.startswith("254.")))
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast


def canonical_ip(text: str) -> str:
    """The canonical text of an IP address; ValueError when it is none."""
    return str(ipaddress.ip_address(text))
