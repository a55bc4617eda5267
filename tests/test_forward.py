"""Forwarding of names outside the served zones (issue 5), against real upstreams on
loopback: small dnslib servers the tests control, and a real unbound."""

from __future__ import annotations

import random
import re
import struct
import threading
from pathlib import Path

import dnslib
import pytest

from globaldns.config import ConfigError, parse_text
from globaldns.config.model import AclConfig
from globaldns.dns.relay import MalformedReply, relayed
from globaldns.dns.upstream import Pool, Unreachable
from tests.helpers.clock import ManualTime
from tests.helpers.dns import addresses, ask, dig, ede, make_query, rcode, tcp_raw, udp_raw
from tests.helpers.server import EXAMPLE, free_port
from tests.helpers.upstreams import EXAMPLE_RECORDS, fake_upstreams, forward_yaml, unbound
from tests.helpers.wait import eventually, wait_until

QT = dnslib.QTYPE


@pytest.fixture
def upstreams():
    with fake_upstreams() as make:
        yield make


@pytest.fixture
def upstream(upstreams):
    return upstreams().add(*EXAMPLE_RECORDS)


# -- the answer as relayed ---------------------------------------------------------------------

def test_a_name_outside_the_served_zones_is_answered_by_the_upstream(server_factory, upstream):
    srv = server_factory(forward_yaml((".", [upstream])))
    reply = ask(srv.port, "www.example.test")
    assert rcode(reply) == "NOERROR"
    assert addresses(reply) == ["192.0.2.1"]
    assert reply.header.ra == 1
    assert upstream.count("www.example.test") == 1


def test_the_client_gets_its_own_id_and_question_casing_back(server_factory, upstream):
    srv = server_factory(forward_yaml((".", [upstream])))
    query = make_query("WwW.ExAmPlE.TeSt", qid=4242)
    raw = udp_raw(srv.port, query)
    assert raw is not None
    assert raw[:2] == struct.pack("!H", 4242)
    assert raw[12 : 12 + len(query) - 12] == query[12:]  # the question, byte for byte
    assert addresses(dnslib.DNSRecord.parse(raw)) == ["192.0.2.1"]
    seen = upstream.queries[-1]
    assert seen.id != 4242 or upstream.count() > 1  # our own ID upstream, not the client's


def test_each_upstream_query_has_a_fresh_random_id_and_source_port(server_factory, upstream):
    srv = server_factory(forward_yaml((".", [upstream])))
    for i in range(8):
        ask(srv.port, f"n{i}.example.test", qid=7)
    seen = [s for s in upstream.queries if s.qname.startswith("n")]
    assert len(seen) == 8
    # 8 draws from 2**16: a repeat would be a 1-in-2,300 accident, not a fixed value.
    assert len({s.id for s in seen}) >= 7
    assert len({s.port for s in seen}) >= 7


def test_spoofed_replies_are_dropped_and_the_real_one_accepted(server_factory, upstream):
    # Wrong ID, wrong question, and the right ID from another source port arrive first.
    upstream.mode = "spoofed_first"
    srv = server_factory(forward_yaml((".", [upstream]), timeout="1s"))
    reply = ask(srv.port, "www.example.test")
    assert addresses(reply) == ["192.0.2.1"]


@pytest.mark.parametrize("mode", ["wrong_id", "wrong_question", "silent"])
def test_no_matching_reply_in_time_is_servfail_with_ede_22(server_factory, upstream, mode):
    upstream.mode = mode
    srv = server_factory(forward_yaml((".", [upstream]), timeout="300ms", tries=2))
    reply = ask(srv.port, "www.example.test", edns=1232, timeout=10)
    assert rcode(reply) == "SERVFAIL"
    assert [code for code, _text in ede(reply)] == [22]
    assert str(upstream) in ede(reply)[0][1]
    assert upstream.count("www.example.test") == 2  # both tries waited out their timeout


def test_a_dead_upstream_is_servfail_with_ede_23_at_once(server_factory):
    dead = f"127.0.0.1:{free_port()}"  # nobody listens: ICMP port unreachable
    # "At once": an answer well within the client's 10 s, where waiting for the upstream
    # would take an hour (a deadline, not a measurement).
    srv = server_factory(forward_yaml((".", [dead]), timeout="1h"))
    reply = ask(srv.port, "www.example.test", edns=1232, timeout=10)
    assert rcode(reply) == "SERVFAIL"
    assert [code for code, _text in ede(reply)] == [23]


