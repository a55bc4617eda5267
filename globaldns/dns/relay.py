"""The check every upstream answer passes before it is relayed or cached (issue 10).

`relayed()` reads the answer once, record by record, and either raises `MalformedReply`
or returns a `Relayed` body:

- Names (owners, and the names inside the RDATA of the types in `_LAYOUTS`) are read with
  dnspython's rules, so every client library can read what we relay: labels of at most 63
  bytes, at most 255 bytes a name, at most 16 pointers a name (dnspython's
  MAX_COMPRESSION_POINTER_CHAIN), no pointer where RFC 3597 4 forbids compression (DNAME,
  KX, RRSIG, NSEC), and every RDATA of those types exactly filled. Stricter than dnspython,
  a compression pointer must point past the header, backwards, at a name read before (the
  question, an owner, a checked RDATA name, or a label of one): never into a TTL that the
  cache rewrites, nor into opaque RDATA or the middle of a label, which no compressor
  does. So loops cannot be, and every name costs its own labels plus one table lookup.
- Bailiwick (as unbound's scrubber and dnspython's resolver): the answer section keeps the
  records owned by the question name or a name of its CNAME chain (at most `MAX_CHAIN`
  CNAMEs) and the DNAMEs above them; the authority section keeps SOA, NS and DS records
  owned by an ancestor of those names, and the NSEC, NSEC3 and RRSIG records at or below
  such an SOA or NS owner; the additional section keeps the address records (and their
  RRSIGs) of the names that kept NS, MX and SRV records point at. The rest is stripped,
  counted, and never cached. So are records of another class than the question's, and
  meta-records (TSIG, TKEY: RFC 6895 3.1), which belong to one hop.
- The OPT record is taken out (ours replaces it), with its extended rcode and Extended DNS
  Errors; records after it are left out.

When what is kept is a prefix of what came, the upstream's bytes are relayed as they are:
every pointer in them points backwards into the question (which the client's question
replaces byte for byte, up to case) or into the kept records. Otherwise the kept records
are encoded again, their names in full, an owner equal to the question name as a pointer
to it.
"""

from __future__ import annotations

import struct
from typing import Final

from globaldns.dns.message import FLAG_AA, FLAG_TC
from globaldns.dns.names import QClass, QType, Rcode
from globaldns.dns.wire import OPT_EDE, Body

FLAG_AD: Final = 0x0020
MAX_HOPS: Final = 16
"""Compression pointers in one name: dnspython refuses a message with more."""
MAX_CHAIN: Final = 16
"""CNAMEs followed from the question name; records past them are stripped."""

_RRHEAD = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_HH = struct.Struct("!HH")
# Bound once: the per-record loops compare plain names, not enum members (see dns/names.py).
_A, _NS, _CNAME, _SOA, _MX, _AAAA, _SRV, _OPT, _DS, _RRSIG, _NSEC, _NSEC3, _DNAME = (
    QType.A, QType.NS, QType.CNAME, QType.SOA, QType.MX, QType.AAAA, QType.SRV, QType.OPT,
    QType.DS, QType.RRSIG, QType.NSEC, QType.NSEC3, QType.DNAME)
_IN, _ANY = QClass.IN, QClass.ANY

