"""Hostile TCP clients (issue 10): slow-loris, connection hoarding, and pipelined bursts
of forwarded queries, against a running server over real sockets. Timeouts are short
configured ones; the tests wait for events (the server closing a socket, an upstream
receiving queries) with a bounded wait, and never assert elapsed time."""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Any

import dnslib

from tests.helpers.dns import ede, make_query, tcp_raw
from tests.helpers.server import free_port
from tests.helpers.upstreams import fake_upstreams
from tests.helpers.wait import closed_by_server, wait_until


def dns(options: str) -> str:
    """A config with these `dns:` options, listening on a port free for UDP and TCP."""
    return f"dns: {{listen: 127.0.0.1:{free_port()}, {options}}}\nzones: [{{name: global}}]\n"


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=2,
                                    source_address=(source, 0))



def frames(data: bytes) -> list[bytes]:
    out, i = [], 0
    while i + 2 <= len(data):
        n = struct.unpack_from("!H", data, i)[0]
        if i + 2 + n > len(data):
            break
        out.append(data[i + 2 : i + 2 + n])
        i += 2 + n
    return out


def read_replies(conn: socket.socket, count: int, *, timeout: float = 10.0) -> list[bytes]:
    """Read `count` framed replies (fewer if the server closes or goes quiet)."""
    conn.settimeout(timeout)
    data = b""
    while len(frames(data)) < count:
        try:
            chunk = conn.recv(1 << 20)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return frames(data)


def tcp_stats(server: Any, what: str) -> Any:
    tcp = server.app.runtime.tcp_connections
    read = {"open": lambda: len(tcp.open), "ports": lambda: sorted(c.peer[1] for c in tcp.open),
            "closed": lambda: dict(tcp.closed), "rejected": lambda: tcp.rejected}[what]
    return server.call(read)


def test_a_byte_now_and_then_does_not_keep_a_connection_past_tcp_message_timeout(
        server_factory: Any) -> None:
    s = server_factory(dns("tcp_idle_timeout: 60s, tcp_message_timeout: 200ms"))
    with connect(s.port) as loris:
        loris.sendall(b"\xff\xff")  # promises 65,535 bytes
        closed = False
        for _ in range(100):  # a byte, then up to 50 ms for the server to hang up
            try:
                loris.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_by_server(loris, within=0.05):
                closed = True
                break
        assert closed, "the idle timeout (60 s) is re-armed by every byte"
    assert tcp_stats(s, "closed").get("message_timeout") == 1


def test_slow_loris_connections_at_the_cap_do_not_keep_tcp_queries_out(
        server_factory: Any) -> None:
    s = server_factory(dns("tcp_max_connections: 20, tcp_message_timeout: 200ms"))
    lorises = [connect(s.port, "127.0.0.2") for _ in range(20)]
    try:
        for loris in lorises:
            loris.sendall(b"\x00\x40\x12")
        assert wait_until(lambda: tcp_stats(s, "open") == 20)
        answers: list[bytes] = []

        def answered() -> bool:  # each try: every loris sends another byte, then we ask
            nonlocal answers
            for loris in lorises:
                with contextlib.suppress(OSError):
                    loris.sendall(b"x")
            try:
                answers = tcp_raw(s.port, [make_query("global", "SOA")], timeout=0.5)
            except OSError:
                answers = []
            return bool(answers)

        assert wait_until(answered), "every slot stays held by a byte now and then"
        assert dnslib.DNSRecord.parse(answers[0]).rr
    finally:
        for loris in lorises:
            loris.close()


def test_at_the_cap_the_connection_idle_longest_makes_room(server_factory: Any) -> None:
    s = server_factory(dns("tcp_max_connections: 3"))
    held = []
    try:
        for n in range(1, 4):  # one at a time: their order is the order they went idle
            held.append(connect(s.port))
            assert wait_until(lambda n=n: tcp_stats(s, "open") == n)
        with connect(s.port) as newcomer:
            query = make_query("global", "SOA")
            newcomer.sendall(struct.pack("!H", len(query)) + query)
            assert dnslib.DNSRecord.parse(read_replies(newcomer, 1)[0]).rr
            assert closed_by_server(held[0]), "RFC 7766 6.2.3: the oldest idle one goes"
            assert tcp_stats(s, "ports") == sorted(
                c.getsockname()[1] for c in (held[1], held[2], newcomer))
        assert tcp_stats(s, "closed").get("evicted") == 1
        assert tcp_stats(s, "rejected") == 0
    finally:
        for conn in held:
            conn.close()


