"""The HTTP endpoint over real sockets: readiness through a slow cluster and shutdown,
liveness, the debug JSON, the status page, and where it listens."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from globaldns.app import StartupError
from globaldns.ops.http import LoopLag
from tests.helpers.clock import Ticks
from tests.helpers.dns import ask, make_query, rcode
from tests.helpers.http import get, get_json, scrape, value
from tests.helpers.k8s import FastTime, timing_for, web, yaml_for
from tests.helpers.server import Running, free_port
from tests.helpers.upstreams import fake_upstreams
from tests.helpers.wait import eventually, wait_until
from tests.k8s import emulator as em

STATIC = """
resolver: {locality: r1/z1, instance: http-test}
clusters:
  - {name: east, locality: r1}
  - {name: west, locality: r2}
services:
  - name: api
    namespace: prod
    ports: [{name: http, port: 80}]
    endpoints:
      - {address: 10.0.0.1, cluster: east, labels: {version: v1}}
      - {address: 10.0.0.2, cluster: east, ready: false}
      - {address: 10.0.1.1, cluster: west}
"""


async def fetch(server: Running, path: str) -> tuple[int, Any]:
    """GET in a thread: the emulators serve on this test's loop meanwhile."""
    status, _, body = await asyncio.to_thread(get, server, path)
    return status, json.loads(body) if body.startswith(("{", "[")) else body


# -- /ready ------------------------------------------------------------------------------------

