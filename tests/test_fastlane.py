"""The UDP path, batched or not (issue 16): bursts from many clients, IPv4 and IPv6, each
reply to the client and ID that asked, and random datagrams that never stop the answers.

scripts/test runs this file with the fast lane built (recvmmsg/sendmmsg) and again with
GLOBALDNS_FASTLANE=0 (asyncio's datagram transport): the same tests pass on both."""

from __future__ import annotations

import importlib.util
import os
import random
import socket
import subprocess
import sys
import threading

import dns.message
import dns.rcode
import pytest

from globaldns.dns import udp
from tests.helpers.data import ROOT
from tests.helpers.dns import make_query
from tests.helpers.server import free_port

CONFIG = """
dns: {{listen: "{host}:{port}"}}
clusters: [{{name: east, locality: us-east1}}]
acl: {{allow_query: [127.0.0.0/8, "::1/128"]}}
services:
  - name: api
    namespace: prod
    endpoints:
      - {{address: 10.7.0.1, cluster: east}}
      - {{address: 10.7.0.2, cluster: east}}
"""
NAMES = ["api.prod.global", "API.prod.global", "none.prod.global", "api.prod.global"]


def _server(server_factory, host: str = "127.0.0.1"):
    return server_factory(CONFIG.format(host=f"[{host}]" if ":" in host else host,
                                        port=free_port()))


