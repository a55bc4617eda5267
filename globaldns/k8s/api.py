"""The Kubernetes REST API over aiohttp: paginated lists and watch streams.

Two calls, both for one resource in all namespaces or one:
- `list()`: pages of `limit` objects joined with `continue` tokens; when a token expires
  (410) the list restarts as one full list, as client-go's pager does
  (`FullListIfExpired`), so the result is always one consistent snapshot.
- `watch()`: one chunked HTTP response of JSON lines from a resourceVersion, with
  bookmarks; silence longer than the idle timeout is an error, not a wait forever.

HTTP and transport failures become our own exceptions, with the cause chained.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp

from globaldns.k8s import jsonsteps
from globaldns.k8s.credentials import Credentials
from globaldns.k8s.objects import Status, WatchEvent

log = logging.getLogger("globaldns.k8s")

# A watch line is one object; a slice of 1,000 endpoints is ~100 kB (limits.max_event_bytes
# sets it; LimitsConfig gives the reason for its default).
MAX_EVENT_BYTES = 8 * 1024 * 1024

Screen = Callable[[bytes | None], bool]
"""Sees each watch line before it is parsed (None: a line past the size cap, already
discarded unread); False drops it."""


class KubernetesError(Exception):
    """Any failure talking to one API server."""


class ConnectionFailed(KubernetesError):
    """Connect, TLS, reset, dropped stream, request timeout, unreadable response."""


class IdleTimeout(ConnectionFailed):
    """A watch sent nothing, not even a bookmark, for longer than the idle timeout."""


class ApiError(KubernetesError):
    """The API server answered with an error Status."""

    def __init__(self, code: int, reason: str, message: str,
                 status: Status | None = None) -> None:
        super().__init__(f"{code} {reason}: {message}" if message else f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.message = message
        self.status: Status = status or {}


class Gone(ApiError):
    """410: a resourceVersion or continue token too old (compacted); relist."""


class Unauthorized(ApiError):
    """401: the credentials were rejected."""


class Forbidden(ApiError):
    """403: authenticated, but RBAC does not allow this list/watch."""


class ServerError(ApiError):
    """5xx or 429: the server is in trouble; retry later."""


def error_from_status(status: dict[str, Any], http_status: int | None = None) -> ApiError:
    """Our exception for an error Status (a response body or a watch ERROR event).

    Keyed on the code, not the reason: a real server says `Expired` or `Gone` for 410.
    """
    code = status.get("code") or http_status or 0
    try:
        code = int(code)
    except (TypeError, ValueError):
        code = http_status or 0
    reason = str(status.get("reason") or "")
    message = str(status.get("message") or "")
    typed = cast(Status, status)
    if code == 410:
        return Gone(code, reason or "Gone", message, typed)
    if code == 401:
        return Unauthorized(code, reason or "Unauthorized", message, typed)
    if code == 403:
        return Forbidden(code, reason or "Forbidden", message, typed)
    if code >= 500 or code == 429:
        return ServerError(code, reason or "ServerError", message, typed)
    return ApiError(code, reason or "Error", message, typed)


@dataclass(frozen=True, slots=True)
class Resource:
    """A namespaced resource type, by its REST prefix and plural."""

    prefix: str
    plural: str

    def path(self, namespace: str = "") -> str:
        if namespace:
            return f"{self.prefix}/namespaces/{namespace}/{self.plural}"
        return f"{self.prefix}/{self.plural}"


ENDPOINTSLICES = Resource("/apis/discovery.k8s.io/v1", "endpointslices")
SERVICES = Resource("/api/v1", "services")
SECRETS = Resource("/api/v1", "secrets")


@dataclass(slots=True)
class ListResult:
    items: list[dict[str, Any]] = field(default_factory=list)
    resource_version: str = ""
    pages: int = 0
    restarts: int = 0
    """How many times an expired continue token restarted the list."""


class ApiClient:
    """HTTP to one API server. One aiohttp session, reused by all its lists and watches."""

    def __init__(self, credentials: Credentials, *, page_size: int = 500,
                 connect_timeout: float = 10.0, request_timeout: float = 60.0) -> None:
        self.credentials = credentials
        """Replaceable: a source reloads credentials after a 401."""
        self.page_size = page_size
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Each watch holds a connection; lists share the rest.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, enable_cleanup_closed=True),
                headers={"Accept": "application/json",
                         "User-Agent": "globaldns (k8s watch)"},
                raise_for_status=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _headers(self) -> dict[str, str]:
        if self.credentials.refreshable:
            # The hook may run an exec plugin or read a token file: not on the loop.
            return await asyncio.to_thread(self.credentials.headers)
        return self.credentials.headers()

    def _request_kwargs(self) -> dict[str, Any]:
        context = self.credentials.ssl_context()
        kwargs: dict[str, Any] = {"ssl": context if context is not None else False}
        if self.credentials.tls_server_name:
            kwargs["server_hostname"] = self.credentials.tls_server_name
        return kwargs

    async def _error(self, response: aiohttp.ClientResponse) -> ApiError:
        text = ""
        try:
            text = await response.text()
            body = json.loads(text)
            if isinstance(body, dict) and ("code" in body or body.get("kind") == "Status"):
                return error_from_status(body, response.status)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            pass
        return error_from_status({"code": response.status, "reason": response.reason or "",
                                  "message": text[:200]}, response.status)

    async def _list_page(self, url: str, params: dict[str, str]) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=self._request_timeout,
                                        sock_connect=self._connect_timeout)
        headers = await self._headers()
        try:
            async with self._get_session().get(url, params=params, headers=headers,
                                               timeout=timeout,
                                               **self._request_kwargs()) as response:
                if response.status != 200:
                    raise await self._error(response)
                body = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise ConnectionFailed(f"GET {url}: {exc!r}") from exc
        except ValueError as exc:  # JSON
            raise ConnectionFailed(f"GET {url}: unreadable list: {exc}") from exc
        if not isinstance(body, dict) or not isinstance(body.get("items", []), list | None):
            raise ConnectionFailed(f"GET {url}: not a list object")
        return body

    async def list(self, resource: Resource, *, namespace: str = "",
                   label_selector: str = "") -> ListResult:
        """All objects of `resource` as one consistent snapshot, and its resourceVersion."""
        url = self.credentials.server + resource.path(namespace)
        result = ListResult()
        limit: int | None = self.page_size
        token = ""
        while True:
            params: dict[str, str] = {}
            if label_selector:
                params["labelSelector"] = label_selector
            if limit:
                params["limit"] = str(limit)
            if token:
                params["continue"] = token
            try:
                body = await self._list_page(url, params)
            except Gone:
                if not token or limit is None:
                    raise
                # The snapshot our continue token pointed into was compacted. The new
                # token in the Status would give an inconsistent list; start over once,
                # unpaginated, like client-go's pager.
                log.info("k8s list %s: continue token expired, relisting in one page", url)
                result = ListResult(restarts=result.restarts + 1)
                limit, token = None, ""
                continue
            result.pages += 1
            result.items.extend(body.get("items") or ())
            meta = body.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                result.resource_version = str(meta.get("resourceVersion") or "")
                return result

    @contextlib.asynccontextmanager
    async def watch(self, resource: Resource, *, namespace: str = "",
                    label_selector: str = "", resource_version: str,
                    idle_timeout: float,
                    timeout_seconds: int | None = None,
                    max_event_bytes: int = MAX_EVENT_BYTES,
                    screen: Screen | None = None,
                    ) -> AsyncIterator[AsyncIterator[WatchEvent]]:
        """Open a watch after `resource_version`; the body is an iterator of its events.

        Entering raises the HTTP error of the open (a 410 as `Gone`). The events end when
        the server ends the stream; ERROR events are raised, BOOKMARKs are yielded so the
        caller keeps the newest resourceVersion. A line longer than `max_event_bytes` is
        discarded as it arrives (never held whole) and shown to `screen` as None.
        """
        url = self.credentials.server + resource.path(namespace)
        params = {"watch": "1", "allowWatchBookmarks": "true",
                  "resourceVersion": resource_version}
        if label_selector:
            params["labelSelector"] = label_selector
        if timeout_seconds:
            params["timeoutSeconds"] = str(timeout_seconds)
        # No total timeout: a watch lives long. Silence is caught by the idle timeout.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout,
                                        connect=self._connect_timeout)
        headers = await self._headers()
        async with contextlib.AsyncExitStack() as stack:
            try:
                response = await stack.enter_async_context(self._get_session().get(
                    url, params=params, headers=headers, timeout=timeout,
                    **self._request_kwargs()))
                if response.status != 200:
                    raise await self._error(response)
            except (aiohttp.ClientError, OSError) as exc:  # OSError: TimeoutError too
                raise ConnectionFailed(f"watch {url}: {exc!r}") from exc
            async with contextlib.aclosing(_events(response, url, idle_timeout,
                                                   max_event_bytes, screen)) as events:
                yield events


async def _events(response: aiohttp.ClientResponse, url: str, idle_timeout: float,
                  max_event_bytes: int, screen: Screen | None,
                  ) -> AsyncGenerator[WatchEvent, None]:
    try:
        async for line in _lines(response, idle_timeout, max_event_bytes):
            if screen is not None and not screen(line):
                continue
            if line is None:
                continue
            try:
                event = await jsonsteps.loads(line)  # a big event, in steps
            except ValueError as exc:
                raise ConnectionFailed(f"watch {url}: unreadable event: {exc}") from exc
            if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
                raise ConnectionFailed(f"watch {url}: not a watch event")
            if event.get("type") == "ERROR":
                raise error_from_status(event["object"])
            yield cast(WatchEvent, event)
    except (aiohttp.ClientError, OSError) as exc:
        raise ConnectionFailed(f"watch {url}: {exc!r}") from exc


async def _lines(response: aiohttp.ClientResponse, idle_timeout: float,
                 max_event_bytes: int) -> AsyncIterator[bytes | None]:
    """JSON lines of a chunked body; a chunk may hold many lines or part of one. A line
    past `max_event_bytes` is dropped as it arrives and given as None when it ends."""
    buffer = bytearray()
    discarding = False
    while True:
        try:
            async with asyncio.timeout(idle_timeout):
                chunk = await response.content.readany()
        except TimeoutError:
            raise IdleTimeout(f"watch silent for {idle_timeout:g}s") from None
        if not chunk:
            if buffer.strip():
                raise ConnectionFailed("watch stream ended inside an event")
            return
        scan = len(buffer)  # the old bytes hold no newline
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", scan)) >= 0:
            line = bytes(buffer[start:end])
            start = scan = end + 1
            if discarding:
                discarding = False
                yield None
            elif len(line) > max_event_bytes:
                yield None
            elif line.strip():
                yield line
        del buffer[:start]
        if len(buffer) > max_event_bytes:
            discarding = True
            buffer.clear()