async def test_ready_waits_until_a_cluster_slow_to_list_has_listed(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    slow, quick = await emulators("slow", "quick")
    web(slow, "10.1.0.1")
    web(quick, "10.2.0.1")
    slow.latency = 1.5  # every request of `slow` takes 1.5 s: its first list too
    # sync_timeout 10 min (12 s here): readiness must come from the list, not the timeout.
    server = server_factory(yaml_for([slow, quick], tmp_path, sync_timeout="600s"),
                            k8s_timing=timing_for(fast))
    status, body = await fetch(server, "/ready")
    assert status == 503
    assert body["ready"] is False and "slow" in body["reason"]
    await eventually(lambda: server.app.runtime.kubernetes.status()[0]["state"] == "synced")
    status, body = await fetch(server, "/ready")
    assert status == 503
    assert body["reason"] == "clusters not synced: slow"
    assert body["clusters"] == {"quick": "synced", "slow": "syncing"}
    m = await asyncio.to_thread(scrape, server)
    assert value(m, "globaldns_ready") == 0
    assert value(m, "globaldns_k8s_cluster_state", cluster="slow", state="syncing") == 1
    # Not ready: unknown names are SERVFAIL, never a negative answer.
    reply = await asyncio.to_thread(ask, server.port, "nothere.prod.global")
    assert rcode(reply) == "SERVFAIL"

    await eventually(lambda: server.app.runtime.kubernetes.synced, timeout=10)
    status, body = await fetch(server, "/ready")
    assert status == 200 and body == {"ready": True,
                                      "clusters": {"quick": "synced", "slow": "synced"}}
    m = await asyncio.to_thread(scrape, server)
    assert value(m, "globaldns_ready") == 1
    assert value(m, "globaldns_k8s_synced") == 1
    for cluster in ("slow", "quick"):
        assert value(m, "globaldns_k8s_cluster_state", cluster=cluster, state="synced") == 1
        assert value(m, "globaldns_k8s_watch_up", cluster=cluster) == 1
        assert value(m, "globaldns_k8s_last_sync_timestamp_seconds",
                     cluster=cluster) == pytest.approx(time.time(), abs=60)
        assert value(m, "globaldns_k8s_services", cluster=cluster) == 1
        assert value(m, "globaldns_k8s_endpoints", cluster=cluster) == 1
    assert value(m, "globaldns_registry_endpoints", cluster="slow", ready="true") == 1

    # Watch events are counted by type.
    web(quick, "10.2.0.1", "10.2.0.2")
    await eventually(lambda: server.app.runtime.store.get(("prod", "web")) is not None and len(
        server.app.runtime.store.get(("prod", "web")).endpoints) == 3)  # type: ignore[union-attr]
    m = await asyncio.to_thread(scrape, server)
    assert value(m, "globaldns_k8s_events_total", cluster="quick", type="MODIFIED") >= 1


async def test_ready_after_sync_timeout_when_a_cluster_never_lists(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    (denied,) = await emulators("denied")
    denied.fail(403, count=None)
    # sync_timeout 60 s runs in 1.2 s here.
    server = server_factory(yaml_for([denied], tmp_path, sync_timeout="60s"),
                            k8s_timing=timing_for(fast))
    status, body = await fetch(server, "/ready")
    assert status == 503 and "denied" in body["reason"]
    await eventually(lambda: server.app.runtime.kubernetes.ready, timeout=10)
    status, body = await fetch(server, "/ready")
    assert status == 200
    assert "sync_timeout" in body["note"]
    m = await asyncio.to_thread(scrape, server)
    assert value(m, "globaldns_k8s_synced") == 0
    assert value(m, "globaldns_k8s_errors_total", cluster="denied", kind="forbidden") >= 1 or \
        sum(v for (n, labels), v in m.items()
            if n == "globaldns_k8s_errors_total" and ("cluster", "denied") in labels) >= 1
    assert value(m, "globaldns_k8s_watch_up", cluster="denied") == 0


def test_ready_is_503_while_shutting_down(server_factory: Any) -> None:
    with fake_upstreams() as make:
        silent = make()
        silent.mode = "silent"
        server = server_factory(STATIC + f"forward: [{{zone: example.test, upstreams: "
                                f"['{silent}'], timeout: 2s, tries: 1}}]\n")
        assert get(server, "/ready")[0] == 200
        # A TCP query waits on the silent upstream; stopping drains it (up to 3 s).
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        query = make_query("www.example.test")
        sock.sendall(len(query).to_bytes(2, "big") + query)
        wait_until(lambda: silent.count("www.example.test") == 1)  # in flight
        stopping = asyncio.run_coroutine_threadsafe(server.app.stop(), server.loop)
        _, _, body = wait_until(lambda: (page := get(server, "/ready"))[0] == 503 and page)
        assert json.loads(body)["reason"] == "shutting down"
        stopping.result(10)
        sock.close()
        # Stopped: the HTTP listener is gone too.
        with pytest.raises(OSError):
            get(server, "/ready", timeout=1)


# -- /health -----------------------------------------------------------------------------------

def test_health_answers_while_the_loop_keeps_up_and_reports_a_stall(server_factory: Any) -> None:
    server = server_factory(STATIC)
    http = server.app.http
    ticks = Ticks(server.loop)
    server.run(http.lag.stop())
    http.lag = LoopLag(clock=ticks.clock, sleep=ticks.sleep)
    server.call(http.lag.start)
    ticks.tick(0.5)  # on time
    assert wait_until(lambda: ticks.sleeping == 2)
    status, body = get_json(server, "/health")
    assert status == 200 and body == {"status": "ok", "loop_lag_seconds": 0.0}
    ticks.tick(3.1)  # the loop ran the timer 2.6 s late (a runaway computation)
    assert wait_until(lambda: ticks.sleeping == 3)
    status, body = get_json(server, "/health")
    assert status == 503 and body == {"status": "event loop lagging", "loop_lag_seconds": 2.6}
    for _ in range(21):  # on time again until the stall is older than the 10 s window
        ticks.tick(0.5)
    assert wait_until(lambda: ticks.sleeping == 24)
    assert get_json(server, "/health")[0] == 200


# -- /debug ------------------------------------------------------------------------------------

def test_debug_registry_shows_every_endpoint_with_its_source_and_health(
        server_factory: Any) -> None:
    server = server_factory(STATIC)
    status, body = get_json(server, "/debug/registry")
    assert status == 200
    assert body["synced"] is True and body["sources"] == ["static"]
    (service,) = body["services"]
    assert (service["name"], service["namespace"]) == ("api", "prod")
    assert service["ports"] == [{"name": "http", "port": 80, "protocol": "tcp"}]
    assert service["cluster_healthy"] == {"east": True, "west": True}
    by_address = {e["address"]: e for e in service["endpoints"]}
    assert by_address["10.0.0.1"] == {
        "address": "10.0.0.1", "cluster": "east", "locality": "r1", "ready": True,
        "serving": True, "terminating": False, "hostname": "", "node_name": "",
        "labels": {"version": "v1"}, "weight": 1, "source": "static", "network": "",
        "external": False, "health_check": None}
    assert by_address["10.0.0.2"]["ready"] is False
    assert get_json(server, "/debug/registry?service=api.prod")[1]["services_total"] == 1
    assert get_json(server, "/debug/registry?service=nope.prod")[1]["services"] == []
    assert get(server, "/debug/registry?limit=x")[0] == 400


def test_debug_explain_is_globaldns_explain(server_factory: Any) -> None:
    server = server_factory(STATIC + "client_localities: [{cidr: 10.20.0.0/16, locality: r2}]\n")
    status, body = get_json(server, "/debug/explain?name=api.prod.global&client=10.20.1.1")
    assert status == 200
    assert body["locality"] == "r2" and body["locality_from"] == "client_localities"
    assert body["answer"] == "NOERROR"
    assert {e["address"] for e in body["endpoints"]} == {"10.0.0.1", "10.0.0.2", "10.0.1.1"}
    assert body["lines"][0] == "name api.prod.global client 10.20.1.1"
    status, body = get_json(server, "/debug/explain?name=api.prod.global&ecs=10.20.0.0/24")
    assert body["locality"] == "r2" and body["locality_from"] == "ecs"
    assert get(server, "/debug/explain")[0] == 400
    assert get(server, "/debug/explain?name=api.prod.global&ecs=banana")[0] == 400


# -- the status page ---------------------------------------------------------------------------

async def test_status_page_shows_clusters_services_and_upstreams(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    (k8s,) = await emulators("k8s")
    web(k8s, "10.3.0.1", "10.3.0.2")
    k8s.put(em.endpoint_slice("prod", "web-2", "web", endpoints=[
        em.endpoint("10.3.0.3", ready=False)]))
    watched = yaml_for([k8s], tmp_path).replace("clusters:\n", "")
    config = (STATIC.replace("clusters:\n", "clusters:\n" + watched.split("\n", 2)[2])
              + "forward: [{zone: example.test, upstreams: ['127.0.0.1:9'], timeout: 1s}]\n")
    server = server_factory(config, k8s_timing=timing_for(fast))
    await eventually(lambda: server.app.runtime.kubernetes.synced, timeout=10)
    await eventually(lambda: server.app.runtime.store.get(("prod", "web")) is not None)
    status, page = await fetch(server, "/")
    assert status == 200
    assert page.startswith("<!doctype html>")
    rows = rows_of(page)
    # The watched cluster with its state, and the static ones.
    k8s_row = next(r for r in rows if r[0] == "k8s")
    assert k8s_row[1] == "region-k8s" and k8s_row[2] == "synced"
    assert k8s_row[4:6] == ["1", "3"]  # services, endpoints
    assert next(r for r in rows if r[0] == "east")[2] == "static"
    # Services with ready/total per cluster.
    api_row = next(r for r in rows if r[0] == "api.prod")
    assert api_row[1] == "east 1/2 · west 1/1" and api_row[2] == "2/3"
    web_row = next(r for r in rows if r[0] == "web.prod")
    assert web_row[1] == "k8s 2/3" and web_row[2] == "2/3"
    # Upstreams.
    upstream_row = next(r for r in rows if r[0] == "example.test")
    assert upstream_row[1:3] == ["127.0.0.1:9", "healthy"]
    assert "http-test" in page and "ready" in page
    await _render_with_chromium(page, tmp_path)


def rows_of(page: str) -> list[list[str]]:
    """Table rows as the text of their cells (tags stripped)."""
    import re
    out = []
    for row in re.findall(r"<tr>(.*?)</tr>", page):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        if cells:
            out.append([re.sub(r"<[^>]+>", "", c).replace("&amp;", "&") for c in cells])
    return out


async def _render_with_chromium(page: str, directory: Path) -> None:
    """Optional: look at the page once in a headless browser when one is installed."""
    import shutil
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return
    html_file = directory / "status.html"
    html_file.write_text(page)
    process = await asyncio.create_subprocess_exec(
        browser, "--headless", "--no-sandbox", "--disable-gpu",
        f"--screenshot={directory / 'status.png'}", "--window-size=1200,900",
        html_file.as_uri(), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    await asyncio.wait_for(process.wait(), 60)
    assert (directory / "status.png").stat().st_size > 1000


# -- where it listens --------------------------------------------------------------------------

def test_http_can_be_turned_off(server_factory: Any) -> None:
    server = server_factory('http: {listen: ""}\n' + STATIC)
    assert server.app.http.runner is None
    assert rcode(ask(server.port, "api.prod.global")) == "NOERROR"


def test_a_busy_http_port_is_a_clear_startup_error(server_factory: Any) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StartupError, match=rf"cannot listen on 127.0.0.1:{port} "
                           r"\(http.listen\)"):
            server_factory(f"http: {{listen: 127.0.0.1:{port}}}\n" + STATIC)


def test_a_reload_moves_the_http_listener(server_factory: Any, tmp_path: Path) -> None:
    first, second = free_port(), free_port()
    path = tmp_path / "gd.yaml"
    dns = f"dns: {{listen: 127.0.0.1:{free_port()}}}\n"
    path.write_text(dns + f"http: {{listen: 127.0.0.1:{first}}}\n" + STATIC)
    server = server_factory(path.read_text(), config_path=str(path))
    assert server.app.http.port == first
    path.write_text(dns + f"http: {{listen: 127.0.0.1:{second}}}\n" + STATIC)
    assert server.run(server.app.runtime.reloads.reload(why="test")) is True
    wait_until(lambda: server.app.http.port == second)
    assert get(server, "/health")[0] == 200
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", first), timeout=1):
        pass


def test_pages_are_answered_while_queries_flow(server_factory: Any) -> None:
    """Scrapes and DNS share the loop: neither starves the other."""
    server = server_factory(STATIC)
    stop = threading.Event()
    failures: list[str] = []

    def queries() -> None:
        while not stop.is_set():
            try:
                if rcode(ask(server.port, "api.prod.global")) != "NOERROR":
                    failures.append("rcode")
            except AssertionError as exc:
                failures.append(str(exc))

    thread = threading.Thread(target=queries)
    thread.start()
    try:
        for _ in range(20):
            assert get(server, "/metrics")[0] == 200
            assert get(server, "/")[0] == 200
    finally:
        stop.set()
        thread.join()
    assert failures == []
