"""Queries: the parsed form every handler sees, and the reader that makes it.

Every byte here comes from anyone who can send a datagram, so the reader is bounded before
it is clever. The common shape (one uncompressed question, optionally one OPT record) is
read in a few slices. Anything else meets the shape gate first: an opcode other than QUERY
is NOTIMP, and QDCOUNT other than 1, records in the answer or authority section, more than
two additional records (an OPT and a TSIG), or a UDP query over 512 bytes without EDNS are
FORMERR, before a single record is read (without EDNS: when the counts show no additional
record; with one or two, once they are read and none is an OPT). What passes the gate is
read once, front to back, by `_read_unusual`: a name costs at most 255 bytes and 127
compression pointers, each pointing strictly backwards, so the worst packet of 65,535
bytes costs a few hundred steps.
Nothing of a query reaches dnslib.

Refusals never amplify: a FORMERR or NOTIMP is at most as long as the packet it answers
(the header, plus the question when it was readable and the opcode is QUERY).
"""

from __future__ import annotations

import struct
from typing import Final

from globaldns.dns.names import QType, Rcode

UDP: Final = 0
TCP: Final = 1

FLAG_QR: Final = 0x8000
FLAG_AA: Final = 0x0400
FLAG_TC: Final = 0x0200
FLAG_RD: Final = 0x0100
FLAG_RA: Final = 0x0080
FLAG_CD: Final = 0x0010

# Bound once: the parse compares plain names, not enum members (see dns/names.py).
_OPT, _TSIG = QType.OPT, QType.TSIG

OPT_NSID: Final = 3
OPT_ECS: Final = 8
OPT_COOKIE: Final = 10  # RFC 7873

# RFC 6891 6.2.5: a size below 512 is treated as 512. We never send more than 1232 bytes
# over UDP (DNS flag day 2020): larger answers get TC and the client retries over TCP.
MAX_UDP: Final = 1232

# RFC 1035 3.1: a name is at most 255 bytes. Pointers: a name of 127 one-byte labels
# needs at most 127 of them; more is a chain built to burn CPU.
MAX_NAME: Final = 255
MAX_HOPS: Final = 127
# The shape gate: no EDNS, no UDP message over 512 bytes (RFC 1035 4.2.1); at most an OPT
# and a TSIG after the question.
MAX_PLAIN_UDP: Final = 512
MAX_ADDITIONAL: Final = 2
# EDNS options one query may carry: real clients send a handful (cookie, ECS, NSID,
# padding); thousands of empty ones would only cost us a loop.
MAX_OPTIONS: Final = 16

_HH = struct.Struct("!HH")
_COUNTS = struct.Struct("!HHHH")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_OPT_FIXED = struct.Struct("!HHBBHH")  # type, class(size), ext-rcode, version, flags, rdlen


class Query:
    """One query, as the handler chain sees it. `qname` is the lowercased wire-format name
    (the key of every table); `question` the raw question bytes, echoed in the reply so
    the client gets its own casing back (resolvers randomise case, draft-vixie-dnsext-0x20)."""

    __slots__ = ("client", "cookie", "cookie_ok", "cookie_reply", "do", "ecs", "edns",
                 "edns_options", "flags", "id", "nsid", "qclass", "qname", "qtype", "question",
                 "ra", "transport")

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
        self.cookie: bytes | None = None
        """The COOKIE option's value (client cookie, then any server cookie), RFC 7873."""
        self.cookie_ok = False
        """It carried a server cookie we made (dns/cookies.py): exempt from the rate limit,
        and its UDP reply may be as large as its EDNS size."""
        self.cookie_reply = b""
        """The COOKIE option value the reply carries (empty: none)."""
        self.ra = False
        """Recursion Available, decided once by the ACL (chain/acl.py) for this client."""

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
        if self.cookie_ok:
            # RFC 7873 1: a valid server cookie shows the source address is not spoofed,
            # so the reply may be as large as the client said it can take.
            return 512 if self.edns < 512 else self.edns
        return 512 if self.edns < 512 else (self.edns if self.edns < MAX_UDP else MAX_UDP)


