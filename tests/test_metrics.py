"""/metrics after known traffic over real sockets: exact counters, promtool's lint, bounded
labels."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from tests.helpers.dns import ask, make_query, rcode, tcp_raw, udp_raw
from tests.helpers.http import get, promtool_check, scrape, total, value
from tests.helpers.server import Running
from tests.helpers.upstreams import fake_upstreams
from tests.helpers.wait import wait_until

CONFIG = """
resolver: {locality: r1/z1, instance: metrics-test}
clusters:
  - {name: east, locality: r1}
  - {name: west, locality: r2}
services:
  - name: api
    namespace: prod
    endpoints:
      - {address: 10.0.0.1, cluster: east}
      - {address: 10.0.0.2, cluster: east, ready: false}
      - {address: 10.0.1.1, cluster: west}
      - {address: "fd00::1", cluster: west}
"""


@pytest.fixture
def upstream() -> Iterator[object]:
    with fake_upstreams() as make:
        yield make().add("www.example.test. 60 IN A 192.0.2.1")


@pytest.fixture
def server(server_factory, upstream) -> Running:  # type: ignore[no-untyped-def]
    return server_factory(CONFIG + f"forward: [{{zone: example.test, upstreams: ['{upstream}'],"
                          " timeout: 1s}]\n")


def of_type(port: int, name: str, qtype: int) -> str:
    """The rcode for a query of a numeric qtype (dnslib only builds known ones)."""
    query = bytearray(make_query(name, "A"))
    struct.pack_into("!H", query, len(query) - 4, qtype)
    reply = udp_raw(port, bytes(query))
    assert reply is not None
    return ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")[reply[3] & 0xF]


def send_known_traffic(port: int) -> None:
    for _ in range(3):  # the first through the chain, then from the wire cache
        assert rcode(ask(port, "api.prod.global", "A")) == "NOERROR"
    assert rcode(ask(port, "api.prod.global", "AAAA", edns=1232)) == "NOERROR"
    for _ in range(2):
        assert rcode(ask(port, "missing.prod.global", "A")) == "NXDOMAIN"
    assert rcode(ask(port, "api.prod.global", "A", tcp=True)) == "NOERROR"
    assert of_type(port, "api.prod.global", 65280) == "NOERROR"  # a private-use qtype
    assert rcode(ask(port, "www.example.test", "A")) == "NOERROR"  # forwarded
    assert rcode(ask(port, "version.bind", "TXT", qclass="CH")) == "NOERROR"
    # QDCOUNT 2: FORMERR; a response (QR=1) sent to us: dropped, no reply.
    query = bytearray(make_query("api.prod.global"))
    query[5] = 2
    assert udp_raw(port, bytes(query)) is not None
    response = bytearray(make_query("api.prod.global"))
    response[2] |= 0x80
    assert udp_raw(port, bytes(response), timeout=0.3) is None


def test_counters_after_known_traffic(server: Running) -> None:
    send_known_traffic(server.port)
    m = scrape(server)
    req = "globaldns_dns_requests_total"
    assert value(m, req, proto="udp", family="1", type="A") == 3 + 2 + 1
    assert value(m, req, proto="udp", family="1", type="AAAA") == 1
    assert value(m, req, proto="tcp", family="1", type="A") == 1
    assert value(m, req, proto="udp", family="1", type="TXT") == 1
    # The private-use qtype and the unreadable question: `other`, never the number.
    assert value(m, req, proto="udp", family="1", type="other") == 2
    assert total(m, req) == 11

    resp = "globaldns_dns_responses_total"
    assert value(m, resp, rcode="NOERROR") == 8
    assert value(m, resp, rcode="NXDOMAIN") == 2
    assert value(m, resp, rcode="FORMERR") == 1
    assert value(m, "globaldns_dns_dropped_total") == 1

    # Every reply is in both histograms; only the forwarded one waited.
    assert value(m, "globaldns_dns_request_duration_seconds_count") == 11
    assert value(m, "globaldns_dns_request_duration_seconds_bucket", le="0.00025") >= 10
    assert value(m, "globaldns_dns_request_duration_seconds_sum") > 0
    size_count = total(m, "globaldns_dns_response_size_bytes_count")
    assert size_count == 11
    assert value(m, "globaldns_dns_response_size_bytes_count", proto="tcp") == 1
    assert value(m, "globaldns_dns_response_size_bytes_bucket", proto="udp", le="0") == 0
    assert value(m, "globaldns_dns_response_size_bytes_bucket", proto="udp", le="+Inf") == 10
    assert value(m, "globaldns_dns_response_size_bytes_sum", proto="udp") > 10 * 12

    assert value(m, "globaldns_chaos_answers_total", kind="version") == 1
    assert value(m, "globaldns_cache_misses_total") == 1
    assert value(m, "globaldns_cache_entries") == 1
    assert total(m, "globaldns_forward_requests_total", zone="example.test") == 1
    assert total(m, "globaldns_forward_responses_total", zone="example.test",
                 rcode="NOERROR") == 1
    assert total(m, "globaldns_forward_request_duration_seconds_count") == 1
    assert total(m, "globaldns_forward_request_duration_seconds_sum") > 0
    assert total(m, "globaldns_forward_failures_total") == 0
    assert total(m, "globaldns_forward_upstream_healthy") == 1

    # The registry, by cluster and readiness.
    assert value(m, "globaldns_registry_services") == 1
    assert value(m, "globaldns_registry_endpoints", cluster="east", ready="true") == 1
    assert value(m, "globaldns_registry_endpoints", cluster="east", ready="false") == 1
    assert value(m, "globaldns_registry_endpoints", cluster="west", ready="true") == 2
    assert value(m, "globaldns_ready") == 1
    assert value(m, "globaldns_build_info", version=__import__("globaldns").__version__,
                 python=__import__("platform").python_version()) == 1


def test_cache_hits_and_forward_responses_are_counted(server: Running) -> None:
    for _ in range(3):
        assert rcode(ask(server.port, "www.example.test", "A", tcp=True)) == "NOERROR"
    m = scrape(server)
    assert value(m, "globaldns_cache_misses_total") == 1
    assert value(m, "globaldns_cache_hits_total") == 2
    assert total(m, "globaldns_forward_requests_total") == 1


def test_registry_gauges_follow_registry_changes(server: Running) -> None:
    from globaldns.registry.model import Endpoint, Locality, ServiceData

    data = ServiceData(endpoints=tuple(
        Endpoint(address=f"10.9.0.{i}", cluster="west", locality=Locality("r2"),
                 ready=i % 2 == 0) for i in range(1, 6)))
    server.call(server.app.runtime.store.set, "test", ("prod", "extra"), data)
    m = scrape(server)
    assert value(m, "globaldns_registry_services") == 2
    assert value(m, "globaldns_registry_endpoints", cluster="west", ready="true") == 2 + 2
    assert value(m, "globaldns_registry_endpoints", cluster="west", ready="false") == 3
    server.call(server.app.runtime.store.delete, "test", ("prod", "extra"))
    m = scrape(server)
    assert value(m, "globaldns_registry_services") == 1
    assert value(m, "globaldns_registry_endpoints", cluster="west", ready="false") == 0


def test_exposition_passes_promtool(server: Running) -> None:
    send_known_traffic(server.port)
    status, content_type, text = get(server, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    promtool_check(text)
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    ours = {n for n in names if not n.startswith(("process_", "python_"))}
    assert all(n.startswith("globaldns_") for n in ours), ours


def test_no_label_takes_a_query_name_or_a_client_address(server: Running) -> None:
    for i in range(50):
        rcode(ask(server.port, f"random{i}.prod.global", "A"))
        of_type(server.port, f"random{i}.prod.global", 60000 + i)
    _, _, text = get(server, "/metrics")
    assert "random" not in text
    assert "127.0.0.1\"" not in text.replace('to="127.0.0.1', "")
    m = scrape(server)
    types = {dict(labels).get("type") for (name, labels) in m
             if name == "globaldns_dns_requests_total"}
    assert types <= {"A", "AAAA", "TXT", "other"}


def test_counters_stay_bounded_under_a_flood_of_odd_keys(server: Running) -> None:
    """Many distinct (qtype, size) keys fold into totals; the numbers stay exact."""
    stats = server.app.runtime.server.stats
    before = scrape(server)
    server.call(setattr, stats, "max_keys", 5)
    for qtype in range(65000, 65020):
        of_type(server.port, "api.prod.global", qtype)
    assert len(stats.replies) <= 6
    after = scrape(server)
    added = total(after, "globaldns_dns_requests_total") - \
        total(before, "globaldns_dns_requests_total")
    assert added == 20
    assert value(after, "globaldns_dns_response_size_bytes_count", proto="udp") - value(
        before, "globaldns_dns_response_size_bytes_count", proto="udp") == 20


def test_acl_counters_run_on_across_a_reload(server_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "gd.yaml"
    base = CONFIG + "acl: {allow_query: [10.0.0.0/8]}\nreload: {interval: 0}\n" \
        "http: {listen: 127.0.0.1:0}\n"
    path.write_text(base)
    srv = server_factory(path.read_text(), config_path=str(path))
    assert rcode(ask(srv.port, "api.prod.global")) == "REFUSED"
    path.write_text(base + "log: {queries: false}\n")
    assert srv.run(srv.app.runtime.reloads.reload(why="test")) is True
    assert rcode(ask(srv.port, "api.prod.global")) == "REFUSED"
    m = scrape(srv)
    assert value(m, "globaldns_acl_refused_total", reason="query") == 2
    assert value(m, "globaldns_config_reloads_total", result="success") == 1


def test_wire_cache_hits_count_like_any_reply(server: Running) -> None:
    query = make_query("api.prod.global", "A", qid=7)
    first = udp_raw(server.port, query)
    for _ in range(20):
        assert udp_raw(server.port, query) is not None
    assert first is not None
    m = scrape(server)
    assert value(m, "globaldns_dns_requests_total", proto="udp", family="1", type="A") == 21
    assert value(m, "globaldns_dns_response_size_bytes_sum", proto="udp") == 21 * len(first)
    assert value(m, "globaldns_dns_wire_cache_entries") >= 1
    assert struct.unpack("!H", first[:2])[0] == 7
    # TCP answers are never from the wire cache but count the same.
    assert len(tcp_raw(server.port, [query])) == 1


def test_upstream_failures_and_health_probes_are_counted(server_factory) -> None:  # type: ignore[no-untyped-def]
    with fake_upstreams() as make:
        dead = make()
        dead.mode = "silent"
        server = server_factory(CONFIG + f"forward: [{{zone: example.test, upstreams: "
                                f"['{dead}'], timeout: 200ms, tries: 1, max_fails: 1, "
                                "probe_interval: 100ms}]\n")
        assert rcode(ask(server.port, "www.example.test")) == "SERVFAIL"
        # Probes (every 100 ms, each waiting 200 ms), none answered.
        m = wait_until(lambda: (m := scrape(server)) and value(
            m, "globaldns_forward_healthcheck_failures_total", zone="example.test",
            to=str(dead)) >= 1 and m)
        to = str(dead)
        assert value(m, "globaldns_forward_failures_total", zone="example.test", to=to) >= 1
        assert value(m, "globaldns_forward_upstream_healthy", zone="example.test", to=to) == 0
        assert value(m, "globaldns_forward_healthcheck_failures_total", zone="example.test",
                     to=to) >= 1
        assert value(m, "globaldns_forward_unreachable_total") == 1
        dead.mode = "answer"
        assert wait_until(lambda: value(scrape(server), "globaldns_forward_upstream_healthy",
                                        zone="example.test", to=to) == 1)


def test_every_metric_is_documented_and_every_documented_metric_exists(
        server_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """docs/operations.md's table names exactly what /metrics exposes (with every part
    configured: a watched cluster, remote Secrets, forwarding, health checks, the log)."""
    import re

    from tests.helpers.data import ROOT

    kubeconfig = tmp_path / "dead.kubeconfig"
    kubeconfig.write_text("""apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
