"""List-then-watch of one resource, forever.

Four small steps, as kopf splits them:
- `Watch.run()`: the never-ending, supervised loop; failures back off exponentially with
  jitter (capped at 30 s) and the loop goes on;
- `_list()`: a paginated list, handed whole to the sink, which reconciles (what is
  missing from it is deleted);
- `_stream()`: one HTTP watch stream from the last seen resourceVersion, with an
  inactivity timeout;
- events to the sink, one at a time.

410 Gone (an HTTP 410, or an ERROR event carrying a 410 Status) means our
resourceVersion was compacted: relist. Anything else (connection refused or dropped,
idle timeout, 5xx, 401/403) resumes the watch from the last seen resourceVersion after
the backoff. Nothing is lost: either the watch resumes exactly where it stopped, or the
relist replaces everything.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from globaldns.config.model import DEFAULT_LIMITS, LimitsConfig
from globaldns.registry.store import Skipped
from globaldns.sources.k8s.api import (
    ENDPOINTSLICES,
    ApiClient,
    ApiError,
    Forbidden,
    Gone,
    IdleTimeout,
    KubernetesError,
    Resource,
    Unauthorized,
)
from globaldns.sources.k8s.objects import EventType, resource_version

log = logging.getLogger("globaldns.k8s")

# Where an oversized EndpointSlice line names itself: the API server writes `metadata`
# with `name` first and `namespace` soon after; only the head of the line is searched.
_HEAD = 4096
_NAME = re.compile(rb'"metadata":\{"name":"([a-z0-9.-]{1,253})"')
_NAMESPACE = re.compile(rb'"namespace":"([a-z0-9-]{1,63})"')

# client-go's reflector backs off from 800 ms, doubling, to 30 s; so do we.
BACKOFF_BASE = 0.8
BACKOFF_CAP = 30.0


@dataclass(frozen=True, slots=True)
class Timing:
    """Time and randomness, injected: tests move time instead of sleeping."""

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    wall: Callable[[], float] = time.time
    """Wall-clock seconds, for the `last sync` shown to humans."""

    def backoff(self, attempt: int) -> float:
        """Delay before retry number `attempt` (0-based): exponential, "equal jitter"
        (half fixed, half random, so many clusters failing together spread out)."""
        ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(attempt, 16))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)


class Sink(Protocol):
    """Where a watch delivers: the cluster source."""

    def listed(self, watch: Watch, objects: list[dict[str, Any]]) -> None:
        """The complete set of objects in the watch's scope (after a list or relist)."""

    def event(self, watch: Watch, kind: EventType, obj: dict[str, Any]) -> None:
        """One ADDED, MODIFIED or DELETED object."""

    def changed(self, watch: Watch) -> None:
        """The watch's status changed (listed, healthy, error)."""

    async def failed(self, watch: Watch, error: Exception) -> None:
        """Called before the backoff sleep; e.g. reload credentials after a 401."""


