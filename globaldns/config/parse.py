"""YAML text → validated Config. Every error names the file, the key path and the problem;
all errors are collected before failing, so `check-config` can print them together."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from globaldns.config.model import (
    AclConfig,
    AliasConfig,
    CacheConfig,
    ClientLocality,
    ClusterConfig,
    Config,
    DistributeConfig,
    DnsConfig,
    FailoverConfig,
    ForwardConfig,
    HealthCheckConfig,
    HttpConfig,
    ListenAddress,
    LogConfig,
    ReloadConfig,
    RemoteSecretsConfig,
    ResolverConfig,
    RoutingRule,
    StaticEndpoint,
    StaticService,
    SubsetConfig,
    ViewConfig,
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


# libyaml's safe loader when PyYAML was built with it: 7x faster on large configs.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

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
                               "tcp_message_timeout", "tcp_max_connections_per_client",
                               "tcp_max_inflight_per_connection", "max_inflight",
                               "workers"})
    base = DnsConfig()
    return DnsConfig(
        listen=r.get(d, "listen", "dns", listen_address, base.listen),
        tcp_idle_timeout=r.get(d, "tcp_idle_timeout", "dns", duration, base.tcp_idle_timeout),
        tcp_max_connections=r.get(d, "tcp_max_connections", "dns", integer(1, 1_000_000),
                                  base.tcp_max_connections),
        tcp_message_timeout=r.get(d, "tcp_message_timeout", "dns", positive_duration,
                                  base.tcp_message_timeout),
        tcp_max_connections_per_client=r.get(d, "tcp_max_connections_per_client", "dns",
                                             integer(1, 1_000_000),
                                             base.tcp_max_connections_per_client),
        tcp_max_inflight_per_connection=r.get(d, "tcp_max_inflight_per_connection", "dns",
                                              integer(1, 65_535),
                                              base.tcp_max_inflight_per_connection),
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
            kubeconfig=r.get(d, "kubeconfig", path, lambda v: _path(r.source, v), ""),
            context=r.get(d, "context", path, text, ""),
            in_cluster=r.get(d, "in_cluster", path, boolean, False),
            namespaces=tuple(r.get(d, "namespaces", path, _names, [])),
            label_selector=r.get(d, "label_selector", path, text, ""),
            stale_for=r.get(d, "stale_for", path, duration, base.stale_for),
            watch_idle_timeout=r.get(d, "watch_idle_timeout", path, positive_duration,
                                     base.watch_idle_timeout),
        )
        if len(set(cluster.namespaces)) != len(cluster.namespaces):
            r.error(f"{path}.namespaces", "lists a namespace twice")
        if cluster.kubeconfig and cluster.in_cluster:
            r.error(path, "give either kubeconfig or in_cluster, not both")
        if cluster.context and not cluster.kubeconfig:
            r.error(f"{path}.context", "needs kubeconfig")
        if any(c.name == cluster.name for c in clusters):
            r.error(f"{path}.name", f"cluster {cluster.name!r} is listed twice")
        clusters.append(cluster)
    return tuple(clusters)


def _path(source: str, value: Any) -> str:
    """A file named in the config: `~` expanded; relative to the config file's folder."""
    raw = Path(text(value)).expanduser()
    if not raw.is_absolute() and Path(source).is_file():
        raw = Path(source).resolve().parent / raw
    return str(raw)


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
        d = r.mapping(item, path, {"name", "namespace", "ports", "endpoints", "subsets",
                                   "health_check"})
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
                                      "labels", "weight", "health_check"})
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
                health_check=_health_check(r, ed.get("health_check"), f"{epath}.health_check"),
            ))
        if any(s.name == name and s.namespace == namespace for s in services):
            r.error(f"{path}.name", f"service {name}.{namespace} is listed twice")
        services.append(StaticService(
            name, namespace, tuple(ports), tuple(endpoints),
            subsets=_subsets(r, d.get("subsets"), f"{path}.subsets"),
            health_check=_health_check(r, d.get("health_check"), f"{path}.health_check")))
    return tuple(services)


