"""Per-query counters: plain integers on the hot path, read by the metrics collector at
scrape time (globaldns/ops/metrics.py)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

# Histogram buckets as CoreDNS has them. Reply sizes in bytes (`le`):
SIZE_BOUNDS = (0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16000, 32000, 48000, 64000)
# Seconds a query waited (upstreams), 0.25 ms doubling to 8 s.
DURATION_BOUNDS = tuple(0.00025 * 2 ** i for i in range(16))
# A reply is counted under one integer key: transport, qtype, rcode and its size in bytes.
# One dict update per query then feeds the request, response and size metrics.
QTYPE_SHIFT, RCODE_SHIFT, TRANSPORT_SHIFT = 28, 16, 44
MALFORMED_QTYPE = 0
"""The qtype counted for a query answered FORMERR/NOTIMP/BADVERS before it was read."""
# Distinct keys kept before they are folded into totals (only floods of odd qtypes and
# sizes get near it; answers of one name and type share a key).
MAX_KEYS = 20_000
# Plain counters summed across processes as they are.
_PLAIN = ("rate_limit_dropped", "rate_limit_slipped", "cookies_new", "cookies_valid",
          "cookies_invalid")


def reply_key(transport: int, qtype: int, rcode: int, size: int) -> int:
    """The one place a reply's counting key is built (the wire cache adds the size of
    each reply to a key built with size 0)."""
    return transport << TRANSPORT_SHIFT | qtype << QTYPE_SHIFT | rcode << RCODE_SHIFT | size


class Stats:
    """Per-query counters as plain integers; exported at scrape time, never on the hot path.
    Keys are small closed sets (transport, qtype, rcode, size), never names or clients."""

    __slots__ = ("cookies_invalid", "cookies_new", "cookies_valid", "dropped", "duration_sum",
                 "durations", "errors", "folded", "gate_refused", "inflight_refused",
                 "max_keys", "rate_limit_dropped", "rate_limit_slipped", "replies")

    def __init__(self) -> None:
        self.replies: dict[int, int] = {}
        """reply_key(transport, qtype, rcode, size) → count."""
        self.folded: dict[tuple[str, int, int], int] = {}
        """What `fold` took out of `replies`: ("request", transport, qtype),
        ("rcode", rcode, 0), ("size", transport, bucket), ("bytes", transport, 0)."""
        self.durations = [0] * (len(DURATION_BOUNDS) + 1)
        """Replies that waited (forwarded), per DURATION_BOUNDS bucket (+Inf last). The
        rest were answered at once, in microseconds, and are not timed: timing them
        would cost more than answering them."""
        self.duration_sum = 0.0
        self.dropped = 0
        self.errors = 0
        self.inflight_refused = 0
        self.gate_refused = 0
        """Packets refused for their size or shape (dns/message.py), before a record was read."""
        self.max_keys = MAX_KEYS
        self.rate_limit_dropped = 0
        self.rate_limit_slipped = 0
        """UDP replies the rate limit dropped, and sent empty with TC (or BADCOOKIE)."""
        self.cookies_new = 0
        self.cookies_valid = 0
        self.cookies_invalid = 0
        """Queries with a client cookie only, with a valid, with an invalid server cookie."""

    def count(self, transport: int, qtype: int, rcode: int, size: int) -> None:
        key = reply_key(transport, qtype, rcode, size)
        replies = self.replies
        replies[key] = replies.get(key, 0) + 1
        if len(replies) > self.max_keys:
            self.fold()

    def fold(self) -> None:
        """Move the per-key counts into per-metric totals (bounded memory)."""
        self.folded = self.totals()
        self.replies = {}

    @staticmethod
    def _items(key: int) -> tuple[tuple[str, int, int], ...]:
        transport = key >> TRANSPORT_SHIFT
        size = key & 0xFFFF
        return (("request", transport, key >> QTYPE_SHIFT & 0xFFFF),
                ("rcode", key >> RCODE_SHIFT & 0xFFF, 0),
                ("size", transport, bisect_left(SIZE_BOUNDS, size)),
                ("bytes", transport, 0))

    def totals(self) -> dict[tuple[str, int, int], int]:
        """Everything counted so far, per metric item (see `folded`)."""
        out = dict(self.folded)
        for key, n in self.replies.items():
            for item in self._items(key):
                out[item] = out.get(item, 0) + (n * (key & 0xFFFF) if item[0] == "bytes"
                                                else n)
        return out

    def summary(self, inflight: int = 0) -> dict[str, Any]:
        """Everything counted, as plain data (a worker process sends it to the main)."""
        return {"totals": self.totals(), "durations": list(self.durations),
                "duration_sum": self.duration_sum, "dropped": self.dropped,
                "errors": self.errors, "inflight_refused": self.inflight_refused,
                "gate_refused": self.gate_refused,
                **{key: getattr(self, key) for key in _PLAIN},
                "inflight": inflight}


def combined(summaries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several processes' summaries."""
    out: dict[str, Any] = {"totals": {}, "durations": [0] * (len(DURATION_BOUNDS) + 1),
                           "duration_sum": 0.0, "dropped": 0, "errors": 0,
                           "inflight_refused": 0, "inflight": 0, "gate_refused": 0,
                           **dict.fromkeys(_PLAIN, 0)}
    totals = out["totals"]
    for summary in summaries:
        for item, n in summary["totals"].items():
            totals[item] = totals.get(item, 0) + n
        out["durations"] = [a + b for a, b in zip(out["durations"], summary["durations"],
                                                  strict=True)]
        for key in ("duration_sum", "dropped", "errors", "inflight_refused", "inflight",
                    "gate_refused", *_PLAIN):
            out[key] += summary.get(key, 0)
    return out
