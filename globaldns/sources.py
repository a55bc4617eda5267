"""The static source: services and endpoints written in the config file."""

from __future__ import annotations

from globaldns.config.model import Config
from globaldns.registry.model import Endpoint, ServiceData, ServiceKey
from globaldns.registry.store import Store

STATIC = "static"


def static_services(config: Config) -> dict[ServiceKey, ServiceData]:
    out: dict[ServiceKey, ServiceData] = {}
    for service in config.services:
        endpoints = tuple(
            Endpoint(address=e.address, cluster=e.cluster, locality=e.locality, ready=e.ready,
                     hostname=e.hostname, labels=e.labels, weight=e.weight)
            for e in service.endpoints)
        out[(service.namespace, service.name)] = ServiceData(ports=service.ports,
                                                             endpoints=endpoints)
    return out


def apply_static(store: Store, config: Config) -> None:
    store.replace_source(STATIC, static_services(config))
