"""Hostile upstream answers (issue 10, "Forwarded answers"): a UDP answer larger than we
advertise, compression pointers that point forward, into the header, into a TTL or in a
loop, broken names inside RDATA, and records of other names next to the real ones. Upstreams on
loopback that the tests control; replies read with dnspython (a strict client) and dig."""

from __future__ import annotations

import dns.edns
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from tests.helpers.dns import addresses, ask, dig, make_query, rcode, udp_raw
from tests.helpers.http import scrape, total
from tests.helpers.upstreams import EXAMPLE_RECORDS, HOSTILE, fake_upstreams, forward_yaml


@pytest.fixture
def upstream():
    with fake_upstreams() as make:
        yield make().add(*EXAMPLE_RECORDS)


def strict(port: int, name: str, qtype: str = "A", **kw: object) -> dns.message.Message:
    """Ask over UDP and read the reply with dnspython, which refuses a broken message."""
    raw = udp_raw(port, make_query(name, qtype, edns=1232, **kw))  # type: ignore[arg-type]
    assert raw is not None, f"no answer for {name}"
    return dns.message.from_wire(raw)


def records(reply: dns.message.Message) -> set[str]:
    """Every record of the answer, authority and additional sections, as text."""
    return {f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rdata}"
            for section in (reply.answer, reply.authority, reply.additional)
            for rrset in section for rdata in rrset}


def extended_errors(reply: dns.message.Message) -> list[tuple[int, str]]:
    return [(o.code, o.text or "") for o in reply.options if isinstance(o, dns.edns.EDEOption)]


# -- size ------------------------------------------------------------------------------------

def test_a_udp_answer_larger_than_we_advertise_is_dropped_and_asked_over_tcp(server_factory,
                                                                           upstream):
    upstream.mode = "oversized"  # UDP: 80 records 6.6.6.x, no TC; TCP: the real answer
    srv = server_factory(forward_yaml((".", [upstream])))
    reply = ask(srv.port, "www.example.test")
    assert rcode(reply) == "NOERROR"
    assert addresses(reply) == ["192.0.2.1"]
    assert [s.transport for s in upstream.queries] == ["udp", "tcp"]
    assert total(scrape(srv), "globaldns_forward_rejected_replies_total",
                 reason="oversized") == 1


# -- the wire format -------------------------------------------------------------------------

@pytest.mark.parametrize("mode", sorted(HOSTILE))
def test_an_answer_with_a_broken_name_is_servfail_with_ede_and_never_relayed(server_factory,
                                                                            upstream, mode):
    upstream.mode = mode
    srv = server_factory(forward_yaml((".", [upstream]), tries=1))
    reply = strict(srv.port, "www.example.test")
    assert dns.rcode.to_text(reply.rcode()) == "SERVFAIL"
    assert not records(reply)
    [(code, text)] = extended_errors(reply)
    assert code == 22 and "malformed answer" in text
    # Not cached either: the next query asks the upstream again.
    strict(srv.port, "www.example.test")
    assert upstream.count("www.example.test") == 2
    assert total(scrape(srv), "globaldns_forward_rejected_replies_total",
                 reason="malformed") == 2


def test_dig_gets_servfail_and_the_reason_for_a_pointer_loop(server_factory, upstream):
    upstream.mode = "pointer_loop"
    srv = server_factory(forward_yaml((".", [upstream]), tries=1))
    out = dig(srv.port, "www.example.test", "A")
    assert "status: SERVFAIL" in out
    assert "malformed answer: a compression pointer to no name read before" in out
    assert "malformed message" not in out.lower()


def test_a_good_upstream_after_a_hostile_one_gives_the_answer(server_factory):
    with fake_upstreams() as make:
        hostile = make().add(*EXAMPLE_RECORDS)
        hostile.mode = "header_pointer"
        good = make().add(*EXAMPLE_RECORDS)
        srv = server_factory(forward_yaml((".", [hostile, good]), policy="sequential"))
        reply = strict(srv.port, "www.example.test")
        assert dns.rcode.to_text(reply.rcode()) == "NOERROR"
        assert records(reply) == {"www.example.test. A 192.0.2.1"}
        assert hostile.count("www.example.test") == 1 and good.count("www.example.test") == 1


# -- bailiwick -------------------------------------------------------------------------------

POISON = {
    "answer": [("answer", "www.bank.test. 300 IN A 6.6.6.6")],
    "authority": [("authority", "bank.test. 300 IN NS ns.evil.test."),
                  ("authority", "bank.test. 300 IN SOA ns.evil.test. h.evil.test. 1 2 3 4 5")],
    "additional": [("additional", "www.bank.test. 300 IN A 6.6.6.6")],
    # Between records that stay: the answer is encoded again, not sliced.
    "between": [("answer", "www.bank.test. 300 IN A 6.6.6.6"),
                ("authority", "example.test. 300 IN NS ns.example.test."),
                ("additional", "ns.example.test. 300 IN A 192.0.2.53")],
}
KEPT = {"between": {"example.test. NS ns.example.test.", "ns.example.test. A 192.0.2.53"}}


@pytest.mark.parametrize("where", sorted(POISON))
def test_records_of_other_names_are_stripped_and_never_cached(server_factory, upstream, where):
    upstream.poison = POISON[where]
    srv = server_factory(forward_yaml((".", [upstream])))
    first = strict(srv.port, "www.example.test")
    cached = strict(srv.port, "www.example.test")
    assert upstream.count("www.example.test") == 1  # the second came from the cache
    want = {"www.example.test. A 192.0.2.1", *KEPT.get(where, ())}
    assert records(first) == records(cached) == want
    assert total(scrape(srv), "globaldns_forward_stripped_records_total") == \
        (1 if where in ("answer", "additional", "between") else 2)


def test_a_negative_answer_keeps_its_soa_and_loses_another_zones(server_factory, upstream):
    upstream.poison = [("authority",
                        "bank.test. 300 IN SOA ns.evil.test. h.evil.test. 1 2 3 4 5")]
    srv = server_factory(forward_yaml((".", [upstream])))
    reply = strict(srv.port, "missing.example.test")
    assert dns.rcode.to_text(reply.rcode()) == "NXDOMAIN"
    [soa] = reply.authority
    assert str(soa.name) == "example.test."
    strict(srv.port, "missing.example.test")
    assert upstream.count("missing.example.test") == 1  # cached, for its SOA's MINIMUM


def test_a_cname_chain_into_another_zone_is_kept_and_what_is_off_it_stripped(server_factory,
                                                                             upstream):
    upstream.add("alias.example.test. 300 IN CNAME www.cdn.test.")
    upstream.records[("alias.example.test", 1)] = upstream.records.pop(("alias.example.test", 5))
    upstream.poison = [("answer", "www.cdn.test. 300 IN A 192.0.2.7"),
                       ("answer", "img.cdn.test. 300 IN A 6.6.6.6")]
    srv = server_factory(forward_yaml((".", [upstream])))
    reply = strict(srv.port, "alias.example.test")
    assert records(reply) == {"alias.example.test. CNAME www.cdn.test.",
                              "www.cdn.test. A 192.0.2.7"}


def test_a_tsig_record_from_the_upstream_is_stripped(server_factory, upstream):
    upstream.mode = "meta_record"  # TSIG and TKEY belong to one hop (RFC 6895 3.1)
    srv = server_factory(forward_yaml((".", [upstream])))
    reply = strict(srv.port, "www.example.test")
    assert records(reply) == {"www.example.test. A 192.0.2.1"}
