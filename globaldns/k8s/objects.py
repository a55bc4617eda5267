"""Kubernetes API JSON → our frozen records, at the edge.

The raw shapes are TypedDicts (only the fields we read); everything past this module
sees `SliceRecord`, `ServiceRecord` and the registry's `Endpoint`/`Port`. Names are
lowercased here, once.
"""

from __future__ import annotations

import base64
import binascii
import logging
import socket
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

from globaldns.registry.model import Endpoint, Locality, Port, ServiceData, ServiceKey, canonical_ip

log = logging.getLogger("globaldns.k8s")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
LOCALITY_ANNOTATION = "globaldns.io/locality"


# --- raw API JSON (only the fields we read) -------------------------------------------


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    resourceVersion: str
    labels: dict[str, str]
    annotations: dict[str, str]
    deletionTimestamp: str


class EndpointConditions(TypedDict, total=False):
    ready: bool | None
    serving: bool | None
    terminating: bool | None


class RawEndpoint(TypedDict, total=False):
    addresses: list[str]
    conditions: EndpointConditions
    hostname: str
    nodeName: str
    zone: str


class RawEndpointPort(TypedDict, total=False):
    name: str
    port: int
    protocol: str
    appProtocol: str


class RawEndpointSlice(TypedDict):
    metadata: ObjectMeta
    addressType: str
    endpoints: NotRequired[list[RawEndpoint] | None]
    ports: NotRequired[list[RawEndpointPort] | None]


class RawServicePort(TypedDict, total=False):
    name: str
    port: int
    protocol: str
    targetPort: int | str


class RawServiceSpec(TypedDict, total=False):
    type: str
    clusterIP: str
    externalName: str
    ports: list[RawServicePort]


class RawService(TypedDict):
    metadata: ObjectMeta
    spec: NotRequired[RawServiceSpec]


class RawSecret(TypedDict):
    metadata: ObjectMeta
    data: NotRequired[dict[str, str] | None]


class Status(TypedDict, total=False):
    """`meta.v1.Status`: the body of an API error and of a watch ERROR event."""

    kind: str
    status: str
    message: str
    reason: str
    code: int
    metadata: dict[str, Any]


EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]


class WatchEvent(TypedDict):
    type: EventType
    object: dict[str, Any]


# --- our records ----------------------------------------------------------------------


class ConversionError(ValueError):
    """An API object we cannot use (missing name, bad service label...)."""


@dataclass(frozen=True, slots=True)
class SliceRecord:
    """One EndpointSlice, converted: which service it belongs to and what it adds."""

    namespace: str
    name: str
    service: ServiceKey | None
    """None when the slice has no `kubernetes.io/service-name` label: it is ignored."""
    endpoints: tuple[Endpoint, ...]
    ports: tuple[Port, ...]


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """One Service, converted: the service exists, with these ports (or is a CNAME)."""

    namespace: str
    name: str
    ports: tuple[Port, ...]
    external_name: str = ""

    @property
    def key(self) -> ServiceKey:
        return (self.namespace, self.name)


def object_key(obj: dict[str, Any]) -> tuple[str, str]:
    """(namespace, name) of any namespaced API object, lowercased."""
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise ConversionError("object without metadata.name")
    return (str(meta.get("namespace") or "").lower(), str(name).lower())


def resource_version(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _address(text: str) -> str:
    """The canonical text of an address; ValueError when it is none.

    Pod IPv4 addresses come canonical already: checking that in C (inet_pton/inet_ntop)
    is ten times cheaper than the ipaddress module, which stays the rule for the rest.
    """
    try:
        if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text)) == text:
            return text
    except (OSError, TypeError):
        pass
    return canonical_ip(text)


def _protocol(raw: str | None) -> str:
    # Kubernetes protocols are TCP (default), UDP, SCTP; SRV names use them lowercased.
    return (raw or "TCP").lower()


def _port(raw: RawEndpointPort | RawServicePort) -> Port | None:
    number = raw.get("port")
    if not isinstance(number, int) or not 0 < number < 65536:
        # An EndpointSlice port without a number means "all ports": nothing for SRV.
        return None
    return Port(name=str(raw.get("name") or "").lower(), port=number,
                protocol=_protocol(raw.get("protocol")))