def test_dig_shows_the_servfail_and_its_extended_error(server_factory, upstream):
    upstream.mode = "silent"
    srv = server_factory(forward_yaml((".", [upstream]), timeout="200ms", tries=1))
    out = dig(srv.port, "www.example.test")
    assert "status: SERVFAIL" in out
    assert "EDE: 22 (No Reachable Authority)" in out


def test_a_truncated_udp_answer_is_asked_again_over_tcp(server_factory, upstream):
    upstream.mode = "truncate"
    srv = server_factory(forward_yaml((".", [upstream])))
    assert addresses(ask(srv.port, "www.example.test")) == ["192.0.2.1"]
    assert [s.transport for s in upstream.queries] == ["udp", "tcp"]


def test_force_tcp_reuses_one_connection_to_a_tcp_only_upstream(server_factory, upstreams):
    tcp_only = upstreams(udp=False).add(*EXAMPLE_RECORDS)
    srv = server_factory(forward_yaml((".", [tcp_only]), force_tcp="true"))
    for i in range(5):
        assert rcode(ask(srv.port, f"n{i}.example.test")) == "NXDOMAIN"
    assert addresses(ask(srv.port, "www.example.test")) == ["192.0.2.1"]
    assert {s.transport for s in tcp_only.queries} == {"tcp"}
    assert tcp_only.tcp_connections == 1


def test_a_tcp_only_upstream_without_force_tcp_is_a_network_error(server_factory, upstreams):
    tcp_only = upstreams(udp=False).add(*EXAMPLE_RECORDS)
    srv = server_factory(forward_yaml((".", [tcp_only])))
    reply = ask(srv.port, "www.example.test", edns=1232)
    assert rcode(reply) == "SERVFAIL" and [c for c, _t in ede(reply)] == [23]


def test_pipelined_tcp_answers_are_matched_by_id(server_factory, upstream):
    # The first name is answered last: matching by ID, not by order.
    upstream.delays = {"www.example.test": 0.3}
    srv = server_factory(forward_yaml((".", [upstream]), force_tcp="true"))
    queries = [make_query("www.example.test", qid=1), make_query("mail.example.test", qid=2)]
    answers = {dnslib.DNSRecord.parse(a).header.id: dnslib.DNSRecord.parse(a)
               for a in tcp_raw(srv.port, queries)}
    assert addresses(answers[1]) == ["192.0.2.1"]
    assert addresses(answers[2]) == ["192.0.2.25"]
    assert upstream.tcp_connections == 1


def test_edns_do_cd_and_ad_pass_through_to_the_upstream_and_back(server_factory, upstream):
    srv = server_factory(forward_yaml((".", [upstream])))
    reply = ask(srv.port, "www.example.test", edns=4096, do=True, cd=True)
    seen = upstream.queries[-1]
    assert (seen.edns, seen.do, seen.cd, seen.rd) == (True, True, True, True)
    assert reply.header.cd == 1
    opt = [rr for rr in reply.ar if rr.rtype == QT.OPT]
    assert len(opt) == 1 and opt[0].ttl & 0x8000  # DO echoed (RFC 3225)
    assert opt[0].rclass == 1232  # our size, not the upstream's


def test_a_client_without_edns_gets_no_opt_record(server_factory, upstream):
    srv = server_factory(forward_yaml((".", [upstream])))
    reply = ask(srv.port, "www.example.test")
    assert not [rr for rr in reply.ar if rr.rtype == QT.OPT]
    # We still ask with EDNS: fewer upstream answers need TCP.
    assert upstream.queries[-1].edns


def test_an_answer_too_big_for_the_client_is_truncated_to_whole_records(server_factory,
                                                                          upstream):
    upstream.add(*(f"big.example.test. 300 IN A 192.0.2.{i}" for i in range(1, 61)))
    srv = server_factory(forward_yaml((".", [upstream])))
    raw = udp_raw(srv.port, make_query("big.example.test"))
    assert raw is not None and len(raw) <= 512
    small = dnslib.DNSRecord.parse(raw)  # parses: only whole records
    assert small.header.tc == 1 and 0 < len(small.rr) < 60
    big = ask(srv.port, "big.example.test", tcp=True)
    assert big.header.tc == 0 and len(big.rr) == 60


def test_an_ipv6_upstream_is_asked_over_ipv6(server_factory, upstreams):
    v6 = upstreams(host="::1").add(*EXAMPLE_RECORDS)
    srv = server_factory(forward_yaml((".", [v6])))
    assert addresses(ask(srv.port, "www.example.test")) == ["192.0.2.1"]
    v6.mode = "truncate"  # and over TCP
    assert addresses(ask(srv.port, "mail.example.test")) == ["192.0.2.25"]
    assert [s.transport for s in v6.queries] == ["udp", "udp", "tcp"]


