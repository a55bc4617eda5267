"""Hostile HTTP clients (issue 10): pages only for `acl.allow_debug`, a bounded
/debug/registry, half-sent requests, and 500s that tell nothing. Over real sockets; waits
are bounded and event-driven, no elapsed time is asserted."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from typing import Any

from globaldns.config.model import ListenAddress
from globaldns.ops.http import HttpServer
from tests.helpers.http import get, scrape
from tests.helpers.wait import closed_by_server, wait_until

STATIC = """
zones: [{name: global}]
clusters: [{name: east}, {name: west}]
services:
  - name: api
    namespace: prod
    endpoints:
      - {address: 10.0.0.1, cluster: east}
      - {address: 10.0.0.2, cluster: east}
      - {address: 10.0.0.3, cluster: west}
      - {address: 10.0.0.4, cluster: west}
  - name: db
    namespace: prod
    endpoints: [{address: 10.0.1.1, cluster: east}]
  - name: web
    namespace: dev
    endpoints:
      - {address: 10.0.2.1, cluster: east}
      - {address: 10.0.2.2, cluster: east}
      - {address: 10.0.2.3, cluster: west}
"""


def request(port: int, path: str, *, source: str = "127.0.0.1") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5,
                                      source_address=(source, 0))
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=2)



def http_stats(server: Any, what: str) -> Any:
    h = server.app.http
    read = {"open": lambda: len(h.connections), "closed": lambda: dict(h.counts.closed)}[what]
    return server.call(read)


def test_only_probes_and_metrics_answer_clients_outside_allow_debug(
        server_factory: Any) -> None:
    s = server_factory(STATIC + "acl: {allow_debug: [127.0.0.2/32]}\n")
    port = s.app.http.port
    for path in ("/", "/debug/registry", "/debug/explain?name=api.prod.global"):
        status, body = request(port, path, source="127.0.0.1")
        assert status == 403, path
        assert "10.0.0.1" not in body and "api" not in body
        assert request(port, path, source="127.0.0.2")[0] == 200, path
    for path in ("/metrics", "/health", "/ready"):
        assert request(port, path, source="127.0.0.1")[0] == 200, path
    assert scrape(s)[("globaldns_http_forbidden_total", frozenset())] == 3


def walk(port: int, limit: int) -> list[dict[str, Any]]:
    pages, token = [], ""
    for _ in range(100):
        query = f"/debug/registry?limit={limit}" + (
            f"&continue={urllib.parse.quote(token)}" if token else "")
        status, body = request(port, query)
        assert status == 200, body
        page = json.loads(body)
        pages.append(page)
        token = page["continue"]
        if token is None:
            return pages
    raise AssertionError("the pages never end")


def test_debug_registry_comes_in_pages_of_at_most_limit_endpoints_that_cover_it_all(
        server_factory: Any) -> None:
    s = server_factory(STATIC)
    port = s.app.http.port
    whole = walk(port, 500)
    assert len(whole) == 1
    everything = [(svc["namespace"], svc["name"], e["address"])
                  for svc in whole[0]["services"] for e in svc["endpoints"]]
    assert len(everything) == 8
    assert [(svc["namespace"], svc["name"]) for svc in whole[0]["services"]] == [
        ("dev", "web"), ("prod", "api"), ("prod", "db")]
    for limit in (1, 2, 3, 5):
        pages = walk(port, limit)
        assert all(sum(len(svc["endpoints"]) for svc in p["services"]) <= limit
                   for p in pages)
        seen = [(svc["namespace"], svc["name"], e["address"])
                for p in pages for svc in p["services"] for e in svc["endpoints"]]
        assert seen == everything, f"limit={limit}"
    split = walk(port, 3)[1]["services"][0]  # prod/api, after its first endpoint
    assert (split["name"], split["endpoints_from"], split["endpoints_total"]) == ("api", 0, 4)
    for bad in ("limit=0", "limit=501", "limit=x", "continue=nope", "continue=a/b/-1"):
        assert request(port, f"/debug/registry?{bad}")[0] == 400, bad


def test_a_connection_that_does_not_finish_its_headers_in_time_is_closed(
        server_factory: Any) -> None:
    s = server_factory(STATIC + "http: {listen: 127.0.0.1:0, header_timeout: 200ms}\n")
    with connect(s.app.http.port) as silent, connect(s.app.http.port) as dripping:
        dripping.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        closed = False
        for _ in range(100):  # a header line now and then does not extend the deadline
            try:
                dripping.sendall(b"X-Drip: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_by_server(dripping, within=0.05):
                closed = True
                break
        assert closed
        assert closed_by_server(silent)
    assert http_stats(s, "closed").get("header_timeout") == 2
    assert get(s, "/health")[0] == 200


def test_half_sent_requests_at_the_cap_do_not_keep_probes_out(server_factory: Any) -> None:
    s = server_factory(STATIC + "http: {listen: 127.0.0.1:0, header_timeout: 60s,"
                                " max_connections: 20}\n")
    port = s.app.http.port
    held = []
    try:
        for _ in range(200):
            conn = connect(port)
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            held.append(conn)
        assert wait_until(lambda: http_stats(s, "closed").get("evicted", 0) >= 180)
        assert all(closed_by_server(conn) for conn in held[:180]), "the oldest were evicted"
        assert http_stats(s, "open") <= 20
        assert request(port, "/health")[0] == 200
        assert request(port, "/ready")[0] == 200
    finally:
        for conn in held:
            conn.close()


class FailingExplain(HttpServer):
    """A handler failing with secrets in its exception, to show what the one error
    boundary (the middleware) lets out."""

    async def explain(self, request: Any) -> Any:
        raise RuntimeError("Authorization: Bearer s3cr3t-token, key /etc/key.pem")


def test_a_500_reply_carries_no_exception_text(server_factory: Any) -> None:
    s = server_factory(STATIC)
    failing = FailingExplain(s.app.runtime, s.app.metrics)
    s.run(failing.start(ListenAddress("127.0.0.1", 0)))
    try:
        status, body = request(failing.port, "/debug/explain?name=api.prod.global")
    finally:
        s.run(failing.stop())
    assert status == 500
    assert json.loads(body) == {"error": "internal error (logged by the server)"}
