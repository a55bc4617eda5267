"""YAML text → validated Config. Every error names the file, the key path and the problem;
all errors are collected before failing, so `check-config` can print them together."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from globaldns.config.model import (
    ClusterConfig,
    Config,
    DnsConfig,
    ListenAddress,
    RemoteSecretsConfig,
    ResolverConfig,
    StaticEndpoint,
    StaticService,
    ZoneConfig,
)
from globaldns.registry.model import Locality, Port

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration that cannot be used; `errors` holds one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class _Invalid(Exception):
    pass


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_DNS_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


class _Reader:
    """Walks the YAML tree, converting values and collecting errors with key paths."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[str] = []

    def error(self, path: str, problem: str) -> None:
        where = f"{path}: " if path else ""
        self.errors.append(f"{self.source}: {where}{problem}")

    def mapping(self, value: Any, path: str, allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping, not {_kind(value)}")
            return {}
        for key in value:
            if key not in allowed:
                where = f"{path}.{key}" if path else str(key)
                self.error(where, f"unknown key (expected one of: {', '.join(sorted(allowed))})")
        return value

    def sequence(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(path, f"must be a list, not {_kind(value)}")
            return []
        return value

    def get(self, data: dict[str, Any], key: str, path: str, convert: Callable[[Any], T],
            default: T) -> T:
        if key not in data or data[key] is None:
            return default
        where = f"{path}.{key}" if path else key
        try:
            return convert(data[key])
        except _Invalid as exc:
            self.error(where, str(exc))
            return default

    def required(self, data: dict[str, Any], key: str, path: str, convert: Callable[[Any], T],
                 default: T) -> T:
        if key not in data or data[key] is None:
            self.error(f"{path}.{key}" if path else key, "is required")
            return default
        return self.get(data, key, path, convert, default)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def duration(value: Any) -> float:
    if isinstance(value, bool):
        raise _Invalid(f"{value!r} is not a duration (e.g. 500ms, 10s, 5m)")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).strip())
        if not match:
            raise _Invalid(f"{value!r} is not a duration (e.g. 500ms, 10s, 5m)")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0:
        raise _Invalid(f"{value!r} must not be negative")
    return seconds


def integer(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"{value!r} is not an integer")
        if not low <= value <= high:
            raise _Invalid(f"{value} is out of range {low}..{high}")
        return value
    return convert


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"{value!r} is not true or false")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid(f"{value!r} is not a non-empty string")
    return value