def test_the_most_specific_forward_zone_wins(server_factory, upstreams):
    root = upstreams().add("www.other.test. 300 IN A 198.51.100.1")
    example = upstreams().add(*EXAMPLE_RECORDS)
    srv = server_factory(forward_yaml((".", [root]), ("example.test", [example])))
    assert addresses(ask(srv.port, "www.example.test")) == ["192.0.2.1"]
    assert addresses(ask(srv.port, "www.other.test")) == ["198.51.100.1"]
    assert example.count() == 1 and root.count() == 1


def test_a_name_no_forward_zone_covers_is_refused(server_factory, upstream):
    srv = server_factory(forward_yaml(("example.test", [upstream])))
    assert rcode(ask(srv.port, "www.other.test")) == "REFUSED"
    assert upstream.count() == 0


def test_names_in_served_zones_are_never_forwarded(server_factory, upstream):
    srv = server_factory(EXAMPLE.replace("listen: 127.0.0.1:5353",
                                         f"listen: 127.0.0.1:{free_port()}")
                         + forward_yaml((".", [upstream])))
    assert addresses(ask(srv.port, "user-service.production.global"))
    assert rcode(ask(srv.port, "missing.production.global")) == "NXDOMAIN"
    assert rcode(ask(srv.port, "global", "SOA")) == "NOERROR"
    # Another class or a zone transfer of a served name still stays with us (CHAOS is
    # answered by chain/chaos.py, Hesiod by no one).
    assert rcode(ask(srv.port, "user-service.production.global", "TXT",
                     qclass="CH")) == "NOERROR"
    assert rcode(ask(srv.port, "user-service.production.global", "TXT",
                     qclass="Hesiod")) == "REFUSED"
    assert upstream.count() == 0


def test_the_root_ns_health_probe_never_waits_for_an_upstream(server_factory, upstream):
    # CoreDNS's forward plugin sends `. IN NS`, RD=1, no EDNS, to check us.
    upstream.mode = "silent"
    # Never waits: the upstream would hold it for an hour, the client gives up after 10 s.
    srv = server_factory(forward_yaml((".", [upstream]), timeout="1h"))
    reply = ask(srv.port, ".", "NS", timeout=10)
    assert rcode(reply) == "REFUSED"
    assert upstream.count(probes=True) == 0


def test_zone_transfers_are_not_forwarded(server_factory, upstream):
    srv = server_factory(forward_yaml((".", [upstream])))
    answer = tcp_raw(srv.port, [make_query("example.test", "AXFR")])[0]
    assert rcode(dnslib.DNSRecord.parse(answer)) == "REFUSED"
    assert upstream.count() == 0


# -- upstream choice and health ----------------------------------------------------------------

def test_an_upstream_answering_servfail_is_followed_by_the_next(server_factory, upstreams):
    failing = upstreams().add(*EXAMPLE_RECORDS)
    failing.mode = "servfail"
    good = upstreams().add(*EXAMPLE_RECORDS)
    srv = server_factory(forward_yaml((".", [failing, good]), policy="sequential"))
    assert addresses(ask(srv.port, "www.example.test")) == ["192.0.2.1"]
    assert failing.count() == 1 and good.count() == 1


def test_a_lone_servfail_upstream_is_relayed(server_factory, upstream):
    upstream.mode = "servfail"
    srv = server_factory(forward_yaml((".", [upstream])))
    reply = ask(srv.port, "www.example.test", edns=1232)
    assert rcode(reply) == "SERVFAIL" and ede(reply) == []


@pytest.mark.parametrize(("policy", "expected"), [
    ("sequential", (8, 0)), ("round_robin", (4, 4))])
def test_the_policy_decides_which_upstream_is_asked(server_factory, upstreams, policy,
                                                      expected):
    first, second = upstreams(), upstreams()
    srv = server_factory(forward_yaml((".", [first, second]), policy=policy))
    for i in range(8):
        ask(srv.port, f"n{i}.example.test")
    assert (first.count(), second.count()) == expected


def test_the_random_policy_uses_every_upstream(server_factory, upstreams):
    first, second = upstreams(), upstreams()
    srv = server_factory(forward_yaml((".", [first, second]), policy="random"))
    for i in range(30):
        ask(srv.port, f"n{i}.example.test")
    assert first.count() > 0 and second.count() > 0  # all 30 on one: p = 2**-29


