"""Authoritative answers for the served zones, straight from the prepared snapshot."""

from __future__ import annotations

from globaldns.answers.snapshot import NODATA, PerClient, Snapshot
from globaldns.chain import Next, Result
from globaldns.dns.message import Query
from globaldns.dns.names import QClass


class GlobalZone:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def serve(self, q: Query, next: Next) -> Result:
        table = self.snapshot.names.get(q.qname)
        if table is not None:
            if q.qclass != QClass.IN and q.qclass != QClass.ANY:
                return next(q)
            answers = table.get(q.qtype)
            if answers is None:
                answers = table[NODATA]
            if answers.__class__ is PerClient:
                answers = answers.for_profile(
                    self.snapshot.locator.locate(q.client[0], q.ecs))
            q.answers = answers
            return answers.pick(q)
        if q.qclass != QClass.IN and q.qclass != QClass.ANY:
            return next(q)
        negative = self.snapshot.negative(q.qname)
        if negative is None:
            return next(q)
        q.answers = negative
        return negative.pick(q)
