"""One cluster as a registry source: its watches, its objects, its state.

The source `k8s/<cluster>` keeps the cluster's EndpointSlices and Services indexed by
service, and on every event writes the merged ServiceData of that one service to the
store: a change costs O(that service).

State machine (`ClusterState`):

    syncing ──all watches listed──▶ synced ◀──────recovered (relist/resume)──┐
       │                              │                                      │
       │ error before the first sync  │ error (unreachable, 401/403, 5xx)    │
       ▼                              ▼                                      │
    failed ◀──stale_for passed: drop── stale (last endpoints still served) ──┘
       └──────────recovered: publish everything again─────────▶ synced

Nothing reaches the store before the first complete sync (a Service listed before its
slices would be answered NODATA), and nothing while the source is dropped; the watches
keep the objects up to date meanwhile and a recovery publishes them whole.

A remote Secret's kubeconfig that is `Rejected` leaves the source `failed` for good,
holding nothing: the same text would be rejected again, and a changed Secret starts a
new source.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import gc
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from globaldns.config.model import DEFAULT_LIMITS, ClusterConfig, LimitsConfig
from globaldns.registry.model import ServiceData, ServiceKey
from globaldns.registry.store import Store
from globaldns.sources.k8s import mcs, objects
from globaldns.sources.k8s.annotations import NONE as NO_ANNOTATIONS
from globaldns.sources.k8s.annotations import policy
from globaldns.sources.k8s.api import (
    ENDPOINTSLICES,
    SERVICES,
    ApiClient,
    Resource,
    Unauthorized,
    describe,
)
from globaldns.sources.k8s.credentials import Credentials, Rejected, Rejection
from globaldns.sources.k8s.istio import IstioSource
from globaldns.sources.k8s.mcs import SERVICEEXPORTS, SERVICEIMPORTS, ExportRecord, ImportRecord
from globaldns.sources.k8s.objects import EventType, ServiceRecord, SliceRecord
from globaldns.sources.k8s.watch import Sink, Timing, Watch

if TYPE_CHECKING:
    from globaldns.sources.healthcheck import HealthChecker

log = logging.getLogger("globaldns.k8s")

Record = SliceRecord | ServiceRecord | ExportRecord | ImportRecord
"""One converted object of a watch."""

CredentialsLoader = Callable[[], Credentials]
"""Loads credentials; may block (files, exec plugins), so it runs in a thread."""

# After a 401, load the credentials again (a rotated token file, a renewed kubeconfig),
# at most this often: every watch of the cluster sees the same 401.
RELOAD_CREDENTIALS_EVERY = 10.0

PUBLISH_STEP = 16
"""Services a synced cluster writes to the store between two yields to the loop (each
prepares its answers: 16 of 5 endpoints take about 10 ms)."""


def _big(raw: Any) -> bool:
    """An object worth converting in steps: an EndpointSlice of many addresses."""
    try:
        return objects.address_count(raw) > objects.STEP
    except (TypeError, AttributeError):
        return False  # not a slice we can read: the conversion says why, at once


class ClusterState(enum.StrEnum):
    SYNCING = "syncing"
    SYNCED = "synced"
    STALE = "stale"
    FAILED = "failed"


class ClusterSource:
    """Watches one cluster and writes what it holds to the store as `k8s/<name>`."""

    def __init__(self, config: ClusterConfig, store: Store, *,
                 load_credentials: CredentialsLoader, timing: Timing,
                 origin: str = "config", limits: LimitsConfig = DEFAULT_LIMITS,
                 on_change: Callable[[ClusterSource], None] | None = None,
                 on_rejected: Callable[[Rejection], None] | None = None,
                 health: HealthChecker | None = None) -> None:
        self.config = config
        self.limits = limits
        """The config's `limits`; a reload sets it anew (it applies from the next event)."""
        self.name = config.name
        self.source = f"k8s/{config.name}"
        self.origin = origin
        """`config`, or the remote Secret that named this cluster."""
        self._store = store
        self._load_credentials = load_credentials
        self._timing = timing
        self._on_change = on_change
        self._on_rejected = on_rejected
        # `istio: true`: ServiceEntries, WorkloadEntries, WorkloadGroups (sources/k8s/istio.py).
        self.istio = IstioSource(
            config.name, store, owner=self, limits=limits,
            live=lambda: self._published and not self._stopped,
            allow_special=config.allow_special_addresses,
            health=health) if config.istio else None
        # The cluster's objects, always current while the watches run.
        self._slices: dict[tuple[str, str], SliceRecord] = {}
        self._slices_of: dict[ServiceKey, dict[str, SliceRecord]] = {}
        self._services: dict[ServiceKey, ServiceRecord] = {}
        self._exports: dict[ServiceKey, ExportRecord] = {}
        self._imports: dict[ServiceKey, ImportRecord] = {}
        self._published = False
        self._stopped = False
        self._api: ApiClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._expiry: asyncio.Task[None] | None = None
        self._last_reload = float("-inf")
        self._credentials_error = ""
        self._credentials_errors = 0
        self.watches: list[Watch] = []
        self._queue: deque[tuple[Watch, EventType | None, Any]] = deque()
        self._applier: asyncio.Task[None] | None = None
        # The first publish after a sync, in steps (`_publish_in_steps`): the services
        # already in the store, kept current by `_refresh` while the rest follow.
        self._publisher: asyncio.Task[None] | None = None
        self._publishing: set[ServiceKey] | None = None
        # Status, as plain attributes.
        self.yields = 0
        """Times the conversion of a big object gave the loop back."""
        self.publish_steps = 0
        """Times publishing a synced cluster's services gave the loop back."""
        self.state = ClusterState.SYNCING
        self.synced_once = False
        """The first complete sync happened (readiness)."""
        self.last_sync: float | None = None
        """Wall-clock time of the last complete list of every watch."""
        self.stale_since: float | None = None
        """Clock time the cluster became unreachable while synced."""
        self.server = ""

    # --- lifetime -------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"k8s {self.name}")
            self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        # Watches never return and catch everything; an end other than a cancel is a bug.
        if not task.cancelled() and task.exception() is not None:
            log.error("k8s %s: source ended unexpectedly", self.name,
                      exc_info=task.exception())

    def cancel(self, *, drop: bool) -> None:
        """Stop writing now (synchronously); `drop` also removes what we wrote."""
        self._stopped = True
        for task in (self._task, self._expiry, self._applier, self._publisher):
            if task is not None:
                task.cancel()
        if self.istio is not None:
            self.istio.stop_checks()
        if drop:
            self._drop()

    async def stop(self, *, drop: bool) -> None:
        self.cancel(drop=drop)
        for task in (self._task, self._expiry, self._applier, self._publisher):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._api is not None:
            await self._api.close()

    async def _run(self) -> None:
        credentials = await self._credentials()
        if credentials is None:
            return
        self.server = credentials.server
        self._api = ApiClient(credentials)
        sinks: list[tuple[Resource, Sink]] = [(ENDPOINTSLICES, self), (SERVICES, self)]
        if self.config.export == "service_export":
            sinks.append((SERVICEEXPORTS, self))
        if self.config.service_imports:
            sinks.append((SERVICEIMPORTS, self))
        log.info("k8s %s: export %s%s", self.name, self.config.export,
                 "; ServiceImports watched" if self.config.service_imports else "")
        if self.istio is not None:
            sinks += [(r, self.istio) for r in await self.istio.discover(self._api,
                                                                         self._timing)]
        namespaces = self.config.namespaces or ("",)
        self.watches = [
            Watch(self._api, resource, sink, cluster=self.name, namespace=namespace,
                  # The selector picks what is served; an export or import of a picked
                  # Service is read whatever its labels.
                  label_selector="" if resource in (SERVICEEXPORTS, SERVICEIMPORTS)
                  else self.config.label_selector,
                  idle_timeout=self.config.watch_idle_timeout, timing=self._timing,
                  limits=self.limits, skipped=self._store.skipped)
            for resource, sink in sinks for namespace in namespaces]
        self._update_state()
        async with asyncio.TaskGroup() as group:
            for watch in self.watches:
                group.create_task(watch.run(), name=f"k8s watch {watch.name}")

    async def _credentials(self) -> Credentials | None:
        """The loaded credentials, retried with backoff; None when they were rejected."""
        attempt = 0
        while True:
            try:
                credentials = await asyncio.to_thread(self._load_credentials)
            except Rejected as exc:
                self._credentials_error = describe(exc)
                self._credentials_errors += 1
                log.error("k8s %s: %s; not watched until the Secret changes", self.name, exc)
                self._drop()
                if self._on_rejected is not None:
                    self._on_rejected(exc.reason)
                self._update_state()
                return None
            except Exception as exc:  # CredentialsError, or a plugin's own failure
                self._credentials_error = describe(exc)
                self._credentials_errors += 1
                delay = self._timing.backoff(attempt)
                attempt += 1
                log.error("k8s %s: cannot load credentials: %s; retrying in %.1fs",
                          self.name, self._credentials_error, delay)
                self._update_state()
                await self._timing.sleep(delay)
                continue
            self._credentials_error = ""
            self._last_reload = self._timing.clock()
            return credentials

    # --- the watches' sink ----------------------------------------------------------

    def listed(self, watch: Watch, items: list[dict[str, Any]]) -> None:
        if self._queue or any(map(_big, items)):
            self._enqueue(watch, None, items)
        else:
            self._apply_list(watch, [self._convert(watch, raw) for raw in items])

    def event(self, watch: Watch, kind: EventType, obj: dict[str, Any]) -> None:
        if self._queue or (kind != "DELETED" and _big(obj)):
            self._enqueue(watch, kind, obj)
        else:
            self._apply_event(watch, kind, obj,
                              None if kind == "DELETED" else self._convert(watch, obj))

    # Big objects (more than objects.STEP endpoints) are converted in steps that yield to
    # the loop, by one task per cluster; what arrives meanwhile waits behind them, so the
    # cluster's objects change in the order the API server sent them.

    def _enqueue(self, watch: Watch, kind: EventType | None, obj: Any) -> None:
        self._queue.append((watch, kind, obj))
        if self._applier is None:
            self._applier = asyncio.create_task(self._apply_queued(),
                                                name=f"k8s apply {self.name}")

    async def _apply_queued(self) -> None:
        try:
            while self._queue and not self._stopped:
                watch, kind, obj = self._queue[0]
                try:
                    if kind is None:
                        records = [await self._convert_steps(watch, raw) for raw in obj]
                        self._apply_list(watch, records)
                    else:
                        record = None if kind == "DELETED" else \
                            await self._convert_steps(watch, obj)
                        self._apply_event(watch, kind, obj, record)
                except Exception:  # a bug: the next objects still go in
                    log.exception("k8s %s: applying a queued object failed", self.name)
                self._queue.popleft()
        finally:
            self._applier = None
        self._update_state()

    async def _convert_steps(self, watch: Watch, raw: dict[str, Any]) -> Record | None:
        if watch.resource is not ENDPOINTSLICES or not _big(raw):
            return self._convert(watch, raw)
        steps = objects.endpoint_slice_steps(
            raw, cluster=self.name, locality=self.config.locality,  # type: ignore[arg-type]
            rules=self._rules(), skipped=self._store.skipped)
        with self._skipping("endpointslice", raw):
            try:
                while True:
                    next(steps)
                    self.yields += 1
                    await asyncio.sleep(0)
            except StopIteration as done:
                record: SliceRecord = done.value
                return record
        return None

    def _convert(self, watch: Watch, raw: dict[str, Any]) -> Record | None:
        if watch.resource is ENDPOINTSLICES:
            return self._convert_slice(raw)
        if watch.resource is SERVICEEXPORTS:
            return self._convert_mcs(mcs.service_export, "serviceexport", raw)
        if watch.resource is SERVICEIMPORTS:
            return self._convert_mcs(mcs.service_import, "serviceimport", raw)
        return self._convert_service(raw)

    def _convert_mcs(self, convert: Callable[..., ExportRecord | ImportRecord], kind: str,
                     raw: dict[str, Any]) -> ExportRecord | ImportRecord | None:
        with self._skipping(kind, raw):
            return convert(raw, cluster=self.name, skipped=self._store.skipped)
        return None

    def _held(self, watch: Watch) -> dict[ServiceKey, Any]:
        """The dict of keyed records a (non-slice) watch fills."""
        if watch.resource is SERVICEEXPORTS:
            return self._exports
        if watch.resource is SERVICEIMPORTS:
            return self._imports
        return self._services

    def _apply_list(self, watch: Watch, records: list[Record | None]) -> None:
        namespace = watch.namespace
        touched: set[ServiceKey] = set()
        if watch.resource is ENDPOINTSLICES:
            fresh = {(r.namespace, r.name): r for r in records if isinstance(r, SliceRecord)}
            gone = [k for k in self._slices if (not namespace or k[0] == namespace)
                    and k not in fresh]
            for key in gone:
                touched.update(self._remove_slice(key))
            for record in fresh.values():
                touched.update(self._put_slice(record))
        else:
            held = self._held(watch)
            fresh_keyed = {r.key: r for r in records
                           if r is not None and not isinstance(r, SliceRecord)}
            for key in [k for k in held if (not namespace or k[0] == namespace)
                        and k not in fresh_keyed]:
                del held[key]
                touched.add(key)
            for key, keyed in fresh_keyed.items():
                if held.get(key) != keyed:
                    held[key] = keyed
                    touched.add(key)
        for key in touched:
            self._refresh(key)
        if self.state is ClusterState.SYNCED:
            self.last_sync = self._timing.wall()

    def _apply_event(self, watch: Watch, kind: EventType, obj: dict[str, Any],
                     record: Record | None) -> None:
        touched: set[ServiceKey] = set()
        if kind == "DELETED":
            try:
                key = objects.object_key(obj)
            except objects.ConversionError:
                return
            if watch.resource is ENDPOINTSLICES:
                touched.update(self._remove_slice(key))
            elif self._held(watch).pop(key, None) is not None:
                touched.add(key)
        elif isinstance(record, SliceRecord):
            touched.update(self._put_slice(record))
        elif record is not None and self._held(watch).get(record.key) != record:
            self._held(watch)[record.key] = record
            touched.add(record.key)
        for key in touched:
            self._refresh(key)

    def changed(self, watch: Watch) -> None:
        self._update_state()

    async def failed(self, watch: Watch, error: Exception) -> None:
        if not isinstance(error, Unauthorized) or self._api is None:
            return
        now = self._timing.clock()
        if now - self._last_reload < RELOAD_CREDENTIALS_EVERY:
            return
        self._last_reload = now
        try:
            credentials = await asyncio.to_thread(self._load_credentials)
        except Exception as exc:
            log.error("k8s %s: 401, and reloading credentials failed: %s", self.name,
                      describe(exc))
            return
        log.info("k8s %s: 401; credentials reloaded from %s", self.name, credentials.origin)
        self._api.credentials = credentials

    # --- objects → store ------------------------------------------------------------

    def _rules(self) -> objects.SliceRules:
        return objects.SliceRules(
            self.name, self.config.locality, self.limits.max_endpoints_per_service,
            allow_special_addresses=self.config.allow_special_addresses)

    def _convert_slice(self, raw: dict[str, Any]) -> SliceRecord | None:
        with self._skipping("endpointslice", raw):
            return objects.endpoint_slice(raw, cluster=self.name,  # type: ignore[arg-type]
                                          locality=self.config.locality, rules=self._rules(),
                                          skipped=self._store.skipped)
        return None

    def _convert_service(self, raw: dict[str, Any]) -> ServiceRecord | None:
        with self._skipping("service", raw):
            return objects.service(raw, cluster=self.name,  # type: ignore[arg-type]
                                   skipped=self._store.skipped)
        return None

    @contextlib.contextmanager
    def _skipping(self, kind: str, raw: dict[str, Any]) -> Iterator[None]:
        """Convert-or-skip: an object that does not convert is skipped and counted (its
        own reason, else `bad_name`), and the caller goes on past the `with`."""
        try:
            yield
        except objects.ConversionError as exc:
            self._skip(exc.reason, kind, raw, exc)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            self._skip("bad_name", kind, raw, exc)

    def _skip(self, reason: str, kind: str, raw: dict[str, Any], exc: Exception) -> None:
        try:
            where = "/".join(objects.object_key(raw))
        except (objects.ConversionError, TypeError, AttributeError):
            where = "(no name)"
        self._store.skipped.skip(reason, f"k8s/{self.name} {kind} {where}", str(exc))

    def _put_slice(self, record: SliceRecord) -> tuple[ServiceKey, ...]:
        key = (record.namespace, record.name)
        old = self._slices.get(key)
        if old == record:
            return ()
        touched = self._remove_slice(key) if old is not None else ()
        self._slices[key] = record
        if record.service is None:
            return touched
        self._slices_of.setdefault(record.service, {})[record.name] = record
        return (*touched, record.service)

    def _remove_slice(self, key: tuple[str, str]) -> tuple[ServiceKey, ...]:
        old = self._slices.pop(key, None)
        if old is None or old.service is None:
            return ()
        of_service = self._slices_of.get(old.service)
        if of_service is not None:
            of_service.pop(old.name, None)
            if not of_service:
                del self._slices_of[old.service]
        return (old.service,)

    def _exported(self, key: ServiceKey, service: ServiceRecord | None) -> bool:
        """The cluster's `export` policy: does this service reach the registry?"""
        if self.config.export == "service_export":
            return key in self._exports
        if self.config.export == "labeled":
            return service is not None and service.labeled
        return True

    def _data(self, key: ServiceKey) -> ServiceData | None:
        service = self._services.get(key)
        slices = self._slices_of.get(key)
        imported = self._imports.get(key)
        if (service is None and not slices) or not self._exported(key, service):
            if imported is None:
                return None
            return ServiceData(ports=imported.ports, imported=imported.imported, service=False)
        data = objects.merge(service, list(slices.values()) if slices else [],
                             max_endpoints=self.limits.max_endpoints_per_service,
                             skipped=self._store.skipped, cluster=self.name)
        export = self._exports.get(key)
        found = policy(
            (service.annotations if service is not None else None) or NO_ANNOTATIONS,
            export.annotations if export is not None else NO_ANNOTATIONS,
            origin=f"{self.source} " + ("ServiceExport" if export is not None
                                        and export.annotations else "Service")
            + f" {key[0]}/{key[1]}")
        if found is None and imported is None:
            return data
        return dataclasses.replace(data, policy=found,
                                   imported=imported.imported if imported else None)

    def _keys(self) -> set[ServiceKey]:
        return self._services.keys() | self._slices_of.keys() | self._imports.keys()

    def _refresh(self, key: ServiceKey) -> None:
        if self._stopped or not (self._published or (
                self._publishing is not None and key in self._publishing)):
            return
        data = self._data(key)
        if data is None:
            self._store.delete(self.source, key)
        else:
            self._store.set(self.source, key, data)

    async def _publish_in_steps(self) -> None:
        """Write every service of the synced cluster to the store, `PUBLISH_STEP` at a
        time, giving the loop back between steps: each write prepares the service's
        answers (about 0.5 ms for 5 endpoints), and 20,000 of them in one call held the
        loop, and every DNS answer, for seconds. Changes arriving meanwhile refresh the
        services already written; the others are written as they are when their turn
        comes. The cluster is SYNCED (ready) once all are in."""
        done: set[ServiceKey] = set()
        self._publishing = done
        try:
            keys = self._keys()
            for key in set(self._store.keys_of(self.source)) - keys:
                self._store.delete(self.source, key)
            while keys:
                for i, key in enumerate(keys):
                    if i % PUBLISH_STEP == PUBLISH_STEP - 1:
                        # What was just prepared lives until it changes: out of the full
                        # collections' reach, which grow with the registry (2 s at 100k
                        # endpoints) and would otherwise run several times in the sync.
                        gc.freeze()
                        self.publish_steps += 1
                        await asyncio.sleep(0)
                    done.add(key)
                    data = self._data(key)
                    if data is not None:
                        self._store.set(self.source, key, data)
                # Services that appeared meanwhile.
                keys = self._keys() - done
            gc.freeze()
            self._published = True
            if self.istio is not None:
                self.istio.publish()
        finally:
            if self._publisher is asyncio.current_task():
                self._publisher = None
                self._publishing = None
        self._update_state()

    def _drop(self) -> None:
        """Remove what this cluster wrote (its Istio hosts too); nothing more until synced."""
        if self._publisher is not None:
            self._publisher.cancel()
            self._publisher = self._publishing = None
        self._store.drop_source(self.source)
        if self.istio is not None:
            self.istio.drop()
        self._published = False

    # --- state ----------------------------------------------------------------------

    def _update_state(self) -> None:
        if self._stopped:
            return
        failing = bool(self._credentials_error) or any(
            not w.healthy and w.errors for w in self.watches)
        # Listed, and what the lists brought applied (a big object may still be queued).
        all_listed = bool(self.watches) and all(w.listed for w in self.watches) \
            and not self._queue
        if failing:
            new = ClusterState.STALE if self._published else ClusterState.FAILED
        elif all_listed:
            new = ClusterState.SYNCED
        else:
            new = ClusterState.SYNCING
        if new is ClusterState.SYNCED and not self._published:
            if self._publisher is None:
                self._publisher = asyncio.create_task(self._publish_in_steps(),
                                                      name=f"k8s publish {self.name}")
            new = ClusterState.SYNCING
        if new is ClusterState.STALE and self._expiry is None:
            self.stale_since = self._timing.clock()
            self._expiry = asyncio.create_task(self._expire(), name=f"k8s stale {self.name}")
        if new is not ClusterState.STALE and self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
            self.stale_since = None
        if new is self.state:
            return
        old, self.state = self.state, new
        if new is ClusterState.SYNCED:
            self.synced_once = True
            self.last_sync = self._timing.wall()
        log.log(logging.WARNING if new in (ClusterState.STALE, ClusterState.FAILED)
                else logging.INFO, "k8s %s: %s → %s%s", self.name, old, new,
                f" ({self.last_error})" if new is not ClusterState.SYNCED else "")
        if self._on_change is not None:
            self._on_change(self)

    async def _expire(self) -> None:
        await self._timing.sleep(self.config.stale_for)
        self._expiry = None
        if self.state is ClusterState.STALE and not self._stopped:
            log.warning("k8s %s: unreachable for %gs (stale_for): dropping its endpoints",
                        self.name, self.config.stale_for)
            self._drop()
            for watch in self.watches:
                if not watch.healthy:
                    # Come back with a fresh list, not by resuming: the recovery then
                    # publishes current data, never what was held before the outage.
                    watch.resource_version = ""
            self._update_state()

    # --- status ---------------------------------------------------------------------

    @property
    def events(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for watch in self.watches:
            total.update(watch.events)
        return total

    @property
    def relists(self) -> int:
        return sum(w.relists for w in self.watches)

    @property
    def errors(self) -> int:
        return self._credentials_errors + sum(w.errors for w in self.watches)

    @property
    def errors_by_kind(self) -> Counter[str]:
        total: Counter[str] = Counter()
        if self._credentials_errors:
            total["credentials"] = self._credentials_errors
        for watch in self.watches:
            total.update(watch.error_kinds)
        return total

    @property
    def last_error(self) -> str:
        if self._credentials_error:
            return self._credentials_error
        failing = [w for w in self.watches if not w.healthy and w.errors]
        return failing[0].last_error if failing else ""

    def status(self) -> dict[str, Any]:
        return {
            "cluster": self.name,
            "source": self.source,
            "origin": self.origin,
            "server": self.server,
            "locality": str(self.config.locality),
            "state": str(self.state),
            "synced_once": self.synced_once,
            "last_sync": self.last_sync,
            "events": dict(self.events),
            "relists": self.relists,
            "errors": self.errors,
            "errors_by_kind": dict(self.errors_by_kind),
            "last_error": self.last_error,
            "services": len(self._services.keys() | self._slices_of.keys()),
            "endpoints": sum(len(s.endpoints) for s in self._slices.values()),
            "watches": [{"name": w.name, "listed": w.listed, "healthy": w.healthy,
                         "resource_version": w.resource_version} for w in self.watches],
            **({"istio": self.istio.status()} if self.istio is not None else {}),
        }
