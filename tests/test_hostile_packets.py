"""Hostile packets (issue 10, "Packets"): the shape gate refuses cheaply, the bounded reader
never follows a pointer chain, every reply parses with dnspython and carries the query's
ID, other opcodes, TSIG and ECS are answered as the RFCs say, and query names reach the
logs escaped. Everything over real sockets against a running server."""

from __future__ import annotations

import json
import logging
import random
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import pytest

from globaldns.config import ConfigError, parse_text
from tests.helpers.data import ROOT, corpus
from tests.helpers.dns import addresses, ask, ecs, make_query, tcp_raw, udp_raw
from tests.helpers.http import scrape, value
from tests.helpers.server import Running, free_port
from tests.helpers.wait import wait_until

NAME = "user-service.production.global"


def header(qid: int, *, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0,
           ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def question(labels: list[bytes], qtype: int = 1, qclass: int = 1) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\0" + struct.pack("!HH", qtype,
                                                                              qclass)


def opt(options: bytes = b"", size: int = 1232) -> bytes:
    return b"\0" + struct.pack("!HHIH", 41, size, 0, len(options)) + options


def chained_pointers(count: int) -> bytes:
    """The packet that stalled every answer: `count` additional records, each owned by
    a pointer to the previous record's owner, so a naive reader follows 1 + 2 + ... +
    count pointers (800: 16 KB, 320,000 hops)."""
    q = question([b"user-service", b"production", b"global"])
    body = bytearray(q)
    owner = 12
    for _ in range(count):
        here = 12 + len(body)
        body += struct.pack("!HHHIH", 0xC000 | owner, 65280, 1, 0, 8) + bytes(8)
        owner = here
    return header(4242, ar=count) + bytes(body)


def parsed(reply: bytes, query: bytes) -> dns.message.Message:
    """The reply as dnspython reads it (TSIG not validated: we sign nothing); it must carry
    the query's ID and QR."""
    message = dns.message.from_wire(reply, keyring=False)
    assert message.id == struct.unpack("!H", query[:2])[0]
    assert message.flags & dns.flags.QR
    return message


def gate_refused(server: Running) -> float:
    return value(scrape(server), "globaldns_dns_gate_refused_total")


def test_800_chained_pointers_over_udp_are_refused_by_the_gate_and_answering_goes_on(
        example: Running) -> None:
    packet = chained_pointers(800)
    assert len(packet) > 16_000
    before = gate_refused(example)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.connect(("127.0.0.1", example.port))
        s.send(packet)
        s.send(make_query(NAME, qid=7))
        refused = s.recv(65535)
        answered = s.recv(65535)
    # FORMERR, the header only: a refusal is never bigger than what it answers.
    assert parsed(refused, packet).rcode() == dns.rcode.FORMERR and len(refused) == 12
    assert parsed(answered, make_query(NAME, qid=7)).answer
    assert gate_refused(example) == before + 1


def test_800_chained_pointers_over_tcp_are_refused_too(example: Running) -> None:
    packet = chained_pointers(800)
    refused, answered = tcp_raw(example.port, [packet, make_query(NAME, qid=8)])
    assert parsed(refused, packet).rcode() == dns.rcode.FORMERR
    assert dns.message.from_wire(answered).answer


def test_a_max_size_tcp_message_with_a_pointer_chain_in_an_allowed_shape_is_formerr(
        example: Running) -> None:
    # One question, an OPT whose option holds 32,000 pointers each to the one before, and a
    # TSIG whose owner is the last of them: 65,535 bytes, a shape the gate lets through.
    q = question([b"user-service", b"production", b"global"])
    start = 12 + len(q) + 11 + 4
    chain = bytearray(b"\x01a\x00")
    while len(chain) < 64_000:
        chain += struct.pack("!H", 0xC000 | (start + len(chain) - 2))
    options = struct.pack("!HH", 65001, len(chain)) + chain
    last = start + len(chain) - 2
    tsig = struct.pack("!HHHIH", 0xC000 | last, 250, 255, 0, 0)
    packet = header(9, ar=2) + q + opt(options) + tsig
    pad = 65_535 - len(packet)
    options = struct.pack("!HH", 65001, len(chain) + pad) + chain + b"\0" * pad
    packet = header(9, ar=2) + q + opt(options) + tsig
    assert len(packet) == 65_535
    before = gate_refused(example)
    refused, answered = tcp_raw(example.port, [packet, make_query(NAME, qid=10)])
    reply = parsed(refused, packet)
    assert reply.rcode() == dns.rcode.FORMERR and reply.question  # the question was readable
    assert dns.message.from_wire(answered).answer
    assert gate_refused(example) == before  # not the gate: the reader's pointer bound


