"""Active health checks (issue 4): real HTTP servers and TCP listeners on loopback go down,
return errors and come back, and the DNS answers follow within the configured bounds.
Every target is on 127.0.0.0/8 (all loopback on Linux), so endpoints can have distinct
addresses on one host."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from globaldns.config import parse_text
from globaldns.registry.store import Store
from globaldns.sources.healthcheck import RESULTS, HealthChecker
from globaldns.sources.static import STATIC, HealthKey
from tests.helpers.dns import addresses, ask

INTERVAL = 0.2
TTL = 0
# Beyond `interval * threshold + ttl`: the last probe's own time (a refused connect or a
# loopback HTTP exchange, about a millisecond) plus this test's polling and thread
# scheduling on a busy machine.
SLACK = 0.25


# -- targets on loopback -----------------------------------------------------------------

class HttpTarget:
    """An HTTP server answering every GET with `status`; stop() closes its port, start()
    opens the same port again."""

    def __init__(self, host: str, port: int = 0, status: int = 200) -> None:
        self.host, self.port, self.status = host, port, status
        self.paths: list[str] = []
        self.httpd: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                target.paths.append(self.path)
                self.send_response(target.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
            daemon_threads = True

        self.httpd = Server((self.host, self.port), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


class TcpTarget:
    """A TCP listener that accepts and closes; stop() closes its port, start() reopens it.
    With hold=True it accepts and keeps every connection open without a word, so an HTTP
    check waits for its timeout."""

    def __init__(self, host: str, port: int = 0, *, hold: bool = False) -> None:
        self.host, self.port, self.hold = host, port, hold
        self.sock: socket.socket | None = None
        self.held: list[socket.socket] = []
        self.start()

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        sock.settimeout(0.02)
        self.port = sock.getsockname()[1]
        self.sock = sock
        threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        while self.sock is sock:
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            if self.hold:
                self.held.append(conn)
            else:
                conn.close()

    def stop(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()
        for conn in self.held:
            conn.close()
        self.held.clear()


def shared_port(hosts: list[str]) -> int:
    """A TCP port free on every one of these addresses (a per-service check has one port)."""
    while True:
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts:
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((host, port))
        except OSError:
            continue
        return port


@pytest.fixture
def targets() -> Iterator[list]:
    started: list = []
    yield started
    for target in started:
        target.stop()


# -- helpers ---------------------------------------------------------------------------

def answers(port: int, name: str) -> list[str]:
    return sorted(addresses(ask(port, f"{name}.production.global")))


def wait_until(condition: Callable[[], bool], *, within: float) -> float:
    """Seconds until `condition()` held, polling; fails after `within` (plus a margin, so
    the caller's own bound check reports the real time)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within + 5:
            pytest.fail(f"not true after {within + 5:.1f}s")
        time.sleep(0.01)
    return time.monotonic() - start


def config(services: str) -> str:
    # ttl 0 so the bound is interval * threshold; `none` so that a service whose only
    # endpoint is unhealthy answers nothing instead of failing open.
    return f"""
zones: [{{name: global, ttl: {TTL}, on_all_unhealthy: none}}]
clusters: [{{name: primary, locality: us-central1}}]
services:
{services}
"""


def state(server, address: str):  # type: ignore[no-untyped-def]
    [found] = [e for e in server.app.health.endpoints.values() if e.address == address]
    return found


# -- DNS answers follow the checks ------------------------------------------------------

def test_a_stopped_http_server_leaves_the_answer_within_interval_times_threshold_plus_ttl(
        server_factory, targets):
    port = shared_port(["127.0.0.2", "127.0.0.3"])
    a, b = HttpTarget("127.0.0.2", port), HttpTarget("127.0.0.3", port)
    targets += [a, b]
    s = server_factory(config(f"""
  - name: legacy-billing
    namespace: production
    health_check:
      http: {{path: /health, port: {port}, expect_status: "200-399"}}
      interval: {INTERVAL}s
      timeout: 1s
      healthy_threshold: 2
      unhealthy_threshold: 3
    endpoints:
      - {{address: 127.0.0.2, cluster: primary}}
      - {{address: 127.0.0.3, cluster: primary}}
"""))
    assert answers(s.port, "legacy-billing") == ["127.0.0.2", "127.0.0.3"]
    wait_until(lambda: state(s, "127.0.0.3").consecutive_successes >= 2, within=3 * INTERVAL)
    assert b.paths[0] == "/health"

    b.stop()
    took = wait_until(lambda: answers(s.port, "legacy-billing") == ["127.0.0.2"],
                      within=INTERVAL * 3 + TTL)
    # Hysteresis: three failed checks an interval apart take at least two intervals.
    assert 2 * INTERVAL - 0.05 <= took <= INTERVAL * 3 + TTL + SLACK
    down = state(s, "127.0.0.3")
    assert not down.healthy and down.consecutive_failures >= 3
    assert down.last_error == "connection refused" and down.last_result == "refused"
    assert state(s, "127.0.0.2").healthy
    # Out of the service's answers, but its own name still answers (like a not-ready pod).
    assert addresses(ask(s.port, "127-0-0-3.primary.legacy-billing.production.global")) == [
        "127.0.0.3"]

    b.start()
    took = wait_until(lambda: answers(s.port, "legacy-billing") == ["127.0.0.2", "127.0.0.3"],
                      within=INTERVAL * 2 + TTL)
    assert INTERVAL - 0.05 <= took <= INTERVAL * 2 + TTL + SLACK
    up = state(s, "127.0.0.3")
    assert up.healthy and up.consecutive_failures == 0 and up.last_error == ""
    health = s.app.health
    assert health.transitions == {"healthy": 1, "unhealthy": 1}
    assert health.checks["refused"] >= 3 and health.checks["success"] >= 4
    assert set(health.checks) == set(RESULTS)


def test_an_http_500_fails_the_check_and_a_200_brings_the_endpoint_back(server_factory,
                                                                        targets):
    server = HttpTarget("127.0.0.2")
    targets.append(server)
    s = server_factory(config(f"""
  - name: api
    namespace: production
    health_check:
      http: {{port: {server.port}}}
      interval: {INTERVAL}s
      unhealthy_threshold: 2
      healthy_threshold: 3
    endpoints: [{{address: 127.0.0.2, cluster: primary}}]
"""))
    assert answers(s.port, "api") == ["127.0.0.2"]
    server.status = 500
    took = wait_until(lambda: answers(s.port, "api") == [], within=INTERVAL * 2 + TTL)
    assert took <= INTERVAL * 2 + TTL + SLACK
    assert state(s, "127.0.0.2").last_error == "HTTP status 500, expected 200-399"
    assert server.paths[-1] == "/health"  # the default path

    server.status = 204
    took = wait_until(lambda: answers(s.port, "api") == ["127.0.0.2"],
                      within=INTERVAL * 3 + TTL)
    # Not back on the first success: healthy_threshold is 3.
    assert 2 * INTERVAL - 0.05 <= took <= INTERVAL * 3 + TTL + SLACK
    assert s.app.health.checks["status"] >= 2


@pytest.mark.parametrize(("status", "expect", "healthy"), [
    (302, "200-399", True),
    (302, "200-299", False),
    (200, "200", True),
    (204, "200", False),
    (503, "500-503", True),
    (404, "200-399", False),
])
def test_the_status_must_fall_in_expect_status(server_factory, targets, status, expect,
                                               healthy):
    server = HttpTarget("127.0.0.2", status=status)
    targets.append(server)
    s = server_factory(config(f"""
  - name: api
    namespace: production
    health_check:
      http: {{port: {server.port}, path: "/ready?full=1", expect_status: "{expect}"}}
      interval: 50ms
      unhealthy_threshold: 1
    endpoints: [{{address: 127.0.0.2, cluster: primary}}]
"""))
    wait_until(lambda: state(s, "127.0.0.2").checks >= 2, within=0.5)
    assert state(s, "127.0.0.2").healthy is healthy
    assert answers(s.port, "api") == (["127.0.0.2"] if healthy else [])
    assert server.paths[0] == "/ready?full=1"  # redirects are not followed either


def test_a_tcp_check_follows_a_listener_going_away_and_coming_back(server_factory, targets):
    listener = TcpTarget("127.0.0.4")
    targets.append(listener)
    s = server_factory(config(f"""
  - name: cache
    namespace: production
    endpoints:
      - address: 127.0.0.4
        cluster: primary
        health_check:
          tcp: {{port: {listener.port}}}
          interval: {INTERVAL}s
          healthy_threshold: 2
          unhealthy_threshold: 3
      - {{address: 10.9.0.1, cluster: primary}}    # no check: always in the answer
"""))
    wait_until(lambda: state(s, "127.0.0.4").consecutive_successes >= 1, within=2 * INTERVAL)
    assert answers(s.port, "cache") == ["10.9.0.1", "127.0.0.4"]

    listener.stop()
    took = wait_until(lambda: answers(s.port, "cache") == ["10.9.0.1"],
                      within=INTERVAL * 3 + TTL)
    assert took <= INTERVAL * 3 + TTL + SLACK
    listener.start()
    took = wait_until(lambda: answers(s.port, "cache") == ["10.9.0.1", "127.0.0.4"],
                      within=INTERVAL * 2 + TTL)
    assert took <= INTERVAL * 2 + TTL + SLACK
    assert [e.address for e in s.app.health.endpoints.values()] == ["127.0.0.4"]


@pytest.mark.parametrize("kind", ["http", "tcp"])
def test_an_ipv6_endpoint_is_checked_on_its_ipv6_address(server_factory, targets, kind):
    target = HttpTarget("::1", status=500) if kind == "http" else TcpTarget("::1")
    targets.append(target)
    s = server_factory(config(f"""
  - name: v6
    namespace: production
    health_check: {{{kind}: {{port: {target.port}}}, interval: 50ms, unhealthy_threshold: 1}}
    endpoints: [{{address: "::1", cluster: primary}}]
"""))
    wait_until(lambda: state(s, "::1").checks >= 1, within=0.1)
    assert state(s, "::1").last_result == ("status" if kind == "http" else "success")
    expected = [] if kind == "http" else ["::1"]
    assert sorted(addresses(ask(s.port, "v6.production.global", "AAAA"))) == expected


def test_an_endpoints_own_check_wins_over_its_services(server_factory, targets):
    http = HttpTarget("127.0.0.5")
    closed = shared_port(["127.0.0.5", "127.0.0.6"])  # nothing listens there
    targets.append(http)
    s = server_factory(config(f"""
  - name: mixed
    namespace: production
    health_check:
      tcp: {{port: {closed}}}
      interval: 50ms
      unhealthy_threshold: 2
    endpoints:
      - address: 127.0.0.5
        cluster: primary
        health_check:
          http: {{port: {http.port}, path: /own}}
          interval: 50ms
      - {{address: 127.0.0.6, cluster: primary}}
"""))
    wait_until(lambda: answers(s.port, "mixed") == ["127.0.0.5"], within=0.1 * 2 + TTL)
    own, inherited = state(s, "127.0.0.5"), state(s, "127.0.0.6")
    assert (own.kind, own.port, own.healthy) == ("http", http.port, True)
    assert (inherited.kind, inherited.port, inherited.healthy) == ("tcp", closed, False)
    assert http.paths and set(http.paths) == {"/own"}


def test_an_endpoint_is_healthy_until_its_first_check_completes(server_factory, targets):
    # The listener never answers, so every HTTP check waits out its 1 s timeout: until the
    # first one ends, nothing is known and the endpoint stays in the answer.
    hung = TcpTarget("127.0.0.7", hold=True)
    targets.append(hung)
    s = server_factory(config(f"""
  - name: slow
    namespace: production
    health_check:
      http: {{port: {hung.port}}}
      interval: 100ms
      timeout: 1s
      unhealthy_threshold: 1
    endpoints: [{{address: 127.0.0.7, cluster: primary}}]
"""))
    started = time.monotonic()
    assert answers(s.port, "slow") == ["127.0.0.7"]
    endpoint = state(s, "127.0.0.7")
    assert endpoint.healthy and endpoint.checks == 0 and endpoint.last_result == ""
    while time.monotonic() - started < 0.8:
        assert answers(s.port, "slow") == ["127.0.0.7"]
        time.sleep(0.05)
    # The first check ends at its timeout (after a jitter below one interval); with
    # unhealthy_threshold 1 that one failure is enough.
    wait_until(lambda: answers(s.port, "slow") == [], within=1.0 + 0.1 + TTL)
    assert endpoint.last_result == "timeout" and endpoint.last_error == "no answer within 1s"
    assert 1.0 - 0.05 <= time.monotonic() - started <= 1.0 + 0.1 + TTL + SLACK + 0.1


def test_a_reload_restarts_only_the_checks_that_changed(server_factory, targets):
    up = HttpTarget("127.0.0.2")
    targets.append(up)
    closed = shared_port(["127.0.0.3"])
    services = """
  - name: a
    namespace: production
    health_check: {{tcp: {{port: {closed}}}, interval: 50ms, unhealthy_threshold: 1}}
    endpoints: [{{address: 127.0.0.3, cluster: primary}}]
  - name: b
    namespace: production
    health_check: {{http: {{port: {port}}}, interval: {interval}}}
    endpoints: [{{address: 127.0.0.2, cluster: primary}}]
"""
    yaml = config(services.format(closed=closed, port=up.port, interval="50ms"))
    s = server_factory(yaml)
    wait_until(lambda: answers(s.port, "a") == [], within=0.1 + TTL)
    health = s.app.health
    before = dict(health.endpoints)

    # The same config again: every check keeps running with its state, so `a` stays out
    # of the answer instead of starting over as healthy.
    s.call(s.app.apply, parse_text(yaml, "test.yaml"))
    assert health.endpoints == before
    assert all(health.endpoints[k] is v for k, v in before.items())
    assert answers(s.port, "a") == []

    # Only b's interval changes: b's check starts over, a's does not.
    s.call(s.app.apply, parse_text(config(services.format(
        closed=closed, port=up.port, interval="60ms")), "test.yaml"))
    [a_key] = [k for k in before if k.service == ("production", "a")]
    assert health.endpoints[a_key] is before[a_key]
    [b_key] = [k for k in health.endpoints if k.service == ("production", "b")]
    assert b_key not in before and b_key.check.interval == 0.06
    assert answers(s.port, "a") == [] and answers(s.port, "b") == ["127.0.0.2"]
    assert s.call(lambda: sorted(t.get_name() for t in health._tasks.values())) == sorted(
        f"healthcheck {k.address}:{k.check.port}" for k in health.endpoints)

    # A check removed from the config stops, and its endpoint's readiness is the config's.
    s.call(s.app.apply, parse_text(config("""
  - name: a
    namespace: production
    endpoints: [{address: 127.0.0.3, cluster: primary}]
"""), "test.yaml"))
    assert health.endpoints == {} and health.health == {}
    assert answers(s.port, "a") == ["127.0.0.3"]


def test_at_most_64_checks_run_at_once(server_factory, targets):
    # 100 services share one silent endpoint: 100 checks every 100 ms that each hang for
    # their 1 s timeout would need 1,000 sockets; the pool keeps it to 64.
    hung = TcpTarget("127.0.0.8", hold=True)
    targets.append(hung)
    s = server_factory(config("".join(f"""
  - name: svc{i}
    namespace: production
    health_check: {{http: {{port: {hung.port}}}, interval: 100ms, timeout: 1s}}
    endpoints: [{{address: 127.0.0.8, cluster: primary}}]
""" for i in range(100))))
    seen = []
    start = time.monotonic()
    while time.monotonic() - start < 1.5:
        seen.append(s.app.health.in_flight)
        time.sleep(0.01)
    assert max(seen) == 64
    assert s.app.health.checks["timeout"] >= 64
    assert answers(s.port, "svc1") == ["127.0.0.8"]  # still within its 3 failures


def test_checks_of_500_endpoints_do_not_delay_dns_answers(server_factory):
    # 500 endpoints on a port where nothing listens, checked every 500 ms: 1,000 refused
    # connects a second on the same event loop as the DNS server, more than 5,000
    # endpoints checked every 10 s would cost.
    closed = shared_port(["127.0.0.1"])
    services = "".join(f"""
  - name: svc{i}
    namespace: production
    health_check: {{tcp: {{port: {closed}}}, interval: 500ms, unhealthy_threshold: 2}}
    endpoints: [{", ".join(f"{{address: 127.1.{i}.{j + 1}, cluster: primary}}"
                            for j in range(5))}]
""" for i in range(100))
    s = server_factory(config(services + """
  - name: probe
    namespace: production
    endpoints: [{address: 10.9.0.1, cluster: primary}]
"""))
    health = s.app.health
    assert len(health.endpoints) == 500
    latencies = []
    start = time.monotonic()
    while time.monotonic() - start < 3.0:
        t = time.perf_counter()
        assert answers(s.port, "probe") == ["10.9.0.1"]
        latencies.append(time.perf_counter() - t)
    assert health.checks["refused"] >= 500 * 4
    assert health.transitions["unhealthy"] == 500
    assert answers(s.port, "svc7") == []
    latencies.sort()
    p50, p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99)]
    # Loose for a busy test machine (this client shares the server's process and GIL);
    # writing every flip where its check ended stalled the loop for 100+ ms at once.
    assert p50 < 0.005, f"median {p50 * 1000:.1f} ms"
    assert p99 < 0.025, f"p99 {p99 * 1000:.1f} ms"
    # The slowest also pays for full garbage collections of the whole test process (it
    # holds every earlier test's objects): up to ~150 ms seen on the 2-core CI machine.
    assert latencies[-1] < 0.25, f"slowest {latencies[-1] * 1000:.1f} ms"


