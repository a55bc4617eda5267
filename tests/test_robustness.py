"""Nothing a client sends may crash the server or delay other clients."""

from __future__ import annotations

import socket
import struct

import dnslib

from tests.helpers.data import corpus
from tests.helpers.dns import addresses, ask, make_query, tcp_raw
from tests.helpers.http import scrape, value
from tests.helpers.wait import wait_until


def skip_name(msg: bytes, i: int) -> int:
    """Offset past a (possibly compressed) name; pointers must point backwards."""
    jumps = 0
    end = -1
    while True:
        length = msg[i]
        if length >= 0xC0:
            target = ((length & 0x3F) << 8) | msg[i + 1]
            assert target < i and jumps < 64, "compression pointer must point backwards"
            end = i + 2 if end < 0 else end
            i, jumps = target, jumps + 1
            continue
        assert length < 64, "label type must be 0 or a pointer"
        if length == 0:
            return i + 1 if end < 0 else end
        i += length + 1


def well_formed(reply: bytes, query: bytes) -> None:
    """Structurally valid DNS: every count matches what follows, nothing left over.
    (Our own walk: dnslib rejects labels with bytes above 127, which DNS allows.)"""
    assert reply[:2] == query[:2], "reply must carry the query's ID"
    assert reply[2] & 0x80, "reply must have QR set"
    qd, an, ns, ar = struct.unpack_from("!HHHH", reply, 4)
    i = 12
    for _ in range(qd):
        i = skip_name(reply, i) + 4
    for _ in range(an + ns + ar):
        i = skip_name(reply, i)
        rdlen = struct.unpack_from("!H", reply, i + 8)[0]
        i += 10 + rdlen
    assert i == len(reply), "trailing or missing bytes"


def test_the_fuzz_corpus_gets_no_reply_or_a_well_formed_one(example):
    packets = [p for p in corpus() if len(p) <= 65507]  # the most one UDP datagram holds
    assert len(packets) > 9000
    answered = silent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.connect(("127.0.0.1", example.port))
        for i, packet in enumerate(packets):
            # Each packet is followed by a probe: one UDP socket is served in order, so what
            # arrives before the probe's answer is the packet's answer, and the probe's
            # answer proves the server is still answering.
            probe = make_query("user-service.production.global", qid=i % 65536)
            s.send(packet)
            s.send(probe)
            replies = []
            while True:
                reply = s.recv(65535)
                if reply[:2] == probe[:2] and reply[12 : len(probe)] == probe[12:]:
                    break
                replies.append(reply)
            assert len(replies) <= 1
            if not replies:
                silent += 1
                continue
            answered += 1
            assert not packet[2] & 0x80, "a response (QR=1) must never be answered"
            well_formed(replies[0], packet)
    assert answered > 1000 and silent > 1000


def test_the_fuzz_corpus_over_tcp_keeps_the_server_answering(example):
    packets = [p for p in corpus() if len(p) >= 12 and not p[2] & 0x80][:1500]
    for start in range(0, len(packets), 100):
        batch = packets[start : start + 100]
        with socket.create_connection(("127.0.0.1", example.port), timeout=2) as s:
            s.sendall(b"".join(struct.pack("!H", len(p)) + p for p in batch))
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(65535):
                data += chunk
        replies, i = {}, 0
        while i < len(data):
            n = struct.unpack_from("!H", data, i)[0]
            replies[data[i + 2 : i + 4]] = data[i + 2 : i + 2 + n]
            i += 2 + n
        for packet in batch:
            if packet[:2] in replies:
                well_formed(replies[packet[:2]], packet)
    assert addresses(ask(example.port, "user-service.production.global", tcp=True))


def test_an_idle_tcp_connection_is_closed(server_factory):
    s = server_factory("dns: {listen: 127.0.0.1:0, tcp_idle_timeout: 300ms}\n")
    with socket.create_connection(("127.0.0.1", s.port), timeout=20) as conn:
        query = make_query("global", "SOA")
        conn.sendall(struct.pack("!H", len(query)) + query)
        assert conn.recv(2)  # open while in use
        # Then closed by the server, long before this socket's 20 s timeout would end it.
        while conn.recv(65535):
            pass


def test_open_connections_are_capped_and_udp_still_answers(server_factory):
    s = server_factory("dns: {listen: 127.0.0.1:0, tcp_max_connections: 3,"
                       " tcp_message_timeout: 60s}\n")
    held = [socket.create_connection(("127.0.0.1", s.port), timeout=2) for _ in range(3)]
    for conn in held:
        conn.sendall(b"\x00\x40\x12")  # a message under way: none of them is idle
    try:
        wait_until(lambda: value(scrape(s), "globaldns_dns_tcp_connections") == 3)
        with socket.create_connection(("127.0.0.1", s.port), timeout=2) as extra:
            query = make_query("global", "SOA")
            try:
                extra.sendall(struct.pack("!H", len(query)) + query)
                data = extra.recv(10)
            except ConnectionResetError:
                data = b""
            assert data == b"", "a connection past the cap is closed unanswered"
        assert ask(s.port, "global", "SOA").rr
    finally:
        for conn in held:
            conn.close()
    wait_until(lambda: value(scrape(s), "globaldns_dns_tcp_connections") == 0)
    assert tcp_raw(s.port, [make_query("global", "SOA")])


def test_a_client_sending_half_a_message_does_not_delay_others(example):
    with socket.create_connection(("127.0.0.1", example.port), timeout=2) as slow:
        slow.sendall(b"\x00\x40\x12\x34")  # promises 64 bytes, sends 2
        # Each answered within its client's timeout while the slow one waits for the rest.
        for _ in range(50):
            assert addresses(ask(example.port, "user-service.production.global", tcp=True))
        assert tcp_raw(example.port, [make_query("global", "SOA")])


def test_a_zero_length_tcp_frame_is_skipped(example):
    with socket.create_connection(("127.0.0.1", example.port), timeout=2) as conn:
        q = make_query("global", "SOA")
        conn.sendall(b"\x00\x00" + struct.pack("!H", len(q)) + q)
        n = struct.unpack("!H", conn.recv(2))[0]
        assert dnslib.DNSRecord.parse(conn.recv(n)).rr
