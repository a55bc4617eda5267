"""The one place that sources write to.

Each source (``static``, ``k8s/<cluster>``, ...) owns what it says about each service.
A write touches one (source, service) pair and tells the listeners which service changed,
so a change costs O(that service), never O(registry).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from globaldns.registry.model import (
    Endpoint,
    Port,
    ServiceData,
    ServiceImport,
    ServiceKey,
    ServicePolicy,
)

log = logging.getLogger("globaldns.registry")

Listener = Callable[[ServiceKey], None]

SKIP_REASONS = {
    "bad_name": "a Service, namespace or service-name label that is no DNS label: the "
                "object is skipped",
    "bad_port": "a port whose name or protocol makes no `_name._proto` label: the port "
                "is skipped",
    "bad_hostname": "an endpoint hostname that is no DNS label: the endpoint is named by "
                    "its address",
    "bad_cluster_name": "a remote Secret key that is no DNS label: that cluster is not "
                        "watched",
    "bad_address": "an endpoint address that is no IP address: the address is skipped",
    "special_address": "a loopback, link-local, unspecified or multicast address: skipped "
                       "(unless the cluster sets allow_special_addresses)",
    "name_too_long": "a name longer than 255 bytes in a zone: that name is not served",
    "too_many_endpoints": "an EndpointSlice past limits.max_endpoints_per_service: skipped",
    "event_too_large": "a watch event past limits.max_event_bytes: skipped unread",
    "bad_host": "a ServiceEntry host that is no host name (or a wildcard), or a name "
                "another service already has: that host is not served",
    "host_not_served": "a ServiceEntry host outside every zone that matches no "
                       "serve_hosts entry: not served (forwarded as before)",
    "bad_object": "an Istio object (ServiceEntry, WorkloadEntry, WorkloadGroup) that "
                  "cannot be used as a whole: skipped",
    "build_failed": "a service whose answers failed to build: its previous answers stay",
    "bad_annotation": "a globaldns.io routing annotation that cannot be read: ignored (the "
                      "config's routing applies)",
    "bad_service_import": "a ServiceImport whose type or IPs cannot be read: skipped",
}
"""Why cluster data was skipped: the closed set of the `reason` label."""

# Remembered (reason, object) pairs for logging each once; a flood of distinct bad
# objects restarts the memory rather than growing it.
_LOGGED_MAX = 4096


class Skipped:
    """Counts of data that could not become DNS records, by reason; each object's
    first skip for a reason is logged."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(SKIP_REASONS, 0)
        self._logged: set[tuple[str, str]] = set()

    def skip(self, reason: str, what: str, detail: str = "") -> None:
        self.counts[reason] += 1
        if (reason, what) in self._logged:
            return
        if len(self._logged) >= _LOGGED_MAX:
            self._logged.clear()
        self._logged.add((reason, what))
        log.warning("registry: skipped (%s) %s%s", reason, printable(what),
                    f": {printable(detail)}" if detail else "")


def printable(text: str, limit: int = 300) -> str:
    """`text` for a log line: control characters escaped, at most `limit` characters."""
    return repr(text[:limit])[1:-1]


class MergedService:
    """All sources' data for one service, merged."""

    __slots__ = ("endpoints", "exists", "external_name", "imported", "key", "policy", "ports",
                 "sources")

    def __init__(self, key: ServiceKey, by_source: dict[str, ServiceData]) -> None:
        self.key = key
        self.sources = tuple(sorted(by_source))
        ports: dict[tuple[str, str], Port] = {}
        endpoints: list[Endpoint] = []
        external_name = ""
        self.policy: ServicePolicy | None = None
        """The first source's (in name order) that has one."""
        self.imported: ServiceImport | None = None
        self.exists = False
        """A Service or slices are known (not only a ServiceImport)."""
        for source in self.sources:
            data = by_source[source]
            self.policy = self.policy or data.policy
            self.imported = self.imported or data.imported
            self.exists = self.exists or data.service
            for port in data.ports:
                ports.setdefault((port.name, port.protocol), port)
            endpoints.extend(data.endpoints)
            external_name = external_name or data.external_name
        self.ports = tuple(ports.values())
        self.endpoints = tuple(endpoints)
        self.external_name = external_name


class Store:
    def __init__(self) -> None:
        self._data: dict[ServiceKey, dict[str, ServiceData]] = {}
        self._by_source: dict[str, set[ServiceKey]] = {}
        self._listeners: list[Listener] = []
        self.skipped = Skipped()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _changed(self, key: ServiceKey) -> None:
        # A listener that fails on one service must not stop the others from hearing of
        # it, nor the writes after it (a relist writes every service in turn).
        for listener in self._listeners:
            try:
                listener(key)
            except Exception:
                log.exception("registry: listener failed on %s", printable("/".join(key)))
                self.skipped.skip("build_failed", "/".join(key))

    def set(self, source: str, key: ServiceKey, data: ServiceData) -> None:
        """Replace what `source` says about the service `key`."""
        by_source = self._data.setdefault(key, {})
        if by_source.get(source) == data:
            return
        by_source[source] = data
        self._by_source.setdefault(source, set()).add(key)
        self._changed(key)

    def delete(self, source: str, key: ServiceKey) -> None:
        """Forget what `source` says about `key`."""
        by_source = self._data.get(key)
        if by_source is None or source not in by_source:
            return
        del by_source[source]
        if not by_source:
            del self._data[key]
        self._by_source[source].discard(key)
        self._changed(key)

    def put(self, key: ServiceKey, by_source: dict[str, ServiceData]) -> None:
        """Make `key` hold exactly `by_source` (a replica following another store)."""
        for source in set(self._data.get(key, {})) - by_source.keys():
            self._by_source[source].discard(key)
        if by_source:
            self._data[key] = dict(by_source)
            for source in by_source:
                self._by_source.setdefault(source, set()).add(key)
        else:
            self._data.pop(key, None)
        self._changed(key)

    def replace_source(self, source: str, services: dict[ServiceKey, ServiceData]) -> None:
        """Make `source` say exactly `services` (a relist): missing services are deleted."""
        for key in self._by_source.get(source, set()) - services.keys():
            self.delete(source, key)
        for key, data in services.items():
            self.set(source, key, data)

    def drop_source(self, source: str) -> None:
        self.replace_source(source, {})

    def sources(self) -> list[str]:
        return sorted(s for s, keys in self._by_source.items() if keys)

    def keys_of(self, source: str) -> Iterable[ServiceKey]:
        return tuple(self._by_source.get(source, ()))

    def get(self, key: ServiceKey) -> MergedService | None:
        by_source = self._data.get(key)
        return MergedService(key, by_source) if by_source else None

    def raw(self, key: ServiceKey) -> dict[str, ServiceData]:
        return dict(self._data.get(key, {}))

    def service_keys(self) -> list[ServiceKey]:
        return list(self._data)
