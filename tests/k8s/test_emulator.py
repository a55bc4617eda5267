"""Keep the emulator honest: the official `kubernetes` client lists and watches it.

The official client deserializes into its typed models (and validates required fields),
so what passes here is the wire format real clients accept. Its client is synchronous,
so it runs in a thread while the emulator changes objects on the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from tests.helpers.wait import eventually
from tests.k8s import emulator as em


def official(emulator: em.Emulator, tmp_path: Path) -> kubernetes.client.ApiClient:
    path = emulator.write_kubeconfig(tmp_path / f"{emulator.name}.kubeconfig")
    return kubernetes.config.new_client_from_config(config_file=path, persist_config=False)


@pytest.fixture
async def cluster() -> Any:
    emulator = await em.Emulator("official").start()
    emulator.put(em.service("prod", "web", ports=[("http", 80, "TCP"), ("dns", 53, "UDP")]))
    emulator.put(em.service("prod", "db", type="ExternalName", external_name="db.example.com"))
    for i in range(5):
        emulator.put(em.endpoint_slice(
            "prod", f"web-{i}", "web",
            endpoints=[em.endpoint(f"10.0.0.{i}", zone="z1", hostname=f"h{i}", node="n1"),
                       em.endpoint(f"10.0.1.{i}", ready=False, serving=True,
                                   terminating=True)]))
    emulator.put(em.endpoint_slice("prod", "web-v6", "web", address_type="IPv6",
                                   endpoints=[em.endpoint("fd00::1")]))
    yield emulator
    await emulator.stop()


async def test_official_client_pages_through_endpointslices(cluster: em.Emulator,
                                                             tmp_path: Path) -> None:
    discovery = kubernetes.client.DiscoveryV1Api(official(cluster, tmp_path))

    def list_all() -> tuple[list[Any], list[Any]]:
        items, pages = [], []
        token = None
        while True:
            page = discovery.list_endpoint_slice_for_all_namespaces(limit=2, _continue=token)
            pages.append(page.metadata)
            items.extend(page.items)
            token = page.metadata._continue
            if not token:
                return items, pages

    items, pages = await asyncio.to_thread(list_all)
    assert len(items) == 6 and len(pages) == 3
    assert pages[0].remaining_item_count == 4
    assert {p.resource_version for p in pages} == {str(cluster.rv)}
    web0 = next(s for s in items if s.metadata.name == "web-0")
    assert web0.address_type == "IPv4"
    assert web0.metadata.labels["kubernetes.io/service-name"] == "web"
    first, second = web0.endpoints
    assert (first.addresses, first.zone, first.hostname, first.node_name) == (
        ["10.0.0.0"], "z1", "h0", "n1")
    assert (second.conditions.ready, second.conditions.serving,
            second.conditions.terminating) == (False, True, True)
    assert [(p.name, p.port, p.protocol) for p in web0.ports] == [("http", 8080, "TCP")]


async def test_official_client_lists_services_in_a_namespace(cluster: em.Emulator,
                                                             tmp_path: Path) -> None:
    core = kubernetes.client.CoreV1Api(official(cluster, tmp_path))
    result = await asyncio.to_thread(core.list_namespaced_service, "prod")
    by_name = {s.metadata.name: s for s in result.items}
    assert [(p.name, p.port, p.protocol) for p in by_name["web"].spec.ports] == [
        ("http", 80, "TCP"), ("dns", 53, "UDP")]
    assert by_name["db"].spec.external_name == "db.example.com"
    assert (await asyncio.to_thread(core.list_namespaced_service, "other")).items == []


async def test_official_client_watches_events_and_bookmarks(cluster: em.Emulator,
                                                            tmp_path: Path) -> None:
    discovery = kubernetes.client.DiscoveryV1Api(official(cluster, tmp_path))
    start_rv = str(cluster.rv)
    got: list[tuple[str, str, str]] = []
    done = threading.Event()

    def watch() -> None:
        w = kubernetes.watch.Watch()
        for event in w.stream(discovery.list_endpoint_slice_for_all_namespaces,
                              resource_version=start_rv, allow_watch_bookmarks=True,
                              timeout_seconds=5):
            obj = event["object"]
            if event["type"] == "BOOKMARK":  # left as a dict: bookmarks are partial objects
                got.append(("BOOKMARK", "", obj["metadata"]["resourceVersion"]))
            else:
                got.append((event["type"], obj.metadata.name, obj.metadata.resource_version))
            if len(got) == 4:
                w.stop()
        done.set()

    thread = asyncio.create_task(asyncio.to_thread(watch))
    await eventually(lambda: cluster.open_watches == 1)
    cluster.put(em.endpoint_slice("prod", "web-new", "web", endpoints=[em.endpoint("1.2.3.4")]))
    cluster.put(em.endpoint_slice("prod", "web-new", "web", endpoints=[]))
    cluster.delete("endpointslices", "prod", "web-new")
    cluster.bookmark()
    await thread
    assert [(t, n) for t, n, _ in got] == [("ADDED", "web-new"), ("MODIFIED", "web-new"),
                                           ("DELETED", "web-new"), ("BOOKMARK", "")]
    assert got[-1][2] == str(cluster.rv)


async def test_official_client_sees_410_for_a_compacted_resource_version(
        cluster: em.Emulator, tmp_path: Path) -> None:
    core = kubernetes.client.CoreV1Api(official(cluster, tmp_path))
    old = str(cluster.rv)
    cluster.put(em.service("prod", "later"))
    cluster.compact()

    def watch() -> None:
        for _ in kubernetes.watch.Watch().stream(core.list_service_for_all_namespaces,
                                                 resource_version=old, timeout_seconds=2):
            pass

    with pytest.raises(kubernetes.client.ApiException) as raised:
        await asyncio.to_thread(watch)
    assert raised.value.status == 410


async def test_official_client_gets_the_real_errors(cluster: em.Emulator,
                                                   tmp_path: Path) -> None:
    core = kubernetes.client.CoreV1Api(official(cluster, tmp_path))
    for code in (401, 403, 500):
        cluster.fail(code)
        with pytest.raises(kubernetes.client.ApiException) as raised:
            await asyncio.to_thread(core.list_service_for_all_namespaces)
        assert raised.value.status == code
    cluster.continue_ttl = 0
    first = await asyncio.to_thread(core.list_service_for_all_namespaces, limit=1)
    with pytest.raises(kubernetes.client.ApiException) as raised:
        await asyncio.to_thread(core.list_service_for_all_namespaces, limit=1,
                                _continue=first.metadata._continue)
    assert raised.value.status == 410 and "Expired" in raised.value.body
