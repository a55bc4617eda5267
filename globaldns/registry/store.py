"""The one place that sources write to.

Each source (``static``, ``k8s/<cluster>``, ...) owns what it says about each service.
A write touches one (source, service) pair and tells the listeners which service changed,
so a change costs O(that service), never O(registry).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from globaldns.registry.model import Endpoint, Port, ServiceData, ServiceKey

Listener = Callable[[ServiceKey], None]


class MergedService:
    """All sources' data for one service, merged."""

    __slots__ = ("endpoints", "external_name", "key", "ports", "sources")

    def __init__(self, key: ServiceKey, by_source: dict[str, ServiceData]) -> None:
        self.key = key
        self.sources = tuple(sorted(by_source))
        ports: dict[tuple[str, str], Port] = {}
        endpoints: list[Endpoint] = []
        external_name = ""
        for source in self.sources:
            data = by_source[source]
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

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _changed(self, key: ServiceKey) -> None:
        for listener in self._listeners:
            listener(key)

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
