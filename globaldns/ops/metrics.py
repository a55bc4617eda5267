"""Prometheus metrics: one collector that reads our plain counters at scrape time.

Nothing here runs per query. The DNS path counts in plain integers (dns/stats.py, and each
handler's own attributes); a scrape turns them into metric families. Names are
`globaldns_<subsystem>_<thing>`, with CoreDNS's types and labels where CoreDNS has the
same metric (`coredns_dns_requests_total` → `globaldns_dns_requests_total`). No label
takes an unbounded set of values: no client address, no query name; qtypes and rcodes
outside a fixed list are counted as `other`.

The registry gauges (endpoints per cluster and readiness) are kept up to date per changed
service by `RegistryGauges`, so a scrape costs O(clusters), not O(endpoints).
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from globaldns import __version__
from globaldns.answers.snapshot import Snapshot
from globaldns.dns.message import text_to_wire
from globaldns.dns.names import QType, Rcode
from globaldns.dns.stats import DURATION_BOUNDS, SIZE_BOUNDS, combined
from globaldns.dns.tcp import CLOSE_REASONS
from globaldns.registry.model import ServiceKey
from globaldns.registry.store import Store
from globaldns.runtime import Runtime

# The qtype label's closed set (as CoreDNS's `type` label); every other qtype is `other`.
QTYPES = {int(t): t.name for t in (
    QType.A, QType.NS, QType.CNAME, QType.SOA, QType.PTR, QType.MX, QType.TXT, QType.AAAA,
    QType.SRV, QType.NAPTR, QType.DS, QType.DNSKEY, QType.SVCB, QType.HTTPS, QType.SPF,
    QType.IXFR, QType.AXFR, QType.ANY, QType.CAA)}
# Every rcode a reply header can carry (BADKEY lives only in a TSIG record).
RCODES = {int(r): r.name for r in Rcode if r is not Rcode.BADKEY}
PROTOS = ("udp", "tcp")
CLUSTER_STATES = ("syncing", "synced", "stale", "failed")


def qtype_name(qtype: int) -> str:
    return QTYPES.get(qtype, "other")


def rcode_name(rcode: int) -> str:
    return RCODES.get(rcode, "other")


def _histogram(bounds: Iterable[float], counts: list[int]) -> list[tuple[str, float]]:
    """Cumulative `le` buckets from per-bucket counts (the last one is +Inf)."""
    out: list[tuple[str, float]] = []
    total = 0
    for bound, n in zip([*bounds, float("inf")], counts, strict=True):
        total += n
        out.append(("+Inf" if bound == float("inf") else f"{bound:g}", total))
    return out


class RegistryGauges:
    """Endpoints per (cluster, ready), services per cluster below `min_healthy`, and the
    number of services, kept per changed service (a store listener, called after the
    snapshot's), so that a scrape does not walk 100k endpoints."""

    def __init__(self, store: Store, snapshot: Snapshot) -> None:
        self.store = store
        self.snapshot = snapshot
        self.per_service: dict[ServiceKey, dict[tuple[str, bool], int]] = {}
        self.endpoints: dict[tuple[str, bool], int] = {}
        self.unhealthy_of: dict[ServiceKey, frozenset[str]] = {}
        self.unhealthy: dict[str, int] = {}
        for key in store.service_keys():
            self.changed(key)
        store.subscribe(self.changed)
        snapshot.listeners.append(self._rebuilt)

    def _rebuilt(self, names: Iterable[bytes] | None) -> None:
        """A whole rebuild (new config: min_healthy may have changed) re-reads health."""
        if names is None:
            self.unhealthy_of = {}
            self.unhealthy = {}
            for key in self.snapshot.health:
                self._health_changed(key)

    def _health_changed(self, key: ServiceKey) -> None:
        health = self.snapshot.health.get(key, {})
        bad = frozenset(c for c, ok in health.items() if not ok)
        old = self.unhealthy_of.pop(key, frozenset())
        if bad == old:
            if bad:
                self.unhealthy_of[key] = bad
            return
        for cluster in old:
            left = self.unhealthy.get(cluster, 0) - 1
            if left > 0:
                self.unhealthy[cluster] = left
            else:
                self.unhealthy.pop(cluster, None)
        for cluster in bad:
            self.unhealthy[cluster] = self.unhealthy.get(cluster, 0) + 1
        if bad:
            self.unhealthy_of[key] = bad

    def changed(self, key: ServiceKey) -> None:
        service = self.store.get(key)
        counts: dict[tuple[str, bool], int] = {}
        if service is not None:
            for e in service.endpoints:
                k = (e.cluster, e.ready)
                counts[k] = counts.get(k, 0) + 1
        old = self.per_service.pop(key, {})
        totals = self.endpoints
        for k, n in old.items():
            left = totals.get(k, 0) - n
            if left > 0:
                totals[k] = left
            else:
                totals.pop(k, None)
        for k, n in counts.items():
            totals[k] = totals.get(k, 0) + n
        if service is not None:
            self.per_service[key] = counts
        self._health_changed(key)

    @property
    def services(self) -> int:
        return len(self.per_service)


@dataclass(slots=True)
class HttpCounts:
    """The HTTP endpoint's own counters (ops/http.py counts, the collector reads)."""

    forbidden: int = 0
    """Requests refused (403): the client is not in acl.allow_debug."""
    closed: Counter[str] = field(default_factory=Counter)
    """Connections closed by us: header_timeout, evicted, rejected (at the cap)."""


class Metrics(Collector):
    """The collector for one Runtime. `registry` holds it (and the process collectors)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.http = HttpCounts()
        self.gauges = RegistryGauges(runtime.store, runtime.snapshot)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        runtime = self.runtime
        yield from self._build()
        yield from self._dns(runtime)
        yield from self._chain(runtime)
        yield from self._forward(runtime)
        yield from self._kubernetes(runtime)
        yield from self._registry(runtime)
        yield from self._healthcheck(runtime)
        yield from self._config(runtime)
        yield from self._querylog(runtime)
        yield from self._workers(runtime)

    # --- the families ---------------------------------------------------------------

    @staticmethod
    def _build() -> Iterator[Metric]:
        info = GaugeMetricFamily("globaldns_build_info", "globaldns version and Python version",
                                 labels=["version", "python"])
        info.add_metric([__version__, platform.python_version()], 1)
        yield info

    def _dns(self, runtime: Runtime) -> Iterator[Metric]:
        summary = dns_summary(runtime)
        listen = runtime.config.dns.listen
        family = "2" if ":" in listen.host else "1"
        totals = summary["totals"]
        requests = CounterMetricFamily(
            "globaldns_dns_requests", "DNS queries answered, by transport, address family "
            "of the listener (1 IPv4, 2 IPv6) and qtype", labels=["proto", "family", "type"])
        responses = CounterMetricFamily("globaldns_dns_responses", "DNS replies by rcode",
                                        labels=["rcode"])
        by_request: dict[tuple[str, str], int] = {}
        by_rcode: dict[str, int] = {}
        sizes = [[0] * (len(SIZE_BOUNDS) + 1) for _ in PROTOS]
        size_sum = [0, 0]
        for (kind, a, b), n in totals.items():
            if kind == "request":
                k = (PROTOS[a], qtype_name(b))
                by_request[k] = by_request.get(k, 0) + n
            elif kind == "rcode":
                name = rcode_name(a)
                by_rcode[name] = by_rcode.get(name, 0) + n
            elif kind == "size":
                sizes[a][b] += n
            elif kind == "bytes":
                size_sum[a] += n
        for (proto, qtype), n in sorted(by_request.items()):
            requests.add_metric([proto, family, qtype], n)
        for name, n in sorted(by_rcode.items()):
            responses.add_metric([name], n)
        yield requests
        yield responses

        answered = sum(by_rcode.values())
        waited = sum(summary["durations"])
        durations = list(summary["durations"])
        # Replies given at once (prepared answers, cache hits) are not timed: they count
        # in the lowest bucket and add nothing to the sum.
        durations[0] += max(answered - waited, 0)
        duration = HistogramMetricFamily(
            "globaldns_dns_request_duration_seconds",
            "Time from query to reply; replies given without waiting on an upstream are "
            "counted in the lowest bucket, untimed", unit="")
        duration.add_metric([], _histogram(DURATION_BOUNDS, durations),
                            sum_value=summary["duration_sum"])
        yield duration
        size = HistogramMetricFamily("globaldns_dns_response_size_bytes",
                                     "Size of DNS replies in bytes", labels=["proto"])
        for i, proto in enumerate(PROTOS):
            size.add_metric([proto], _histogram(SIZE_BOUNDS, sizes[i]), sum_value=size_sum[i])
        yield size

        yield CounterMetricFamily("globaldns_dns_dropped",
                                  "Packets dropped unanswered (unreadable, or a response)",
                                  value=summary["dropped"])
        yield CounterMetricFamily("globaldns_dns_errors",
                                  "Queries a handler failed on (answered SERVFAIL, logged)",
                                  value=summary["errors"])
        yield CounterMetricFamily("globaldns_dns_gate_refused",
                                  "Packets refused for their size or shape before any record "
                                  "was read (FORMERR/NOTIMP)",
                                  value=summary["gate_refused"])
        yield CounterMetricFamily("globaldns_rate_limit_dropped",
                                  "UDP replies dropped by the rate limit",
                                  value=summary["rate_limit_dropped"])
        yield CounterMetricFamily("globaldns_rate_limit_slipped",
                                  "UDP replies the rate limit sent empty with TC (BADCOOKIE "
                                  "to a client that sent a cookie)",
                                  value=summary["rate_limit_slipped"])
        cookies = CounterMetricFamily("globaldns_cookies_queries",
                                      "Queries with a COOKIE option, by their server cookie",
                                      labels=["server_cookie"])
        for state in ("none", "valid", "invalid"):
            cookies.add_metric([state], summary["cookies_new" if state == "none"
                                                else f"cookies_{state}"])
        yield cookies
        yield CounterMetricFamily("globaldns_dns_overload_refused",
                                  "Queries refused because dns.max_inflight queries waited",
                                  value=summary["inflight_refused"])
        yield GaugeMetricFamily("globaldns_dns_inflight", "Queries waiting on upstreams",
                                value=summary["inflight"])
        tcp = runtime.tcp_connections
        if tcp is not None:
            yield GaugeMetricFamily("globaldns_dns_tcp_connections", "Open TCP connections",
                                    value=len(tcp.open))
            yield CounterMetricFamily("globaldns_dns_tcp_rejected",
                                      "TCP connections closed at once: dns.tcp_max_connections",
                                      value=tcp.rejected)
            closed = CounterMetricFamily("globaldns_dns_tcp_closed",
                                         "TCP connections the server closed, by reason",
                                         labels=["reason"])
            for reason in CLOSE_REASONS:
                closed.add_metric([reason], tcp.closed[reason])
            yield closed
        http = self.http
        yield CounterMetricFamily("globaldns_http_forbidden",
                                  "HTTP requests refused (403): client not in acl.allow_debug",
                                  value=http.forbidden)
        http_closed = CounterMetricFamily("globaldns_http_closed",
                                          "HTTP connections the server closed, by reason",
                                          labels=["reason"])
        for reason in ("header_timeout", "evicted", "rejected"):
            http_closed.add_metric([reason], http.closed[reason])
        yield http_closed
        wire = runtime.server.wire
        if wire is not None:
            yield GaugeMetricFamily("globaldns_dns_wire_cache_entries",
                                    "Replies kept as bytes for repeated UDP queries",
                                    value=wire.size)
            yield GaugeMetricFamily("globaldns_dns_wire_cache_bytes",
                                    "What the wire cache's entries count (cache.wire_max_bytes)",
                                    value=wire.bytes)
            yield GaugeMetricFamily("globaldns_dns_wire_cache_max_bytes",
                                    "cache.wire_max_bytes", value=wire.max_bytes)
        yield GaugeMetricFamily("globaldns_ready", "1 when /ready answers 200",
                                value=1 if runtime.readiness()[0] else 0)

    @staticmethod
    def _chain(runtime: Runtime) -> Iterator[Metric]:
        acl = runtime.chain.acl
        refused = CounterMetricFamily("globaldns_acl_refused",
                                      "Queries refused by the ACL, by which list refused them",
                                      labels=["reason"])
        refused.add_metric(["query"], acl.refused_queries)
        refused.add_metric(["recursion"], acl.refused_recursion)
        chaos = runtime.chain.chaos
        refused.add_metric(["debug"], chaos.refused)
        yield refused
        yield CounterMetricFamily("globaldns_acl_ecs_ignored",
                                  "ECS options ignored: the client is outside acl.ecs_from",
                                  value=acl.ecs_ignored)
        yield _labelled_counter("globaldns_chaos_answers",
                                "CHAOS-class TXT queries answered, by kind", "kind",
                                chaos.answers)

        cache = runtime.chain.cache
        if cache is None:
            return
        yield CounterMetricFamily("globaldns_cache_hits", "Forwarded answers served from the "
                                  "cache", value=cache.hits)
        yield CounterMetricFamily("globaldns_cache_misses", "Cache lookups that missed",
                                  value=cache.misses)
        yield GaugeMetricFamily("globaldns_cache_entries", "Answers in the cache",
                                value=len(cache.table))
        yield GaugeMetricFamily("globaldns_cache_capacity", "cache.capacity",
                                value=cache.capacity)
        yield GaugeMetricFamily("globaldns_cache_bytes", "What the cached answers count "
                                "(cache.max_bytes)", value=cache.bytes)
        yield GaugeMetricFamily("globaldns_cache_max_bytes", "cache.max_bytes",
                                value=cache.max_bytes)
        yield CounterMetricFamily("globaldns_cache_evictions", "Entries evicted at capacity "
                                  "or max_bytes (least recently used)", value=cache.evictions)
        yield CounterMetricFamily("globaldns_cache_prefetch", "Popular entries refreshed "
                                  "before they expired", value=cache.prefetches)
        yield CounterMetricFamily("globaldns_cache_served_stale", "Expired answers served "
                                  "because the upstreams failed (RFC 8767)",
                                  value=cache.stale_served)

    @staticmethod
    def _forward(runtime: Runtime) -> Iterator[Metric]:
        forward = runtime.chain.forward
        if forward is None:
            return
        labels = ["zone", "to"]
        requests = CounterMetricFamily("globaldns_forward_requests",
                                       "Queries sent to each upstream", labels=labels)
        responses = CounterMetricFamily("globaldns_forward_responses",
                                        "Upstream replies by rcode", labels=[*labels, "rcode"])
        failures = CounterMetricFamily("globaldns_forward_failures", "Upstream queries that "
                                       "got no usable reply (timeout, network error, malformed)",
                                       labels=labels)
        probes = CounterMetricFamily("globaldns_forward_healthcheck_probes",
                                     "`. IN NS` probes of unhealthy upstreams", labels=labels)
        probe_failures = CounterMetricFamily("globaldns_forward_healthcheck_failures",
                                             "Probes that failed", labels=labels)
        healthy = GaugeMetricFamily("globaldns_forward_upstream_healthy",
                                    "1 while the upstream is not marked unhealthy (max_fails)",
                                    labels=labels)
        duration = HistogramMetricFamily("globaldns_forward_request_duration_seconds",
                                         "Time an upstream took to answer", labels=labels)
        rejected = CounterMetricFamily("globaldns_forward_rejected_replies", "Upstream replies "
                                       "dropped: UDP larger than we advertise (asked again over "
                                       "TCP), or failing the relay check",
                                       labels=[*labels, "reason"])
        stripped = CounterMetricFamily("globaldns_forward_stripped_records", "Records stripped "
                                       "from relayed replies: outside the question's bailiwick",
                                       labels=labels)
        for config, pool in zip(forward.configs, pools(forward), strict=True):
            zone = config.zone or "."
            for upstream in pool.upstreams:
                lv = [zone, str(upstream)]
                requests.add_metric(lv, upstream.queries)
                failures.add_metric(lv, upstream.failures)
                probes.add_metric(lv, upstream.probes)
                probe_failures.add_metric(lv, upstream.probe_failures)
                healthy.add_metric(lv, 1 if upstream.healthy else 0)
                for rcode, n in sorted(upstream.rcodes.items()):
                    responses.add_metric([*lv, rcode_name(rcode)], n)
                duration.add_metric(lv, _histogram(DURATION_BOUNDS, upstream.durations),
                                    sum_value=upstream.duration_sum)
                rejected.add_metric([*lv, "oversized"], upstream.oversized)
                rejected.add_metric([*lv, "malformed"], upstream.malformed)
                stripped.add_metric(lv, upstream.stripped)
        yield from (requests, responses, failures, probes, probe_failures, healthy, duration,
                    rejected, stripped)
        yield CounterMetricFamily("globaldns_forward_unreachable",
                                  "Forwarded queries no upstream answered (SERVFAIL or stale)",
                                  value=forward.unreachable)

    @staticmethod
    def _kubernetes(runtime: Runtime) -> Iterator[Metric]:
        sources = runtime.kubernetes
        clusters = sources.clusters()
        up = GaugeMetricFamily("globaldns_k8s_watch_up",
                               "1 while every watch of the cluster is healthy",
                               labels=["cluster"])
        state = GaugeMetricFamily("globaldns_k8s_cluster_state",
                                  "The cluster's state (1 for the current one)",
                                  labels=["cluster", "state"])
        last_sync = GaugeMetricFamily("globaldns_k8s_last_sync_timestamp_seconds",
                                      "When every watch of the cluster last listed completely",
                                      labels=["cluster"])
        events = CounterMetricFamily("globaldns_k8s_events", "Watch events by type",
                                     labels=["cluster", "type"])
        relists = CounterMetricFamily("globaldns_k8s_relists",
                                      "Full lists after the first (410 Gone, expiry)",
                                      labels=["cluster"])
        errors = CounterMetricFamily("globaldns_k8s_errors", "Watch and credential errors",
                                     labels=["cluster", "kind"])
        services = GaugeMetricFamily("globaldns_k8s_services",
                                     "Services the cluster holds (watched)", labels=["cluster"])
        endpoints = GaugeMetricFamily("globaldns_k8s_endpoints",
                                      "Endpoints the cluster's EndpointSlices hold",
                                      labels=["cluster"])
        for source in clusters:
            status = source.status()
            name = status["cluster"]
            watches = status["watches"]
            up.add_metric([name], 1 if watches and all(w["healthy"] for w in watches) else 0)
            for s in CLUSTER_STATES:
                state.add_metric([name, s], 1 if status["state"] == s else 0)
            if status["last_sync"] is not None:
                last_sync.add_metric([name], status["last_sync"])
            for kind, n in sorted(status["events"].items()):
                events.add_metric([name, kind], n)
            relists.add_metric([name], status["relists"])
            for kind, n in sorted(status["errors_by_kind"].items()):
                errors.add_metric([name, kind], n)
            services.add_metric([name], status["services"])
            endpoints.add_metric([name], status["endpoints"])
        yield from (up, state, last_sync, events, relists, errors, services, endpoints)
        yield GaugeMetricFamily("globaldns_k8s_synced",
                                "1 once every cluster has listed once", value=int(sources.synced))
        discovery = sources.discovery_status()
        if discovery is not None:
            yield GaugeMetricFamily("globaldns_k8s_remote_secret_clusters",
                                    "Clusters discovered from remote Secrets",
                                    value=len(discovery["clusters"]))
            yield CounterMetricFamily("globaldns_k8s_remote_secret_errors",
                                      "Errors of the remote Secrets watch",
                                      value=discovery["errors"])
            rejected = CounterMetricFamily("globaldns_k8s_remote_secret_rejected",
                                           "Remote Secrets' kubeconfigs refused, by reason",
                                           labels=["reason"])
            for reason, n in discovery["rejected"].items():
                rejected.add_metric([reason], n)
            yield rejected

    def _registry(self, runtime: Runtime) -> Iterator[Metric]:
        gauges = self.gauges
        yield GaugeMetricFamily("globaldns_registry_services",
                                "Services in the merged registry", value=gauges.services)
        endpoints = GaugeMetricFamily("globaldns_registry_endpoints",
                                      "Endpoints in the merged registry, by cluster and "
                                      "readiness", labels=["cluster", "ready"])
        for (cluster, ready), n in sorted(gauges.endpoints.items()):
            endpoints.add_metric([cluster, "true" if ready else "false"], n)
        yield endpoints
        unhealthy = gauges.unhealthy
        below = GaugeMetricFamily("globaldns_registry_unhealthy_services",
                                  "Services for which the cluster is below min_healthy",
                                  labels=["cluster"])
        for cluster, n in sorted(unhealthy.items()):
            below.add_metric([cluster], n)
        yield below
        skipped = CounterMetricFamily("globaldns_registry_skipped",
                                      "Cluster data that could not become DNS records, "
                                      "skipped, by reason", labels=["reason"])
        for reason, n in runtime.store.skipped.counts.items():
            skipped.add_metric([reason], n)
        yield skipped
        yield GaugeMetricFamily("globaldns_registry_synced",
                                "1 when negative answers are given (every source synced or "
                                "sync_timeout passed); 0: SERVFAIL for unknown names",
                                value=int(runtime.snapshot.synced))

    @staticmethod
    def _healthcheck(runtime: Runtime) -> Iterator[Metric]:
        health = runtime.health
        yield _labelled_counter("globaldns_healthcheck_checks",
                                "Active health check results", "result", health.checks)
        yield _labelled_counter("globaldns_healthcheck_transitions",
                                "Endpoints turning healthy or unhealthy", "to",
                                health.transitions)
        endpoints = GaugeMetricFamily("globaldns_healthcheck_endpoints",
                                      "Endpoints under active health checks",
                                      labels=["healthy"])
        states = [e.healthy for e in health.endpoints.values()]
        endpoints.add_metric(["true"], sum(states))
        endpoints.add_metric(["false"], len(states) - sum(states))
        yield endpoints

    @staticmethod
    def _config(runtime: Runtime) -> Iterator[Metric]:
        reloads = runtime.reloads
        yield _labelled_counter("globaldns_config_reloads", "Config reloads by result",
                                "result", reloads.results)
        info = GaugeMetricFamily("globaldns_config_info",
                                 "The running config: its file and SHA-256 (value 1)",
                                 labels=["source", "hash"])
        info.add_metric([reloads.path or runtime.config.source, reloads.hash], 1)
        yield info
        yield GaugeMetricFamily("globaldns_config_load_timestamp_seconds",
                                "When the running config was loaded", value=reloads.loaded_at)
        yield GaugeMetricFamily("globaldns_config_last_reload_successful",
                                "0 when the last reload was rejected (the old config runs)",
                                value=0 if reloads.last_error else 1)

    @staticmethod
    def _querylog(runtime: Runtime) -> Iterator[Metric]:
        querylog = runtime.querylog
        if querylog is None:
            return
        yield CounterMetricFamily("globaldns_log_queries", "Query log lines written",
                                  value=querylog.written)
        yield CounterMetricFamily("globaldns_log_dropped", "Query log lines dropped because "
                                  "the writer fell behind or could not write",
                                  value=querylog.dropped + querylog.lost)

    @staticmethod
    def _workers(runtime: Runtime) -> Iterator[Metric]:
        replicas = runtime.replicas
        yield GaugeMetricFamily("globaldns_workers_answering",
                                "Worker processes (dns.workers - 1) that listen and answer "
                                "the main process's heartbeat", value=len(replicas.answering))
        yield _labelled_counter("globaldns_workers_restarts",
                                "Worker processes started again, by why the previous one "
                                "went (exited, unresponsive)", "reason", replicas.restarts)


def dns_summary(runtime: Runtime) -> dict[str, Any]:
    """The DNS counters of this process and, with dns.workers > 1, of its workers (sent
    every few seconds, globaldns/workers.py)."""
    return combined([runtime.server.stats.summary(runtime.server.inflight),
                     *runtime.replicas.stats.values()])


def _labelled_counter(name: str, documentation: str, label: str,
                      values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, n in sorted(values.items()):
        family.add_metric([key], n)
    return family


def pools(forward: Any) -> list[Any]:
    """The forward zones' pools, in the order of `forward.configs`."""
    return [forward.routes[text_to_wire(c.zone)] for c in forward.configs]
