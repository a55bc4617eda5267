"""Our own asyncio DNS client for forwarding: one pool of upstreams per forward zone.

Spoofing resistance (RFC 5452): every upstream query gets a fresh random ID from the
system's CSPRNG and, over UDP, a fresh socket whose source port the kernel picks at random;
a reply is accepted only if its source, ID and question match, else we keep waiting until
the deadline (dnspython's rule). A truncated UDP answer is asked again over TCP; TCP
connections are kept per upstream and reused, queries pipelined and matched by ID.

Health, as CoreDNS's forward plugin does it: after `max_fails` consecutive failures an
upstream is unhealthy, skipped, and probed with `. IN NS` every `probe_interval`
until it answers (any rcode). When every upstream is unhealthy, they are tried anyway.

A UDP answer larger than the 1232 bytes we advertise is dropped and the query asked again
over TCP, as for a truncated one: an honest server never sends one, and a big datagram
is the fragmented kind that off-path attackers splice into. Every answer then passes the
relay check (`relay.relayed()`); one that fails it is a failed try, never relayed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import socket
import struct
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from globaldns.dns.names import Ede, QType, Rcode
from globaldns.dns.relay import MalformedReply, Relayed, relayed
from globaldns.dns.stats import DURATION_BOUNDS
from globaldns.dns.wire import framed, unframed

log = logging.getLogger("globaldns.forward")

# RFC 8914 extended errors for "no upstream answered".

# The UDP size we advertise upstream (DNS flag day 2020: no fragmentation).
UPSTREAM_UDP_SIZE: Final = 1232
# CoreDNS's forward plugin closes an unused upstream connection after 10 s (`expire`).
TCP_IDLE: Final = 10.0
# Queries waiting on one TCP connection; a slow upstream cannot make us queue without end.
TCP_MAX_PENDING: Final = 1000


_ids = random.SystemRandom()


def _new_id() -> int:
    return _ids.getrandbits(16)


class UpstreamError(Exception):
    """No usable answer from an upstream: `network` for a network error (connection
    refused, reset), otherwise a timeout or an unusable reply."""

    def __init__(self, reason: str, *, network: bool = False) -> None:
        super().__init__(reason)
        self.network = network


def query_message(question: bytes, *, flags: int, do: bool) -> bytes:
    """An upstream query without its ID: header rest, question, and our OPT record. We
    always send EDNS (size 1232): the OPT record never reaches the client as ours, and
    fewer answers need TCP."""
    opt = struct.pack("!BHHBBHH", 0, QType.OPT, UPSTREAM_UDP_SIZE, 0, 0, 0x8000 if do else 0, 0)
    return struct.pack("!HHHHH", flags, 1, 0, 0, 1) + question + opt


PROBE_QUESTION: Final = b"\x00\x00\x02\x00\x01"
PROBE: Final = struct.pack("!HHHHH", 0x0100, 1, 0, 0, 0) + PROBE_QUESTION
"""CoreDNS's health probe, without its ID: `. IN NS`, RD set, no EDNS."""


def _matches(reply: bytes, qid: int, question: bytes) -> bool:
    """A response to our query: our ID, QR set, one question equal to ours (0x20-safe)."""
    qlen = len(question)
    return (len(reply) >= 12 + qlen and ((reply[0] << 8) | reply[1]) == qid
            and reply[2] & 0x80 != 0 and reply[4] == 0 and reply[5] == 1
            and reply[12 : 12 + qlen].lower() == question.lower())


# -- transports ------------------------------------------------------------------------------

