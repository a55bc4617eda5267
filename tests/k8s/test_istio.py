"""Istio sources over DNS (issue 13): ServiceEntries, WorkloadEntries and WorkloadGroups of
emulated clusters, answered by the real server over real sockets (dig, and our client).

The design's own examples: `external-user-service` (a MESH_EXTERNAL ServiceEntry outside
every zone, served because `serve_hosts` names it), `vm-user-service` (a ServiceEntry whose
workloadSelector picks VMs registered as WorkloadEntries, `instance-id: vm-123` in
`us-west1/us-west1-a`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from globaldns.answers.explain import explain
from tests.helpers.dns import dig
from tests.helpers.k8s import FastTime, answers, dns_eventually, query, timing_for
from tests.helpers.server import Running
from tests.helpers.targets import HttpTarget
from tests.helpers.wait import eventually
from tests.k8s import emulator as em


def config(e: em.Emulator, directory: Path, *extra: str, cluster: str = "") -> str:
    path = e.write_kubeconfig(directory / f"{e.name}.kubeconfig")
    return "\n".join([
        "zones: [{name: global, ttl: 5, negative_ttl: 5}]",
        "resolver: {locality: us-west1/us-west1-a}",
        "serve_hosts: [users.api.example.com, '*.svc.example.org']",
        "clusters:",
        f"  - {{name: {e.name}, locality: us-west1, kubeconfig: {path}, istio: true{cluster}}}",
        *extra]) + "\n"


def design(e: em.Emulator) -> None:
    """The design's examples, as an Istio user writes them."""
    e.put(em.service_entry(
        "default", "external-user-service", ["users.api.example.com"],
        location="MESH_EXTERNAL", resolution="STATIC", ports=[("https", 443, "HTTPS")],
        endpoints=[{"address": "203.0.113.10", "locality": "us-east1/us-east1-b",
                    "network": "internet"}]))
    e.put(em.service_entry(
        "default", "vm-user-service", ["vm-user-service.default.global"],
        ports=[("http", 8080, "HTTP")], selector={"app": "user-service"}))
    e.put(em.workload_entry(
        "default", "vm-123", "10.30.0.1", locality="us-west1/us-west1-a", weight=3,
        labels={"app": "user-service", "instance-id": "vm-123"}, healthy=True))
    e.put(em.workload_entry(
        "default", "vm-456", "10.30.0.2", locality="us-east1/us-east1-b", weight=1,
        labels={"app": "user-service", "instance-id": "vm-456"}))
    # Another namespace's VM with the same labels is not selected.
    e.put(em.workload_entry("other", "vm-999", "10.30.9.9",
                            labels={"app": "user-service"}))


async def dig_async(port: int, *args: str) -> str:
    return await asyncio.to_thread(dig, port, "+noall", "+answer", "+comments", *args)


def srv_records(text: str) -> list[tuple[int, int, int, str]]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 8 and parts[3] == "SRV":
            out.append((int(parts[4]), int(parts[5]), int(parts[6]), parts[7]))
    return sorted(out)


async def test_the_designs_service_entry_and_workload_entries_are_answered_over_dns(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    (east,) = await emulators("east")
    design(east)
    server: Running = server_factory(config(east, tmp_path), k8s_timing=timing_for(fast))
    port = server.port
    # external-user-service: outside every zone, named by serve_hosts.
    await dns_eventually(port, "users.api.example.com", ("NOERROR", ["203.0.113.10"]))
    # vm-user-service: the two selected VMs, the other namespace's not.
    assert await answers(port, "vm-user-service.default.global") == (
        "NOERROR", ["10.30.0.1", "10.30.0.2"])
    # Locality and weight: SRV priority 0 for the client's own zone (vm-123), 1 for the
    # other region; weights from the WorkloadEntries; ports from the ServiceEntry.
    out = await dig_async(port, "_http._tcp.vm-user-service.default.global", "SRV")
    assert srv_records(out) == [
        (0, 3, 8080, "10-30-0-1.east.vm-user-service.default.global."),
        (1, 1, 8080, "10-30-0-2.east.vm-user-service.default.global.")], out
    # A answers lead with the nearest tier.
    reply = await query(port, "vm-user-service.default.global")
    assert str(reply.rr[0].rdata) == "10.30.0.1"
    out = await dig_async(port, "_https._tcp.users.api.example.com", "SRV")
    assert srv_records(out) == [
        (0, 1, 443, "203-0-113-10.east.users.api.example.com.")], out
    # Below a served host: ours (NXDOMAIN), never forwarded; an outside name that matches
    # no serve_hosts entry is refused as before (no forward zone here).
    assert await answers(port, "nothing.users.api.example.com") == ("NXDOMAIN", [])
    assert await answers(port, "other.example.com") == ("REFUSED", [])
    # MESH_EXTERNAL is marked in explain (and /debug/registry).
    report = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_explain(
        server, "users.api.example.com"), server.loop))
    assert report["host"] and report["answer"] == "NOERROR"
    assert [(e["address"], e["external"], e["network"]) for e in report["endpoints"]] == [
        ("203.0.113.10", True, "internet")]
    internal = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_explain(
        server, "vm-user-service.default.global"), server.loop))
    assert {e["external"] for e in internal["endpoints"]} == {False}


