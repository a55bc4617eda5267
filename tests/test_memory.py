"""Memory budgets (issue 11): the forward cache within `cache.max_bytes`, the wire cache
within `cache.wire_max_bytes`, and casings of one name sharing one wire-cache entry. The
budgets are checked in the metrics and, for a real server process, in its resident memory
read from /proc."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.dns import ask, make_query, rcode, udp_raw
from tests.helpers.http import scrape, value
from tests.helpers.server import free_port
from tests.helpers.upstreams import Background, FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
MB = 1 << 20

CONFIG = """
clusters: [{name: east, locality: us-east1}]
services:
  - name: casingsofaname
    namespace: prod
    endpoints:
      - {address: 10.7.0.1, cluster: east}
      - {address: 10.7.0.2, cluster: east}
"""
NAME = "casingsofaname.prod.global"
# What a Python server process may grow by beside its budgets: the allocator's free lists
# and arenas (64 KB answers are freed into them, not always back to the system), stats
# keys, client classes and the like.
SLACK = 8 * MB


def query(name: str, qid: int, qtype: int = 1) -> bytes:
    """A plain query (no EDNS), the name exactly as given (its casing kept)."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + \
        struct.pack("!HH", qtype, 1)


def casing(i: int) -> str:
    """The i-th casing of NAME: bit k of i uppercases its k-th letter."""
    out, k = [], 0
    for ch in NAME:
        if ch.isalpha():
            out.append(ch.upper() if i >> k & 1 else ch)
            k += 1
        else:
            out.append(ch)
    return "".join(out)


def test_casings_of_one_name_share_one_entry_and_each_gets_its_own_casing_back(
        server_factory: Any) -> None:
    s = server_factory(CONFIG)
    seen = set()
    for i in (0, 1, 5, 0xFFFFFF, 12345, 0, 5):
        name = casing(i)
        reply = udp_raw(s.port, query(name, i & 0xFFFF))
        assert reply[:2] == (i & 0xFFFF).to_bytes(2, "big")
        assert reply[12 : 14 + len(name)] == query(name, 0)[12 : 14 + len(name)]  # its casing
        assert reply[3] & 0xF == 0 and reply[6:8] == b"\0\x02"
        seen.add(reply[-4:])
    assert seen == {bytes([10, 7, 0, 1]), bytes([10, 7, 0, 2])}  # still rotating
    assert value(scrape(s), "globaldns_dns_wire_cache_entries") == 1


def test_a_casing_never_gets_the_entry_of_a_type_that_differs_only_by_case(
        server_factory: Any) -> None:
    # Lowercasing the whole key turns type 65 (0x0041, "A") into type 97 (0x0061, "a"):
    # the bytes outside the name are compared before an entry is used.
    s = server_factory(CONFIG)
    end = 12 + len(NAME) + 2
    for _ in range(2):
        assert udp_raw(s.port, query(NAME, 1, qtype=97))[end : end + 4] == \
            struct.pack("!HH", 97, 1)
    reply = udp_raw(s.port, query(casing(3), 2, qtype=65))
    assert reply[end : end + 4] == struct.pack("!HH", 65, 1)
    assert reply[12:end] == query(casing(3), 0)[12:end]


def test_the_wire_cache_keeps_within_its_byte_budget(server_factory: Any) -> None:
    s = server_factory(CONFIG + "cache: {wire_max_bytes: 1MiB}\n")
    for i in range(3000):
        assert rcode(ask(s.port, f"nx{i}.prod.global")) == "NXDOMAIN"
    m = scrape(s)
    assert value(m, "globaldns_dns_wire_cache_max_bytes") == MB
    assert 0 < value(m, "globaldns_dns_wire_cache_bytes") <= MB
    assert 0 < value(m, "globaldns_dns_wire_cache_entries") < 1100
    assert ask(s.port, NAME).header.rcode == 0