def test_a_failing_upstream_is_skipped_and_probed_until_it_answers(server_factory, upstreams):
    sick = upstreams().add(*EXAMPLE_RECORDS)
    sick.mode = "silent"
    good = upstreams().add(*EXAMPLE_RECORDS)
    srv = server_factory(forward_yaml((".", [sick, good]), policy="sequential",
                                      timeout="600ms", max_fails=2, probe_interval="100ms"))
    for i in range(2):  # each waits 600 ms on the sick one, then gets the good one
        assert rcode(ask(srv.port, f"n{i}.example.test")) == "NXDOMAIN"
    assert rcode(ask(srv.port, "n2.example.test")) == "NXDOMAIN"
    assert sick.count("n2.example.test") == 0  # the unhealthy upstream is skipped
    wait_until(lambda: sick.probes() >= 2)  # `. IN NS` every probe_interval
    sick.mode = "answer"
    pool = srv.app.runtime.chain.forward.pools[0]
    wait_until(lambda: pool.upstreams[0].healthy)
    assert rcode(ask(srv.port, "n3.example.test")) == "NXDOMAIN"
    assert sick.count("n3.example.test") == 1 and good.count("n3.example.test") == 0


def test_when_every_upstream_is_unhealthy_they_are_tried_anyway(server_factory, upstream):
    upstream.mode = "silent"
    srv = server_factory(forward_yaml((".", [upstream]), timeout="200ms", tries=1,
                                      max_fails=1, probe_interval="1h"))
    assert rcode(ask(srv.port, "www.example.test")) == "SERVFAIL"
    assert not srv.app.runtime.chain.forward.pools[0].upstreams[0].healthy
    upstream.mode = "answer"
    assert addresses(ask(srv.port, "mail.example.test")) == ["192.0.2.25"]


async def test_an_unhealthy_upstream_is_probed_every_probe_interval_until_it_answers(
        upstream):
    # The pool on moved time: the waits between probes are the test's; each probe is a
    # real `. IN NS` exchange with the upstream.
    clock = ManualTime()
    pool = Pool([(upstream.host, upstream.port)], policy="sequential", timeout=0.3, tries=1,
                max_fails=1, probe_interval=5.0, force_tcp=False, sleep=clock.sleep)
    [up] = pool.upstreams
    upstream.mode = "silent"
    query = make_query("www.example.test")
    with pytest.raises(Unreachable):
        await pool.exchange(query[2:], query[12:])
    assert not up.healthy
    await clock.until_sleeping(1)
    assert (clock.sleeps, upstream.probes()) == ([5.0], 0)
    await clock.advance(5.0)  # one probe, unanswered: still unhealthy, probing on
    assert (up.probes, up.probe_failures, up.healthy) == (1, 1, False)
    assert upstream.probes() == 1 and clock.sleeps == [5.0, 5.0]
    upstream.mode = "answer"
    await clock.advance(5.0)  # answered: healthy, and the probing ends
    assert (up.probes, up.probe_failures, up.healthy) == (2, 1, True)
    assert up.prober is None and clock.sleeping == 0
    pool.close()


async def test_probes_stop_when_the_pool_closes(upstream):
    clock = ManualTime()
    pool = Pool([(upstream.host, upstream.port)], policy="sequential", timeout=0.3, tries=1,
                max_fails=1, probe_interval=5.0, force_tcp=False, sleep=clock.sleep)
    upstream.mode = "silent"
    query = make_query("www.example.test")
    with pytest.raises(Unreachable):
        await pool.exchange(query[2:], query[12:])
    await clock.until_sleeping(1)
    prober = pool.upstreams[0].prober
    assert prober is not None
    pool.close()  # what a server stop or a reload that replaces the forwarder does
    await eventually(prober.done)
    await clock.advance(60.0)
    assert upstream.probes() == 0 and clock.sleeping == 0


# -- against a real unbound --------------------------------------------------------------------

