"""The Multi-Cluster Services API (KEP-1645), at the edge: ServiceExport and ServiceImport
JSON (`multicluster.x-k8s.io/v1alpha1`) become `ExportRecord` and `ImportRecord`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from globaldns.registry.model import (
    Port,
    ServiceImport,
    ServiceKey,
    canonical_ip,
    is_label,
)
from globaldns.registry.store import Skipped
from globaldns.sources.k8s.annotations import NONE, Annotations, read
from globaldns.sources.k8s.api import Resource
from globaldns.sources.k8s.objects import (
    ConversionError,
    ObjectMeta,
    RawServicePort,
    object_key,
    ports_of,
)

GROUP = "multicluster.x-k8s.io"
GROUP_VERSION = f"{GROUP}/v1alpha1"
SERVICEEXPORTS = Resource(f"/apis/{GROUP_VERSION}", "serviceexports")
SERVICEIMPORTS = Resource(f"/apis/{GROUP_VERSION}", "serviceimports")

MAX_IPS = 16


class RawServiceImportSpec(TypedDict, total=False):
    type: str
    ips: list[str]
    ports: list[RawServicePort]


class RawServiceImport(TypedDict):
    metadata: ObjectMeta
    spec: NotRequired[RawServiceImportSpec]


class RawServiceExport(TypedDict):
    metadata: ObjectMeta


@dataclass(frozen=True, slots=True)
class ExportRecord:
    """One ServiceExport: the Service of the same name and namespace is exported."""

    namespace: str
    name: str
    annotations: Annotations = NONE

    @property
    def key(self) -> ServiceKey:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """One ServiceImport of the cluster globaldns runs in."""

    namespace: str
    name: str
    imported: ServiceImport
    ports: tuple[Port, ...] = ()

    @property
    def key(self) -> ServiceKey:
        return (self.namespace, self.name)


def _named(raw: dict[str, Any], kind: str) -> tuple[str, str]:
    namespace, name = object_key(raw)
    if not (is_label(name) and is_label(namespace)):
        raise ConversionError(f"{kind} {name!r} in namespace {namespace!r} is not a DNS name")
    return namespace, name


def service_export(raw: RawServiceExport, *, cluster: str,
                   skipped: Skipped | None = None) -> ExportRecord:
    namespace, name = _named(raw, "serviceexport")  # type: ignore[arg-type]
    found = read(raw["metadata"], skipped=skipped,
                        what=f"k8s/{cluster} serviceexport {namespace}/{name}")
    return ExportRecord(namespace, name, found)


def service_import(raw: RawServiceImport, *, cluster: str,
                   skipped: Skipped | None = None) -> ImportRecord:
    """A ServiceImport; ConversionError (`bad_service_import`) when it cannot be read."""
    namespace, name = _named(raw, "serviceimport")  # type: ignore[arg-type]
    what = f"k8s/{cluster} serviceimport {namespace}/{name}"
    spec = raw.get("spec") or {}
    kind = spec.get("type")
    if kind not in ("ClusterSetIP", "Headless"):
        raise BadImport(f"type {str(kind)[:40]!r} is neither ClusterSetIP nor Headless")
    ips: list[str] = []
    if kind == "ClusterSetIP":
        raw_ips = spec.get("ips") or []
        if not isinstance(raw_ips, list) or len(raw_ips) > MAX_IPS:
            raise BadImport(f"spec.ips is not a list of at most {MAX_IPS} addresses")
        for text in raw_ips:
            try:
                ips.append(canonical_ip(text if isinstance(text, str) else ""))
            except ValueError as exc:
                raise BadImport(f"spec.ips: {str(text)[:60]!r} is not an IP address") from exc
    return ImportRecord(namespace, name, ServiceImport(headless=kind == "Headless",
                                                      ips=tuple(dict.fromkeys(ips))),
                        ports_of(spec.get("ports"), what, skipped))


class BadImport(ConversionError):
    reason = "bad_service_import"
