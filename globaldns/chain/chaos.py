"""CHAOS-class TXT answers: who we are, and why an answer is what it is.

- `version.bind` / `version.server`: our version; `id.server` / `hostname.bind`: the
  instance name (as NSID), the way BIND, unbound and CoreDNS's `chaos` plugin answer them.
- `CH TXT <a name of a served zone>`: the routing decision for this client, one TXT record
  per line (`globaldns explain`'s lines): its locality and where that came from, the
  matched rule, every endpoint with cluster, locality, health and tier, the answer. Only
  for clients in `acl.allow_debug` (default loopback): anyone else gets REFUSED with EDE
  18 "Prohibited" (RFC 8914), since the explanation shows the whole topology.

It sits after `globalzone` in the chain, which passes every non-IN class on, so the
prepared IN answers never pay for it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Final

from globaldns import __version__
from globaldns.chain import Next, Result
from globaldns.dns import records as R
from globaldns.dns.message import Query
from globaldns.dns.names import Ede, QClass, QType, Rcode
from globaldns.dns.wire import CHAOS, Reply, rcode_body

TTL: Final = 0  # an explanation is about this query, at this moment: never cached

VERSION_NAMES = frozenset({"version.bind", "version.server"})
ID_NAMES = frozenset({"id.server", "hostname.bind"})

_PROHIBITED = Reply(rcode_body(Rcode.REFUSED), by=CHAOS, ede=((
    Ede.PROHIBITED, "Prohibited: explanations are only given to acl.allow_debug clients"),))
_UNSUPPORTED = Reply(rcode_body(Rcode.REFUSED), by=CHAOS, ede=((
    Ede.NOT_SUPPORTED,
    "Not Supported: CHAOS class answers version.bind, id.server and names of the served zones"),))

Explainer = Callable[[Query], list[str] | None]
"""Lines explaining the answer to `q` (None: the name is in no served zone)."""


class Chaos:
    def __init__(self, *, instance: str, allow_debug: tuple[str, ...],
                 explain: Explainer) -> None:
        self.nets = [ipaddress.ip_network(n) for n in allow_debug]
        self.explain = explain
        self.version = f"globaldns {__version__}"
        self.instance = instance
        # Counters for metrics, plain integers.
        self.answers = {"version": 0, "id": 0, "explain": 0}
        self.refused = 0

    def allowed(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self.nets)

    def serve(self, q: Query, next: Next) -> Result:
        if q.qclass != QClass.CH:
            return next(q)
        name = q.name
        if name in VERSION_NAMES:
            self.answers["version"] += 1
            return self._txt(q, [self.version])
        if name in ID_NAMES:
            self.answers["id"] += 1
            return self._txt(q, [self.instance])
        if not self.allowed(q.client[0]):
            self.refused += 1
            return _PROHIBITED
        lines = self.explain(q)
        if lines is None:
            return _UNSUPPORTED
        self.answers["explain"] += 1
        return self._txt(q, lines)

    @staticmethod
    def _txt(q: Query, lines: list[str]) -> Reply:
        if q.qtype not in (QType.TXT, QType.ANY):
            return Reply(R.body(q.name, aa=True), by=CHAOS)  # NODATA
        # One record per line, so that `dig` prints one line per line; a line longer than a
        # character-string (255 bytes) continues in the next string of its record.
        return Reply(R.body(q.name, aa=True, answer=[
            R.txt(q.name, TTL, _strings(line), rclass=QClass.CH) for line in lines]), by=CHAOS)


def _strings(line: str) -> list[str]:
    raw = line.encode()
    return [raw[i : i + 255].decode("utf-8", "replace") for i in range(0, len(raw), 255)] or [""]
