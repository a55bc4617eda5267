"""Kubernetes API JSON → our frozen records, at the edge.

The raw shapes are TypedDicts (only the fields we read); everything past this module
sees `SliceRecord`, `ServiceRecord` and the registry's `Endpoint`/`Port`. Names are
lowercased here, once, and checked here: what cannot become a DNS record (a name that is
no DNS label, an address that names no endpoint, a slice past the endpoint limit) is
skipped and counted in `Skipped` by reason, the smallest part first (an address, a port,
then the object).
"""

from __future__ import annotations

import base64
import binascii
import logging
import socket
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

from globaldns.registry.model import (
    Endpoint,
    Locality,
    Port,
    ServiceData,
    ServiceKey,
    canonical_ip,
    is_cluster_name,
    is_label,
    is_special,
)
from globaldns.registry.store import Skipped
from globaldns.sources.k8s.annotations import EXPORT_LABEL, Annotations
from globaldns.sources.k8s.annotations import read as read_annotations

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

    reason = "bad_name"
    """Its `Skipped` reason."""


class TooManyEndpoints(ConversionError):
    """An EndpointSlice with more addresses than `limits.max_endpoints_per_service`."""

    reason = "too_many_endpoints"


@dataclass(frozen=True, slots=True)
class SliceRules:
    """How one cluster's EndpointSlices are converted."""

    cluster: str
    locality: Locality
    max_endpoints: int
    allow_special_addresses: bool = False


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
    labeled: bool = False
    """Labelled `globaldns.io/export: "true"` (the `labeled` export policy)."""
    annotations: Annotations | None = None
    """Its `globaldns.io/*` routing annotations, when it has any."""

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
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not text")
    try:
        if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text)) == text:
            return text
    except (OSError, TypeError):
        pass
    return canonical_ip(text)


# Kubernetes protocols are TCP (default), UDP, SCTP; SRV names use them lowercased.
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


def _port(raw: RawEndpointPort | RawServicePort, what: str,
          skipped: Skipped | None) -> Port | None:
    number = raw.get("port")
    if not isinstance(number, int) or not 0 < number < 65536:
        # An EndpointSlice port without a number means "all ports": nothing for SRV.
        return None
    name = str(raw.get("name") or "").lower()
    protocol = PROTOCOLS.get(str(raw.get("protocol") or "TCP"))
    # The SRV owner `_<name>._<protocol>` needs `_` + name within one 63-byte label.
    if protocol is None or (name and (len(name) > 62 or not is_label(name))):
        if skipped is not None:
            skipped.skip("bad_port", what, f"port {name!r} {raw.get('protocol')!r}")
        return None
    return Port(name=name, port=number, protocol=protocol)


def ports_of(raws: Any, what: str, skipped: Skipped | None) -> tuple[Port, ...]:
    """The ports of a Service, EndpointSlice or ServiceImport that can name SRV records."""
    return tuple(p for p in (_port(r, what, skipped) for r in raws or ()) if p is not None)


def address_count(raw: RawEndpointSlice) -> int:
    """Addresses in a raw EndpointSlice; TypeError or AttributeError if it is malformed."""
    return sum(len(ep.get("addresses") or ()) for ep in raw.get("endpoints") or ())


STEP = 1000
"""Endpoints converted between two yields of `endpoint_slice_steps` (a few ms)."""


def endpoint_slice(raw: RawEndpointSlice, *, cluster: str, locality: Locality,
                   rules: SliceRules | None = None,
                   skipped: Skipped | None = None) -> SliceRecord:
    """Convert one EndpointSlice of `cluster`; FQDN slices give no endpoints.

    `rules` bound it (`TooManyEndpoints`) and say whether special addresses stay; what is
    skipped inside it is counted in `skipped`.
    """
    steps = endpoint_slice_steps(raw, cluster=cluster, locality=locality, rules=rules,
                                 skipped=skipped)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            record: SliceRecord = done.value
            return record


def endpoint_slice_steps(raw: RawEndpointSlice, *, cluster: str, locality: Locality,
                         rules: SliceRules | None = None, skipped: Skipped | None = None,
                         ) -> Generator[None, None, SliceRecord]:
    """`endpoint_slice`, yielding after every `STEP` endpoints: a caller on the event
    loop lets it run between two steps."""
    namespace, name = object_key(raw)  # type: ignore[arg-type]
    what = f"k8s/{cluster} endpointslice {namespace}/{name}"
    labels = raw["metadata"].get("labels") or {}
    service_name = str(labels.get(SERVICE_NAME_LABEL, "")).lower()
    if service_name and not (is_label(service_name) and is_label(namespace)):
        raise ConversionError(f"service {service_name!r} in namespace {namespace!r} is not "
                              "a DNS name")
    service: ServiceKey | None = (namespace, service_name) if service_name else None
    if rules is not None and address_count(raw) > rules.max_endpoints:
        raise TooManyEndpoints(f"more than {rules.max_endpoints} addresses "
                               "(limits.max_endpoints_per_service)")
    allow_special = rules is not None and rules.allow_special_addresses
    ports = ports_of(raw.get("ports"), what, skipped)
    address_type = raw.get("addressType", "")
    if address_type not in ("IPv4", "IPv6"):
        return SliceRecord(namespace, name, service, (), ports)
    endpoints: list[Endpoint] = []
    for count, ep in enumerate(raw.get("endpoints") or (), 1):
        if count % STEP == 0:
            yield
        conditions = ep.get("conditions") or {}
        # API reference: a nil `ready` is an unknown state that consumers should
        # interpret as ready; a nil `serving` defers to `ready`; nil `terminating` is false.
        ready = conditions.get("ready") is not False
        serving_raw = conditions.get("serving")
        serving = ready if serving_raw is None else bool(serving_raw)
        terminating = bool(conditions.get("terminating"))
        zone = str(ep.get("zone") or "")
        where = Locality(locality.region, zone) if zone else locality
        hostname = str(ep.get("hostname") or "").lower()
        if hostname and not is_label(hostname):
            # Named by its address instead (RFC 1035 §2.3.4: one label, 63 bytes).
            if skipped is not None:
                skipped.skip("bad_hostname", what, f"hostname {hostname!r}")
            hostname = ""
        for address in ep.get("addresses") or ():
            try:
                text = _address(address)
            except (ValueError, TypeError):
                if skipped is not None:
                    skipped.skip("bad_address", what, f"{address!r} is not an IP address")
                continue
            if (":" in text) != (address_type == "IPv6"):
                continue
            if not allow_special and is_special(text):
                if skipped is not None:
                    skipped.skip("special_address", what, text)
                continue
            endpoints.append(Endpoint(
                address=text, cluster=cluster, locality=where, ready=ready,
                hostname=hostname,
                node_name=ep.get("nodeName") or "", serving=serving,
                terminating=terminating, ports=ports or None))
    return SliceRecord(namespace, name, service, tuple(endpoints), ports)


