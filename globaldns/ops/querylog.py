"""The query log (`log: {queries: true, sample: 1.0, file: ""}`): one JSON line per query.

    {"time": "2026-11-26T14:03:00.123Z", "client": "10.8.1.7", "proto": "udp",
     "name": "user-service.production.global", "type": "A", "rcode": "NOERROR",
     "answers": 3, "duration_ms": 0.041, "answered_by": "zone"}

`name` is in presentation format (RFC 1035 5.1): a byte that is not printable ASCII is
written `\\DDD`, a dot or backslash inside a label `\\.` or `\\\\`, so a query name can
carry no control character or line break into the log. `answered_by` is `zone` (the
served zones' prepared answers), `cache`, `forward`, `stale` (an expired cached answer,
RFC 8767), `chaos`, `refused` (ACL, overload, no zone) or `error`: what the handler that
made the reply wrote on it (`Reply.by`).

The event loop never formats or writes: a query appends one tuple to a bounded buffer,
and a thread turns the buffer into lines every 200 ms. When the writer falls behind
(a blocked stdout), lines are dropped and counted (`globaldns_log_dropped_total`) rather
than making the loop wait or the memory grow.

While the query log is on, the wire cache in front of the chain is bypassed (every query
must be seen), so answering costs more; `sample` keeps a fraction of the lines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import sys
import threading
import time
from collections import deque
from typing import IO, Any, Final

from globaldns.config.model import LogConfig
from globaldns.dns.message import Query, presentation
from globaldns.dns.names import QClass
from globaldns.dns.wire import Reply
from globaldns.ops.metrics import QTYPES, RCODES

log = logging.getLogger("globaldns.log")

# Lines waiting for the writer; at 100k queries/s this is one second of them.
MAX_BUFFERED: Final = 100_000
FLUSH_EVERY: Final = 0.2
PROTOS = ("udp", "tcp")


Item = tuple[float, str, int, bytes, int, int, int, int, float, str]


class QueryLog:
    def __init__(self, config: LogConfig) -> None:
        self.config = config
        self.sample = config.sample
        self.buffer: deque[Item] = deque()
        self.max_buffered = MAX_BUFFERED
        self.written = 0
        self.dropped = 0
        """Lines not buffered because the buffer was full (counted on the loop)."""
        self.lost = 0
        """Lines the writer could not write (counted by the writer thread)."""
        self._random = random.random
        self._stop = threading.Event()
        self._out: IO[str] = sys.stdout
        if config.file:
            # Opened here, so a bad path fails the (re)load instead of losing every line.
            self._out = open(config.file, "a", encoding="utf-8")  # noqa: SIM115
        self._thread = threading.Thread(target=self._run, name="globaldns query log",
                                        daemon=True)
        self._thread.start()

    def observe(self, q: Query, reply: Reply, wire: bytes, seconds: float) -> None:
        """A DnsServer observer: called on the loop after each reply."""
        if self.sample < 1.0 and self._random() >= self.sample:
            return
        buffer = self.buffer
        if len(buffer) >= self.max_buffered:
            self.dropped += 1
            return
        buffer.append((time.time(), q.client[0], q.transport, q.qname, q.qtype, q.qclass,
                       reply.body.rcode, (wire[6] << 8) | wire[7], seconds,
                       reply.by))

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_EVERY):
            self._flush()
        self._flush()
        if self._out is not sys.stdout:
            with contextlib.suppress(OSError):
                self._out.close()

    def _flush(self) -> None:
        buffer = self.buffer
        lines = []
        while buffer:
            lines.append(self._line(buffer.popleft()))
        if not lines:
            return
        try:
            self._out.write("".join(lines))
            self._out.flush()
        except (OSError, ValueError) as exc:
            self.lost += len(lines)
            log.warning("query log: cannot write %d lines: %s", len(lines), exc)
            return
        self.written += len(lines)

    @staticmethod
    def _line(item: Item) -> str:
        at, client, transport, qname, qtype, qclass, rcode, answers, seconds, how = item
        record: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at))
            + f".{int(at * 1000) % 1000:03d}Z",
            "client": client,
            "proto": PROTOS[transport],
            "name": presentation(qname),
            "type": QTYPES.get(qtype, f"TYPE{qtype}"),
        }
        if qclass != QClass.IN:
            record["class"] = "CH" if qclass == QClass.CH else f"CLASS{qclass}"
        record.update(rcode=RCODES.get(rcode, f"RCODE{rcode}"), answers=answers,
                      duration_ms=round(seconds * 1000, 3), answered_by=how)
        return json.dumps(record, separators=(", ", ": ")) + "\n"

    def close(self, *, wait: bool = True) -> None:
        """Stop taking lines; the writer writes what is buffered, closes its file and
        ends. `wait`: until it has (at most a second; a blocking call, so not on the
        event loop)."""
        self._stop.set()
        if wait:
            self._thread.join(1.0)