class Malformed(Exception):
    """The packet cannot be answered as asked; `rcode` says how to refuse it (None: drop).
    `question` is the question to echo: empty unless it was read whole and uncompressed.
    `gate`: refused by the shape gate, before any record was read."""

    def __init__(self, rcode: int | None, question: bytes = b"", reason: str = "", *,
                 gate: bool = False, edns: bool = False, tsig: Tsig | None = None) -> None:
        super().__init__(reason)
        self.rcode = rcode
        self.question = question
        self.gate = gate
        self.edns = edns
        """The query carried a valid OPT record (so the reply carries ours)."""
        self.tsig = tsig
        """The query's TSIG, for the unsigned BADKEY record of a NOTAUTH reply."""


class Tsig:
    """What a BADKEY reply copies from the query's TSIG record (RFC 8945 4.2, 5.3.2)."""

    __slots__ = ("algorithm", "key", "original_id", "time_fudge")

    def __init__(self, key: bytes, algorithm: bytes, time_fudge: bytes,
                 original_id: bytes) -> None:
        self.key = key
        self.algorithm = algorithm
        self.time_fudge = time_fudge
        """Time Signed (48 bits) and Fudge (16 bits), as sent."""
        self.original_id = original_id


def presentation(name: bytes) -> str:
    """A wire-format name as text for logs and pages, without the trailing dot but for
    the root (RFC 1035 5.1 escapes): printable
    ASCII as is, `.` and `\\` inside a label escaped, every other byte as `\\DDD`, so no
    control character, quote or line break of a query name reaches a log line."""
    labels = []
    i = 0
    while i < len(name) and name[i]:
        n = name[i]
        labels.append("".join(_ESCAPED[b] for b in name[i + 1 : i + 1 + n]))
        i += n + 1
    return ".".join(labels) if labels else "."


_ESCAPED = tuple(
    chr(b) if 0x21 <= b <= 0x7E and chr(b) not in '."\\;()@$' else
    ("\\" + chr(b) if 0x21 <= b <= 0x7E else f"\\{b:03d}")
    for b in range(256))


def wire_to_text(name: bytes) -> str:
    labels = []
    i = 0
    while name[i]:
        n = name[i]
        labels.append(name[i + 1 : i + 1 + n].decode("latin-1"))
        i += n + 1
    return ".".join(labels)


def text_to_wire(name: str) -> bytes:
    """`user-service.production.global` → wire format (lowercased): the one encoder of a
    name from text. Raises ValueError for a label past 63 bytes (its length byte would
    read as a compression pointer) or a character past latin-1."""
    out = bytearray()
    for label in name.lower().strip(".").split("."):
        if label:
            raw = label.encode("latin-1")
            if len(raw) > 63:
                raise ValueError(f"label too long in {name!r}")
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
        return _read_unusual(data, client, transport, flags)
    qtype, qclass = _HH.unpack_from(data, end)
    q = Query(data[:2], flags, data[12:end].lower(), data[12 : end + 4], qtype, qclass,
              client, transport)
    ar = counts[7] | (counts[6] << 8)
    pos = end + 4
    if ar == 0:
        if pos != size:
            if transport == UDP and size > MAX_PLAIN_UDP:
                raise Malformed(Rcode.FORMERR, b"", f"{size} bytes over UDP without EDNS",
                                gate=True)
            raise Malformed(Rcode.FORMERR, q.question, "trailing bytes after the question")
        return q
    if ar != 1 or pos + 11 > size or data[pos] != 0:
        return _read_unusual(data, client, transport, flags)
    rtype, payload, _ext, version, eflags, rdlen = _OPT_FIXED.unpack_from(data, pos + 1)
    if rtype != _OPT or pos + 11 + rdlen != size:
        return _read_unusual(data, client, transport, flags)
    _edns(q, payload, version, eflags, data[pos + 11 :])
    return q


