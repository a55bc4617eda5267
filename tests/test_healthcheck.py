"""Active health checks (issue 4): real HTTP servers and TCP listeners on loopback go down,
return errors and come back, and the DNS answers follow. The checks' schedule runs on a
time the test moves (`ManualTime`), so "within interval x threshold" is exact, not a
race; the probes themselves are real. Every target is on 127.0.0.0/8 (all loopback on
Linux), so endpoints can have distinct addresses on one host. The DNS latency while 500
endpoints are checked is measured in bench/healthcheck_latency.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from globaldns.config import parse_text
from globaldns.registry.store import Store
from globaldns.sources.healthcheck import RESULTS, HealthChecker
from globaldns.sources.static import STATIC, HealthKey
from tests.helpers.clock import ManualTime
from tests.helpers.dns import addresses, ask
from tests.helpers.targets import HttpTarget, TcpTarget, shared_port
from tests.helpers.wait import eventually, wait_until

# Seconds of the checks' own (moved) time; real time only for the server-level tests.
INTERVAL = 10.0
TTL = 0


# -- targets on loopback -----------------------------------------------------------------







@pytest.fixture
def targets() -> Iterator[list]:
    started: list = []
    yield started
    for target in started:
        target.stop()


# -- helpers ---------------------------------------------------------------------------

def answers(port: int, name: str) -> list[str]:
    return sorted(addresses(ask(port, f"{name}.production.global")))


def config(services: str) -> str:
    # ttl 0 so answers follow at once; `none` so that a service whose only endpoint is
    # unhealthy answers nothing instead of failing open.
    return f"""
zones: [{{name: global, ttl: {TTL}, on_all_unhealthy: none}}]
clusters: [{{name: primary, locality: us-central1}}]
services:
{services}
"""


def state(server, address: str):  # type: ignore[no-untyped-def]
    [found] = [e for e in server.app.runtime.health.endpoints.values() if e.address == address]
    return found


def ready(store: Store, service: str) -> dict[str, bool]:
    """The static source's readiness of a service's endpoints, as the checker wrote it."""
    return {e.address: e.ready for e in store.raw(("production", service))[STATIC].endpoints}


@pytest.fixture
async def checker() -> AsyncIterator[Callable[[str], Any]]:
    """`checker(services)`: a started HealthChecker of that config on moved time (its first
    checks run at once: no random start), with `.clock` and `.store`; stopped at the end."""
    made: list[HealthChecker] = []

    def make(services: str) -> Any:
        clock = ManualTime()
        store = Store()
        health = HealthChecker(store, rand=lambda: 0.0, now=clock.now, sleep=clock.sleep)
        health.apply(parse_text(config(services), "test.yaml"))
        health.start()
        made.append(health)
        return SimpleNamespace(health=health, clock=clock, store=store,
                               state=lambda address: next(
                                   e for e in health.endpoints.values() if e.address == address))

    yield make
    for health in made:
        await health.stop()


# -- the schedule, on moved time ---------------------------------------------------------

async def test_a_stopped_http_server_is_out_after_exactly_unhealthy_threshold_intervals(
        checker, targets):
    port = shared_port(["127.0.0.2", "127.0.0.3"])
    a, b = HttpTarget("127.0.0.2", port), HttpTarget("127.0.0.3", port)
    targets += [a, b]
    c = checker(f"""
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
""")
    await c.clock.until_sleeping(2)  # both first checks done
    assert c.state("127.0.0.3").consecutive_successes == 1 and b.paths == ["/health"]

    b.stop()
    for failures in (1, 2):  # hysteresis: still in after two failed checks
        await c.clock.advance(INTERVAL)
        down = c.state("127.0.0.3")
        assert down.healthy and down.consecutive_failures == failures
    await c.clock.advance(INTERVAL)  # the third, `unhealthy_threshold` intervals later
    down = c.state("127.0.0.3")
    assert not down.healthy and down.consecutive_failures == 3
    assert down.last_error == "connection refused" and down.last_result == "refused"
    await eventually(lambda: ready(c.store, "legacy-billing") == {
        "127.0.0.2": True, "127.0.0.3": False})

    b.start()
    await c.clock.advance(INTERVAL)  # one success of healthy_threshold 2: still out
    assert not c.state("127.0.0.3").healthy
    await c.clock.advance(INTERVAL)
    up = c.state("127.0.0.3")
    assert up.healthy and up.consecutive_failures == 0 and up.last_error == ""
    await eventually(lambda: ready(c.store, "legacy-billing") == {
        "127.0.0.2": True, "127.0.0.3": True})
    assert c.health.transitions == {"healthy": 1, "unhealthy": 1}
    # Six checks each, an interval apart: 127.0.0.2 all passed; 127.0.0.3 three refused.
    assert c.health.checks == {"success": 9, "status": 0, "refused": 3, "timeout": 0,
                               "error": 0}
    assert c.clock.sleeps == [INTERVAL] * 12


async def test_an_endpoint_is_healthy_until_its_first_check_completes(checker, targets):
    # The listener never answers, so the HTTP check waits out its (real) timeout: until it
    # ends, nothing is known and the endpoint stays in.
    hung = TcpTarget("127.0.0.7", hold=True)
    targets.append(hung)
    c = checker(f"""
  - name: slow
    namespace: production
    health_check:
      http: {{port: {hung.port}}}
      timeout: 300ms
      unhealthy_threshold: 1
    endpoints: [{{address: 127.0.0.7, cluster: primary}}]