def endpoint_slice(raw: RawEndpointSlice, *, cluster: str, locality: Locality) -> SliceRecord:
    """Convert one EndpointSlice of `cluster`; FQDN slices give no endpoints."""
    namespace, name = object_key(raw)  # type: ignore[arg-type]
    labels = raw["metadata"].get("labels") or {}
    service_name = labels.get(SERVICE_NAME_LABEL, "").lower()
    service: ServiceKey | None = (namespace, service_name) if service_name else None
    ports = tuple(p for p in map(_port, raw.get("ports") or ()) if p is not None)
    address_type = raw.get("addressType", "")
    if address_type not in ("IPv4", "IPv6"):
        return SliceRecord(namespace, name, service, (), ports)
    endpoints: list[Endpoint] = []
    for ep in raw.get("endpoints") or ():
        conditions = ep.get("conditions") or {}
        # API reference: a nil `ready` is an unknown state that consumers should
        # interpret as ready; a nil `serving` defers to `ready`; nil `terminating` is false.
        ready = conditions.get("ready") is not False
        serving_raw = conditions.get("serving")
        serving = ready if serving_raw is None else bool(serving_raw)
        terminating = bool(conditions.get("terminating"))
        zone = ep.get("zone") or ""
        where = Locality(locality.region, zone) if zone else locality
        for address in ep.get("addresses") or ():
            try:
                text = _address(address)
            except ValueError:
                log.warning("k8s %s: endpointslice %s/%s: %r is not an IP address, skipped",
                            cluster, namespace, name, address)
                continue
            if (":" in text) != (address_type == "IPv6"):
                continue
            endpoints.append(Endpoint(
                address=text, cluster=cluster, locality=where, ready=ready,
                hostname=(ep.get("hostname") or "").lower(),
                node_name=ep.get("nodeName") or "", serving=serving,
                terminating=terminating, ports=ports or None))
    return SliceRecord(namespace, name, service, tuple(endpoints), ports)


def service(raw: RawService) -> ServiceRecord:
    namespace, name = object_key(raw)  # type: ignore[arg-type]
    spec = raw.get("spec") or {}
    ports = tuple(p for p in map(_port, spec.get("ports") or ()) if p is not None)
    external_name = ""
    if spec.get("type") == "ExternalName":
        external_name = (spec.get("externalName") or "").lower().rstrip(".")
    return ServiceRecord(namespace, name, ports, external_name)


def merge(service: ServiceRecord | None, slices: list[SliceRecord]) -> ServiceData:
    """One cluster's ServiceData for one service: its Service and all its slices.

    An address listed by two slices (a slice being split or migrated) counts once;
    slices are taken in name order so the result does not depend on event order.
    """
    seen: set[str] = set()
    endpoints: list[Endpoint] = []
    for record in sorted(slices, key=lambda s: s.name):
        for ep in record.endpoints:
            if ep.address not in seen:
                seen.add(ep.address)
                endpoints.append(ep)
    if service is not None:
        ports = service.ports
        external_name = service.external_name
    else:
        merged: dict[tuple[str, str], Port] = {}
        for record in slices:
            for port in record.ports:
                merged.setdefault((port.name, port.protocol), port)
        ports = tuple(merged.values())
        external_name = ""
    return ServiceData(ports=ports, endpoints=tuple(endpoints), external_name=external_name)


@dataclass(frozen=True, slots=True)
class RemoteCluster:
    """One data key of a remote Secret: a cluster name and its kubeconfig text."""

    name: str
    kubeconfig: str
    locality: Locality
    secret: tuple[str, str]


def remote_secret(raw: RawSecret) -> list[RemoteCluster]:
    """The clusters of an Istio remote Secret: each data key is a cluster name."""
    namespace, name = object_key(raw)  # type: ignore[arg-type]
    annotations = raw["metadata"].get("annotations") or {}
    try:
        locality = Locality.parse(annotations.get(LOCALITY_ANNOTATION))
    except ValueError as exc:
        log.warning("k8s remote secret %s/%s: annotation %s: %s; no locality",
                    namespace, name, LOCALITY_ANNOTATION, exc)
        locality = Locality()
    clusters = []
    for key, value in sorted((raw.get("data") or {}).items()):
        try:
            text = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            log.warning("k8s remote secret %s/%s: key %s is not base64 text (%s), skipped",
                        namespace, name, key, exc)
            continue
        clusters.append(RemoteCluster(key, text, locality, (namespace, name)))
    return clusters
