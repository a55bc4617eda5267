"""UDP listener: receive never blocks; prepared answers go out from the receive callback.

Two ways in, the same answers. The fast lane (issue 16, `_fastlane.c`, built where a C
compiler was present) drains the socket with one recvmmsg per readiness and sends the
batch's replies with one sendmmsg; the pure-Python path is asyncio's datagram transport,
one recvfrom and one sendto per packet. Both call `answer()` for every datagram.
GLOBALDNS_FASTLANE=0 forces the pure-Python path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from types import ModuleType
from typing import Any, Protocol

from globaldns.dns.message import UDP
from globaldns.dns.server import DnsServer

log = logging.getLogger("globaldns.dns")


def _load_fastlane() -> ModuleType | None:
    if os.environ.get("GLOBALDNS_FASTLANE", "1") == "0":
        return None
    try:
        from globaldns.dns import _fastlane  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _fastlane  # type: ignore[no-any-return]


FASTLANE = _load_fastlane()


class UdpEndpoint(Protocol):
    def close(self) -> None: ...


async def listen_udp(sock: socket.socket, server: DnsServer) -> UdpEndpoint:
    """Serve DNS on a bound non-blocking UDP socket: the fast lane when built, else asyncio's."""
    loop = asyncio.get_running_loop()
    if FASTLANE is not None:
        return FastLane(loop, sock, server)
    transport, _ = await loop.create_datagram_endpoint(lambda: UdpListener(server), sock=sock)
    return transport


def answer(server: DnsServer, data: bytes, addr: Any) -> Any:
    """The reply bytes to send now, None for none, or an awaitable of the reply to send later."""
    wire = server.wire
    if wire is not None and not server.observers:
        out = wire.answer(data, addr[0])  # a query seen before from this client's class
        if out is None:
            return server.handle(data, addr, UDP)
        limit = server.rate_limit
        if limit is not None:
            return limit.cached(addr[0], out)  # None: dropped by the rate limit
        return out
    return server.handle(data, addr, UDP)


class FastLane:
    """One recvmmsg per readiness of the socket, `answer()` per datagram, one sendmmsg."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 server: DnsServer) -> None:
        assert FASTLANE is not None
        self.loop = loop
        self.sock = sock
        self.server = server
        self.fd = sock.fileno()
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self._drain = FASTLANE.drain
        self._batch: int = FASTLANE.BATCH
        # This lane's receive buffers (calloc'd: only the pages datagrams touch are used).
        self._buffer = bytearray(FASTLANE.BATCH * FASTLANE.DATAGRAM)
        loop.add_reader(self.fd, self._ready)

    def _ready(self) -> None:
        server = self.server
        wire = server.wire
        # The wire cache and the rate limit are called from C for each datagram (the same
        # calls, in the same order, as `answer()`); the full path only for what they miss.
        hit = wire.answer if wire is not None and not server.observers else None
        limit = server.rate_limit
        rate = limit.cached if hit is not None and limit is not None else None
        try:
            self._drain(self.fd, self._buffer, hit, rate, self._miss, self._batch)
        except OSError as exc:
            # ICMP port unreachable from a client that went away: nothing to do.
            log.debug("udp error: %s", exc)

    def _miss(self, data: bytes, addr: Any) -> bytes | None:
        result = self.server.handle(data, addr, UDP)
        if result is None or result.__class__ is bytes:
            return result
        task = self.loop.create_task(self._send_later(result, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return None

    async def _send_later(self, pending, addr: Any) -> None:  # type: ignore[no-untyped-def]
        wire = await pending
        if wire and not self.closed:
            try:
                self.sock.sendto(wire, addr)
            except OSError as exc:  # a full socket buffer drops it, as a full queue would
                log.debug("udp error: %s", exc)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.fd)
            self.sock.close()


class UdpListener(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        result = answer(self.server, data, addr)
        if result is None:
            return
        if result.__class__ is bytes:
            self.transport.sendto(result, addr)  # type: ignore[union-attr]
            return
        task = asyncio.get_running_loop().create_task(self._send_later(result, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send_later(self, pending, addr: tuple[str, int]) -> None:  # type: ignore[no-untyped-def]
        wire = await pending
        if wire and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(wire, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a client that went away: nothing to do.
        log.debug("udp error: %s", exc)
