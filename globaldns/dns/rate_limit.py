"""Response rate limiting over UDP, as BIND's RRL: a client (its /24 or /56) that gets the
same answer too often gets most of its copies dropped and every `slip`-th one as an empty
TC reply, so a real client retries over TCP (never limited) and a spoofed victim is sent
little.

Accounting is per client prefix and per answer: a positive answer or NODATA by (qname,
qtype), an NXDOMAIN by its zone (the owner of its SOA, else the qname), any other rcode
(errors) by qclass. Each account holds a balance of credits: it gains `rate` a second up to
`rate`, each reply spends one; below zero the reply is limited, and the debt is capped at
`window` seconds of credit, so a client that floods must stay quiet for up to `window`
seconds before it is answered again (BIND's rrl.c does the same).

The accounts live in a table of at most `table_size` entries, the least recently used (to a second)
evicted first (BIND's max-table-size). A query with a valid server cookie (RFC 7873) and
clients in `exempt` are never limited.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import Final

from globaldns.dns.message import FLAG_AA, FLAG_TC, Query, presentation
from globaldns.dns.names import Rcode
from globaldns.dns.stats import Stats
from globaldns.dns.wire import Body, Reply, encode, rcode_body

PASS: Final = 0
DROP: Final = 1
SLIP: Final = 2

# Client addresses whose prefix (or exemption) is remembered; past it, that memory starts
# over.
MAX_CLIENTS = 65_536

_NOERROR, _NXDOMAIN = int(Rcode.NOERROR), int(Rcode.NXDOMAIN)
_UNKNOWN = b"?"
# Who made a slip (`Reply.by`); limited replies are not observed, so the query log never
# shows it.
BY: Final = "rate_limit"
_BADCOOKIE = Reply(rcode_body(Rcode.BADCOOKIE), by=BY)


class RateLimit:
    def __init__(self, *, responses: int, errors: int, nxdomains: int, slip: int,
                 window: float, ipv4_prefix: int, ipv6_prefix: int, exempt: tuple[str, ...],
                 table_size: int, stats: Stats,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rates = (responses, nxdomains, errors)
        """Replies a second per account, by kind (answer, NXDOMAIN, error); 0: unlimited."""
        self.slip = slip
        self.window = window
        self.ipv4_prefix = ipv4_prefix
        self.ipv6_prefix = ipv6_prefix
        self.exempt = tuple(ipaddress.ip_network(n) for n in exempt)
        self.table_size = table_size
        self.stats = stats
        self.clock = clock
        self.accounts: dict[tuple[bytes, int, object, int], list[float]] = {}
        """(client prefix, kind, name or class, qtype) → [balance, last update, limited
        replies, last moved]; in least-recently-used order, to a second."""
        self.clients: dict[str, bytes | None] = {}
        """Client address → its prefix as packed bytes (None: exempt)."""

    def prefix(self, ip: str) -> bytes | None:
        """The client's account prefix; None when it is exempt."""
        try:
            return self.clients[ip]
        except KeyError:
            pass
        address = ipaddress.ip_address(ip.split("%", 1)[0])
        if any(address in net for net in self.exempt):
            found = None
        else:
            bits = self.ipv4_prefix if address.version == 4 else self.ipv6_prefix
            found = ipaddress.ip_network(f"{address}/{bits}", strict=False) \
                .network_address.packed
        if len(self.clients) >= MAX_CLIENTS:
            self.clients.clear()
        self.clients[ip] = found
        return found

    def verdict(self, ip: str, q: Query, body: Body) -> int:
        """PASS, DROP or SLIP for this reply to q over UDP; counts what it limits."""
        if q.cookie_ok:
            return PASS
        prefix = self.clients.get(ip, _UNKNOWN)
        if prefix is _UNKNOWN:
            prefix = self.prefix(ip)
        if prefix is None:
            return PASS
        rcode = body.rcode
        if rcode == _NOERROR:
            return self._spend(prefix, 0, q.qname, q.qtype)
        if rcode == _NXDOMAIN:
            return self._spend(prefix, 1, zone_of(q.qname, body.data, body.an, body.ns), 0)
        return self._spend(prefix, 2, q.qclass, 0)

    def cached(self, ip: str, out: bytes) -> bytes | None:
        """For a whole reply from the wire cache (dns/fastpath.py, which holds only
        queries without EDNS options, so no cookie): the reply itself, a slip, or None
        (dropped). Its question is read back from its bytes."""
        prefix = self.clients.get(ip, _UNKNOWN)
        if prefix is _UNKNOWN:
            prefix = self.prefix(ip)
        if prefix is None:
            return out
        qend = out.index(0, 12) + 1  # the question's name, never compressed in a reply
        qname = out[12:qend].lower()
        rcode = out[3] & 0xF
        if rcode == _NOERROR:
            verdict = self._spend(prefix, 0, qname, (out[qend] << 8) | out[qend + 1])
        elif rcode == _NXDOMAIN:
            verdict = self._spend(prefix, 1, zone_of(qname, out[qend + 4 :],
                                                     (out[6] << 8) | out[7],
                                                     (out[8] << 8) | out[9]), 0)
        else:
            verdict = self._spend(prefix, 2, (out[qend + 2] << 8) | out[qend + 3], 0)
        if verdict == PASS:
            return out
        if verdict == DROP:
            return None
        # The slip: header with TC, the question, and the OPT record when it is ours
        # without options (the last 11 bytes).
        opt = out[-11:] if out[10:12] != b"\0\0" and out[-11:-8] == b"\0\0\x29" \
            and out[-2:] == b"\0\0" else b""
        return out[:2] + bytes((out[2] | FLAG_TC >> 8, out[3])) + b"\0\x01\0\0\0\0" \
            + (b"\0\x01" if opt else b"\0\0") + out[12 : qend + 4] + opt

    def _spend(self, prefix: bytes, kind: int, what: object, qtype: int) -> int:
        """One reply from the account (prefix, kind, what, qtype): PASS, DROP or SLIP."""
        rate = self.rates[kind]
        if not rate:
            return PASS
        key = (prefix, kind, what, qtype)
        now = self.clock()
        accounts = self.accounts
        account = accounts.get(key)
        if account is None:
            if len(accounts) >= self.table_size:
                del accounts[next(iter(accounts))]
            account = accounts[key] = [rate - 1.0, now, 0.0, now]
            return PASS
        balance = account[0] + (now - account[1]) * rate
        if balance > rate:
            balance = rate
        account[1] = now
        if now - account[3] >= 1.0:
            # Least recently used first, to a second: moved to the end at most once a
            # second, so a busy account costs no dict reshuffle per reply.
            del accounts[key]
            accounts[key] = account
            account[3] = now
        balance -= 1.0
        if balance >= 0:
            account[0] = balance
            return PASS
        floor = -self.window * rate
        account[0] = floor if balance < floor else balance
        account[2] += 1
        if self.slip and account[2] % self.slip == 0:
            self.stats.rate_limit_slipped += 1
            return SLIP
        self.stats.rate_limit_dropped += 1
        return DROP

    def limited(self, ip: str) -> list[str]:
        """Explain: the accounts of this client's prefix that are limiting now."""
        prefix = self.prefix(ip)
        if prefix is None:
            return []
        now = self.clock()
        out = []
        for (owner, kind, what, qtype), (balance, last, _, _) in self.accounts.items():
            if owner != prefix:
                continue
            rate = self.rates[kind]
            if balance + (now - last) * rate < 0:
                out.append(_describe(kind, what, qtype))
        return out

    def network(self, ip: str) -> str:
        prefix = self.prefix(ip)
        if prefix is None:
            return f"{ip} (exempt)"
        bits = self.ipv4_prefix if len(prefix) == 4 else self.ipv6_prefix
        return f"{ipaddress.ip_address(prefix)}/{bits}"


