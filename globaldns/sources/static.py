"""The static sources: services and endpoints written in the config file (`static`), and
the config's ServiceEntry-shaped `service_entries` (`service_entries`, docs/istio.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from globaldns.config.model import Config, HealthCheckConfig, StaticEndpoint, StaticService
from globaldns.registry import istio
from globaldns.registry.model import Endpoint, ServiceData, ServiceKey
from globaldns.registry.store import Store

STATIC = "static"
SERVICE_ENTRIES = "service_entries"


class HealthKey(NamedTuple):
    """One active health check: a static endpoint's address probed with its check."""

    service: ServiceKey
    address: str
    check: HealthCheckConfig


def health_key(service: StaticService, endpoint: StaticEndpoint) -> HealthKey | None:
    """The endpoint's check: its own `health_check`, else its service's, else none."""
    check = endpoint.health_check or service.health_check
    if check is None:
        return None
    return HealthKey((service.namespace, service.name), endpoint.address, check)


def static_service(service: StaticService,
                   health: Mapping[HealthKey, bool] | None = None) -> ServiceData:
    """One service's data; an endpoint is ready when the config says so and its health
    check (if any, and if it has a result in `health`) says healthy."""
    endpoints = []
    for e in service.endpoints:
        ready = e.ready
        if ready and health:
            key = health_key(service, e)
            ready = key is None or health.get(key, True)
        endpoints.append(Endpoint(address=e.address, cluster=e.cluster, locality=e.locality,
                                  ready=ready, hostname=e.hostname, labels=e.labels,
                                  weight=e.weight))
    return ServiceData(ports=service.ports, endpoints=tuple(endpoints))


def static_services(config: Config, health: Mapping[HealthKey, bool] | None = None,
                    ) -> dict[ServiceKey, ServiceData]:
    return {(s.namespace, s.name): static_service(s, health) for s in config.services}


def apply_static(store: Store, config: Config,
                 health: Mapping[HealthKey, bool] | None = None) -> None:
    store.replace_source(STATIC, static_services(config, health))
    apply_service_entries(store, config)


def apply_service_entries(store: Store, config: Config) -> None:
    """The config's `service_entries`, one ServiceData per host (checked when parsed)."""
    store.replace_source(SERVICE_ENTRIES, istio.services(
        config.service_entries, (), max_endpoints=config.limits.max_endpoints_per_service,
        skip=lambda reason, detail: store.skipped.skip(reason, SERVICE_ENTRIES, detail)))
