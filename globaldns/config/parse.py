"""YAML text → validated Config. Every error names the file, the key path and the problem;
all errors are collected before failing, so `check-config` can print them together."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
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
    CookiesConfig,
    DistributeConfig,
    DnsConfig,
    FailoverConfig,
    ForwardConfig,
    HealthCheckConfig,
    HttpConfig,
    LimitsConfig,
    ListenAddress,
    LogConfig,
    RateLimitConfig,
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
from globaldns.config.values import (
    Invalid,
    boolean,
    byte_size,
    choice,
    cluster_name,
    dns_label,
    domain,
    duration,
    fraction,
    integer,
    ip_address,
    kind,
    label_selector,
    labels,
    listen_address,
    locality,
    min_healthy,
    namespace,
    network,
    pattern,
    percentage,
    positive_duration,
    read_bounded,
    scalar,
    seconds,
    serve_host,
    show,
    status_range,
    text,
    upstream,
    weight_map,
    whole_seconds,
)
from globaldns.dns.cookies import read_secret_file
from globaldns.registry import istio
from globaldns.registry.model import Locality, Port

T = TypeVar("T")

log = logging.getLogger("globaldns.config")


class ConfigError(Exception):
    """A configuration that cannot be used; `errors` holds one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# libyaml's safe loader when PyYAML was built with it: 7x faster on large configs.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# A bound on what is parsed at all: a config file (parsed on every reload) is a few KB;
# this leaves room for thousands of services.
MAX_CONFIG_BYTES = 16 * 1024 * 1024

# The model's defaults for items that have required fields (read by the parsers below).
_ENDPOINT = StaticEndpoint("", "", Locality())
_PORT = Port("", 0)
_RULE = RoutingRule("")
_ALIAS = AliasConfig("", "")


class _Reader:
    """Walks the YAML tree, converting values and collecting errors with key paths."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[str] = []
        self.at = ""
        """The key path being read: where an unexpected exception is reported."""

    def error(self, path: str, problem: str) -> None:
        where = f"{path}: " if path else ""
        self.errors.append(f"{self.source}: {where}{problem}")

    def mapping(self, value: Any, path: str, allowed: set[str]) -> dict[str, Any]:
        self.at = path
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping, not {kind(value)}")
            return {}
        for key in value:
            if key not in allowed:
                where = f"{path}.{key}" if path else str(key)
                self.error(where, f"unknown key (expected one of: {', '.join(sorted(allowed))})")
        return value

    def sequence(self, value: Any, path: str) -> list[Any]:
        self.at = path
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(path, f"must be a list, not {kind(value)}")
            return []
        return value

    def get(self, data: dict[str, Any], key: str, path: str, convert: Callable[[Any], T],
            default: T) -> T:
        if key not in data or data[key] is None:
            return default
        where = self.at = f"{path}.{key}" if path else key
        try:
            return convert(data[key])
        except Invalid as exc:
            self.error(where, str(exc))
            return default

    def items(self, data: dict[str, Any], key: str, path: str,
              convert: Callable[[Any], T]) -> list[T]:
        """A list of values, each converted; an error names the item's index."""
        where = f"{path}.{key}" if path else key
        out: list[T] = []
        for j, item in enumerate(self.sequence(data.get(key), where)):
            self.at = f"{where}[{j}]"
            try:
                out.append(convert(item))
            except Invalid as exc:
                self.error(self.at, str(exc))
        return out

    def required(self, data: dict[str, Any], key: str, path: str, convert: Callable[[Any], T],
                 default: T) -> T:
        if key not in data or data[key] is None:
            self.error(f"{path}.{key}" if path else key, "is required")
            return default
        return self.get(data, key, path, convert, default)


def _dns(r: _Reader, raw: Any) -> DnsConfig:
    d = r.mapping(raw, "dns", {"listen", "tcp_idle_timeout", "tcp_max_connections",
                               "tcp_message_timeout", "tcp_max_connections_per_client",
                               "tcp_max_inflight_per_connection", "max_inflight",
                               "workers", "lameduck", "worker_heartbeat"})
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
        lameduck=r.get(d, "lameduck", "dns", duration, base.lameduck),
        worker_heartbeat=r.get(d, "worker_heartbeat", "dns", positive_duration,
                               base.worker_heartbeat),
    )