""")
    await eventually(lambda: c.health.in_flight == 1)
    endpoint = c.state("127.0.0.7")
    assert endpoint.healthy and endpoint.checks == 0 and endpoint.last_result == ""
    assert ready(c.store, "slow") == {"127.0.0.7": True}
    await c.clock.until_sleeping(1)  # the check ended at its timeout
    assert endpoint.last_result == "timeout" and endpoint.last_error == "no answer within 0.3s"
    assert not endpoint.healthy
    await eventually(lambda: ready(c.store, "slow") == {"127.0.0.7": False})


async def test_at_most_64_checks_run_at_once(checker, targets):
    # 100 services share one silent endpoint: 100 checks at once that each hang until
    # their timeout would need 100 sockets; the pool keeps it to 64.
    hung = TcpTarget("127.0.0.8", hold=True)
    targets.append(hung)
    c = checker("".join(f"""
  - name: svc{i}
    namespace: production
    health_check: {{http: {{port: {hung.port}}}, timeout: 300ms}}
    endpoints: [{{address: 127.0.0.8, cluster: primary}}]
""" for i in range(100)))
    seen: list[int] = []
    await eventually(lambda: seen.append(c.health.in_flight) or c.clock.sleeping == 100)
    assert max(seen) == 64
    assert c.health.checks["timeout"] == 100
    assert ready(c.store, "svc1") == {"127.0.0.8": True}  # within its 3 failures


async def test_flips_of_500_endpoints_are_all_written(checker):
    # 500 endpoints on a port where nothing listens: their flips are written service by
    # service by one writer task (bench/healthcheck_latency.py measures that DNS answers
    # meanwhile stay fast).
    closed = shared_port(["127.0.0.1"])
    c = checker("".join(f"""
  - name: svc{i}
    namespace: production
    health_check: {{tcp: {{port: {closed}}}, unhealthy_threshold: 2}}
    endpoints: [{", ".join(f"{{address: 127.1.{i}.{j + 1}, cluster: primary}}"
                            for j in range(5))}]
""" for i in range(100)))
    await c.clock.until_sleeping(500)
    assert len(c.health.endpoints) == 500 and c.health.transitions["unhealthy"] == 0
    await c.clock.advance(INTERVAL)
    assert c.health.transitions["unhealthy"] == 500
    assert c.health.checks["refused"] == 1000
    await eventually(lambda: all(not any(ready(c.store, f"svc{i}").values())
                                 for i in range(100)))


# -- DNS answers follow the checks (a real server; waits for the answer, not for time) ---

def test_a_stopped_http_server_leaves_the_answer_and_comes_back(server_factory, targets):
    port = shared_port(["127.0.0.2", "127.0.0.3"])
    a, b = HttpTarget("127.0.0.2", port), HttpTarget("127.0.0.3", port)
    targets += [a, b]
    s = server_factory(config(f"""
  - name: legacy-billing
    namespace: production
    health_check:
      http: {{path: /health, port: {port}}}
      interval: 50ms
      healthy_threshold: 2
      unhealthy_threshold: 3
    endpoints:
      - {{address: 127.0.0.2, cluster: primary}}
      - {{address: 127.0.0.3, cluster: primary}}
