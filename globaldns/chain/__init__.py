"""The handler chain: built once at load time, called once per query.

A handler is `serve(query, next) -> Reply | Awaitable[Reply]`: it answers, or passes the
query on. Handlers are plain functions, not coroutines, so an authoritative answer costs a
few calls and no task; only a handler that must wait (forwarding) returns an awaitable.
Order (outermost first): acl, globalzone, chaos, cache, forward; the end of the chain
refuses.
Repeated UDP queries are answered before the chain, from the wire cache (dns/fastpath.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Protocol

from globaldns.dns.message import Query
from globaldns.dns.names import Ede, Rcode
from globaldns.dns.wire import REFUSED, Reply, rcode_body

Result = Reply | Awaitable[Reply]
Next = Callable[[Query], Result]


class Handler(Protocol):
    def serve(self, q: Query, next: Next) -> Result: ...


# RFC 8914 code 20 "Not Authoritative": not our zone, and no forward zone covers it.
_REFUSED = Reply(rcode_body(Rcode.REFUSED), by=REFUSED, ede=((
    Ede.NOT_AUTHORITATIVE,
    "Not Authoritative: not a served zone, and no forward zone covers this name"),))


def refuse(q: Query) -> Result:
    """The end of the chain: a name no handler serves (RFC 1035 4.1.1: REFUSED)."""
    return _REFUSED


def build(handlers: Sequence[Handler]) -> Next:
    chain: Next = refuse
    for handler in reversed(handlers):
        chain = partial(handler.serve, next=chain)
    return chain