def upstream(value: Any) -> tuple[ListenAddress, ...]:
    """`IP[:PORT]`, `[IPV6]:PORT`, a bare IPv6 address, or a file path such as
    /etc/resolv.conf, whose `nameserver` lines are taken (port 53)."""
    raw = text(value).strip()
    if raw.startswith(("/", "./", "../")):
        return _nameservers(raw)
    match = re.match(r"^\[([^\]]+)\](?::(\d+))?$", raw)
    if match:
        host, port = match.group(1), match.group(2)
    elif raw.count(":") > 1:
        host, port = raw, None
    else:
        host, _, port = raw.partition(":")
        port = port or None
    try:
        host = ip_address(host)
    except _Invalid:
        raise _Invalid(f"{raw!r} is not IP[:PORT] ([IPV6]:PORT) or a file path; "
                       "host names are not resolved") from None
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise _Invalid(f"{raw!r}: port {port!r} is out of range 1..65535")
    return (ListenAddress(host, int(port) if port else 53),)


def _nameservers(path: str) -> tuple[ListenAddress, ...]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise _Invalid(f"cannot read {path}: {exc.strerror}") from None
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                found.append(ListenAddress(ip_address(fields[1]), 53))
            except _Invalid:
                raise _Invalid(f"{path}: {fields[1]!r} is not an IP address") from None
    if not found:
        raise _Invalid(f"{path} has no nameserver lines")
    return tuple(found)


def positive_duration(value: Any) -> float:
    seconds = duration(value)
    if seconds <= 0:
        raise _Invalid(f"{value!r} must be more than zero")
    return seconds


def whole_seconds(value: Any) -> int:
    return round(duration(value))


def network(value: Any) -> str:
    try:
        return str(ipaddress.ip_network(str(value).strip(), strict=False))
    except ValueError:
        raise _Invalid(f"{value!r} is not an IP network (e.g. 10.0.0.0/8, fc00::/7)") from None


def _forward(r: _Reader, raw: Any, config: Config) -> tuple[ForwardConfig, ...]:
    served = [z.name for z in config.zones]
    listen = config.dns.listen
    forwards: list[ForwardConfig] = []
    for i, item in enumerate(r.sequence(raw, "forward")):
        path = f"forward[{i}]"
        d = r.mapping(item, path, {"zone", "upstreams", "policy", "timeout", "tries",
                                   "max_fails", "health_check", "force_tcp"})
        zone = r.required(d, "zone", path, domain, None)
        addresses: list[ListenAddress] = []
        for j, entry in enumerate(r.sequence(d.get("upstreams"), f"{path}.upstreams")):
            upath = f"{path}.upstreams[{j}]"
            try:
                found = upstream(entry)
            except _Invalid as exc:
                r.error(upath, str(exc))
                continue
            for address in found:
                if address.port == listen.port and (
                        address.host == listen.host
                        or (listen.host in ("0.0.0.0", "::")
                            and ipaddress.ip_address(address.host).is_loopback)):
                    r.error(upath, f"{address} is our own listen address (a forwarding loop)")
                addresses.append(address)
        if d.get("upstreams") is None:
            r.error(f"{path}.upstreams", "is required")
        elif d["upstreams"] == []:
            r.error(f"{path}.upstreams", "must list at least one upstream")
        base = ForwardConfig("", ())
        fc = ForwardConfig(
            zone=zone or "",
            upstreams=tuple(addresses),
            policy=r.get(d, "policy", path, choice("random", "round_robin", "sequential"),
                         base.policy),
            timeout=r.get(d, "timeout", path, positive_duration, base.timeout),
            tries=r.get(d, "tries", path, integer(1, 10), base.tries),
            max_fails=r.get(d, "max_fails", path, integer(0, 1000), base.max_fails),
            health_check=r.get(d, "health_check", path, positive_duration, base.health_check),
            force_tcp=r.get(d, "force_tcp", path, boolean, base.force_tcp),
        )
        if zone is not None:
            for name in served:
                if zone == name or zone.endswith("." + name):
                    r.error(f"{path}.zone", f"{zone!r} is inside the served zone {name!r} "
                            "(names in served zones are never forwarded)")
            if any(f.zone == zone for f in forwards):
                r.error(f"{path}.zone", f"zone {zone or '.'!r} is listed twice")
        forwards.append(fc)
    return tuple(forwards)


