"""One query's way through: precheck and parse, the handler chain, encode.

This is the one error boundary: unreadable packets are dropped, malformed ones get
FORMERR/NOTIMP/BADVERS, a handler's failure becomes SERVFAIL plus a log line and a counter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine

from globaldns.dns.fastpath import WireCache
from globaldns.dns.message import REFUSED, SERVFAIL, UDP, Malformed, Query, parse
from globaldns.dns.wire import Reply, encode, error_reply, rcode_body

log = logging.getLogger("globaldns.dns")

_SERVFAIL = Reply(rcode_body(SERVFAIL))
# RFC 8914 code 0 "Other": too many queries already wait on upstreams.
_OVERLOADED = Reply(rcode_body(REFUSED), ede=((0, "overloaded: too many queries in flight"),))


class Stats:
    """Per-query counters as plain integers; exported at scrape time, never on the hot path.
    Keys are small closed sets (transport, qtype, rcode), never names or clients."""

    __slots__ = ("dropped", "errors", "inflight_refused", "requests", "responses")

    def __init__(self) -> None:
        self.requests: dict[tuple[int, int], int] = {}
        """(transport, qtype) → count."""
        self.responses: dict[int, int] = {}
        """rcode → count."""
        self.dropped = 0
        self.errors = 0
        self.inflight_refused = 0


class DnsServer:
    """Turns query bytes into reply bytes, a coroutine making them, or None (send nothing)."""

    def __init__(self, chain: Callable[[Query], Reply | Awaitable[Reply]], *,
                 nsid: bytes = b"", max_inflight: int = 1000, stats: Stats | None = None) -> None:
        self.chain = chain
        self.nsid = nsid
        self.max_inflight = max_inflight
        self.inflight = 0
        self.stats = stats or Stats()
        self.observers: list[Callable[[Query, bytes, float], None]] = []
        """Called after each reply (the query log); empty unless configured. While any is
        set, the wire cache is bypassed, so every query is seen."""
        self.wire: WireCache | None = None

    def handle(self, data: bytes, client: tuple[str, int],
               transport: int) -> bytes | Coroutine[None, None, bytes] | None:
        stats = self.stats
        try:
            q = parse(data, client, transport)
        except Malformed as bad:
            if bad.rcode is None:
                stats.dropped += 1
                return None
            self._count(bad.rcode)
            return error_reply(data, bad.question, bad.rcode)
        if q is None:
            stats.dropped += 1
            return None
        requests = stats.requests
        key = (transport, q.qtype)
        requests[key] = requests.get(key, 0) + 1
        try:
            reply = self.chain(q)
        except Exception:
            reply = self._failed(q)
        if reply.__class__ is not Reply:
            if self.inflight >= self.max_inflight:
                stats.inflight_refused += 1
                reply.close()  # type: ignore[union-attr]
                reply = _OVERLOADED
            else:
                return self._finish_later(q, reply)  # type: ignore[arg-type]
        wire = encode(q, reply, self.nsid)
        rcode = reply.body.rcode
        responses = stats.responses
        responses[rcode] = responses.get(rcode, 0) + 1
        if self.observers:
            self._observe(q, wire, 0.0)
        elif q.answers is not None and transport == UDP and not q.edns_options \
                and self.wire is not None:
            self.wire.remember(data, q, reply, self.nsid)
        return wire

    def _failed(self, q: Query) -> Reply:
        log.exception("failed to answer %s type %d from %s", q.name, q.qtype, q.client[0])
        self.stats.errors += 1
        return _SERVFAIL

    async def _finish_later(self, q: Query, pending: Awaitable[Reply]) -> bytes:
        start = time.monotonic()
        self.inflight += 1
        try:
            reply = await pending
        except Exception:
            reply = self._failed(q)
        finally:
            self.inflight -= 1
        wire = encode(q, reply, self.nsid)
        self._count(reply.body.rcode)
        if self.observers:
            self._observe(q, wire, time.monotonic() - start)
        return wire

    def _count(self, rcode: int) -> None:
        self.stats.responses[rcode] = self.stats.responses.get(rcode, 0) + 1

    def _observe(self, q: Query, wire: bytes, duration: float) -> None:
        for observer in self.observers:
            observer(q, wire, duration)
