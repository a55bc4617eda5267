"""UDP listener: receive never blocks; prepared answers go out from the receive callback."""

from __future__ import annotations

import asyncio
import logging

from globaldns.dns.message import UDP
from globaldns.dns.rate_limit import SLIP, slip_reply
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
            # The fast path: a query seen before from a client of the same class.
            cls = wire.classes.get(addr[0])
            if cls is not None:
                entry = wire.tables[cls].get(data[2:])
                reply = entry.answers.pick(None) if entry is not None else None
                if reply is not None:
                    limit = self.server.rate_limit
                    if limit is not None and (verdict := limit.verdict(
                            addr[0], entry.query, reply.body)):  # type: ignore[union-attr]
                        if verdict == SLIP:
                            slip = slip_reply(entry.query, reply.body, ra=entry.ra)  # type: ignore[union-attr]
                            self.transport.sendto(data[:2] + slip[2:], addr)  # type: ignore[union-attr]
                        return
                    out = entry.memo.get(reply)  # type: ignore[union-attr]
                    if out is None:
                        out = entry.encoded(reply)  # type: ignore[union-attr]
                    replies = self.server.stats.replies
                    key = entry.key | (len(out) + 2)  # type: ignore[union-attr]
                    replies[key] = replies.get(key, 0) + 1
                    self.transport.sendto(data[:2] + out, addr)  # type: ignore[union-attr]
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
