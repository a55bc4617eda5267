"""The chain of one config: its handlers in order, built once per load (and per reload).

`Chain.build` assembles acl → globalzone → chaos → cache → forward (chain/__init__.py says
why this order) over the live snapshot. A reload builds a new Chain from the old one: the
forwarder and its cache stay (warm, with their upstream health) when their config did not
change, and the handlers' counters run on. `Chain.client_class` packs what a client's replies
depend on (its ACL decision and routing profile) into the wire cache's key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from globaldns.answers.explain import explain, lines
from globaldns.answers.snapshot import Snapshot
from globaldns.chain import Handler, Next, build
from globaldns.chain.acl import DENY, Acl
from globaldns.chain.cache import Cache
from globaldns.chain.chaos import Chaos
from globaldns.chain.forward import Forward
from globaldns.chain.globalzone import GlobalZone
from globaldns.config import Config
from globaldns.dns.message import Query
from globaldns.registry.store import Store


@dataclass(slots=True)
class Chain:
    acl: Acl
    chaos: Chaos
    forward: Forward | None
    cache: Cache | None
    next: Next
    """The first handler: call it with a query."""
    snapshot: Snapshot

    @classmethod
    def build(cls, config: Config, *, snapshot: Snapshot, store: Store, instance: str,
              overloaded: Callable[[], bool], note: Callable[[str], str],
              previous: Chain | None = None) -> Chain:
        """`note(client)`: a line about the client added to every CHAOS explanation (the
        rate limit's view of it)."""
        forward, cache = _forwarding(config, previous, overloaded)

        def explain_lines(q: Query) -> list[str] | None:
            """The CHAOS TXT explanation of q's name for q's client (None: not ours)."""
            if snapshot.zone_of(q.qname) is None:
                return None
            report = explain(snapshot, store, q.name, client=q.client[0], ecs=q.ecs)
            report.setdefault("notes", []).append(note(q.client[0]))
            return lines(report)

        acl = Acl(config.acl, forward=forward)
        chaos = Chaos(instance=instance, allow_debug=config.acl.allow_debug,
                      explain=explain_lines)
        # Counters run on across reloads (the handlers are rebuilt, the counts are ours).
        if previous is not None:
            acl.refused_queries = previous.acl.refused_queries
            acl.refused_recursion = previous.acl.refused_recursion
            acl.ecs_ignored = previous.acl.ecs_ignored
            chaos.answers, chaos.refused = previous.chaos.answers, previous.chaos.refused
        handlers: list[Handler] = [acl, GlobalZone(snapshot), chaos]
        if cache is not None:
            handlers.append(cache)
        if forward is not None:
            handlers.append(forward)
        return cls(acl, chaos, forward, cache, build(handlers), snapshot)

    def client_class(self, ip: str) -> int | None:
        """What a client's replies depend on: its ACL decision (high bits) and its routing
        profile (low 24 bits); None: the ACL denies it."""
        decision = self.acl.decide(ip)
        if decision == DENY:
            return None
        return decision << 24 | self.snapshot.locator.locate(ip, None).id

    def close(self) -> None:
        if self.forward is not None:
            self.forward.close()


def _forwarding(config: Config, previous: Chain | None,
                overloaded: Callable[[], bool]) -> tuple[Forward | None, Cache | None]:
    """The forwarder and its cache: kept across a reload that does not change them, else
    replaced and the old forwarder closed once its queries in flight are done."""
    old = previous.forward if previous is not None else None
    cache = previous.cache if previous is not None else None
    served = tuple(z.name for z in config.zones)
    forward = old
    if old is None or old.configs != config.forward or old.served != served:
        forward = Forward(config.forward, served=served,
                          overloaded=overloaded) if config.forward else None
        cache = None
        if old is not None:
            _close_later(old)
    if cache is None or cache.config != config.cache:
        cache = Cache(config.cache) if forward is not None and config.cache.capacity else None
    return forward, cache


def _close_later(old: Forward) -> None:
    """A replaced forwarder: queries in flight on it finish (they have at most
    timeout * tries left) before its connections and probes close."""
    grace = max((c.timeout * c.tries for c in old.configs), default=0.0) + 1.0
    try:
        asyncio.get_running_loop().call_later(grace, old.close)
    except RuntimeError:  # no loop running (not started yet)
        old.close()
