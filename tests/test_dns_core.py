"""The DNS behaviour of the served zones (issue 2), over real UDP and TCP sockets."""

from __future__ import annotations

import struct

import dnslib
import pytest

from tests.helpers.dns import addresses, ask, make_query, rcode, tcp_raw, udp_raw

QT = dnslib.QTYPE


def test_a_answers_the_ready_ipv4_endpoints_authoritatively(example):
    reply = ask(example.port, "user-service.production.global")
    assert rcode(reply) == "NOERROR"
    assert reply.header.aa == 1
    assert sorted(addresses(reply)) == ["10.1.0.11", "10.1.0.12", "10.2.0.21"]
    assert {rr.ttl for rr in reply.rr} == {5}


def test_aaaa_answers_the_ipv6_endpoints(example):
    reply = ask(example.port, "user-service.production.global", "AAAA")
    assert addresses(reply) == ["fd00::21"]


def test_srv_gives_one_record_per_healthy_endpoint_with_resolvable_targets(example):
    reply = ask(example.port, "_http._tcp.user-service.production.global", "SRV")
    srvs = [rr.rdata for rr in reply.rr]
    assert len(srvs) == 4 and {s.port for s in srvs} == {80}
    glue = {str(rr.rname): str(rr.rdata) for rr in reply.ar if rr.rtype in (QT.A, QT.AAAA)}
    assert {str(s.target) for s in srvs} == set(glue)
    for srv in srvs:
        target = ask(example.port, str(srv.target), "AAAA" if ":" in glue[str(srv.target)]
                     else "A")
        assert addresses(target) == [glue[str(srv.target)]]


def test_soa_and_ns_at_the_apex(example):
    soa = ask(example.port, "global", "SOA")
    assert [rr.rtype for rr in soa.rr] == [QT.SOA] and soa.header.aa
    ns = ask(example.port, "global", "NS")
    assert [str(rr.rdata) for rr in ns.rr] == ["ns.global."]
    assert addresses(ask(example.port, "ns.global")) == ["127.0.0.1"]


@pytest.mark.parametrize(("name", "qtype", "expected"), [
    ("missing.production.global", "A", "NXDOMAIN"),
    ("a.b.c.user-service.production.global", "A", "NXDOMAIN"),
    ("user-service.production.global", "TXT", "NOERROR"),
    ("production.global", "A", "NOERROR"),
    ("_tcp.user-service.production.global", "SRV", "NOERROR"),
    ("global", "A", "NOERROR"),
])
def test_negative_answers_carry_the_zone_soa(example, name, qtype, expected):
    reply = ask(example.port, name, qtype)
    assert rcode(reply) == expected
    assert reply.rr == []
    assert [rr.rtype for rr in reply.auth] == [QT.SOA]
    assert str(reply.auth[0].rname) == "global."
    assert str(reply.auth[0].rdata.mname) == "ns.global."
    assert reply.auth[0].ttl == 5 and reply.auth[0].rdata.times[-1] == 5
    assert reply.header.aa == 1


def test_names_match_case_insensitively_and_the_question_is_echoed_as_asked(example):
    for name in ("USER-service.Production.GLOBAL", "nO-sUcH.production.gLoBaL"):
        data = make_query(name)
        raw = udp_raw(example.port, data)
        assert raw[12 : len(data)] == data[12:]
    assert sorted(addresses(ask(example.port, "USER-SERVICE.PRODUCTION.GLOBAL"))) == [
        "10.1.0.11", "10.1.0.12", "10.2.0.21"]


def test_error_replies_echo_the_question_too(example):
    data = make_query("Odd.Name.Example")
    raw = udp_raw(example.port, data + b"junk")
    assert raw[3] & 0xF == 1  # FORMERR
    assert raw[4:6] == b"\x00\x01" and raw[12:] == data[12:]


def test_header_flags(example):
    data = bytearray(make_query("user-service.production.global", rd=True, cd=True, qid=4242))
    data[3] |= 0x40 | 0x20  # Z and AD set in the query
    raw = udp_raw(example.port, bytes(data))
    reply = dnslib.DNSRecord.parse(raw)
    assert reply.header.id == 4242
    assert reply.header.rd == 1 and reply.header.cd == 1
    assert reply.header.ra == 0 and reply.header.ad == 0 and reply.header.z == 0
    reply = ask(example.port, "user-service.production.global", rd=False)
    assert reply.header.rd == 0


