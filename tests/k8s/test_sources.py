"""Watches of emulated clusters into the store: sync, every fault, remote Secrets, reload.

Each test runs two or three emulated API servers on 127.0.0.1 and asserts on the store.
Backoff, stale_for and sync_timeout run on FastTime (50 times faster); idle timeouts are real.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from globaldns.config.model import ClusterConfig, Config, RemoteSecretsConfig
from globaldns.registry.model import Locality, Port
from globaldns.registry.store import Store
from globaldns.sources.k8s.cluster import ClusterState
from globaldns.sources.k8s.fleet import KubernetesSources
from globaldns.sources.k8s.watch import BACKOFF_CAP, Timing
from tests.helpers.k8s import FastTime, cluster_config
from tests.helpers.wait import eventually
from tests.k8s import emulator as em
from tests.k8s.expect import held, published

WEB = ("prod", "web")


def populate(emulator: em.Emulator, subnet: int, *, services: int = 2) -> None:
    """`web` (2 ready + 1 not ready endpoints) and a few more services."""
    emulator.put(em.service("prod", "web"))
    emulator.put(em.endpoint_slice("prod", "web-abc", "web", endpoints=[
        em.endpoint(f"10.{subnet}.0.1", zone=f"z{subnet}a"),
        em.endpoint(f"10.{subnet}.0.2", zone=f"z{subnet}b"),
        em.endpoint(f"10.{subnet}.0.3", ready=False)]))
    for i in range(services):
        emulator.put(em.service("prod", f"svc{i}"))
        emulator.put(em.endpoint_slice("prod", f"svc{i}-x", f"svc{i}",
                                       endpoints=[em.endpoint(f"10.{subnet}.1.{i}")]))


class Harness:
    def __init__(self, store: Store, fast: FastTime) -> None:
        self.store = store
        self.fast = fast
        self.sources: list[KubernetesSources] = []
        self.notified = 0

    async def start(self, config: Config) -> KubernetesSources:
        def notify() -> None:
            self.notified += 1
        sources = KubernetesSources(config, self.store, on_sync_change=notify,
                                    timing=self.fast.timing)
        self.sources.append(sources)
        await sources.start()
        return sources


@pytest.fixture
async def harness(fast: FastTime) -> AsyncIterator[Harness]:
    h = Harness(Store(), fast)
    yield h
    for sources in h.sources:
        await sources.stop()


def state(sources: KubernetesSources, name: str) -> str:
    return next(s["state"] for s in sources.status() if s["cluster"] == name)


def cluster(sources: KubernetesSources, name: str) -> Any:
    return next(s for s in sources.clusters() if s.name == name)


async def watching(sources: KubernetesSources, *emulators: em.Emulator) -> None:
    """Synced, and every watch is open on its emulator (so faults hit open streams)."""
    await eventually(lambda: sources.synced, what="synced")
    for e in emulators:
        await eventually(lambda e=e: e.open_watches == len(cluster(sources, e.name).watches),
                         what=f"watches open on {e.name}")


def matches(store: Store, emulator: em.Emulator, **kw: Any) -> Callable[[], bool]:
    return lambda: published(store, f"k8s/{emulator.name}") == held(emulator, **kw)


async def test_three_clusters_sync_into_one_merged_service(
        emulators: Any, harness: Harness, tmp_path: Path) -> None:
    a, b, c = await emulators("a", "b", "c")
    for i, e in enumerate((a, b, c)):
        populate(e, i + 1)
    sources = await harness.start(Config(
        clusters=tuple(cluster_config(e, tmp_path) for e in (a, b, c))))
    assert not sources.synced
    await eventually(lambda: sources.synced, what="all synced")
    assert sources.ready and harness.notified >= 1
    merged = harness.store.get(WEB)
    assert merged is not None and merged.sources == ("k8s/a", "k8s/b", "k8s/c")
    assert sorted(e.address for e in merged.endpoints) == sorted(
        f"10.{n}.0.{i}" for n in (1, 2, 3) for i in (1, 2, 3))
    first = next(e for e in merged.endpoints if e.address == "10.1.0.1")
    assert (first.cluster, first.locality) == ("a", Locality("region-a", "z1a"))
    assert merged.ports == (Port("http", 80, "tcp"),)
    for e in (a, b, c):
        assert published(harness.store, f"k8s/{e.name}") == held(e)
    status = {s["cluster"]: s for s in sources.status()}
    assert status["a"]["state"] == "synced" and status["a"]["last_sync"] is not None
    assert status["a"]["services"] == 3 and status["a"]["endpoints"] == 5


async def test_events_update_one_service_and_deletes_remove_it(
        emulators: Any, harness: Harness, tmp_path: Path) -> None:
    a, b = await emulators("a", "b")
    populate(a, 1)
    populate(b, 2)
    sources = await harness.start(Config(clusters=(cluster_config(a, tmp_path),
                                                   cluster_config(b, tmp_path))))
    await eventually(lambda: sources.synced)
    changed: list[tuple[str, str]] = []
    harness.store.subscribe(changed.append)
    a.put(em.endpoint_slice("prod", "web-abc", "web", endpoints=[em.endpoint("10.1.9.9")]))
    await eventually(matches(harness.store, a))
    assert changed == [WEB]  # one event touches one service
    a.delete("endpointslices", "prod", "svc0-x")
    a.delete("services", "prod", "svc0")
    await eventually(lambda: ("prod", "svc0") not in harness.store.keys_of("k8s/a"))
    assert published(harness.store, "k8s/b") == held(b)


async def test_a_service_without_slices_exists_and_external_name_is_kept(
        emulators: Any, harness: Harness, tmp_path: Path) -> None:
    (a,) = await emulators("a")
    a.put(em.service("prod", "lonely", headless=True))
    a.put(em.service("prod", "db", type="ExternalName", external_name="db.example.com"))
    sources = await harness.start(Config(clusters=(cluster_config(a, tmp_path),)))
    await eventually(lambda: sources.synced)
    lonely = harness.store.raw(("prod", "lonely"))["k8s/a"]
    assert lonely.endpoints == () and lonely.ports == (Port("http", 80, "tcp"),)
    assert harness.store.raw(("prod", "db"))["k8s/a"].external_name == "db.example.com"


async def test_nothing_is_published_before_every_watch_has_listed(
        emulators: Any, harness: Harness, tmp_path: Path) -> None:
    (a,) = await emulators("a")
    populate(a, 1)
    a.fail(500, count=None, plurals=["endpointslices"])
    sources = await harness.start(Config(clusters=(cluster_config(a, tmp_path),)))
    await eventually(lambda: state(sources, "a") == "failed"
                     and cluster(sources, "a").errors >= 2)
    # Services are listed, slices are not: publishing now would answer NODATA.
    assert harness.store.keys_of("k8s/a") == ()
    assert not sources.synced
    a.clear_faults()
    await eventually(lambda: sources.synced and matches(harness.store, a)())


async def test_410_on_resume_relists_and_reconciles_deletions(
        emulators: Any, harness: Harness, tmp_path: Path) -> None:
    a, b = await emulators("a", "b")
    populate(a, 1, services=4)
    populate(b, 2)
    sources = await harness.start(Config(clusters=(cluster_config(a, tmp_path),
                                                   cluster_config(b, tmp_path))))
    await watching(sources, a)
    a.freeze_watches()  # the client misses what follows...
    a.delete("endpointslices", "prod", "svc1-x")
    a.delete("services", "prod", "svc1")
    a.delete("endpointslices", "prod", "svc2-x")  # svc2: Service stays, no endpoints
    a.put(em.service("prod", "fresh"))
    a.compact()  # ...and its resourceVersion is compacted away
    a.drop_watches()
    await eventually(matches(harness.store, a), what="relist reconciled")
    assert ("prod", "svc1") not in harness.store.keys_of("k8s/a")
    assert harness.store.raw(("prod", "svc2"))["k8s/a"].endpoints == ()
    assert cluster(sources, "a").relists >= 2  # both the slices and the services watch
    assert published(harness.store, "k8s/b") == held(b)
    assert state(sources, "a") == "synced"


async def test_a_dropped_stream_resumes_from_the_last_resource_version(
        emulators: Any, harness: Harness, tmp_path: Path) -> None:
    a, b = await emulators("a", "b")
    populate(a, 1)
    populate(b, 2)
    sources = await harness.start(Config(clusters=(cluster_config(a, tmp_path),
                                                   cluster_config(b, tmp_path))))
    await watching(sources, a)
    last = a.put(em.endpoint_slice("prod", "web-abc", "web",
                                   endpoints=[em.endpoint("10.1.5.5")]))
    await eventually(matches(harness.store, a))
    opens, before = a.watch_opens, len(a.requests)
    a.drop_watches()
    a.put(em.endpoint_slice("prod", "web-abc", "web", endpoints=[em.endpoint("10.1.6.6")]))
    await eventually(matches(harness.store, a), what="change made while disconnected")
    assert a.watch_opens > opens
    resumed = [q for path, q in a.requests[before:] if q.get("watch") == "1"
               and path.endswith("endpointslices")]
    assert resumed and resumed[0]["resourceVersion"] == last["metadata"]["resourceVersion"]
    assert cluster(sources, "a").relists == 0  # resumed, not relisted
    assert cluster(sources, "a").errors_by_kind["connection"] >= 1


def test_backoff_is_exponential_with_jitter_and_capped_at_30s() -> None:
    import random
    timing = Timing(rng=random.Random(1))
    for attempt in range(12):
        ceiling = min(BACKOFF_CAP, 0.8 * 2 ** attempt)
        for _ in range(20):
            assert ceiling / 2 <= timing.backoff(attempt) <= ceiling
    assert len({timing.backoff(3) for _ in range(10)}) > 1  # jittered
    assert timing.backoff(100) <= BACKOFF_CAP


async def test_500s_back_off_keep_the_data_stale_and_recover(
        emulators: Any, harness: Harness, tmp_path: Path) -> None:
    a, b = await emulators("a", "b")
    populate(a, 1)
    populate(b, 2)
    sources = await harness.start(Config(clusters=(cluster_config(a, tmp_path),
                                                   cluster_config(b, tmp_path))))
    await watching(sources, a)
    harness.fast.sleeps.clear()
    a.fail(500, count=None)
    a.drop_watches()
    await eventually(lambda: cluster(sources, "a").errors_by_kind["server_error"] >= 8,
                     timeout=10)
    assert state(sources, "a") == "stale" and state(sources, "b") == "synced"
    assert "500" in cluster(sources, "a").last_error
    assert published(harness.store, "k8s/a") == held(a)  # still served
    sleeps = [s for s in harness.fast.sleeps if s != 300.0]  # 300: the stale_for timer
    assert max(sleeps) <= BACKOFF_CAP and max(sleeps) > 4 * min(sleeps)
    a.clear_faults()
    a.put(em.service("prod", "after"))
    await eventually(lambda: state(sources, "a") == "synced" and
                     matches(harness.store, a)(), timeout=10)


async def test_401_and_403_are_reported_retried_and_recover(
        emulators: Any, harness: Harness, tmp_path: Path) -> None:
    a, b, c = await emulators("a", "b", "c")
    for i, e in enumerate((a, b, c)):
        populate(e, i + 1)
    c.fail(403, count=None, plurals=["endpointslices"])  # RBAC missing from the start
    sources = await harness.start(Config(
        clusters=tuple(cluster_config(e, tmp_path) for e in (a, b, c)), sync_timeout=30))
    await eventually(lambda: state(sources, "a") == "synced"
                     and state(sources, "b") == "synced")
    await eventually(lambda: state(sources, "c") == "failed")
    assert not sources.synced
    assert "403" in cluster(sources, "c").last_error
    assert "forbidden" in cluster(sources, "c").status()["errors_by_kind"]
    await eventually(lambda: sources.ready, what="sync_timeout")  # 30 virtual seconds
    assert not sources.synced
    await eventually(lambda: a.open_watches == 2)
    a.fail(401, count=None)
    a.drop_watches()
    await eventually(lambda: cluster(sources, "a").errors_by_kind["unauthorized"] >= 2)
    assert state(sources, "a") == "stale"
    assert "401" in cluster(sources, "a").status()["last_error"]
    assert published(harness.store, "k8s/a") == held(a)
    a.clear_faults()
    c.clear_faults()
    await eventually(lambda: sources.synced, timeout=10)
    assert published(harness.store, "k8s/c") == held(c)


async def test_a_rotated_token_is_loaded_again_after_401(
        emulators: Any, harness: Harness, tmp_path: Path) -> None:
    (a,) = await emulators("a")
    populate(a, 1)
    config = cluster_config(a, tmp_path)
    sources = await harness.start(Config(clusters=(config,)))
    await watching(sources, a)
    a.token = "rotated"
    a.write_kubeconfig(config.kubeconfig)
    a.drop_watches()
    await eventually(lambda: cluster(sources, "a").errors_by_kind["unauthorized"] >= 1)
    a.put(em.service("prod", "after-rotation"))
    await eventually(lambda: state(sources, "a") == "synced" and
                     matches(harness.store, a)(), timeout=10)


async def test_a_silent_watch_is_reopened_after_watch_idle_timeout(
        emulators: Any, harness: Harness, tmp_path: Path) -> None:
    (a,) = await emulators("a")
    populate(a, 1)
    sources = await harness.start(Config(clusters=(
        cluster_config(a, tmp_path, watch_idle_timeout=0.3),)))
    await watching(sources, a)
    a.freeze_watches()  # open, but nothing arrives: a dead NAT entry
    a.put(em.endpoint_slice("prod", "web-abc", "web", endpoints=[em.endpoint("10.1.7.7")]))
    await eventually(matches(harness.store, a), what="change after reopen")
    assert cluster(sources, "a").errors_by_kind["idle_timeout"] >= 1
    assert cluster(sources, "a").relists == 0


async def test_bookmarks_keep_a_quiet_watch_alive(
        emulators: Any, harness: Harness, tmp_path: Path) -> None:
    (a,) = await emulators("a", bookmark_interval=0.05)
    populate(a, 1)
    sources = await harness.start(Config(clusters=(
        cluster_config(a, tmp_path, watch_idle_timeout=0.3),)))
    await watching(sources, a)
    opens = a.watch_opens
    await eventually(lambda: cluster(sources, "a").events["BOOKMARK"] >= 10)
    assert a.watch_opens == opens and cluster(sources, "a").errors == 0


async def test_watches_ended_by_the_server_resume_without_error_or_relist(
        emulators: Any, harness: Harness, tmp_path: Path) -> None:
    (a,) = await emulators("a")
    populate(a, 1)
    a.watch_timeout = 0.1
    sources = await harness.start(Config(clusters=(cluster_config(a, tmp_path),)))
    await watching(sources, a)
    for i in range(5):
        a.put(em.service("prod", f"later{i}"))
        await eventually(matches(harness.store, a))
    await eventually(lambda: a.watch_opens >= 8)
    source = cluster(sources, "a")
    assert (source.errors, source.relists, source.state) == (0, 0, "synced")
    watches = [q for _, q in a.requests if q.get("watch") == "1"]
    assert all(300 <= int(q["timeoutSeconds"]) <= 600 for q in watches)


async def test_unreachable_cluster_is_stale_then_dropped_then_reconciled(
        emulators: Any, harness: Harness, tmp_path: Path) -> None:
    a, b = await emulators("a", "b")
    populate(a, 1, services=3)
    populate(b, 2)
    stale_for = 60.0  # virtual seconds: 1.2 s
    sources = await harness.start(Config(clusters=(
        cluster_config(a, tmp_path, stale_for=stale_for), cluster_config(b, tmp_path))))
    await watching(sources, a)
    await a.stop()
    await eventually(lambda: state(sources, "a") == "stale")
    stale_at = harness.fast.clock()
    assert published(harness.store, "k8s/a") == held(a)  # last endpoints still served
    a.delete("services", "prod", "svc0")  # changes while it is unreachable
    a.delete("endpointslices", "prod", "svc0-x")
    a.put(em.service("prod", "born-while-away"))
    a.compact()
    await eventually(lambda: state(sources, "a") == "failed", timeout=10)
    assert harness.fast.clock() - stale_at >= stale_for * 0.9
    assert harness.store.keys_of("k8s/a") == ()
    assert published(harness.store, "k8s/b") == held(b)
    merged = harness.store.get(WEB)
    assert merged is not None and {e.cluster for e in merged.endpoints} == {"b"}
    lists = a.lists
    await a.restart()
    await eventually(lambda: state(sources, "a") == "synced", timeout=10)
    # Dropped data is relisted, never resumed: what is published is already current.
    assert published(harness.store, "k8s/a") == held(a)
    assert a.lists == lists + 2


async def test_namespaces_and_label_selector_limit_what_is_watched(
        emulators: Any, harness: Harness, tmp_path: Path) -> None:
    (a,) = await emulators("a")
    for ns in ("prod", "dev", "staging"):
        for team in ("x", "y"):
            a.put(em.service(ns, f"s-{team}", labels={"team": team}))
            a.put(em.endpoint_slice(ns, f"s-{team}-1", f"s-{team}", labels={"team": team},
                                    endpoints=[em.endpoint(f"10.{len(ns)}.0.{ord(team)}")]))
    scope: dict[str, Any] = {"namespaces": ("prod", "staging"), "label_selector": "team=x"}
    sources = await harness.start(Config(clusters=(
        cluster_config(a, tmp_path, **scope),)))
    await eventually(lambda: sources.synced)
    assert sorted(harness.store.keys_of("k8s/a")) == [("prod", "s-x"), ("staging", "s-x")]
    assert len(cluster(sources, "a").watches) == 4  # 2 resources, 2 namespaces each
    # A slice relabelled out of the selector is a DELETED event for us.
    a.put(em.endpoint_slice("prod", "s-x-1", "s-x", labels={"team": "y"},
                            endpoints=[em.endpoint("10.4.0.1")]))
    a.put(em.service("dev", "s-z", labels={"team": "x"}))
    await eventually(matches(harness.store, a, **scope))
    assert harness.store.raw(("prod", "s-x"))["k8s/a"].endpoints == ()


async def test_remote_secrets_add_change_and_delete_clusters(
        emulators: Any, harness: Harness, tmp_path: Path) -> None:
    hub, east, west = await emulators("hub", "east", "west")
    populate(east, 1)
    populate(west, 2)
    label = {"istio/multiCluster": "true"}
    hub.put(em.secret("istio-system", "remote-1",
                      {"east": east.kubeconfig_text(), "west": west.kubeconfig_text()},
                      labels=label, annotations={"globaldns.io/locality": "eu-west1"}))
    hub.put(em.secret("istio-system", "unrelated", {"nope": "x"}))  # no label: ignored
    config = Config(
        clusters=(cluster_config(hub, tmp_path),
                  ClusterConfig(name="east", locality=Locality("us-east1"))),
        remote_secrets=RemoteSecretsConfig(cluster="hub", allow_insecure=True))
    sources = await harness.start(config)
    await eventually(lambda: sources.synced and len(sources.clusters()) == 3)
    localities = {e.cluster: e.locality.region for e in harness.store.get(WEB).endpoints}
    # east: from its `clusters` entry; west: from the Secret's annotation.
    assert localities == {"east": "us-east1", "west": "eu-west1"}
    assert cluster(sources, "west").origin == "secret istio-system/remote-1"
    assert published(harness.store, "k8s/west") == held(west)
    assert sources.discovery_status()["clusters"] == ["east", "west"]
    # Change: west leaves the Secret, east's kubeconfig changes (a new token).
    east.token = "second"
    hub.put(em.secret("istio-system", "remote-1", {"east": east.kubeconfig_text()},
                      labels=label))
    await eventually(lambda: harness.store.keys_of("k8s/west") == ()
                     and [s.name for s in sources.clusters()] == ["east", "hub"])
    east.put(em.service("prod", "after-change"))
    await eventually(matches(harness.store, east))
    # A second Secret adds west back; deleting the first removes east.
    hub.put(em.secret("istio-system", "remote-2", {"west": west.kubeconfig_text()},
                      labels=label))
    hub.delete("secrets", "istio-system", "remote-1")
    await eventually(lambda: harness.store.keys_of("k8s/east") == ()
                     and matches(harness.store, west)())
    assert [s.name for s in sources.clusters()] == ["hub", "west"]
    assert cluster(sources, "west").config.locality == Locality()  # no annotation now


async def test_apply_keeps_unchanged_watches_and_changes_the_rest(
        emulators: Any, harness: Harness, tmp_path: Path) -> None:
    a, b, c, d = await emulators("a", "b", "c", "d")
    for i, e in enumerate((a, b, c, d)):
        populate(e, i + 1)
    ca, cb, cc, cd = (cluster_config(e, tmp_path) for e in (a, b, c, d))
    sources = await harness.start(Config(clusters=(ca, cb, cc)))
    await watching(sources, b)
    opens_b = b.watch_opens
    source_b = cluster(sources, "b")
    cc2 = dataclasses.replace(cc, locality=Locality("moved"))
    await sources.apply(Config(clusters=(cb, cc2, cd)))
    await eventually(lambda: sources.synced and harness.store.keys_of("k8s/a") == ())
    assert cluster(sources, "b") is source_b and b.watch_opens == opens_b
    await eventually(lambda: {e.locality.region for e in harness.store.get(WEB).endpoints
                              if e.cluster == "c"} == {"moved"})
    assert published(harness.store, "k8s/d") == held(d)
    assert harness.store.sources() == ["k8s/b", "k8s/c", "k8s/d"]


async def test_credentials_that_cannot_load_leave_the_cluster_failed(
        emulators: Any, harness: Harness, tmp_path: Path) -> None:
    (a,) = await emulators("a")
    populate(a, 1)
    broken = ClusterConfig(name="broken", kubeconfig=str(tmp_path / "missing.kubeconfig"))
    sources = await harness.start(Config(clusters=(cluster_config(a, tmp_path), broken),
                                         sync_timeout=10))
    await eventually(lambda: state(sources, "broken") == "failed")
    assert "missing.kubeconfig" in cluster(sources, "broken").last_error
    await eventually(lambda: state(sources, "a") == "synced")
    assert not sources.synced
    await eventually(lambda: sources.ready)
    assert ClusterState.FAILED == "failed"