@pytest.mark.parametrize(("packet", "why"), [
    (header(1, an=1) + question([b"a", b"global"]) + b"\xc0\x0c" + bytes(10), "an answer"),
    (header(2, ns=1) + question([b"a", b"global"]) + b"\xc0\x0c" + bytes(10), "authority"),
    (header(3, ar=3) + question([b"a", b"global"]) + opt() * 3, "three additional"),
    (header(4) + question([b"a", b"global"]) + bytes(600), "over 512 without EDNS"),
    (header(5, qd=2) + question([b"a", b"global"]) * 2, "two questions"),
])
def test_the_gate_refuses_odd_shapes_with_a_bare_formerr(example: Running, packet: bytes,
                                                         why: str) -> None:
    before = gate_refused(example)
    reply = udp_raw(example.port, packet)
    assert reply is not None, why
    assert parsed(reply, packet).rcode() == dns.rcode.FORMERR and len(reply) == 12, why
    assert gate_refused(example) == before + 1


def test_a_question_with_a_stray_pointer_is_formerr_without_a_question(example: Running) -> None:
    packet = header(11) + b"\x01a\xc0\x0c" + struct.pack("!HH", 1, 1)
    reply = udp_raw(example.port, packet)
    assert reply is not None
    message = parsed(reply, packet)
    assert message.rcode() == dns.rcode.FORMERR and not message.question
    assert reply[4:6] == b"\0\0"


def mutations(count: int) -> list[bytes]:
    rng = random.Random(1)
    bases = [make_query(NAME, qid=7), make_query("x.global", "AAAA", edns=1232, qid=9,
                                                  options=[ecs("10.0.0.0/24")]),
             make_query("version.bind", "TXT", qclass="CH", qid=11)]
    out = []
    for _ in range(count):
        packet = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 4)):
            packet[rng.randrange(len(packet))] = rng.randrange(256)
        if rng.random() < 0.2:  # the opcode field, which the byte flips rarely reach
            packet[2] = (packet[2] & 0x87) | rng.randrange(16) << 3
        out.append(bytes(packet))
    return out


def test_every_reply_to_the_corpus_and_mutated_queries_parses_with_dnspython(
        example: Running) -> None:
    packets = [p for p in corpus() if len(p) <= 65507] + mutations(3000)
    answered = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.connect(("127.0.0.1", example.port))
        for i, packet in enumerate(packets):
            # Each packet is followed by a probe, as in test_robustness: what arrives
            # before the probe's answer is the packet's answer.
            probe = make_query(NAME, qid=i % 65536)
            s.send(packet)
            s.send(probe)
            while True:
                reply = s.recv(65535)
                if reply[:2] == probe[:2] and reply[12 : len(probe)] == probe[12:]:
                    break
                parsed(reply, packet)
                answered += 1
    assert answered > 4000


def test_every_reply_to_the_corpus_over_tcp_parses_with_dnspython(example: Running) -> None:
    packets = [p for p in corpus() if len(p) >= 12 and not p[2] & 0x80]
    answered = 0
    for start in range(0, len(packets), 200):
        batch = packets[start : start + 200]
        ids = {p[:2] for p in batch}
        with socket.create_connection(("127.0.0.1", example.port), timeout=5) as s:
            s.sendall(b"".join(struct.pack("!H", len(p)) + p for p in batch))
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(65535):
                data += chunk
        i = 0
        while i < len(data):
            n = struct.unpack_from("!H", data, i)[0]
            reply = data[i + 2 : i + 2 + n]
            assert reply[:2] in ids
            message = dns.message.from_wire(reply, keyring=False)
            assert message.flags & dns.flags.QR
            answered += 1
            i += 2 + n
    assert answered > 3000
    assert addresses(ask(example.port, NAME, tcp=True))


@pytest.mark.parametrize("opcode", [1, 2, 4, 5, 6, 15])
def test_notimp_for_another_opcode_copies_no_rd_or_cd(example: Running, opcode: int) -> None:
    query = bytearray(make_query(NAME, rd=True, cd=True, qid=12))
    query[2] = (query[2] & 0x87) | opcode << 3
    reply = udp_raw(example.port, bytes(query))
    assert reply is not None
    message = parsed(reply, bytes(query))
    assert message.rcode() == dns.rcode.NOTIMP
    assert message.opcode() == opcode
    assert not message.flags & (dns.flags.RD | dns.flags.CD)


def test_formerr_to_a_query_copies_rd_and_cd(example: Running) -> None:
    query = make_query(NAME, rd=True, cd=True, qid=13) + b"junk"
    reply = udp_raw(example.port, query)
    assert reply is not None
    message = parsed(reply, query)
    assert message.rcode() == dns.rcode.FORMERR
    assert message.flags & dns.flags.RD and message.flags & dns.flags.CD