""")
    server = server_factory(CONFIG.replace(
        "  - {name: west, locality: r2}",
        f"  - {{name: west, locality: r2}}\n  - {{name: watched, kubeconfig: {kubeconfig}}}")
        + "remote_secrets: {cluster: watched}\n"
        + "forward: [{zone: example.test, upstreams: ['127.0.0.1:9']}]\n"
        + f"log: {{queries: true, file: {tmp_path / 'q.log'}}}\n")
    _, _, text = get(server, "/metrics")
    exposed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")
               and line.split()[2].startswith("globaldns_")}
    exposed = {n + "_total" if f"{n}_total " in text or f"{n}_total{{" in text else n
               for n in exposed}
    doc = (ROOT / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"`(globaldns_[a-z0-9_]+)`", doc.split("### Metrics")[1]
                                .split("**What counting costs.**")[0]))
    assert exposed - documented == set(), "undocumented metrics"
    assert documented - exposed == set(), "documented but not exposed"


def test_workers_counters_add_up_in_the_main_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import signal
    import socket as socket_module
    import urllib.request

    from tests.helpers.server import free_port, serve

    port, http_port = free_port(), free_port()
    path = tmp_path / "w.yaml"
    path.write_text(f"dns: {{listen: 127.0.0.1:{port}}}\nresolver: {{instance: gd}}\n"
                    + CONFIG.split("\n", 2)[2])
    proc = serve("--config", str(path), "--workers", "2", "--http-listen",
                 f"127.0.0.1:{http_port}")
    try:
        nsids = set()
        for _ in range(60):  # new source ports: the kernel spreads them over both
            with socket_module.socket(socket_module.AF_INET, socket_module.SOCK_DGRAM) as s:
                s.settimeout(2)
                s.sendto(make_query("api.prod.global", edns=1232, options=[(3, b"")]),
                         ("127.0.0.1", port))
                reply = s.recv(4096)
            nsids.add(reply[reply.rfind(b"gd"):].decode())
        assert nsids == {"gd", "gd/1"}

        def requests() -> float:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics",
                                        timeout=5) as r:
                text = r.read().decode()
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("globaldns_dns_requests_total{"))

        assert wait_until(lambda: requests() == 60, timeout=10)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0


def test_clusters_below_min_healthy_follow_changes_and_reloads(server_factory,
                                                                tmp_path) -> None:  # type: ignore[no-untyped-def]
    from globaldns.registry.model import Endpoint, Locality, ServiceData

    path = tmp_path / "h.yaml"
    text = (CONFIG + "routing: [{match: api.prod, min_healthy: 2}]\nreload: {interval: 0}\n"
            "http: {listen: 127.0.0.1:0}\n")
    path.write_text(text)
    server = server_factory(text, config_path=str(path))
    # api.prod: east has 1 of 2 ready (below 2), west 2 of 2.
    assert value(scrape(server), "globaldns_registry_unhealthy_services", cluster="east") == 1
    assert value(scrape(server), "globaldns_registry_unhealthy_services", cluster="west") == 0
    # Another source adds ready east endpoints to api.prod: east is healthy again (one
    # above the threshold: the hysteresis of min_healthy).
    server.call(server.app.runtime.store.set, "test", ("prod", "api"), ServiceData(endpoints=tuple(
        Endpoint(address=f"10.0.0.{i}", cluster="east", locality=Locality("r1"))
        for i in (8, 9))))
    assert value(scrape(server), "globaldns_registry_unhealthy_services", cluster="east") == 0
    server.call(server.app.runtime.store.delete, "test", ("prod", "api"))
    assert value(scrape(server), "globaldns_registry_unhealthy_services", cluster="east") == 1
    # A reload that drops min_healthy rebuilds the answers and the gauge with them.
    path.write_text(text.replace("min_healthy: 2", "min_healthy: 0"))
    assert server.run(server.app.runtime.reloads.reload(why="test")) is True
    assert value(scrape(server), "globaldns_registry_unhealthy_services", cluster="east") == 0
    gauges = server.app.metrics.gauges
    assert gauges.unhealthy == {} and gauges.unhealthy_of == {}