def _resolver(r: _Reader, raw: Any) -> ResolverConfig:
    d = r.mapping(raw, "resolver", {"locality", "instance"})
    base = ResolverConfig()
    return ResolverConfig(
        locality=r.get(d, "locality", "resolver", locality, base.locality),
        instance=r.get(d, "instance", "resolver", text, base.instance),
    )


def _zones(r: _Reader, raw: Any) -> tuple[ZoneConfig, ...]:
    if raw is None:
        return Config().zones
    zones: list[ZoneConfig] = []
    seen: set[str] = set()
    for i, item in enumerate(r.sequence(raw, "zones")):
        path = f"zones[{i}]"
        d = r.mapping(item, path, {"name", "ttl", "negative_ttl", "max_answers",
                                   "on_all_unhealthy"})
        base = ZoneConfig("")
        zone = ZoneConfig(
            name=r.required(d, "name", path, domain, f"invalid-{i}"),
            ttl=r.get(d, "ttl", path, seconds(0, 86400), base.ttl),
            negative_ttl=r.get(d, "negative_ttl", path, seconds(0, 86400), base.negative_ttl),
            max_answers=r.get(d, "max_answers", path, integer(0, 1000), base.max_answers),
            on_all_unhealthy=r.get(d, "on_all_unhealthy", path, choice("all", "none"),
                                   base.on_all_unhealthy),
        )
        if not zone.name and "name" in d:
            r.error(f"{path}.name", "the root zone cannot be served (use forward for it)")
        if zone.name in seen:
            r.error(f"{path}.name", f"zone {show(zone.name)} is listed twice")
        seen.add(zone.name)
        zones.append(zone)
    if not zones:
        r.error("zones", "at least one zone is required")
    return tuple(zones)


def _clusters(r: _Reader, raw: Any) -> tuple[ClusterConfig, ...]:
    clusters: list[ClusterConfig] = []
    seen: set[str] = set()
    for i, item in enumerate(r.sequence(raw, "clusters")):
        path = f"clusters[{i}]"
        d = r.mapping(item, path, {"name", "locality", "kubeconfig", "context", "in_cluster",
                                   "namespaces", "label_selector", "stale_for",
                                   "watch_idle_timeout", "allow_special_addresses", "export",
                                   "service_imports", "istio"})
        base = ClusterConfig("")
        cluster = ClusterConfig(
            name=r.required(d, "name", path, cluster_name, f"invalid-{i}"),
            locality=r.get(d, "locality", path, locality, base.locality),
            kubeconfig=r.get(d, "kubeconfig", path, lambda v: _path(r.source, v),
                             base.kubeconfig),
            context=r.get(d, "context", path, text, base.context),
            in_cluster=r.get(d, "in_cluster", path, boolean, base.in_cluster),
            namespaces=tuple(r.items(d, "namespaces", path, namespace)),
            label_selector=r.get(d, "label_selector", path, label_selector,
                                 base.label_selector),
            stale_for=r.get(d, "stale_for", path, duration, base.stale_for),
            watch_idle_timeout=r.get(d, "watch_idle_timeout", path, positive_duration,
                                     base.watch_idle_timeout),
            allow_special_addresses=r.get(d, "allow_special_addresses", path, boolean,
                                          base.allow_special_addresses),
            export=r.get(d, "export", path, choice("all", "service_export", "labeled"),
                         base.export),
            service_imports=r.get(d, "service_imports", path, boolean, base.service_imports),
            istio=r.get(d, "istio", path, boolean, base.istio),
        )
        if len(set(cluster.namespaces)) != len(cluster.namespaces):
            r.error(f"{path}.namespaces", "lists a namespace twice")
        if cluster.kubeconfig and cluster.in_cluster:
            r.error(path, "give either kubeconfig or in_cluster, not both")
        if cluster.context and not cluster.kubeconfig:
            r.error(f"{path}.context", "needs kubeconfig")
        if cluster.kubeconfig and not cluster.in_cluster and Path(r.source).is_file():
            found = _kubeconfig_problem(cluster.kubeconfig, cluster.context)
            if found:
                r.error(f"{path}.{found[0]}", found[1])
        if cluster.name in seen:
            r.error(f"{path}.name", f"cluster {show(cluster.name)} is listed twice")
        seen.add(cluster.name)
        clusters.append(cluster)
    return tuple(clusters)


