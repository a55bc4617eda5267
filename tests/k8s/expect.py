"""What the store should hold, computed straight from an emulator's objects.

Written independently of globaldns.sources.k8s.objects, so comparing the two checks the watch
path end to end: (address, ready) per service, and which services exist.
"""

from __future__ import annotations

from collections.abc import Callable

from globaldns.registry.store import Store
from tests.k8s.emulator import Emulator, parse_selector

Key = tuple[str, str]
View = dict[Key, frozenset[tuple[str, bool]]]


def held(emulator: Emulator, *, namespaces: tuple[str, ...] = (),
         label_selector: str = "") -> View:
    """Each service of the emulator (a Service, or slices naming it): its addresses."""
    matches: Callable[[dict[str, str]], bool] = parse_selector(label_selector)

    def wanted(obj: dict) -> bool:  # type: ignore[type-arg]
        meta = obj["metadata"]
        return ((not namespaces or meta["namespace"] in namespaces)
                and matches(meta.get("labels") or {}))

    view: dict[Key, set[tuple[str, bool]]] = {}
    for (namespace, name), obj in emulator.objects["services"].items():
        if wanted(obj):
            view.setdefault((namespace, name), set())
    for (namespace, _), obj in emulator.objects["endpointslices"].items():
        service = (obj["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
        if not service or not wanted(obj):
            continue
        addresses = view.setdefault((namespace, service), set())
        if obj["addressType"] not in ("IPv4", "IPv6"):
            continue
        for ep in obj["endpoints"]:
            ready = (ep.get("conditions") or {}).get("ready") is not False
            for address in ep["addresses"]:
                addresses.add((address, ready))
    return {k: frozenset(v) for k, v in view.items()}


def published(store: Store, source: str) -> View:
    """What `source` says in the store, in the same shape."""
    view = {}
    for key in store.keys_of(source):
        data = store.raw(key)[source]
        view[key] = frozenset((e.address, e.ready) for e in data.endpoints)
    return view