# RDATA layouts: a number alone is the exact RDLENGTH; in a tuple, a number is that many
# fixed bytes, "n" a name that may be compressed, "u" one that may not (RFC 3597 4,
# RFC 6672 2.5, RFC 4034 3.1.7, 4.1.1), "s" a character-string, "*" the rest, any length,
# "b" an NSEC type bitmap (RFC 4034 4.1.2).
_Layout = tuple[int | str, ...] | int
_LAYOUTS: Final[dict[int, _Layout]] = {
    2: ("n",), 3: ("n",), 4: ("n",), 5: ("n",), 7: ("n",), 8: ("n",), 9: ("n",),
    12: ("n",), 6: ("n", "n", 20), 14: ("n", "n"), 17: ("n", "n"), 15: (2, "n"),
    18: (2, "n"), 21: (2, "n"), 39: ("u",), 46: (18, "u", "*"), 47: ("u", "b"),
}
"""Types whose layout does not depend on the class."""
_IN_LAYOUTS: Final[dict[int, _Layout]] = {
    **_LAYOUTS, 1: 4, 28: 16, 33: (6, "n"), 36: (2, "u"), 26: (2, "n", "n"),
    35: (4, "s", "s", "s", "n"),
}
"""Class IN adds its own (RFC 1035 3.4.1, RFC 3596, RFC 2782, RFC 2230, RFC 2163, RFC 3403)."""
CHECKED_IN: Final = frozenset(_IN_LAYOUTS)
CHECKED_ANY_CLASS: Final = frozenset(_LAYOUTS)
"""The types whose RDATA is checked: in class IN, and in any class."""


class MalformedReply(Exception):
    """An upstream answer that cannot be relayed; the text says why."""


class Relayed(Body):
    """An upstream answer kept as bytes: the sections after the question without the OPT
    record, with record cut points (for truncation) and the TTL fields' offsets (for the
    cache)."""

    __slots__ = ("cache_ttl", "ede", "negative", "stripped", "truncated", "ttl_offsets",
                 "ttls")

    ttl_offsets: tuple[int, ...]
    ttls: tuple[int, ...]
    """Per record: its TTL; for the SOA of a negative answer min(TTL, MINIMUM), RFC 2308 5."""
    cache_ttl: int
    """How long the answer may be cached (the least TTL above); -1: not at all."""
    negative: bool
    ede: tuple[tuple[int, str], ...]
    truncated: bool
    stripped: int
    """Records left out because of bailiwick or class."""


# One record as read: section, end of owner, end, type, TTL, owner (lowercased), owner (as
# sent), the names in its RDATA (start, end, name as sent), the name it points at
# (lowercased; CNAME, NS, MX, SRV, else empty), start, and whether its pointers all point
# into the question (so its bytes mean the same anywhere). Plain tuples: there may be
# thousands.
_Record = tuple[int, int, int, int, int, bytes, bytes, tuple[tuple[int, int, bytes], ...],
                bytes, int, bool]
_SECTION: Final = 0
_NAME_END: Final = 1
_END: Final = 2
_TYPE: Final = 3
_TTL: Final = 4
_TARGET: Final = 8
_Memo = dict[int, tuple[bytes, int, int]]
"""Offset → the name from there, its pointer count, the end of its uncompressed part."""


def _name(wire: bytes, pos: int, end: int, memo: _Memo, compressed: bool
          ) -> tuple[bytes, int, int]:
    """The name at `pos`, in full and as sent, the offset just past it (at most `end`), and
    where its pointer points (0: nowhere). A pointer must point at a name read before (in
    `memo`, which gets this one's offsets): never into a TTL the cache rewrites, nor into
    opaque RDATA."""
    if compressed and pos + 2 <= end and wire[pos] >= 0xC0:  # the usual owner: one pointer
        target = ((wire[pos] & 0x3F) << 8) | wire[pos + 1]
        hit = memo.get(target)
        if hit is not None and hit[2] <= pos and hit[1] < MAX_HOPS:
            return hit[0], pos + 2, target
    start = pos
    labels: list[tuple[int, bytes]] = []
    size = 0
    while True:
        if pos >= end:
            raise MalformedReply("a name runs past its end")
        length = wire[pos]
        if length == 0:
            suffix, count, part_end, target = b"\x00", 0, pos + 1, 0
            break
        if length < 64:
            size += length + 1
            if size > 254:
                raise MalformedReply("a name longer than 255 bytes")
            labels.append((pos, wire[pos : pos + 1 + length]))
            pos += 1 + length
            continue
        if length < 0xC0:
            raise MalformedReply("a label of unknown type")
        if not compressed:
            raise MalformedReply("a compressed name where RFC 3597 forbids it")
        if pos + 2 > end:
            raise MalformedReply("a name runs past its end")
        target = ((length & 0x3F) << 8) | wire[pos + 1]
        if target < 12:
            raise MalformedReply("a compression pointer into the header")
        if target >= start:
            raise MalformedReply("a compression pointer that does not point backwards")
        hit = memo.get(target)
        if hit is None:
            raise MalformedReply("a compression pointer to no name read before")
        suffix, count, hit_end = hit
        count += 1
        # dnspython's rules: the name pointed at lies before this one, and 16 pointers at most.
        if hit_end > start:
            raise MalformedReply("a compression pointer into its own name")
        if count > MAX_HOPS:
            raise MalformedReply("a name with too many compression pointers")
        if size + len(suffix) > 255:
            raise MalformedReply("a name longer than 255 bytes")
        part_end = pos + 2
        break
    memo[pos] = (suffix, count, part_end)
    for p, label in reversed(labels):
        suffix = label + suffix
        memo[p] = (suffix, count, part_end)
    return suffix, part_end, target


