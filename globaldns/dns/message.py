"""Queries: the parsed form every handler sees, and the parser that makes it.

The common shape (one question, optionally one OPT record) is parsed here without dnslib,
because every pod's lookups pass through it. Anything else goes through dnslib, which
decides between a Query, FORMERR and NOTIMP, so behaviour never depends on the path taken.
"""

from __future__ import annotations

import struct
from typing import Final

import dnslib

UDP: Final = 0
TCP: Final = 1

FLAG_QR: Final = 0x8000
FLAG_AA: Final = 0x0400
FLAG_TC: Final = 0x0200
FLAG_RD: Final = 0x0100
FLAG_RA: Final = 0x0080
FLAG_CD: Final = 0x0010

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS: Final = 16

OPT_NSID: Final = 3
OPT_ECS: Final = 8

# RFC 6891 6.2.5: a size below 512 is treated as 512. We never send more than 1232 bytes
# over UDP (DNS flag day 2020): larger answers get TC and the client retries over TCP.
MAX_UDP: Final = 1232

_HH = struct.Struct("!HH")
_OPT_FIXED = struct.Struct("!HHBBHH")  # type, class(size), ext-rcode, version, flags, rdlen


class Query:
    """One query, as the handler chain sees it. `qname` is the lowercased wire-format name
    (the key of every table); `question` the raw question bytes, echoed in the reply so
    the client gets its own casing back (resolvers randomise case, draft-vixie-dnsext-0x20)."""

    __slots__ = ("answers", "client", "do", "ecs", "edns", "edns_options", "flags", "id",
                 "nsid", "qclass", "qname", "qtype", "question", "transport")

    def __init__(self, qid: bytes, flags: int, qname: bytes, question: bytes, qtype: int,
                 qclass: int, client: tuple[str, int], transport: int) -> None:
        self.id = qid
        self.flags = flags
        self.qname = qname
        self.question = question
        self.qtype = qtype
        self.qclass = qclass
        self.client = client
        self.transport = transport
        self.edns = -1
        """-1 without EDNS, else the client's UDP payload size."""
        self.do = False
        self.nsid = False
        self.ecs: tuple[int, int, bytes] | None = None
        """EDNS Client Subnet (family, source prefix, address bytes), RFC 7871."""
        self.edns_options: tuple[tuple[int, bytes], ...] = ()
        self.answers: object = None
        """Set by the handler that answered from the snapshot: the wire cache may keep it."""

    @property
    def name(self) -> str:
        """The query name as text, lowercased, without the trailing dot (for logs/debug)."""
        return wire_to_text(self.qname)

    def limit(self) -> int:
        """The largest reply this client can take."""
        if self.transport == TCP:
            return 65535
        if self.edns < 0:
            return 512
        return 512 if self.edns < 512 else (self.edns if self.edns < MAX_UDP else MAX_UDP)


class Malformed(Exception):
    """The packet cannot be answered as asked; `rcode` says how to refuse it (None: drop)."""

    def __init__(self, rcode: int | None, question: bytes = b"", reason: str = "") -> None:
        super().__init__(reason)
        self.rcode = rcode
        self.question = question


def wire_to_text(name: bytes) -> str:
    labels = []
    i = 0
    while name[i]:
        n = name[i]
        labels.append(name[i + 1 : i + 1 + n].decode("latin-1"))
        i += n + 1
    return ".".join(labels)


def text_to_wire(name: str) -> bytes:
    """`user-service.production.global` → wire format (lowercased)."""
    out = bytearray()
    for label in name.lower().strip(".").split("."):
        if label:
            raw = label.encode("latin-1")
            out.append(len(raw))
            out += raw
    out.append(0)
    return bytes(out)


def _question_end(data: bytes) -> int:
    """Offset just past the question's name (no compression allowed there), or -1."""
    i = 12
    n = len(data)
    while i < n:
        length = data[i]
        if length == 0:
            return i + 1 if i - 12 < 255 else -1
        if length > 63:
            return -1
        i += length + 1
    return -1