def _cache(r: _Reader, raw: Any) -> CacheConfig:
    d = r.mapping(raw, "cache", {"capacity", "min_ttl", "max_ttl", "prefetch", "serve_stale"})
    base = CacheConfig()
    cache = CacheConfig(
        capacity=r.get(d, "capacity", "cache", integer(0, 10_000_000), base.capacity),
        min_ttl=r.get(d, "min_ttl", "cache", whole_seconds, base.min_ttl),
        max_ttl=r.get(d, "max_ttl", "cache", whole_seconds, base.max_ttl),
        prefetch=r.get(d, "prefetch", "cache", boolean, base.prefetch),
        serve_stale=r.get(d, "serve_stale", "cache", whole_seconds, base.serve_stale),
    )
    if cache.min_ttl > cache.max_ttl:
        r.error("cache.min_ttl", f"{cache.min_ttl}s is more than max_ttl ({cache.max_ttl}s)")
    return cache


def _acl(r: _Reader, raw: Any) -> AclConfig:
    d = r.mapping(raw, "acl", {"allow_recursion", "allow_query", "allow_debug"})
    base = AclConfig()
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("allow_recursion", "allow_query", "allow_debug"):
        if key not in d or d[key] is None:
            lists[key] = getattr(base, key)
            continue
        nets = []
        for j, item in enumerate(r.sequence(d[key], f"acl.{key}")):
            try:
                nets.append(network(item))
            except _Invalid as exc:
                r.error(f"acl.{key}[{j}]", str(exc))
        lists[key] = tuple(nets)
    return AclConfig(**lists)


def _http(r: _Reader, raw: Any, dns: DnsConfig) -> HttpConfig:
    d = r.mapping(raw, "http", {"listen", "header_timeout", "max_connections"})
    base = HttpConfig()
    if "listen" in d and d["listen"] in ("", None, False):
        return HttpConfig(listen=None)
    http = HttpConfig(
        listen=r.get(d, "listen", "http", listen_address, base.listen),
        header_timeout=r.get(d, "header_timeout", "http", positive_duration,
                             base.header_timeout),
        max_connections=r.get(d, "max_connections", "http", integer(1, 100_000),
                              base.max_connections))
    if http.listen is not None and http.listen.port and http.listen == dns.listen:
        r.error("http.listen", f"{http.listen} is also dns.listen")
    return http


def fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise _Invalid(f"{value!r} is not a fraction between 0 and 1 (e.g. 0.01)")
    return float(value)


def _log(r: _Reader, raw: Any) -> LogConfig:
    d = r.mapping(raw, "log", {"queries", "sample", "file"})
    base = LogConfig()
    return LogConfig(queries=r.get(d, "queries", "log", boolean, base.queries),
                     sample=r.get(d, "sample", "log", fraction, base.sample),
                     file=r.get(d, "file", "log", lambda v: "" if v == "" else text(v),
                                base.file))


def _reload(r: _Reader, raw: Any) -> ReloadConfig:
    d = r.mapping(raw, "reload", {"interval"})
    base = ReloadConfig()
    return ReloadConfig(interval=r.get(d, "interval", "reload", duration, base.interval))


def status_range(value: Any) -> tuple[int, int]:
    match = re.match(r"^\s*(\d{3})\s*(?:-\s*(\d{3}))?\s*$", str(value))
    if not match:
        raise _Invalid(f"{value!r} is not a status or range (e.g. 200 or 200-399)")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if not 100 <= low <= high <= 599:
        raise _Invalid(f"{value!r} is not a range of HTTP statuses")
    return low, high


def _health_check(r: _Reader, raw: Any, path: str) -> HealthCheckConfig | None:
    if raw is None:
        return None
    d = r.mapping(raw, path, {"http", "tcp", "interval", "timeout", "healthy_threshold",
                              "unhealthy_threshold"})
    kinds = [k for k in ("http", "tcp") if k in d]
    if len(kinds) != 1:
        r.error(path, "needs exactly one of http or tcp")
        return None
    kind = kinds[0]
    kpath = f"{path}.{kind}"
    allowed = {"path", "port", "expect_status"} if kind == "http" else {"port"}
    kd = r.mapping(d[kind], kpath, allowed)
    base = HealthCheckConfig(kind, 0)
    check = HealthCheckConfig(
        kind=kind,
        port=r.required(kd, "port", kpath, integer(1, 65535), 0),
        path=r.get(kd, "path", kpath, text, base.path),
        expect_status=r.get(kd, "expect_status", kpath, status_range, base.expect_status),
        interval=r.get(d, "interval", path, positive_duration, base.interval),
        timeout=r.get(d, "timeout", path, positive_duration, base.timeout),
        healthy_threshold=r.get(d, "healthy_threshold", path, integer(1, 100),
                                base.healthy_threshold),
        unhealthy_threshold=r.get(d, "unhealthy_threshold", path, integer(1, 100),
                                  base.unhealthy_threshold),
    )
    if not check.path.startswith("/"):
        r.error(f"{kpath}.path", f"{check.path!r} must start with /")
    return check


