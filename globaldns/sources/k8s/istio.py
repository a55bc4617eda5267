"""One cluster's Istio objects as a registry source, `istio/<cluster>` (docs/istio.md).

With `istio: true` a cluster also watches `networking.istio.io` ServiceEntries,
WorkloadEntries and WorkloadGroups, in the first version of v1, v1beta1, v1alpha3 that
its API serves (the group's discovery document says which). Objects are converted by
`registry/istio.py`; an event recomputes only the hosts it touches (a ServiceEntry's old
and new hosts; for a WorkloadEntry or WorkloadGroup, the hosts of the ServiceEntries of its
namespace that select it), so an event costs O(those hosts), not O(cluster). They reach
the store only while the cluster's own data is published (after its first complete sync,
until it is dropped), so a host is never answered from half a list.

A WorkloadGroup's `probe` is run by the active health checker against each address of the
WorkloadEntries the group owns; its verdict and the entry's own `Healthy` condition both
decide readiness.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from globaldns.config.model import DEFAULT_LIMITS, HealthCheckConfig, LimitsConfig
from globaldns.registry import istio
from globaldns.registry.store import Store
from globaldns.sources.k8s.api import ApiClient, ApiError, Resource, describe
from globaldns.sources.k8s.objects import ConversionError, EventType, object_key
from globaldns.sources.k8s.watch import Sink, Timing, Watch
from globaldns.sources.static import HealthKey

if TYPE_CHECKING:
    from globaldns.sources.healthcheck import HealthChecker

log = logging.getLogger("globaldns.k8s")

GROUP = "networking.istio.io"
VERSIONS = ("v1", "v1beta1", "v1alpha3")
"""Preferred first: v1 since Istio 1.22, v1beta1 since 1.9 (v1alpha3 before)."""
SERVICE_ENTRIES, WORKLOAD_ENTRIES, WORKLOAD_GROUPS = (
    "serviceentries", "workloadentries", "workloadgroups")
PLURALS = (SERVICE_ENTRIES, WORKLOAD_ENTRIES, WORKLOAD_GROUPS)
"""What the RBAC of deploy/kubernetes/overlays/istio grants list/watch on, and nothing else."""


class NotServed(Exception):
    """The API serves no version of networking.istio.io we read."""


async def discover(api: ApiClient) -> str:
    """The version to read: the first of VERSIONS in the group's discovery document."""
    try:
        body = await api.get(f"/apis/{GROUP}")
    except ApiError as exc:
        if exc.code == 404:
            raise NotServed(f"{GROUP} is not served (Istio's CRDs are not installed)") from exc
        raise
    served = {str(v.get("version")) for v in body.get("versions") or ()
              if isinstance(v, dict)}
    for version in VERSIONS:
        if version in served:
            return version
    raise NotServed(f"{GROUP} serves none of {', '.join(VERSIONS)} "
                    f"(only {', '.join(sorted(served))[:200] or 'nothing'})")


def resources(version: str) -> list[Resource]:
    return [Resource(f"/apis/{GROUP}/{version}", plural) for plural in PLURALS]


def health_check(probe: istio.Probe) -> HealthCheckConfig:
    """A WorkloadGroup probe as the health checker's check (Kubernetes probes pass on
    HTTP 200-399)."""
    return HealthCheckConfig(kind=probe.kind, port=probe.port, path=probe.path,
                             expect_status=(200, 399), interval=probe.interval,
                             timeout=probe.timeout,
                             healthy_threshold=probe.healthy_threshold,
                             unhealthy_threshold=probe.unhealthy_threshold)


Key = tuple[str, str]