def _kubeconfig_problem(path: str, context: str) -> tuple[str, str] | None:
    """(key, problem) when the kubeconfig cannot be read or lacks the context. Messages
    quote names and positions only: the file holds credentials. Checked only for a config
    read from a file: a config text alone (a docs example) names another machine's files."""
    try:
        raw = yaml.load(read_bounded(path), Loader=_LOADER)
    except OSError as exc:
        return "kubeconfig", f"cannot read {path}: {exc.strerror}"
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        return "kubeconfig", f"{path} is not valid YAML{where}"
    contexts = raw.get("contexts") if isinstance(raw, dict) else None
    names = {c["name"] for c in contexts if isinstance(c, dict) and isinstance(c.get("name"), str)
             } if isinstance(contexts, list) else set()
    if not names:
        return "kubeconfig", f"{path} has no contexts"
    if context:
        if context not in names:
            return "context", f"{show(context)} is not a context in {path}"
        return None
    current = raw.get("current-context")
    if not current or not isinstance(current, str):
        return "context", f"is required: {path} has no current-context"
    if current not in names:
        return "kubeconfig", f"its current-context {show(current)} is not one of its contexts"
    return None


def _path(source: str, value: Any) -> str:
    """A file named in the config: `~` expanded; relative to the config file's folder."""
    try:
        raw = Path(text(value)).expanduser()
    except RuntimeError:  # `~user/...` for a user without a home directory here
        raise Invalid(f"{show(value)}: its ~ names no home directory on this host") from None
    if not raw.is_absolute() and Path(source).is_file():
        raw = Path(source).resolve().parent / raw
    return str(raw)


def _remote_secrets(r: _Reader, raw: Any, clusters: tuple[ClusterConfig, ...]
                    ) -> RemoteSecretsConfig | None:
    if raw is None:
        return None
    d = r.mapping(raw, "remote_secrets", {"cluster", "namespace", "label", "allow_insecure"})
    base = RemoteSecretsConfig("")
    rs = RemoteSecretsConfig(
        cluster=r.required(d, "cluster", "remote_secrets", cluster_name, ""),
        namespace=r.get(d, "namespace", "remote_secrets", namespace, base.namespace),
        label=r.get(d, "label", "remote_secrets", label_selector, base.label),
        allow_insecure=r.get(d, "allow_insecure", "remote_secrets", boolean,
                             base.allow_insecure),
    )
    host = next((c for c in clusters if c.name == rs.cluster), None)
    if rs.cluster and (host is None or not host.watched):
        r.error("remote_secrets.cluster",
                f"{show(rs.cluster)} is not a cluster with kubeconfig or in_cluster")
    return rs


