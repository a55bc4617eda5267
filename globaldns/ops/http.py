"""The HTTP endpoint (`http.listen`, default 127.0.0.1:9153): metrics, probes, debug pages.

    /                 status page: clusters and their sync state, services with ready/total
                      endpoints per cluster, upstreams, health checks, config
    /metrics          Prometheus text format (globaldns/ops/metrics.py)
    /health           liveness: 200 while the event loop keeps up (JSON with its lag)
    /ready            readiness: 200 once every cluster listed once or sync_timeout passed;
                      503 with a JSON reason before that and while shutting down
    /debug/registry   the merged registry as JSON, one page of at most `limit` endpoints
                      (?service=name.namespace, ?limit=N, ?continue=<token of the last page>)
    /debug/explain    ?name=&client=&ecs=: why a name answers what it does, as JSON

Only `/metrics`, `/health` and `/ready` answer everyone; the status page and `/debug/*`
show the whole multi-cluster topology and answer `acl.allow_debug` clients only (403).
Every connection must send its request headers within `http.header_timeout` (of opening,
or of its previous response); at `http.max_connections` the connection that has waited
longest for its headers is closed to make room, and the new one is refused when none is.

Everything runs on the DNS event loop and reads the same state the queries read; no page
walks the registry per endpoint except /debug/registry, whose pages are bounded.
Exceptions become a 500 JSON reply in one place (the middleware), without their text.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import html
import ipaddress
import itertools
import json
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from prometheus_client import generate_latest

from globaldns import __version__
from globaldns.answers.explain import explain, lines
from globaldns.config.model import ListenAddress
from globaldns.ops.metrics import Metrics, dns_summary, pools, rcode_name
from globaldns.registry.model import ServiceKey
from globaldns.registry.store import Store
from globaldns.runtime import Runtime

log = logging.getLogger("globaldns.http")

# Liveness: the loop is checked every half second; a loop that fell this far behind within
# the last 10 s is reported unhealthy (kubelet then restarts us only if it lasts for
# failureThreshold probes).
LAG_EVERY: Final = 0.5
LAG_WINDOW: Final = 10.0
MAX_LAG: Final = 2.0
# The text format every Prometheus version reads (names here are plain ASCII, so the
# exposition is the same in the newer 1.0.0 format).
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# /debug/registry: endpoints per page unless ?limit= says fewer. A page of 500 costs a few
# ms of loop time (bench/RESULTS-hostile-http.md); the next one is asked for with the
# `continue` token.
REGISTRY_LIMIT: Final = 500
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Paths that answer every client: probes and scrapes carry no topology.
PUBLIC_PATHS: Final = frozenset({"/metrics", "/health", "/ready"})
# The status page lists at most this many services.
STATUS_SERVICES: Final = 500


class LoopLag:
    """How late the event loop runs a timer: its recent worst lag. The clock and sleep
    default to the loop's (tests pass their own and move time)."""

    def __init__(self, *, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.samples: deque[tuple[float, float]] = deque()
        self.task: asyncio.Task[None] | None = None
        self.clock = clock
        self.sleep = sleep

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name="loop lag")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _run(self) -> None:
        clock = self.clock or asyncio.get_running_loop().time
        while True:
            before = clock()
            await self.sleep(LAG_EVERY)
            now = clock()
            self.samples.append((now, max(now - before - LAG_EVERY, 0.0)))
            while self.samples and self.samples[0][0] < now - LAG_WINDOW:
                self.samples.popleft()

    @property
    def worst(self) -> float:
        return max((lag for _, lag in self.samples), default=0.0)


class Guarded(asyncio.Protocol):
    """One HTTP connection: aiohttp's protocol inside, our header deadline and connection
    cap around it."""

    def __init__(self, owner: HttpServer, inner: asyncio.Protocol) -> None:
        self.owner = owner
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.waiting_since: float | None = None
        """Loop time since when we wait for this connection's request headers."""
        self.admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.owner.admit(self):
            transport.close()
            return
        self.admitted = True
        self.owner.by_transport[transport] = self
        self.inner.connection_made(transport)
        self.wait_for_headers()

    def wait_for_headers(self) -> None:
        loop = asyncio.get_running_loop()
        self.waiting_since = loop.time()
        if self.timer is not None:
            self.timer.cancel()
        self.timer = loop.call_later(self.owner.runtime.config.http.header_timeout, self.close,
                                     "header_timeout")

    def request_started(self) -> None:
        self.waiting_since = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def close(self, reason: str) -> None:
        self.owner.counts.closed[reason] += 1
        self.request_started()
        self.owner.connections.discard(self)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.owner.connections.discard(self)
        if self.admitted:
            self.owner.by_transport.pop(self.transport, None)  # type: ignore[arg-type]
            self.inner.connection_lost(exc)