def _edns(q: Query, payload: int, version: int, eflags: int, rdata: bytes) -> None:
    q.edns = payload
    if version != 0:
        raise Malformed(Rcode.BADVERS, q.question, f"EDNS version {version}", edns=True)
    q.do = bool(eflags & 0x8000)
    if not rdata:
        return
    options: list[tuple[int, bytes]] = []
    i = 0
    n = len(rdata)
    while i < n:
        if len(options) == MAX_OPTIONS:
            raise Malformed(Rcode.FORMERR, q.question, f"more than {MAX_OPTIONS} EDNS options")
        if i + 4 > n:
            raise Malformed(Rcode.FORMERR, q.question, "truncated EDNS option")
        code, length = _HH.unpack_from(rdata, i)
        value = rdata[i + 4 : i + 4 + length]
        if len(value) != length:
            raise Malformed(Rcode.FORMERR, q.question, "truncated EDNS option")
        options.append((code, value))
        if code == OPT_NSID:
            q.nsid = True
        elif code == OPT_ECS:
            if q.ecs is not None:  # RFC 7871 7.1.1: more than one ECS option is FORMERR
                raise Malformed(Rcode.FORMERR, q.question, "two ECS options")
            q.ecs = _ecs(value, q.question)
        elif code == OPT_COOKIE:
            # RFC 7873 5.2.2: a client cookie of 8 bytes, and a server cookie of 8 to 32
            # bytes or none; any other length is FORMERR. Two COOKIE options: which one
            # holds? FORMERR too, as BIND answers.
            if q.cookie is not None:
                raise Malformed(Rcode.FORMERR, q.question, "two COOKIE options")
            if length != 8 and not 16 <= length <= 40:
                raise Malformed(Rcode.FORMERR, q.question, f"COOKIE option of {length} bytes")
            q.cookie = value
        i += 4 + length
    q.edns_options = tuple(options)


def _ecs(value: bytes, question: bytes) -> tuple[int, int, bytes]:
    """RFC 7871 6: FAMILY, SOURCE PREFIX-LENGTH, SCOPE PREFIX-LENGTH, ADDRESS; ADDRESS is
    cut to the source prefix and its bits past it are zero (7.1.1: FORMERR otherwise)."""
    if len(value) < 4:
        raise Malformed(Rcode.FORMERR, question, "short ECS option")
    family = (value[0] << 8) | value[1]
    source, scope = value[2], value[3]
    address = value[4:]
    width = {1: 32, 2: 128}.get(family)
    if width is None or source > width or scope != 0 or len(address) != (source + 7) // 8:
        raise Malformed(Rcode.FORMERR, question, "invalid ECS option")
    if source % 8 and address[-1] & (0xFF >> (source % 8)):
        raise Malformed(Rcode.FORMERR, question, "ECS address bits beyond the source prefix")
    return family, source, address


def read_name(data: bytes, pos: int) -> tuple[bytes, int]:
    """The name at `pos` (uncompressed, lowercased wire format) and the offset just past it.
    Bounded: at most MAX_NAME bytes of name and MAX_HOPS pointers, each pointing past the
    header and strictly before where the previous jump landed, so no byte is read twice;
    raises ValueError otherwise."""
    size = len(data)
    out = bytearray()
    end = -1
    floor = pos
    hops = 0
    while True:
        if pos >= size:
            raise ValueError("name runs past the end of the message")
        length = data[pos]
        if length >= 0xC0:
            if pos + 1 >= size:
                raise ValueError("name runs past the end of the message")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target < 12 or target >= floor:
                raise ValueError("compression pointer that does not point backwards")
            hops += 1
            if hops > MAX_HOPS:
                raise ValueError("too many compression pointers")
            if end < 0:
                end = pos + 2
            pos = floor = target
            continue
        if length > 63:
            raise ValueError("unknown label type")
        if len(out) + length + 1 > MAX_NAME:
            raise ValueError("name longer than 255 bytes")
        out += data[pos : pos + length + 1]
        if length == 0:
            return bytes(out).lower(), pos + 1 if end < 0 else end
        pos += length + 1


