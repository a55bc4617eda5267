"""The server's lifetime: state, chain, listeners; signals; reload; shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys

from globaldns.chain import Handler, build
from globaldns.chain.acl import DENY, Acl
from globaldns.chain.cache import Cache
from globaldns.chain.forward import Forward
from globaldns.chain.globalzone import GlobalZone
from globaldns.config import Config, ConfigError, load
from globaldns.dns.fastpath import WireCache
from globaldns.dns.server import DnsServer
from globaldns.dns.tcp import TcpConnections
from globaldns.dns.udp import UdpListener
from globaldns.healthcheck import HealthChecker
from globaldns.k8s.sources import KubernetesSources
from globaldns.k8s.watch import Timing
from globaldns.registry.snapshot import Snapshot
from globaldns.registry.store import Store
from globaldns.workers import Workers, follow

log = logging.getLogger("globaldns")

# SIGTERM: in-flight TCP answers get this long; the whole exit stays under 5 s.
DRAIN_SECONDS = 3.0


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
                 worker_index: int = 0) -> None:
        self.config = config
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
                                            timing=k8s_timing)
        self.workers: Workers | None = None
        self.server = DnsServer(self.build_chain(config), nsid=self.instance(config).encode(),
                                max_inflight=config.dns.max_inflight)
        self.server.wire = WireCache(self.client_class)
        self.snapshot.listeners.append(self.server.wire.forget)
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp: asyncio.Server | None = None
        self.tcp_connections: TcpConnections | None = None
        self.stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def _sync_changed(self) -> None:
        """Negative answers only from complete data: SERVFAIL until every cluster has
        listed once or sync_timeout has passed."""
        self.snapshot.set_synced(self.kubernetes.ready)
        if self.workers is not None:
            self.workers.synced(self.kubernetes.ready)

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
        self.acl = Acl(config.acl, forward=forward)
        handlers: list[Handler] = [self.acl, GlobalZone(self.snapshot)]
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
            forward = Forward(config.forward, served=served) if config.forward else None
            cache = None
            if old is not None:
                old.close()
        if cache is None or cache.config != config.cache:
            cache = Cache(config.cache) if forward is not None and config.cache.capacity \
                else None
        self.forward, self.cache = forward, cache
        return forward, cache

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
        self.tcp_connections = TcpConnections(
            self.server, idle_timeout=self.config.dns.tcp_idle_timeout,
            max_connections=self.config.dns.tcp_max_connections)
        self.tcp = await loop.create_server(self.tcp_connections.factory, sock=tcp_sock,
                                            backlog=1024)
        if self.channel_fd is not None:
            self._background(follow(self, self.channel_fd))
            return
        self.health.start()
        await self.kubernetes.start()
        if self.config.dns.workers > 1:
            self.workers = Workers(self, self.config.dns.workers, config_path=self.config_path)
            await self.workers.start(f"{listen}".rsplit(":", 1)[0] + f":{self.port}")
        log.info("globaldns listening on %s:%d (udp+tcp), zones: %s", listen.host, self.port,
                 ", ".join(z.name for z in self.config.zones))

    def reload(self) -> bool:
        """Load the config file again; keep the running config when the new one is bad."""
        if self.config_path is None:
            log.info("reload: running on the embedded default, nothing to reload")
            return False
        try:
            config = load(self.config_path)
        except ConfigError as exc:
            for line in exc.errors:
                log.error("reload rejected: %s", line)
            return False
        self.apply(config)
        log.info("reloaded %s", self.config_path)
        return True

    def apply(self, config: Config) -> None:
        self.config = config
        self.snapshot.rebuild(config)
        if self.channel_fd is None:
            self.health.apply(config)
            self._background(self.kubernetes.apply(config))
            if self.workers is not None:
                self.workers.reload()
        self.server.chain = self.build_chain(config)
        self.server.nsid = self.instance(config).encode()
        if self.server.wire is not None:
            self.server.wire.reset_classes()

    def _background(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
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

    async def run(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        print(f"globaldns ready on {self.config.dns.listen.host}:{self.port}", file=sys.stderr,
              flush=True)
        await self.stopping.wait()
        log.info("shutting down")
        await self.stop()


def run(config: Config, *, config_path: str | None = None, channel_fd: int | None = None,
        worker_index: int = 0) -> int:
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    app_box: list[App] = []

    async def main() -> None:
        app = App(config, config_path=config_path, channel_fd=channel_fd,
                  worker_index=worker_index)
        app_box.append(app)
        await app.run()

    try:
        runner(main())
    except StartupError as exc:
        print(f"globaldns: {exc}", file=sys.stderr)
        return 1
    return 0