def _burst(host: str, port: int, clients: int, each: int) -> None:
    """`clients` sockets each send `each` queries back to back, then read every reply: each
    socket gets exactly the replies to its own queries, which parse with dnspython."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(clients)]
    try:
        sent: list[dict[int, str]] = []
        for sock in socks:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((host, 0))
            sock.settimeout(5)
            sent.append({})
        for i in range(each):  # interleaved, so one batch holds several clients' queries
            for sock, ids in zip(socks, sent, strict=True):
                qid = len(ids) + 1000 * socks.index(sock)
                name = NAMES[i % len(NAMES)]
                ids[qid] = name
                edns = 1232 if i % 3 == 0 else None
                sock.sendto(make_query(name, edns=edns, qid=qid), (host, port))
        for sock, ids in zip(socks, sent, strict=True):
            seen = {}
            for _ in ids:
                data, source = sock.recvfrom(65535)
                assert source[:2] == (host, port)
                reply = dns.message.from_wire(data)
                seen[reply.id] = reply
            assert set(seen) == set(ids)
            for qid, reply in seen.items():
                assert reply.question[0].name.to_text().rstrip(".") == ids[qid]
                want = dns.rcode.NXDOMAIN if ids[qid].startswith("none") else dns.rcode.NOERROR
                assert reply.rcode() == want
    finally:
        for sock in socks:
            sock.close()


def test_the_fast_lane_is_chosen_when_built_and_forced_off_by_the_env():
    code = "from globaldns.dns import udp; print(udp.FASTLANE is not None)"
    env = {k: v for k, v in os.environ.items() if k != "GLOBALDNS_FASTLANE"}
    built = importlib.util.find_spec("globaldns.dns._fastlane") is not None
    on = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True,
                        capture_output=True, text=True).stdout.strip()
    off = subprocess.run([sys.executable, "-c", code], env={**env, "GLOBALDNS_FASTLANE": "0"},
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    assert (on, off) == (str(built), "False")


def test_the_server_listens_on_the_lane_chosen(server_factory):
    s = _server(server_factory)
    assert isinstance(s.app.udp, udp.FastLane) == (udp.FASTLANE is not None)


def test_a_burst_from_many_ipv4_clients_gets_every_reply_to_its_sender(server_factory):
    s = _server(server_factory)
    _burst("127.0.0.1", s.port, clients=6, each=60)  # 360 queries: several batches of 64


def test_a_burst_from_many_ipv6_clients_gets_every_reply_to_its_sender(server_factory):
    s = _server(server_factory, "::1")
    _burst("::1", s.port, clients=4, each=40)


def test_two_servers_in_one_process_answer_bursts_at_once_each_to_its_own_clients(
        server_factory):
    """Each server's loop runs on its own thread with its own lane; a thread switch in the
    middle of one lane's batch (forced often here) must not touch the other's."""
    servers = [_server(server_factory) for _ in range(2)]
    errors: list[BaseException] = []

    def burst(port: int) -> None:
        try:
            _burst("127.0.0.1", port, clients=4, each=60)
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=burst, args=(s.port,)) for s in servers * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


def test_random_datagrams_never_stop_the_answers_and_every_reply_parses(server_factory):
    """Datagrams of 0..65507 bytes (the largest IPv4 UDP payload) from random loopback
    addresses, random bytes or a real query with random bytes after its ID; after each
    flight a real query is still answered, and every reply parses with dnspython."""
    s = _server(server_factory)
    rng = random.Random(16)
    query = make_query("api.prod.global")
    replies = 0
    for _ in range(8):
        socks = []
        for _ in range(8):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((f"127.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                       0))
            socks.append(sock)
        try:
            for _ in range(40):
                size = rng.choice([0, 1, 2, 11, 12, 13, 17, 512, 1232, 4096, 65507,
                                   rng.randrange(65508)])
                if rng.random() < 0.5:
                    data = rng.randbytes(size)
                else:
                    data = (query[:2] + rng.randbytes(min(size, 40)) + query[2:])[:size] \
                        if size > 12 else query
                rng.choice(socks).sendto(data, ("127.0.0.1", s.port))
            probe = socks[0]
            probe.settimeout(5)
            probe.sendto(make_query("api.prod.global", qid=4242), ("127.0.0.1", s.port))
            answered = False
            while not answered:  # replies to the flight come first, then the probe's
                reply = dns.message.from_wire(probe.recv(65535))
                replies += 1
                answered = reply.id == 4242 and reply.rcode() == dns.rcode.NOERROR
            for sock in socks[1:]:
                sock.setblocking(False)
                while True:
                    try:
                        data = sock.recv(65535)
                    except BlockingIOError:
                        break
                    dns.message.from_wire(data)  # every reply parses
                    replies += 1
        finally:
            for sock in socks:
                sock.close()
    assert replies >= 8


@pytest.mark.skipif(udp.FASTLANE is None, reason="the fast lane is not built")
def test_drain_bounds_its_batch_and_asks_the_full_path_only_for_what_the_cache_misses():
    lane = udp.FASTLANE
    assert lane is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        server.bind(("127.0.0.1", 0))
        server.setblocking(False)
        client.bind(("127.0.0.1", 0))
        calls: list[tuple[str, bytes, object]] = []
        buffer = bytearray(lane.BATCH * lane.DATAGRAM)

        def hit(data: bytes, ip: str) -> bytes | None:  # the wire cache: even numbers
            calls.append(("hit", data, ip))
            return b"hit" + data if data[1] % 2 == 0 else None

        def rate(ip: str, out: bytes) -> bytes | None:  # the rate limit: drops every 4th
            calls.append(("rate", out, ip))
            return None if out[4] % 4 == 0 else out

        def miss(data: bytes, addr: tuple[str, int]) -> bytes:
            calls.append(("miss", data, addr))
            return b"miss" + data

        assert lane.drain(server.fileno(), buffer, hit, rate, miss, 8) == 0
        for i in range(lane.BATCH + 5):
            client.sendto(i.to_bytes(2, "big"), server.getsockname())
        assert lane.drain(server.fileno(), buffer, hit, rate, miss, lane.BATCH) == lane.BATCH
        assert lane.drain(server.fileno(), buffer, None, None, miss, lane.BATCH) == 5
        ip, addr = "127.0.0.1", client.getsockname()
        want: list[tuple[str, bytes, object]] = []
        replies = []
        for i in range(lane.BATCH):
            data = i.to_bytes(2, "big")
            want.append(("hit", data, ip))
            if i % 2 == 0:
                want.append(("rate", b"hit" + data, ip))
                if i % 4:
                    replies.append(b"hit" + data)
            else:
                want.append(("miss", data, addr))
                replies.append(b"miss" + data)
        for i in range(lane.BATCH, lane.BATCH + 5):
            want.append(("miss", i.to_bytes(2, "big"), addr))
            replies.append(b"miss" + i.to_bytes(2, "big"))
        assert calls == want
        client.settimeout(5)
        assert [client.recv(100) for _ in replies] == replies
        with pytest.raises(ValueError):
            lane.drain(server.fileno(), buffer, None, None, miss, lane.BATCH + 1)
        with pytest.raises(ValueError):  # a buffer too small for a whole batch
            lane.drain(server.fileno(), bytearray(lane.DATAGRAM), None, None, miss, 1)


@pytest.mark.skipif(udp.FASTLANE is None, reason="the fast lane is not built")
def test_the_fast_lane_fuzz_harness_passes_a_short_fixed_seed_run():
    # fuzz/fastlane.py: batches of random datagrams over real sockets through `drain`.
    done = subprocess.run([sys.executable, str(ROOT / "fuzz" / "fastlane.py"), "-runs=5000",
                           "-seed=1", "-max_len=262144"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, errors="replace")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done 5000 runs" in done.stderr
