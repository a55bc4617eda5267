"""The configuration model. Every default lives here, with its reason."""

from __future__ import annotations

from dataclasses import dataclass, field

from globaldns.registry.istio import ServiceEntry
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
    # A query is a few hundred bytes: a client that needs more than 2 s to send one is
    # holding the slot (slow-loris), not asking.
    tcp_message_timeout: float = 2.0
    # A tenth of tcp_max_connections: one address (a pod, or a node-local cache speaking
    # for many) cannot take more than a tenth of the slots, and forwarders pipeline over
    # a few connections (RFC 7766 §6.2.1) rather than opening a hundred.
    tcp_max_connections_per_client: int = 100
    # One connection's queries waiting on upstreams; past it we stop reading from it, so
    # one pipelining client cannot take all of max_inflight.
    tcp_max_inflight_per_connection: int = 100
    # Queries waiting for the slow path (forwarding); beyond this we answer REFUSED.
    max_inflight: int = 1000
    workers: int = 1
    # CoreDNS's `health { lameduck 5s }`: after SIGTERM, keep answering this long while the
    # endpoint removal reaches every kube-proxy, so a rolling update drops no query.
    lameduck: float = 5.0
    # The main process pings each worker this often; three missed answers (a stopped or
    # stuck worker) and it is replaced. 1 s: a black-holed worker loses at most ~3 s.
    worker_heartbeat: float = 1.0


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
    # Loopback, link-local, unspecified and multicast addresses name no endpoint another
    # host can reach; a cluster whose pods really use them (a test rig) opts in.
    allow_special_addresses: bool = False
    # Every Service, as before export policies existed: a config that names no policy
    # keeps answering what it answered (the policy in force is logged once at start).
    export: str = "all"
    """`all`, `service_export` (a ServiceExport of the same name) or `labeled`
    (`globaldns.io/export: "true"`): which Services reach the registry (docs/mcs.md)."""
    # Reading ServiceImports needs the MCS CRDs and RBAC; only the cluster globaldns runs
    # in (whose MCS controller owns the clusterset IPs) has a reason to.
    service_imports: bool = False
    """Watch this cluster's ServiceImports: their clusterset IPs answer `clusterset.local`."""
    # Istio's kinds exist only where Istio is installed, and reading them needs RBAC the
    # base deployment does not grant: on where the operator says so.
    istio: bool = False
    """Also watch ServiceEntries, WorkloadEntries and WorkloadGroups (docs/istio.md)."""

    @property
    def watched(self) -> bool:
        return bool(self.kubeconfig) or self.in_cluster


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    # Kubernetes' EndpointSlice controller puts at most 1,000 endpoints in a slice and
    # `max_answers`-less DNS answers past that size help nobody; one service's update then
    # stays a few ms of loop time.
    max_endpoints_per_service: int = 1000
    # A watch event is one object; etcd refuses objects past 1.5 MB by default, so 8 MB is
    # never a real one (and bounds what one event can cost to parse).
    max_event_bytes: int = 8 * 1024 * 1024


DEFAULT_LIMITS = LimitsConfig()


@dataclass(frozen=True, slots=True)
class RemoteSecretsConfig:
    cluster: str
    namespace: str = "istio-system"
    label: str = "istio/multiCluster=true"
    # Whoever writes a Secret there would choose where our requests go: https with a
    # verified server only, unless the operator says otherwise (Istio's rule too).
    allow_insecure: bool = False


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    """An active probe of an endpoint's address: `http` (GET path, status in range) or `tcp`
    (connect). Defaults are Consul's and Route 53's usual ones."""

    kind: str
    port: int
    path: str = "/health"
    expect_status: tuple[int, int] = (200, 399)
    interval: float = 10.0
    timeout: float = 3.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3


@dataclass(frozen=True, slots=True)
class SubsetConfig:
    """A DestinationRule-style subset: `<name>.<service>.<namespace>.<zone>`."""

    name: str
    labels: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class StaticEndpoint:
    address: str
    cluster: str
    locality: Locality
    ready: bool = True
    hostname: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    weight: int = 1
    health_check: HealthCheckConfig | None = None


