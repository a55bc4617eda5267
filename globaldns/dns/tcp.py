"""TCP listener per RFC 7766: 2-byte length framing, several queries per connection,
answers written as they are ready (pipelined, possibly out of order), idle timeout, and a
cap on open connections."""

from __future__ import annotations

import asyncio
import logging

from globaldns.dns.message import TCP
from globaldns.dns.server import DnsServer

log = logging.getLogger("globaldns.dns")

# A client that stops reading its answers must not make us buffer without bound.
MAX_WRITE_BUFFER = 1 << 20


class TcpConnections:
    """The shared state of all connections of one listener."""

    def __init__(self, server: DnsServer, *, idle_timeout: float, max_connections: int) -> None:
        self.server = server
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.open: set[TcpConnection] = set()
        self.rejected = 0

    def factory(self) -> TcpConnection:
        return TcpConnection(self)

    async def drain(self, deadline: float) -> None:
        """Shutdown: let answers in flight be written, then close every connection."""
        pending = [t for c in self.open for t in c.tasks]
        if pending:
            await asyncio.wait(pending, timeout=deadline)
        for connection in list(self.open):
            connection.close()


class TcpConnection(asyncio.Protocol):
    def __init__(self, owner: TcpConnections) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.tasks: set[asyncio.Task[None]] = set()
        self.peer: tuple[str, int] = ("", 0)
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.owner.open) >= self.owner.max_connections:
            self.owner.rejected += 1
            transport.close()
            return
        self.owner.open.add(self)
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1]) if peer else ("", 0)
        self._arm()

    def _arm(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.idle = asyncio.get_running_loop().call_later(self.owner.idle_timeout, self._idle)

    def _idle(self) -> None:
        if self.tasks:
            self._arm()
        else:
            self.close()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        handle = self.owner.server.handle
        while len(buffer) >= 2:
            length = (buffer[0] << 8) | buffer[1]
            if len(buffer) < 2 + length:
                break
            message = bytes(buffer[2 : 2 + length])
            del buffer[: 2 + length]
            result = handle(message, self.peer, TCP)
            if result is None:
                continue
            if result.__class__ is bytes:
                self._write(result)
            else:
                task = asyncio.get_running_loop().create_task(self._write_later(result))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        self._arm()

    async def _write_later(self, pending) -> None:  # type: ignore[no-untyped-def]
        self._write(await pending)

    def _write(self, wire: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(len(wire).to_bytes(2, "big") + wire)
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("closing TCP connection from %s: it does not read its answers",
                        self.peer[0])
            self.close()

    def eof_received(self) -> bool:
        # The client is done sending; keep the connection until our answers are out.
        if self.tasks:
            task_set = list(self.tasks)
            asyncio.get_running_loop().create_task(self._close_after(task_set))
            return True
        return False

    async def _close_after(self, tasks: list[asyncio.Task[None]]) -> None:
        await asyncio.wait(tasks)
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.open.discard(self)
        if self.idle is not None:
            self.idle.cancel()
        for task in self.tasks:
            task.cancel()
