"""The wire-level answer cache: replies to UDP queries kept as bytes, keyed by the query's
bytes after its ID with the name lowercased, per client class.

A query's bytes after the ID (flags, counts, question, OPT) decide everything of the reply
but its ID and the casing of its question, once the client's class is known (what the
ACL allows it, and its routing profile). So a repeated query costs one dict lookup, the
next rotation variant, and a byte concatenation; the handler chain is not entered.

Casings (0x20, draft-vixie-dnsext-0x20) share one entry: the key holds the name
lowercased, the reply is kept encoded with the lowercased question, and a query in
another casing gets its own question spliced back in. A lowercase query finds its entry
at the first lookup, as before; another casing pays a second lookup (the whole key
lowercased, then its bytes outside the name compared, since lowercasing touches those
too) and the splice.

Entries hold what the handler's reply said may be kept (`Reply.keep`): the snapshot's
answer objects, so rotation and weights stay per query, or a forward-cache `Hit`. They are
dropped when the snapshot replaces their name, and all of them on a config change.
Memory is bounded by `cache.wire_max_bytes`: an entry counts its key, its encoded replies,
the bodies of replies nobody else holds (a forward-cache answer's countdown copy), and
`ENTRY_OVERHEAD` for its objects; past the budget the cache starts over (it refills at
one slow path per query shape), so a hit never pays for bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from globaldns.dns.message import Query
from globaldns.dns.stats import Stats, reply_key
from globaldns.dns.wire import Picker, Reply, encode

# Client addresses whose class is remembered; past it, that memory starts over (about
# 150 bytes each: 10 MB at most, beside the byte budget).
MAX_CLIENTS: Final = 65_536
# Encoded variants kept per entry at most (a rotation of more answers starts over).
MAX_VARIANTS: Final = 64
# What an entry and one encoded variant cost beside their bytes, measured with
# tracemalloc over 2,000 entries: the entry and its query, the table and name-index slots;
# a variant's dict slot and bytes object (tests/test_memory.py checks the budget against a
# process's resident memory).
ENTRY_OVERHEAD: Final = 1100
VARIANT_OVERHEAD: Final = 120


class Entry:
    __slots__ = ("head", "keep", "memo", "nsid", "qend", "query", "size", "stat", "tail",
                 "variants")

    def __init__(self, keep: Picker, query: Query, nsid: bytes, key: bytes,
                 rcode: int) -> None:
        self.keep = keep
        self.query = query
        """The first query, its question lowercased: replies are encoded for it."""
        self.nsid = nsid
        self.qend = 12 + len(query.qname)
        """Where the name ends in a query (the same in every casing)."""
        self.head = key[:10]
        self.tail = key[self.qend - 2 :]
        """The key's bytes before and after the name: a query in another casing must
        have exactly these."""
        self.stat = reply_key(query.transport, query.qtype, rcode, 0)
        """The stats key of its replies, but for the size (added per reply)."""
        self.memo: dict[Reply, bytes] = {}
        """Encoded replies (after the ID), per variant."""
        self.variants = min(keep.variants, MAX_VARIANTS)
        self.size = ENTRY_OVERHEAD + len(key)


def _lowercased(q: Query) -> Query:
    """The query with its question's name lowercased (the rest as it came)."""
    out = Query(q.id, q.flags, q.qname, q.qname + q.question[-4:], q.qtype, q.qclass,
                q.client, q.transport)
    out.edns, out.do, out.ra = q.edns, q.do, q.ra
    return out