class IstioSource:
    """The Istio objects of one cluster: a watch sink, and the source `istio/<cluster>`."""

    def __init__(self, cluster: str, store: Store, *, owner: Sink | None,
                 live: Callable[[], bool], limits: LimitsConfig = DEFAULT_LIMITS,
                 allow_special: bool = False, health: HealthChecker | None = None) -> None:
        self.cluster = cluster
        self.source = f"istio/{cluster}"
        self.limits = limits
        self._store = store
        self._owner = owner
        self._live = live
        self._allow_special = allow_special
        self._health = health
        self.version = ""
        """The served version read (empty before discovery)."""
        self.error = ""
        """Why no Istio kind is watched (discovery failed), else empty."""
        self.entries: dict[Key, istio.ServiceEntry] = {}
        self.workloads: dict[Key, istio.WorkloadEntry] = {}
        self.groups: dict[Key, istio.WorkloadGroup] = {}
        self._checks: dict[HealthKey, None] = {}
        # Indexes for recomputing only what an event touches.
        self._hosts: dict[str, set[Key]] = {}
        """host → the ServiceEntries naming it."""
        self._entries_in: dict[str, set[Key]] = {}
        self._workloads_in: dict[str, set[Key]] = {}
        self._dirty: set[str] = set()
        """Hosts to write again at the next refresh."""
        self._checks_stale = False

    async def discover(self, api: ApiClient, timing: Timing) -> list[Resource]:
        """The resources to watch; retried with backoff while the API cannot be asked, none
        (with `error` set and logged) when it does not serve the group."""
        attempt = 0
        while True:
            try:
                self.version = await discover(api)
            except NotServed as exc:
                self.error = str(exc)
                log.error("k8s %s: istio: %s; watching no Istio kind", self.cluster, exc)
                return []
            except Exception as exc:  # connection, 5xx, 401/403: as a watch would retry
                self.error = describe(exc)
                delay = timing.backoff(attempt)
                attempt += 1
                log.warning("k8s %s: istio discovery: %s; retrying in %.1fs", self.cluster,
                            self.error, delay)
                await timing.sleep(delay)
                continue
            self.error = ""
            log.info("k8s %s: istio: reading %s/%s", self.cluster, GROUP, self.version)
            return resources(self.version)

    # --- the watches' sink ----------------------------------------------------------

    def listed(self, watch: Watch, items: list[dict[str, Any]]) -> None:
        plural = watch.resource.plural
        table = self._table(plural)
        namespace = watch.namespace
        for key in [k for k in table if not namespace or k[0] == namespace]:
            self._remove(plural, key)
        for raw in items:
            self.put(plural, raw)
        self.refresh()

    def event(self, watch: Watch, kind: EventType, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            try:
                self._remove(watch.resource.plural, object_key(obj))
            except (ConversionError, TypeError, AttributeError):
                return
        else:
            self.put(watch.resource.plural, obj)
        self.refresh()

    def changed(self, watch: Watch) -> None:
        if self._owner is not None:
            self._owner.changed(watch)

    async def failed(self, watch: Watch, error: Exception) -> None:
        if self._owner is not None:
            await self._owner.failed(watch, error)

    def _table(self, plural: str) -> dict[Key, Any]:
        if plural == SERVICE_ENTRIES:
            return self.entries
        if plural == WORKLOAD_ENTRIES:
            return self.workloads
        return self.groups

    def put(self, plural: str, raw: dict[str, Any]) -> None:
        """Take one object of `plural` (added or modified); a bad one is skipped, counted
        and forgotten."""
        try:
            key = object_key(raw)
        except (ConversionError, TypeError, AttributeError):
            self._store.skipped.skip("bad_object", f"{self.source} {plural} (no name)")
            return
        what = f"{self.source} {plural} {key[0]}/{key[1]}"
        table = self._table(plural)
        try:
            record: Any
            if plural == SERVICE_ENTRIES:
                record = istio.service_entry(
                    raw, cluster=self.cluster, allow_special=self._allow_special,
                    max_endpoints=self.limits.max_endpoints_per_service,
                    skip=lambda reason, detail: self._store.skipped.skip(reason, what, detail))
            elif plural == WORKLOAD_ENTRIES:
                record = istio.workload_entry(raw, allow_special=self._allow_special)
            else:
                record = istio.workload_group(raw)
        except (istio.Invalid, TypeError, AttributeError, ValueError) as exc:
            self._store.skipped.skip("bad_object", what, str(exc))
            self._remove(plural, key)
            return
        self._remove(plural, key)
        table[key] = record
        self._index(plural, key, record, +1)

    def _remove(self, plural: str, key: Key) -> None:
        old = self._table(plural).pop(key, None)
        if old is not None:
            self._index(plural, key, old, -1)

    def _index(self, plural: str, key: Key, record: Any, delta: int) -> None:
        """Add (+1) or take out (-1) a record of the indexes; mark the hosts it touches."""
        namespace = key[0]
        if plural == SERVICE_ENTRIES:
            entry: istio.ServiceEntry = record
            _update(self._entries_in, namespace, key, delta)
            for host in entry.hosts:
                _update(self._hosts, host, key, delta)
            self._dirty.update(entry.hosts)
            return
        self._checks_stale = True
        if plural == WORKLOAD_ENTRIES:
            _update(self._workloads_in, namespace, key, delta)
            self._dirty.update(self._selecting(record))
        else:
            for wkey in self._workloads_in.get(namespace, ()):
                workload = self.workloads[wkey]
                if workload.group == key[1]:
                    self._dirty.update(self._selecting(workload))

    def _selecting(self, workload: istio.WorkloadEntry) -> set[str]:
        """The hosts of the ServiceEntries of the workload's namespace that select it."""
        labels = set(workload.endpoint.labels)
        hosts: set[str] = set()
        for key in self._entries_in.get(workload.namespace, ()):
            entry = self.entries[key]
            if entry.selector is not None and set(entry.selector) <= labels:
                hosts.update(entry.hosts)
        return hosts

    # --- objects → store ------------------------------------------------------------

    def _probe_key(self, workload: istio.WorkloadEntry) -> HealthKey | None:
        group = self.groups.get((workload.namespace, workload.group)) \
            if workload.group else None
        if group is None or group.probe is None or not workload.endpoint.is_ip:
            return None
        return HealthKey((workload.namespace, group.name), workload.endpoint.address,
                         health_check(group.probe))

    def _probed(self, workload: istio.WorkloadEntry) -> bool:
        key = self._probe_key(workload)
        if key is None or self._health is None:
            return True
        return self._health.health.get(key, True)

    def _compute(self, entries: list[istio.ServiceEntry]) -> dict[tuple[str, str], Any]:
        workloads = [self.workloads[k] for ns in {e.namespace for e in entries}
                     for k in self._workloads_in.get(ns, ())]
        return istio.services(
            entries, workloads, probed=self._probed,
            max_endpoints=self.limits.max_endpoints_per_service,
            skip=lambda reason, detail: self._store.skipped.skip(reason, self.source, detail))

    def services(self) -> dict[tuple[str, str], Any]:
        """Every host of the cluster."""
        return self._compute(list(self.entries.values()))

    def refresh(self) -> None:
        """Write the hosts touched since the last refresh (when published) and keep the
        probes in step."""
        if self._health is not None and self._checks_stale:
            self._checks_stale = False
            wanted = {key: None for w in self.workloads.values()
                      if (key := self._probe_key(w)) is not None}
            if wanted.keys() != self._checks.keys():
                self._checks = wanted
                self._health.track(self.source, set(wanted), self._flipped)
        if not self._live():
            return
        dirty, self._dirty = self._dirty, set()
        for host in dirty:
            entries = [self.entries[k] for k in self._hosts.get(host, ())]
            data = self._compute(entries).get(("", host)) if entries else None
            if data is None:
                self._store.delete(self.source, ("", host))
            else:
                self._store.set(self.source, ("", host), data)

    def _flipped(self) -> None:
        """A probe flipped: the hosts selecting the workloads of probed groups."""
        for workload in self.workloads.values():
            if workload.group:
                self._dirty.update(self._selecting(workload))
        self.refresh()

    def publish(self) -> None:
        self._dirty.clear()
        self._store.replace_source(self.source, self.services())

    def drop(self) -> None:
        self._store.drop_source(self.source)

    def stop_checks(self) -> None:
        if self._health is not None and self._checks:
            self._checks = {}
            self._health.track(self.source, set(), self._flipped)

    def status(self) -> dict[str, Any]:
        return {"version": self.version, "error": self.error,
                "serviceentries": len(self.entries), "workloadentries": len(self.workloads),
                "workloadgroups": len(self.groups)}


def _update(index: dict[str, set[Key]], name: str, key: Key, delta: int) -> None:
    if delta > 0:
        index.setdefault(name, set()).add(key)
        return
    keys = index.get(name)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[name]