def _rdata_names(wire: bytes, start: int, end: int, layout: tuple[int | str, ...], memo: _Memo
                 ) -> tuple[tuple[tuple[int, int, bytes], ...], int]:
    """The names in an RDATA of `layout` at start..end, and the farthest offset their
    pointers point at; raises if it does not fit."""
    names = []
    reach = 0
    pos = start
    for item in layout:
        if item.__class__ is int:
            pos += item
        elif item == "n" or item == "u":
            if pos >= end:
                raise MalformedReply("an RDATA too short for its type")
            name, nxt, target = _name(wire, pos, end, memo, item == "n")
            names.append((pos, nxt, name))
            reach = max(reach, target)
            pos = nxt
        elif item == "s":
            if pos >= end:
                raise MalformedReply("an RDATA too short for its type")
            pos += 1 + wire[pos]
        elif item == "*":
            pos = end
        else:  # "b": windows in increasing order, each 1..32 bytes, the last one not zero
            last = -1
            while pos < end:
                if pos + 2 > end or wire[pos] <= last or not 1 <= wire[pos + 1] <= 32:
                    raise MalformedReply("a bad NSEC type bitmap")
                last = wire[pos]
                pos += 2 + wire[pos + 1]
                if pos > end or wire[pos - 1] == 0:
                    raise MalformedReply("a bad NSEC type bitmap")
        if pos > end:
            raise MalformedReply("an RDATA too short for its type")
    if pos != end:
        raise MalformedReply("an RDATA longer than its type allows")
    return tuple(names), reach


def _suffixes(name: bytes, into: set[bytes]) -> None:
    """Add `name` and every ancestor of it (the root too) to `into`."""
    i = 0
    while True:
        into.add(name[i:])
        if not name[i]:
            return
        i += name[i] + 1


