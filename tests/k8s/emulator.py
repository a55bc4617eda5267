"""A Kubernetes API server emulator (aiohttp), for tests and benchmarks only.

It serves the REST paths and wire format globaldns uses, for EndpointSlices, Services and
Secrets (and Istio's ServiceEntries, WorkloadEntries and WorkloadGroups in the versions
asked, with the group's discovery document: the Istio block below): lists with
`resourceVersion`, `limit`/`continue` (tokens that expire with a real 410 `Expired`
Status), label selectors, chunked watch streams of JSON lines from a resourceVersion,
BOOKMARK events, ERROR events carrying the real 410 Status for a compacted
resourceVersion. Faults on demand: 401/403/500 answers, redirects (to itself: a loop, or
elsewhere), dropped connections mid-stream, blackholed (silent) streams, slow responses,
compaction, the whole server down and back on the same port. It records every request,
with its Authorization header. One instance per simulated cluster, on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import itertools
import json
import re
import ssl
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

Obj = dict[str, Any]

# plural → (kind, apiVersion, REST prefix)
KINDS = {
    "endpointslices": ("EndpointSlice", "discovery.k8s.io/v1", "/apis/discovery.k8s.io/v1"),
    "services": ("Service", "v1", "/api/v1"),
    "secrets": ("Secret", "v1", "/api/v1"),
}

EXPIRED_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You "
    "can start a new list without the continue parameter, or use the continue token in "
    "this response to retrieve the remainder of the results. Continuing with the provided "
    "token results in an inconsistent list - objects that were created, modified, or "
    "deleted between the time the first chunk was returned and now may show up in the "
    "list.")


def status(code: int, reason: str, message: str, *, details: Obj | None = None,
           metadata: Obj | None = None) -> Obj:
    """A `meta.v1.Status` as kube-apiserver writes it."""
    body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": metadata or {},
                 "status": "Failure", "message": message, "reason": reason}
    if details:
        body["details"] = details
    body["code"] = code
    return body


def fault_status(code: int, plural: str = "endpointslices") -> Obj:
    _, api_version, _ = KINDS.get(plural, KINDS["endpointslices"])
    group = api_version.rpartition("/")[0]
    if code == 401:
        return status(401, "Unauthorized", "Unauthorized")
    if code == 403:
        resource = f"{plural}.{group}" if group else plural
        return status(403, "Forbidden",
                      f'{resource} is forbidden: User "system:serviceaccount:istio-system:'
                      f'globaldns" cannot list resource "{plural}" in API group "{group}" at '
                      "the cluster scope", details={"group": group, "kind": plural})
    if code == 410:
        return status(410, "Expired", "too old resource version")
    if code == 429:
        return status(429, "TooManyRequests", "Too many requests, please try again later.",
                      details={"retryAfterSeconds": 1})
    if code == 503:
        return status(503, "ServiceUnavailable", "the server is currently unable to handle "
                      "the request")
    return status(code, "InternalError", "Internal error occurred: etcdserver: request timed "
                  "out", details={"causes": [{"message": "etcdserver: request timed out"}]})


# --- label selectors ------------------------------------------------------------------

_REQ = re.compile(r"\s*(!)?\s*([A-Za-z0-9./_-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*)|"
                  r"\s+(in|notin)\s*\(([^)]*)\))?\s*")


def parse_selector(text: str) -> Callable[[dict[str, str]], bool]:
    """A matcher for a label selector: `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`,
    `a notin (x)`, joined with commas."""
    requirements: list[Callable[[dict[str, str]], bool]] = []
    parts = re.findall(r"[^,(]+(?:\([^)]*\))?[^,]*", text or "")
    for part in parts:
        if not part.strip():
            continue
        m = _REQ.fullmatch(part)
        if not m:
            raise ValueError(f"unable to parse requirement: {part!r}")
        neg, key, op, value, setop, values = m.groups()
        if op in ("=", "=="):
            requirements.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif op == "!=":
            requirements.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif setop:
            options = {v.strip() for v in values.split(",") if v.strip()}
            if setop == "in":
                requirements.append(lambda labels, k=key, o=options: labels.get(k) in o)
            else:
                requirements.append(lambda labels, k=key, o=options: labels.get(k) not in o)
        elif neg:
            requirements.append(lambda labels, k=key: k not in labels)
        else:
            requirements.append(lambda labels, k=key: k in labels)
    return lambda labels: all(r(labels) for r in requirements)


# --- objects --------------------------------------------------------------------------


def service(namespace: str, name: str, *, ports: Iterable[tuple[str, int, str]] = (
            ("http", 80, "TCP"),), type: str = "ClusterIP", external_name: str = "",
            headless: bool = False, labels: dict[str, str] | None = None) -> Obj:
    spec: Obj = {"type": type}
    if type == "ExternalName":
        spec["externalName"] = external_name
    else:
        spec["clusterIP"] = "None" if headless else "10.96.0.10"
        spec["ports"] = [{"name": n, "port": p, "protocol": proto, "targetPort": p}
                         for n, p, proto in ports]
    return {"kind": "Service", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
            "spec": spec}


def endpoint(address: str | list[str], *, ready: bool | None = True,
             serving: bool | None = None, terminating: bool | None = None, zone: str = "",
             hostname: str = "", node: str = "") -> Obj:
    conditions: Obj = {}
    if ready is not None:
        conditions["ready"] = ready
    if serving is not None:
        conditions["serving"] = serving
    if terminating is not None:
        conditions["terminating"] = terminating
    ep: Obj = {"addresses": [address] if isinstance(address, str) else list(address),
               "conditions": conditions}
    if hostname:
        ep["hostname"] = hostname
    if node:
        ep["nodeName"] = node
    if zone:
        ep["zone"] = zone
    return ep


def endpoint_slice(namespace: str, name: str, service_name: str | None, *,
                   endpoints: Iterable[Obj] = (), address_type: str = "IPv4",
                   ports: Iterable[tuple[str, int, str]] = (("http", 8080, "TCP"),),
                   labels: dict[str, str] | None = None) -> Obj:
    all_labels = {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
    if service_name is not None:
        all_labels["kubernetes.io/service-name"] = service_name
    all_labels.update(labels or {})
    return {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "labels": all_labels},
            "addressType": address_type, "endpoints": list(endpoints),
            "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports]}


def secret(namespace: str, name: str, data: dict[str, str], *,
           labels: dict[str, str] | None = None,
           annotations: dict[str, str] | None = None) -> Obj:
    return {"kind": "Secret", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {}),
                         "annotations": dict(annotations or {})},
            "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def _plural_of(obj: Obj) -> str:
    for plural, (kind, _, _) in KINDS.items():
        if obj.get("kind") == kind:
            return plural
    raise ValueError(f"unknown kind {obj.get('kind')!r}")


def _key(obj: Obj) -> tuple[str, str]:
    return (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def _labels(obj: Obj | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


# --- Istio: networking.istio.io ServiceEntry, WorkloadEntry, WorkloadGroup ------------
# Served in the versions of `Emulator.istio_versions` (set before start), each under
# /apis/networking.istio.io/<version>/..., with the group's discovery document at
# /apis/networking.istio.io as kube-apiserver writes it for a CRD group.

ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
KINDS.update({
    "serviceentries": ("ServiceEntry", f"{ISTIO_GROUP}/v1", f"/apis/{ISTIO_GROUP}/{{version}}"),
    "workloadentries": ("WorkloadEntry", f"{ISTIO_GROUP}/v1",
                        f"/apis/{ISTIO_GROUP}/{{version}}"),
    "workloadgroups": ("WorkloadGroup", f"{ISTIO_GROUP}/v1", f"/apis/{ISTIO_GROUP}/{{version}}"),
})


def _istio(kind: str, namespace: str, name: str, spec: Obj, **meta: Any) -> Obj:
    return {"kind": kind, "apiVersion": f"{ISTIO_GROUP}/v1",
            "metadata": {"name": name, "namespace": namespace, **meta}, "spec": spec}


def service_entry(namespace: str, name: str, hosts: list[str], *,
                  endpoints: Iterable[Obj] = (), ports: Iterable[tuple[str, int, str]] = (),
                  location: str = "MESH_INTERNAL", resolution: str = "STATIC",
                  selector: dict[str, str] | None = None) -> Obj:
    spec: Obj = {"hosts": list(hosts), "location": location, "resolution": resolution,
                 "ports": [{"name": n, "number": p, "protocol": proto} for n, p, proto in ports]}
    if endpoints:
        spec["endpoints"] = list(endpoints)
    if selector is not None:
        spec["workloadSelector"] = {"labels": dict(selector)}
    return _istio("ServiceEntry", namespace, name, spec)


def workload_entry(namespace: str, name: str, address: str, *,
                   labels: dict[str, str] | None = None, locality: str = "",
                   weight: int | None = None, network: str = "",
                   healthy: bool | None = None, group: str = "") -> Obj:
    spec: Obj = {"address": address, "labels": dict(labels or {})}
    if locality:
        spec["locality"] = locality
    if weight is not None:
        spec["weight"] = weight
    if network:
        spec["network"] = network
    meta: Obj = {}
    if group:
        meta["ownerReferences"] = [{"apiVersion": f"{ISTIO_GROUP}/v1", "kind": "WorkloadGroup",
                                    "name": group, "uid": str(uuid.uuid4()),
                                    "controller": True}]
    obj = _istio("WorkloadEntry", namespace, name, spec, **meta)
    if healthy is not None:
        # As Istio's health checking writes it (pilot/pkg/controllers/workloadentry).
        obj["status"] = {"conditions": [{
            "type": "Healthy", "status": "True" if healthy else "False",
            "lastProbeTime": "2026-01-01T00:00:00Z",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    return obj


def workload_group(namespace: str, name: str, *, labels: dict[str, str] | None = None,
                   probe: Obj | None = None) -> Obj:
    spec: Obj = {"metadata": {"labels": dict(labels or {})}, "template": {}}
    if probe is not None:
        spec["probe"] = probe
    return _istio("WorkloadGroup", namespace, name, spec)


def _istio_routes(emulator: Emulator, app: web.Application) -> None:
    versions = "|".join(emulator.istio_versions) or "none-served"
    for plural, (_, _, prefix) in KINDS.items():
        if "{version}" in prefix:
            path = prefix.replace("{version}", f"{{version:{versions}}}")
            app.router.add_get(f"{path}/{plural}", emulator._handle)
            app.router.add_get(f"{path}/namespaces/{{namespace}}/{plural}", emulator._handle)

    async def discovery(request: web.Request) -> web.Response:
        if not emulator.istio_versions:
            return web.json_response(status(404, "NotFound", "the server could not find "
                                            "the requested resource"), status=404)
        listed = [{"groupVersion": f"{ISTIO_GROUP}/{v}", "version": v}
                  for v in emulator.istio_versions]
        return web.json_response({"kind": "APIGroup", "apiVersion": "v1",
                                  "name": ISTIO_GROUP, "versions": listed,
                                  "preferredVersion": listed[0]})

    app.router.add_get(f"/apis/{ISTIO_GROUP}", discovery)

# --- end of the Istio block -----------------------------------------------------------


# --- faults and watches ---------------------------------------------------------------


@dataclass
class Fault:
    code: int
    remaining: int | None  # None: until cleared
    on: str  # "all", "list" or "watch"
    plurals: frozenset[str] | None


@dataclass(eq=False)
class _Watcher:
    plural: str
    namespace: str
    matches: Callable[[dict[str, str]], bool]
    bookmarks: bool
    queue: asyncio.Queue[Obj | None] = field(default_factory=asyncio.Queue)
    frozen: bool = False
    sent: int = 0


@dataclass
class _Snapshot:
    rv: int
    items: list[Obj]
    created: float


class Emulator:
    """One emulated cluster's API server."""

    istio_versions: tuple[str, ...] = ISTIO_VERSIONS
    """The networking.istio.io versions served (none: the group is not installed)."""

    def __init__(self, name: str = "emulated", *, token: str | None = None,
                 tls: TlsFiles | None = None, continue_ttl: float = 300.0,
                 history_limit: int = 100_000,
                 bookmark_interval: float | None = None) -> None:
        self.name = name
        self.token = token if token is not None else f"token-{name}"
        self.tls = tls
        self.continue_ttl = continue_ttl
        self.history_limit = history_limit
        self.bookmark_interval = bookmark_interval
        self.objects: dict[str, dict[tuple[str, str], Obj]] = {p: {} for p in KINDS}
        self.rv = 1000
        self.compacted_rv = 0
        self.history: list[tuple[int, str, str, Obj | None, Obj]] = []
        self.faults: list[Fault] = []
        self.latency = 0.0
        self.watch_timeout: float | None = None
        """End every watch cleanly after this long, as kube-apiserver does after its
        --min-request-timeout (randomized there), whatever timeoutSeconds asked."""
        self.page_cap = 0
        """Serve at most this many items per page (0: as asked); the API allows a server
        to return fewer items than `limit`, with a continue token."""
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.authorizations: list[str] = []
        """The Authorization header of every request ("" when none was sent)."""
        self.redirect: str | None = None
        """Answer every request 302 to this URL ("": to the request's own URL, a loop)."""
        self.watch_opens = 0
        self.lists = 0
        self._watchers: set[_Watcher] = set()
        self._snapshots: dict[str, _Snapshot] = {}
        self._snapshot_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self.port = 0

    # --- server lifetime ------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        for plural, (_, _, prefix) in KINDS.items():
            if "{version}" not in prefix:  # those: _istio_routes
                app.router.add_get(f"{prefix}/{plural}", self._handle)
                app.router.add_get(f"{prefix}/namespaces/{{namespace}}/{plural}", self._handle)
        _istio_routes(self, app)
        return app

    async def start(self, port: int | None = None) -> Emulator:
        """Listen on 127.0.0.1 (a random port first; the same port after a stop)."""
        self._runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=0.1,
                                     handler_cancellation=True)
        await self._runner.setup()
        context = self.tls.server_context() if self.tls else None
        site = web.TCPSite(self._runner, "127.0.0.1", port if port is not None else self.port,
                           ssl_context=context, reuse_address=True)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """The server goes away (connection refused); the data stays for a restart."""
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def restart(self) -> None:
        await self.start(self.port)

    # --- data -----------------------------------------------------------------------

    def put(self, obj: Obj) -> Obj:
        """Create or replace an object (all its fields); returns it as stored."""
        plural = _plural_of(obj)
        key = _key(obj)
        old = self.objects[plural].get(key)
        new = copy.deepcopy(obj)
        meta = new["metadata"]
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        if old is not None:
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            meta["generation"] = old["metadata"].get("generation", 1) + 1
        else:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = datetime.datetime.now(datetime.UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
            meta["generation"] = 1
        self.objects[plural][key] = new
        self._record(plural, "MODIFIED" if old is not None else "ADDED", old, new)
        return new

    def delete(self, plural: str, namespace: str, name: str) -> bool:
        old = self.objects[plural].pop((namespace, name), None)
        if old is None:
            return False
        self.rv += 1
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._record(plural, "DELETED", old, gone)
        return True

    def get(self, plural: str, namespace: str, name: str) -> Obj | None:
        return self.objects[plural].get((namespace, name))

    def _record(self, plural: str, kind: str, old: Obj | None, new: Obj) -> None:
        self.history.append((self.rv, plural, kind, old, new))
        if len(self.history) > self.history_limit:
            drop = len(self.history) - self.history_limit
            self.compacted_rv = self.history[drop - 1][0]
            del self.history[:drop]
        for watcher in list(self._watchers):
            if watcher.plural == plural and not watcher.frozen:
                event = _event_for(watcher, kind, old, new)
                if event is not None:
                    watcher.queue.put_nowait(event)

    def compact(self) -> int:
        """Forget history up to now, as etcd compaction does: watches from an older
        resourceVersion get 410, and continue tokens into older snapshots expire."""
        self.compacted_rv = self.rv
        self.history.clear()
        return self.compacted_rv

    # --- faults ---------------------------------------------------------------------

    def fail(self, code: int, *, count: int | None = 1, on: str = "all",
             plurals: Iterable[str] | None = None) -> None:
        """The next `count` matching requests (None: all, until `clear_faults`) get `code`."""
        self.faults.append(Fault(code, count, on, frozenset(plurals) if plurals else None))

    def clear_faults(self) -> None:
        self.faults.clear()

    def drop_watches(self) -> int:
        """Cut every open watch mid-stream (no final chunk: the client sees a broken body)."""
        count = 0
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(None)
            count += 1
        return count

    def freeze_watches(self) -> int:
        """Open watches stay open but get nothing more, not even bookmarks: a silent
        blackhole, as a dead NAT entry or proxy makes. New watches work normally."""
        for watcher in self._watchers:
            watcher.frozen = True
        return len(self._watchers)

    def bookmark(self) -> None:
        """Send a BOOKMARK with the current resourceVersion to every watch that asked."""
        for watcher in self._watchers:
            if watcher.bookmarks and not watcher.frozen:
                watcher.queue.put_nowait(_bookmark(watcher.plural, self.rv))

    @property
    def open_watches(self) -> int:
        return len(self._watchers)

    # --- HTTP -----------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        query = dict(request.query)
        self.requests.append((request.path, query))
        self.authorizations.append(request.headers.get("Authorization", ""))
        if self.redirect is not None:
            raise web.HTTPFound(self.redirect or str(request.rel_url))
        if self.latency:
            # The emulated API server's programmed slowness, a fault under test; no test
            # asserts on the time it takes.
            await asyncio.sleep(self.latency)
        plural = request.path.rsplit("/", 1)[-1]
        if not self._authenticated(request):
            return web.json_response(fault_status(401), status=401)
        is_watch = query.get("watch") in ("1", "true")
        for fault in list(self.faults):
            if fault.on != "all" and (fault.on == "watch") != is_watch:
                continue
            if fault.plurals is not None and plural not in fault.plurals:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.faults.remove(fault)
            return web.json_response(fault_status(fault.code, plural), status=fault.code)
        return await handler(request)

    def _authenticated(self, request: web.Request) -> bool:
        # As kube-apiserver's bearer token authenticator: the scheme is case-insensitive.
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip() == self.token:
            return True
        if self.tls is not None and self.tls.client_ca:
            transport = request.transport
            ssl_object = transport.get_extra_info("ssl_object") if transport else None
            if ssl_object is not None and ssl_object.getpeercert():
                return True
        return False

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        plural = request.path.rsplit("/", 1)[-1]
        namespace = request.match_info.get("namespace", "")
        query = request.query
        try:
            matches = parse_selector(query.get("labelSelector", ""))
        except ValueError as exc:
            return web.json_response(status(400, "BadRequest", str(exc)), status=400)
        if query.get("watch") in ("1", "true"):
            return await self._watch(request, plural, namespace, matches)
        return self._list(plural, namespace, matches, query)

    def _list(self, plural: str, namespace: str, matches: Callable[[dict[str, str]], bool],
              query: Any) -> web.Response:
        self.lists += 1
        kind, api_version, _ = KINDS[plural]
        limit = int(query.get("limit") or 0)
        if self.page_cap and limit:
            limit = min(limit, self.page_cap)
        token = query.get("continue", "")
        now = time.monotonic()
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token))
                snap_id, offset = decoded["s"], int(decoded["o"])
            except (ValueError, KeyError):
                return web.json_response(status(400, "BadRequest", "invalid continue token"),
                                         status=400)
            snap = self._snapshots.get(snap_id)
            if (snap is None or snap.rv <= self.compacted_rv
                    or now - snap.created > self.continue_ttl):
                self._snapshots.pop(snap_id, None)
                fresh = self._snapshot(plural, namespace, matches, now)
                new_token = _token(fresh, offset)
                return web.json_response(status(410, "Expired", EXPIRED_CONTINUE,
                                                metadata={"continue": new_token}), status=410)
        else:
            snap_id = self._snapshot(plural, namespace, matches, now)
            snap = self._snapshots[snap_id]
            offset = 0
        items = snap.items[offset:offset + limit] if limit else snap.items[offset:]
        end = offset + len(items)
        meta: Obj = {"resourceVersion": str(snap.rv)}
        if end < len(snap.items):
            meta["continue"] = _token(snap_id, end)
            meta["remainingItemCount"] = len(snap.items) - end
        else:
            self._snapshots.pop(snap_id, None)
        body = {"kind": f"{kind}List", "apiVersion": api_version, "metadata": meta,
                "items": items}
        return web.Response(text=json.dumps(body, separators=(",", ":")),
                            content_type="application/json")

    def _snapshot(self, plural: str, namespace: str,
                  matches: Callable[[dict[str, str]], bool], now: float) -> str:
        items = []
        for key in sorted(self.objects[plural]):
            obj = self.objects[plural][key]
            if (not namespace or key[0] == namespace) and matches(_labels(obj)):
                # List items carry no kind/apiVersion; the List does.
                items.append({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")})
        snap_id = str(next(self._snapshot_ids))
        self._snapshots[snap_id] = _Snapshot(self.rv, items, now)
        return snap_id

    async def _watch(self, request: web.Request, plural: str, namespace: str,
                     matches: Callable[[dict[str, str]], bool]) -> web.StreamResponse:
        self.watch_opens += 1
        query = request.query
        watcher = _Watcher(plural, namespace, matches,
                           query.get("allowWatchBookmarks") in ("true", "1"))
        raw_rv = query.get("resourceVersion", "")
        timeout = float(query.get("timeoutSeconds") or 0) or None
        if self.watch_timeout is not None:
            timeout = min(timeout or self.watch_timeout, self.watch_timeout)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        initial: list[Obj] = []
        if raw_rv in ("", "0"):
            # No resourceVersion: the current state as synthetic ADDED events first.
            for key in sorted(self.objects[plural]):
                obj = self.objects[plural][key]
                if (not namespace or key[0] == namespace) and matches(_labels(obj)):
                    initial.append({"type": "ADDED", "object": obj})
        else:
            since = int(raw_rv)
            if since < self.compacted_rv:
                # What kube-apiserver sends for a compacted resourceVersion: 200, then
                # one ERROR event with a 410 Status, then the end of the stream.
                error = status(410, "Expired", f"too old resource version: {since} "
                               f"({self.compacted_rv + 1})")
                await response.write(_line({"type": "ERROR", "object": error}))
                await response.write_eof()
                return response
            for rv, p, kind, old, new in self.history:
                if rv > since and p == plural:
                    event = _event_for(watcher, kind, old, new)
                    if event is not None:
                        initial.append(event)
        self._watchers.add(watcher)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        deadline = time.monotonic() + timeout if timeout else None
        try:
            for event in initial:
                await response.write(_line(event))
                watcher.sent += 1
            while True:
                wait = None
                if deadline is not None:
                    wait = max(0.0, deadline - time.monotonic())
                if self.bookmark_interval and watcher.bookmarks:
                    wait = (self.bookmark_interval if wait is None
                            else min(wait, self.bookmark_interval))
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    if deadline is not None and time.monotonic() >= deadline:
                        break  # timeoutSeconds: a clean end
                    if not watcher.frozen:
                        await response.write(_line(_bookmark(plural, self.rv)))
                    continue
                if event is None:
                    # A drop: abort the connection with the chunked body unfinished.
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                await response.write(_line(event))
                watcher.sent += 1
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._watchers.discard(watcher)
            if task is not None:
                self._handlers.discard(task)
        return response

    # --- kubeconfig -----------------------------------------------------------------

    def kubeconfig(self, *, token: str | None = None, user: Obj | None = None) -> Obj:
        """A kubeconfig for this cluster (token auth unless `user` says otherwise)."""
        cluster: Obj = {"server": self.url}
        if self.tls is not None:
            cluster["certificate-authority-data"] = base64.b64encode(
                self.tls.ca_pem).decode()
        return {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": self.name, "cluster": cluster}],
            "users": [{"name": f"{self.name}-user",
                       "user": user if user is not None
                       else {"token": token if token is not None else self.token}}],
            "contexts": [{"name": self.name,
                          "context": {"cluster": self.name, "user": f"{self.name}-user"}}],
            "current-context": self.name,
        }

    def kubeconfig_text(self, **kw: Any) -> str:
        return yaml.safe_dump(self.kubeconfig(**kw))

    def write_kubeconfig(self, path: str | Path, **kw: Any) -> str:
        Path(path).write_text(self.kubeconfig_text(**kw))
        return str(path)


def _event_for(watcher: _Watcher, kind: str, old: Obj | None, new: Obj) -> Obj | None:
    """The event a watch sees: label selector transitions become ADDED/DELETED."""
    if watcher.namespace and new["metadata"].get("namespace") != watcher.namespace:
        return None
    was = old is not None and watcher.matches(_labels(old))
    now = watcher.matches(_labels(new))
    if kind == "DELETED":
        return {"type": "DELETED", "object": new} if was else None
    if now:
        return {"type": "MODIFIED" if was else "ADDED", "object": new}
    if was:
        return {"type": "DELETED", "object": new}
    return None


def _bookmark(plural: str, rv: int) -> Obj:
    kind, api_version, _ = KINDS[plural]
    return {"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version,
                                           "metadata": {"resourceVersion": str(rv)}}}


def _line(event: Obj) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def _token(snap_id: str, offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"s": snap_id, "o": offset}).encode()).decode()