def _services(r: _Reader, raw: Any, clusters: tuple[ClusterConfig, ...]
              ) -> tuple[StaticService, ...]:
    by_name = {c.name: c for c in clusters}
    services: list[StaticService] = []
    seen: set[tuple[str, str]] = set()
    for i, item in enumerate(r.sequence(raw, "services")):
        path = f"services[{i}]"
        d = r.mapping(item, path, {"name", "namespace", "ports", "endpoints", "subsets",
                                   "health_check"})
        name = r.required(d, "name", path, dns_label, "")
        namespace_ = r.required(d, "namespace", path, namespace, "")
        ports: list[Port] = []
        for j, p in enumerate(r.sequence(d.get("ports"), f"{path}.ports")):
            ppath = f"{path}.ports[{j}]"
            pd = r.mapping(p, ppath, {"name", "port", "protocol"})
            ports.append(Port(
                name=r.required(pd, "name", ppath, dns_label, ""),
                port=r.required(pd, "port", ppath, integer(1, 65535), 0),
                protocol=r.get(pd, "protocol", ppath,
                               lambda v: choice("tcp", "udp", "sctp")(scalar(v).lower()),
                               _PORT.protocol),
            ))
        endpoints: list[StaticEndpoint] = []
        for j, e in enumerate(r.sequence(d.get("endpoints"), f"{path}.endpoints")):
            epath = f"{path}.endpoints[{j}]"
            ed = r.mapping(e, epath, {"address", "cluster", "locality", "ready", "hostname",
                                      "labels", "weight", "health_check"})
            cluster = r.required(ed, "cluster", epath, cluster_name, "")
            if cluster and cluster not in by_name:
                r.error(f"{epath}.cluster", f"{show(cluster)} is not a cluster listed in clusters")
            default_locality = by_name[cluster].locality if cluster in by_name else Locality()
            endpoints.append(StaticEndpoint(
                address=r.required(ed, "address", epath, ip_address, "0.0.0.0"),
                cluster=cluster,
                locality=r.get(ed, "locality", epath, locality, default_locality),
                ready=r.get(ed, "ready", epath, boolean, _ENDPOINT.ready),
                hostname=r.get(ed, "hostname", epath, dns_label, _ENDPOINT.hostname),
                labels=r.get(ed, "labels", epath, labels, _ENDPOINT.labels),
                weight=r.get(ed, "weight", epath, integer(0, 1_000_000), _ENDPOINT.weight),
                health_check=_health_check(r, ed.get("health_check"), f"{epath}.health_check"),
            ))
        if (name, namespace_) in seen:
            r.error(f"{path}.name", f"service {name}.{namespace_} is listed twice")
        seen.add((name, namespace_))
        services.append(StaticService(
            name, namespace_, tuple(ports), tuple(endpoints),
            subsets=_subsets(r, d.get("subsets"), f"{path}.subsets"),
            health_check=_health_check(r, d.get("health_check"), f"{path}.health_check")))
    return tuple(services)


def _forward(r: _Reader, raw: Any, config: Config) -> tuple[ForwardConfig, ...]:
    served = [z.name for z in config.zones]
    listen = config.dns.listen
    forwards: list[ForwardConfig] = []
    for i, item in enumerate(r.sequence(raw, "forward")):
        path = f"forward[{i}]"
        d = r.mapping(item, path, {"zone", "upstreams", "policy", "timeout", "tries",
                                   "max_fails", "probe_interval", "health_check", "force_tcp"})
        if "health_check" in d:
            # The old name (CoreDNS's): `health_check` now means the active checks of
            # services[] only. Still read, with a warning, so an old config keeps working.
            if "probe_interval" in d:
                r.error(f"{path}.health_check", "is the old name of probe_interval; give one")
            else:
                log.warning("%s: %s.health_check is deprecated: call it probe_interval",
                            r.source, path)
                d = {**d, "probe_interval": d["health_check"]}
        zone = r.required(d, "zone", path, domain, None)
        addresses: list[ListenAddress] = []
        for j, entry in enumerate(r.sequence(d.get("upstreams"), f"{path}.upstreams")):
            upath = f"{path}.upstreams[{j}]"
            try:
                found = upstream(entry)
            except Invalid as exc:
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
            probe_interval=r.get(d, "probe_interval", path, positive_duration,
                                 base.probe_interval),
            force_tcp=r.get(d, "force_tcp", path, boolean, base.force_tcp),
        )
        if zone is not None:
            for name in served:
                if zone == name or zone.endswith("." + name):
                    r.error(f"{path}.zone", f"{show(zone)} is inside the served zone "
                            f"{show(name)} (names in served zones are never forwarded)")
            if zone in {f.zone for f in forwards}:
                r.error(f"{path}.zone", f"zone {show(zone or '.')} is listed twice")
        forwards.append(fc)
    return tuple(forwards)


def _cache(r: _Reader, raw: Any) -> CacheConfig:
    d = r.mapping(raw, "cache", {"capacity", "max_bytes", "wire_max_bytes", "min_ttl",
                                 "max_ttl", "prefetch", "serve_stale"})
    base = CacheConfig()
    cache = CacheConfig(
        capacity=r.get(d, "capacity", "cache", integer(0, 10_000_000), base.capacity),
        max_bytes=r.get(d, "max_bytes", "cache", byte_size(1 << 16, 1 << 40), base.max_bytes),
        wire_max_bytes=r.get(d, "wire_max_bytes", "cache", byte_size(1 << 16, 1 << 40),
                             base.wire_max_bytes),
        min_ttl=r.get(d, "min_ttl", "cache", whole_seconds, base.min_ttl),
        max_ttl=r.get(d, "max_ttl", "cache", whole_seconds, base.max_ttl),
        prefetch=r.get(d, "prefetch", "cache", boolean, base.prefetch),
        serve_stale=r.get(d, "serve_stale", "cache", whole_seconds, base.serve_stale),
    )
    if cache.min_ttl > cache.max_ttl:
        r.error("cache.min_ttl", f"{cache.min_ttl}s is more than max_ttl ({cache.max_ttl}s)")
    return cache


