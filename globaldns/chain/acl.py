"""Who may ask, and who may recurse: the outermost policy handler.

A client outside `allow_query` gets REFUSED for everything; one outside `allow_recursion`
gets REFUSED with EDE 18 "Prohibited" (RFC 8914) for forwarded names, so we are never an
open resolver, and still gets the served zones. RA is set only where recursion is offered
to that client (RFC 1035 4.1.1): on every answer to a client allowed to recurse when
forwarding is configured, never when it is not. It is decided here, once (`q.ra`), and
the encoder sets the flag (dns/wire.py).

An EDNS Client Subnet option is honoured only from clients in `ecs_from` (default: those
of `allow_query`); from anyone else it is removed before routing, so the query is answered
as if it carried none. ECS picks a view, and a view is routing, never access control: a
client that may send ECS can claim any subnet.

The decision per client address is kept in a bounded dict, so a query pays a dict lookup.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from globaldns.chain import Next, Result
from globaldns.chain.forward import Forward
from globaldns.config.model import AclConfig
from globaldns.dns.message import Query
from globaldns.dns.names import Ede, QClass, Rcode
from globaldns.dns.wire import REFUSED, Reply, rcode_body

# Distinct client addresses remembered; past this the memory starts over (a flood of
# spoofed sources costs a recomputation, never unbounded memory).
MAX_CLIENTS: Final = 10_000

DENY, QUERY, RECURSE = 0, 1, 2

_NOT_ALLOWED = Reply(rcode_body(Rcode.REFUSED), by=REFUSED, ede=((
    Ede.PROHIBITED, "Prohibited: queries from this address are not allowed"),))
_NO_RECURSION = Reply(rcode_body(Rcode.REFUSED), by=REFUSED, ede=((
    Ede.PROHIBITED, "Prohibited: recursion is not offered to this address"),))


class Acl:
    def __init__(self, config: AclConfig, *, forward: Forward | None) -> None:
        self.query_nets = [ipaddress.ip_network(n) for n in config.allow_query]
        self.recursion_nets = [ipaddress.ip_network(n) for n in config.allow_recursion]
        self.ecs_nets = self.query_nets if config.ecs_from is None else [
            ipaddress.ip_network(n) for n in config.ecs_from]
        self.ecs_decisions: dict[str, bool] = {}
        self.forward = forward
        self.decisions: dict[str, int] = {}
        # Counters for metrics, plain integers.
        self.refused_queries = 0
        self.refused_recursion = 0
        self.ecs_ignored = 0

    def decide(self, ip: str) -> int:
        """DENY, QUERY or RECURSE for a client address (memoised)."""
        decision = self.decisions.get(ip)
        if decision is not None:
            return decision
        address = _address(ip)
        if address is None:
            decision = DENY
        else:
            if not any(address in net for net in self.query_nets):
                decision = DENY
            elif self.forward is not None and any(address in net
                                                  for net in self.recursion_nets):
                decision = RECURSE
            else:
                decision = QUERY
        if len(self.decisions) >= MAX_CLIENTS:
            self.decisions.clear()
        self.decisions[ip] = decision
        return decision

    def ecs_allowed(self, ip: str) -> bool:
        """Whether this client's ECS option is honoured (memoised)."""
        allowed = self.ecs_decisions.get(ip)
        if allowed is None:
            address = _address(ip)
            allowed = address is not None and any(address in net for net in self.ecs_nets)
            if len(self.ecs_decisions) >= MAX_CLIENTS:
                self.ecs_decisions.clear()
            self.ecs_decisions[ip] = allowed
        return allowed

    def serve(self, q: Query, next: Next) -> Result:
        decision = self.decisions.get(q.client[0])
        if decision is None:
            decision = self.decide(q.client[0])
        if q.ecs is not None and decision != DENY and not self.ecs_allowed(q.client[0]):
            q.ecs = None
            self.ecs_ignored += 1
        if decision == RECURSE:
            q.ra = True  # decided here, once; the encoder sets the flag
            return next(q)
        if decision == QUERY:
            # CHAOS names (version.bind) are answered by chain/chaos.py, never forwarded.
            if self.forward is not None and q.qclass != QClass.CH \
                    and self.forward.route(q.qname) is not None:
                self.refused_recursion += 1
                return _NO_RECURSION
            return next(q)
        self.refused_queries += 1
        return _NOT_ALLOWED


def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A client address (IPv4-mapped IPv6 as IPv4); None when it is not one."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