def _domain(text: str) -> bool:
    labels = text.split(".")
    return len(text) <= 253 and all(is_label(label) or (label.startswith("_") and is_label(
        label[1:])) for label in labels)


def service(raw: RawService, *, cluster: str = "",
            skipped: Skipped | None = None) -> ServiceRecord:
    namespace, name = object_key(raw)  # type: ignore[arg-type]
    if not (is_label(name) and is_label(namespace)):
        raise ConversionError(f"service {name!r} in namespace {namespace!r} is not a DNS name")
    spec = raw.get("spec") or {}
    ports = ports_of(spec.get("ports"), f"k8s/{cluster} service {namespace}/{name}", skipped)
    external_name = ""
    if spec.get("type") == "ExternalName":
        external_name = str(spec.get("externalName") or "").lower().rstrip(".")
        if not _domain(external_name):
            raise ConversionError(f"externalName {external_name!r} is not a domain name")
    meta = raw["metadata"]
    labels = meta.get("labels") or {}
    labeled = isinstance(labels, dict) and labels.get(EXPORT_LABEL) == "true"
    found = read_annotations(meta, what=f"k8s/{cluster} service {namespace}/{name}",
                            skipped=skipped) if meta.get("annotations") else None
    return ServiceRecord(namespace, name, ports, external_name, labeled, found or None)


def merge(service: ServiceRecord | None, slices: list[SliceRecord], *,
          max_endpoints: int | None = None, skipped: Skipped | None = None,
          cluster: str = "") -> ServiceData:
    """One cluster's ServiceData for one service: its Service and all its slices.

    An address listed by two slices (a slice being split or migrated) counts once;
    slices are taken in name order so the result does not depend on event order. A slice
    that would take the service past `max_endpoints` is skipped whole.
    """
    return ServiceData(ports=_merged_ports(service, slices),
                       endpoints=_merged_endpoints(slices, max_endpoints, skipped, cluster),
                       external_name=service.external_name if service is not None else "")


def _merged_endpoints(slices: list[SliceRecord], max_endpoints: int | None,
                      skipped: Skipped | None, cluster: str) -> tuple[Endpoint, ...]:
    if len(slices) == 1 and (max_endpoints is None
                             or len(slices[0].endpoints) <= max_endpoints):
        # The usual service, one slice: its endpoints as they are when each address is
        # there once (a set of them is the cheap check), else the first of each.
        only = slices[0].endpoints
        if len({ep.address for ep in only}) == len(only):
            return only
    seen: set[str] = set()
    endpoints: list[Endpoint] = []
    for record in sorted(slices, key=lambda s: s.name):
        if max_endpoints is not None and len(endpoints) + len(record.endpoints) > max_endpoints:
            if skipped is not None:
                skipped.skip("too_many_endpoints",
                             f"k8s/{cluster} endpointslice {record.namespace}/{record.name}",
                             f"its service has more than {max_endpoints} endpoints "
                             "(limits.max_endpoints_per_service)")
            continue
        for ep in record.endpoints:
            if ep.address not in seen:
                seen.add(ep.address)
                endpoints.append(ep)
    return tuple(endpoints)


def _merged_ports(service: ServiceRecord | None, slices: list[SliceRecord]
                  ) -> tuple[Port, ...]:
    if service is not None:
        return service.ports
    merged: dict[tuple[str, str], Port] = {}
    for record in slices:
        for port in record.ports:
            merged.setdefault((port.name, port.protocol), port)
    return tuple(merged.values())


@dataclass(frozen=True, slots=True)
class RemoteCluster:
    """One data key of a remote Secret: a cluster name and its kubeconfig text."""

    name: str
    kubeconfig: str
    locality: Locality
    secret: tuple[str, str]


def remote_secret(raw: RawSecret, *, skipped: Skipped | None = None) -> list[RemoteCluster]:
    """The clusters of an Istio remote Secret: each data key is a cluster name, which
    must be one DNS label (it names `<cluster>.<service>.<namespace>.<zone>`)."""
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
        if not is_cluster_name(key.lower()):
            log.warning("k8s remote secret %s/%s: key %r is not a DNS label (a cluster name), "
                        "skipped", namespace, name, key[:80])
            if skipped is not None:
                skipped.skip("bad_cluster_name", f"secret {namespace}/{name}", f"key {key!r}")
            continue
        try:
            text = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            log.warning("k8s remote secret %s/%s: key %s is not base64 text (%s), skipped",
                        namespace, name, key, exc)
            continue
        clusters.append(RemoteCluster(key.lower(), text, locality, (namespace, name)))
    return clusters