# -- the hysteresis, result by result ---------------------------------------------------

HYSTERESIS = [
    # results of consecutive checks → healthy after each (healthy_threshold 2,
    # unhealthy_threshold 3)
    ("", ""),
    ("s", "H"),
    ("f", "H"),
    ("ff", "HH"),
    ("fff", "HHU"),
    ("ffffs", "HHUUU"),
    ("fffss", "HHUUH"),
    ("fffsfss", "HHUUUUH"),
    ("ffsfff", "HHHHHU"),
    ("fffssfff", "HHUUHHHU"),
]


@pytest.mark.parametrize(("results", "expected"), HYSTERESIS)
def test_an_endpoint_flips_only_after_its_threshold_of_consecutive_results(results, expected):
    cfg = parse_text(config("""
  - name: api
    namespace: production
    health_check: {tcp: {port: 9}, healthy_threshold: 2, unhealthy_threshold: 3}
    endpoints: [{address: 10.0.0.1, cluster: primary}, {address: 10.0.0.2, cluster: primary}]
"""), "test.yaml")
    store = Store()
    checker = HealthChecker(store, clock=lambda: 1234.5)
    checker.apply(cfg)  # not started: results come from record() alone
    key = HealthKey(("production", "api"), "10.0.0.1", cfg.services[0].health_check)
    seen = ""
    for r in results:
        checker.record(key, "success" if r == "s" else "refused", "" if r == "s" else "boom")
        seen += "H" if checker.endpoints[key].healthy else "U"
        ready = {e.address: e.ready for e in store.raw(("production", "api"))[STATIC].endpoints}
        assert ready == {"10.0.0.1": seen[-1] == "H", "10.0.0.2": True}
    assert seen == expected
    if results:
        assert checker.endpoints[key].last_check == 1234.5
    assert sum(checker.checks.values()) == len(results)


def test_a_configured_not_ready_endpoint_stays_out_whatever_its_check_says():
    cfg = parse_text(config("""
  - name: api
    namespace: production
    health_check: {tcp: {port: 9}, healthy_threshold: 1}
    endpoints: [{address: 10.0.0.1, cluster: primary, ready: false}]
"""), "test.yaml")
    store = Store()
    checker = HealthChecker(store)
    checker.apply(cfg)
    [key] = checker.endpoints
    checker.record(key, "success")
    assert store.raw(("production", "api"))[STATIC].endpoints[0].ready is False

