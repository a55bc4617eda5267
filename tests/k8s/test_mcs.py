"""The Multi-Cluster Services API over real DNS, fed by emulated clusters: export policies
(`all`, `service_export`, `labeled`), the `clusterset.local` zone of the MCS DNS
specification (KEP-1645 specification.md), and routing from `globaldns.io` annotations."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from globaldns.config import ConfigError, parse_text
from globaldns.config.model import ClusterConfig, Config, RemoteSecretsConfig
from globaldns.registry.store import Skipped, Store
from globaldns.sources.k8s.annotations import read
from globaldns.sources.k8s.fleet import KubernetesSources
from tests.helpers.data import ROOT
from tests.helpers.dns import addresses, first_records, rcode, share
from tests.helpers.http import get_json, scrape, value
from tests.helpers.k8s import FastTime, answers, cluster_config, dns_eventually, query, timing_for
from tests.helpers.server import Running
from tests.helpers.wait import eventually
from tests.k8s import emulator as em

ZONES = "zones: [{name: global, ttl: 5}, {name: clusterset.local, ttl: 5}]"


def yaml_for(clusters: list[tuple[em.Emulator, dict[str, str]]], directory: Path,
             extra: str = "") -> str:
    lines = [ZONES, "clusters:"]
    for e, keys in clusters:
        path = e.write_kubeconfig(directory / f"{e.name}.kubeconfig")
        lines += [f"  - name: {e.name}", f"    locality: region-{e.name}",
                  f"    kubeconfig: {path}"]
        lines += [f"    {k}: {v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n" + extra


def deployed(e: em.Emulator, name: str, *addresses: str, namespace: str = "prod",
             labels: dict[str, str] | None = None,
             annotations: dict[str, str] | None = None, **kw: Any) -> None:
    service = em.service(namespace, name, labels=labels, **kw)
    service["metadata"]["annotations"] = dict(annotations or {})
    e.put(service)
    e.put(em.endpoint_slice(namespace, f"{name}-1", name,
                            endpoints=[em.endpoint(a) for a in addresses]))


def start(server_factory: Any, text: str, fast: FastTime) -> Running:
    server: Running = server_factory(text, k8s_timing=timing_for(fast))
    return server


async def synced(server: Running) -> None:
    await eventually(lambda: server.app.runtime.kubernetes.synced, timeout=10, what="synced")


async def records(port: int, name: str, qtype: str) -> tuple[str, list[str]]:
    reply = await query(port, name, qtype)
    return rcode(reply), sorted(str(rr.rdata) for rr in reply.rr)


# --- export policies --------------------------------------------------------------------


async def test_cross_cluster_user_service_is_exported_by_its_service_exports_only(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime,
        caplog: Any) -> None:
    east, west = await emulators("east", "west")
    for e, address in ((east, "10.1.0.1"), (west, "10.2.0.1")):
        deployed(e, "cross-cluster-user-service", address, namespace="default")
        deployed(e, "internal", address.replace(".0.", ".9."), namespace="default")
    east.put(em.service_export("default", "cross-cluster-user-service"))
    caplog.set_level(logging.INFO, logger="globaldns.k8s")
    server = start(server_factory, yaml_for([(east, {"export": "service_export"}),
                                             (west, {"export": "service_export"})],
                                            tmp_path), fast)
    port = server.port
    await synced(server)
    assert "k8s east: export service_export" in caplog.text
    global_name = "cross-cluster-user-service.default.global"
    clusterset = "cross-cluster-user-service.default.svc.clusterset.local"
    # Only east exports it; `internal` is exported nowhere: it never reaches the registry.
    assert await answers(port, global_name) == ("NOERROR", ["10.1.0.1"])
    assert await answers(port, clusterset) == ("NOERROR", ["10.1.0.1"])
    assert await answers(port, "internal.default.global") == ("NXDOMAIN", [])
    assert await answers(port, "internal.default.svc.clusterset.local") == ("NXDOMAIN", [])
    assert server.app.runtime.store.get(("default", "internal")) is None
    # A ServiceExport added in west: its endpoints join.
    west.put(em.service_export("default", "cross-cluster-user-service"))
    await dns_eventually(port, clusterset, ("NOERROR", ["10.1.0.1", "10.2.0.1"]))
    assert await answers(port, global_name) == ("NOERROR", ["10.1.0.1", "10.2.0.1"])
    # Removed in east: east's endpoints leave; removed everywhere: the name is gone.
    east.delete("serviceexports", "default", "cross-cluster-user-service")
    await dns_eventually(port, global_name, ("NOERROR", ["10.2.0.1"]))
    west.delete("serviceexports", "default", "cross-cluster-user-service")
    await dns_eventually(port, global_name, ("NXDOMAIN", []))
    assert await answers(port, clusterset) == ("NXDOMAIN", [])


async def test_labeled_exports_only_services_labelled_globaldns_io_export_true(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime,
        caplog: Any) -> None:
    [east] = await emulators("east")
    deployed(east, "web", "10.1.0.1", labels={"globaldns.io/export": "true"})
    deployed(east, "db", "10.1.0.2", labels={"globaldns.io/export": "yes"})
    caplog.set_level(logging.INFO, logger="globaldns.k8s")
    server = start(server_factory, yaml_for([(east, {})], tmp_path).replace(
        "    locality: region-east", "    locality: region-east\n    export: labeled"), fast)
    await synced(server)
    assert "k8s east: export labeled" in caplog.text
    assert await answers(server.port, "web.prod.global") == ("NOERROR", ["10.1.0.1"])
    assert await answers(server.port, "db.prod.global") == ("NXDOMAIN", [])
    deployed(east, "web", "10.1.0.1", labels={})
    deployed(east, "db", "10.1.0.2", labels={"globaldns.io/export": "true"})
    await dns_eventually(server.port, "web.prod.global", ("NXDOMAIN", []))
    await dns_eventually(server.port, "db.prod.global", ("NOERROR", ["10.1.0.2"]))


async def test_export_all_is_the_default_and_logged(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime,
        caplog: Any) -> None:
    [east] = await emulators("east")
    deployed(east, "web", "10.1.0.1")
    caplog.set_level(logging.INFO, logger="globaldns.k8s")
    server = start(server_factory, yaml_for([(east, {})], tmp_path), fast)
    await synced(server)
    assert "k8s east: export all" in caplog.text
    assert await answers(server.port, "web.prod.global") == ("NOERROR", ["10.1.0.1"])
    # No ServiceExport watch is opened when it is not needed (no CRD asked for).
    assert not any("serviceexports" in path for path, _ in east.requests)


# --- clusterset.local -------------------------------------------------------------------


async def test_clusterset_ip_and_headless_service_imports_answer_as_the_specification_says(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    home, west = await emulators("home", "west")
    for e, n in ((home, 1), (west, 2)):
        deployed(e, "users", f"10.{n}.0.1", ports=[("http", 80, "TCP")])
        e.put(em.service("prod", "db", headless=True, ports=[("mysql", 3306, "TCP")]))
        e.put(em.endpoint_slice("prod", "db-1", "db", ports=[("mysql", 3306, "TCP")],
                                endpoints=[em.endpoint(f"10.{n}.1.1", hostname="db-0"),
                                           em.endpoint(f"10.{n}.1.2", hostname="db-1",
                                                       ready=False)]))
    # The MCS controller of the cluster globaldns runs in owns the clusterset IPs.
    home.put(em.service_import("prod", "users", ips=["10.40.0.1", "fd00::40"]))
    home.put(em.service_import("prod", "db", headless=True))
    # Imported here, with no Service of that name anywhere.
    home.put(em.service_import("prod", "elsewhere", ips=["10.40.0.2"],
                               ports=[("grpc", 9090, "TCP")]))
    server = start(server_factory, yaml_for([(home, {"service_imports": "true"}),
                                             (west, {})], tmp_path), fast)
    port = server.port
    await synced(server)
    zone = "svc.clusterset.local"
    # §2.2: the schema version.
    assert await records(port, "dns-version.clusterset.local", "TXT") == (
        "NOERROR", ['"1.0.0"'])
    # §2.3.1: a ClusterSetIP service answers its clusterset IPs, not its endpoints.
    assert await records(port, f"users.prod.{zone}", "A") == ("NOERROR", ["10.40.0.1"])
    assert await records(port, f"users.prod.{zone}", "AAAA") == ("NOERROR", ["fd00::40"])
    # §2.3.2: SRV per named port, to the service's own name, with its address as glue.
    srv = await query(port, f"_http._tcp.users.prod.{zone}", "SRV")
    assert [str(rr.rdata) for rr in srv.rr] == [f"0 1 80 users.prod.{zone}."]
    assert sorted(str(rr.rdata) for rr in srv.ar) == ["10.40.0.1", "fd00::40"]
    # §2.3.4: no name disambiguating to one cluster; no endpoint names either.
    assert await answers(port, f"home.users.prod.{zone}") == ("NXDOMAIN", [])
    assert await answers(port, "10-1-0-1.home.users.prod.svc.clusterset.local") == (
        "NXDOMAIN", [])
    # The global zone still answers the endpoints.
    assert await answers(port, "users.prod.global") == ("NOERROR", ["10.1.0.1", "10.2.0.1"])
    # An import with no Service: in clusterset.local only.
    assert await answers(port, f"elsewhere.prod.{zone}") == ("NOERROR", ["10.40.0.2"])
    srv = await query(port, f"_grpc._tcp.elsewhere.prod.{zone}", "SRV")
    assert [str(rr.rdata) for rr in srv.rr] == [f"0 1 9090 elsewhere.prod.{zone}."]
    assert await answers(port, "elsewhere.prod.global") == ("NXDOMAIN", [])
    # §2.4.1: a headless service answers its ready endpoints of every cluster, and
    # <hostname>.<clusterid> names; the not-ready db-1 is in neither.
    assert await answers(port, f"db.prod.{zone}") == ("NOERROR", ["10.1.1.1", "10.2.1.1"])
    assert await answers(port, f"db-0.home.db.prod.{zone}") == ("NOERROR", ["10.1.1.1"])
    assert await answers(port, f"db-0.west.db.prod.{zone}") == ("NOERROR", ["10.2.1.1"])
    assert await answers(port, f"db-1.home.db.prod.{zone}") == ("NXDOMAIN", [])
    # §2.4.2: SRV per ready endpoint and named port, to the endpoint names.
    srv = await query(port, f"_mysql._tcp.db.prod.{zone}", "SRV")
    assert sorted(str(rr.rdata).split(" ", 2)[2] for rr in srv.rr) == [
        f"3306 db-0.home.db.prod.{zone}.", f"3306 db-0.west.db.prod.{zone}."]
    # §2.4.4: no per-cluster name.
    assert await answers(port, f"home.db.prod.{zone}") == ("NXDOMAIN", [])
    # A ClusterSetIP import deleted: the service falls back to its endpoints.
    home.delete("serviceimports", "prod", "users")
    await dns_eventually(port, f"users.prod.{zone}", ("NOERROR", ["10.1.0.1", "10.2.0.1"]))
    # §2.4.1: no ready endpoint, no name.
    for e, n in ((home, 1), (west, 2)):
        e.put(em.endpoint_slice("prod", "db-1", "db", ports=[("mysql", 3306, "TCP")],
                                endpoints=[em.endpoint(f"10.{n}.1.1", hostname="db-0",
                                                       ready=False)]))
    await dns_eventually(port, f"db.prod.{zone}", ("NXDOMAIN", []))
    assert await answers(port, "db.prod.global") == ("NOERROR", ["10.1.1.1", "10.2.1.1"])


async def test_clusterset_answers_follow_locality_like_global(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    east, west = await emulators("east", "west")
    deployed(east, "web", "10.1.0.1")
    deployed(west, "web", "10.2.0.1")
    text = yaml_for([(east, {}), (west, {})], tmp_path,
                    "resolver: {locality: region-west}\nrouting:\n"
                    "  - {match: web.prod, answer: best_tier}\n")
    server = start(server_factory, text, fast)
    await synced(server)
    assert await answers(server.port, "web.prod.svc.clusterset.local") == (
        "NOERROR", ["10.2.0.1"])
    assert await answers(server.port, "web.prod.global") == ("NOERROR", ["10.2.0.1"])


# --- annotations ------------------------------------------------------------------------


async def _annotated(emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime,
                     annotations: dict[str, str], *, extra: str = "",
                     export: dict[str, str] | None = None
                     ) -> tuple[Running, em.Emulator, em.Emulator]:
    east, west = await emulators("east", "west")
    deployed(east, "pay", "10.1.0.1", annotations=annotations)
    deployed(west, "pay", "10.2.0.1", annotations=annotations)
    keys = {}
    if export is not None:
        keys = {"export": "service_export"}
        for e in (east, west):
            e.put(em.service_export("prod", "pay", annotations=export))
    server = start(server_factory, yaml_for([(east, keys), (west, keys)], tmp_path, extra),
                   fast)
    await synced(server)
    return server, east, west


async def leads(port: int, name: str, count: int = 1000) -> Counter[str]:
    return await asyncio.to_thread(first_records, port, name, count)


async def test_weights_annotation_splits_70_30(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    server, _, _ = await _annotated(emulators, server_factory, tmp_path, fast, {
        "globaldns.io/strategy": "weighted", "globaldns.io/weights": "east=70, west=30"})
    seen = await leads(server.port, "pay.prod.global")
    assert abs(share(seen, "10.1.") - 70) <= 2 and abs(share(seen, "10.2.") - 30) <= 2
    # The same policy in clusterset.local.
    seen = await leads(server.port, "pay.prod.svc.clusterset.local")
    assert abs(share(seen, "10.1.") - 70) <= 2


async def test_weights_annotation_alone_means_weighted_and_overrides_the_config_rule(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    server, _, _ = await _annotated(
        emulators, server_factory, tmp_path, fast, {"globaldns.io/weights": "east=0,west=1"},
        extra="routing:\n  - {match: pay.prod, weights: {east: 1, west: 0}}\n")
    assert set(await leads(server.port, "pay.prod.global", 50)) == {"10.2.0.1"}
    _, report = get_json(server, "/debug/explain?name=pay.prod.global")
    assert report["rule"] == ("annotations of k8s/east Service prod/pay (strategy weighted, "
                              "weights east=0,west=1) over config rule pay.prod")
    _, report = get_json(server, "/debug/explain?name=pay.prod.svc.clusterset.local")
    assert report["rule"].startswith("annotations of k8s/east Service prod/pay")
    assert set(await leads(server.port, "pay.prod.svc.clusterset.local", 50)) == {"10.2.0.1"}


async def test_distribute_annotation_shares_evenly_between_clusters(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    server, _, _ = await _annotated(emulators, server_factory, tmp_path, fast, {
        "globaldns.io/strategy": "distribute"}, extra="resolver: {locality: region-east}\n")
    seen = await leads(server.port, "pay.prod.global")
    assert abs(share(seen, "10.1.") - 50) <= 2


async def test_failover_annotation_answers_the_primary_cluster_then_the_others(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    server, _, west = await _annotated(
        emulators, server_factory, tmp_path, fast,
        {"globaldns.io/strategy": "failover", "globaldns.io/primary-cluster": "west"},
        extra="resolver: {locality: region-east}\n")
    assert await answers(server.port, "pay.prod.global") == ("NOERROR", ["10.2.0.1"])
    west.put(em.endpoint_slice("prod", "pay-1", "pay",
                               endpoints=[em.endpoint("10.2.0.1", ready=False)]))
    await dns_eventually(server.port, "pay.prod.global", ("NOERROR", ["10.1.0.1"]))


async def test_geo_annotation_answers_the_nearest_tier_only(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    server, _, _ = await _annotated(emulators, server_factory, tmp_path, fast,
                                    {"globaldns.io/strategy": "geo"},
                                    extra="resolver: {locality: region-west}\n")
    assert set(await leads(server.port, "pay.prod.global", 50)) == {"10.2.0.1"}
    assert set(await leads(server.port, "pay.prod.svc.clusterset.local", 50)) == {"10.2.0.1"}


async def test_ttl_annotation_sets_the_ttl_of_the_services_records(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    server, _, _ = await _annotated(emulators, server_factory, tmp_path, fast,
                                    {"globaldns.io/ttl": "42"})
    for name, qtype in (("pay.prod.global", "A"), ("east.pay.prod.global", "A"),
                        ("_http._tcp.pay.prod.global", "SRV"),
                        ("pay.prod.svc.clusterset.local", "A")):
        reply = await query(server.port, name, qtype)
        assert {rr.ttl for rr in reply.rr} == {42}, name
    _, report = get_json(server, "/debug/explain?name=pay.prod.global")
    assert "ttl 42 from annotations of k8s/east Service prod/pay" in report["rule"]


async def test_service_export_annotations_override_the_services(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    server, _, _ = await _annotated(
        emulators, server_factory, tmp_path, fast,
        {"globaldns.io/strategy": "failover", "globaldns.io/primary-cluster": "east",
         "globaldns.io/ttl": "30"},
        export={"globaldns.io/primary-cluster": "west"})
    reply = await query(server.port, "pay.prod.global", "A")
    assert addresses(reply) == ["10.2.0.1"]
    assert {rr.ttl for rr in reply.rr} == {30}  # the Service's, not overridden
    _, report = get_json(server, "/debug/explain?name=pay.prod.global")
    assert report["rule"].startswith("annotations of k8s/east ServiceExport prod/pay "
                                     "(strategy failover, primary-cluster west, ttl 30)")


async def test_invalid_annotations_are_ignored_counted_and_logged(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime,
        caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger="globaldns.registry")
    bad = {"globaldns.io/strategy": "round-robin",
           "globaldns.io/primary-cluster": "Not A Cluster!",
           "globaldns.io/weights": "east=70,west=" + "9" * 2000,
           "globaldns.io/ttl": "-5"}
    server, _, _ = await _annotated(emulators, server_factory, tmp_path, fast, bad)
    # Served as if unannotated: both clusters, the zone's TTL.
    reply = await query(server.port, "pay.prod.global", "A")
    assert sorted(addresses(reply)) == ["10.1.0.1", "10.2.0.1"]
    assert {rr.ttl for rr in reply.rr} == {5}
    # Four annotations in each of two clusters.
    assert value(scrape(server), "globaldns_registry_skipped_total",
                 reason="bad_annotation") == 8
    for text in ("globaldns.io/strategy: 'round-robin' is none of",
                 "globaldns.io/primary-cluster: 'Not A Cluster!' is not a cluster name",
                 "globaldns.io/weights: not text of at most 1024 characters",
                 "globaldns.io/ttl: '-5' is not a whole number of seconds"):
        assert text in caplog.text, text
    # A weights value past the cluster count bound, and a bad weight, one at a time.
    for text, reason in (("a=1," * 70, "more than 64 clusters"),
                         ("east=x", "weight 'x' is not a whole number"),
                         ("east=1,east=2", "cluster east is given twice"),
                         ("east=0", "every weight is 0"),
                         ("=3", "'=3' is not <cluster>=<weight>")):
        skipped = Skipped()
        assert read({"annotations": {"globaldns.io/weights": text}}, what=text[:10],
                    skipped=skipped).weights is None
        assert skipped.counts["bad_annotation"] == 1
        assert reason in caplog.text, reason


# --- docs/mcs.md ------------------------------------------------------------------------


async def test_the_mcs_doc_example_answers_as_written(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    text = (ROOT / "docs" / "mcs.md").read_text()
    blocks = re.findall(r"```(yaml|text)\n(.*?)```", text, re.S)
    [config] = [b for kind, b in blocks if kind == "yaml" and "clusterset.local" in b]
    objects = {b.split("\n", 1)[0].removeprefix("# cluster "): b for kind, b in blocks
               if kind == "yaml" and b.startswith("# cluster ")}
    [expected] = [b for kind, b in blocks if kind == "text" and "dns-version" in b]
    east, west = await emulators("east", "west")
    for e in (east, west):
        for obj in yaml.safe_load_all(objects[e.name]):
            e.put(obj)
        config = config.replace(f"/etc/globaldns/{e.name}.kubeconfig",
                                e.write_kubeconfig(tmp_path / f"{e.name}.kubeconfig"))
    server = start(server_factory, config, fast)
    await synced(server)
    for line in expected.strip().splitlines():
        name, qtype, *want = line.split()
        reply = await query(server.port, name, qtype)
        if want == ["NXDOMAIN"]:
            assert rcode(reply) == "NXDOMAIN", line
            continue
        assert rcode(reply) == "NOERROR", line
        got = " ".join(sorted(str(rr.rdata) for rr in reply.rr))
        if qtype == "SRV":
            want = [" ".join(want[i:i + 4]) for i in range(0, len(want), 4)]
        assert got == " ".join(sorted(want)), line


# --- remote-secret clusters, hostile ServiceImports ---------------------------------------


async def test_a_remote_secret_cluster_takes_the_export_policy_of_its_clusters_entry(
        emulators: Any, tmp_path: Path, fast: FastTime) -> None:
    hub, east = await emulators("hub", "east")
    deployed(east, "web", "10.1.0.1")
    deployed(east, "api", "10.1.0.2")
    east.put(em.service_export("prod", "api"))
    hub.put(em.secret("istio-system", "remote", {"east": east.kubeconfig_text()},
                      labels={"istio/multiCluster": "true"}))
    config = Config(clusters=(cluster_config(hub, tmp_path, export="service_export"),
                              ClusterConfig(name="east", export="service_export")),
                    remote_secrets=RemoteSecretsConfig(cluster="hub", allow_insecure=True))
    store = Store()
    sources = KubernetesSources(config, store, timing=fast.timing)
    await sources.start()
    try:
        await eventually(lambda: sources.synced and store.keys_of("k8s/east") != ())
        assert list(store.keys_of("k8s/east")) == [("prod", "api")]
        # hub exports nothing (no ServiceExport there): web and api of hub never appear.
        assert list(store.keys_of("k8s/hub")) == []
    finally:
        await sources.stop()


async def test_unreadable_service_imports_are_skipped_and_counted(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    [home] = await emulators("home")
    deployed(home, "web", "10.1.0.1")
    bad_type = em.service_import("prod", "web", ips=["10.40.0.1"])
    bad_type["spec"]["type"] = "LoadBalancer"
    home.put(bad_type)
    home.put(em.service_import("prod", "bad-ip", ips=["10.40.0.1", "not-an-ip"]))
    home.put(em.service_import("prod", "many", ips=[f"10.40.0.{i}" for i in range(17)]))
    server = start(server_factory, yaml_for([(home, {"service_imports": "true"})], tmp_path),
                   fast)
    await synced(server)
    # web is answered from its endpoints, as if it had no ServiceImport.
    assert await answers(server.port, "web.prod.svc.clusterset.local") == (
        "NOERROR", ["10.1.0.1"])
    assert await answers(server.port, "bad-ip.prod.svc.clusterset.local") == ("NXDOMAIN", [])
    assert value(scrape(server), "globaldns_registry_skipped_total",
                 reason="bad_service_import") == 3


def test_an_unknown_export_policy_is_a_config_error_naming_its_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_text("clusters: [{name: east, in_cluster: true, export: everything}]", "t.yaml")
    assert any("clusters[0].export" in line and "service_export" in line
               for line in caught.value.errors), caught.value.errors
    config = parse_text("clusters: [{name: east, in_cluster: true, service_imports: true}]",
                        "t.yaml")
    assert (config.clusters[0].export, config.clusters[0].service_imports) == ("all", True)