# --- TLS ------------------------------------------------------------------------------


@dataclass
class TlsFiles:
    """A throwaway CA, a server certificate for 127.0.0.1, and a client certificate."""

    ca_pem: bytes
    server_cert_pem: bytes
    server_key_pem: bytes
    client_cert_pem: bytes
    client_key_pem: bytes
    directory: Path
    client_ca: bool = False
    """Ask for client certificates (accepted instead of a token)."""

    @classmethod
    def generate(cls, directory: Path) -> TlsFiles:
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        def name(cn: str) -> x509.Name:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (x509.CertificateBuilder().subject_name(name("emulator-ca"))
              .issuer_name(name("emulator-ca")).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(hours=1))
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                           crl_sign=True, content_commitment=False,
                                           key_encipherment=False, data_encipherment=False,
                                           key_agreement=False, encipher_only=False,
                                           decipher_only=False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))

        def leaf(cn: str, server: bool) -> tuple[bytes, bytes]:
            key = ec.generate_private_key(ec.SECP256R1())
            builder = (x509.CertificateBuilder().subject_name(name(cn))
                       .issuer_name(ca.subject).public_key(key.public_key())
                       .serial_number(x509.random_serial_number())
                       .not_valid_before(now - datetime.timedelta(hours=1))
                       .not_valid_after(now + datetime.timedelta(days=1))
                       .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                           ca_key.public_key()), critical=False)
                       .add_extension(x509.ExtendedKeyUsage(
                           [ExtendedKeyUsageOID.SERVER_AUTH if server
                            else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
            if server:
                builder = builder.add_extension(x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                     x509.DNSName("localhost")]), critical=False)
            cert = builder.sign(ca_key, hashes.SHA256())
            return (cert.public_bytes(serialization.Encoding.PEM),
                    key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))

        server_cert, server_key = leaf("kube-apiserver", True)
        client_cert, client_key = leaf("globaldns", False)
        directory.mkdir(parents=True, exist_ok=True)
        files = cls(ca.public_bytes(serialization.Encoding.PEM), server_cert, server_key,
                    client_cert, client_key, directory)
        for attr in ("ca_pem", "server_cert_pem", "server_key_pem", "client_cert_pem",
                     "client_key_pem"):
            (directory / f"{attr}.pem").write_bytes(getattr(files, attr))
        return files

    def path(self, attr: str) -> str:
        return str(self.directory / f"{attr}.pem")

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.path("server_cert_pem"), self.path("server_key_pem"))
        if self.client_ca:
            context.load_verify_locations(self.path("ca_pem"))
            context.verify_mode = ssl.CERT_OPTIONAL
        return context


