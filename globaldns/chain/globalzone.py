"""Authoritative answers for the served zones, straight from the prepared snapshot; each
reply carries its answer object, which the wire cache may keep (dns/fastpath.py)."""

from __future__ import annotations

from globaldns.answers.snapshot import Snapshot
from globaldns.answers.tables import NODATA, PerClient
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
            if isinstance(answers, PerClient):
                answers = answers.for_profile(
                    self.snapshot.locator.locate(q.client[0], q.ecs))
            return answers.pick().kept_by(answers)
        if q.qclass != QClass.IN and q.qclass != QClass.ANY:
            return next(q)
        negative = self.snapshot.negative(q.qname)
        if negative is None:
            return next(q)
        return negative.pick().kept_by(negative)
