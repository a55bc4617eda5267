"""Resource records and prepared bodies, encoded off the per-query path.

Our own small encoder rather than dnslib's: a registry change re-prepares every answer of
one service, and dnslib's generic packing made that cost milliseconds. Names are
compressed against the question (offset 12) and earlier names in the body, except where
an RFC forbids it (the SRV target, RFC 2782).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Sequence
from typing import NamedTuple

from globaldns.dns.message import text_to_wire
from globaldns.dns.names import QClass, QType
from globaldns.dns.wire import Body

_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength


class Writer:
    """A body being encoded, with the compression table of the names written so far."""

    __slots__ = ("base", "data", "names", "qname")

    def __init__(self, qname: str | None) -> None:
        self.data = bytearray()
        self.names: dict[str, int] = {}
        self.base = 0
        self.qname = qname
        if qname is not None:
            # The question sits at offset 12; the body starts after it.
            self.base = 12 + len(text_to_wire(qname)) + 4
            self._register(qname, 12)

    def _register(self, name: str, offset: int) -> None:
        labels = name.split(".") if name else []
        names = self.names
        for i in range(len(labels)):
            suffix = ".".join(labels[i:])
            if suffix not in names and offset < 0x4000:
                names[suffix] = offset
            offset += len(labels[i]) + 1

    def name(self, name: str) -> None:
        data = self.data
        if name == self.qname:
            data += b"\xc0\x0c"  # the question's name, the usual owner
            return
        name = name.lower().rstrip(".")
        labels = name.split(".") if name else []
        names = self.names
        offset = self.base + len(data)
        for i in range(len(labels)):
            suffix = ".".join(labels[i:])
            pointer = names.get(suffix)
            if pointer is not None:
                data += (0xC000 | pointer).to_bytes(2, "big")
                return
            if offset < 0x4000:
                names[suffix] = offset
            raw = labels[i].encode("latin-1")
            data.append(len(raw))
            data += raw
            offset += len(raw) + 1
        data.append(0)


Rdata = bytes | Callable[[Writer], None]


class RR(NamedTuple):
    rname: str
    rtype: int
    ttl: int
    rdata: Rdata
    rclass: int = QClass.IN

    def pack(self, w: Writer) -> None:
        w.name(self.rname)
        data = w.data
        at = len(data)
        data += _FIXED.pack(self.rtype, self.rclass, self.ttl, 0)
        if self.rdata.__class__ is bytes:
            data += self.rdata
        else:
            self.rdata(w)  # type: ignore[operator]
        struct.pack_into("!H", data, at + 8, len(data) - at - 10)


def address(name: str, ttl: int, ip: str) -> RR:
    rtype, rdata = address_rdata(ip)
    return RR(name, rtype, ttl, rdata)


def _names(*names: str, tail: bytes = b"") -> Callable[[Writer], None]:
    def write(w: Writer) -> None:
        for n in names:
            w.name(n)
        w.data += tail
    return write


def soa(zone: str, ttl: int, *, serial: int, minimum: int) -> RR:
    # refresh/retry/expire matter only to secondaries, which we do not have.
    return RR(zone, QType.SOA, ttl, _names(f"ns.{zone}", f"hostmaster.{zone}",
                                     tail=struct.pack("!IIIII", serial, 60, 30, 3600, minimum)))


def ns(zone: str, ttl: int, target: str) -> RR:
    return RR(zone, QType.NS, ttl, _names(target))


def cname(name: str, ttl: int, target: str) -> RR:
    return RR(name, QType.CNAME, ttl, _names(target))


def txt(name: str, ttl: int, lines: list[str], rclass: int = QClass.IN) -> RR:
    data = b"".join(bytes([len(raw)]) + raw for raw in (s.encode()[:255] for s in lines))
    return RR(name, QType.TXT, ttl, data, rclass)


def hinfo_rfc8482(name: str, ttl: int) -> RR:
    """RFC 8482 4.2: answer ANY with one synthesized HINFO record."""
    return RR(name, QType.HINFO, ttl, b"\x07RFC8482\x00")


def body(qname: str | None, *, rcode: int = 0, aa: bool = True, answer: Sequence[RR] = (),
         authority: Sequence[RR] = (), additional: Sequence[RR] = ()) -> Body:
    """Encode the sections after a question for `qname` (lowercase), compressed against it.
    With `qname` None the body serves any question (a zone's NXDOMAIN): no compression
    against the question, since its offsets would depend on the question's length."""
    w = Writer(qname)
    if qname is None:
        w.names = _NoNames()
    for records in (answer, authority, additional):
        for rr in records:
            rr.pack(w)
    return Body(rcode, aa, bytes(w.data), len(answer), len(authority), len(additional))


def record(owner: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    """One whole record with a fixed owner: `QUESTION` (a pointer to the question's name)
    or an uncompressed wire name. Such records stand alone, so an answer in any order is
    their concatenation: rotated variants cost a join, not an encoding."""
    return owner + _FIXED.pack(rtype, QClass.IN, ttl, len(rdata)) + rdata


QUESTION = b"\xc0\x0c"


def address_rdata(ip: str) -> tuple[int, bytes]:
    if ":" in ip:
        return QType.AAAA, socket.inet_pton(socket.AF_INET6, ip)
    return QType.A, socket.inet_pton(socket.AF_INET, ip)


def srv_rdata(*, priority: int, weight: int, port: int, target: str) -> bytes:
    # RFC 2782: "name compression is not to be used for this field".
    return struct.pack("!HHH", priority, weight, port) + text_to_wire(target)


def joined(answer: Sequence[bytes], additional: Sequence[bytes] = ()) -> Body:
    """A body from standalone records (see `record`)."""
    return Body(0, True, b"".join(answer) + b"".join(additional), len(answer), 0,
                len(additional))


class _NoNames(dict[str, int]):
    """A compression table that keeps nothing."""

    def __setitem__(self, key: str, value: int) -> None:
        return None
