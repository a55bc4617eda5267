"""TCP listener per RFC 7766: 2-byte length framing, several queries per connection,
answers written as they are ready (pipelined, possibly out of order), and bounds on
everything a client controls:

- a message must be complete within `tcp_message_timeout` of its first byte (a byte now
  and then does not keep a connection: slow-loris);
- a connection with no message under way and nothing in flight is closed after
  `tcp_idle_timeout`;
- at most `max_connections_per_client` connections per client address;
- at `max_connections`, the connection idle the longest is closed to make room for the
  new one (RFC 7766 §6.2.3); the new one is refused only when none is idle;
- at most `max_inflight_per_connection` queries of one connection wait on upstreams:
  past it the connection stops reading (its next queries wait in the socket) until one
  is answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from globaldns.dns.message import TCP
from globaldns.dns.server import DnsServer
from globaldns.dns.wire import framed, unframed

log = logging.getLogger("globaldns.dns")

# A client that stops reading its answers must not make us buffer without bound.
MAX_WRITE_BUFFER = 1 << 20

CLOSE_REASONS = ("message_timeout", "idle_timeout", "evicted", "client_limit",
                 "slow_reader")
"""Why the server closed a TCP connection (`globaldns_dns_tcp_closed_total{reason}`)."""


class TcpConnections:
    """The shared state of all connections of one listener."""

    def __init__(self, server: DnsServer, *, idle_timeout: float, max_connections: int,
                 message_timeout: float = 2.0, max_connections_per_client: int = 100,
                 max_inflight_per_connection: int = 100) -> None:
        self.server = server
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.message_timeout = message_timeout
        self.max_connections_per_client = max_connections_per_client
        self.max_inflight_per_connection = max_inflight_per_connection
        self.open: set[TcpConnection] = set()
        self.per_client: dict[str, set[TcpConnection]] = {}
        self.rejected = 0
        self.closed: Counter[str] = Counter()

    def factory(self) -> TcpConnection:
        return TcpConnection(self)

    def admit(self, connection: TcpConnection) -> bool:
        """Make room for a new connection, or say it cannot have any."""
        mine = self.per_client.get(connection.peer[0], set())
        if len(mine) >= self.max_connections_per_client and not self._evict(mine):
            self.closed["client_limit"] += 1
            return False
        if len(self.open) >= self.max_connections and not self._evict(self.open):
            self.rejected += 1
            return False
        self.open.add(connection)
        self.per_client.setdefault(connection.peer[0], set()).add(connection)
        return True

    def _evict(self, among: set[TcpConnection]) -> bool:
        """Close the connection of `among` idle the longest; False when none is idle."""
        idle = [c for c in among if c.idle_since is not None]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.idle_since)  # type: ignore[arg-type, return-value]
        oldest.close("evicted")
        return True

    def forget(self, connection: TcpConnection) -> None:
        self.open.discard(connection)
        mine = self.per_client.get(connection.peer[0])
        if mine is not None:
            mine.discard(connection)
            if not mine:
                del self.per_client[connection.peer[0]]

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
        self.tasks: set[asyncio.Task[bytes]] = set()
        self.peer: tuple[str, int] = ("", 0)
        self.timer: asyncio.TimerHandle | None = None
        self.timer_reason = ""
        self.idle_since: float | None = None
        """Loop time since when nothing is under way on this connection; None while a
        message is partly read or a query waits."""
        self.paused = False
        self.closing = False
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1]) if peer else ("", 0)
        if not self.owner.admit(self):
            self.closing = True
            transport.close()
            return
        self._settle()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._process()

    def _process(self) -> None:
        """Handle every complete message while this connection may start more work."""
        buffer = self.buffer
        handle = self.owner.server.handle
        limit = self.owner.max_inflight_per_connection
        completed = False
        while not self.closing and len(self.tasks) < limit:
            message = unframed(buffer)
            if message is None:
                break
            completed = True
            result = handle(message, self.peer, TCP)
            if result is None:
                continue
            if isinstance(result, bytes):
                self._write(result)
            else:
                self.tasks.add(result)
                result.add_done_callback(self._answered)
        if self.closing:
            return
        if len(self.tasks) >= limit:
            if not self.paused:
                self.paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]
        elif self.paused:
            self.paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        if completed and self.timer_reason == "message_timeout":
            self._stop_timer()
        self._settle()

    def _answered(self, task: asyncio.Task[bytes]) -> None:
        self.tasks.discard(task)
        if self.closing or task.cancelled():
            return
        if task.exception() is not None:  # not a handler's (those are SERVFAIL): ours
            log.error("TCP answer to %s failed", self.peer[0], exc_info=task.exception())
            self.close()
            return
        self._write(task.result())
        if self.paused or self.buffer:
            self._process()
        else:
            self._settle()
        if self.eof and not self.tasks:
            self.close()

    def _settle(self) -> None:
        """Choose the one timer that applies now: a message deadline while a message is
        partly read, the idle timeout when nothing is under way, none while queries wait
        (their own upstream deadlines bound them) or reading is paused."""
        if self.paused or self.tasks:
            self.idle_since = None
            self._stop_timer()
        elif self.buffer:
            self.idle_since = None
            if self.timer_reason != "message_timeout":
                self._start_timer("message_timeout", self.owner.message_timeout)
        else:
            self.idle_since = asyncio.get_running_loop().time()
            self._start_timer("idle_timeout", self.owner.idle_timeout)

    def _start_timer(self, reason: str, seconds: float) -> None:
        self._stop_timer()
        self.timer_reason = reason
        self.timer = asyncio.get_running_loop().call_later(seconds, self.close, reason)

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None
        self.timer_reason = ""

    def _write(self, wire: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(framed(wire))
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("closing TCP connection from %s: it does not read its answers",
                        self.peer[0])
            self.close("slow_reader")

    def eof_received(self) -> bool:
        # The client is done sending; keep the connection until our answers are out.
        self.eof = True
        return bool(self.tasks)

    def close(self, reason: str = "") -> None:
        if reason:
            self.owner.closed[reason] += 1
        self.closing = True
        self.idle_since = None
        self._stop_timer()
        self.owner.forget(self)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._stop_timer()
        self.owner.forget(self)
        for task in self.tasks:
            task.cancel()
