"""The cache of forwarded answers. It sits just before `forward` in the chain, so the
answers of the served zones (prepared in the snapshot) never pass through it.

Key: lowercased qname, qtype, qclass, and the query's DO, AD and CD bits (they change the
upstream's answer). Positive answers live for their least TTL, negative ones (NXDOMAIN,
NODATA) for min(SOA TTL, SOA MINIMUM) (RFC 2308 5), within `min_ttl`..`max_ttl`. A hit
costs a dict lookup and, once a second per entry, rewriting the TTL fields at offsets
found when the answer was stored; the ID, question and OPT record are the encoder's.

Bounded: at most `capacity` entries and `max_bytes` bytes, least recently used evicted
first. An entry is counted as its answer's bytes, 12 bytes per record (TTL offset, TTL,
record end) and `ENTRY_OVERHEAD` for its objects. Concurrent misses of one key share one
upstream query. A popular entry is refreshed in the background shortly
before it expires (prefetch). When the upstreams fail, an answer that expired less than
`serve_stale` ago is served with TTL 30 and EDE 3 (RFC 8767).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from array import array
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final

from globaldns.chain import Next, Result
from globaldns.config.model import CacheConfig
from globaldns.dns.message import FLAG_AA, Query
from globaldns.dns.names import Ede, Rcode
from globaldns.dns.relay import Relayed
from globaldns.dns.wire import CACHE, FORWARD, STALE, Body, Reply

log = logging.getLogger("globaldns.cache")

# RFC 8767 4: a stale answer carries TTL 30, and after a failed refresh the stale answer
# is served for 30 s without asking the upstreams again (the "failure recheck timer").
STALE_TTL: Final = 30
STALE_RETRY: Final = 30.0
# Prefetch an entry that was hit at least this often once less than 10 % of its
# lifetime is left (CoreDNS's cache plugin: 2 hits, 10 %).
PREFETCH_HITS: Final = 2
PREFETCH_LEFT: Final = 0.1
# Upstream queries the cache itself keeps in flight (misses share them, prefetches add).
MAX_PENDING: Final = 1000

# What an entry costs beside its answer's bytes and its 12 bytes a record, measured with
# tracemalloc over 100 cached 64 KB answers: the entry, its key, its reply and body
# objects, the table's node (tests/test_memory.py checks the budget against a process's
# resident memory).
ENTRY_OVERHEAD: Final = 1400

Key = tuple[bytes, int, int, int]
_TTL = struct.Struct("!I")


class Entry:
    __slots__ = ("age", "ede", "expires", "hits", "lifetime", "offsets", "prefetched",
                 "reply", "retry_after", "size", "stale_until", "stored", "ttls", "until")

    def __init__(self, body: Body, offsets: array[int], ttls: array[int],
                 ede: tuple[tuple[int, str], ...], *, now: float, lifetime: int,
                 serve_stale: int, prefetch: bool) -> None:
        self.reply = Reply(body, by=CACHE, ede=ede)
        """The answer with its TTLs counted down `age` seconds (0: as stored); the one copy
        of the answer an entry holds: each countdown patches a copy of it."""
        self.offsets = offsets
        self.ttls = ttls
        self.ede = ede
        self.stored = now
        self.lifetime = lifetime
        self.expires = now + lifetime
        self.until = self.expires - lifetime * PREFETCH_LEFT if prefetch else self.expires
        """Past this moment the slow path answers: the entry expired, or a prefetch is due."""
        self.stale_until = self.expires + serve_stale
        self.hits = 0
        self.prefetched = False
        self.retry_after = 0.0
        self.age = 0
        self.size = len(body.data) + 12 * len(offsets) + ENTRY_OVERHEAD

    def fresh(self, now: float) -> Reply:
        """The answer with its TTLs counted down; rebuilt at most once a second."""
        age = int(now - self.stored)
        if age == self.age:
            return self.reply
        ttls = [t - age if t > age else 0 for t in self.ttls]
        reply = Reply(_patched(self.reply.body, self.offsets, ttls), by=CACHE, ede=self.ede)
        self.age, self.reply = age, reply
        return reply

    def stale(self) -> Reply:
        body = _patched(self.reply.body, self.offsets, [STALE_TTL] * len(self.ttls))
        return Reply(body, by=STALE, ede=(*self.ede, (Ede.STALE_ANSWER, "Stale Answer")))


def _patched(template: Body, offsets: array[int], ttls: list[int] | array[int]) -> Body:
    """A copy of `template` with the TTL fields at `offsets` set to `ttls`; same layout."""
    data = bytearray(template.data)
    pack = _TTL.pack_into
    for offset, ttl in zip(offsets, ttls, strict=True):
        pack(data, offset, ttl)
    body = Body(template.rcode, False, bytes(data), template.an, template.ns, template.ar,
                template.ends)
    body.flags = template.flags
    return body


class Hit:
    """A cache key as the wire cache serves it: the entry's answer while it is fresh, and
    nothing when the slow path has work to do for it (expiry, eviction, a due prefetch).
    It holds the key, not the entry, so an evicted entry's memory is freed at once."""

    __slots__ = ("cache", "clock", "key", "table")

    variants = 1
    """The last countdown only: older ones will not be sent again."""
    owned = False
    """Its replies live only as long as someone holds them: the wire cache counts them."""

    def __init__(self, cache: Cache, key: Key) -> None:
        self.cache = cache
        self.clock = cache.clock
        self.table = cache.table
        self.key = key

    def pick(self) -> Reply | None:
        entry = self.table.get(self.key)
        if entry is None:
            return None
        now = self.clock()
        if now >= entry.until:
            return None
        self.cache.hits += 1
        entry.hits += 1
        self.table.move_to_end(self.key)
        if int(now - entry.stored) == entry.age:
            return entry.reply
        return entry.fresh(now)