class Watch:
    """One resource (all namespaces or one, with a label selector) of one cluster.

    Status is in plain attributes, read by the cluster source for metrics and readiness.
    """

    def __init__(self, api: ApiClient, resource: Resource, sink: Sink, *,
                 cluster: str, namespace: str = "", label_selector: str = "",
                 idle_timeout: float, timing: Timing,
                 limits: LimitsConfig = DEFAULT_LIMITS,
                 skipped: Skipped | None = None) -> None:
        self.api = api
        self.limits = limits
        self.skipped = skipped if skipped is not None else Skipped()
        self.resource = resource
        self.cluster = cluster
        self.namespace = namespace
        self.label_selector = label_selector
        self.idle_timeout = idle_timeout
        self._sink = sink
        self._timing = timing
        self.name = f"{cluster}/{resource.plural}" + (f"@{namespace}" if namespace else "")
        # Status.
        self.resource_version = ""
        """The last seen resourceVersion: where a resumed watch starts; empty = relist."""
        self.listed = False
        """A list has completed since this watch started."""
        self.healthy = False
        """The last request succeeded (a list, or a watch opened)."""
        self.events: Counter[str] = Counter()
        self.lists = 0
        self.relists = 0
        """Lists after a 410 (our resourceVersion was compacted)."""
        self.errors = 0
        self.error_kinds: Counter[str] = Counter()
        self.last_error = ""
        self.last_error_kind = ""
        self.attempt = 0
        """Consecutive failures; sets the backoff."""
        self._gone_streak = 0

    async def run(self) -> None:
        """Never returns; cancel it to stop."""
        while True:
            try:
                if not self.resource_version:
                    await self._list()
                opened = self._timing.clock()
                delivered = await self._stream()
                # A stream the server ended after events, or after a while, is routine
                # (its timeout): watch again now. One that ended at once with nothing
                # backs off, so a server that closes every watch is not hammered.
                if delivered or self._timing.clock() - opened >= 1.0:
                    self.attempt = 0
                    continue
                delay = self._timing.backoff(self.attempt)
                self.attempt += 1
                await self._timing.sleep(delay)
            except asyncio.CancelledError:
                raise
            except Gone as exc:
                self.relists += 1
                self.resource_version = ""
                self._gone_streak += 1
                log.info("k8s %s: %s; relisting", self.name, exc)
                if self._gone_streak > 1:
                    # 410 again right after a relist: do not spin.
                    await self._timing.sleep(self._timing.backoff(self._gone_streak - 2))
            except Exception as exc:  # every failure: log, count, back off, go on
                await self._failure(exc)

    async def _failure(self, exc: Exception) -> None:
        kind = _error_kind(exc)
        self.errors += 1
        self.error_kinds[kind] += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.last_error_kind = kind
        was_healthy, self.healthy = self.healthy, False
        if isinstance(exc, IdleTimeout):
            # The stream opened and stayed open for the whole idle timeout: the server is
            # there (a quiet watch without bookmarks, or a dead path): reopen at the first
            # step, not a step further each time, as a quiet Services watch otherwise
            # climbs to the 30 s cap and misses that long after every idle timeout.
            self.attempt = 0
        delay = self._timing.backoff(self.attempt)
        self.attempt += 1
        if isinstance(exc, Unauthorized | Forbidden):
            log.error("k8s %s: %s — check the credentials and RBAC of cluster %s "
                      "(list/watch on %s); retrying in %.1fs", self.name, exc, self.cluster,
                      self.resource.plural, delay)
        elif isinstance(exc, KubernetesError):
            level = logging.WARNING if was_healthy or self.attempt <= 1 else logging.INFO
            log.log(level, "k8s %s: %s; retrying from resourceVersion %s in %.1fs",
                    self.name, exc, self.resource_version or "(relist)", delay)
        else:
            # A bug in our conversion: relist after the pause to converge again.
            log.exception("k8s %s: unexpected error; relisting in %.1fs", self.name, delay)
            self.resource_version = ""
        self._sink.changed(self)
        try:
            await self._sink.failed(self, exc)
        except Exception:
            log.exception("k8s %s: failure handler", self.name)
        await self._timing.sleep(delay)

    async def _list(self) -> None:
        result = await self.api.list(self.resource, namespace=self.namespace,
                                     label_selector=self.label_selector)
        self.lists += 1
        self.relists += result.restarts
        self._sink.listed(self, result.items)
        self.resource_version = result.resource_version
        self.listed = True
        self.healthy = True
        self.attempt = 0
        self._sink.changed(self)

    async def _stream(self) -> int:
        """One watch stream; the number of events (bookmarks too) it delivered."""
        delivered = 0
        # Like client-go, ask the server to end the watch after 5-10 minutes: connections
        # get spread again over API server replicas, and we resume where we were.
        server_timeout = int(self._timing.rng.uniform(300, 600))
        async with self.api.watch(self.resource, namespace=self.namespace,
                                  label_selector=self.label_selector,
                                  resource_version=self.resource_version,
                                  idle_timeout=self.idle_timeout,
                                  timeout_seconds=server_timeout,
                                  max_event_bytes=self.limits.max_event_bytes,
                                  screen=self._screen) as events:
            if not self.healthy:
                self.healthy = True
                self._sink.changed(self)
            async for event in events:
                kind = event["type"]
                obj = event["object"]
                self.events[kind] += 1
                delivered += 1
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._sink.event(self, kind, obj)
                elif kind != "BOOKMARK":
                    log.warning("k8s %s: unknown watch event type %r, ignored", self.name, kind)
                # After the sink took it: a crash above resumes before this event.
                self.resource_version = resource_version(obj) or self.resource_version
                if delivered == 1:
                    self.attempt = self._gone_streak = 0
        return delivered


    def _screen(self, line: bytes | None) -> bool:
        """Bound before parsing: an event past `max_event_bytes` is skipped unread, and an
        EndpointSlice with more addresses than `max_endpoints_per_service` is skipped
        unparsed and forgotten, as a relist would. Each non-empty `"addresses":["` holds
        at least one address: a count of them past the limit is proof enough; below it,
        the conversion counts exactly."""
        if line is None:
            self.skipped.skip("event_too_large", f"k8s/{self.name} event",
                              f"past {self.limits.max_event_bytes} bytes "
                              "(limits.max_event_bytes)")
            return False
        if self.resource is not ENDPOINTSLICES:
            return True
        limit = self.limits.max_endpoints_per_service
        if line.count(b'"addresses":["') <= limit:
            return True
        head = line[:_HEAD]
        name, namespace = _NAME.search(head), _NAMESPACE.search(head)
        what = "endpointslice " + (f"{namespace[1].decode()}/{name[1].decode()}"
                                   if name and namespace else "(unnamed)")
        self.skipped.skip("too_many_endpoints", f"k8s/{self.cluster} {what}",
                          f"more than {limit} addresses (limits.max_endpoints_per_service)")
        if name and namespace:
            self._sink.event(self, "DELETED", {"metadata": {
                "name": name[1].decode(), "namespace": namespace[1].decode()}})
        return False


def _error_kind(exc: Exception) -> str:
    """A closed set of error names, for metrics labels."""
    if isinstance(exc, Unauthorized):
        return "unauthorized"
    if isinstance(exc, Forbidden):
        return "forbidden"
    if isinstance(exc, IdleTimeout):
        return "idle_timeout"
    if isinstance(exc, ApiError):
        return "server_error" if exc.code >= 500 or exc.code == 429 else "api_error"
    if isinstance(exc, KubernetesError):
        return "connection"
    return "internal"