def _subsets(r: _Reader, raw: Any, path: str) -> tuple[SubsetConfig, ...]:
    subsets: list[SubsetConfig] = []
    for i, item in enumerate(r.sequence(raw, path)):
        spath = f"{path}[{i}]"
        d = r.mapping(item, spath, {"name", "labels"})
        subset = SubsetConfig(name=r.required(d, "name", spath, dns_label, ""),
                              labels=r.required(d, "labels", spath, labels, ()))
        if subset.name.startswith("_"):
            r.error(f"{spath}.name", "must not start with '_' (SRV names do)")
        if any(x.name == subset.name for x in subsets):
            r.error(f"{spath}.name", f"subset {subset.name!r} is listed twice")
        subsets.append(subset)
    return tuple(subsets)


def _client_localities(r: _Reader, raw: Any) -> tuple[ClientLocality, ...]:
    out = []
    for i, item in enumerate(r.sequence(raw, "client_localities")):
        path = f"client_localities[{i}]"
        d = r.mapping(item, path, {"cidr", "locality"})
        out.append(ClientLocality(cidr=r.required(d, "cidr", path, network, "0.0.0.0/32"),
                                  locality=r.required(d, "locality", path, locality,
                                                      Locality())))
    return tuple(out)


_PATTERN = re.compile(r"^[a-z0-9*][a-z0-9*_.-]*(/[a-z0-9*][a-z0-9*_.-]*){0,2}$")


def pattern(value: Any) -> str:
    """A locality pattern: `us-central1/*`, `eu-*`, `us-east1`."""
    raw = text(value).lower().strip("/")
    if not _PATTERN.match(raw):
        raise _Invalid(f"{value!r} is not a locality pattern (region[/zone[/subzone]], * allowed)")
    return raw


_NO_WEIGHTS: tuple[tuple[str, int], ...] = ()


def weight_map(value: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, dict) or not value:
        raise _Invalid("must be a mapping of name: weight")
    out = []
    for key, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise _Invalid(f"weight of {key!r} must be a whole number >= 0, not {weight!r}")
        out.append((str(key).lower(), weight))
    if not any(w for _, w in out):
        raise _Invalid("at least one weight must be above 0")
    return tuple(out)


def min_healthy(value: Any) -> tuple[float, bool]:
    raw = str(value).strip()
    match = re.match(r"^(\d+(?:\.\d+)?)(%?)$", raw)
    if isinstance(value, bool) or not match:
        raise _Invalid(f"{value!r} is not a count or a percentage (e.g. 2 or 50%)")
    amount, percent = float(match.group(1)), bool(match.group(2))
    if percent and amount > 100:
        raise _Invalid(f"{value!r} is more than 100%")
    return amount, percent


def percentage(value: Any) -> float:
    raw = str(value).strip().rstrip("%")
    try:
        amount = float(raw)
    except ValueError:
        raise _Invalid(f"{value!r} is not a percentage (0-100)") from None
    if isinstance(value, bool) or not 0 <= amount <= 100:
        raise _Invalid(f"{value!r} is not a percentage (0-100)")
    return amount


