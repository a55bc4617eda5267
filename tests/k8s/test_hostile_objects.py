"""Legal but hostile Kubernetes objects, from emulated clusters, asked over real DNS.

Anyone who can create a Service in a watched cluster writes what these tests write: names
that do not fit DNS, addresses that name no endpoint, objects past the limits. What cannot
become a record is skipped and counted (`globaldns_registry_skipped_total{reason}`), and
every other answer stays exactly as it was.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from globaldns.registry.model import Endpoint, ServiceData
from tests.helpers.dns import addresses, ask, rcode
from tests.helpers.http import get, scrape, value
from tests.helpers.k8s import FastTime, answers, dns_eventually, query, timing_for, yaml_for
from tests.helpers.server import Running
from tests.helpers.wait import eventually
from tests.k8s import emulator as em

LONG_PORT = "p" * 63  # legal Kubernetes (a DNS-1123 label); `_` + it is 64 bytes


def skipped(server: Running, reason: str) -> float:
    return value(scrape(server), "globaldns_registry_skipped_total", reason=reason)


def healthy(e: em.Emulator, count: int, *, prefix: str = "svc") -> list[str]:
    """`count` ordinary services in namespace prod, one endpoint each: 10.<n>.0.1."""
    names = []
    for i in range(count):
        name = f"{prefix}{i}"
        e.put(em.service("prod", name))
        e.put(em.endpoint_slice("prod", f"{name}-1", name,
                                endpoints=[em.endpoint(f"10.{i}.0.1")]))
        names.append(name)
    return names


async def all_answer(server: Running, names: list[str]) -> None:
    for i, name in enumerate(names):
        assert await answers(server.port, f"{name}.prod.global") == ("NOERROR", [f"10.{i}.0.1"])


def serve(e: list[em.Emulator], tmp_path: Path, server_factory: Any, fast: FastTime,
          *, extra: str = "", **cluster: str) -> tuple[Running, Path]:
    path = tmp_path / "globaldns.yaml"
    path.write_text(yaml_for(e, tmp_path, **cluster) + "reload: {interval: 0}\n" + extra)
    return server_factory(path.read_text(), config_path=str(path),
                          k8s_timing=timing_for(fast)), path


async def reload(server: Running, path: Path, text: str) -> None:
    path.write_text(text)
    assert await asyncio.to_thread(server.run,
                                   server.app.runtime.reloads.reload(why="test")) is True


async def test_a_63_character_port_name_skips_that_port_and_no_other_answer(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    (a,) = await emulators("a")
    # The hostile service sorts first, so a relist meets it before every other one.
    a.put(em.service("prod", "aaa", ports=[(LONG_PORT, 81, "TCP"), ("http", 80, "TCP")]))
    a.put(em.endpoint_slice("prod", "aaa-1", "aaa", endpoints=[em.endpoint("10.99.0.1")],
                            ports=[(LONG_PORT, 8081, "TCP"), ("http", 8080, "TCP")]))
    names = healthy(a, 5)
    server, path = serve([a], tmp_path, server_factory, fast)
    await eventually(lambda: server.app.runtime.kubernetes.synced)
    await all_answer(server, names)
    assert await answers(server.port, "aaa.prod.global") == ("NOERROR", ["10.99.0.1"])
    srv = await query(server.port, "_http._tcp.aaa.prod.global", "SRV")
    assert rcode(srv) == "NOERROR" and [rr.rdata.port for rr in srv.rr] == [8080]
    assert skipped(server, "bad_port") >= 2  # the Service's port and the slice's
    # A reload rebuilds every name: the hostile one first, then all the others.
    await reload(server, path, path.read_text().replace("ttl: 5", "ttl: 7"))
    await all_answer(server, names)
    # And a watch event carrying it again is applied, then later ones too.
    a.put(em.endpoint_slice("prod", "aaa-1", "aaa", endpoints=[em.endpoint("10.99.0.2")],
                            ports=[(LONG_PORT, 8081, "TCP"), ("http", 8080, "TCP")]))
    a.put(em.endpoint_slice("prod", "svc4-1", "svc4", endpoints=[em.endpoint("10.4.0.9")]))
    await dns_eventually(server.port, "svc4.prod.global", ("NOERROR", ["10.4.0.9"]))
    assert await answers(server.port, "aaa.prod.global") == ("NOERROR", ["10.99.0.2"])
    status, _, page = get(server, "/")
    assert status == 200 and "bad_port" in page


async def test_a_service_that_fails_to_build_leaves_every_other_answer_as_it_was(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    (a,) = await emulators("a")
    names = healthy(a, 5)
    server, path = serve([a], tmp_path, server_factory, fast)
    await eventually(lambda: server.app.runtime.kubernetes.synced)
    await all_answer(server, names)
    # A source writing data no answer can be built from (an address that is none): the
    # store takes it, its answers fail to build.
    broken = ServiceData(endpoints=(Endpoint(address="not-an-address", cluster="a"),))
    await asyncio.to_thread(server.call, server.app.runtime.store.set, "test", ("prod", "aab"),
                            broken)
    await all_answer(server, names)
    assert await answers(server.port, "aab.prod.global") == ("NXDOMAIN", [])
    assert skipped(server, "build_failed") == 1
    await reload(server, path, path.read_text().replace("ttl: 5", "ttl: 7"))
    await all_answer(server, names)
    reply = await query(server.port, "svc0.prod.global")
    assert [rr.ttl for rr in reply.rr] == [7]
    assert skipped(server, "build_failed") == 2


async def test_a_remote_secret_key_that_is_no_dns_label_names_no_cluster(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    hub, east, long = await emulators("hub", "east", "long")
    east.put(em.service("prod", "web"))
    east.put(em.endpoint_slice("prod", "web-1", "web", endpoints=[em.endpoint("10.1.0.1")]))
    long.put(em.service("prod", "web"))
    long.put(em.endpoint_slice("prod", "web-2", "web", endpoints=[em.endpoint("10.2.0.1")]))
    # A Secret key may be 253 characters; a cluster name is one DNS label.
    hub.put(em.secret("istio-system", "remote", {"east": east.kubeconfig_text(),
                                                 "x" * 70: long.kubeconfig_text()},
                      labels={"istio/multiCluster": "true"}))
    text = yaml_for([hub], tmp_path) + "remote_secrets: {cluster: hub, allow_insecure: true}\n"
    server = server_factory(text, k8s_timing=timing_for(fast))
    await eventually(lambda: server.app.runtime.kubernetes.synced and
                     len(server.app.runtime.kubernetes.clusters()) == 2)
    assert [c.name for c in server.app.runtime.kubernetes.clusters()] == ["east", "hub"]
    srv = await query(server.port, "_http._tcp.web.prod.global", "SRV")
    assert rcode(srv) == "NOERROR"
    assert [str(rr.rdata.target) for rr in srv.rr] == ["10-1-0-1.east.web.prod.global."]
    assert await answers(server.port, "web.prod.global") == ("NOERROR", ["10.1.0.1"])
    assert skipped(server, "bad_cluster_name") >= 1


async def test_special_addresses_are_skipped_unless_the_cluster_allows_them(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    a, b = await emulators("a", "b")
    special = ["127.0.0.1", "169.254.169.254", "0.0.0.0", "224.0.0.1", "10.0.0.1"]
    special6 = ["::1", "fe80::1", "::", "ff02::1", "::ffff:127.0.0.1", "fd00::1"]
    for e in (a, b):
        e.put(em.service("prod", "web"))
        e.put(em.endpoint_slice("prod", "web-4", "web",
                                endpoints=[em.endpoint(x) for x in special]))
        e.put(em.endpoint_slice("prod", "web-6", "web", address_type="IPv6",
                                endpoints=[em.endpoint(x) for x in special6]))
    text = yaml_for([a, b], tmp_path).replace(
        "    kubeconfig: " + str(tmp_path / "b.kubeconfig"),
        "    kubeconfig: " + str(tmp_path / "b.kubeconfig") + "\n    allow_special_addresses: true")
    server = server_factory(text, k8s_timing=timing_for(fast))
    await eventually(lambda: server.app.runtime.kubernetes.synced)
    assert await answers(server.port, "a.web.prod.global") == ("NOERROR", ["10.0.0.1"])
    assert await answers(server.port, "b.web.prod.global") == ("NOERROR", sorted(special))
    a6 = await query(server.port, "a.web.prod.global", "AAAA")
    assert sorted(str(rr.rdata) for rr in a6.rr) == ["fd00::1"]
    b6 = await query(server.port, "b.web.prod.global", "AAAA")
    assert len(b6.rr) == len(special6)
    assert skipped(server, "special_address") >= 9


async def test_the_same_address_from_two_clusters_is_one_record_of_the_rrset(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    a, b = await emulators("a", "b")
    for e in (a, b):
        e.put(em.service("prod", "vip"))
        e.put(em.endpoint_slice("prod", "vip-1", "vip", endpoints=[em.endpoint("10.9.9.9")]))
    a.put(em.endpoint_slice("prod", "vip-2", "vip", endpoints=[em.endpoint("10.9.9.8")]))
    server = server_factory(yaml_for([a, b], tmp_path), k8s_timing=timing_for(fast))
    await eventually(lambda: server.app.runtime.kubernetes.synced)
    reply = await query(server.port, "vip.prod.global")
    # RFC 2181 §5: an RRset holds each record once.
    assert sorted(addresses(reply)) == ["10.9.9.8", "10.9.9.9"]
    assert len(reply.rr) == 2
    # Each cluster still names its own endpoint.
    assert await answers(server.port, "b.vip.prod.global") == ("NOERROR", ["10.9.9.9"])


async def test_slices_past_max_endpoints_per_service_are_skipped_and_counted(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    (a,) = await emulators("a")
    names = healthy(a, 3)
    a.put(em.service("prod", "big"))
    a.put(em.endpoint_slice("prod", "big-1", "big",
                            endpoints=[em.endpoint(f"10.50.0.{i}") for i in range(1, 4)]))
    a.put(em.endpoint_slice("prod", "big-2", "big",
                            endpoints=[em.endpoint(f"10.50.1.{i}") for i in range(1, 4)]))
    a.put(em.service("prod", "huge"))
    a.put(em.endpoint_slice("prod", "huge-1", "huge",
                            endpoints=[em.endpoint(f"10.60.0.{i}") for i in range(1, 7)]))
    server, _ = serve([a], tmp_path, server_factory, fast,
                      extra="limits: {max_endpoints_per_service: 5}\n")
    await eventually(lambda: server.app.runtime.kubernetes.synced)
    await all_answer(server, names)
    # big-2 would take big past 5 endpoints: skipped whole; huge-1 alone is past it.
    assert await answers(server.port, "big.prod.global") == (
        "NOERROR", ["10.50.0.1", "10.50.0.2", "10.50.0.3"])
    assert rcode(await query(server.port, "huge.prod.global")) == "NOERROR"
    assert (await query(server.port, "huge.prod.global")).rr == []
    assert skipped(server, "too_many_endpoints") >= 2
    # A watch event growing a slice past the limit forgets it, as a relist would; one
    # shrinking it back brings it back.
    a.put(em.endpoint_slice("prod", "big-1", "big",
                            endpoints=[em.endpoint(f"10.50.0.{i}") for i in range(1, 8)]))
    await dns_eventually(server.port, "big.prod.global",
                         ("NOERROR", ["10.50.1.1", "10.50.1.2", "10.50.1.3"]))
    a.put(em.endpoint_slice("prod", "huge-1", "huge", endpoints=[em.endpoint("10.60.0.1")]))
    await dns_eventually(server.port, "huge.prod.global", ("NOERROR", ["10.60.0.1"]))
    await all_answer(server, names)


async def test_a_watch_event_past_max_event_bytes_is_skipped_and_the_watch_goes_on(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    (a,) = await emulators("a")
    healthy(a, 2)
    server, _ = serve([a], tmp_path, server_factory, fast,
                      extra="limits: {max_event_bytes: 65536}\n")
    await eventually(lambda: server.app.runtime.kubernetes.synced and a.open_watches == 2)
    fat = em.service("prod", "fat")
    fat["metadata"]["annotations"] = {"blob": "x" * 200_000}
    a.put(fat)
    a.put(em.endpoint_slice("prod", "svc1-1", "svc1", endpoints=[em.endpoint("10.1.0.9")]))
    await dns_eventually(server.port, "svc1.prod.global", ("NOERROR", ["10.1.0.9"]))
    assert await answers(server.port, "fat.prod.global") == ("NXDOMAIN", [])
    assert skipped(server, "event_too_large") == 1
    assert server.app.runtime.kubernetes.status()[0]["errors"] == 0
    assert await answers(server.port, "svc0.prod.global") == ("NOERROR", ["10.0.0.1"])


def _big_slice(count: int) -> dict[str, Any]:
    return em.endpoint_slice("prod", "crowd-1", "crowd", endpoints=[
        em.endpoint(f"10.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}") for i in range(count)])


async def test_a_20000_endpoint_slice_is_skipped_unparsed_under_the_default_limit(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    (a,) = await emulators("a")
    healthy(a, 2)
    server, _ = serve([a], tmp_path, server_factory, fast)
    await eventually(lambda: server.app.runtime.kubernetes.synced and a.open_watches == 2)
    a.put(em.service("prod", "crowd"))
    a.put(_big_slice(20_000))
    assert len(json.dumps(a.get("endpointslices", "prod", "crowd-1"))) > 1_000_000
    a.put(em.endpoint_slice("prod", "svc1-1", "svc1", endpoints=[em.endpoint("10.1.0.9")]))
    await dns_eventually(server.port, "svc1.prod.global", ("NOERROR", ["10.1.0.9"]))
    assert rcode(ask(server.port, "crowd.prod.global")) == "NOERROR"
    assert skipped(server, "too_many_endpoints") == 1
    assert await answers(server.port, "svc0.prod.global") == ("NOERROR", ["10.0.0.1"])


async def test_a_20000_endpoint_slice_under_a_raised_limit_is_applied_in_many_loop_steps(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    (a,) = await emulators("a")
    names = healthy(a, 2)
    server, _ = serve([a], tmp_path, server_factory, fast,
                      extra="limits: {max_endpoints_per_service: 20000}\n")
    await eventually(lambda: server.app.runtime.kubernetes.synced and a.open_watches == 2)
    source = server.app.runtime.kubernetes.clusters()[0]
    before = (source.yields, server.app.runtime.snapshot.yields)
    a.put(em.service("prod", "crowd"))
    a.put(_big_slice(20_000))
    # The last endpoint (10.100.78.31) answers by its own name once the slice is in.
    await dns_eventually(server.port, "10-100-78-31.a.crowd.prod.global",
                         ("NOERROR", ["10.100.78.31"]), timeout=30)
    # Parsed, converted and prepared in steps, each giving the loop back (the bench
    # measures how long each holds it): 20 conversion steps of 1,000 endpoints, 200
    # snapshot steps of 100.
    assert source.yields - before[0] >= 19
    assert server.app.runtime.snapshot.yields - before[1] >= 199
    assert skipped(server, "too_many_endpoints") == 0
    await all_answer(server, names)
    reply = await query(server.port, "a.crowd.prod.global")
    assert rcode(reply) == "NOERROR"


def test_limits_and_allow_special_addresses_are_read_and_checked_with_their_key_path(
        ) -> None:
    import pytest

    from globaldns.config.parse import ConfigError, parse_text

    config = parse_text("limits: {max_endpoints_per_service: 50, max_event_bytes: 65536}\n"
                        "clusters: [{name: a, allow_special_addresses: true}]\n", "t.yaml")
    assert (config.limits.max_endpoints_per_service, config.limits.max_event_bytes) == (
        50, 65536)
    assert config.clusters[0].allow_special_addresses
    defaults = parse_text("clusters: [{name: a}]\n", "t.yaml")
    assert defaults.limits.max_endpoints_per_service == 1000
    assert defaults.limits.max_event_bytes == 8 * 1024 * 1024
    assert not defaults.clusters[0].allow_special_addresses
    with pytest.raises(ConfigError) as bad:
        parse_text("limits: {max_endpoints_per_service: 0, max_event_bytes: big, x: 1}\n"
                   "clusters: [{name: a, allow_special_addresses: maybe}]\n", "t.yaml")
    text = str(bad.value)
    for where in ("t.yaml: limits.max_endpoints_per_service", "t.yaml: limits.max_event_bytes",
                  "t.yaml: limits.x", "t.yaml: clusters[0].allow_special_addresses"):
        assert where in text


async def test_an_endpoint_name_past_255_bytes_is_left_out_and_the_service_still_answers(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    # Each label is legal (63 bytes), the endpoint's name is not:
    # <hostname>.<cluster>.<service>.<namespace>.global is 262 characters.
    (c,) = await emulators("c" * 63)
    service, namespace = "s" * 63, "n" * 63
    c.put(em.service(namespace, service))
    c.put(em.endpoint_slice(namespace, "big-1", service, endpoints=[
        em.endpoint("10.7.0.1", hostname="h" * 63), em.endpoint("10.7.0.2", hostname="web")]))
    server, _ = serve([c], tmp_path, server_factory, fast)
    await eventually(lambda: server.app.runtime.kubernetes.synced)
    base = f"{service}.{namespace}.global"
    assert await answers(server.port, base) == ("NOERROR", ["10.7.0.1", "10.7.0.2"])
    srv = await query(server.port, f"_http._tcp.{base}", "SRV")
    assert rcode(srv) == "NOERROR"
    assert [str(rr.rdata.target) for rr in srv.rr] == [f"web.{'c' * 63}.{base}."]
    assert skipped(server, "name_too_long") >= 1


async def test_a_synced_cluster_publishes_its_services_in_loop_steps_and_is_ready_when_all_are_in(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    # 20,000 services written in one call held the loop, and every answer, for seconds.
    (a,) = await emulators("a")
    names = healthy(a, 200)
    server, _ = serve([a], tmp_path, server_factory, fast)
    await eventually(lambda: server.app.runtime.kubernetes.synced)
    source = server.app.runtime.kubernetes.clusters()[0]
    assert source.publish_steps >= 200 // 16 - 1
    await all_answer(server, names)