def _acl(r: _Reader, raw: Any) -> AclConfig:
    d = r.mapping(raw, "acl", {"allow_recursion", "allow_query", "allow_debug", "ecs_from"})
    base = AclConfig()
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("allow_recursion", "allow_query", "allow_debug", "ecs_from"):
        if key not in d or d[key] is None:
            continue
        nets = []
        for j, item in enumerate(r.sequence(d[key], f"acl.{key}")):
            try:
                nets.append(network(item))
            except Invalid as exc:
                r.error(f"acl.{key}[{j}]", str(exc))
        lists[key] = tuple(nets)
    return AclConfig(allow_recursion=lists.get("allow_recursion", base.allow_recursion),
                     allow_query=lists.get("allow_query", base.allow_query),
                     allow_debug=lists.get("allow_debug", base.allow_debug),
                     ecs_from=lists.get("ecs_from", base.ecs_from))


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
        r.error(f"{kpath}.path", f"{show(check.path)} must start with /")
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
        if subset.name in {x.name for x in subsets}:
            r.error(f"{spath}.name", f"subset {show(subset.name)} is listed twice")
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


_NO_WEIGHTS: tuple[tuple[str, int], ...] = ()
_MATCH = re.compile(r"[a-z0-9*_-]{1,63}\.[a-z0-9*_-]{1,63}")


def _routing(r: _Reader, raw: Any, clusters: tuple[ClusterConfig, ...]
             ) -> tuple[RoutingRule, ...]:
    known = {c.name for c in clusters}
    rules: list[RoutingRule] = []
    first: dict[str, int] = {}
    wildcards: list[tuple[int, str]] = []
    for i, item in enumerate(r.sequence(raw, "routing")):
        path = f"routing[{i}]"
        d = r.mapping(item, path, {"match", "distribute", "failover", "weights", "views",
                                   "answer", "spill", "min_healthy", "panic_threshold",
                                   "max_answers", "shuffle", "subsets"})
        match = r.required(d, "match", path, text, "")
        if match and not _MATCH.fullmatch(match.lower()):
            r.error(f"{path}.match", f"{show(match)} is not <service>.<namespace> (* allowed)")
            match = ""
        elif any(label.count("*") > 2 for label in match.split(".")):
            # Each `*` is a regex loop run per query: three in one label backtrack badly.
            r.error(f"{path}.match", f"{show(match)} has more than two '*' in one label")
            match = ""
        distribute = []
        for j, entry in enumerate(r.sequence(d.get("distribute"), f"{path}.distribute")):
            dpath = f"{path}.distribute[{j}]"
            dd = r.mapping(entry, dpath, {"from", "to"})
            distribute.append(DistributeConfig(
                source=r.required(dd, "from", dpath, pattern, "*"),
                to=_targets(r, r.required(dd, "to", dpath, weight_map, _NO_WEIGHTS),
                            f"{dpath}.to")))
        failover = []
        for j, entry in enumerate(r.sequence(d.get("failover"), f"{path}.failover")):
            fpath = f"{path}.failover[{j}]"
            fd = r.mapping(entry, fpath, {"from", "to"})
            failover.append(FailoverConfig(source=r.required(fd, "from", fpath, dns_label, ""),
                                           to=r.required(fd, "to", fpath, dns_label, "")))
        weights = r.get(d, "weights", path, weight_map, _NO_WEIGHTS)
        for name, _ in weights:
            if name not in known:
                r.error(f"{path}.weights.{name}",
                        f"{show(name)} is not a cluster listed in clusters")
        views = []
        for j, entry in enumerate(r.sequence(d.get("views"), f"{path}.views")):
            vpath = f"{path}.views[{j}]"
            vd = r.mapping(entry, vpath, {"clients", "localities", "clusters", "labels"})
            view = ViewConfig(
                clients=tuple(r.items(vd, "clients", vpath, network)),
                localities=tuple(r.items(vd, "localities", vpath, pattern)),
                clusters=tuple(r.items(vd, "clusters", vpath, cluster_name)),
                labels=r.get(vd, "labels", vpath, labels, ViewConfig().labels),
            )
            for k, name in enumerate(view.clusters):
                if name not in known:
                    # A view restricted to a cluster that never has endpoints answers its
                    # clients NOERROR with no records: a typo must not get that far.
                    r.error(f"{vpath}.clusters[{k}]",
                            f"{show(name)} is not a cluster listed in clusters")
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
            answer=r.get(d, "answer", path, choice("all", "best_tier"), _RULE.answer),
            spill=r.get(d, "spill", path, integer(0, 1000), _RULE.spill),
            min_healthy=r.get(d, "min_healthy", path, min_healthy, _RULE.min_healthy),
            panic_threshold=r.get(d, "panic_threshold", path, percentage,
                                  _RULE.panic_threshold),
            max_answers=r.get(d, "max_answers", path, integer(0, 1000), _RULE.max_answers),
            shuffle=r.get(d, "shuffle", path, boolean, _RULE.shuffle),
            subsets=_subsets(r, d.get("subsets"), f"{path}.subsets"),
        )
        if rule.weights and rule.distribute:
            r.error(path, "give weights (per cluster) or distribute (per locality), not both")
        if match:
            # Only an identical or a wildcard rule can cover a later one.
            earlier = first.get(rule.match)
            if earlier is None:
                earlier = next((j for j, m in wildcards if _covers(m, rule.match)), None)
            if earlier is not None:
                r.error(f"{path}.match", f"{show(match)} is never used: routing[{earlier}] "
                        f"({show(rules[earlier].match)}) matches every name it does, and "
                        "the first matching rule wins")
            first.setdefault(rule.match, i)
            if "*" in rule.match:
                wildcards.append((i, rule.match))
        rules.append(rule)
    return tuple(rules)


