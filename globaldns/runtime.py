"""The live server: what queries read, what a reload swaps, and what the probes report.

A Runtime holds the registry (store, health checks, Kubernetes sources), the prepared
snapshot, the chain and the DNS server that runs it, the config origin (reloads), and the
state /ready reports: listening, synced, stale clusters, workers answering, shutting
down. The operations side (ops/: HTTP pages, metrics) and the worker processes read it;
`App` (app.py) owns only its lifetime: build, start, stop, signals.

`apply` is the one way a config comes in after start (SIGHUP, the file watcher, a worker
told by its main process): it swaps the parts in one go, on the loop, between two
queries, and restores the old config when the new one fails to apply.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from globaldns.answers.snapshot import Snapshot
from globaldns.chain.assembly import Chain
from globaldns.config import Config
from globaldns.dns.cookies import Cookies, read_secret_file
from globaldns.dns.fastpath import WireCache
from globaldns.dns.rate_limit import RateLimit
from globaldns.dns.server import DnsServer
from globaldns.dns.tcp import TcpConnections
from globaldns.registry.store import Store
from globaldns.reload import Reloads
from globaldns.sources.healthcheck import HealthChecker
from globaldns.sources.k8s.cluster import ClusterState
from globaldns.sources.k8s.fleet import KubernetesSources
from globaldns.sources.k8s.watch import Timing

log = logging.getLogger("globaldns")


class QueryLogCounts(Protocol):
    """What the metrics read of the query log (ops/querylog.py)."""

    @property
    def written(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def lost(self) -> int: ...


@dataclass(slots=True)
class Replicas:
    """The worker processes (dns.workers > 1), as the main process sees them."""

    wanted: int = 0
    """Worker processes beside the main one (dns.workers - 1)."""
    answering: set[int] = field(default_factory=set)
    """Indexes of the workers that listen and answered the last heartbeat."""
    stats: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Worker index → its last DNS counter summary (dns/stats.py)."""
    restarts: dict[str, int] = field(default_factory=lambda: {"exited": 0, "unresponsive": 0})
    """Workers started again, by why the previous one went."""


