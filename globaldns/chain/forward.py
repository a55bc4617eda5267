"""Forwarding: a name outside every served zone goes to the upstreams of the most specific
`forward` zone, and their answer is relayed with the client's ID and question.

Names inside a served zone are never forwarded, whatever their class or type: CoreDNS
forwards `global` to us, and sending it back would loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from globaldns.chain import Next, Result
from globaldns.config.model import ForwardConfig
from globaldns.dns.message import (
    FLAG_CD,
    FLAG_RD,
    Query,
    presentation,
    text_to_wire,
)
from globaldns.dns.names import Ede, QType, Rcode
from globaldns.dns.relay import FLAG_AD
from globaldns.dns.server import OVERLOADED
from globaldns.dns.upstream import Pool, Unreachable, query_message
from globaldns.dns.wire import FORWARD, REFUSED, Reply, rcode_body

log = logging.getLogger("globaldns.forward")

EDE_TEXT_MAX: Final = 200

# Zone transfers are not ours to relay (a transfer spans many messages).
_REFUSED_XFR = Reply(rcode_body(Rcode.REFUSED), by=REFUSED,
                     ede=((Ede.NOT_SUPPORTED, "Not Supported: zone transfers"),))
# The health probe of CoreDNS's forward plugin (`. IN NS`, RD, no EDNS) must get a prompt
# answer that does not depend on our upstreams: any rcode counts as healthy to CoreDNS,
# and REFUSED is the honest one.
_PROBE_ANSWER = Reply(rcode_body(Rcode.REFUSED), by=REFUSED)
_SERVFAIL = rcode_body(Rcode.SERVFAIL)


class Forward:
    def __init__(self, zones: Sequence[ForwardConfig], *, served: Iterable[str],
                 overloaded: Callable[[], bool] = lambda: False) -> None:
        self.configs = tuple(zones)
        self.overloaded = overloaded
        """True when `dns.max_inflight` queries wait: no new upstream work then."""
        self.served = tuple(served)
        self.routes: dict[bytes, Pool | None] = {}
        for zc in zones:
            self.routes[text_to_wire(zc.zone)] = Pool(
                [(u.host, u.port) for u in zc.upstreams], policy=zc.policy, timeout=zc.timeout,
                tries=zc.tries, max_fails=zc.max_fails, probe_interval=zc.probe_interval,
                force_tcp=zc.force_tcp)
        for name in self.served:  # a served zone is never forwarded, even below a forward zone
            self.routes[text_to_wire(name)] = None
        # Counters for metrics, plain integers.
        self.unreachable = 0

    @property
    def pools(self) -> list[Pool]:
        return [p for p in self.routes.values() if p is not None]

    def route(self, qname: bytes) -> Pool | None:
        """The pool of the most specific zone containing `qname`; None for names in a
        served zone or in no forward zone."""
        routes = self.routes
        i = 0
        for _ in range(128):
            suffix = qname[i:]
            if suffix in routes:
                return routes[suffix]
            if not qname[i]:
                return None
            i += qname[i] + 1
        return None

    def serve(self, q: Query, next: Next) -> Result:
        pool = self.route(q.qname)
        if pool is None:
            return next(q)
        if q.qtype == QType.AXFR or q.qtype == QType.IXFR:
            return _REFUSED_XFR
        if q.qname == b"\x00" and q.qtype == QType.NS and q.edns < 0 and q.flags & FLAG_RD:
            return _PROBE_ANSWER
        if self.overloaded():
            return OVERLOADED
        return self._forward(q, pool)

    async def _forward(self, q: Query, pool: Pool) -> Reply:
        # We recurse through the upstream whatever the client's RD; AD and CD and the DO
        # bit pass through (RFC 6840 5.7, 5.9), the client's EDNS options do not.
        message = query_message(q.question, flags=FLAG_RD | (q.flags & (FLAG_AD | FLAG_CD)),
                                do=q.do)
        try:
            body = await pool.exchange(message, q.question)
        except Unreachable as exc:
            self.unreachable += 1
            log.debug("no upstream answered %s type %d: %s", presentation(q.qname), q.qtype,
                      exc.text)
            return Reply(_SERVFAIL, by=FORWARD, ede=((exc.code, exc.text[:EDE_TEXT_MAX]),))
        return Reply(body, by=FORWARD, ede=body.ede)

    def close(self) -> None:
        """Stop the health probes and close the upstream connections."""
        for pool in self.pools:
            pool.close()
