"""The wire-level answer cache: replies to UDP queries kept as bytes, keyed by the query's
bytes after its ID, per client class.

A query's bytes after the ID (flags, counts, question as cased, OPT) decide everything of
the reply but its ID, once the client's class is known (what the ACL allows it, and its
routing profile). So a repeated query costs one dict lookup, the next rotation variant,
and a byte concatenation; the handler chain is not entered. Entries hold the snapshot's
answer objects, so rotation and weights stay per query; they are dropped when the snapshot
replaces their name, and all of them on a config change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from globaldns.dns.message import Query
from globaldns.dns.stats import reply_key
from globaldns.dns.wire import Reply, encode

# Entries at most; past it the cache starts over (it refills at one slow path per key).
CAPACITY = 100_000
# Client addresses whose class is remembered; past it, that memory starts over.
MAX_CLIENTS = 65_536


# Encoded variants kept per entry; a forwarded answer makes a new one each second (its
# TTLs count down), so the memory starts over past this.
MAX_VARIANTS = 64


class Picker:
    """What answered: the snapshot's AnswerSet/WeightedAnswers, or a cache Hit. `pick`
    gives the next reply, or None when the slow path must answer this time."""

    def pick(self, q: Query | None) -> Reply | None: ...


class Entry:
    __slots__ = ("answers", "key", "memo", "nsid", "query", "ra", "rcode", "request")

    def __init__(self, answers: Picker, query: Query, ra: bool, nsid: bytes,
                 request: tuple[int, int], rcode: int) -> None:
        self.answers = answers
        self.query = query
        self.ra = ra
        self.nsid = nsid
        self.request = request
        self.rcode = rcode
        self.key = reply_key(request[0], request[1], rcode, 0)
        """The stats key of its replies, but for the size (added per reply)."""
        self.memo: dict[Reply, bytes] = {}

    def encoded(self, reply: Reply) -> bytes:
        """The reply's bytes after the ID; each variant is encoded once."""
        if self.ra and not reply.ra:
            reply = Reply(reply.body, ede=reply.ede, ecs_scope=reply.ecs_scope, ra=True)
        wire = encode(self.query, reply, self.nsid)[2:]
        if len(self.memo) >= MAX_VARIANTS:
            self.memo.clear()
        self.memo[reply] = wire
        return wire


class WireCache:
    def __init__(self, classify: Callable[[str], int | None]) -> None:
        self.classify = classify
        """Client address → class (None: never served from here, e.g. refused)."""
        self.classes: dict[str, int] = {}
        self.tables: dict[int, dict[bytes, Entry]] = {}
        self.by_name: dict[bytes, list[tuple[int, bytes]]] = {}
        self.size = 0
        self.hits = 0

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
        """After a slow-path answer from the snapshot: keep it for the next same query."""
        cls = self.client_class(q.client[0])
        if cls is None:
            return
        if self.size >= CAPACITY:
            self.clear()
            self.tables.setdefault(cls, {})
        key = data[2:]
        entry = Entry(q.answers, q, reply.ra, nsid,  # type: ignore[arg-type]
                      (q.transport, q.qtype), reply.body.rcode)
        table = self.tables[cls]
        if key not in table:
            self.size += 1
            self.by_name.setdefault(q.qname, []).append((cls, key))
        table[key] = entry

    def forget(self, names: Iterable[bytes] | None) -> None:
        """The snapshot replaced these names (None: everything)."""
        if names is None:
            self.clear()
            return
        tables = self.tables
        by_name = self.by_name
        for name in names:
            for cls, key in by_name.pop(name, ()):
                if tables[cls].pop(key, None) is not None:
                    self.size -= 1

    def clear(self) -> None:
        self.tables = {cls: {} for cls in self.tables}
        self.by_name = {}
        self.size = 0

    def reset_classes(self) -> None:
        """The ACL or routing changed: classes are recomputed, entries dropped."""
        self.classes = {}
        self.tables = {}
        self.by_name = {}
        self.size = 0
