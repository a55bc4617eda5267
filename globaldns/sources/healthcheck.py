"""Active health checks: probes of static endpoints, fed to the registry.

For every static endpoint with a `health_check` (its own, else its service's), one task
probes the endpoint's address on the check's port every `interval`: an HTTP GET of `path`
whose status must fall in `expect_status`, or a TCP connect, each within `timeout`.
An endpoint counts as healthy until checks say otherwise: it turns unhealthy after
`unhealthy_threshold` consecutive failures and healthy again after `healthy_threshold`
consecutive successes. When an endpoint flips, only its service's static data is written
again (ready = configured ready and healthy), so a flip costs O(that service).

The checks never block the event loop: each one is a few non-blocking socket operations
(addresses are IP literals, so no resolver is involved), at most `concurrency` run at
once, and each task starts at a random point of its first interval so that thousands of
endpoints spread over the interval instead of probing in one burst. Re-preparing a
service's answers takes about a millisecond, so flips are not written where a check ends:
one writer task writes each changed service once, yielding to the loop between services,
and a wave of flips (a rack going down) never holds up a query for more than one write.

Other sources hand it checks of their own with `track` (the Istio source: a WorkloadGroup's
probe against the addresses of the WorkloadEntries it owns); on a flip of one of those the
source is told and reads `health` again.

Results are plain attributes, read by metrics and the debug pages: `endpoints` (one
`EndpointHealth` per check), `checks` (count per result), `transitions` and `in_flight`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable

import aiohttp

from globaldns.config.model import Config, StaticService
from globaldns.registry.model import ServiceKey
from globaldns.registry.store import Store
from globaldns.sources.static import STATIC, HealthKey, apply_static, health_key, static_service

log = logging.getLogger("globaldns.healthcheck")

RESULTS = ("success", "status", "refused", "timeout", "error")
"""Each check's result: passed; HTTP status out of range; connection refused; no answer
within the timeout; any other failure (reset, unreachable, bad HTTP)."""

# 64 checks in flight at once: a check that gets an answer takes about a millisecond on a
# LAN, so this carries thousands of checks per second, while a wave of timeouts cannot
# open thousands of sockets at once (the file descriptor limit is often 1024). The cost:
# when many endpoints time out together, checks wait for a slot and intervals stretch.
CONCURRENCY = 64

USER_AGENT = "globaldns-healthcheck"


class EndpointHealth:
    """The state of one endpoint's check; plain attributes for operators and metrics."""

    __slots__ = ("address", "checks", "consecutive_failures", "consecutive_successes",
                 "healthy", "key", "kind", "last_check", "last_error", "last_result", "port",
                 "service")

    def __init__(self, key: HealthKey) -> None:
        self.key = key
        self.service: ServiceKey = key.service
        self.address = key.address
        self.port = key.check.port
        self.kind = key.check.kind
        self.healthy = True
        """Healthy until checks say otherwise (also before the first check completes)."""
        self.consecutive_failures = 0
        self.consecutive_successes = 0
        self.checks = 0
        self.last_result = ""
        """One of RESULTS; empty before the first check completes."""
        self.last_error = ""
        self.last_check = 0.0
        """Wall-clock time (seconds since the epoch) of the last completed check; 0: none."""