def _targets(r: _Reader, weights: tuple[tuple[str, int], ...], path: str
             ) -> tuple[tuple[str, int], ...]:
    """`distribute.to`: locality patterns with weights; a bad pattern names its key."""
    out = []
    for key, weight in weights:
        try:
            out.append((pattern(key), weight))
        except Invalid as exc:
            r.error(f"{path}.{key}", str(exc))
    return tuple(out)


def _covers(earlier: str, later: str) -> bool:
    """True when every name `later` matches is matched by `earlier` (so `later` is dead).
    Exact for a `later` without `*`; otherwise only `*` or an identical label counts."""
    a_parts, b_parts = earlier.split("."), later.split(".")
    if len(a_parts) != 2 or len(b_parts) != 2:
        return False
    for a, b in zip(a_parts, b_parts, strict=True):
        if a == "*" or a == b:
            continue
        if "*" in b or not re.fullmatch(re.escape(a).replace(r"\*", "[^.]*"), b):
            return False
    return True


def _aliases(r: _Reader, raw: Any) -> tuple[AliasConfig, ...]:
    out: list[AliasConfig] = []
    seen: set[str] = set()
    for i, item in enumerate(r.sequence(raw, "aliases")):
        path = f"aliases[{i}]"
        d = r.mapping(item, path, {"name", "target", "mode"})
        alias = AliasConfig(name=r.required(d, "name", path, domain, ""),
                            target=r.required(d, "target", path, domain, ""),
                            mode=r.get(d, "mode", path, choice("cname", "flatten"),
                                       _ALIAS.mode))
        if alias.name in seen:
            r.error(f"{path}.name", f"alias {show(alias.name)} is listed twice")
        seen.add(alias.name)
        out.append(alias)
    return tuple(out)


_TOP = {"dns", "resolver", "zones", "clusters", "remote_secrets", "sync_timeout", "services",
        "forward", "cache", "acl", "client_localities", "routing", "aliases", "http", "log",
        "reload", "limits", "rate_limit", "cookies", "serve_hosts",
        "service_entries"}


