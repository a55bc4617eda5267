"""UDP listener: receive never blocks; prepared answers go out from the receive callback."""

from __future__ import annotations

import asyncio
import logging

from globaldns.dns.message import UDP
from globaldns.dns.server import DnsServer

log = logging.getLogger("globaldns.dns")


class UdpListener(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        wire = self.server.wire
        if wire is not None and not self.server.observers:
            out = wire.answer(data, addr[0])  # a query seen before from this client's class
            if out is not None:
                limit = self.server.rate_limit
                if limit is not None:
                    out = limit.cached(addr[0], out)  # None: dropped by the rate limit
                if out is not None:
                    self.transport.sendto(out, addr)  # type: ignore[union-attr]
                return
        result = self.server.handle(data, addr, UDP)
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