class Cache:
    def __init__(self, config: CacheConfig, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.capacity = config.capacity
        self.max_bytes = config.max_bytes
        self.min_ttl = config.min_ttl
        self.max_ttl = config.max_ttl
        self.prefetch = config.prefetch
        self.serve_stale = config.serve_stale
        self.clock = clock
        self.table: OrderedDict[Key, Entry] = OrderedDict()
        self.pending: dict[Key, asyncio.Task[Reply]] = {}
        # Counters for metrics, plain integers.
        self.hits = 0
        self.misses = 0
        self.entries = 0
        self.bytes = 0
        """What the entries count (see ENTRY_OVERHEAD), at most `max_bytes`."""
        self.evictions = 0
        self.prefetches = 0
        self.stale_served = 0

    def serve(self, q: Query, next: Next) -> Result:
        key = (q.qname, q.qtype, q.qclass, (q.flags & 0x0030) | q.do)
        entry = self.table.get(key)
        if entry is not None:
            now = self.clock()
            if now < entry.expires:
                self.hits += 1
                self.table.move_to_end(key)
                entry.hits += 1
                if (self.prefetch and entry.hits >= PREFETCH_HITS and not entry.prefetched
                        and entry.expires - now < entry.lifetime * PREFETCH_LEFT):
                    self._prefetch(q, key, entry, next)
                    return entry.fresh(now)
                return entry.fresh(now).kept_by(Hit(self, key))
            if now >= entry.stale_until:
                self._drop(key)
                entry = None
            elif now < entry.retry_after:
                self.stale_served += 1
                return entry.stale()
        self.misses += 1
        task = self.pending.get(key)
        if task is None:
            result = next(q)
            if result.__class__ is Reply:
                return result  # not forwarded (refused, the probe answer): nothing to keep
            if len(self.pending) >= MAX_PENDING:
                return result
            task = self._fetch(key, result)  # type: ignore[arg-type]
        return self._wait(task, entry)

    def _fetch(self, key: Key, pending: Awaitable[Reply]) -> asyncio.Task[Reply]:
        task = asyncio.get_running_loop().create_task(self._store_when_done(key, pending))
        self.pending[key] = task
        return task

    async def _store_when_done(self, key: Key, pending: Awaitable[Reply]) -> Reply:
        try:
            reply = await pending
        finally:
            self.pending.pop(key, None)
        entry = self.store(key, reply)
        if entry is None:
            return reply
        # The first client gets what later ones get: TTLs within min_ttl..max_ttl.
        return Reply(entry.reply.body, by=FORWARD, ede=entry.ede)

    async def _wait(self, task: asyncio.Task[Reply], stale: Entry | None) -> Reply:
        reply = await asyncio.shield(task)
        if reply.body.rcode == Rcode.SERVFAIL and stale is not None:
            now = self.clock()
            if now < stale.stale_until:
                stale.retry_after = now + STALE_RETRY
                self.stale_served += 1
                return stale.stale()
        return reply

    def _prefetch(self, q: Query, key: Key, entry: Entry, next: Next) -> None:
        entry.prefetched = True
        entry.until = entry.expires
        if key in self.pending or len(self.pending) >= MAX_PENDING:
            return
        result = next(q)
        if result.__class__ is Reply:
            return
        self.prefetches += 1
        self._fetch(key, result).add_done_callback(_log_failure)  # type: ignore[arg-type]

    def store(self, key: Key, reply: Reply) -> Entry | None:
        """Keep a forwarded answer if it may be cached; the new entry, or None."""
        body = reply.body
        if not isinstance(body, Relayed) or body.cache_ttl < 0:
            return None
        low, high = self.min_ttl, self.max_ttl
        ttls = tuple(low if t < low else high if t > high else t for t in body.ttls)
        lifetime = min(ttls)
        if lifetime <= 0:
            return None
        offsets = array("I", body.ttl_offsets)
        template = _patched(body, offsets, array("I", ttls))
        template.flags &= ~FLAG_AA  # a cached answer is not authoritative (RFC 1035 6.2)
        entry = Entry(template, offsets, array("I", ttls), body.ede, now=self.clock(),
                      lifetime=lifetime, serve_stale=self.serve_stale, prefetch=self.prefetch)
        if entry.size > self.max_bytes:
            return None
        table = self.table
        old = table.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        table[key] = entry
        self.bytes += entry.size
        while len(table) > self.capacity or self.bytes > self.max_bytes:
            self.bytes -= table.popitem(last=False)[1].size
            self.evictions += 1
        self.entries = len(table)
        return entry

    def _drop(self, key: Key) -> None:
        entry = self.table.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size
        self.entries = len(self.table)


def _log_failure(task: asyncio.Task[Reply]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("prefetch failed: %s", task.exception())
