"""The server's lifetime: state, chain, listeners; signals; reload; shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys

from globaldns.chain import build
from globaldns.chain.globalzone import GlobalZone
from globaldns.config import Config, ConfigError, load
from globaldns.dns.server import DnsServer
from globaldns.dns.tcp import TcpConnections
from globaldns.dns.udp import UdpListener
from globaldns.registry.snapshot import Snapshot
from globaldns.registry.store import Store
from globaldns.sources import apply_static

log = logging.getLogger("globaldns")

# SIGTERM: in-flight TCP answers get this long; the whole exit stays under 5 s.
DRAIN_SECONDS = 3.0


class StartupError(Exception):
    """A one-line reason why the server cannot start."""


class App:
    def __init__(self, config: Config, *, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.store = Store()
        apply_static(self.store, config)
        self.snapshot = Snapshot(config, self.store)
        self.server = DnsServer(self.build_chain(config), nsid=self.instance(config).encode(),
                                max_inflight=config.dns.max_inflight)
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp: asyncio.Server | None = None
        self.tcp_connections: TcpConnections | None = None
        self.stopping = asyncio.Event()

    @staticmethod
    def instance(config: Config) -> str:
        return config.resolver.instance or socket.gethostname()

    def build_chain(self, config: Config):  # type: ignore[no-untyped-def]
        return build([GlobalZone(self.snapshot)])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        listen = self.config.dns.listen
        family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
        try:
            self.udp, _ = await loop.create_datagram_endpoint(
                lambda: UdpListener(self.server), local_addr=(listen.host, listen.port),
                family=family, reuse_port=self.config.dns.workers > 1)
            sock = self.udp.get_extra_info("socket")
            port = sock.getsockname()[1]
            self.tcp_connections = TcpConnections(
                self.server, idle_timeout=self.config.dns.tcp_idle_timeout,
                max_connections=self.config.dns.tcp_max_connections)
            self.tcp = await loop.create_server(
                self.tcp_connections.factory, host=listen.host, port=port, family=family,
                reuse_address=True, reuse_port=self.config.dns.workers > 1, backlog=1024)
        except OSError as exc:
            if self.udp is not None:
                self.udp.close()
            raise StartupError(f"cannot listen on {listen}: {exc.strerror or exc}") from exc
        self.port = port
        log.info("globaldns listening on %s:%d (udp+tcp), zones: %s", listen.host, port,
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
        apply_static(self.store, config)
        self.server.chain = self.build_chain(config)
        self.server.nsid = self.instance(config).encode()

    async def stop(self) -> None:
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


def run(config: Config, *, config_path: str | None = None) -> int:
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    app_box: list[App] = []

    async def main() -> None:
        app = App(config, config_path=config_path)
        app_box.append(app)
        await app.run()

    try:
        runner(main())
    except StartupError as exc:
        print(f"globaldns: {exc}", file=sys.stderr)
        return 1
    return 0