def test_edns_is_answered_with_opt_advertising_1232(example):
    plain = ask(example.port, "user-service.production.global")
    assert [rr for rr in plain.ar if rr.rtype == QT.OPT] == []
    reply = ask(example.port, "user-service.production.global", edns=4096, do=True,
                options=[(65001, b"ignored"), (10, b"12345678")])
    opts = [rr for rr in reply.ar if rr.rtype == QT.OPT]
    assert len(opts) == 1 and opts[0].rclass == 1232
    assert opts[0].ttl & 0x8000  # DO echoed
    assert reply.header.ad == 0


def test_edns_version_above_zero_gets_badvers(example):
    q = dnslib.DNSRecord.question("user-service.production.global")
    q.add_ar(dnslib.EDNS0(version=1, udp_len=1232))
    raw = udp_raw(example.port, q.pack())
    reply = dnslib.DNSRecord.parse(raw)
    opt = next(rr for rr in reply.ar if rr.rtype == QT.OPT)
    assert (opt.ttl >> 24) << 4 | reply.header.rcode == 16  # BADVERS
    assert (opt.ttl >> 16) & 0xFF == 0


BIG = """
zones: [{name: global}]
clusters: [{name: c1, locality: r1}]
services:
  - name: big
    namespace: ns
    ports: [{name: http, port: 80}]
    endpoints:
""" + "\n".join(f"      - {{address: 10.9.0.{i + 1}, cluster: c1}}" for i in range(120))


def test_a_too_big_for_udp_is_truncated_to_whole_records_and_tcp_gets_all(server_factory):
    s = server_factory(BIG)
    small = ask(s.port, "big.ns.global")
    assert small.header.tc == 1
    assert 0 < len(small.rr) < 120
    assert len(udp_raw(s.port, make_query("big.ns.global"))) <= 512
    edns = ask(s.port, "big.ns.global", edns=4096)
    assert edns.header.tc == 1 and len(small.rr) < len(edns.rr) < 120
    full = ask(s.port, "big.ns.global", tcp=True)
    assert full.header.tc == 0 and len(full.rr) == 120


def test_tcp_carries_several_pipelined_queries_per_connection(example):
    names = ["user-service.production.global", "missing.production.global", "global"]
    queries = [make_query(n, qid=i) for i, n in enumerate(names)]
    answers = [dnslib.DNSRecord.parse(a) for a in tcp_raw(example.port, queries)]
    assert sorted(a.header.id for a in answers) == [0, 1, 2]
    by_id = {a.header.id: rcode(a) for a in answers}
    assert by_id == {0: "NOERROR", 1: "NXDOMAIN", 2: "NOERROR"}


@pytest.mark.parametrize(("mangle", "expected"), [
    (lambda d: d[:11], None),                                      # shorter than a header
    (lambda d: d[:4] + b"\x00\x02" + d[6:], "FORMERR"),            # QDCOUNT 2
    (lambda d: d[:4] + b"\x00\x00" + d[6:], "FORMERR"),            # QDCOUNT 0
    (lambda d: d[:-3], "FORMERR"),                                 # question cut short
    (lambda d: d + b"junk", "FORMERR"),                            # trailing garbage
    (lambda d: d[:2] + bytes([d[2] | 0x80]) + d[3:], None),        # QR=1: a response
    (lambda d: d[:2] + bytes([(d[2] & 0x87) | (5 << 3)]) + d[3:], "NOTIMP"),  # UPDATE
    (lambda d: d[:10] + b"\x00\x01" + d[12:] + b"\x00\x00\x01", "FORMERR"),   # bad OPT
])
def test_malformed_packets(example, mangle, expected):
    raw = udp_raw(example.port, mangle(make_query("user-service.production.global")),
                  timeout=0.5)
    if expected is None:
        assert raw is None
    else:
        assert raw is not None and dnslib.RCODE.get(raw[3] & 0xF) == expected
    assert addresses(ask(example.port, "user-service.production.global"))


