"""The server's lifetime: state, chain, listeners; signals; reload; shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from globaldns.answers.explain import explain, lines
from globaldns.answers.snapshot import Snapshot
from globaldns.chain import Handler, build
from globaldns.chain.acl import DENY, Acl
from globaldns.chain.cache import Cache
from globaldns.chain.chaos import Chaos
from globaldns.chain.forward import Forward
from globaldns.chain.globalzone import GlobalZone
from globaldns.config import Config
from globaldns.dns.cookies import Cookies, read_secret_file
from globaldns.dns.fastpath import WireCache
from globaldns.dns.message import Query
from globaldns.dns.rate_limit import RateLimit
from globaldns.dns.server import DnsServer
from globaldns.dns.tcp import TcpConnections
from globaldns.dns.udp import UdpListener
from globaldns.ops.http import HttpServer
from globaldns.ops.metrics import Metrics
from globaldns.ops.querylog import QueryLog
from globaldns.registry.store import Store
from globaldns.reload import Reloads
from globaldns.sources.healthcheck import HealthChecker
from globaldns.sources.k8s.cluster import ClusterState
from globaldns.sources.k8s.fleet import KubernetesSources
from globaldns.sources.k8s.watch import Timing
from globaldns.workers import Workers, first_message, follow

log = logging.getLogger("globaldns")

# SIGTERM: in-flight TCP answers get this long; the whole exit stays under 5 s.
DRAIN_SECONDS = 3.0
# UDP receive buffer asked for: queries arriving while the loop is busy (a config reload
# applying, a registry burst) wait in the kernel instead of being dropped. The kernel
# caps it at net.core.rmem_max.
UDP_RCVBUF = 4 << 20


class StartupError(Exception):
    """A one-line reason why the server cannot start."""


def bind_sockets(host: str, port: int, *, reuse_port: bool) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets on the same address and port (port 0: the UDP socket's port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp = socket.socket(family, socket.SOCK_STREAM)
    try:
        for sock in (udp, tcp):
            sock.setblocking(False)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):  # the default buffer still works
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        udp.bind((host, port))
        tcp.bind((host, udp.getsockname()[1]))
    except OSError:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


class App:
    def __init__(self, config: Config, *, config_path: str | None = None,
                 k8s_timing: Timing | None = None, channel_fd: int | None = None,
                 worker_index: int = 0,
                 overrides: Callable[[Config], Config] | None = None) -> None:
        self.config = config
        self.overrides = overrides
        """The command line's settings, put over every reloaded config too."""
        self.config_path = config_path
        self.channel_fd = channel_fd
        self.worker_index = worker_index
        """A worker process (dns.workers > 1) follows the main's registry on this fd and
        runs no source of its own."""
        self.store = Store()
        # The static source, with readiness from its active health checks.
        self.health = HealthChecker(self.store)
        if channel_fd is None:
            self.health.apply(config)
        self.snapshot = Snapshot(config, self.store)
        # Watched clusters (and remote-secret ones) write into the same store.
        self.kubernetes = KubernetesSources(config, self.store,
                                            on_sync_change=self._sync_changed,
                                            timing=k8s_timing, health=self.health)
        # No negative answer before the first list: the listeners open before the
        # watches start, and resolvers would cache an early NXDOMAIN.
        if channel_fd is None and (config.remote_secrets is not None
                                   or any(c.watched for c in config.clusters)):
            self.snapshot.set_synced(False)
        self.workers: Workers | None = None
        self.server = DnsServer(self.build_chain(config), nsid=self.instance(config).encode(),
                                max_inflight=config.dns.max_inflight)
        self.server.wire = WireCache(self.client_class, stats=self.server.stats,
                                     max_bytes=config.cache.wire_max_bytes)
        self.snapshot.listeners.append(self.server.wire.forget)
        # The key the cookie secrets derive from: made by the main process, sent to each
        # worker before it starts, so every process accepts every other's cookies.
        self.cookie_master = os.urandom(32) if channel_fd is None \
            else first_message(channel_fd)[1]
        self._use_protection(config)
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp: asyncio.Server | None = None
        self.tcp_connections: TcpConnections | None = None
        self.port = 0
        self.stopping = asyncio.Event()
        self.shutting_down = False
        self._tasks: set[asyncio.Task[None]] = set()
        # Operations: metrics, the HTTP endpoint, the query log, reloads.
        self.metrics = Metrics(self)
        self.http = HttpServer(self)
        self.querylog: QueryLog | None = None
        self._use_querylog(config)
        self.reloads = Reloads(config_path, config, apply=self.apply,
                               interval=lambda: self.config.reload.interval)

    def _sync_changed(self) -> None:
        """Negative answers only from complete data: SERVFAIL until every cluster has
        listed once or sync_timeout has passed."""
        self.snapshot.set_synced(self.kubernetes.ready)
        if self.workers is not None:
            self.workers.synced(self.kubernetes.ready)
        # Answers with endpoints of an unreachable cluster say so (EDE 3, Stale Answer).
        stale = {
            s.name: f"unreachable ({(s.last_error or 'no answer')[:80]}): last known endpoints"
            for s in self.kubernetes.clusters() if s.state == ClusterState.STALE}
        if stale != self.snapshot.stale and self.workers is not None:
            self.workers.stale(stale)
        self.snapshot.set_stale(stale)

    def client_class(self, ip: str) -> int | None:
        """What a client's replies depend on: its ACL decision and its routing profile."""
        decision = self.acl.decide(ip)
        if decision == DENY:
            return None
        return decision << 24 | self.snapshot.locator.locate(ip, None).id

    def instance(self, config: Config) -> str:
        """The name NSID and id.server answer; workers add their index (`host/1`)."""
        name = config.resolver.instance or socket.gethostname()
        return f"{name}/{self.worker_index}" if self.worker_index else name

    def build_chain(self, config: Config):  # type: ignore[no-untyped-def]
        forward, cache = self._forwarding(config)
        old_acl: Acl | None = getattr(self, "acl", None)
        self.acl = Acl(config.acl, forward=forward)
        old_chaos: Chaos | None = getattr(self, "chaos", None)
        self.chaos = Chaos(instance=self.instance(config), allow_debug=config.acl.allow_debug,
                           explain=self._explain_lines)
        # Counters run on across reloads (the handlers are rebuilt, the counts are ours).
        if old_acl is not None:
            self.acl.refused_queries = old_acl.refused_queries
            self.acl.refused_recursion = old_acl.refused_recursion
            self.acl.ecs_ignored = old_acl.ecs_ignored
        if old_chaos is not None:
            self.chaos.answers, self.chaos.refused = old_chaos.answers, old_chaos.refused
        handlers: list[Handler] = [self.acl, GlobalZone(self.snapshot), self.chaos]
        if cache is not None:
            handlers.append(cache)
        if forward is not None:
            handlers.append(forward)
        return build(handlers)

    def _forwarding(self, config: Config) -> tuple[Forward | None, Cache | None]:
        """The forwarder and its cache: kept (warm, with upstream health) across a reload
        that does not change them, else replaced and the old forwarder closed."""
        old: Forward | None = getattr(self, "forward", None)
        cache: Cache | None = getattr(self, "cache", None)
        served = tuple(z.name for z in config.zones)
        forward = old
        if old is None or old.configs != config.forward or old.served != served:
            forward = Forward(config.forward, served=served,
                              overloaded=self._overloaded) if config.forward else None
            cache = None
            if old is not None:
                self._close_later(old)
        if cache is None or cache.config != config.cache:
            cache = Cache(config.cache) if forward is not None and config.cache.capacity \
                else None
        self.forward, self.cache = forward, cache
        return forward, cache

    def _overloaded(self) -> bool:
        return self.server.overloaded()

    def _close_later(self, old: Forward) -> None:
        """A replaced forwarder: queries in flight on it finish (they have at most
        timeout * tries left) before its connections and probes close."""
        grace = max((c.timeout * c.tries for c in old.configs), default=0.0) + 1.0
        try:
            asyncio.get_running_loop().call_later(grace, old.close)
        except RuntimeError:  # no loop running (not started yet)
            old.close()

    def _explain_lines(self, q: Query) -> list[str] | None:
        """The CHAOS TXT explanation of q's name for q's client (None: not ours)."""
        if self.snapshot.zone_of(q.qname) is None:
            return None
        report = explain(self.snapshot, self.store, q.name, client=q.client[0], ecs=q.ecs)
        report.setdefault("notes", []).append(self.rate_limit_note(q.client[0]))
        return lines(report)

    def _use_protection(self, config: Config) -> None:
        """Rate limiting and cookies as configured; the rate accounts survive a reload
        that leaves `rate_limit` as it was."""
        server = self.server
        rl = config.rate_limit
        if rl is None:
            server.rate_limit = None
        elif server.rate_limit is None or self.config.rate_limit != rl:
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

    def _use_querylog(self, config: Config) -> None:
        old = self.querylog
        if old is not None and old.config == config.log:
            return
        if old is not None:
            self.server.observers.remove(old.observe)
            old.close(wait=False)  # its thread finishes the buffered lines on its own
            self.querylog = None
        if config.log.queries:
            self.querylog = QueryLog(config.log)
            self.server.observers.append(self.querylog.observe)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """/ready: DNS listening, and every cluster listed once or sync_timeout passed."""
        if self.shutting_down:
            return False, {"ready": False, "reason": "shutting down"}
        if self.udp is None:
            return False, {"ready": False, "reason": "not listening yet"}
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

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        listen = self.config.dns.listen
        try:
            udp_sock, tcp_sock = bind_sockets(listen.host, listen.port,
                                              reuse_port=self.config.dns.workers > 1)
        except OSError as exc:
            raise StartupError(f"cannot listen on {listen}: {exc.strerror or exc}") from exc
        self.port = udp_sock.getsockname()[1]
        self.udp, _ = await loop.create_datagram_endpoint(lambda: UdpListener(self.server),
                                                          sock=udp_sock)
        dns = self.config.dns
        self.tcp_connections = TcpConnections(
            self.server, idle_timeout=dns.tcp_idle_timeout,
            max_connections=dns.tcp_max_connections, message_timeout=dns.tcp_message_timeout,
            max_connections_per_client=dns.tcp_max_connections_per_client,
            max_inflight_per_connection=dns.tcp_max_inflight_per_connection)
        self.tcp = await loop.create_server(self.tcp_connections.factory, sock=tcp_sock,
                                            backlog=1024)
        http = self.config.http.listen
        if http is not None and self.channel_fd is None:
            try:
                await self.http.start(http)
            except OSError as exc:
                self.udp.close()
                self.tcp.close()
                raise StartupError(f"cannot listen on {http} (http.listen): "
                                   f"{exc.strerror or exc}") from exc
        if self.channel_fd is not None:
            self._background(follow(self, self.channel_fd))
            return
        self.health.start()
        self.reloads.start()
        await self.kubernetes.start()
        if self.config.dns.workers > 1:
            self.workers = Workers(self, self.config.dns.workers, config_path=self.config_path)
            await self.workers.start(f"{listen}".rsplit(":", 1)[0] + f":{self.port}")
        log.info("globaldns listening on %s:%d (udp+tcp), zones: %s", listen.host, self.port,
                 ", ".join(z.name for z in self.config.zones))

    def reload(self) -> bool:
        """Load the config file again now; keep the running config when the new one is bad.
        (SIGHUP and the file watcher do the same without blocking: `reloads.reload`.)"""
        return self.reloads.reload_now(why="reload")

    def _sighup(self) -> None:
        self._background(self.reloads.reload(why="SIGHUP"))

    def apply(self, config: Config) -> None:
        """Use a new config, on the loop, between two queries. What cannot change without
        a restart (dns.listen, dns.workers) keeps its running value, with a warning."""
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
        self._use_protection(config)
        self.config = config
        if _snapshot_part(config) != _snapshot_part(old):
            self.snapshot.rebuild(config)
        else:
            self.snapshot.config = config
        if self.channel_fd is None:
            self.health.apply(config)
            self._background(self.kubernetes.apply(config))
            if self.workers is not None:
                self.workers.reload()
            if self.udp is not None and config.http.listen != self.http.listen:
                self._background(self.http.move(config.http.listen))
        self.server.chain = self.build_chain(config)
        self.server.nsid = self.instance(config).encode()
        self.server.max_inflight = config.dns.max_inflight
        if self.tcp_connections is not None:
            self.tcp_connections.idle_timeout = config.dns.tcp_idle_timeout
            self.tcp_connections.max_connections = config.dns.tcp_max_connections
            self.tcp_connections.message_timeout = config.dns.tcp_message_timeout
            self.tcp_connections.max_connections_per_client = \
                config.dns.tcp_max_connections_per_client
            self.tcp_connections.max_inflight_per_connection = \
                config.dns.tcp_max_inflight_per_connection
        self._use_querylog(config)
        if self.server.wire is not None:
            self.server.wire.reset_classes()
            self.server.wire.max_bytes = config.cache.wire_max_bytes

    def _background(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        self.shutting_down = True  # /ready answers 503 from now on
        await self.reloads.stop()
        if self.workers is not None:
            await self.workers.stop()
        await self.kubernetes.stop()
        await self.health.stop()
        if self.forward is not None:
            self.forward.close()
        if self.tcp is not None:
            self.tcp.close()
        if self.udp is not None:
            self.udp.close()
        if self.tcp_connections is not None:
            await self.tcp_connections.drain(DRAIN_SECONDS)
        await self.http.stop()
        if self.querylog is not None:
            await asyncio.to_thread(self.querylog.close)

    async def run(self) -> None:
        await self.start()
        # What exists at start (modules, config, the first snapshot) lives as long as the
        # process: keep it out of the collector's full passes, which otherwise pause the
        # loop for tens of milliseconds on a large registry.
        gc.freeze()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._sighup)
        print(f"globaldns ready on {self.config.dns.listen.host}:{self.port}", file=sys.stderr,
              flush=True)
        await self.stopping.wait()
        log.info("shutting down")
        await self.stop()


def run(config: Config, *, config_path: str | None = None, channel_fd: int | None = None,
        worker_index: int = 0, overrides: Callable[[Config], Config] | None = None) -> int:
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    app_box: list[App] = []

    async def main() -> None:
        app = App(config, config_path=config_path, channel_fd=channel_fd,
                  worker_index=worker_index, overrides=overrides)
        app_box.append(app)
        await app.run()

    try:
        runner(main())
    except StartupError as exc:
        print(f"globaldns: {exc}", file=sys.stderr)
        return 1
    return 0


def _snapshot_part(config: Config) -> tuple[Any, ...]:
    """What the prepared answers are built from: a reload that changes none of it (only
    forwarding, logging, the ACL...) keeps the snapshot instead of rebuilding every name."""
    return (config.zones, config.resolver, config.client_localities, config.routing,
            config.services, config.aliases, config.clusters, config.dns.listen.host,
            config.serve_hosts)
