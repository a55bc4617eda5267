"""Resource records and prepared bodies, built with dnslib off the per-query path."""

from __future__ import annotations

import dnslib

from globaldns.dns.wire import Body

RR = dnslib.RR

A, NS, CNAME, SOA, HINFO, TXT, AAAA, SRV, ANY = 1, 2, 5, 6, 13, 16, 28, 33, 255
IN, CH = 1, 3


def a(name: str, ttl: int, address: str) -> RR:
    return RR(name, A, rdata=dnslib.A(address), ttl=ttl)


def aaaa(name: str, ttl: int, address: str) -> RR:
    return RR(name, AAAA, rdata=dnslib.AAAA(address), ttl=ttl)


def address(name: str, ttl: int, ip: str) -> RR:
    return aaaa(name, ttl, ip) if ":" in ip else a(name, ttl, ip)


def srv(name: str, ttl: int, *, priority: int, weight: int, port: int, target: str) -> RR:
    return RR(name, SRV, rdata=dnslib.SRV(priority, weight, port, target), ttl=ttl)


def soa(zone: str, ttl: int, *, serial: int, minimum: int) -> RR:
    # refresh/retry/expire matter only to secondaries, which we do not have.
    return RR(zone, SOA, ttl=ttl, rdata=dnslib.SOA(
        f"ns.{zone}", f"hostmaster.{zone}", (serial, 60, 30, 3600, minimum)))


def ns(zone: str, ttl: int, target: str) -> RR:
    return RR(zone, NS, rdata=dnslib.NS(target), ttl=ttl)


def cname(name: str, ttl: int, target: str) -> RR:
    return RR(name, CNAME, rdata=dnslib.CNAME(target), ttl=ttl)


def txt(name: str, ttl: int, lines: list[str], rclass: int = IN) -> RR:
    return RR(name, TXT, rclass=rclass, rdata=dnslib.TXT([s.encode()[:255] for s in lines]),
              ttl=ttl)


def hinfo_rfc8482(name: str, ttl: int) -> RR:
    """RFC 8482 4.2: answer ANY with one synthesized HINFO record."""
    # dnslib has no HINFO type: its rdata is two character-strings, CPU and OS.
    return RR(name, HINFO, rdata=dnslib.RD(b"\x07RFC8482\x00"), ttl=ttl)


class _Uncompressed(dnslib.DNSBuffer):
    def encode_name(self, name: object) -> None:
        self.encode_name_nocompress(name)


def body(qname: str | None, *, rcode: int = 0, aa: bool = True, answer: list[RR] = (),  # type: ignore[assignment]
         authority: list[RR] = (), additional: list[RR] = ()) -> Body:  # type: ignore[assignment]
    """Encode the sections after a question for `qname` (lowercase), compressed against it.
    With `qname` None the body serves any question (a zone's NXDOMAIN): no compression,
    since pointers would depend on the question's length."""
    buffer = dnslib.DNSBuffer() if qname is not None else _Uncompressed()
    if qname is not None:
        buffer.append(b"\0" * 12)
        buffer.encode_name(dnslib.DNSLabel(qname))
        buffer.pack("!HH", 1, 1)
    start = buffer.offset
    cuts = []
    an = ns_count = ar = 0
    for section, records in enumerate((answer, authority, additional)):
        for rr in records:
            rr.pack(buffer)
            if section == 0:
                an += 1
            elif section == 1:
                ns_count += 1
            else:
                ar += 1
            cuts.append((buffer.offset - start, an, ns_count, ar))
    return Body(rcode, aa, bytes(buffer.data[start:]), an, ns_count, ar, tuple(cuts))