class ServiceIndex:
    """The registry's service keys in order, for /debug/registry's pages: a page starts
    with a bisect, not a sort of every key.

    The store tells us every change; only services that appear or go move the index, and
    they are applied at the next request: a few by insertion, many (the first list of a
    large cluster) by a rebuild that sorts in slices and yields to the loop between them."""

    SLICE: Final = 2000

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys: list[ServiceKey] = []
        self.members: set[ServiceKey] = set()
        self.pending: set[ServiceKey] = set(store.service_keys())
        self._rebuilding: asyncio.Future[None] | None = None
        store.subscribe(self.changed)

    def changed(self, key: ServiceKey) -> None:
        if self._rebuilding is not None or (key in self.members) != bool(self.store.raw(key)):
            self.pending.add(key)

    async def current(self) -> list[ServiceKey]:
        while self.pending:
            if self._rebuilding is not None:
                await asyncio.shield(self._rebuilding)
            elif len(self.pending) > self.SLICE // 10:
                self._rebuilding = asyncio.get_running_loop().create_future()
                try:
                    await self._rebuild()
                finally:
                    self._rebuilding.set_result(None)
                    self._rebuilding = None
            else:
                self._apply()
        return self.keys

    def _apply(self) -> None:
        keys, members = self.keys, self.members
        for key in self.pending:
            present = bool(self.store.raw(key))
            if present and key not in members:
                bisect.insort(keys, key)
                members.add(key)
            elif not present and key in members:
                del keys[bisect.bisect_left(keys, key)]
                members.discard(key)
        self.pending = set()

    async def _rebuild(self) -> None:
        self.pending = set()
        keys = self.store.service_keys()
        runs = []
        for i in range(0, len(keys), self.SLICE):
            runs.append(sorted(keys[i : i + self.SLICE]))
            await asyncio.sleep(0)
        merged: list[ServiceKey] = []
        ordered = heapq.merge(*runs)
        while batch := list(itertools.islice(ordered, self.SLICE)):
            merged.extend(batch)
            await asyncio.sleep(0)
        members: set[ServiceKey] = set()
        for i in range(0, len(merged), self.SLICE):
            members.update(merged[i : i + self.SLICE])
            await asyncio.sleep(0)
        # Every change while we sliced is in `pending` again, judged against the new index.
        old, self.keys, self.members = self.keys, merged, members
        self.pending = {k for k in self.pending if (k in members) != bool(self.store.raw(k))}
        while old:  # the keys of services that went are freed in slices too
            del old[-self.SLICE :]
            await asyncio.sleep(0)