def test_the_forward_cache_keeps_within_max_bytes(server_factory: Any, upstream: Any) -> None:
    upstream.mode = "big"
    s = server_factory(CONFIG + f"forward: [{{zone: example.test, upstreams: ['{upstream}']}}]"
                       "\ncache: {max_bytes: 2MiB}\n")
    for i in range(80):
        assert rcode(ask(s.port, f"n{i}.example.test", "TXT", tcp=True)) == "NOERROR"
    m = scrape(s)
    assert value(m, "globaldns_cache_max_bytes") == 2 * MB
    assert 0 < value(m, "globaldns_cache_bytes") <= 2 * MB
    assert value(m, "globaldns_cache_entries") <= 2 * MB // 65_000
    assert value(m, "globaldns_cache_evictions_total") >= 80 - 2 * MB // 65_000


# -- a real server process ------------------------------------------------------------------

class Process:
    def __init__(self, tmp_path: Path, config: str) -> None:
        self.port, self.http = free_port(), free_port()
        path = tmp_path / "gd.yaml"
        path.write_text(f"dns: {{listen: 127.0.0.1:{self.port}}}\n"
                        f"http: {{listen: 127.0.0.1:{self.http}}}\n" + config)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "globaldns", "serve", "--config", str(path)],
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if "globaldns ready on" in line or "listening on" in line:
                break

    def rss(self) -> int:
        """Resident memory in bytes, from /proc."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/metrics", timeout=5) as r:
            text = r.read().decode()
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
                if not s.labels}

    def stop(self) -> None:
        self.process.terminate()
        self.process.communicate(timeout=10)


@pytest.fixture
def process_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Process] = []

    def factory(config: str) -> Process:
        started.append(Process(tmp_path, config))
        return started[-1]
    yield factory
    for p in started:
        p.stop()


def test_a_server_answering_100000_casings_stays_within_the_wire_budget(
        process_factory: Any) -> None:
    p = process_factory(CONFIG + "cache: {wire_max_bytes: 4MiB}\n")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MB)
    sock.settimeout(2)
    for i in range(200):  # warm up: the process's own memory settles first
        sock.sendto(query(casing(i), i), ("127.0.0.1", p.port))
        sock.recv(512)
    before = p.rss()
    answered = 0
    for start in range(0, 100_000, 100):
        batch = {(start + j) & 0xFFFF: casing(start + j) for j in range(100)}
        for qid, name in batch.items():
            sock.sendto(query(name, qid), ("127.0.0.1", p.port))
        for _ in batch:
            try:
                reply = sock.recv(512)
            except TimeoutError:
                break
            name = batch[int.from_bytes(reply[:2], "big")]
            assert reply[12 : 14 + len(name)] == query(name, 0)[12 : 14 + len(name)]
            answered += 1
    sock.close()
    assert answered >= 99_000
    grown = p.rss() - before
    m = p.metrics()
    assert m["globaldns_dns_wire_cache_entries"] == 1
    assert m["globaldns_dns_wire_cache_bytes"] <= 4 * MB
    print(f"grew {grown / MB:.1f} MiB")
    assert grown <= 4 * MB + SLACK, f"grew {grown / MB:.1f} MiB"


def test_a_server_filled_with_64_kb_answers_stays_within_max_bytes(
        process_factory: Any, upstream: FakeUpstream) -> None:
    upstream.mode = "big"
    p = process_factory(CONFIG + f"forward: [{{zone: example.test, upstreams: ['{upstream}']}}]"
                        "\ncache: {max_bytes: 8MiB, wire_max_bytes: 2MiB}\n")
    for i in range(10):  # warm up
        udp_raw(p.port, bytes(make_query(f"w{i}.example.test", "TXT")), timeout=10)
    before = p.rss()
    for i in range(600):
        data = bytes(make_query(f"n{i}.example.test", "TXT"))
        for _ in range(2):  # a miss, then a hit the wire cache keeps
            assert udp_raw(p.port, data, timeout=10)[3] & 0xF == 0
    grown = p.rss() - before
    m = p.metrics()
    assert m["globaldns_cache_bytes"] <= 8 * MB
    assert m["globaldns_cache_entries"] <= 8 * MB // 65_000
    assert m["globaldns_cache_evictions_total"] > 450
    assert m["globaldns_dns_wire_cache_bytes"] <= 2 * MB
    print(f"grew {grown / MB:.1f} MiB")
    assert grown <= 8 * MB + 2 * MB + SLACK, f"grew {grown / MB:.1f} MiB"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    background = Background()
    up = FakeUpstream(background)
    yield up
    up.stop()
    background.close()
