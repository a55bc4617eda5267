"""One query's way through: precheck and parse, the handler chain, encode.

This is the one error boundary: unreadable packets are dropped, malformed ones get
FORMERR/NOTIMP/BADVERS (NOTAUTH for a TSIG-signed one: we hold no keys), those refused by
the shape gate are counted, a handler's failure becomes SERVFAIL plus a log line and a counter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable

from globaldns.dns.cookies import Cookies
from globaldns.dns.fastpath import WireCache
from globaldns.dns.message import (
    UDP,
    Malformed,
    Query,
    parse,
    presentation,
)
from globaldns.dns.names import Ede, Rcode
from globaldns.dns.rate_limit import DROP, RateLimit, slip_reply
from globaldns.dns.stats import DURATION_BOUNDS, MALFORMED_QTYPE, Stats
from globaldns.dns.wire import ERROR, REFUSED, Reply, encode, error_reply, rcode_body

log = logging.getLogger("globaldns.dns")

# RFC 8914 code 0 "Other": the cause is ours, and it is in the log.
_SERVFAIL = Reply(rcode_body(Rcode.SERVFAIL), by=ERROR,
                  ede=((Ede.OTHER, "internal error (logged by the server)"),))
# RFC 8914 code 0 "Other": too many queries already wait on upstreams.
OVERLOADED = Reply(rcode_body(Rcode.REFUSED), by=REFUSED,
                   ede=((Ede.OTHER, "overloaded: too many queries in flight"),))


class DnsServer:
    """Turns query bytes into reply bytes, a task making them, or None (send nothing).

    A query that waits (forwarding) counts in `inflight` from the moment its task is
    created until the task is done, however it ends: a burst of pipelined queries handled
    in one callback cannot pass `max_inflight` before any of its tasks has started."""

    def __init__(self, chain: Callable[[Query], Reply | Awaitable[Reply]], *,
                 nsid: bytes = b"", max_inflight: int = 1000, stats: Stats | None = None) -> None:
        self.chain = chain
        self.nsid = nsid
        self.max_inflight = max_inflight
        self.inflight = 0
        self.stats = stats or Stats()
        self.observers: list[Callable[[Query, Reply, bytes, float], None]] = []
        """Called after each reply with (query, reply, wire, seconds) — the query log
        (`reply.by` says who answered); empty unless configured. While any is set, the
        wire cache is bypassed, so every query is seen."""
        self.wire: WireCache | None = None
        self.rate_limit: RateLimit | None = None
        """Response rate limiting of UDP replies (None: off)."""
        self.cookies: Cookies | None = None
        """DNS COOKIE (None: the option is ignored, RFC 7873 5.2.1)."""

    def handle(self, data: bytes, client: tuple[str, int],
               transport: int) -> bytes | asyncio.Task[bytes] | None:
        stats = self.stats
        try:
            q = parse(data, client, transport)
        except Malformed as bad:
            if bad.rcode is None:
                stats.dropped += 1
                return None
            if bad.gate:
                stats.gate_refused += 1
            wire = error_reply(data, bad)
            stats.count(transport, MALFORMED_QTYPE, bad.rcode, len(wire))
            return wire
        if q is None:
            stats.dropped += 1
            return None
        if q.cookie is not None and self.cookies is not None:
            self.cookies.check(q)
        if self.observers:
            return self._observed(q)
        try:
            reply = self.chain(q)
        except Exception:
            reply = self._failed(q)
        if reply.__class__ is not Reply:
            if self.inflight >= self.max_inflight:
                stats.inflight_refused += 1
                reply.close()  # type: ignore[union-attr]
                reply = OVERLOADED
            else:
                return self._later(q, reply)  # type: ignore[arg-type]
        if self.rate_limit is not None and transport == UDP:
            instead = self._limited(q, reply)
            if instead is not None:
                return instead or None
        wire = self._encoded(q, reply)
        if reply.keep is not None and transport == UDP and not q.edns_options \
                and self.wire is not None:
            self.wire.remember(data, q, reply, self.nsid)
        return wire

    def _encoded(self, q: Query, reply: Reply) -> bytes:
        """The reply's bytes, counted: the one place a slow-path reply is encoded."""
        wire = encode(q, reply, self.nsid)
        self.stats.count(q.transport, q.qtype, reply.body.rcode, len(wire))
        return wire

    def overloaded(self) -> bool:
        """Whether `max_inflight` queries wait already (then counted as refused): a
        handler about to start upstream work answers OVERLOADED instead, so a refused
        query costs no upstream socket."""
        if self.inflight < self.max_inflight:
            return False
        self.stats.inflight_refused += 1
        return True

    def _limited(self, q: Query, reply: Reply) -> bytes | None:
        """What goes out instead of this UDP reply when its client is over its rate: a
        slip reply, or b"" for nothing; None when the reply goes out."""
        verdict = self.rate_limit.verdict(q.client[0], q, reply.body)  # type: ignore[union-attr]
        if not verdict:
            return None
        return b"" if verdict == DROP else slip_reply(q, reply.body)

    def _failed(self, q: Query) -> Reply:
        log.exception("failed to answer %s type %d from %s", presentation(q.qname), q.qtype,
                      q.client[0])
        self.stats.errors += 1
        return _SERVFAIL

    def _observed(self, q: Query) -> bytes | asyncio.Task[bytes] | None:
        """The same way through, timed, with the observers called after the reply."""
        start = time.perf_counter()
        try:
            reply = self.chain(q)
        except Exception:
            reply = self._failed(q)
        if reply.__class__ is not Reply:
            if self.inflight >= self.max_inflight:
                self.stats.inflight_refused += 1
                reply.close()  # type: ignore[union-attr]
                reply = OVERLOADED
            else:
                return self._later(q, reply, start)  # type: ignore[arg-type]
        if self.rate_limit is not None and q.transport == UDP:
            instead = self._limited(q, reply)
            if instead is not None:
                return instead or None
        wire = self._encoded(q, reply)
        self._observe(q, reply, wire, time.perf_counter() - start)
        return wire

    def _later(self, q: Query, pending: Awaitable[Reply],
               start: float | None = None) -> asyncio.Task[bytes]:
        # Counted now, released by the done callback: it runs even for a task cancelled
        # before its first step (a coroutine's own `finally` would not).
        self.inflight += 1
        task = asyncio.get_running_loop().create_task(self._finish_later(q, pending, start))
        task.add_done_callback(self._released)
        return task

    def _released(self, _task: asyncio.Task[bytes]) -> None:
        self.inflight -= 1

    async def _finish_later(self, q: Query, pending: Awaitable[Reply],
                            start: float | None) -> bytes:
        if start is None:
            start = time.perf_counter()
        try:
            reply = await pending
        except Exception:
            reply = self._failed(q)
        if self.rate_limit is not None and q.transport == UDP:
            instead = self._limited(q, reply)
            if instead is not None:
                return instead
        wire = self._encoded(q, reply)
        stats = self.stats
        seconds = time.perf_counter() - start
        stats.durations[bisect_left(DURATION_BOUNDS, seconds)] += 1
        stats.duration_sum += seconds
        if self.observers:
            self._observe(q, reply, wire, seconds)
        return wire

    def _observe(self, q: Query, reply: Reply, wire: bytes, seconds: float) -> None:
        for observer in self.observers:
            try:
                observer(q, reply, wire, seconds)
            except Exception:
                log.exception("query observer failed")
