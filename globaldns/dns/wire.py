"""Replies: prepared answer bodies, and the encoder that puts header, question, body and
OPT record together for one query, truncating to the client's size."""

from __future__ import annotations

import struct
from bisect import bisect_right
from typing import Final

from globaldns.dns.message import (
    FLAG_AA,
    FLAG_CD,
    FLAG_QR,
    FLAG_RA,
    FLAG_RD,
    FLAG_TC,
    MAX_UDP,
    OPT_COOKIE,
    OPT_ECS,
    OPT_NSID,
    Malformed,
    Query,
    Tsig,
)
from globaldns.dns.names import QClass, QType, Rcode

_COUNTS = struct.Struct("!HHHHH")  # flags, qd, an, ns, ar
_OPT_HEAD = struct.Struct("!BHHBBHH")  # root name, type, size, ext-rcode, version, flags, rdlen
_OPTION = struct.Struct("!HH")

OPT_EDE: Final = 15  # RFC 8914


class Body:
    """The sections of a reply after the question, encoded once when the registry or config
    changes. Compression pointers only point at the question (offset 12) or back into the
    body, so the body follows any question of the same name in any casing, and any prefix
    ending on a record boundary is itself a valid body (that is how we truncate)."""

    __slots__ = ("an", "ar", "cuts", "data", "flags", "ns", "rcode")

    def __init__(self, rcode: int, aa: bool, data: bytes, an: int, ns: int, ar: int,
                 cuts: tuple[tuple[int, int, int, int], ...] | None = None) -> None:
        self.rcode = rcode
        self.flags = FLAG_QR | (FLAG_AA if aa else 0) | (rcode & 0xF)
        self.data = data
        self.an, self.ns, self.ar = an, ns, ar
        self.cuts = cuts
        """(end offset, an, ns, ar) after each record, in order; found by walking the
        records the first time a reply must be truncated (most never are)."""

    def prefix(self, room: int) -> tuple[bytes, int, int, int]:
        """The longest prefix of whole records that fits in `room` bytes."""
        cuts = self.cuts
        if cuts is None:
            cuts = self.cuts = record_ends(self.data, self.an, self.ns, self.ar)
        i = bisect_right(cuts, (room, 1 << 16))
        if i == 0:
            return b"", 0, 0, 0
        end, an, ns, ar = cuts[i - 1]
        return self.data[:end], an, ns, ar


def record_ends(data: bytes, an: int, ns: int, ar: int) -> tuple[tuple[int, int, int, int], ...]:
    """(end offset, an, ns, ar) after each record of a body."""
    cuts = []
    i = 0
    counts = [0, 0, 0]
    for section, n in enumerate((an, ns, ar)):
        for _ in range(n):
            while True:  # the owner name: labels, ending in a zero or a pointer
                length = data[i]
                if length >= 0xC0:
                    i += 2
                    break
                i += length + 1
                if length == 0:
                    break
            i += 10 + ((data[i + 8] << 8) | data[i + 9])
            counts[section] += 1
            cuts.append((i, counts[0], counts[1], counts[2]))
    return tuple(cuts)


class Reply:
    """What a handler returns: a body plus what varies per query (EDNS options)."""

    __slots__ = ("body", "ecs_scope", "ede", "ra")

    def __init__(self, body: Body, *, ede: tuple[tuple[int, str], ...] = (),
                 ecs_scope: int = -1, ra: bool = False) -> None:
        self.body = body
        self.ede = ede
        self.ecs_scope = ecs_scope
        self.ra = ra


def rcode_body(rcode: int, aa: bool = False) -> Body:
    return Body(rcode, aa, b"", 0, 0, 0)


# The OPT record for the common case: 1232 bytes advertised, no options, DO clear or set.
_OPT_PLAIN = _OPT_HEAD.pack(0, 41, MAX_UDP, 0, 0, 0, 0)
_OPT_DO = _OPT_HEAD.pack(0, 41, MAX_UDP, 0, 0, 0x8000, 0)


def opt_record(q: Query, ext_rcode: int, options: bytes) -> bytes:
    return _OPT_HEAD.pack(0, 41, MAX_UDP, ext_rcode, 0, 0x8000 if q.do else 0,
                          len(options)) + options