class WireCache:
    def __init__(self, classify: Callable[[str], int | None], *, stats: Stats,
                 max_bytes: int) -> None:
        self.classify = classify
        """Client address → class (None: never served from here, e.g. refused)."""
        self.stats = stats
        self.max_bytes = max_bytes
        self.classes: dict[str, int] = {}
        self.tables: dict[int, dict[bytes, Entry]] = {}
        self.by_name: dict[bytes, list[tuple[int, bytes]]] = {}
        self.size = 0
        """Entries."""
        self.bytes = 0
        """What the entries count, at most `max_bytes`."""

    def answer(self, data: bytes, ip: str) -> bytes | None:
        """The whole reply to a query seen before from a client of the same class, counted;
        None: the slow path answers."""
        cls = self.classes.get(ip)
        if cls is None:
            return None
        table = self.tables[cls]
        rest = data[2:]
        entry = table.get(rest)
        cased = entry is None
        if entry is None:
            entry = table.get(rest.lower())
            # Lowercasing touched the bytes outside the name too: they must be the key's.
            if entry is None or data[entry.qend :] != entry.tail or rest[:10] != entry.head:
                return None
        reply = entry.keep.pick()
        if reply is None:
            return None
        out = entry.memo.get(reply)
        if out is None:
            out = self._encoded(entry, reply)
        if cased:  # the reply's question in the query's own casing
            qend = entry.qend
            out = data[:2] + out[:10] + data[12:qend] + out[qend - 2 :]
        else:
            out = data[:2] + out
        replies = self.stats.replies
        stat = entry.stat | len(out)
        replies[stat] = replies.get(stat, 0) + 1
        return out

    def _encoded(self, entry: Entry, reply: Reply) -> bytes:
        """The reply's bytes after the ID; each variant is encoded once."""
        wire = encode(entry.query, reply, entry.nsid)[2:]
        memo = entry.memo
        if len(memo) >= entry.variants:
            dropped = sum(self._cost(entry, r, w) for r, w in memo.items())
            memo.clear()
            entry.size -= dropped
            self.bytes -= dropped
        memo[reply] = wire
        cost = self._cost(entry, reply, wire)
        entry.size += cost
        self.bytes += cost
        if self.bytes > self.max_bytes:
            self.clear()
        return wire

    @staticmethod
    def _cost(entry: Entry, reply: Reply, wire: bytes) -> int:
        held = 0 if entry.keep.owned else len(reply.body.data)
        return VARIANT_OVERHEAD + len(wire) + held

    def client_class(self, ip: str) -> int | None:
        cls = self.classes.get(ip)
        if cls is None:
            cls = self.classify(ip)
            if cls is None:
                return None
            if len(self.classes) >= MAX_CLIENTS:
                self.classes.clear()
            self.classes[ip] = cls
            self.tables.setdefault(cls, {})
        return cls

    def remember(self, data: bytes, q: Query, reply: Reply, nsid: bytes) -> None:
        """After a slow-path answer that may be kept: keep it for the next same query."""
        keep = reply.keep
        if keep is None:
            return
        cls = self.client_class(q.client[0])
        if cls is None:
            return
        qend = 12 + len(q.qname)
        key = data[2:12] + q.qname + data[qend:]
        entry = Entry(keep, _lowercased(q), nsid, key, reply.body.rcode)
        if self.bytes + entry.size > self.max_bytes:
            self.clear()
        table = self.tables[cls]
        old = table.get(key)
        if old is None:
            self.size += 1
            self.by_name.setdefault(q.qname, []).append((cls, key))
        else:
            self.bytes -= old.size
        table[key] = entry
        self.bytes += entry.size

    def forget(self, names: Iterable[bytes] | None) -> None:
        """The snapshot replaced these names (None: everything)."""
        if names is None:
            self.clear()
            return
        tables = self.tables
        by_name = self.by_name
        for name in names:
            for cls, key in by_name.pop(name, ()):
                entry = tables[cls].pop(key, None)
                if entry is not None:
                    self.size -= 1
                    self.bytes -= entry.size

    def clear(self) -> None:
        self.tables = {cls: {} for cls in self.tables}
        self.by_name = {}
        self.size = 0
        self.bytes = 0

    def reset_classes(self) -> None:
        """The ACL or routing changed: classes are recomputed, entries dropped."""
        self.classes = {}
        self.tables = {}
        self.by_name = {}
        self.size = 0
        self.bytes = 0