class TcpChannel(asyncio.Protocol):
    """One TCP connection to one upstream: queries pipelined, answers matched by ID."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending: dict[int, tuple[asyncio.Future[bytes], bytes]] = {}
        self.closed = False
        self.used = 0
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while (reply := unframed(buffer)) is not None:
            if len(reply) < 12:
                continue
            waiting = self.pending.get((reply[0] << 8) | reply[1])
            if waiting is None:
                continue  # an answer to a query we gave up on, or garbage
            future, question = waiting
            if not future.done() and _matches(reply, (reply[0] << 8) | reply[1], question):
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.idle is not None:
            self.idle.cancel()
        if self.upstream.tcp is self:
            self.upstream.tcp = None
        error = UpstreamError(f"{self.upstream}: TCP connection closed", network=True)
        for future, _question in self.pending.values():
            if not future.done():
                future.set_exception(error)

    def eof_received(self) -> bool | None:
        return None  # close our side too; pending queries fail with "connection closed"

    def send(self, message: bytes, question: bytes) -> tuple[int, asyncio.Future[bytes]]:
        if len(self.pending) >= TCP_MAX_PENDING:
            raise UpstreamError(f"{self.upstream}: too many queries waiting on TCP")
        qid = _new_id()
        for _ in range(16):
            if qid not in self.pending:
                break
            qid = _new_id()
        else:
            raise UpstreamError(f"{self.upstream}: no free query ID")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending[qid] = (future, question)
        self.used += 1
        self.transport.write(framed(qid.to_bytes(2, "big") + message))  # type: ignore[union-attr]
        return qid, future

    def done(self, qid: int) -> None:
        self.pending.pop(qid, None)
        if not self.pending and not self.closed:
            if self.idle is not None:
                self.idle.cancel()
            self.idle = asyncio.get_running_loop().call_later(TCP_IDLE, self._expire)

    def _expire(self) -> None:
        if not self.pending:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class Upstream:
    """One upstream server: its transports and its health."""

    def __init__(self, host: str, port: int, *, max_fails: int, probe_interval: float,
                 probe_timeout: float, force_tcp: bool,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.host = host
        self.port = port
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.max_fails = max_fails
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.sleep = sleep
        """The wait between probes; tests pass one they control (the probe itself, a real
        exchange, keeps a real deadline)."""
        self.force_tcp = force_tcp
        self.fails = 0
        self.tcp: TcpChannel | None = None
        self._connecting: asyncio.Task[TcpChannel] | None = None
        self.prober: asyncio.Task[None] | None = None
        # Counters for metrics, plain integers.
        self.queries = 0
        self.failures = 0
        self.probes = 0
        self.probe_failures = 0
        self.rcodes: dict[int, int] = {}
        """Usable answers by rcode."""
        self.durations = [0] * (len(DURATION_BOUNDS) + 1)
        """Usable answers by the time they took (DURATION_BOUNDS buckets, +Inf last)."""
        self.duration_sum = 0.0
        self.oversized = 0
        """UDP answers larger than UPSTREAM_UDP_SIZE, dropped (the query went over TCP)."""
        self.malformed = 0
        """Answers that failed the relay check."""
        self.stripped = 0
        """Records stripped from relayed answers (bailiwick, class)."""

    def answered(self, rcode: int, seconds: float) -> None:
        self.rcodes[rcode] = self.rcodes.get(rcode, 0) + 1
        self.durations[bisect_left(DURATION_BOUNDS, seconds)] += 1
        self.duration_sum += seconds

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def healthy(self) -> bool:
        return self.max_fails == 0 or self.fails < self.max_fails

    def succeeded(self) -> None:
        self.fails = 0

    def failed(self) -> None:
        self.failures += 1
        self.fails += 1
        if not self.healthy and self.prober is None:
            log.warning("upstream %s is unhealthy after %d failures; probing every %.1fs",
                        self, self.fails, self.probe_interval)
            self.prober = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        """Until the upstream answers `. IN NS`; ended by `close()` otherwise."""
        loop = asyncio.get_running_loop()
        try:
            while not self.healthy:
                await self.sleep(self.probe_interval)
                self.probes += 1
                try:
                    await self.exchange(PROBE, PROBE_QUESTION,
                                        deadline=loop.time() + self.probe_timeout)
                except UpstreamError:
                    self.probe_failures += 1
                    continue
                log.info("upstream %s answers again", self)
                self.fails = 0
        finally:
            self.prober = None

    async def exchange(self, message: bytes, question: bytes, *, deadline: float) -> bytes:
        """One query (without its ID) to this upstream: UDP, then TCP when truncated."""
        self.queries += 1
        try:
            async with asyncio.timeout_at(deadline):
                if self.force_tcp:
                    return await self._tcp(message, question)
                reply = await self._udp(message, question)
                if len(reply) > UPSTREAM_UDP_SIZE:
                    self.oversized += 1
                    log.debug("%s: a %d-byte UDP answer, more than we advertise; over TCP",
                              self, len(reply))
                    return await self._tcp(message, question)
                if reply[2] & 0x02:  # TC: ask again over TCP (RFC 7766 5)
                    reply = await self._tcp(message, question)
                return reply
        except TimeoutError:
            raise UpstreamError(f"{self}: no answer in time") from None
        except OSError as exc:
            raise UpstreamError(f"{self}: {exc.strerror or exc}", network=True) from exc

    async def _udp(self, message: bytes, question: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            # connect() binds a fresh ephemeral port, chosen at random by the kernel, and
            # makes the kernel drop datagrams from any other source.
            sock.connect((self.host, self.port))
            qid = _new_id()
            future: asyncio.Future[bytes] = loop.create_future()
            peer = sock.getpeername()[:2]

            def readable() -> None:
                for _ in range(64):  # bounded: a flood of spoofed replies cannot spin us
                    try:
                        data, source = sock.recvfrom(65535)
                    except BlockingIOError:
                        return
                    except OSError as exc:  # ICMP port unreachable: nobody listens there
                        if not future.done():
                            future.set_exception(exc)
                        return
                    if (source[:2] == peer and not future.done()
                            and _matches(data, qid, question)):
                        future.set_result(data)
                        return

            loop.add_reader(sock.fileno(), readable)
            try:
                sock.send(qid.to_bytes(2, "big") + message)
                return await future
            finally:
                loop.remove_reader(sock.fileno())
        finally:
            sock.close()

    async def _tcp(self, message: bytes, question: bytes) -> bytes:
        for attempt in range(2):
            channel = await self._channel()
            reused = channel.used > 0
            qid, future = channel.send(message, question)
            try:
                return await future
            except UpstreamError:
                # A kept connection the upstream had closed: one more try on a new one.
                if attempt == 0 and reused:
                    continue
                raise
            finally:
                channel.done(qid)
        raise AssertionError("unreachable")

    async def _channel(self) -> TcpChannel:
        channel = self.tcp
        if channel is not None and not channel.closed and channel.transport is not None \
                and not channel.transport.is_closing():
            return channel
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
            self._connecting.add_done_callback(_retrieve)
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _connect(self) -> TcpChannel:
        loop = asyncio.get_running_loop()
        _transport, channel = await loop.create_connection(
            lambda: TcpChannel(self), self.host, self.port, family=self.family)
        self.tcp = channel
        return channel

    def close(self) -> None:
        if self.prober is not None:
            self.prober.cancel()
        if self._connecting is not None:
            self._connecting.cancel()
        if self.tcp is not None:
            self.tcp.close()


def _retrieve(task: asyncio.Task[TcpChannel]) -> None:
    """A connect that every waiter gave up on: its error is not news to anyone."""
    if not task.cancelled():
        task.exception()


class Pool:
    """The upstreams of one forward zone and how to choose among them."""

    def __init__(self, addresses: Sequence[tuple[str, int]], *, policy: str, timeout: float,
                 tries: int, max_fails: int, probe_interval: float, force_tcp: bool,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.upstreams = [Upstream(host, port, max_fails=max_fails,
                                   probe_interval=probe_interval, probe_timeout=timeout,
                                   force_tcp=force_tcp, sleep=sleep)
                          for host, port in addresses]
        self.policy = policy
        self.timeout = timeout
        self.tries = tries
        self._turn = itertools.count()
        self._shuffle = random.Random()

    def order(self) -> list[Upstream]:
        """The upstreams to try, in turn: healthy ones by the policy; all when none is."""
        ups = self.upstreams
        if self.policy == "random":
            ups = self._shuffle.sample(ups, len(ups))
        elif self.policy == "round_robin":
            start = next(self._turn) % len(ups)
            ups = ups[start:] + ups[:start]
        healthy = [u for u in ups if u.healthy]
        return healthy or ups

    async def exchange(self, message: bytes, question: bytes) -> Relayed:
        """Ask up to `tries` times, each try the next upstream in order, all within
        `timeout * tries`. A SERVFAIL or REFUSED answer sends us to the next upstream
        too; when every try gives one, the last is relayed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout * self.tries
        order = self.order()
        fallback: Relayed | None = None
        errors: list[UpstreamError] = []
        qend = 12 + len(question)
        for attempt in range(self.tries):
            now = loop.time()
            if now >= deadline:
                break
            upstream = order[attempt % len(order)]
            try:
                wire = await upstream.exchange(message, question,
                                               deadline=min(now + self.timeout, deadline))
                took = loop.time() - now
            except UpstreamError as exc:
                upstream.failed()
                errors.append(exc)
                continue
            try:
                body = relayed(wire, qend)
            except MalformedReply as exc:
                upstream.malformed += 1
                upstream.failed()
                errors.append(UpstreamError(f"{upstream}: malformed answer: {exc}"))
                continue
            upstream.stripped += body.stripped
            upstream.succeeded()
            upstream.answered(body.rcode, took)
            if body.rcode in (Rcode.SERVFAIL, Rcode.REFUSED) and attempt + 1 < self.tries \
                    and len(order) > 1:
                fallback = body
                continue
            return body
        if fallback is not None:
            return fallback
        if not errors:
            errors.append(UpstreamError("no time left"))
        raise Unreachable(errors)

    def close(self) -> None:
        for upstream in self.upstreams:
            upstream.close()


class Unreachable(Exception):
    """Every try failed: the EDE code and text to answer SERVFAIL with."""

    def __init__(self, errors: list[UpstreamError]) -> None:
        self.errors = errors
        seen: list[str] = []
        for e in errors:
            if str(e) not in seen:
                seen.append(str(e))
        self.text = "; ".join(seen)
        super().__init__(self.text)
        self.code = Ede.NETWORK_ERROR if all(e.network for e in errors) \
            else Ede.NO_REACHABLE_AUTHORITY
