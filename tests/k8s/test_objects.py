"""API JSON → our records, using the real wire-format examples in tests/data/k8s."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from globaldns.registry.model import Endpoint, Locality, Port, ServiceData
from globaldns.sources.k8s import objects
from tests.helpers.k8s import FIXTURES

REGION = Locality("us-central1")


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def full_slice() -> dict[str, Any]:
    """The every-field EndpointSlice fixture, with its placeholders made valid values."""
    raw = fixture("discovery.k8s.io.v1.EndpointSlice.json")
    raw["addressType"] = "IPv4"
    raw["endpoints"][0]["addresses"] = ["10.1.2.3"]
    raw["metadata"]["labels"][objects.SERVICE_NAME_LABEL] = "Reviews"
    raw["ports"][0]["protocol"] = "UDP"  # Kubernetes knows TCP, UDP and SCTP only
    return raw


def test_every_field_of_the_fixture_slice_is_read(full_slice: dict[str, Any]) -> None:
    record = objects.endpoint_slice(full_slice, cluster="east", locality=REGION)
    port = Port(name="namevalue", port=3, protocol="udp")
    assert record == objects.SliceRecord(
        namespace="namespacevalue", name="namevalue", service=("namespacevalue", "reviews"),
        endpoints=(Endpoint(address="10.1.2.3", cluster="east",
                            locality=Locality("us-central1", "zoneValue"), ready=True,
                            hostname="hostnamevalue", node_name="nodeNameValue",
                            serving=True, terminating=True, ports=(port,)),),
        ports=(port,))


def test_the_fixture_slice_as_published_has_no_usable_address_type() -> None:
    # "addressTypeValue" is neither IPv4 nor IPv6: like FQDN, no endpoints.
    raw = fixture("discovery.k8s.io.v1.EndpointSlice.json")
    record = objects.endpoint_slice(raw, cluster="east", locality=REGION)
    assert record.endpoints == ()
    assert record.service is None  # no kubernetes.io/service-name label


@pytest.mark.parametrize(("conditions", "ready", "serving", "terminating"), [
    ({}, True, True, False),                                   # absent: ready
    ({"ready": None}, True, True, False),                      # null: unknown → ready
    ({"ready": False}, False, False, False),                   # serving defers to ready
    ({"ready": False, "serving": True, "terminating": True}, False, True, True),
    ({"ready": True, "serving": False}, True, False, False),
])
def test_conditions(full_slice: dict[str, Any], conditions: dict[str, Any], ready: bool,
                    serving: bool, terminating: bool) -> None:
    full_slice["endpoints"][0]["conditions"] = conditions
    (ep,) = objects.endpoint_slice(full_slice, cluster="c", locality=REGION).endpoints
    assert (ep.ready, ep.serving, ep.terminating) == (ready, serving, terminating)


def test_ipv6_slices_are_canonicalized_and_fqdn_slices_ignored(
        full_slice: dict[str, Any]) -> None:
    full_slice["addressType"] = "IPv6"
    full_slice["endpoints"][0]["addresses"] = ["FD00:0::0A", "10.0.0.1"]
    (ep,) = objects.endpoint_slice(full_slice, cluster="c", locality=REGION).endpoints
    assert ep.address == "fd00::a"  # the IPv4 address in an IPv6 slice is skipped
    full_slice["addressType"] = "FQDN"
    full_slice["endpoints"][0]["addresses"] = ["db.example.com"]
    assert objects.endpoint_slice(full_slice, cluster="c", locality=REGION).endpoints == ()


def test_an_endpoint_without_zone_takes_the_cluster_locality(
        full_slice: dict[str, Any]) -> None:
    del full_slice["endpoints"][0]["zone"]
    (ep,) = objects.endpoint_slice(full_slice, cluster="c",
                                   locality=Locality("eu", "eu-a")).endpoints
    assert ep.locality == Locality("eu", "eu-a")


def test_ports_lowercase_protocol_default_tcp_and_drop_portless(
        full_slice: dict[str, Any]) -> None:
    full_slice["ports"] = [{"name": "DNS", "port": 53, "protocol": "UDP"},
                           {"name": "http", "port": 80}, {"name": "all"}]
    record = objects.endpoint_slice(full_slice, cluster="c", locality=REGION)
    assert record.ports == (Port("dns", 53, "udp"), Port("http", 80, "tcp"))


def test_services_normal_headless_and_external_name() -> None:
    normal = {"metadata": {"name": "Web", "namespace": "prod"},
              "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.1",
                       "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                  "targetPort": 8080}]}}
    headless = copy.deepcopy(normal)
    headless["spec"]["clusterIP"] = "None"
    external = {"metadata": {"name": "db", "namespace": "prod"},
                "spec": {"type": "ExternalName", "externalName": "DB.Example.com."}}
    assert objects.service(normal) == objects.ServiceRecord(
        "prod", "web", (Port("http", 80, "tcp"),))
    assert objects.service(headless) == objects.service(normal)
    assert objects.service(external) == objects.ServiceRecord("prod", "db", (),
                                                              "db.example.com")


def test_merge_dedupes_addresses_across_slices_and_keeps_a_portless_service() -> None:
    ep = Endpoint(address="10.0.0.1", cluster="c")
    a = objects.SliceRecord("ns", "a", ("ns", "s"), (ep,), ())
    b = objects.SliceRecord("ns", "b", ("ns", "s"),
                            (ep, Endpoint(address="10.0.0.2", cluster="c")), ())
    merged = objects.merge(objects.ServiceRecord("ns", "s", (Port("http", 80),)), [b, a])
    assert [e.address for e in merged.endpoints] == ["10.0.0.1", "10.0.0.2"]
    assert merged.ports == (Port("http", 80),)
    # A Service without slices exists, with no endpoints: NODATA, not NXDOMAIN.
    assert objects.merge(objects.ServiceRecord("ns", "s", ()), []) == ServiceData()


def test_remote_secret_keys_are_clusters_and_annotation_gives_locality() -> None:
    raw = {"metadata": {"name": "istio-remote-secret-b", "namespace": "istio-system",
                        "annotations": {objects.LOCALITY_ANNOTATION: "eu-west1/eu-west1-b"}},
           "data": {"beta": base64.b64encode(b"apiVersion: v1\n").decode(),
                    "broken": "%%%"}}
    (beta,) = objects.remote_secret(raw)
    assert beta == objects.RemoteCluster("beta", "apiVersion: v1\n",
                                         Locality("eu-west1", "eu-west1-b"),
                                         ("istio-system", "istio-remote-secret-b"))


def test_watch_event_and_status_fixtures_have_the_shapes_we_read() -> None:
    event = fixture("core.v1.WatchEvent.json")
    assert set(event) == {"type", "object"}
    expired = fixture("status-410-expired-continue.json")
    assert expired["code"] == 410 and expired["metadata"]["continue"]
    options = fixture("core.v1.ListOptions.json")
    # The query parameters the api module sends are real ListOptions fields.
    assert {"watch", "allowWatchBookmarks", "resourceVersion", "limit", "continue",
            "labelSelector", "timeoutSeconds"} <= set(options)