KEY = dns.tsig.Key("transfer-key.", "c2VjcmV0c2VjcmV0c2VjcmV0", "hmac-sha256")


@pytest.mark.parametrize("edns", [False, True])
def test_a_tsig_signed_query_is_notauth_with_an_unsigned_badkey_tsig(example: Running,
                                                                    edns: bool) -> None:
    query = dns.message.make_query(NAME, "A", use_edns=0 if edns else None)
    query.use_tsig(KEY)
    # dnspython, as a client, sees the server's BADKEY (RFC 8945 5.2.2) ...
    with pytest.raises(dns.tsig.PeerBadKey):
        dns.query.udp(query, "127.0.0.1", port=example.port, timeout=2)
    with pytest.raises(dns.tsig.PeerBadKey):
        dns.query.tcp(query, "127.0.0.1", port=example.port, timeout=2)
    # ... and the reply, read without validation, is NOTAUTH, no answer, the same key and
    # algorithm, no MAC (5.3.2: unsigned), the query's original ID and Time Signed.
    wire = query.to_wire()
    reply = udp_raw(example.port, wire)
    assert reply is not None
    message = parsed(reply, wire)
    assert message.rcode() == dns.rcode.NOTAUTH and not message.answer
    assert [str(q.name) for q in message.question] == [NAME + "."]
    assert (message.opt is not None) == edns
    assert str(message.keyname) == "transfer-key."
    tsig = message.tsig[0]
    assert tsig.error == dns.rcode.BADKEY and tsig.mac == b""
    assert str(tsig.algorithm) == "hmac-sha256."
    assert tsig.original_id == query.id and tsig.time_signed == query.tsig[0].time_signed
    assert reply.rindex(b"transfer-key") > reply.rindex(b"global")  # the TSIG is last
    assert len(reply) <= len(wire)


def test_dig_with_a_key_is_told_badkey(example: Running) -> None:
    from tests.helpers.dns import dig
    out = dig(example.port, "-y", "hmac-sha256:transfer-key:c2VjcmV0c2VjcmV0c2VjcmV0", NAME)
    assert "status: NOTAUTH" in out and "BADKEY" in out, out


def test_ecs_with_address_bits_past_the_source_prefix_is_formerr(example: Running) -> None:
    # 10.1.2.0/16: the third byte is past the prefix (RFC 7871 6); the address carries 2
    # bytes as it must, but the second has bits set past /12.
    bad = struct.pack("!HBB", 1, 12, 0) + bytes([10, 0x1F])
    query = make_query(NAME, edns=1232, options=[(8, bad)], qid=14)
    reply = udp_raw(example.port, query)
    assert reply is not None
    assert parsed(reply, query).rcode() == dns.rcode.FORMERR
    good = struct.pack("!HBB", 1, 12, 0) + bytes([10, 0x10])
    assert addresses(ask(example.port, NAME, edns=1232, options=[(8, good)]))


def test_two_ecs_options_are_formerr(example: Running) -> None:
    query = make_query(NAME, edns=1232, options=[ecs("10.0.0.0/24"), ecs("10.9.0.0/24")],
                       qid=15)
    reply = udp_raw(example.port, query)
    assert reply is not None
    assert parsed(reply, query).rcode() == dns.rcode.FORMERR


VIEWS = """
clusters: [{name: a, locality: r1}, {name: b, locality: r2}]
routing:
  - match: "api.prod"
    views: [{clients: [10.9.0.0/16], clusters: [b]}]
services:
  - name: api
    namespace: prod
    endpoints: [{address: 10.1.0.1, cluster: a}, {address: 10.2.0.1, cluster: b}]
"""


def ecs_echo(reply: Any) -> list[bytes]:
    return [o.data for rr in reply.ar if rr.rtype == 41 for o in rr.rdata if o.code == 8]


def test_ecs_is_honoured_only_from_clients_in_ecs_from(server_factory: Any) -> None:
    honoured = server_factory(VIEWS)  # default: every client allowed to query
    reply = ask(honoured.port, "api.prod.global", edns=1232, options=[ecs("10.9.1.0/24")])
    assert addresses(reply) == ["10.2.0.1"] and ecs_echo(reply)
    ignored = server_factory(VIEWS + "acl: {ecs_from: [10.0.0.0/8]}\n")
    reply = ask(ignored.port, "api.prod.global", edns=1232, options=[ecs("10.9.1.0/24")])
    # Answered as if the option were absent: the source's answer, no ECS in the reply.
    assert sorted(addresses(reply)) == ["10.1.0.1", "10.2.0.1"] and not ecs_echo(reply)
    assert value(scrape(ignored), "globaldns_acl_ecs_ignored_total") == 1