def choice(*options: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in options:
            raise _Invalid(f"{value!r} is not one of: {', '.join(options)}")
        return str(value)
    return convert


def ip_address(value: Any) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise _Invalid(f"{value!r} is not an IP address") from None


def locality(value: Any) -> Locality:
    try:
        return Locality.parse(text(value))
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def dns_label(value: Any) -> str:
    label = text(value).lower()
    if not _DNS_LABEL.match(label):
        raise _Invalid(f"{value!r} is not a DNS label (letters, digits, '-', at most 63)")
    return label


def domain(value: Any) -> str:
    name = text(value).strip().lower().rstrip(".")
    if name and not all(_DNS_LABEL.match(label) for label in name.split(".")):
        raise _Invalid(f"{value!r} is not a domain name")
    return name


def listen_address(value: Any) -> ListenAddress:
    raw = str(value)
    match = re.match(r"^\[([0-9a-fA-F:.]+)\]:(\d+)$", raw) or re.match(r"^([^:]+):(\d+)$", raw)
    if not match:
        raise _Invalid(f"{raw!r} is not HOST:PORT (IPv6 as [::1]:PORT)")
    host, port = match.group(1), int(match.group(2))
    host = ip_address(host) if host != "localhost" else "127.0.0.1"
    if not 0 <= port <= 65535:
        raise _Invalid(f"port {port} is out of range 0..65535")
    return ListenAddress(host, port)


def labels(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise _Invalid("must be a mapping of label: value")
    return tuple(sorted((str(k), str(v)) for k, v in value.items()))


def _dns(r: _Reader, raw: Any) -> DnsConfig:
    d = r.mapping(raw, "dns", {"listen", "tcp_idle_timeout", "tcp_max_connections",
                               "max_inflight", "workers"})
    base = DnsConfig()
    return DnsConfig(
        listen=r.get(d, "listen", "dns", listen_address, base.listen),
        tcp_idle_timeout=r.get(d, "tcp_idle_timeout", "dns", duration, base.tcp_idle_timeout),
        tcp_max_connections=r.get(d, "tcp_max_connections", "dns", integer(1, 1_000_000),
                                  base.tcp_max_connections),
        max_inflight=r.get(d, "max_inflight", "dns", integer(1, 1_000_000), base.max_inflight),
        workers=r.get(d, "workers", "dns", integer(1, 64), base.workers),
    )


def _resolver(r: _Reader, raw: Any) -> ResolverConfig:
    d = r.mapping(raw, "resolver", {"locality", "instance"})
    return ResolverConfig(
        locality=r.get(d, "locality", "resolver", locality, Locality()),
        instance=r.get(d, "instance", "resolver", text, ""),
    )


def _zones(r: _Reader, raw: Any) -> tuple[ZoneConfig, ...]:
    if raw is None:
        return Config().zones
    zones: list[ZoneConfig] = []
    for i, item in enumerate(r.sequence(raw, "zones")):
        path = f"zones[{i}]"
        d = r.mapping(item, path, {"name", "ttl", "negative_ttl", "max_answers",
                                   "on_all_unhealthy"})
        zone = ZoneConfig(
            name=r.required(d, "name", path, domain, f"invalid-{i}"),
            ttl=r.get(d, "ttl", path, integer(0, 86400), 5),
            negative_ttl=r.get(d, "negative_ttl", path, integer(0, 86400), 5),
            max_answers=r.get(d, "max_answers", path, integer(0, 1000), 0),
            on_all_unhealthy=r.get(d, "on_all_unhealthy", path, choice("all", "none"), "all"),
        )
        if not zone.name and "name" in d:
            r.error(f"{path}.name", "the root zone cannot be served (use forward for it)")
        if any(z.name == zone.name for z in zones):
            r.error(f"{path}.name", f"zone {zone.name!r} is listed twice")
        zones.append(zone)
    if not zones:
        r.error("zones", "at least one zone is required")
    return tuple(zones)


def _clusters(r: _Reader, raw: Any) -> tuple[ClusterConfig, ...]:
    clusters: list[ClusterConfig] = []
    for i, item in enumerate(r.sequence(raw, "clusters")):
        path = f"clusters[{i}]"
        d = r.mapping(item, path, {"name", "locality", "kubeconfig", "context", "in_cluster",
                                   "namespaces", "label_selector", "stale_for",
                                   "watch_idle_timeout"})
        base = ClusterConfig("")
        cluster = ClusterConfig(
            name=r.required(d, "name", path, dns_label, f"invalid-{i}"),
            locality=r.get(d, "locality", path, locality, Locality()),
            kubeconfig=r.get(d, "kubeconfig", path, text, ""),
            context=r.get(d, "context", path, text, ""),
            in_cluster=r.get(d, "in_cluster", path, boolean, False),
            namespaces=tuple(r.get(d, "namespaces", path, _names, [])),
            label_selector=r.get(d, "label_selector", path, text, ""),
            stale_for=r.get(d, "stale_for", path, duration, base.stale_for),
            watch_idle_timeout=r.get(d, "watch_idle_timeout", path, duration,
                                     base.watch_idle_timeout),
        )
        if cluster.kubeconfig and cluster.in_cluster:
            r.error(path, "give either kubeconfig or in_cluster, not both")
        if cluster.context and not cluster.kubeconfig:
            r.error(f"{path}.context", "needs kubeconfig")
        if any(c.name == cluster.name for c in clusters):
            r.error(f"{path}.name", f"cluster {cluster.name!r} is listed twice")
        clusters.append(cluster)
    return tuple(clusters)


def _names(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise _Invalid("must be a list of names")
    return [dns_label(v) for v in value]


def _remote_secrets(r: _Reader, raw: Any, clusters: tuple[ClusterConfig, ...]
                    ) -> RemoteSecretsConfig | None:
    if raw is None:
        return None
    d = r.mapping(raw, "remote_secrets", {"cluster", "namespace", "label"})
    base = RemoteSecretsConfig("")
    rs = RemoteSecretsConfig(
        cluster=r.required(d, "cluster", "remote_secrets", dns_label, ""),
        namespace=r.get(d, "namespace", "remote_secrets", dns_label, base.namespace),
        label=r.get(d, "label", "remote_secrets", text, base.label),
    )
    host = next((c for c in clusters if c.name == rs.cluster), None)
    if rs.cluster and (host is None or not host.watched):
        r.error("remote_secrets.cluster",
                f"{rs.cluster!r} is not a cluster with kubeconfig or in_cluster")
    return rs


def _services(r: _Reader, raw: Any, clusters: tuple[ClusterConfig, ...]
              ) -> tuple[StaticService, ...]:
    by_name = {c.name: c for c in clusters}
    services: list[StaticService] = []
    for i, item in enumerate(r.sequence(raw, "services")):
        path = f"services[{i}]"
        d = r.mapping(item, path, {"name", "namespace", "ports", "endpoints"})
        name = r.required(d, "name", path, dns_label, "")
        namespace = r.required(d, "namespace", path, dns_label, "")
        ports: list[Port] = []
        for j, p in enumerate(r.sequence(d.get("ports"), f"{path}.ports")):
            ppath = f"{path}.ports[{j}]"
            pd = r.mapping(p, ppath, {"name", "port", "protocol"})
            ports.append(Port(
                name=r.required(pd, "name", ppath, dns_label, ""),
                port=r.required(pd, "port", ppath, integer(1, 65535), 0),
                protocol=r.get(pd, "protocol", ppath,
                               lambda v: choice("tcp", "udp", "sctp")(str(v).lower()), "tcp"),
            ))
        endpoints: list[StaticEndpoint] = []
        for j, e in enumerate(r.sequence(d.get("endpoints"), f"{path}.endpoints")):
            epath = f"{path}.endpoints[{j}]"
            ed = r.mapping(e, epath, {"address", "cluster", "locality", "ready", "hostname",
                                      "labels", "weight"})
            cluster = r.required(ed, "cluster", epath, dns_label, "")
            if cluster and cluster not in by_name:
                r.error(f"{epath}.cluster", f"{cluster!r} is not a cluster listed in clusters")
            default_locality = by_name[cluster].locality if cluster in by_name else Locality()
            endpoints.append(StaticEndpoint(
                address=r.required(ed, "address", epath, ip_address, "0.0.0.0"),
                cluster=cluster,
                locality=r.get(ed, "locality", epath, locality, default_locality),
                ready=r.get(ed, "ready", epath, boolean, True),
                hostname=r.get(ed, "hostname", epath, dns_label, ""),
                labels=r.get(ed, "labels", epath, labels, ()),
                weight=r.get(ed, "weight", epath, integer(0, 1_000_000), 1),
            ))
        if any(s.name == name and s.namespace == namespace for s in services):
            r.error(f"{path}.name", f"service {name}.{namespace} is listed twice")
        services.append(StaticService(name, namespace, tuple(ports), tuple(endpoints)))
    return tuple(services)


_TOP = {"dns", "resolver", "zones", "clusters", "remote_secrets", "sync_timeout", "services"}


def parse_text(content: str, source: str) -> Config:
    """Parse and validate; raises ConfigError with every problem found."""
    r = _Reader(source)
    try:
        raw = yaml.safe_load(content)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{source}: {where}not valid YAML: "
                           f"{getattr(exc, 'problem', None) or exc}"]) from exc
    top = r.mapping(raw, "", _TOP)
    clusters = _clusters(r, top.get("clusters"))
    config = Config(
        source=source,
        dns=_dns(r, top.get("dns")),
        resolver=_resolver(r, top.get("resolver")),
        zones=_zones(r, top.get("zones")),
        clusters=clusters,
        remote_secrets=_remote_secrets(r, top.get("remote_secrets"), clusters),
        sync_timeout=r.get(top, "sync_timeout", "", duration, 30.0),
        services=_services(r, top.get("services"), clusters),
    )
    if r.errors:
        raise ConfigError(r.errors)
    return config


def load(path: str | Path) -> Config:
    try:
        content = Path(path).read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    return parse_text(content, str(path))


def load_default() -> Config:
    content = resources.files("globaldns.config").joinpath("default.yaml").read_text()
    return parse_text(content, "<embedded default>")