class Runtime:
    def __init__(self, config: Config, *, config_path: str | None = None,
                 follower: bool = False, worker_index: int = 0,
                 k8s_timing: Timing | None = None,
                 overrides: Callable[[Config], Config] | None = None,
                 cookie_master: bytes = b"") -> None:
        self.config = config
        self.follower = follower
        """A worker process: it follows the main process's registry and runs no source."""
        self.worker_index = worker_index
        self.overrides = overrides
        """The command line's settings, put over every reloaded config too."""
        self.store = Store()
        # The static source, with readiness from its active health checks.
        self.health = HealthChecker(self.store)
        if not follower:
            self.health.apply(config)
        self.snapshot = Snapshot(config, self.store)
        # Watched clusters (and remote-secret ones) write into the same store.
        self.kubernetes = KubernetesSources(config, self.store,
                                            on_sync_change=self._sync_changed,
                                            timing=k8s_timing, health=self.health)
        # No negative answer before the first list: the listeners open before the
        # watches start, and resolvers would cache an early NXDOMAIN.
        if not follower and (config.remote_secrets is not None
                             or any(c.watched for c in config.clusters)):
            self.snapshot.set_synced(False)
        self.chain = self._chain(config, None)
        self.server = DnsServer(self.chain.next, nsid=self.instance().encode(),
                                max_inflight=config.dns.max_inflight)
        self.server.wire = WireCache(self.client_class, stats=self.server.stats,
                                     max_bytes=config.cache.wire_max_bytes)
        self.snapshot.listeners.append(self.server.wire.forget)
        self.cookie_master = cookie_master
        """The key the cookie secrets derive from, the same in every process."""
        self._use_protection(config, None)
        self.tcp_connections: TcpConnections | None = None
        self.port = 0
        """The DNS port (0 until listening)."""
        self.shutting_down = False
        self.replicas = Replicas()
        self.querylog: QueryLogCounts | None = None
        self.on_state: list[Callable[[], None]] = []
        """Told when sync or stale state changed (the workers pass it on)."""
        self.on_apply: list[Callable[[Config], None]] = []
        """The lifetime's parts outside the Runtime (sources, query log, HTTP address,
        workers), told of every applied config."""
        self.reloads = Reloads(config_path, config, apply=self.apply,
                               interval=lambda: self.config.reload.interval)

    # --- what queries and pages read -------------------------------------------------

    def client_class(self, ip: str) -> int | None:
        return self.chain.client_class(ip)

    def instance(self) -> str:
        """The name NSID and id.server answer; workers add their index (`host/1`)."""
        return _instance(self.config, self.worker_index)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """/ready: DNS listening in every process, and every cluster listed once or
        sync_timeout passed."""
        if self.shutting_down:
            return False, {"ready": False, "reason": "shutting down"}
        if not self.port:
            return False, {"ready": False, "reason": "not listening yet"}
        replicas = self.replicas
        if len(replicas.answering) < replicas.wanted:
            return False, {"ready": False, "reason": (
                f"{len(replicas.answering) + 1} of {replicas.wanted + 1} processes answer "
                "(a worker is being replaced)")}
        sources = self.kubernetes
        clusters = {s.name: str(s.state) for s in sources.clusters()}
        if not sources.ready:
            waiting = sorted(s.name for s in sources.clusters() if not s.synced_once)
            discovery = sources.discovery_status()
            reason = ("clusters not synced: " + ", ".join(waiting)) if waiting else \
                "remote Secrets not listed yet" if discovery and not discovery["listed"] \
                else "clusters not started"
            return False, {"ready": False, "reason": reason, "clusters": clusters,
                           "sync_timeout": self.config.sync_timeout}
        detail: dict[str, Any] = {"ready": True, "clusters": clusters}
        if not sources.synced:
            detail["note"] = (f"sync_timeout ({self.config.sync_timeout:g}s) passed before "
                              "every cluster synced")
        return True, detail

    # --- sync and stale state -------------------------------------------------------------

    def _sync_changed(self) -> None:
        """Negative answers only from complete data: SERVFAIL until every cluster has
        listed once or sync_timeout has passed."""
        self.snapshot.set_synced(self.kubernetes.ready)
        # Answers with endpoints of an unreachable cluster say so (EDE 3, Stale Answer).
        self.snapshot.set_stale({
            s.name: f"unreachable ({(s.last_error or 'no answer')[:80]}): last known endpoints"
            for s in self.kubernetes.clusters() if s.state == ClusterState.STALE})
        for listener in self.on_state:
            listener()

    # --- applying a config ---------------------------------------------------------------

    def apply(self, config: Config) -> None:
        """Use a new config, between two queries. What cannot change without a restart
        (dns.listen, dns.workers) keeps its running value, with a warning; when applying
        fails the old config is applied again and the error raised."""
        old = self.config
        if self.overrides is not None:
            config = self.overrides(config)
        if (config.dns.listen, config.dns.workers) != (old.dns.listen, old.dns.workers):
            log.warning("reload: dns.listen and dns.workers need a restart; still %s, "
                        "%d worker(s)", old.dns.listen, old.dns.workers)
            config = dataclasses.replace(config, dns=dataclasses.replace(
                config.dns, listen=old.dns.listen, workers=old.dns.workers))
        try:
            self._apply(config)
        except Exception:
            log.exception("reload: applying the new config failed; restoring the old one")
            self._apply(old)
            raise

    def _apply(self, config: Config) -> None:
        old = self.config
        self._use_protection(config, old)
        self.config = config
        if _snapshot_part(config) != _snapshot_part(old):
            self.snapshot.rebuild(config)
        else:
            self.snapshot.config = config
        if not self.follower:
            self.health.apply(config)
        self.chain = self._chain(config, self.chain)
        self.server.chain = self.chain.next
        self.server.nsid = self.instance().encode()
        dns = config.dns
        self.server.max_inflight = dns.max_inflight
        if self.tcp_connections is not None:
            self.tcp_connections.idle_timeout = dns.tcp_idle_timeout
            self.tcp_connections.max_connections = dns.tcp_max_connections
            self.tcp_connections.message_timeout = dns.tcp_message_timeout
            self.tcp_connections.max_connections_per_client = dns.tcp_max_connections_per_client
            self.tcp_connections.max_inflight_per_connection = \
                dns.tcp_max_inflight_per_connection
        for listener in self.on_apply:
            listener(config)
        if self.server.wire is not None:
            self.server.wire.reset_classes()
            self.server.wire.max_bytes = config.cache.wire_max_bytes

    def _chain(self, config: Config, previous: Chain | None) -> Chain:
        return Chain.build(config, snapshot=self.snapshot, store=self.store,
                           instance=_instance(config, self.worker_index),
                           overloaded=self._overloaded, note=self.rate_limit_note,
                           previous=previous)

    def _use_protection(self, config: Config, old: Config | None) -> None:
        """Rate limiting and cookies as configured; the rate accounts survive a reload
        that leaves `rate_limit` as it was."""
        server = self.server
        rl = config.rate_limit
        if rl is None:
            server.rate_limit = None
        elif server.rate_limit is None or old is None or old.rate_limit != rl:
            server.rate_limit = RateLimit(
                responses=rl.responses_per_second, errors=rl.errors_per_second,
                nxdomains=rl.nxdomains_per_second, slip=rl.slip, window=rl.window,
                ipv4_prefix=rl.ipv4_prefix, ipv6_prefix=rl.ipv6_prefix, exempt=rl.exempt,
                table_size=rl.table_size, stats=server.stats)
        cookies = config.cookies
        server.cookies = None if not cookies.enabled else Cookies(
            master=self.cookie_master, rotate=cookies.rotate, stats=server.stats,
            secrets=read_secret_file(cookies.secret_file) if cookies.secret_file else ())

    def rate_limit_note(self, client: str) -> str:
        """Explain: whether this client is being rate limited now (this process's view)."""
        limit = self.server.rate_limit
        if limit is None:
            return "rate limit off"
        network = limit.network(client)
        if limit.prefix(client) is None:
            return f"rate limit: client {network}, never limited"
        limited = limit.limited(client)
        if not limited:
            return f"rate limit: client {network} is not limited"
        return f"rate limit: client {network} is being limited: " + "; ".join(limited[:5])

    def _overloaded(self) -> bool:
        return self.server.overloaded()


def _instance(config: Config, worker_index: int) -> str:
    name = config.resolver.instance or socket.gethostname()
    return f"{name}/{worker_index}" if worker_index else name


def _snapshot_part(config: Config) -> tuple[Any, ...]:
    """What the prepared answers are built from: a reload that changes none of it (only
    forwarding, logging, the ACL...) keeps the snapshot instead of rebuilding every name."""
    return (config.zones, config.resolver, config.client_localities, config.routing,
            config.services, config.aliases, config.clusters, config.dns.listen.host,
            config.serve_hosts)