def _options(q: Query, r: Reply, nsid: bytes) -> bytes:
    out = b""
    if q.nsid and nsid:
        out += _OPTION.pack(OPT_NSID, len(nsid)) + nsid
    if q.ecs is not None:
        family, source, address = q.ecs
        scope = r.ecs_scope if r.ecs_scope >= 0 else 0
        value = struct.pack("!HBB", family, source, scope) + address
        out += _OPTION.pack(OPT_ECS, len(value)) + value
    if q.cookie_reply:
        out += _OPTION.pack(OPT_COOKIE, len(q.cookie_reply)) + q.cookie_reply
    for code, text in r.ede:
        value = struct.pack("!H", code) + text.encode()
        out += _OPTION.pack(OPT_EDE, len(value)) + value
    return out


def encode(q: Query, r: Reply, nsid: bytes = b"") -> bytes:
    """The reply to `q`: its ID, its RD and CD bits, its question as it was asked."""
    body = r.body
    flags = body.flags | (q.flags & (FLAG_RD | FLAG_CD)) | (FLAG_RA if r.ra else 0)
    if q.edns < 0:
        opt = b""
    elif not (q.nsid or q.ecs or r.ede or body.rcode > 15 or q.cookie_reply):
        opt = _OPT_DO if q.do else _OPT_PLAIN
    else:
        opt = opt_record(q, body.rcode >> 4, _options(q, r, nsid))
    question = q.question
    data = body.data
    limit = q.limit()
    if 12 + len(question) + len(data) + len(opt) <= limit:
        return q.id + _COUNTS.pack(flags, 1, body.an, body.ns, body.ar + (1 if opt else 0)) \
            + question + data + opt
    data, an, ns, ar = body.prefix(limit - 12 - len(question) - len(opt))
    # RFC 2181 9: TC only when records of the answer or authority section are lost;
    # additional records that do not fit are simply left out.
    if an < body.an or ns < body.ns:
        flags |= FLAG_TC
    return q.id + _COUNTS.pack(flags, 1, an, ns, ar + (1 if opt else 0)) + question + data + opt


def error_reply(data: bytes, bad: Malformed) -> bytes:
    """FORMERR / NOTIMP / BADVERS / NOTAUTH for a packet we could not take as a Query: the
    header's ID and opcode; RD and CD only for opcode QUERY (RFC 6895 2: they mean nothing
    for the others); the question when it was read whole. RFC 6891 7: no OPT with FORMERR;
    BADVERS lives in the OPT record's extended rcode, so it carries one, and so does a
    NOTAUTH to an EDNS query. A NOTAUTH ends with the unsigned BADKEY TSIG (RFC 8945
    5.2.2, 5.3.2). The reply is never longer than the packet it answers."""
    rcode = bad.rcode or 0
    flags = ((data[2] << 8) | data[3]) & (0x7800 | FLAG_RD | FLAG_CD)
    if flags & 0x7800:
        flags &= 0x7800
    question = bad.question
    opt = _OPT_HEAD.pack(0, 41, MAX_UDP, rcode >> 4, 0, 0, 0) \
        if rcode > 15 or (bad.edns and rcode != Rcode.FORMERR) else b""
    tsig = b"" if bad.tsig is None else tsig_error(bad.tsig)
    if len(question) + len(opt) + len(tsig) + 12 > len(data):
        # The query compressed its TSIG names (pointers into its own options, say); spelled
        # out they would make the reply longer than the query: leave the TSIG out.
        tsig = b""
    return data[:2] + _COUNTS.pack(FLAG_QR | flags | (rcode & 0xF), 1 if question else 0, 0, 0,
                                   (1 if opt else 0) + (1 if tsig else 0)) + question + opt + tsig


_TSIG_HEAD = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_TSIG_TAIL = struct.Struct("!H2sHH")  # MAC size, original ID, error, other length


def tsig_error(t: Tsig) -> bytes:
    """An unsigned TSIG record (MAC size 0) with error BADKEY, for the key and algorithm the
    query named, its Time Signed and Fudge, and its original ID."""
    rdata = t.algorithm + t.time_fudge + _TSIG_TAIL.pack(0, t.original_id, Rcode.BADKEY, 0)
    return t.key + _TSIG_HEAD.pack(QType.TSIG, QClass.ANY, 0, len(rdata)) + rdata