def test_dig_through_globaldns_gives_what_unbound_gives(server_factory, tmp_path):
    records = ["www.example.test. 300 IN A 192.0.2.1", "www.example.test. 300 IN A 192.0.2.2",
               "alias.example.test. 300 IN CNAME www.example.test.",
               'txt.example.test. 300 IN TXT "hello world"',
               "www.example.test. 300 IN AAAA 2001:db8::1"]
    with unbound(tmp_path, records) as ub:
        srv = server_factory(forward_yaml((".", [ub])))
        for args in (["www.example.test"], ["www.example.test", "AAAA"],
                     ["txt.example.test", "TXT"], ["nx.example.test"],
                     ["www.example.test", "MX"], ["alias.example.test"]):
            ours = dig(srv.port, "+noall", "+answer", "+authority", "+comments", *args)
            theirs = dig(ub.port, "+noall", "+answer", "+authority", "+comments", *args)
            assert _status(ours) == _status(theirs)
            assert _records(ours) == _records(theirs), args
        assert sorted(dig(srv.port, "+short", "www.example.test").split()) == [
            "192.0.2.1", "192.0.2.2"]


def _status(dig_output: str) -> str:
    return dig_output.split("status: ")[1].split(",")[0]


def _records(dig_output: str) -> list[str]:
    return sorted(" ".join(line.split()) for line in dig_output.splitlines()
                  if line and not line.startswith(";"))


def test_concurrent_clients_through_unbound_all_get_answers(server_factory, tmp_path):
    records = [f"h{i}.example.test. 300 IN A 192.0.2.{i}" for i in range(1, 41)]
    with unbound(tmp_path, records) as ub:
        srv = server_factory(forward_yaml((".", [ub])))
        results: dict[int, list[str]] = {}

        def one(i: int) -> None:
            results[i] = addresses(ask(srv.port, f"h{i}.example.test"))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(1, 41)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results == {i: [f"192.0.2.{i}"] for i in range(1, 41)}


# -- configuration -----------------------------------------------------------------------------