_ENTRY_KEYS = {"name", "namespace", "cluster", "hosts", "ports", "endpoints", "location",
               "resolution"}


def _service_entries(r: _Reader, raw: Any, clusters: tuple[ClusterConfig, ...]
                     ) -> tuple[istio.ServiceEntry, ...]:
    """ServiceEntry-shaped items: the `spec` fields, with `name`, `namespace` and the
    `cluster` their endpoints are named under (default `static`)."""
    out = []
    for i, item in enumerate(r.sequence(raw, "service_entries")):
        path = f"service_entries[{i}]"
        d = r.mapping(item, path, _ENTRY_KEYS)
        cluster = r.get(d, "cluster", path, cluster_name, "static")
        if "cluster" in d and cluster not in {c.name for c in clusters}:
            r.error(f"{path}.cluster", f"{show(cluster)} is not a cluster listed in clusters")
        if not d.get("hosts"):
            r.error(f"{path}.hosts", "is required")

        def problem(reason: str, detail: str, path: str = path) -> None:
            r.error(path, detail.replace("spec.", ""))

        spec = {k: v for k, v in d.items() if k not in ("name", "namespace", "cluster")}
        try:
            out.append(istio.service_entry(
                {"metadata": {"name": str(d.get("name") or ""),
                              "namespace": str(d.get("namespace") or "")}, "spec": spec},
                cluster=cluster, skip=problem, allow_special=True))
        except istio.Invalid as exc:
            r.error(path, str(exc).replace("spec.", ""))
    return tuple(out)


def _rate_limit(r: _Reader, raw: Any) -> RateLimitConfig | None:
    if raw is None:
        return None
    path = "rate_limit"
    d = r.mapping(raw, path, {"responses_per_second", "errors_per_second",
                              "nxdomains_per_second", "slip", "window", "ipv4_prefix",
                              "ipv6_prefix", "exempt", "table_size"})
    base = RateLimitConfig()
    exempt = base.exempt
    if d.get("exempt") is not None:
        nets = []
        for j, item in enumerate(r.sequence(d["exempt"], f"{path}.exempt")):
            try:
                nets.append(network(item))
            except Invalid as exc:
                r.error(f"{path}.exempt[{j}]", str(exc))
        exempt = tuple(nets)
    rate = integer(0, 1_000_000)
    return RateLimitConfig(
        responses_per_second=r.get(d, "responses_per_second", path, rate,
                                   base.responses_per_second),
        errors_per_second=r.get(d, "errors_per_second", path, rate, base.errors_per_second),
        nxdomains_per_second=r.get(d, "nxdomains_per_second", path, rate,
                                   base.nxdomains_per_second),
        slip=r.get(d, "slip", path, integer(0, 10), base.slip),
        window=r.get(d, "window", path, _window, base.window),
        ipv4_prefix=r.get(d, "ipv4_prefix", path, integer(0, 32), base.ipv4_prefix),
        ipv6_prefix=r.get(d, "ipv6_prefix", path, integer(0, 128), base.ipv6_prefix),
        exempt=exempt,
        table_size=r.get(d, "table_size", path, integer(1, 10_000_000), base.table_size))


def _window(value: Any) -> float:
    seconds = positive_duration(value)
    if seconds > 3600:  # BIND allows 1..3600
        raise Invalid(f"{show(value)} is more than an hour")
    return seconds


def _cookies(r: _Reader, raw: Any, source: str) -> CookiesConfig:
    path = "cookies"
    d = r.mapping(raw, path, {"enabled", "secret_file", "rotate"})
    base = CookiesConfig()
    secret_file = ""
    if d.get("secret_file") not in (None, ""):
        try:
            secret_file = _path(source, d["secret_file"])
            read_secret_file(secret_file)
        except Invalid as exc:
            r.error(f"{path}.secret_file", str(exc))
        except OSError as exc:
            r.error(f"{path}.secret_file", f"{secret_file}: {exc.strerror or exc}")
        except ValueError as exc:
            r.error(f"{path}.secret_file", f"{secret_file} {exc}")
    return CookiesConfig(enabled=r.get(d, "enabled", path, boolean, base.enabled),
                         secret_file=secret_file,
                         rotate=r.get(d, "rotate", path, positive_duration, base.rotate))