def parse(data: bytes, client: tuple[str, int], transport: int) -> Query | None:
    """A Query; None for a packet to drop; raises Malformed for one to refuse."""
    size = len(data)
    if size < 12:
        return None
    flags = (data[2] << 8) | data[3]
    if flags & 0x8000:  # a response sent to us as a query: never answer (no reflection)
        return None
    counts = data[4:12]
    end = _question_end(data) if counts[1] == 1 and counts[0] == 0 else -1
    if end < 0 or end + 4 > size or flags & 0x7800 or counts[2:6] != b"\0\0\0\0":
        return _parse_slow(data, client, transport, flags)
    qtype, qclass = _HH.unpack_from(data, end)
    q = Query(data[:2], flags, data[12:end].lower(), data[12 : end + 4], qtype, qclass,
              client, transport)
    ar = counts[7] | (counts[6] << 8)
    pos = end + 4
    if ar == 0:
        if pos != size:
            raise Malformed(FORMERR, q.question, "trailing bytes after the question")
        return q
    if ar != 1 or pos + 11 > size or data[pos] != 0:
        return _parse_slow(data, client, transport, flags)
    rtype, payload, _ext, version, eflags, rdlen = _OPT_FIXED.unpack_from(data, pos + 1)
    if rtype != 41 or pos + 11 + rdlen != size:
        return _parse_slow(data, client, transport, flags)
    _edns(q, payload, version, eflags, data[pos + 11 :])
    return q


def _edns(q: Query, payload: int, version: int, eflags: int, rdata: bytes) -> None:
    if version != 0:
        q.edns = payload
        raise Malformed(BADVERS, q.question, f"EDNS version {version}")
    q.edns = payload
    q.do = bool(eflags & 0x8000)
    if not rdata:
        return
    options = []
    i = 0
    n = len(rdata)
    while i < n:
        if i + 4 > n:
            raise Malformed(FORMERR, q.question, "truncated EDNS option")
        code, length = _HH.unpack_from(rdata, i)
        value = rdata[i + 4 : i + 4 + length]
        if len(value) != length:
            raise Malformed(FORMERR, q.question, "truncated EDNS option")
        options.append((code, value))
        if code == OPT_NSID:
            q.nsid = True
        elif code == OPT_ECS:
            q.ecs = _ecs(value, q.question)
        i += 4 + length
    q.edns_options = tuple(options)


def _ecs(value: bytes, question: bytes) -> tuple[int, int, bytes]:
    """RFC 7871 6: FAMILY, SOURCE PREFIX-LENGTH, SCOPE PREFIX-LENGTH, ADDRESS."""
    if len(value) < 4:
        raise Malformed(FORMERR, question, "short ECS option")
    family = (value[0] << 8) | value[1]
    source, scope = value[2], value[3]
    address = value[4:]
    width = {1: 32, 2: 128}.get(family)
    if width is None or source > width or scope != 0 or len(address) != (source + 7) // 8:
        raise Malformed(FORMERR, question, "invalid ECS option")
    return family, source, address


def _parse_slow(data: bytes, client: tuple[str, int], transport: int, flags: int) -> Query:
    """Unusual packets: dnslib decides whether they are readable at all."""
    end = _question_end(data)
    question = data[12 : end + 4] if end > 0 and end + 4 <= len(data) else b""
    qdcount = (data[4] << 8) | data[5]
    if qdcount != 1:
        question = b""
    opcode = (flags >> 11) & 0xF
    if opcode != 0:
        raise Malformed(NOTIMP, question, f"opcode {opcode}")
    if qdcount != 1:
        raise Malformed(FORMERR, b"", f"QDCOUNT {qdcount}")
    try:
        record = dnslib.DNSRecord.parse(data)
    except Exception as exc:  # dnslib raises several types for bad input
        raise Malformed(FORMERR, question, f"unreadable body: {exc}") from None
    if not question:
        raise Malformed(FORMERR, b"", "question uses compression")
    if record.rr or record.auth:
        raise Malformed(FORMERR, question, "records in the answer or authority section")
    opts = [rr for rr in record.ar if rr.rtype == dnslib.QTYPE.OPT]
    if len(opts) > 1:
        raise Malformed(FORMERR, question, "more than one OPT record")  # RFC 6891 6.1.1
    q = Query(data[:2], flags, data[12:end].lower(), question,
              record.q.qtype, record.q.qclass, client, transport)
    if opts:
        opt = opts[0]
        if str(opt.rname) not in (".", ""):
            raise Malformed(FORMERR, question, "OPT owner is not the root")
        rdata = b"".join(struct.pack("!HH", o.code, len(o.data)) + o.data for o in opt.rdata)
        _edns(q, opt.rclass, (opt.ttl >> 16) & 0xFF, opt.ttl & 0xFFFF, rdata)
    return q