def relayed(wire: bytes, qend: int) -> Relayed:
    """Check and split an upstream answer whose question (one, ours) ends at `qend`."""
    n = len(wire)
    if n < qend or qend < 17:
        raise MalformedReply("too short")
    memo: _Memo = {}
    qname, after, _ = _name(wire, 12, qend - 4, memo, True)
    if after != qend - 4:
        raise MalformedReply("a question that is not ours")
    qname = qname.lower()
    qclass = (wire[qend - 2] << 8) | wire[qend - 1]
    flags = (wire[2] << 8) | wire[3]
    counts = (((wire[6] << 8) | wire[7]), ((wire[8] << 8) | wire[9]), ((wire[10] << 8) | wire[11]))
    rcode = flags & 0xF
    pos = qend
    records: list[_Record] = []
    by_owner: dict[bytes, list[int]] = {}
    foreign: set[int] = set()
    ede: list[tuple[int, str]] = []
    opt_seen = False
    for section, count in enumerate(counts):
        for _ in range(count):
            if pos >= n:
                raise MalformedReply("fewer records than counted")
            first = pos
            owner, name_end, reach = _name(wire, pos, n, memo, True)
            if name_end + 10 > n:
                raise MalformedReply("a record runs past the end")
            rtype, rclass, ttl, rdlen = _RRHEAD.unpack_from(wire, name_end)
            start = name_end + 10
            end = start + rdlen
            if end > n:
                raise MalformedReply("a record runs past the end")
            if rtype == _OPT:
                if section != 2 or opt_seen or owner != b"\x00":
                    raise MalformedReply("a misplaced OPT record")
                opt_seen = True
                rcode |= (ttl >> 24) << 4
                ede.extend(_ede(wire[start:end]))
                pos = end
                continue
            layout = (_IN_LAYOUTS if rclass == _IN else _LAYOUTS).get(rtype)
            names: tuple[tuple[int, int, bytes], ...] = ()
            if layout is None:
                pass
            elif isinstance(layout, int):
                if rdlen != layout:
                    raise MalformedReply("an RDATA of the wrong length for its type")
            else:
                names, farthest = _rdata_names(wire, start, end, layout, memo)
                reach = max(reach, farthest)
            pos = end
            if opt_seen:
                continue  # additional records after the OPT record are left out
            if ttl > 0x7FFFFFFF:  # RFC 2181 8: the top bit set means zero
                ttl = 0
            lower = owner.lower()
            target = names[-1][2].lower() if names and rtype in _POINTING else b""
            if (rclass != qclass and qclass != _ANY) or 128 <= rtype <= 255:
                # Another class, or a meta-type (TSIG, TKEY; RFC 6895 3.1): hop by hop.
                foreign.add(len(records))
            elif section == 0:
                owned = by_owner.get(lower)
                if owned is None:
                    by_owner[lower] = [len(records)]
                else:
                    owned.append(len(records))
            records.append((section, name_end, end, rtype, ttl, lower, owner, names, target,
                            first, reach < qend))
    if len(by_owner.get(qname, ())) == len(records):  # the usual: the question's records only
        keep = [True] * len(records)
    else:
        keep = _bailiwick(qname, records, by_owner, foreign)
    return _body(wire, qend, flags, rcode, records, keep, ede, stripped=keep.count(False))


_POINTING: Final = frozenset((_NS, _CNAME, _MX, _SRV))
"""Types whose last RDATA name is followed: the CNAME chain, and the glue of the rest."""
_ZONE_PROOF: Final = frozenset((_NSEC, _NSEC3, _RRSIG))


def _bailiwick(qname: bytes, records: list[_Record], by_owner: dict[bytes, list[int]],
               foreign: set[int]) -> list[bool]:
    """Which records stay (see the module docstring); none of the `foreign` class."""
    keep = [False] * len(records)
    chain = [qname]
    seen = {qname}
    i = 0
    while i < len(chain):
        for index in by_owner.get(chain[i], ()):
            keep[index] = True
            record = records[index]
            target = record[_TARGET]
            if record[_TYPE] == _CNAME and target not in seen and len(chain) <= MAX_CHAIN:
                chain.append(target)
                seen.add(target)
        i += 1
    ancestors: set[bytes] = set()
    for name in chain:
        _suffixes(name, ancestors)
    zones: set[bytes] = set()
    pointed: set[bytes] = set()
    under: dict[bytes, bool] = {}
    for index, (section, _e, _end, rtype, _ttl, owner, _o, _n, target, _f, _p) in enumerate(
            records):
        if index in foreign:
            continue
        if section == 0 and rtype == _DNAME and owner in ancestors:
            keep[index] = True
        elif section == 1 and rtype in (_SOA, _NS, _DS) and owner in ancestors:
            keep[index] = True
            if rtype != _DS:
                zones.add(owner)
        if keep[index] and target and rtype != _CNAME:
            pointed.add(target)
    for index, (section, _e, _end, rtype, _ttl, owner, _o, _n, _t, _f, _p) in enumerate(records):
        if index in foreign:
            continue
        if section == 1 and rtype in _ZONE_PROOF and not keep[index]:
            keep[index] = _below(owner, zones, under)
        elif section == 2:
            keep[index] = owner in pointed and rtype in (_A, _AAAA, _RRSIG)
    return keep