def _limits(r: _Reader, raw: Any) -> LimitsConfig:
    d = r.mapping(raw, "limits", {"max_endpoints_per_service", "max_event_bytes"})
    base = LimitsConfig()
    return LimitsConfig(
        max_endpoints_per_service=r.get(d, "max_endpoints_per_service", "limits",
                                        integer(1, 1_000_000), base.max_endpoints_per_service),
        max_event_bytes=r.get(d, "max_event_bytes", "limits", integer(1024, 1 << 30),
                              base.max_event_bytes))


def parse_bytes(content: bytes, source: str) -> Config:
    """A config file's bytes → Config; raises ConfigError, and nothing else."""
    if len(content) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{source}: larger than {MAX_CONFIG_BYTES // 2**20} MiB"])
    try:
        text_ = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: not UTF-8 text (byte offset {exc.start})"]) from None
    return parse_text(text_, source)


def parse_text(content: str, source: str) -> Config:
    """Parse → validate → build. This is the one config boundary: it raises ConfigError
    with every problem found, and nothing else (a bug in a check is reported as a config
    error at the key path being read, so a reload records it and keeps the old config)."""
    if len(content) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{source}: larger than {MAX_CONFIG_BYTES // 2**20} MiB"])
    r = _Reader(source)
    try:
        raw = yaml.load(content, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{source}: {where}not valid YAML: "
                           f"{getattr(exc, 'problem', None) or exc}"]) from exc
    except Exception as exc:  # e.g. ValueError for the date 2024-02-30
        raise ConfigError([f"{source}: not valid YAML: {_clip(exc)}"]) from exc
    if _expanded_size(raw, limit=len(content) + 1000) is None:
        raise ConfigError([f"{source}: YAML aliases expand to more values than the file "
                           "holds (a recursive or exponential alias)"])
    try:
        config = _build(r, raw, source)
    except Exception as exc:  # the one config boundary (see above)
        r.error(r.at, f"cannot be used: {_clip(exc)}")
        raise ConfigError(r.errors) from exc
    if r.errors:
        raise ConfigError(r.errors)
    return config


def _clip(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _expanded_size(raw: Any, *, limit: int) -> int | None:
    """How many values the tree holds with every alias expanded, or None past `limit`.
    Without aliases each value takes at least a character, so a file's length bounds it;
    aliases can nest into billions (or loop), and every check walks the expanded tree."""
    count, stack = 0, [raw]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            return None
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def _build(r: _Reader, raw: Any, source: str) -> Config:
    top = r.mapping(raw, "", _TOP)
    clusters = _clusters(r, top.get("clusters"))
    config = Config(
        source=source,
        dns=_dns(r, top.get("dns")),
        resolver=_resolver(r, top.get("resolver")),
        zones=_zones(r, top.get("zones")),
        clusters=clusters,
        remote_secrets=_remote_secrets(r, top.get("remote_secrets"), clusters),
        sync_timeout=r.get(top, "sync_timeout", "", duration, Config().sync_timeout),
        services=_services(r, top.get("services"), clusters),
        client_localities=_client_localities(r, top.get("client_localities")),
        routing=_routing(r, top.get("routing"), clusters),
        aliases=_aliases(r, top.get("aliases")),
    )
    return dataclasses.replace(config, forward=_forward(r, top.get("forward"), config),
                               cache=_cache(r, top.get("cache")), acl=_acl(r, top.get("acl")),
                               http=_http(r, top.get("http"), config.dns),
                               log=_log(r, top.get("log")),
                               reload=_reload(r, top.get("reload")),
                               limits=_limits(r, top.get("limits")),
                               rate_limit=_rate_limit(r, top.get("rate_limit")),
                               cookies=_cookies(r, top.get("cookies"), source),
                               serve_hosts=tuple(r.items(top, "serve_hosts", "", serve_host)),
                               service_entries=_service_entries(r, top.get("service_entries"),
                                                                clusters))


def load(path: str | Path) -> Config:
    try:
        with open(path, "rb") as f:
            content = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    return parse_bytes(content, str(path))


def load_default() -> Config:
    content = resources.files("globaldns.config").joinpath("default.yaml").read_text()
    return parse_text(content, "<embedded default>")