def _read_unusual(data: bytes, client: tuple[str, int], transport: int, flags: int) -> Query:
    """Every shape but the common one: the gate, then one bounded pass over the records."""
    size = len(data)
    opcode = (flags >> 11) & 0xF
    if opcode != 0:
        # RFC 6895 2: what the sections mean depends on the opcode; echo none of them.
        raise Malformed(Rcode.NOTIMP, b"", f"opcode {opcode}", gate=True)
    qdcount, ancount, nscount, arcount = _COUNTS.unpack_from(data, 4)
    if qdcount != 1:
        raise Malformed(Rcode.FORMERR, b"", f"QDCOUNT {qdcount}", gate=True)
    if ancount or nscount:
        raise Malformed(Rcode.FORMERR, b"", "records in the answer or authority section", gate=True)
    if arcount > MAX_ADDITIONAL:
        raise Malformed(Rcode.FORMERR, b"", f"{arcount} additional records", gate=True)
    if arcount == 0 and transport == UDP and size > MAX_PLAIN_UDP:
        raise Malformed(Rcode.FORMERR, b"", f"{size} bytes over UDP without EDNS", gate=True)
    end = _question_end(data)
    if end < 0:
        # A pointer (there is nothing before the question to point at), a bad label, or
        # a name past 255 bytes: the question cannot be echoed.
        raise Malformed(Rcode.FORMERR, b"", "unreadable question name")
    if end + 4 > size:
        raise Malformed(Rcode.FORMERR, b"", "question cut short")
    question = data[12 : end + 4]
    qtype, qclass = _HH.unpack_from(data, end)
    q = Query(data[:2], flags, data[12:end].lower(), question, qtype, qclass, client,
              transport)
    pos = end + 4
    opt: tuple[int, int, int, int] | None = None
    tsig: tuple[bytes, int, int] | None = None
    for _ in range(arcount):
        if tsig is not None:  # RFC 8945 5.1: the TSIG must be the last record
            raise Malformed(Rcode.FORMERR, question, "TSIG is not the last record")
        try:
            owner, pos = read_name(data, pos)
        except ValueError as exc:
            raise Malformed(Rcode.FORMERR, question, f"additional record: {exc}") from None
        if pos + 10 > size:
            raise Malformed(Rcode.FORMERR, question, "additional record cut short")
        rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, pos)
        start = pos + 10
        pos = start + rdlen
        if pos > size:
            raise Malformed(Rcode.FORMERR, question, "additional record cut short")
        if rtype == _OPT:
            if opt is not None:  # RFC 6891 6.1.1
                raise Malformed(Rcode.FORMERR, question, "more than one OPT record")
            if owner != b"\0":
                raise Malformed(Rcode.FORMERR, question, "OPT owner is not the root")
            opt = (rclass, ttl, start, pos)
        elif rtype == _TSIG:
            tsig = (owner, start, pos)
        # Any other record type in a query's additional section is ignored.
    if pos != size:
        raise Malformed(Rcode.FORMERR, question, "trailing bytes after the records")
    if opt is None:
        if transport == UDP and size > MAX_PLAIN_UDP:  # the gate's size rule, now known
            raise Malformed(Rcode.FORMERR, b"", f"{size} bytes over UDP without EDNS", gate=True)
    else:
        rclass, ttl, start, stop = opt
        _edns(q, rclass, (ttl >> 16) & 0xFF, ttl & 0xFFFF, data[start:stop])
    if tsig is not None:
        raise _unknown_key(data, q, *tsig)
    return q


def _unknown_key(data: bytes, q: Query, key: bytes, start: int, stop: int) -> Malformed:
    """RFC 8945 5.2.2: we hold no TSIG keys, so any signed query is NOTAUTH, answered with
    an unsigned TSIG record (5.3.2) naming the same key and algorithm, error BADKEY."""
    edns = q.edns >= 0
    try:
        algorithm, pos = read_name(data[:stop], start)
    except ValueError as exc:
        return Malformed(Rcode.FORMERR, q.question, f"TSIG algorithm: {exc}", edns=edns)
    if pos + 10 > stop:
        return Malformed(Rcode.FORMERR, q.question, "TSIG record cut short", edns=edns)
    time_fudge = data[pos : pos + 8]
    mac_size = (data[pos + 8] << 8) | data[pos + 9]
    pos += 10 + mac_size
    if pos + 6 > stop:
        return Malformed(Rcode.FORMERR, q.question, "TSIG record cut short", edns=edns)
    original_id = data[pos : pos + 2]
    other_len = (data[pos + 4] << 8) | data[pos + 5]
    if pos + 6 + other_len != stop:
        return Malformed(Rcode.FORMERR, q.question, "TSIG record length mismatch", edns=edns)
    return Malformed(Rcode.NOTAUTH, q.question, "TSIG key unknown", edns=edns,
                     tsig=Tsig(key, algorithm, time_fudge, original_id))