def test_any_gets_a_minimal_rfc8482_answer(example):
    reply = ask(example.port, "user-service.production.global", "ANY")
    assert [rr.rtype for rr in reply.rr] == [QT.HINFO]


def test_names_outside_the_zones_are_refused_without_forwarding(example):
    reply = ask(example.port, "example.com")
    assert rcode(reply) == "REFUSED" and reply.header.ra == 0


def test_root_ns_probe_from_coredns_gets_a_prompt_answer(example):
    raw = udp_raw(example.port, make_query(".", "NS", rd=True), timeout=1)
    assert raw is not None
    assert dnslib.DNSRecord.parse(raw).header.id == struct.unpack("!H", raw[:2])[0]


def test_nsid_names_the_instance(server_factory):
    s = server_factory("resolver: {instance: replica-7}\n")
    reply = ask(s.port, "user-service.production.global", edns=1232, options=[(3, b"")])
    opt = next(rr for rr in reply.ar if rr.rtype == QT.OPT)
    assert [(o.code, o.data) for o in opt.rdata] == [(3, b"replica-7")]


LOCAL = """
resolver: {locality: r1/z1}
zones: [{name: global, max_answers: 0}]
clusters: [{name: a, locality: r1}, {name: b, locality: r2}]
services:
  - name: svc
    namespace: ns
    endpoints:
      - {address: 10.0.2.1, cluster: b}
      - {address: 10.0.1.2, cluster: a, locality: r1/z2}
      - {address: 10.0.1.1, cluster: a, locality: r1/z1}
      - {address: 10.0.1.3, cluster: a, locality: r1/z1}
      - {address: 10.0.2.2, cluster: b}
  - name: down
    namespace: ns
    endpoints:
      - {address: 10.0.3.1, cluster: a, ready: false}
      - {address: 10.0.3.2, cluster: b, ready: false}
"""


def test_answers_are_ordered_by_locality_and_rotate_within_a_tier(server_factory):
    s = server_factory(LOCAL)
    seen = set()
    for _ in range(8):
        order = addresses(ask(s.port, "svc.ns.global"))
        assert set(order[:2]) == {"10.0.1.1", "10.0.1.3"}
        assert order[2] == "10.0.1.2"
        assert set(order[3:]) == {"10.0.2.1", "10.0.2.2"}
        seen.add((order[0], order[3]))
    assert {first for first, _ in seen} == {"10.0.1.1", "10.0.1.3"}
    assert {other for _, other in seen} == {"10.0.2.1", "10.0.2.2"}


def test_max_answers_cuts_the_answer(server_factory):
    s = server_factory(LOCAL.replace("max_answers: 0", "max_answers: 2"))
    firsts = set()
    for _ in range(4):
        order = addresses(ask(s.port, "svc.ns.global"))
        assert len(order) == 2 and set(order) == {"10.0.1.1", "10.0.1.3"}
        firsts.add(order[0])
    assert firsts == {"10.0.1.1", "10.0.1.3"}


def test_all_unready_fails_open_or_answers_nothing(server_factory):
    s = server_factory(LOCAL)
    assert sorted(addresses(ask(s.port, "down.ns.global"))) == ["10.0.3.1", "10.0.3.2"]
    s = server_factory(LOCAL.replace("max_answers: 0", "on_all_unhealthy: none"))
    reply = ask(s.port, "down.ns.global")
    assert rcode(reply) == "NOERROR" and reply.rr == []


def test_per_cluster_names_answer_that_clusters_endpoints(server_factory):
    s = server_factory(LOCAL)
    assert sorted(addresses(ask(s.port, "b.svc.ns.global"))) == ["10.0.2.1", "10.0.2.2"]


def test_several_zones_answer_the_same_services(server_factory):
    s = server_factory("zones: [{name: global}, {name: mesh.internal, ttl: 30}]\n"
                       + LOCAL.split("zones: [{name: global, max_answers: 0}]\n")[1])
    reply = ask(s.port, "svc.ns.mesh.internal")
    assert len(addresses(reply)) == 5 and {rr.ttl for rr in reply.rr} == {30}
    assert len(addresses(ask(s.port, "svc.ns.global"))) == 5