class HealthChecker:
    """Runs the health checks of the current config and keeps the static source's
    readiness in step with their results."""

    def __init__(self, store: Store, *, concurrency: int = CONCURRENCY,
                 clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random,
                 now: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.store = store
        self.clock = clock
        """Wall-clock seconds, for `last_check` shown to humans."""
        self.rand = rand
        self.now = now
        self.sleep = sleep
        """The schedule of checks: tests pass a time they move (a check's own timeout,
        a real network exchange, stays real)."""
        self.endpoints: dict[HealthKey, EndpointHealth] = {}
        self.health: dict[HealthKey, bool] = {}
        """Each check's verdict, as the static source reads it."""
        self.checks = dict.fromkeys(RESULTS, 0)
        self.transitions = {"healthy": 0, "unhealthy": 0}
        self.in_flight = 0
        """Checks running now; at `concurrency`, later checks wait for a slot."""
        self._services: dict[ServiceKey, StaticService] = {}
        self._tasks: dict[HealthKey, asyncio.Task[None]] = {}
        self._dirty: dict[ServiceKey, None] = {}
        """Services whose endpoints flipped and are not written yet, oldest first."""
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._pool = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._started = False
        self._owners: dict[HealthKey, str] = {}
        """Checks another source tracks (not the static config's), by that source."""
        self._notify: dict[str, Callable[[], None]] = {}

    # -- lifetime --------------------------------------------------------------------

    def apply(self, config: Config) -> None:
        """Take the config's services: checks that are new or changed start (fresh, healthy),
        checks no longer configured stop, unchanged ones keep running with their state.
        Writes the static source, with readiness from the current results."""
        self._services = {(s.namespace, s.name): s for s in config.services}
        wanted = {key for s in config.services for e in s.endpoints
                  if (key := health_key(s, e)) is not None}
        static = {key for key in self.endpoints if key not in self._owners}
        self._set_checks(static, wanted)
        apply_static(self.store, config, self.health)
        self._dirty.clear()  # all written, with the current results

    def track(self, owner: str, wanted: set[HealthKey], notify: Callable[[], None]) -> None:
        """Run exactly `wanted` for the source `owner` (new checks start healthy); call
        `notify` when one of them flips."""
        mine = {key for key, who in self._owners.items() if who == owner}
        self._set_checks(mine, wanted - (self.endpoints.keys() - mine))
        for key in mine - wanted:
            self._owners.pop(key, None)
        for key in wanted & self.endpoints.keys():
            self._owners.setdefault(key, owner)
        if wanted:
            self._notify[owner] = notify
        else:
            self._notify.pop(owner, None)

    def _set_checks(self, current: set[HealthKey], wanted: set[HealthKey]) -> None:
        for key in current - wanted:
            task = self._tasks.pop(key, None)
            if task is not None:
                task.cancel()
            del self.endpoints[key]
            del self.health[key]
        for key in wanted - self.endpoints.keys():
            self.endpoints[key] = EndpointHealth(key)
            self.health[key] = True
            if self._started:
                self._spawn(key)

    def start(self) -> None:
        """Start every check; call on the running event loop."""
        self._started = True
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(
                self._write_changes(), name="healthcheck writer")
        for key in self.endpoints:
            if key not in self._tasks:
                self._spawn(key)

    async def stop(self) -> None:
        self._started = False
        tasks = list(self._tasks.values())
        if self._writer is not None:
            tasks.append(self._writer)
            self._writer = None
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _spawn(self, key: HealthKey) -> None:
        self._tasks[key] = asyncio.get_running_loop().create_task(
            self._run(key), name=f"healthcheck {key.address}:{key.check.port}")

    async def _run(self, key: HealthKey) -> None:
        """Probe every interval, measured from one check's start to the next; a check that
        runs late (pool full, timeout longer than the interval) pushes the next one back
        instead of bunching them up."""
        check = key.check
        await self.sleep(self.rand() * check.interval)
        due = self.now()
        while True:
            try:
                async with self._pool:
                    self.in_flight += 1
                    try:
                        result, error = await self.probe(key)
                    finally:
                        self.in_flight -= 1
                self.record(key, result, error)
            except Exception:  # a bug must not end this endpoint's checks for good
                log.exception("healthcheck: check of %s:%d failed", key.address, check.port)
            due = max(due + check.interval, self.now())
            await self.sleep(due - self.now())

    # -- one check -------------------------------------------------------------------

    async def probe(self, key: HealthKey) -> tuple[str, str]:
        """Run one check: (result, error text); the result is one of RESULTS."""
        check = key.check
        try:
            async with asyncio.timeout(check.timeout):
                if check.kind == "tcp":
                    await self._connect(key.address, check.port)
                    return "success", ""
                status = await self._get(key.address, check.port, check.path)
        except TimeoutError:
            return "timeout", f"no answer within {check.timeout:g}s"
        except ConnectionRefusedError:
            return "refused", "connection refused"
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ConnectionRefusedError):
                return "refused", "connection refused"
            return "error", str(exc.os_error) or type(exc.os_error).__name__
        except (OSError, aiohttp.ClientError) as exc:
            return "error", str(exc) or type(exc).__name__
        low, high = check.expect_status
        if not low <= status <= high:
            return "status", f"HTTP status {status}, expected {low}-{high}"
        return "success", ""

    @staticmethod
    async def _connect(address: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (address, port))
        finally:
            sock.close()

    async def _get(self, address: str, port: int, path: str) -> int:
        if self._session is None:
            # A new connection per check (force_close): a server that stops accepting
            # connections fails its next check instead of hiding behind a kept-alive one.
            # The pool bounds concurrency, so the connector needs no limit of its own.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, limit=0),
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"User-Agent": USER_AGENT})
        host = f"[{address}]" if ":" in address else address
        # Redirects are not followed: a 3xx is a status like any other (Route 53 does so).
        async with self._session.get(f"http://{host}:{port}{path}",
                                     allow_redirects=False) as response:
            return response.status

    # -- results ---------------------------------------------------------------------

    def record(self, key: HealthKey, result: str, error: str = "") -> None:
        """Count one check's result and flip the endpoint when a threshold is reached."""
        state = self.endpoints.get(key)
        if state is None:  # no longer configured
            return
        self.checks[result] += 1
        state.checks += 1
        state.last_result = result
        state.last_check = self.clock()
        check = key.check
        if result == "success":
            state.consecutive_successes += 1
            state.consecutive_failures = 0
            state.last_error = ""
            if not state.healthy and state.consecutive_successes >= check.healthy_threshold:
                self._flip(state, healthy=True)
        else:
            state.consecutive_failures += 1
            state.consecutive_successes = 0
            state.last_error = error
            if state.healthy and state.consecutive_failures >= check.unhealthy_threshold:
                self._flip(state, healthy=False)

    def _flip(self, state: EndpointHealth, *, healthy: bool) -> None:
        key = state.key
        state.healthy = self.health[key] = healthy
        self.transitions["healthy" if healthy else "unhealthy"] += 1
        if healthy:
            log.info("healthcheck: %s.%s %s:%d healthy after %d successes", key.service[1],
                     key.service[0], key.address, key.check.port, state.consecutive_successes)
        else:
            log.warning("healthcheck: %s.%s %s:%d unhealthy after %d failures: %s",
                        key.service[1], key.service[0], key.address, key.check.port,
                        state.consecutive_failures, state.last_error)
        owner = self._owners.get(key)
        if owner is not None:
            notify = self._notify.get(owner)
            if notify is not None:
                notify()
        elif self._writer is None:  # not started: nothing else would write it
            self._write(key.service)
        else:
            self._dirty[key.service] = None
            self._wake.set()

    async def _write_changes(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty:
                service = next(iter(self._dirty))
                del self._dirty[service]
                try:
                    self._write(service)
                except Exception:  # a bug must not stop every later write
                    log.exception("healthcheck: writing %s.%s failed", service[1], service[0])
                await asyncio.sleep(0)  # let queries in between services

    def _write(self, key: ServiceKey) -> None:
        service = self._services.get(key)
        if service is not None:
            self.store.set(STATIC, key, static_service(service, self.health))
