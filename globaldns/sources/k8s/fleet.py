"""Every Kubernetes source of the registry: configured clusters and remote-secret ones.

`KubernetesSources` starts one `ClusterSource` per watched `clusters` entry, and, with
`remote_secrets`, watches Istio remote Secrets in one cluster: each data key of such a
Secret is a cluster name and its value a kubeconfig; those clusters come and go with the
Secrets. It answers readiness (`ready`, `synced`) and status, and applies a new config
keeping the watches of unchanged clusters running.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from globaldns.config.model import ClusterConfig, Config, RemoteSecretsConfig
from globaldns.registry.store import Store
from globaldns.sources.k8s import credentials, objects
from globaldns.sources.k8s.api import SECRETS, ApiClient, describe
from globaldns.sources.k8s.cluster import ClusterSource, ClusterState, CredentialsLoader
from globaldns.sources.k8s.objects import EventType, RemoteCluster
from globaldns.sources.k8s.watch import Timing, Watch

if TYPE_CHECKING:
    from globaldns.sources.healthcheck import HealthChecker

log = logging.getLogger("globaldns.k8s")


def credentials_loader(cluster: ClusterConfig) -> CredentialsLoader:
    """How to load the credentials of a configured cluster."""
    if cluster.kubeconfig:
        return lambda: credentials.from_kubeconfig_file(cluster.kubeconfig,
                                                        context=cluster.context)
    if cluster.in_cluster:
        return credentials.in_cluster
    raise ValueError(f"cluster {cluster.name} has neither kubeconfig nor in_cluster")


class KubernetesSources:
    """All watched clusters of a config, writing into one store."""

    def __init__(self, config: Config, store: Store, *,
                 on_sync_change: Callable[[], None] | None = None,
                 timing: Timing | None = None,
                 health: HealthChecker | None = None) -> None:
        self._config = config
        self._health = health
        """Runs the WorkloadGroup probes of `istio: true` clusters."""
        self._store = store
        self._on_sync_change = on_sync_change
        self._timing = timing or Timing()
        self._static: dict[str, ClusterSource] = {}
        self._discovery: _Discovery | None = None
        self._started_at: float | None = None
        self._timeout_task: asyncio.Task[None] | None = None
        self._last_flags: tuple[bool, bool] = (False, False)
        self._background: set[asyncio.Task[None]] = set()
        self.rejected: Counter[credentials.Rejection] = Counter()
        """Remote Secrets' kubeconfigs rejected, by reason, since start."""

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- lifetime -------------------------------------------------------------------

    async def start(self) -> None:
        self._started_at = self._timing.clock()
        self._timeout_task = asyncio.create_task(self._sync_deadline(),
                                                 name="k8s sync_timeout")
        await self.apply(self._config)
        self._notify(force=True)  # the DNS layer learns "not synced" before any query

    async def stop(self) -> None:
        """Stop every watch. What the clusters wrote stays in the store."""
        if self._timeout_task is not None:
            self._timeout_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timeout_task
        stopping = [source.stop(drop=False) for source in self._static.values()]
        self._static.clear()
        if self._discovery is not None:
            stopping.append(self._discovery.stop(drop=False))
            self._discovery = None
        await asyncio.gather(*stopping, *self._background)

    async def apply(self, config: Config) -> None:
        """Use `config`: start new clusters, restart changed ones, stop and drop removed
        ones; unchanged clusters keep their watches (and their data) running."""
        self._config = config
        wanted = {c.name: c for c in config.clusters if c.watched}
        stopping = []
        for name, source in list(self._static.items()):
            if wanted.get(name) != source.config:
                removed = name not in wanted
                log.info("k8s %s: %s", name, "removed" if removed else "changed; restarting")
                # Cancelled now, so it writes nothing more; a changed cluster keeps its
                # data until its new watch relists over it.
                source.cancel(drop=removed)
                stopping.append(source.stop(drop=False))
                del self._static[name]
        for name, cluster in wanted.items():
            if name not in self._static:
                source = ClusterSource(cluster, self._store,
                                       load_credentials=credentials_loader(cluster),
                                       timing=self._timing, limits=config.limits,
                                       on_change=self._changed, health=self._health)
                self._static[name] = source
                source.start()
        for source in self.clusters():
            source.limits = config.limits
            if source.istio is not None:
                source.istio.limits = config.limits
            for watch in source.watches:
                watch.limits = config.limits
        stopping.extend(self._apply_discovery(config))
        await asyncio.gather(*stopping)
        self._notify()

    def _apply_discovery(self, config: Config) -> list[Any]:
        rs = config.remote_secrets
        host = config.cluster(rs.cluster) if rs is not None else None
        old = self._discovery
        if old is not None and rs == old.settings and host == old.host:
            old.reconcile(config)
            return []
        stopping = []
        kept: dict[str, tuple[RemoteCluster, ClusterSource]] = {}
        if old is not None:
            self._discovery = None
            kept = old.detach()
            stopping.append(old.stop(drop=False))
            if rs is not None and rs.allow_insecure != old.settings.allow_insecure:
                # Every kubeconfig is judged again under the new setting; until its new
                # source relists, a cluster keeps its data.
                for _, source in kept.values():
                    source.cancel(drop=False)
                    stopping.append(source.stop(drop=False))
                kept = {}
        if rs is None:
            for _, source in kept.values():
                stopping.append(source.stop(drop=True))
            return stopping
        if host is None or not host.watched:
            log.error("k8s remote_secrets: cluster %s is not a watched cluster "
                      "(it needs kubeconfig or in_cluster); no discovery", rs.cluster)
            for _, source in kept.values():
                stopping.append(source.stop(drop=True))
            return stopping
        self._discovery = _Discovery(self, rs, host, kept)
        self._discovery.start()
        return stopping

    async def _sync_deadline(self) -> None:
        await self._timing.sleep(self._config.sync_timeout)
        if not self.synced:
            log.warning("k8s: sync_timeout (%gs) passed before every cluster synced: %s",
                        self._config.sync_timeout,
                        ", ".join(f"{s.name} {s.state}" for s in self.clusters()
                                  if not s.synced_once) or "secrets not listed")
        self._notify()

    # --- readiness and status -------------------------------------------------------

    def clusters(self) -> list[ClusterSource]:
        found = list(self._static.values())
        if self._discovery is not None:
            found.extend(self._discovery.sources())
        return sorted(found, key=lambda s: s.name)

    @property
    def synced(self) -> bool:
        """Every cluster has finished its first list (and the remote Secrets, if any)."""
        if self._started_at is None:
            return False
        if self._discovery is not None and not self._discovery.watch_listed:
            return False
        return all(source.synced_once for source in self.clusters())

    @property
    def ready(self) -> bool:
        """Synced, or `sync_timeout` has passed since start."""
        if self._started_at is None:
            return False
        if self.synced:
            return True
        return self._timing.clock() - self._started_at >= self._config.sync_timeout

    def status(self) -> list[dict[str, Any]]:
        """One dict per cluster (see ClusterSource.status)."""
        return [source.status() for source in self.clusters()]

    def discovery_status(self) -> dict[str, Any] | None:
        """The remote Secrets watch, when configured."""
        return self._discovery.status() if self._discovery is not None else None

    def _rejected(self, reason: credentials.Rejection) -> None:
        self.rejected[reason] += 1

    def _changed(self, source: ClusterSource) -> None:
        self._notify(force=True)

    def _notify(self, *, force: bool = False) -> None:
        flags = (self.synced, self.ready)
        if (force or flags != self._last_flags) and self._on_sync_change is not None:
            try:
                self._on_sync_change()
            except Exception:
                log.exception("k8s: on_sync_change callback failed")
        self._last_flags = flags