"""))
    assert answers(s.port, "legacy-billing") == ["127.0.0.2", "127.0.0.3"]
    b.stop()
    wait_until(lambda: answers(s.port, "legacy-billing") == ["127.0.0.2"])
    assert state(s, "127.0.0.3").last_result == "refused" and state(s, "127.0.0.2").healthy
    # Out of the service's answers, but its own name still answers (like a not-ready pod).
    assert addresses(ask(s.port, "127-0-0-3.primary.legacy-billing.production.global")) == [
        "127.0.0.3"]
    b.start()
    wait_until(lambda: answers(s.port, "legacy-billing") == ["127.0.0.2", "127.0.0.3"])
    health = s.app.runtime.health
    assert health.transitions == {"healthy": 1, "unhealthy": 1}
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
      interval: 50ms
      unhealthy_threshold: 2
      healthy_threshold: 3
    endpoints: [{{address: 127.0.0.2, cluster: primary}}]
"""))
    assert answers(s.port, "api") == ["127.0.0.2"]
    server.status = 500
    wait_until(lambda: answers(s.port, "api") == [])
    assert state(s, "127.0.0.2").last_error == "HTTP status 500, expected 200-399"
    assert server.paths[-1] == "/health"  # the default path
    server.status = 204
    wait_until(lambda: answers(s.port, "api") == ["127.0.0.2"])
    assert state(s, "127.0.0.2").consecutive_successes >= 3  # healthy_threshold
    assert s.app.runtime.health.checks["status"] >= 2


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
    wait_until(lambda: state(s, "127.0.0.2").checks >= 2)
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
          interval: 50ms
          healthy_threshold: 2
          unhealthy_threshold: 3
      - {{address: 10.9.0.1, cluster: primary}}    # no check: always in the answer
"""))
    wait_until(lambda: state(s, "127.0.0.4").consecutive_successes >= 1)
    assert answers(s.port, "cache") == ["10.9.0.1", "127.0.0.4"]
    listener.stop()
    wait_until(lambda: answers(s.port, "cache") == ["10.9.0.1"])
    listener.start()
    wait_until(lambda: answers(s.port, "cache") == ["10.9.0.1", "127.0.0.4"])
    assert [e.address for e in s.app.runtime.health.endpoints.values()] == ["127.0.0.4"]


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
    wait_until(lambda: state(s, "::1").checks >= 1)
    assert state(s, "::1").last_result == ("status" if kind == "http" else "success")
    expected = [] if kind == "http" else ["::1"]
    wait_until(lambda: sorted(addresses(ask(s.port, "v6.production.global", "AAAA")))
               == expected)


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
    wait_until(lambda: answers(s.port, "mixed") == ["127.0.0.5"])
    own, inherited = state(s, "127.0.0.5"), state(s, "127.0.0.6")
    assert (own.kind, own.port, own.healthy) == ("http", http.port, True)
    assert (inherited.kind, inherited.port, inherited.healthy) == ("tcp", closed, False)
    assert http.paths and set(http.paths) == {"/own"}


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
    wait_until(lambda: answers(s.port, "a") == [])
    health = s.app.runtime.health
    before = dict(health.endpoints)

    # The same config again: every check keeps running with its state, so `a` stays out
    # of the answer instead of starting over as healthy.
    s.call(s.app.runtime.apply, parse_text(yaml, "test.yaml"))
    assert health.endpoints == before
    assert all(health.endpoints[k] is v for k, v in before.items())
    assert answers(s.port, "a") == []

    # Only b's interval changes: b's check starts over, a's does not.
    s.call(s.app.runtime.apply, parse_text(config(services.format(
        closed=closed, port=up.port, interval="60ms")), "test.yaml"))
    [a_key] = [k for k in before if k.service == ("production", "a")]
    assert health.endpoints[a_key] is before[a_key]
    [b_key] = [k for k in health.endpoints if k.service == ("production", "b")]
    assert b_key not in before and b_key.check.interval == 0.06
    assert answers(s.port, "a") == [] and answers(s.port, "b") == ["127.0.0.2"]
    assert s.call(lambda: sorted(t.get_name() for t in health._tasks.values())) == sorted(
        f"healthcheck {k.address}:{k.check.port}" for k in health.endpoints)

    # A check removed from the config stops, and its endpoint's readiness is the config's.
    s.call(s.app.runtime.apply, parse_text(config("""
  - name: a
    namespace: production
    endpoints: [{address: 127.0.0.3, cluster: primary}]
"""), "test.yaml"))
    assert health.endpoints == {} and health.health == {}
    assert answers(s.port, "a") == ["127.0.0.3"]


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