async def _explain(server: Running, name: str) -> dict[str, Any]:
    return explain(server.app.runtime.snapshot, server.app.runtime.store, name)


async def test_a_workload_entry_whose_healthy_condition_is_false_is_not_answered(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    (east,) = await emulators("east")
    design(east)
    server = server_factory(config(east, tmp_path), k8s_timing=timing_for(fast))
    name = "vm-user-service.default.global"
    await dns_eventually(server.port, name, ("NOERROR", ["10.30.0.1", "10.30.0.2"]))
    # Istio's health checking writes Healthy: False for vm-123.
    east.put(em.workload_entry(
        "default", "vm-123", "10.30.0.1", locality="us-west1/us-west1-a", weight=3,
        labels={"app": "user-service", "instance-id": "vm-123"}, healthy=False))
    await dns_eventually(server.port, name, ("NOERROR", ["10.30.0.2"]))
    # An entry that asks for health checks is not ready until a condition says so.
    east.put(em.workload_entry(
        "default", "vm-123", "10.30.0.1", labels={"app": "user-service"}, healthy=True))
    east.put(dict(em.workload_entry("default", "vm-456", "10.30.0.2",
                                    labels={"app": "user-service"}),
                  metadata={"name": "vm-456", "namespace": "default", "annotations": {
                      "proxy.istio.io/health-checks-enabled": "true"}}))
    await dns_eventually(server.port, name, ("NOERROR", ["10.30.0.1"]))
    # A deleted WorkloadEntry leaves the answer.
    east.put(em.workload_entry("default", "vm-456", "10.30.0.2",
                               labels={"app": "user-service"}))
    await dns_eventually(server.port, name, ("NOERROR", ["10.30.0.1", "10.30.0.2"]))
    east.delete("workloadentries", "default", "vm-123")
    await dns_eventually(server.port, name, ("NOERROR", ["10.30.0.2"]))


async def test_resolution_dns_endpoints_with_a_host_name_answer_as_a_cname(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    (east,) = await emulators("east")
    east.put(em.service_entry("data", "orders-db", ["orders-db.svc.example.org"],
                              resolution="DNS", location="MESH_EXTERNAL",
                              endpoints=[{"address": "orders.cluster-x.rds.example.net"}]))
    server = server_factory(config(east, tmp_path), k8s_timing=timing_for(fast))

    await dns_eventually(server.port, "orders-db.svc.example.org", ("NOERROR", []))
    out = await dig_async(server.port, "orders-db.svc.example.org", "A")
    assert out.split("ANSWER SECTION:")[1].split() == [
        "orders-db.svc.example.org.", "5", "IN", "CNAME", "orders.cluster-x.rds.example.net."
    ], out
    # A pattern-served host exists only while a ServiceEntry names it: after the delete
    # the name is left to the forwarders again (none here: REFUSED).
    east.delete("serviceentries", "data", "orders-db")
    await dns_eventually(server.port, "orders-db.svc.example.org", ("REFUSED", []))


async def test_v1beta1_is_read_when_the_api_serves_no_v1(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    (east,) = await emulators("east")
    east.istio_versions = ("v1beta1", "v1alpha3")
    await east.stop()
    await east.restart()
    design(east)
    server = server_factory(config(east, tmp_path), k8s_timing=timing_for(fast))
    await dns_eventually(server.port, "users.api.example.com", ("NOERROR", ["203.0.113.10"]))
    status = server.app.runtime.kubernetes.status()[0]
    assert status["istio"]["version"] == "v1beta1"
    paths = {path for path, _ in east.requests}
    assert "/apis/networking.istio.io/v1beta1/serviceentries" in paths
    assert not any(p.startswith("/apis/networking.istio.io/v1/") for p in paths)


async def test_a_cluster_without_istio_installed_still_serves_its_services(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    (east,) = await emulators("east")
    east.istio_versions = ()
    await east.stop()
    await east.restart()
    east.put(em.service("prod", "web"))
    east.put(em.endpoint_slice("prod", "web-1", "web", endpoints=[em.endpoint("10.1.0.1")]))
    server = server_factory(config(east, tmp_path), k8s_timing=timing_for(fast))
    await dns_eventually(server.port, "web.prod.global", ("NOERROR", ["10.1.0.1"]))
    assert "not served" in server.app.runtime.kubernetes.status()[0]["istio"]["error"]


async def test_a_workload_group_probe_is_run_against_the_entries_it_owns(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    (east,) = await emulators("east")
    target = HttpTarget("127.0.0.21")
    other = HttpTarget("127.0.0.22", target.port)
    try:
        east.put(em.service_entry("default", "vm-user-service",
                                  ["vm-user-service.default.global"],
                                  ports=[("http", target.port, "HTTP")],
                                  selector={"app": "user-service"}))
        east.put(em.workload_group("default", "user-vms", labels={"app": "user-service"},
                                   probe={"periodSeconds": 1, "failureThreshold": 1,
                                          "httpGet": {"path": "/ready", "port": target.port}}))
        for name, address in (("vm-a", "127.0.0.21"), ("vm-b", "127.0.0.22")):
            east.put(em.workload_entry("default", name, address, group="user-vms",
                                       labels={"app": "user-service"}))
        server = server_factory(config(east, tmp_path, cluster=", allow_special_addresses: true"),
                                k8s_timing=timing_for(fast))
        cluster_name = "east.vm-user-service.default.global"
        await dns_eventually(server.port, cluster_name, ("NOERROR", ["127.0.0.21", "127.0.0.22"]))
        await eventually(lambda: "/ready" in target.paths, timeout=10)
        other.stop()  # vm-b's probe now fails
        await dns_eventually(server.port, cluster_name, ("NOERROR", ["127.0.0.21"]),
                             timeout=15)
        other.start()
        await dns_eventually(server.port, cluster_name, ("NOERROR", ["127.0.0.21", "127.0.0.22"]),
                             timeout=15)
    finally:
        target.stop()
        other.stop()


async def test_hostile_istio_objects_are_skipped_and_counted_and_the_rest_answers(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    (east,) = await emulators("east")
    design(east)
    # A wildcard host, a host past 253 bytes, an endpoint at the metadata server, a
    # resolution no one knows, a port whose name makes no SRV label.
    east.put(em.service_entry("default", "wild", ["*.example.com", "a" * 300 + ".com",
                                                  "ok.svc.example.org"],
                              endpoints=[{"address": "169.254.169.254"},
                                         {"address": "10.9.0.1"}],
                              ports=[("x" * 70, 80, "TCP")]))
    east.put(dict(em.service_entry("default", "odd", ["odd.svc.example.org"]),
                  spec={"hosts": ["odd.svc.example.org"], "resolution": "MAGIC"}))
    # A host that is already a Kubernetes service name: the service keeps it.
    east.put(em.service("default", "taken"))
    east.put(em.endpoint_slice("default", "taken-1", "taken",
                               endpoints=[em.endpoint("10.1.1.1")]))
    east.put(em.service_entry("default", "thief", ["taken.default.global"],
                              endpoints=[{"address": "10.6.6.6"}]))
    # A host outside every zone and every serve_hosts pattern.
    east.put(em.service_entry("default", "elsewhere", ["api.elsewhere.net"],
                              endpoints=[{"address": "10.7.7.7"}]))
    server = server_factory(config(east, tmp_path), k8s_timing=timing_for(fast))
    await dns_eventually(server.port, "ok.svc.example.org", ("NOERROR", ["10.9.0.1"]))
    assert await answers(server.port, "users.api.example.com") == ("NOERROR", ["203.0.113.10"])
    assert await answers(server.port, "taken.default.global") == ("NOERROR", ["10.1.1.1"])
    assert await answers(server.port, "api.elsewhere.net") == ("REFUSED", [])
    assert await answers(server.port, "odd.svc.example.org") == ("REFUSED", [])
    counts = server.app.runtime.store.skipped.counts
    for reason in ("bad_host", "special_address", "bad_port", "bad_object", "host_not_served"):
        assert counts[reason] >= 1, (reason, counts)
