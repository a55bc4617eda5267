"""The query log: one JSON line per query, how each was answered, sampling, and a writer
that falls behind without holding up the answers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.clock import Clock
from tests.helpers.dns import ask, rcode
from tests.helpers.http import scrape, value
from tests.helpers.server import Running
from tests.helpers.upstreams import fake_upstreams
from tests.helpers.wait import wait_until

CONFIG = """
resolver: {instance: log-test}
clusters: [{name: east, locality: r1}]
services:
  - name: api
    namespace: prod
    endpoints: [{address: 10.0.0.1, cluster: east}, {address: 10.0.0.2, cluster: east}]
acl: {allow_query: [127.0.0.1/32]}
cache: {serve_stale: 1h}
"""


@pytest.fixture
def upstream() -> Iterator[Any]:
    with fake_upstreams() as make:
        yield make().add("www.example.test. 1 IN A 192.0.2.1")


def lines_of(path: Path, count: int) -> list[dict[str, Any]]:
    """The log's lines once there are `count` of them (the writer flushes every 200 ms)."""
    assert wait_until(lambda: path.exists() and len(path.read_text().splitlines()) >= count)
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_line_per_query_with_how_it_was_answered(server_factory: Any, tmp_path: Path,
                                                     upstream: Any) -> None:
    log = tmp_path / "queries.log"
    server: Running = server_factory(
        CONFIG + f"log: {{queries: true, file: {log}}}\n"
        f"forward: [{{zone: example.test, upstreams: ['{upstream}'], timeout: 500ms}}]\n")
    port = server.port
    clock = Clock()
    server.call(setattr, server.app.runtime.chain.cache, "clock", clock)
    assert rcode(ask(port, "api.prod.global")) == "NOERROR"                       # zone
    assert rcode(ask(port, "nope.prod.global", "AAAA", tcp=True)) == "NXDOMAIN"   # zone
    assert rcode(ask(port, "www.example.test")) == "NOERROR"                      # forward
    assert rcode(ask(port, "www.example.test")) == "NOERROR"                      # cache
    assert rcode(ask(port, "version.bind", "TXT", qclass="CH")) == "NOERROR"      # chaos
    assert rcode(ask(port, "api.prod.global", source="127.0.0.2")) == "REFUSED"   # refused
    # Who answered is what the handler wrote on its reply, not a guess from the class:
    # the ACL refused this CHAOS query before chain/chaos.py saw it.
    assert rcode(ask(port, "version.bind", "TXT", qclass="CH", source="127.0.0.2")) == "REFUSED"
    clock.advance(1.2)  # the cached answer expires (TTL 1); the upstream then fails
    upstream.mode = "servfail"
    stale = ask(port, "www.example.test")
    assert rcode(stale) == "NOERROR" and stale.rr[0].ttl == 30                    # stale

    lines = lines_of(log, 8)
    assert [(x["name"], x["answered_by"]) for x in lines] == [
        ("api.prod.global", "zone"), ("nope.prod.global", "zone"),
        ("www.example.test", "forward"), ("www.example.test", "cache"),
        ("version.bind", "chaos"), ("api.prod.global", "refused"),
        ("version.bind", "refused"), ("www.example.test", "stale")]
    first = lines[0]
    assert set(first) == {"time", "client", "proto", "name", "type", "rcode", "answers",
                          "duration_ms", "answered_by"}
    assert first["client"] == "127.0.0.1" and first["proto"] == "udp"
    assert first["type"] == "A" and first["rcode"] == "NOERROR" and first["answers"] == 2
    assert first["time"].endswith("Z") and first["time"][:4].isdigit()
    assert first["duration_ms"] >= 0  # (how long is the machine's business, not the test's)
    assert lines[1]["proto"] == "tcp" and lines[1]["type"] == "AAAA"
    assert lines[1]["rcode"] == "NXDOMAIN" and lines[1]["answers"] == 0
    assert lines[2]["duration_ms"] > 0
    assert lines[4]["class"] == "CH"
    assert lines[5]["client"] == "127.0.0.2"
    assert value(scrape(server), "globaldns_log_queries_total") == 8


def test_off_by_default_and_sampled_when_asked(server_factory: Any, tmp_path: Path) -> None:
    server: Running = server_factory(CONFIG)
    assert server.app.querylog is None and server.app.runtime.server.observers == []
    log = tmp_path / "sampled.log"
    server = server_factory(CONFIG + f"log: {{queries: true, sample: 0.25, file: {log}}}\n")
    for _ in range(400):
        ask(server.port, "api.prod.global")
    server.stop()  # writes what is buffered and closes the file
    server.stop = lambda: None  # type: ignore[method-assign]  # (for the fixture)
    logged = len(log.read_text().splitlines())
    assert 50 <= logged <= 150, logged


def test_a_stuck_writer_costs_lines_not_answers(server_factory: Any, tmp_path: Path) -> None:
    fifo = tmp_path / "stuck.fifo"
    os.mkfifo(fifo)
    # A reader that never reads: once the pipe is full, the writer thread blocks.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        server: Running = server_factory(CONFIG + f"log: {{queries: true, file: {fifo}}}\n")
        server.call(setattr, server.app.querylog, "max_buffered", 200)
        # Each answered within its client's timeout while the writer is stuck.
        for _ in range(1500):  # about 200 KB of lines: more than a pipe holds
            assert rcode(ask(server.port, "api.prod.global")) == "NOERROR"
        assert wait_until(lambda: value(scrape(server), "globaldns_log_dropped_total") > 0)
    finally:
        os.close(reader)