def _below(name: bytes, zones: set[bytes], under: dict[bytes, bool]) -> bool:
    """Whether `name` is at or below one of `zones`; `under` remembers every suffix seen,
    so the records of one answer cost no more than its names' labels once."""
    walked = []
    i = 0
    result = False
    while True:
        suffix = name[i:]
        known = under.get(suffix)
        if known is not None:
            result = known
            break
        if suffix in zones:
            result = True
            break
        walked.append(suffix)
        if not name[i]:
            break
        i += name[i] + 1
    for suffix in walked:
        under[suffix] = result
    return result


def _body(wire: bytes, qend: int, flags: int, rcode: int, records: list[_Record],
          keep: list[bool], ede: list[tuple[int, str]], *, stripped: int) -> Relayed:
    kept = [r for r, k in zip(records, keep, strict=True) if k]
    cuts: tuple[tuple[int, int, int, int], ...] | None = None  # found when first needed
    offsets: list[int] = []
    counts = [0, 0, 0]
    if all(keep[: len(kept)]):  # a prefix: the bytes as they came
        data = wire[qend : kept[-1][_END]] if kept else b""
        offsets = [r[_NAME_END] + 4 - qend for r in kept]
        for r in kept:
            counts[r[_SECTION]] += 1
    else:
        ends = []
        out = bytearray()
        qname = wire[12 : qend - 4].lower()
        for section, name_end, rend, _type, _ttl, owner, sent, names, _t, first, free in kept:
            if free:  # pointers into the question only: the bytes as they came
                offsets.append(len(out) + name_end - first + 4)
                out += wire[first:rend]
                counts[section] += 1
                ends.append((len(out), counts[0], counts[1], counts[2]))
                continue
            out += b"\xc0\x0c" if owner == qname else sent
            out += wire[name_end : name_end + 8]
            offsets.append(len(out) - 4)
            rdata = wire[name_end + 10 : rend]
            if names:  # the names in full: the bytes they pointed at may be gone
                parts: list[bytes] = []
                at = name_end + 10
                for start, end, name in names:
                    parts += (wire[at:start], name)
                    at = end
                parts.append(wire[at:rend])
                rdata = b"".join(parts)
            out += len(rdata).to_bytes(2, "big") + rdata
            counts[section] += 1
            ends.append((len(out), counts[0], counts[1], counts[2]))
        data = bytes(out)
        cuts = tuple(ends)
    body = Relayed(rcode, bool(flags & FLAG_AA), data, counts[0], counts[1], counts[2], cuts)
    body.flags |= flags & FLAG_AD
    ttls = [r[_TTL] for r in kept]
    negative = rcode == Rcode.NXDOMAIN or (rcode == Rcode.NOERROR and counts[0] == 0)
    soa = next((i for i, r in enumerate(kept) if r[_SECTION] == 1 and r[_TYPE] == _SOA), -1)
    if negative and soa >= 0:
        minimum = struct.unpack_from("!I", wire, kept[soa][_END] - 4)[0]
        ttls[soa] = min(ttls[soa], minimum)
    body.ttl_offsets = tuple(offsets)
    body.ttls = tuple(ttls)
    body.negative = negative
    body.ede = tuple(ede)
    body.truncated = bool(flags & FLAG_TC)
    body.stripped = stripped
    cacheable = not body.truncated and bool(ttls) and (
        (rcode == Rcode.NOERROR and counts[0] > 0) or (negative and soa >= 0))
    body.cache_ttl = min(ttls) if cacheable else -1
    return body


def _ede(rdata: bytes) -> list[tuple[int, str]]:
    out = []
    i = 0
    while i + 4 <= len(rdata):
        code, length = _HH.unpack_from(rdata, i)
        value = rdata[i + 4 : i + 4 + length]
        if code == OPT_EDE and len(value) >= 2:
            out.append(((value[0] << 8) | value[1], value[2:].decode("utf-8", "replace")))
        i += 4 + length
    return out
