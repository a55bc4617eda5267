"""Replies: prepared answer bodies, and the encoder that puts header, question, body and
OPT record together for one query, truncating to the client's size."""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from typing import Final, Protocol

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

    __slots__ = ("an", "ar", "data", "ends", "flags", "ns", "rcode")

    def __init__(self, rcode: int, aa: bool, data: bytes, an: int, ns: int, ar: int,
                 cuts: Sequence[tuple[int, int, int, int]] | array[int] | None = None
                 ) -> None:
        self.rcode = rcode
        self.flags = FLAG_QR | (FLAG_AA if aa else 0) | (rcode & 0xF)
        self.data = data
        self.an, self.ns, self.ar = an, ns, ar
        self.ends: array[int] | None = cuts if cuts is None or isinstance(cuts, array) \
            else array("I", (cut[0] for cut in cuts))
        """The end offset of each record, in order (4 bytes a record: a 64 KB answer of
        4,000 records keeps 16 KB of them); found by walking the records the first time a
        reply must be truncated (most never are). Also taken as (end, an, ns, ar) tuples."""

    def prefix(self, room: int) -> tuple[bytes, int, int, int]:
        """The longest prefix of whole records that fits in `room` bytes."""
        ends = self.ends
        if ends is None:
            ends = self.ends = record_ends(self.data, self.an + self.ns + self.ar)
        kept = bisect_right(ends, room)
        if kept == 0:
            return b"", 0, 0, 0
        an = min(kept, self.an)
        ns = min(kept - an, self.ns)
        return self.data[: ends[kept - 1]], an, ns, kept - an - ns


def record_ends(data: bytes, records: int) -> array[int]:
    """The end offset of each of the first `records` records of a body."""
    ends = array("I")
    i = 0
    for _ in range(records):
        while True:  # the owner name: labels, ending in a zero or a pointer
            length = data[i]
            if length >= 0xC0:
                i += 2
                break
            i += length + 1
            if length == 0:
                break
        i += 10 + ((data[i + 8] << 8) | data[i + 9])
        ends.append(i)
    return ends


class Picker(Protocol):
    """An answer the wire cache may keep (dns/fastpath.py): the snapshot's AnswerSet or
    WeightedAnswers, or a forward-cache Hit. `pick` gives the next reply to the same query,
    or None when the slow path must answer this time."""

    variants: int
    """Encoded replies worth keeping per query shape (the rotation's length, at most)."""
    owned: bool
    """Whether its replies are held elsewhere while it lives (the snapshot's are; a
    forward-cache countdown copy is not, so the wire cache counts its bytes)."""

    def pick(self) -> Reply | None: ...


# Who answered (the query log's `answered_by`), set where the reply is made.
ZONE, CACHE, FORWARD, STALE, CHAOS, REFUSED, ERROR = (
    "zone", "cache", "forward", "stale", "chaos", "refused", "error")


class Reply:
    """What a handler returns: a body plus what varies per query (EDNS options), who made
    it (`by`), and `keep`: the answer the wire cache may keep to answer the same query
    again (None: nothing may be kept)."""

    __slots__ = ("body", "by", "ecs_scope", "ede", "keep")

    def __init__(self, body: Body, *, by: str, ede: tuple[tuple[int, str], ...] = (),
                 ecs_scope: int = -1, keep: Picker | None = None) -> None:
        self.body = body
        self.by = by
        self.ede = ede
        self.ecs_scope = ecs_scope
        self.keep = keep

    def kept_by(self, picker: Picker) -> Reply:
        """This reply, for one query, with the answer that may be kept (prepared replies
        are shared, and must not point back at the answer holding them: no cycles)."""
        return Reply(self.body, by=self.by, ede=self.ede, ecs_scope=self.ecs_scope,
                     keep=picker)


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
    """The reply to `q`: its ID, its RD and CD bits, its question as it was asked; RA as
    the ACL decided for this client (`q.ra`)."""
    body = r.body
    flags = body.flags | (q.flags & (FLAG_RD | FLAG_CD)) | (FLAG_RA if q.ra else 0)
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


def framed(message: bytes) -> bytes:
    """A message as sent over TCP: its length in two bytes first (RFC 1035 4.2.2)."""
    return len(message).to_bytes(2, "big") + message


def unframed(buffer: bytearray) -> bytes | None:
    """The next whole message of a TCP stream, taken out of `buffer`; None until one is
    complete."""
    if len(buffer) < 2:
        return None
    end = 2 + ((buffer[0] << 8) | buffer[1])
    if len(buffer) < end:
        return None
    message = bytes(buffer[2:end])
    del buffer[:end]
    return message


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