def _routing(r: _Reader, raw: Any, clusters: tuple[ClusterConfig, ...]
             ) -> tuple[RoutingRule, ...]:
    known = {c.name for c in clusters}
    rules = []
    for i, item in enumerate(r.sequence(raw, "routing")):
        path = f"routing[{i}]"
        d = r.mapping(item, path, {"match", "distribute", "failover", "weights", "views",
                                   "answer", "spill", "min_healthy", "panic_threshold",
                                   "max_answers", "shuffle", "subsets"})
        match = r.required(d, "match", path, text, "")
        if match and not re.match(r"^[a-z0-9*_-]+\.[a-z0-9*_-]+$", match.lower()):
            r.error(f"{path}.match", f"{match!r} is not <service>.<namespace> (* allowed)")
        distribute = []
        for j, entry in enumerate(r.sequence(d.get("distribute"), f"{path}.distribute")):
            dpath = f"{path}.distribute[{j}]"
            dd = r.mapping(entry, dpath, {"from", "to"})
            distribute.append(DistributeConfig(
                source=r.required(dd, "from", dpath, pattern, "*"),
                to=tuple((pattern(k), w) for k, w in r.required(
                dd, "to", dpath, weight_map, _NO_WEIGHTS))))
        failover = []
        for j, entry in enumerate(r.sequence(d.get("failover"), f"{path}.failover")):
            fpath = f"{path}.failover[{j}]"
            fd = r.mapping(entry, fpath, {"from", "to"})
            failover.append(FailoverConfig(source=r.required(fd, "from", fpath, dns_label, ""),
                                           to=r.required(fd, "to", fpath, dns_label, "")))
        weights = r.get(d, "weights", path, weight_map, _NO_WEIGHTS)
        for name, _ in weights:
            if name not in known:
                r.error(f"{path}.weights.{name}", f"{name!r} is not a cluster listed in clusters")
        views = []
        for j, entry in enumerate(r.sequence(d.get("views"), f"{path}.views")):
            vpath = f"{path}.views[{j}]"
            vd = r.mapping(entry, vpath, {"clients", "localities", "clusters", "labels"})
            view = ViewConfig(
                clients=tuple(r.get(vd, "clients", vpath,
                                    lambda v: [network(x) for x in _list(v)], [])),
                localities=tuple(r.get(vd, "localities", vpath,
                                       lambda v: [pattern(x) for x in _list(v)], [])),
                clusters=tuple(r.get(vd, "clusters", vpath, _names, [])),
                labels=r.get(vd, "labels", vpath, labels, ()),
            )
            if not view.clients and not view.localities:
                r.error(vpath, "needs clients or localities to match")
            if not view.clusters and not view.labels:
                r.error(vpath, "needs clusters or labels to restrict the answer to")
            views.append(view)
        rule = RoutingRule(
            match=match.lower(),
            distribute=tuple(distribute),
            failover=tuple(failover),
            weights=weights,
            views=tuple(views),
            answer=r.get(d, "answer", path, choice("all", "best_tier"), "all"),
            spill=r.get(d, "spill", path, integer(0, 1000), 0),
            min_healthy=r.get(d, "min_healthy", path, min_healthy, (0.0, False)),
            panic_threshold=r.get(d, "panic_threshold", path, percentage, 0.0),
            max_answers=r.get(d, "max_answers", path, integer(0, 1000), None),
            shuffle=r.get(d, "shuffle", path, boolean, True),
            subsets=_subsets(r, d.get("subsets"), f"{path}.subsets"),
        )
        if rule.weights and rule.distribute:
            r.error(path, "give weights (per cluster) or distribute (per locality), not both")
        rules.append(rule)
    return tuple(rules)


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise _Invalid("must be a list")
    return value


def _aliases(r: _Reader, raw: Any) -> tuple[AliasConfig, ...]:
    out: list[AliasConfig] = []
    for i, item in enumerate(r.sequence(raw, "aliases")):
        path = f"aliases[{i}]"
        d = r.mapping(item, path, {"name", "target", "mode"})
        alias = AliasConfig(name=r.required(d, "name", path, domain, ""),
                            target=r.required(d, "target", path, domain, ""),
                            mode=r.get(d, "mode", path, choice("cname", "flatten"), "cname"))
        if any(a.name == alias.name for a in out):
            r.error(f"{path}.name", f"alias {alias.name!r} is listed twice")
        out.append(alias)
    return tuple(out)


_TOP = {"dns", "resolver", "zones", "clusters", "remote_secrets", "sync_timeout", "services",
        "forward", "cache", "acl", "client_localities", "routing", "aliases", "http", "log",
        "reload"}


def parse_text(content: str, source: str) -> Config:
    """Parse and validate; raises ConfigError with every problem found."""
    r = _Reader(source)
    try:
        raw = yaml.load(content, Loader=_LOADER)
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
        client_localities=_client_localities(r, top.get("client_localities")),
        routing=_routing(r, top.get("routing"), clusters),
        aliases=_aliases(r, top.get("aliases")),
    )
    config = dataclasses.replace(config, forward=_forward(r, top.get("forward"), config),
                                 cache=_cache(r, top.get("cache")), acl=_acl(r, top.get("acl")),
                                 http=_http(r, top.get("http"), config.dns),
                                 log=_log(r, top.get("log")),
                                 reload=_reload(r, top.get("reload")))
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