@dataclass(frozen=True, slots=True)
class StaticService:
    name: str
    namespace: str
    ports: tuple[Port, ...] = ()
    endpoints: tuple[StaticEndpoint, ...] = ()
    subsets: tuple[SubsetConfig, ...] = ()
    health_check: HealthCheckConfig | None = None


@dataclass(frozen=True, slots=True)
class ClientLocality:
    cidr: str
    locality: Locality


@dataclass(frozen=True, slots=True)
class ViewConfig:
    clients: tuple[str, ...] = ()
    localities: tuple[str, ...] = ()
    clusters: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class DistributeConfig:
    source: str
    """The `from` locality pattern (`us-central1/*`)."""
    to: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class FailoverConfig:
    source: str
    """The `from` region."""
    to: str


@dataclass(frozen=True, slots=True)
class RoutingRule:
    match: str
    distribute: tuple[DistributeConfig, ...] = ()
    failover: tuple[FailoverConfig, ...] = ()
    weights: tuple[tuple[str, int], ...] = ()
    views: tuple[ViewConfig, ...] = ()
    answer: str = "all"
    """`all`, or `best_tier`: only the leading tier (plus `spill` records of the next)."""
    spill: int = 0
    min_healthy: tuple[float, bool] = (0, False)
    """(value, is_percent): a cluster below this many ready endpoints counts as unhealthy."""
    panic_threshold: float = 0.0
    max_answers: int | None = None
    shuffle: bool = True
    subsets: tuple[SubsetConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class AliasConfig:
    name: str
    target: str
    mode: str = "cname"


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    zone: str
    """Lowercase, no trailing dot; "" is the root."""
    upstreams: tuple[ListenAddress, ...]
    policy: str = "random"
    """`random` spreads load; `round_robin` takes turns; `sequential` prefers the first."""
    # Per try. Two tries of 2 s end within dig's and glibc's 5 s, so the client sees our
    # SERVFAIL (or a stale answer) instead of timing out on its own.
    timeout: float = 2.0
    tries: int = 2
    # CoreDNS's forward plugin defaults: unhealthy after 2 failures, probed every 0.5 s.
    max_fails: int = 2
    probe_interval: float = 0.5
    """How often an unhealthy upstream is probed (CoreDNS calls it `health_check`)."""
    force_tcp: bool = False


@dataclass(frozen=True, slots=True)
class CacheConfig:
    # 10,000 answers of a few hundred bytes: a few MB.
    capacity: int = 10_000
    """0 turns the cache off."""
    # The forward cache's memory: 64 MB hold the 10,000 answers of `capacity` at their
    # usual few hundred bytes with room to spare, and stop 64 KB answers (what one can
    # ask for over TCP) at about 1,000 instead of 640 MB.
    max_bytes: int = 64 << 20
    # The wire cache (replies to repeated UDP queries, kept as bytes): an entry costs about
    # 600 bytes beside its reply bytes, so 32 MB keep some 30,000 query shapes (names x
    # types x EDNS or not x client classes), far more than a fleet's working set; past it
    # the cache starts over and refills at one slow path per query shape.
    wire_max_bytes: int = 32 << 20
    min_ttl: int = 0
    # An upstream's one-week TTL should not pin a changed record for a week.
    max_ttl: int = 3600
    prefetch: bool = True
    # RFC 8767 suggests 1 to 3 days; an hour rides out an upstream outage without serving
    # long-dead data.
    serve_stale: int = 3600


# Loopback and private ranges (RFC 1918, RFC 4193): never an open resolver by default.
PRIVATE_NETWORKS = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12",
                    "192.168.0.0/16", "fc00::/7")


# The CHAOS-class explain answers show the whole routing decision: only this host by default.
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True, slots=True)
class AclConfig:
    allow_recursion: tuple[str, ...] = PRIVATE_NETWORKS
    allow_query: tuple[str, ...] = PRIVATE_NETWORKS
    allow_debug: tuple[str, ...] = LOOPBACK_NETWORKS
    """Clients that may ask `CH TXT <name>` for an explanation of the answer."""
    ecs_from: tuple[str, ...] | None = None
    """Clients whose EDNS Client Subnet is honoured; ECS from others is ignored (answered
    as if absent). None: the clients of `allow_query`, since behind CoreDNS every client
    is a resolver that stamps ECS. A view chosen by ECS is routing, not access control."""


