"""The configuration model. Every default lives here, with its reason."""

from __future__ import annotations

from dataclasses import dataclass, field

from globaldns.registry.model import Locality, Port


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class DnsConfig:
    # 5353 needs no privileges; CoreDNS forwards the `global` stub domain to any port.
    listen: ListenAddress = ListenAddress("127.0.0.1", 5353)
    # RFC 7766 6.2.3: servers close idle connections; 10 s matches common practice.
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 1000
    # Queries waiting for the slow path (forwarding); beyond this we answer REFUSED.
    max_inflight: int = 1000
    workers: int = 1


@dataclass(frozen=True, slots=True)
class ResolverConfig:
    locality: Locality = Locality()
    instance: str = ""
    """NSID and id.server answer; empty means the host name."""


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    name: str
    # Short TTLs: endpoints change often, and resolvers in front of us cache.
    ttl: int = 5
    negative_ttl: int = 5
    max_answers: int = 0
    on_all_unhealthy: str = "all"
    """`all`: fail open and answer every endpoint (Route 53); `none`: answer nothing."""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    name: str
    locality: Locality = Locality()
    kubeconfig: str = ""
    context: str = ""
    in_cluster: bool = False
    namespaces: tuple[str, ...] = ()
    label_selector: str = ""
    # Serve the last known endpoints of an unreachable cluster for 5 minutes: long enough
    # to ride out an API server upgrade, short enough not to send traffic to a dead region.
    stale_for: float = 300.0
    # The API server sends a bookmark about every minute; silence past 90 s means broken.
    watch_idle_timeout: float = 90.0

    @property
    def watched(self) -> bool:
        return bool(self.kubeconfig) or self.in_cluster


@dataclass(frozen=True, slots=True)
class RemoteSecretsConfig:
    cluster: str
    namespace: str = "istio-system"
    label: str = "istio/multiCluster=true"


@dataclass(frozen=True, slots=True)
class StaticEndpoint:
    address: str
    cluster: str
    locality: Locality
    ready: bool = True
    hostname: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    weight: int = 1


@dataclass(frozen=True, slots=True)
class StaticService:
    name: str
    namespace: str
    ports: tuple[Port, ...] = ()
    endpoints: tuple[StaticEndpoint, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    source: str = "<embedded default>"
    dns: DnsConfig = DnsConfig()
    resolver: ResolverConfig = ResolverConfig()
    zones: tuple[ZoneConfig, ...] = (ZoneConfig("global"),)
    clusters: tuple[ClusterConfig, ...] = ()
    remote_secrets: RemoteSecretsConfig | None = None
    # Readiness waits at most this long for every cluster's first list.
    sync_timeout: float = 30.0
    services: tuple[StaticService, ...] = field(default=())

    def cluster(self, name: str) -> ClusterConfig | None:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        return None