class _Discovery:
    """Istio remote Secrets in one namespace of one cluster → clusters to watch."""

    def __init__(self, owner: KubernetesSources, settings: RemoteSecretsConfig,
                 host: ClusterConfig,
                 kept: dict[str, tuple[RemoteCluster, ClusterSource]]) -> None:
        self.owner = owner
        self.settings = settings
        self.host = host
        self._secrets: dict[tuple[str, str], list[RemoteCluster]] = {}
        self._running = kept
        """Cluster name → (what the Secret said, its running source)."""
        self._warned: set[tuple[str, str]] = set()
        self._load = credentials_loader(host)
        self._api: ApiClient | None = None
        self._task: asyncio.Task[None] | None = None
        self.watch: Watch | None = None
        self._listed = False

    @property
    def watch_listed(self) -> bool:
        return self._listed

    def sources(self) -> list[ClusterSource]:
        return [source for _, source in self._running.values()]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="k8s remote secrets")

    def detach(self) -> dict[str, tuple[RemoteCluster, ClusterSource]]:
        """Hand the running clusters to the next discovery (config reload)."""
        running, self._running = self._running, {}
        return running

    async def stop(self, *, drop: bool) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._api is not None:
            await self._api.close()
        await asyncio.gather(*(s.stop(drop=drop) for s in self.sources()))
        self._running = {}

    async def _run(self) -> None:
        timing = self.owner._timing
        attempt = 0
        while True:
            try:
                creds = await asyncio.to_thread(self._load)
                break
            except Exception as exc:
                delay = timing.backoff(attempt)
                attempt += 1
                log.error("k8s remote_secrets: credentials of %s: %s; retrying in %.1fs",
                          self.host.name, describe(exc), delay)
                await timing.sleep(delay)
        self._api = ApiClient(creds)
        self.watch = Watch(self._api, SECRETS, self, cluster=self.host.name,
                           namespace=self.settings.namespace,
                           label_selector=self.settings.label,
                           idle_timeout=self.host.watch_idle_timeout, timing=timing,
                           limits=self.owner._config.limits,
                           skipped=self.owner._store.skipped)
        await self.watch.run()

    # The watch's sink.

    def listed(self, watch: Watch, items: list[dict[str, Any]]) -> None:
        self._listed = True
        self._secrets = {}
        for raw in items:
            self._put(raw)
        self.reconcile(self.owner._config)

    def event(self, watch: Watch, kind: EventType, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            with contextlib.suppress(objects.ConversionError):
                self._secrets.pop(objects.object_key(obj), None)
        else:
            self._put(obj)
        self.reconcile(self.owner._config)

    def changed(self, watch: Watch) -> None:
        self.owner._notify()

    async def failed(self, watch: Watch, error: Exception) -> None:
        return None

    def _put(self, raw: dict[str, Any]) -> None:
        try:
            key = objects.object_key(raw)
            self._secrets[key] = objects.remote_secret(
                raw, skipped=self.owner._store.skipped)  # type: ignore[arg-type]
        except (objects.ConversionError, KeyError, TypeError, AttributeError) as exc:
            log.warning("k8s remote_secrets: unusable Secret skipped: %r", exc)

    def _desired(self, config: Config) -> dict[str, tuple[RemoteCluster, ClusterConfig]]:
        desired: dict[str, tuple[RemoteCluster, ClusterConfig]] = {}
        for secret_key in sorted(self._secrets):
            for remote in self._secrets[secret_key]:
                entry = config.cluster(remote.name)
                if entry is not None and entry.watched:
                    self._warn_once(remote, f"cluster {remote.name} of Secret "
                                    f"{'/'.join(secret_key)} is also configured with its own "
                                    "credentials; the configured one is used")
                    continue
                if remote.name in desired:
                    self._warn_once(remote, f"cluster {remote.name} is named by two Secrets; "
                                    f"{'/'.join(desired[remote.name][0].secret)} is used")
                    continue
                if entry is None:
                    entry = ClusterConfig(name=remote.name, locality=remote.locality)
                elif not str(entry.locality):
                    entry = dataclasses.replace(entry, locality=remote.locality)
                desired[remote.name] = (remote, entry)
        return desired

    def _warn_once(self, remote: RemoteCluster, text: str) -> None:
        if (remote.name, text) not in self._warned:
            self._warned.add((remote.name, text))
            log.warning("k8s remote_secrets: %s", text)

    def reconcile(self, config: Config) -> None:
        """Start, restart and stop clusters so they match the Secrets (and config)."""
        if not self._listed:
            return  # keep what an earlier discovery started until our first list
        desired = self._desired(config)
        for name, (remote, source) in list(self._running.items()):
            want = desired.get(name)
            if want is not None and want[0].kubeconfig == remote.kubeconfig \
                    and want[1] == source.config:
                continue
            log.info("k8s remote_secrets: cluster %s %s", name,
                     "removed" if want is None else "changed; restarting")
            # Synchronous cancel: the old source writes nothing more; a changed one keeps
            # its data until the new watch relists over it.
            source.cancel(drop=want is None)
            self.owner._spawn(source.stop(drop=False))
            del self._running[name]
        for name, (remote, cluster) in desired.items():
            if name in self._running:
                continue
            origin = f"secret {'/'.join(remote.secret)}"
            source = ClusterSource(
                cluster, self.owner._store,
                load_credentials=functools.partial(
                    credentials.from_kubeconfig_text, remote.kubeconfig,
                    origin=f"{origin} key {name}",
                    allow_insecure=self.settings.allow_insecure),
                timing=self.owner._timing, origin=origin, limits=config.limits,
                on_change=self.owner._changed, on_rejected=self.owner._rejected)
            self._running[name] = (remote, source)
            log.info("k8s remote_secrets: cluster %s from %s", name, origin)
            source.start()
        self.owner._notify(force=True)

    def status(self) -> dict[str, Any]:
        watch = self.watch
        return {
            "cluster": self.host.name,
            "namespace": self.settings.namespace,
            "label": self.settings.label,
            "listed": self.watch_listed,
            "healthy": watch.healthy if watch else False,
            "secrets": len(self._secrets),
            "clusters": sorted(self._running),
            "errors": watch.errors if watch else 0,
            "last_error": watch.last_error if watch else "",
            "rejected": {str(r): self.owner.rejected[r] for r in credentials.Rejection},
        }


__all__ = ["ClusterState", "KubernetesSources", "credentials_loader"]