@dataclass(frozen=True, slots=True)
class HttpConfig:
    # CoreDNS's metrics port. Loopback: /debug/* shows the whole registry and routing.
    listen: ListenAddress | None = ListenAddress("127.0.0.1", 9153)
    """None (`listen: ""`): no HTTP endpoint at all."""
    # Probes and scrapers send their request line and headers at once; a connection that
    # has not within 5 s (half the default Prometheus scrape timeout) is holding a slot.
    header_timeout: float = 5.0
    # Kubelet probes, a few Prometheus replicas and a human need a handful; 100 leaves
    # room and caps what 200 half-sent requests would hold.
    max_connections: int = 100


@dataclass(frozen=True, slots=True)
class LogConfig:
    queries: bool = False
    """One JSON line per query; off by default (it costs more than answering)."""
    sample: float = 1.0
    """The fraction of queries logged (0..1)."""
    file: str = ""
    """Where the lines go; empty means standard output (what a container runtime collects)."""


@dataclass(frozen=True, slots=True)
class ReloadConfig:
    # CoreDNS's reload plugin checks every 30 s; a stat() every 5 s costs nothing and a
    # ConfigMap update (which kubelet itself syncs within about a minute) lands sooner.
    interval: float = 5.0
    """0: do not watch the file (SIGHUP still reloads)."""


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """BIND's RRL defaults where BIND has them (its ARM's examples), per client prefix and
    answer. Off unless `rate_limit:` is in the config."""

    # A stub or a pod asks the same name and type far less than this; a resolver behind a
    # /24 gets 100 copies of one answer a second, which its own cache makes plenty.
    responses_per_second: int = 100
    # Errors and NXDOMAINs are what a reflection attack or a random-subdomain flood
    # produces; honest clients get few of them.
    errors_per_second: int = 20
    nxdomains_per_second: int = 20
    # BIND's default: every second limited reply goes out empty with TC, so a real client
    # behind a spoofed flood still gets through over TCP.
    slip: int = 2
    # BIND's default: a flooding client is owed at most 15 s of credit.
    window: float = 15.0
    # BIND's defaults: one account per /24 and /56, the sizes handed to one site.
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56
    exempt: tuple[str, ...] = LOOPBACK_NETWORKS
    # BIND's max-table-size default; about 240 bytes an account: under 5 MB.
    table_size: int = 20_000


@dataclass(frozen=True, slots=True)
class CookiesConfig:
    # RFC 7873: answering client cookies costs nothing to clients without one, and lets a
    # client with a valid server cookie pass the rate limit and take large UDP replies.
    enabled: bool = True
    secret_file: str = ""
    """One or two lines of 32 hex digits (the secret, then the previous one); empty: a
    random secret made at start, shared by the workers and rotated every `rotate`."""
    # RFC 7873 7.1 asks for a secret changed now and then; a day, with the previous day's
    # accepted, outlives any cookie (RFC 9018 4.3: valid for an hour).
    rotate: float = 86400.0


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
    client_localities: tuple[ClientLocality, ...] = ()
    routing: tuple[RoutingRule, ...] = ()
    aliases: tuple[AliasConfig, ...] = ()
    forward: tuple[ForwardConfig, ...] = ()
    cache: CacheConfig = CacheConfig()
    acl: AclConfig = AclConfig()
    http: HttpConfig = HttpConfig()
    log: LogConfig = LogConfig()
    reload: ReloadConfig = ReloadConfig()
    limits: LimitsConfig = LimitsConfig()
    # Names outside every zone are the upstreams' to answer: a ServiceEntry host outside
    # the zones is served only where the operator names it (docs/istio.md).
    serve_hosts: tuple[str, ...] = ()
    """Host names, or `*.domain` patterns, of ServiceEntry hosts answered outside the zones."""
    service_entries: tuple[ServiceEntry, ...] = ()
    """ServiceEntry-shaped items of the config: Istio's meaning without Istio."""
    rate_limit: RateLimitConfig | None = None
    cookies: CookiesConfig = CookiesConfig()

    def cluster(self, name: str) -> ClusterConfig | None:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        return None