HOSTILE_NAME = [b"evil\n{\"injected\": 1}", b"tab\there", b"nul\0", b"dot.slash\\", b"global"]
ESCAPED = 'evil\\010{\\"injected\\":\\0321}.tab\\009here.nul\\000.dot\\.slash\\\\.global'


def test_query_names_in_the_query_log_are_escaped(server_factory: Any, tmp_path: Path) -> None:
    log = tmp_path / "queries.log"
    server = server_factory(f"log: {{queries: true, file: {log}}}\n")
    query = header(16) + question(HOSTILE_NAME)
    assert udp_raw(server.port, query) is not None
    assert wait_until(lambda: log.exists() and log.read_text().endswith("\n"))
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    name = json.loads(lines[0])["name"]
    assert name == ESCAPED
    assert all(0x20 < ord(c) < 0x7F for c in name)


def test_query_names_in_log_lines_are_escaped(server_factory: Any,
                                               caplog: pytest.LogCaptureFixture) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nobody listens: the forward fails and logs the name
    server = server_factory(f"forward: [{{zone: ., upstreams: ['{dead}'], timeout: 1s}}]\n")
    caplog.set_level(logging.DEBUG, logger="globaldns.forward")
    query = header(17) + question([b"line\nbreak\r", b"example", b"test"])
    assert udp_raw(server.port, query) is not None
    lines = [r.getMessage() for r in caplog.records if r.name == "globaldns.forward"]
    assert any("line\\010break\\013.example.test" in line for line in lines), lines
    assert not any("\n" in line or "\r" in line for line in lines)


def test_malformed_edns_options_cost_a_bounded_loop(example: Running) -> None:
    # 16,000 empty options in one OPT: refused after the first few, not walked to the end.
    query = make_query(NAME, qid=18)
    packet = query[:10] + b"\0\x01" + query[12:] + opt(struct.pack("!HH", 65001, 0) * 16_000)
    refused, answered = tcp_raw(example.port, [packet, make_query(NAME, qid=19)])
    assert parsed(refused, packet).rcode() == dns.rcode.FORMERR
    assert dns.message.from_wire(answered).answer


def test_unusual_but_valid_shapes_are_still_answered(example: Running) -> None:
    # A non-OPT additional record beside the OPT, the OPT not first: the reader takes them.
    query = make_query(NAME, qid=20)
    extra = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + b"\x0a\0\0\x01"
    packet = query[:10] + b"\0\x02" + query[12:] + extra + opt()
    reply = udp_raw(example.port, packet)
    assert reply is not None
    message = parsed(reply, packet)
    assert message.rcode() == dns.rcode.NOERROR and message.answer and message.opt is not None


def test_a_tsig_that_is_not_last_is_formerr(example: Running) -> None:
    query = make_query(NAME, qid=21)
    tsig = b"\x03key\0" + struct.pack("!HHIH", 250, 255, 0, 0)
    packet = query[:10] + b"\0\x02" + query[12:] + tsig + opt()
    reply = udp_raw(example.port, packet)
    assert reply is not None
    assert parsed(reply, packet).rcode() == dns.rcode.FORMERR


def test_the_packet_fuzz_harness_passes_a_short_fixed_seed_run(tmp_path: Path) -> None:
    # The atheris harness (fuzz/packets.py), seeded with part of the corpus; the long runs
    # and their figures are in bench/RESULTS-fuzz.md.
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for i, packet in enumerate(corpus()[::40]):
        (seeds / f"{i:04d}").write_bytes(packet)
    harness = ROOT / "fuzz" / "packets.py"
    done = subprocess.run([sys.executable, str(harness), str(seeds), "-runs=30000", "-seed=1",
                           "-max_len=65535"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, errors="replace")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done 30000 runs" in done.stderr


def test_acl_ecs_from_is_a_list_of_networks_with_errors_naming_the_key() -> None:
    assert parse_text("acl: {ecs_from: [10.0.0.0/8]}\n", "my.yaml").acl.ecs_from == (
        "10.0.0.0/8",)
    assert parse_text("acl: {ecs_from: []}\n", "my.yaml").acl.ecs_from == ()
    assert parse_text("acl: {}\n", "my.yaml").acl.ecs_from is None
    with pytest.raises(ConfigError) as caught:
        parse_text("acl: {ecs_from: [banana]}\n", "my.yaml")
    assert any(e.startswith("my.yaml: acl.ecs_from[0]: 'banana' is not an IP network")
               for e in caught.value.errors), caught.value.errors