@contextlib.asynccontextmanager
async def running(*emulators: Emulator) -> Any:
    """Start emulators, stop them at the end."""
    try:
        for emulator in emulators:
            await emulator.start()
        yield emulators
    finally:
        for emulator in emulators:
            await emulator.stop()


# --- Multi-Cluster Services API (KEP-1645): ServiceExport, ServiceImport ----------------
# Kept in one block (issue 13, MCS part): the CRDs' kinds, and the objects' builders.

MCS_API = "multicluster.x-k8s.io/v1alpha1"
KINDS.update({
    "serviceexports": ("ServiceExport", MCS_API, f"/apis/{MCS_API}"),
    "serviceimports": ("ServiceImport", MCS_API, f"/apis/{MCS_API}"),
})


def service_export(namespace: str, name: str, *,
                   annotations: dict[str, str] | None = None) -> Obj:
    return {"kind": "ServiceExport", "apiVersion": MCS_API,
            "metadata": {"name": name, "namespace": namespace,
                         "annotations": dict(annotations or {})}}


def service_import(namespace: str, name: str, *, ips: Iterable[str] = (),
                   headless: bool = False,
                   ports: Iterable[tuple[str, int, str]] = (("http", 80, "TCP"),)) -> Obj:
    spec: Obj = {"type": "Headless" if headless else "ClusterSetIP",
                 "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports]}
    if not headless:
        spec["ips"] = list(ips)
    return {"kind": "ServiceImport", "apiVersion": MCS_API,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}
