"""One process's lifetime: build, start, signals (SIGTERM lameduck, SIGHUP reload), stop.

What the process serves lives in the Runtime (runtime.py); App opens its listeners, starts
its sources (or, in a worker, follows the main process) and the operations side (HTTP,
metrics, query log), and takes it all down again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable

from globaldns.config import Config
from globaldns.dns.tcp import TcpConnections
from globaldns.dns.udp import UdpListener
from globaldns.ops.http import HttpServer
from globaldns.ops.metrics import Metrics
from globaldns.ops.querylog import QueryLog
from globaldns.runtime import Runtime
from globaldns.sources.k8s.watch import Timing
from globaldns.workers import Follower, Workers, first_message

log = logging.getLogger("globaldns")

# After the lameduck period, queries in flight (forwarded ones and TCP answers) get this
# long: the exit stays within dns.lameduck + 5 s (deploy/kubernetes's grace period).
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
    """One process's lifetime: build the Runtime and its listeners, start the sources (or,
    in a worker, follow the main process), stop on SIGTERM after the lameduck period."""

    def __init__(self, config: Config, *, config_path: str | None = None,
                 k8s_timing: Timing | None = None, channel_fd: int | None = None,
                 worker_index: int = 0,
                 overrides: Callable[[Config], Config] | None = None) -> None:
        self.channel_fd = channel_fd
        """A worker process (dns.workers > 1) follows the main's registry on this fd and
        runs no source of its own."""
        # The key the cookie secrets derive from: made by the main process, sent to each
        # worker before it starts, so every process accepts every other's cookies.
        cookie_master = os.urandom(32) if channel_fd is None \
            else first_message(channel_fd)[1]
        self.runtime = runtime = Runtime(config, config_path=config_path,
                                         follower=channel_fd is not None,
                                         worker_index=worker_index, k8s_timing=k8s_timing,
                                         overrides=overrides, cookie_master=cookie_master)
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp: asyncio.Server | None = None
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self.workers: Workers | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Operations: metrics, the HTTP endpoint, the query log.
        self.metrics = Metrics(runtime)
        self.http = HttpServer(runtime, self.metrics)
        self.querylog: QueryLog | None = None
        self._use_querylog(config)
        runtime.on_apply.append(self._applied)

    def _applied(self, config: Config) -> None:
        """A new config reached the Runtime: the parts it does not hold follow."""
        if self.channel_fd is None:
            self._background(self.runtime.kubernetes.apply(config))
            if self.workers is not None:
                self.workers.reload()
            if self.udp is not None and config.http.listen != self.http.listen:
                self._background(self.http.move(config.http.listen))
        self._use_querylog(config)

    def _use_querylog(self, config: Config) -> None:
        old, server = self.querylog, self.runtime.server
        if old is not None and old.config == config.log:
            return
        if old is not None:
            server.observers.remove(old.observe)
            old.close(wait=False)  # its thread finishes the buffered lines on its own
            self.querylog = None
        if config.log.queries:
            self.querylog = QueryLog(config.log)
            server.observers.append(self.querylog.observe)
        self.runtime.querylog = self.querylog

    async def start(self) -> None:
        runtime = self.runtime
        config = runtime.config
        loop = asyncio.get_running_loop()
        follower = None
        if self.channel_fd is not None:
            follower = await Follower.connect(runtime, self.channel_fd)
            try:
                await follower.catch_up()
            except Exception as exc:
                log.exception("worker: following the main process failed; exiting")
                raise StartupError(f"worker: cannot follow the main process: {exc}") from exc
        listen = config.dns.listen
        try:
            udp_sock, tcp_sock = bind_sockets(listen.host, listen.port,
                                              reuse_port=config.dns.workers > 1)
        except OSError as exc:
            raise StartupError(f"cannot listen on {listen}: {exc.strerror or exc}") from exc
        self.udp, _ = await loop.create_datagram_endpoint(
            lambda: UdpListener(runtime.server), sock=udp_sock)
        dns = config.dns
        runtime.tcp_connections = TcpConnections(
            runtime.server, idle_timeout=dns.tcp_idle_timeout,
            max_connections=dns.tcp_max_connections, message_timeout=dns.tcp_message_timeout,
            max_connections_per_client=dns.tcp_max_connections_per_client,
            max_inflight_per_connection=dns.tcp_max_inflight_per_connection)
        self.tcp = await loop.create_server(runtime.tcp_connections.factory, sock=tcp_sock,
                                            backlog=1024)
        runtime.port = udp_sock.getsockname()[1]
        http = config.http.listen
        if http is not None and self.channel_fd is None:
            try:
                await self.http.start(http)
            except OSError as exc:
                self.udp.close()
                self.tcp.close()
                raise StartupError(f"cannot listen on {http} (http.listen): "
                                   f"{exc.strerror or exc}") from exc
        if follower is not None:
            self._background(self._follow(follower))
            return
        runtime.health.start()
        runtime.reloads.start()
        await runtime.kubernetes.start()
        if config.dns.workers > 1:
            self.workers = Workers(runtime, config.dns.workers,
                                   config_path=runtime.reloads.path,
                                   listen=f"{listen}".rsplit(":", 1)[0] + f":{runtime.port}")
            await self.workers.start()
        log.info("globaldns listening on %s:%d (udp+tcp), zones: %s", listen.host,
                 runtime.port, ", ".join(z.name for z in config.zones))

    async def _follow(self, follower: Follower) -> None:
        """A worker: follow the main process until it goes away (stop), or until following
        fails (exit 1, and the main process starts a new worker)."""
        try:
            await follower.run()
        except Exception:
            log.exception("worker: following the main process failed; exiting")
            self.exit_code = 1
        self.stopping.set()

    def _sighup(self) -> None:
        self._background(self.runtime.reloads.reload(why="SIGHUP"))

    def _background(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def lameduck(self, seconds: float, *,
                       sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """SIGTERM: /ready answers 503 at once, while UDP and TCP are still answered for
        `seconds` (dns.lameduck) as the endpoint removal reaches every kube-proxy."""
        self.runtime.shutting_down = True
        if self.workers is not None:
            self.workers.lameduck()
        if seconds > 0:
            log.info("lameduck: answering for %gs more", seconds)
            await sleep(seconds)

    async def stop(self) -> None:
        runtime = self.runtime
        runtime.shutting_down = True  # /ready answers 503 from now on
        await runtime.reloads.stop()
        if self.tcp is not None:
            self.tcp.close()  # no new connection; the open ones finish below
        # Queries in flight (forwarded ones too) are answered on the still open sockets.
        await _drained(runtime, DRAIN_SECONDS)
        if runtime.tcp_connections is not None:
            await runtime.tcp_connections.drain(DRAIN_SECONDS)
        if self.udp is not None:
            self.udp.close()
        if self.workers is not None:
            await self.workers.stop()
        await runtime.kubernetes.stop()
        await runtime.health.stop()
        runtime.chain.close()
        await self.http.stop()
        if self.querylog is not None:
            await asyncio.to_thread(self.querylog.close)

    async def run(self) -> int:
        await self.start()
        # What exists at start (modules, config, the first snapshot) lives as long as the
        # process: keep it out of the collector's full passes, which otherwise pause the
        # loop for tens of milliseconds on a large registry.
        gc.freeze()
        loop = asyncio.get_running_loop()
        terminated = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, terminated.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._sighup)
        runtime = self.runtime
        print(f"globaldns ready on {runtime.config.dns.listen.host}:{runtime.port}",
              file=sys.stderr, flush=True)
        waiting = [loop.create_task(self.stopping.wait()), loop.create_task(terminated.wait())]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        for task in waiting:
            task.cancel()
        if terminated.is_set() and not self.stopping.is_set():
            await self.lameduck(runtime.config.dns.lameduck)
        log.info("shutting down")
        await self.stop()
        return self.exit_code


def run(config: Config, *, config_path: str | None = None, channel_fd: int | None = None,
        worker_index: int = 0, overrides: Callable[[Config], Config] | None = None) -> int:
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run

    async def main() -> int:
        app = App(config, config_path=config_path, channel_fd=channel_fd,
                  worker_index=worker_index, overrides=overrides)
        return await app.run()

    try:
        return runner(main())
    except StartupError as exc:
        print(f"globaldns: {exc}", file=sys.stderr)
        return 1


async def _drained(runtime: Runtime, seconds: float) -> None:
    """Wait (at most `seconds`) until no query waits on an upstream."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while runtime.server.inflight and loop.time() < deadline:
        await asyncio.sleep(0.01)