def test_the_issue_example_config_is_accepted(tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# generated\nsearch example\nnameserver 10.0.0.2\nnameserver fd00::53\n")
    config = parse_text(f"""
forward:
  - zone: example.internal
    upstreams: [10.0.0.53:53]
  - zone: "."
    upstreams: [{resolv}]
    policy: random
    timeout: 2s
    max_fails: 2
    probe_interval: 0.5s
cache:
  capacity: 10000
  min_ttl: 0s
  max_ttl: 1h
  prefetch: true
  serve_stale: 1h
""", "my.yaml")
    internal, root = config.forward
    assert internal.zone == "example.internal"
    assert [str(u) for u in internal.upstreams] == ["10.0.0.53:53"]
    assert root.zone == "" and [str(u) for u in root.upstreams] == ["10.0.0.2:53",
                                                                    "[fd00::53]:53"]
    assert (root.timeout, root.max_fails, root.probe_interval) == (2.0, 2, 0.5)
    assert (config.cache.max_ttl, config.cache.serve_stale) == (3600, 3600)


@pytest.mark.parametrize(("upstream", "expected"), [
    ("10.0.0.1", "10.0.0.1:53"), ("10.0.0.1:5300", "10.0.0.1:5300"),
    ("[::1]:5300", "[::1]:5300"), ("fd00::1", "[fd00::1]:53"), ("[fd00::1]", "[fd00::1]:53")])
def test_upstream_addresses(upstream, expected):
    config = parse_text(f"forward: [{{zone: ., upstreams: ['{upstream}']}}]", "my.yaml")
    assert [str(u) for u in config.forward[0].upstreams] == [expected]


@pytest.mark.parametrize(("text", "error"), [
    ("forward: [{zone: ., upstreams: [dns.google]}]",
     "my.yaml: forward[0].upstreams[0]: 'dns.google' is not IP[:PORT]"),
    ("forward: [{zone: ., upstreams: ['10.0.0.1:99999']}]",
     "my.yaml: forward[0].upstreams[0]: '10.0.0.1:99999': port '99999' is out of range"),
    ("forward: [{zone: ., upstreams: [/nonexistent/resolv.conf]}]",
     "my.yaml: forward[0].upstreams[0]: cannot read /nonexistent/resolv.conf"),
    ("forward: [{zone: .}]", "my.yaml: forward[0].upstreams: is required"),
    ("forward: [{zone: ., upstreams: []}]",
     "my.yaml: forward[0].upstreams: must list at least one upstream"),
    ("forward: [{upstreams: [10.0.0.1]}]", "my.yaml: forward[0].zone: is required"),
    ("forward: [{zone: ., upstreams: [10.0.0.1], policy: fastest}]",
     "my.yaml: forward[0].policy: 'fastest' is not one of: random, round_robin, sequential"),
    ("forward: [{zone: ., upstreams: [10.0.0.1], timeout: 0s}]",
     "my.yaml: forward[0].timeout: '0s' must be more than zero"),
    ("forward: [{zone: ., upstreams: [10.0.0.1], retries: 2}]",
     "my.yaml: forward[0].retries: unknown key"),
    ("forward: [{zone: foo.global, upstreams: [10.0.0.1]}]",
     "my.yaml: forward[0].zone: 'foo.global' is inside the served zone 'global'"),
    ("forward: [{zone: ., upstreams: [10.0.0.1]}, {zone: ., upstreams: [10.0.0.2]}]",
     "my.yaml: forward[1].zone: zone '.' is listed twice"),
    ("dns: {listen: 127.0.0.1:5353}\nforward: [{zone: ., upstreams: ['127.0.0.1:5353']}]",
     "my.yaml: forward[0].upstreams[0]: 127.0.0.1:5353 is our own listen address"),
    ("cache: {capacity: -1}", "my.yaml: cache.capacity: -1 is out of range"),
    ("cache: {min_ttl: 2h, max_ttl: 1h}", "my.yaml: cache.min_ttl: 7200s is more than max_ttl"),
    ("cache: {size: 10}", "my.yaml: cache.size: unknown key"),
])
def test_forward_and_cache_config_errors_name_the_key(text, error):
    with pytest.raises(ConfigError) as failure:
        parse_text(text, "my.yaml")
    assert any(line.startswith(error) for line in failure.value.errors), failure.value.errors


def test_a_resolv_conf_without_nameservers_is_an_error(tmp_path):
    empty = tmp_path / "resolv.conf"
    empty.write_text("search example\n")
    with pytest.raises(ConfigError) as failure:
        parse_text(f"forward: [{{zone: ., upstreams: [{empty}]}}]", "my.yaml")
    assert failure.value.errors == [
        f"my.yaml: forward[0].upstreams[0]: {empty} has no nameserver lines"]


def test_a_reload_with_the_same_forwarding_keeps_the_warm_cache(server_factory, upstream):
    text = forward_yaml((".", [upstream]))
    srv = server_factory(text)
    ask(srv.port, "www.example.test")
    cache, forward = srv.app.runtime.chain.cache, srv.app.runtime.chain.forward
    config = parse_text(f"dns: {{listen: 127.0.0.1:{srv.port}}}\n" + text, "test.yaml")
    srv.call(srv.app.runtime.apply, config)
    assert srv.app.runtime.chain.cache is cache and srv.app.runtime.chain.forward is forward
    ask(srv.port, "www.example.test")
    assert upstream.count("www.example.test") == 1


def test_every_yaml_example_in_the_docs_is_accepted(tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.2\n")
    docs = (Path(__file__).resolve().parent.parent / "docs" / "forwarding.md").read_text()
    examples = re.findall(r"```yaml\n(.*?)```", docs, re.S)
    assert len(examples) == 3
    configs = [parse_text(example.replace("/etc/resolv.conf", str(resolv)),
                          "docs/forwarding.md") for example in examples]
    assert configs[2].acl == AclConfig()  # the acl example spells out the defaults


def test_a_mangled_upstream_answer_never_breaks_the_relay():
    # The relay walks upstream bytes itself; whatever an upstream sends, it must either
    # split them into whole records or raise MalformedReply, nothing else.
    answer = dnslib.DNSRecord.question("www.example.test")
    reply = answer.reply()
    for i in range(6):
        reply.add_answer(*dnslib.RR.fromZone(f"www.example.test. 300 IN A 192.0.2.{i}"))
    reply.add_auth(*dnslib.RR.fromZone(
        "example.test. 60 IN SOA ns.example.test. h.example.test. 1 2 3 4 5"))
    reply.add_ar(dnslib.EDNS0(udp_len=1232))
    wire = bytes(reply.pack())
    qend = len(bytes(answer.pack()))  # header and question
    whole = relayed(wire, qend)
    assert (whole.an, whole.ns, whole.ar) == (6, 1, 0)
    rng = random.Random(5)
    for _ in range(3000):
        mangled = bytearray(wire)
        for _ in range(rng.randint(1, 4)):
            mangled[rng.randrange(qend, len(mangled))] = rng.randrange(256)
        mangled = mangled[: rng.randint(qend, len(mangled))]
        try:
            body = relayed(bytes(mangled), qend)
        except MalformedReply:
            continue
        assert len(body.ttls) == len(body.ttl_offsets) == body.an + body.ns + body.ar
        assert body.prefix(len(body.data)) == (body.data, body.an, body.ns, body.ar)