def test_one_client_cannot_hold_more_than_tcp_max_connections_per_client(
        server_factory: Any) -> None:
    s = server_factory(dns("tcp_max_connections_per_client: 2, tcp_message_timeout: 60s"))
    busy = [connect(s.port, "127.0.0.2") for _ in range(2)]
    try:
        for conn in busy:
            conn.sendall(b"\x00\x40\x12")  # a message under way: not idle
        assert wait_until(lambda: tcp_stats(s, "open") == 2)
        with connect(s.port, "127.0.0.2") as third:
            assert closed_by_server(third)
        assert tcp_stats(s, "closed").get("client_limit") == 1
        assert tcp_raw(s.port, [make_query("global", "SOA")]), "other clients get in"
        assert wait_until(lambda: tcp_stats(s, "open") == 2)
    finally:
        for conn in busy:
            conn.close()


def forwarding(upstream: Any, options: str) -> str:
    return (dns(options)
            + f"forward: [{{zone: example.test, upstreams: ['{upstream}'], timeout: 20s,"
              " tries: 1}]\n")


def burst(count: int) -> bytes:
    """`count` forwarded queries (distinct names) in one TCP write."""
    out = b""
    for i in range(count):
        q = make_query(f"q{i}.example.test", qid=i, edns=1232)
        out += struct.pack("!H", len(q)) + q
    return out


def test_pipelined_forwarded_queries_in_one_write_never_pass_max_inflight(
        server_factory: Any) -> None:
    with fake_upstreams() as make:
        upstream = make()
        upstream.hold()
        # 100, not 1,000: a burst of 1,000 datagrams overflows the upstream's socket
        # buffer on loopback, and lost queries could not be counted.
        s = server_factory(forwarding(upstream, "max_inflight: 100,"
                                                " tcp_max_inflight_per_connection: 5000"))
        with connect(s.port) as conn:
            conn.sendall(burst(3000))
            refused = [dnslib.DNSRecord.parse(r) for r in read_replies(conn, 2900)]
            assert len(refused) == 2900, "3,000 queries went upstream: none refused"
            assert {dnslib.RCODE.get(r.header.rcode) for r in refused} == {"REFUSED"}
            assert all([code for code, _ in ede(r)] == [0] for r in refused)
            assert wait_until(lambda: upstream.waiting == 100)
            upstream.release()
            answered = [dnslib.DNSRecord.parse(r) for r in read_replies(conn, 100)]
        assert len(answered) == 100
        assert {r.header.id for r in refused + answered} == set(range(3000))
        assert upstream.count() == 100 and upstream.peak == 100
        assert s.call(lambda: s.app.runtime.server.inflight) == 0


def test_one_connection_waits_on_at_most_tcp_max_inflight_per_connection_queries(
        server_factory: Any) -> None:
    with fake_upstreams() as make:
        upstream = make()
        upstream.hold()
        s = server_factory(forwarding(upstream, "max_inflight: 1000,"
                                                " tcp_max_inflight_per_connection: 100"))
        with connect(s.port) as conn:
            conn.sendall(burst(3000))
            assert wait_until(lambda: upstream.waiting == 100)
            assert s.call(lambda: s.app.runtime.server.inflight) == 100
            assert upstream.count() == 100
            upstream.release()
            replies = [dnslib.DNSRecord.parse(r) for r in read_replies(conn, 3000)]
        assert len(replies) == 3000
        assert {dnslib.RCODE.get(r.header.rcode) for r in replies} == {"NXDOMAIN"}, \
            "the rest waited in the socket: none refused"
        assert upstream.count() == 3000 and upstream.peak == 100
