"""The Kubernetes REST API over aiohttp: paginated lists and watch streams.

Two calls, both for one resource in all namespaces or one:
- `list()`: pages of `limit` objects joined with `continue` tokens; when a token expires
  (410) the list restarts as one full list, as client-go's pager does
  (`FullListIfExpired`), so the result is always one consistent snapshot.
- `watch()`: one chunked HTTP response of JSON lines from a resourceVersion, with
  bookmarks; silence longer than the idle timeout is an error, not a wait forever.

HTTP and transport failures become our own exceptions, with the cause chained. Their text
is built from a whitelist of fields (exception class, status code, a short reason, the OS
or TLS error), never from a repr: aiohttp's reprs carry the request's headers, so the
bearer token. Redirects are never followed: a 3xx is `Redirected`, and the Authorization
header goes to the configured server only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp

from globaldns.sources.k8s import jsonsteps
from globaldns.sources.k8s.credentials import Credentials, CredentialsError
from globaldns.sources.k8s.objects import Status, WatchEvent

log = logging.getLogger("globaldns.k8s")

# A watch line is one object; a slice of 1,000 endpoints is ~100 kB (limits.max_event_bytes
# sets it; LimitsConfig gives the reason for its default).
MAX_EVENT_BYTES = 8 * 1024 * 1024

Screen = Callable[[bytes | None], bool]
"""Sees each watch line before it is parsed (None: a line past the size cap, already
discarded unread); False drops it."""

# An error Status is a few hundred bytes; the rest of a longer error body is not read.
MAX_ERROR_BODY = 64 * 1024
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


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


class Redirected(ApiError):
    """3xx: not followed (the Authorization header would go wherever it points)."""


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
    reason = short(str(status.get("reason") or ""), 60)
    message = short(str(status.get("message") or ""), 300)
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


def short(text: str, limit: int) -> str:
    """Server-given text for one log line: printable ASCII, at most `limit` characters."""
    text = _UNPRINTABLE.sub("?", text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def describe(exc: BaseException) -> str:
    """`exc` as text for a log line or a status page.

    Our own errors are built to be shown; any other by a whitelist of its fields: its
    class, an HTTP status, the host and port it connected to, the OS or TLS error. Never
    its repr or its arguments.
    """
    name = type(exc).__name__
    if isinstance(exc, KubernetesError | CredentialsError):
        return f"{name}: {exc}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{name}: HTTP {exc.status}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{name}: {exc.host}:{exc.port}: {_os_error(exc.os_error)}"
    if isinstance(exc, OSError):
        return f"{name}: {_os_error(exc)}"
    return name


def _os_error(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {short(str(exc.verify_message), 120)}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS {short(str(exc.reason), 60)}"
    return short(str(exc.strerror), 120) if exc.strerror else type(exc).__name__


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
        self._sent: tuple[str, ...] = ()
        """The secrets of the last Authorization header: scrubbed from any error text."""

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
            headers = await asyncio.to_thread(self.credentials.headers)
        else:
            headers = self.credentials.headers()
        self._sent = tuple(part for value in headers.values() for part in value.split()
                           if len(part) >= 8)
        return headers

    def _scrub(self, text: str) -> str:
        """`text` (from the server) without the token we sent, should it echo it."""
        for secret in self._sent:
            text = text.replace(secret, "[redacted]")
        return text

    def _request_kwargs(self) -> dict[str, Any]:
        context = self.credentials.ssl_context()
        kwargs: dict[str, Any] = {"ssl": context if context is not None else False}
        if self.credentials.tls_server_name:
            kwargs["server_hostname"] = self.credentials.tls_server_name
        return kwargs

    async def _error(self, response: aiohttp.ClientResponse) -> ApiError:
        phrase = short(response.reason or "", 60)
        if 300 <= response.status < 400:
            return Redirected(response.status, phrase or "Redirect",
                              "redirects are not followed")
        raw = bytearray()
        try:
            # Bounded in size and time: a watch request has no total timeout.
            async with asyncio.timeout(self._request_timeout):
                while len(raw) < MAX_ERROR_BODY:
                    chunk = await response.content.read(MAX_ERROR_BODY - len(raw))
                    if not chunk:
                        break
                    raw += chunk
            body = json.loads(raw)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            body = None
        if isinstance(body, dict) and ("code" in body or body.get("kind") == "Status"):
            body["message"] = self._scrub(str(body.get("message") or ""))
            return error_from_status(body, response.status)
        # Not a Status (a proxy's page, or anything): its text is not ours to log.
        return error_from_status({"code": response.status, "reason": phrase},
                                 response.status)

    async def _list_page(self, url: str, params: dict[str, str]) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=self._request_timeout,
                                        sock_connect=self._connect_timeout)
        headers = await self._headers()
        try:
            async with self._get_session().get(url, params=params, headers=headers,
                                               timeout=timeout, allow_redirects=False,
                                               **self._request_kwargs()) as response:
                if response.status != 200:
                    raise await self._error(response)
                body = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise ConnectionFailed(f"GET {url}: {describe(exc)}") from exc
        except ValueError as exc:  # JSON
            raise ConnectionFailed(f"GET {url}: unreadable list: {exc}") from exc
        if not isinstance(body, dict) or not isinstance(body.get("items", []), list | None):
            raise ConnectionFailed(f"GET {url}: not a list object")
        return body

    async def get(self, path: str) -> dict[str, Any]:
        """One object at `path` (e.g. the discovery document of an API group)."""
        return await self._list_page(self.credentials.server + path, {})

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
                    allow_redirects=False, **self._request_kwargs()))
                if response.status != 200:
                    raise await self._error(response)
            except (aiohttp.ClientError, OSError) as exc:  # OSError: TimeoutError too
                raise ConnectionFailed(f"watch {url}: {describe(exc)}") from exc
            async with contextlib.aclosing(_events(response, url, idle_timeout, self._scrub,
                                                   max_event_bytes, screen)) as events:
                yield events


async def _events(response: aiohttp.ClientResponse, url: str, idle_timeout: float,
                  scrub: Callable[[str], str], max_event_bytes: int, screen: Screen | None,
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
                status = event["object"]
                status["message"] = scrub(str(status.get("message") or ""))
                raise error_from_status(status)
            yield cast(WatchEvent, event)
    except (aiohttp.ClientError, OSError) as exc:
        raise ConnectionFailed(f"watch {url}: {describe(exc)}") from exc


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