def slip_reply(q: Query, body: Body) -> bytes:
    """An empty reply with TC set (RFC 1035 4.1.1: retry over TCP), or, to a client that
    sent a client cookie, BADCOOKIE with a fresh server cookie (RFC 7873 5.4: it retries
    over UDP with that cookie, and is then exempt)."""
    if q.cookie_reply:
        return encode(q, _BADCOOKIE)
    wire = encode(q, Reply(Body(body.rcode, bool(body.flags & FLAG_AA), b"", 0, 0, 0),
                           by=BY))
    return wire[:2] + bytes((wire[2] | FLAG_TC >> 8,)) + wire[3:]


def zone_of(qname: bytes, data: bytes, an: int, ns: int) -> bytes:
    """The owner of an NXDOMAIN's SOA (the first authority record, at the start of the
    body `data`): BIND's account for NXDOMAINs, so random names under one zone share one.
    That name is written in full or points into the question (dns/wire.py Body); else the
    qname."""
    if not ns or an or not data:
        return qname
    out = bytearray()
    i = 0
    while i < len(data) and len(out) <= 255:
        length = data[i]
        if length >= 0xC0:
            if i + 1 >= len(data):
                return qname
            offset = ((length & 0x3F) << 8 | data[i + 1]) - 12
            return bytes(out).lower() + qname[offset:] if 0 <= offset < len(qname) \
                else qname
        out += data[i : i + length + 1]
        if length == 0:
            return bytes(out).lower()
        i += length + 1
    return qname


def _describe(kind: int, what: object, qtype: int) -> str:
    if kind == 0:
        return f"answers for {presentation(what)} type {qtype}"  # type: ignore[arg-type]
    if kind == 1:
        return f"NXDOMAIN under {presentation(what)}"  # type: ignore[arg-type]
    return f"errors in class {what}"