class HttpServer:
    def __init__(self, runtime: Runtime, metrics: Metrics, *,
                 lag: LoopLag | None = None) -> None:
        self.runtime = runtime
        self.collector = metrics
        self.counts = metrics.http
        self.services = ServiceIndex(runtime.store)
        self.runner: web.AppRunner | None = None
        self.server: asyncio.Server | None = None
        self.listen: ListenAddress | None = None
        self.port = 0
        self.lag = lag or LoopLag()
        self.started = time.time()
        self.connections: set[Guarded] = set()
        self.by_transport: dict[asyncio.BaseTransport, Guarded] = {}
        self._debug_nets: tuple[tuple[str, ...], list[IPNetwork]] = ((), [])

    # --- lifetime ---------------------------------------------------------------------

    def _web_app(self) -> web.Application:
        webapp = web.Application(middlewares=[self._errors, self._access])
        webapp.router.add_get("/", self.index)
        webapp.router.add_get("/metrics", self.metrics)
        webapp.router.add_get("/health", self.health)
        webapp.router.add_get("/ready", self.ready)
        webapp.router.add_get("/debug/registry", self.registry)
        webapp.router.add_get("/debug/explain", self.explain)
        return webapp

    async def start(self, listen: ListenAddress) -> None:
        """Listen on `listen` (OSError when the address cannot be bound)."""
        sock = _bind(listen)
        runner = web.AppRunner(self._web_app(), access_log=None, shutdown_timeout=1.0,
                               handle_signals=False)
        await runner.setup()
        handlers = runner.server
        assert handlers is not None
        try:
            server = await asyncio.get_running_loop().create_server(
                lambda: Guarded(self, handlers()), sock=sock, backlog=128)
        except BaseException:
            await runner.cleanup()
            raise
        if self.runner is None:
            self.lag.start()
        old = self.runner, self.server
        self.runner, self.server, self.listen = runner, server, listen
        self.port = sock.getsockname()[1]
        await _close(*old)
        log.info("http: listening on %s:%d", listen.host, self.port)

    def admit(self, connection: Guarded) -> bool:
        """Make room for a new connection, or say it cannot have one."""
        if len(self.connections) >= self.runtime.config.http.max_connections:
            waiting = [c for c in self.connections if c.waiting_since is not None]
            if not waiting:
                self.counts.closed["rejected"] += 1
                return False
            min(waiting, key=lambda c: c.waiting_since).close("evicted")  # type: ignore[arg-type, return-value]
        self.connections.add(connection)
        return True

    async def move(self, listen: ListenAddress | None) -> None:
        """A reload changed `http.listen`: the new address first, then the old one goes."""
        if listen == self.listen:
            return
        if listen is None:
            await self.stop()
            return
        try:
            await self.start(listen)
        except OSError as exc:
            log.error("http: cannot listen on %s (%s); still on %s", listen,
                      exc.strerror or exc, self.listen)

    async def stop(self) -> None:
        await self.lag.stop()
        await _close(self.runner, self.server)
        self.runner = self.server = self.listen = None

    # --- the one error boundary -------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        connection = self.by_transport.get(request.transport)  # type: ignore[arg-type]
        if connection is not None:
            connection.request_started()
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception:
            # The text stays in the log: an exception can quote what it failed on.
            log.exception("http: %s failed", request.path)
            return web.json_response({"error": "internal error (logged by the server)"},
                                     status=500)
        finally:
            if connection is not None and connection.admitted:
                connection.wait_for_headers()

    @web.middleware
    async def _access(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS or self._debug_allowed(request.remote):
            return await handler(request)
        self.counts.forbidden += 1
        return web.json_response({"error": "forbidden: only acl.allow_debug clients may "
                                           "read this page"}, status=403)

    def _debug_allowed(self, remote: str | None) -> bool:
        allowed = self.runtime.config.acl.allow_debug
        if self._debug_nets[0] != allowed:
            self._debug_nets = (allowed, [ipaddress.ip_network(n) for n in allowed])
        try:
            address = ipaddress.ip_address((remote or "").split("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self._debug_nets[1])

    # --- probes and metrics -----------------------------------------------------------

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.collector.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def health(self, request: web.Request) -> web.Response:
        worst = self.lag.worst
        ok = worst <= MAX_LAG
        return web.json_response({"status": "ok" if ok else "event loop lagging",
                                  "loop_lag_seconds": round(worst, 4)},
                                 status=200 if ok else 503)

    async def ready(self, request: web.Request) -> web.Response:
        ok, detail = self.runtime.readiness()
        return web.json_response(detail, status=200 if ok else 503)

    # --- debug ------------------------------------------------------------------------

    async def registry(self, request: web.Request) -> web.Response:
        wanted = request.query.get("service", "").lower().strip(".")
        try:
            limit = int(request.query.get("limit", REGISTRY_LIMIT))
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be a number") from None
        if not 1 <= limit <= REGISTRY_LIMIT:
            raise web.HTTPBadRequest(text=f"limit must be 1..{REGISTRY_LIMIT}")
        try:
            after = _cursor(request.query.get("continue", ""))
        except ValueError:
            raise web.HTTPBadRequest(text="continue must be a token from a previous "
                                          "page") from None
        index = [] if wanted else await self.services.current()
        return web.json_response(registry_json(self.runtime, index, wanted=wanted, limit=limit,
                                               after=after), dumps=json.dumps)

    async def explain(self, request: web.Request) -> web.Response:
        name = request.query.get("name", "")
        if not name:
            return web.json_response({"error": "name= is required"}, status=400)
        client = request.query.get("client") or request.remote or "127.0.0.1"
        ecs = request.query.get("ecs") or None
        try:
            report = explain(self.runtime.snapshot, self.runtime.store, name, client=client,
                             ecs=ecs)
            report.setdefault("notes", []).append(self.runtime.rate_limit_note(client))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        report["lines"] = lines(report)
        return web.json_response(report, dumps=_dumps)

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(text=status_page(self.runtime, self.collector, started=self.started),
                            content_type="text/html")


def _bind(listen: ListenAddress) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen.host, listen.port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def _close(runner: web.AppRunner | None, server: asyncio.Server | None) -> None:
    if server is not None:
        server.close()
    if runner is not None:
        await runner.cleanup()


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=1, default=str)


# --- JSON of the registry -----------------------------------------------------------------

Cursor = tuple[tuple[str, str], int]
"""Where a page of /debug/registry ends: a service key and how many of its endpoints
were shown."""


def _cursor(token: str) -> Cursor | None:
    """The `continue` token, `namespace/name/offset`; ValueError when it is none."""
    if not token:
        return None
    namespace, name, offset = token.split("/")
    if not namespace or not name or int(offset) < 0:
        raise ValueError(token)
    return (namespace, name), int(offset)


def registry_json(runtime: Runtime, index: list[ServiceKey], *, wanted: str = "",
                  limit: int = REGISTRY_LIMIT, after: Cursor | None = None) -> dict[str, Any]:
    """One page: services in (namespace, name) order (`index`, every key sorted) from
    `after` on, with at most `limit` endpoints in all; its cost is bounded by `limit`,
    not by the registry."""
    store, snapshot = runtime.store, runtime.snapshot
    start, offset = after if after is not None else (("", ""), 0)
    if wanted:
        name, _, namespace = wanted.partition(".")
        keys = [(namespace, name)] if store.raw((namespace, name)) else []
        total, offset = len(keys), 0
    else:
        total = len(index)
        i = bisect.bisect_left(index, start)
        keys = index[i : i + limit + 1]
    page = set(keys)
    checks: dict[tuple[tuple[str, str], str], Any] = {
        (h.service, h.address): h for h in runtime.health.endpoints.values() if h.service in page}
    services: list[dict[str, Any]] = []
    left = limit
    cursor: Cursor | None = None
    for key in keys[:limit]:
        skip = offset if key == start else 0
        if left == 0:
            cursor = (key, skip)
            break
        by_source = sorted(store.raw(key).items())
        if not by_source:
            continue
        endpoints: list[dict[str, Any]] = []
        count = 0
        ports: dict[tuple[str, str], Any] = {}
        external_name = ""
        for source, data in by_source:
            for p in data.ports:
                ports.setdefault((p.name, p.protocol), p)
            external_name = external_name or data.external_name
            before = count
            count += len(data.endpoints)
            begin = max(skip - before, 0)
            for e in data.endpoints[begin : begin + left - len(endpoints)]:
                check = checks.get((key, e.address)) if source == "static" else None
                endpoints.append({
                    "address": e.address, "cluster": e.cluster, "locality": str(e.locality),
                    "ready": e.ready, "serving": e.serving, "terminating": e.terminating,
                    "hostname": e.hostname, "node_name": e.node_name,
                    "labels": dict(e.labels), "weight": e.weight, "source": source,
                    "network": e.network, "external": e.external,
                    "health_check": None if check is None else {
                        "kind": check.kind, "port": check.port, "healthy": check.healthy,
                        "last_result": check.last_result, "last_error": check.last_error},
                })
        if skip and skip >= count:
            continue  # the previous page ended with this service's last endpoint
        services.append({
            "name": key[1], "namespace": key[0],
            "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol}
                      for p in ports.values()],
            "external_name": external_name or None,
            "sources": [source for source, _ in by_source],
            "cluster_healthy": snapshot.health.get(key, {}),
            "endpoints_total": count,
            "endpoints_from": skip,
            "endpoints": endpoints,
        })
        left -= len(endpoints)
        if skip + len(endpoints) < count:
            cursor = (key, skip + len(endpoints))
            break
    else:
        if len(keys) > limit:  # `limit` services without endpoints fill a page too
            cursor = (keys[limit], 0)
    return {"synced": snapshot.synced, "sources": store.sources(), "services_total": total,
            "continue": None if cursor is None else f"{cursor[0][0]}/{cursor[0][1]}/{cursor[1]}",
            "services": services}


# --- the status page ------------------------------------------------------------------------

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em;margin:0 0 .3em}h2{font-size:1.05em;margin:1.4em 0 .4em}
table{border-collapse:collapse;margin:.2em 0}td,th{padding:.25em .7em;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top}th{background:#f4f4f4}.num{text-align:right}
.ok{color:#176f2c;font-weight:600}.bad{color:#b00020;font-weight:600}.warn{color:#9a6700;
font-weight:600}.muted{color:#777}code{font-size:.95em}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _badge(text: str, kind: str) -> str:
    return f'<span class="{kind}">{_e(text)}</span>'


def _ago(at: float | None, now: float) -> str:
    if not at:
        return "never"
    seconds = max(now - at, 0)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _table(head: list[str], rows: list[list[str]], *, numeric: set[int] = frozenset(),  # type: ignore[assignment]
           empty: str = "none") -> str:
    if not rows:
        return f'<p class="muted">{_e(empty)}</p>'
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(
        f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
        for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


STATE_KIND = {"synced": "ok", "syncing": "warn", "stale": "warn", "failed": "bad"}


def status_page(runtime: Runtime, metrics: Metrics, *, started: float) -> str:
    now = time.time()
    config = runtime.config
    ready, detail = runtime.readiness()
    parts = [f"<!doctype html><html><head><meta charset=utf-8>"
             f"<meta http-equiv=refresh content=10><title>globaldns {_e(runtime.instance())}"
             f"</title><style>{_STYLE}</style></head><body>"]
    parts.append(f"<h1>globaldns {_e(__version__)} — {_e(runtime.instance())}</h1>")
    totals = dns_summary(runtime)["totals"]
    queries = sum(n for (kind, _, _), n in totals.items() if kind == "rcode")
    rcodes: dict[int, int] = {}
    for (kind, rcode, _), n in totals.items():
        if kind == "rcode":
            rcodes[rcode] = rcodes.get(rcode, 0) + n
    rcode_text = ", ".join(f"{rcode_name(r)} {n}" for r, n in sorted(rcodes.items())) or "-"
    reloads = runtime.reloads
    reload_state = _badge("last reload rejected", "bad") if reloads.last_error else \
        _badge("ok", "ok")
    parts.append(_table(["", ""], [
        ["ready", _badge("ready", "ok") if ready else
         _badge("not ready: " + str(detail.get("reason", "")), "bad")],
        ["DNS", f"<code>{_e(config.dns.listen.host)}:{runtime.port}</code> udp+tcp; zones "
                + _e(", ".join(z.name for z in config.zones))],
        ["queries", f"{queries} ({_e(rcode_text)})"],
        ["up", _ago(started, now).replace(" ago", "")],
        ["config", f"<code>{_e(reloads.path or config.source)}</code> "
                   f"{_e(reloads.hash[:19])}, loaded "
                   f"{_ago(reloads.loaded_at, now)}; reloads ok {reloads.results['success']}, "
                   f"rejected {reloads.results['failure']}; {reload_state}"],
    ]))
    if reloads.last_error:
        parts.append("<p class=bad>The last reload was rejected (the running config "
                     "stays):</p><ul>" + "".join(f"<li><code>{_e(line)}</code></li>"
                                                  for line in reloads.last_error) + "</ul>")

    parts.append("<h2>Clusters</h2>")
    rows = []
    watched = set()
    for status in runtime.kubernetes.status():
        watched.add(status["cluster"])
        state = status["state"]
        rows.append([
            _e(status["cluster"]), _e(status["locality"] or "-"),
            _badge(state, STATE_KIND.get(state, "warn")),
            _ago(status["last_sync"], now), str(status["services"]), str(status["endpoints"]),
            str(status["relists"]), str(status["errors"]),
            _e(status["last_error"] or "") if status["last_error"] else "",
            _e(status["origin"]),
        ])
    for configured in config.clusters:
        if not configured.watched and configured.name not in watched:
            rows.append([_e(configured.name), _e(str(configured.locality) or "-"),
                         _badge("static", "muted"), "-", "-", "-", "-", "-", "", "config"])
    parts.append(_table(["cluster", "locality", "state", "last full sync", "services",
                         "endpoints", "relists", "errors", "last error", "origin"], rows,
                        numeric={4, 5, 6, 7}, empty="no clusters"))
    skipped = {r: n for r, n in runtime.store.skipped.counts.items() if n}
    parts.append("<p>Skipped cluster data (not DNS-able, special address, past a limit): "
                 + (_badge(", ".join(f"{r} {n}" for r, n in skipped.items()), "warn")
                    if skipped else "none") + "</p>")
    discovery = runtime.kubernetes.discovery_status()
    if discovery is not None:
        parts.append(f"<p>Remote Secrets in <code>{_e(discovery['namespace'])}</code> of "
                     f"{_e(discovery['cluster'])} ({_e(discovery['label'])}): "
                     f"{discovery['secrets']} Secret(s), clusters "
                     f"{_e(', '.join(discovery['clusters']) or '-')}"
                     + (f"; {_badge(discovery['last_error'], 'bad')}"
                        if discovery["last_error"] else "") + "</p>")

    parts.append("<h2>Services</h2>")
    per_service = metrics.gauges.per_service
    keys = sorted(per_service, key=lambda k: (k[1], k[0]))
    rows = []
    for key in keys[:STATUS_SERVICES]:
        counts = per_service[key]
        clusters = sorted({c for c, _ in counts})
        health = runtime.snapshot.health.get(key, {})
        cells = []
        for cluster in clusters:
            ready_n = counts.get((cluster, True), 0)
            total = ready_n + counts.get((cluster, False), 0)
            kind = "ok" if ready_n == total else ("bad" if ready_n == 0 else "warn")
            note = "" if health.get(cluster, True) else " (below min_healthy)"
            cells.append(f"{_e(cluster)} {_badge(f'{ready_n}/{total}', kind)}{_e(note)}")
        ready_all = sum(n for (c, r), n in counts.items() if r)
        total_all = sum(counts.values())
        rows.append([f"<code>{_e(key[1])}.{_e(key[0])}</code>", " · ".join(cells) or "-",
                     f"{ready_all}/{total_all}"])
    parts.append(_table(["service", "ready/total endpoints per cluster", "all"], rows,
                        numeric={2}, empty="no services"))
    if len(keys) > STATUS_SERVICES:
        parts.append(f"<p class=muted>{len(keys) - STATUS_SERVICES} more services: see "
                     "<a href='/debug/registry'>/debug/registry</a> (paged)</p>")

    parts.append("<h2>Upstreams</h2>")
    rows = []
    forward = runtime.chain.forward
    if forward is not None:
        for fc, pool in zip(forward.configs, pools(forward), strict=True):
            for upstream in pool.upstreams:
                rows.append([_e(fc.zone or "."), f"<code>{_e(upstream)}</code>",
                             _badge("healthy", "ok") if upstream.healthy
                             else _badge("unhealthy", "bad"),
                             str(upstream.queries), str(upstream.failures)])
    parts.append(_table(["zone", "upstream", "state", "queries", "failures"], rows,
                        numeric={3, 4}, empty="no forwarding configured"))

    if runtime.health.endpoints:
        parts.append("<h2>Health checks</h2>")
        rows = []
        for h in sorted(runtime.health.endpoints.values(), key=lambda h: (h.service, h.address)):
            rows.append([f"<code>{_e(h.service[1])}.{_e(h.service[0])}</code>",
                         f"{_e(h.address)} {_e(h.kind)}:{h.port}",
                         _badge("healthy", "ok") if h.healthy else _badge("unhealthy", "bad"),
                         _e(h.last_result or "-"), _e(h.last_error),
                         _ago(h.last_check, now)])
        parts.append(_table(["service", "endpoint", "state", "last result", "error",
                             "checked"], rows))
    parts.append("<p class=muted><a href='/metrics'>/metrics</a> · <a href='/ready'>/ready</a>"
                 " · <a href='/debug/registry'>/debug/registry</a> · /debug/explain?name=…"
                 "</p></body></html>")
    return "".join(parts)
