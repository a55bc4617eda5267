"""Response rate limiting over real sockets: bursts from one source address (127.0.0.x are
distinct clients), the server's clock held still and moved by the test."""

from __future__ import annotations

import socket
import struct

import dns.edns
import dns.flags
import dns.message
import dns.query
import pytest

from globaldns.config import parse_text
from globaldns.config.parse import ConfigError
from tests.helpers.dns import ask, make_query, rcode, tcp_raw, udp_raw
from tests.helpers.http import get_json, scrape, value

CONFIG = """
clusters: [{name: east, locality: us-east1}]
services:
  - name: api
    namespace: prod
    endpoints:
      - {address: 10.7.0.1, cluster: east}
rate_limit: {responses_per_second: 5, errors_per_second: 2, nxdomains_per_second: 3,
             slip: 2, window: 15s, ipv4_prefix: 32, exempt: [127.0.0.9/32]}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limited(server_factory, config=CONFIG):  # type: ignore[no-untyped-def]
    s = server_factory(config)
    clock = Clock()
    s.call(setattr, s.app.runtime.server.rate_limit, "clock", clock)
    return s, clock


def burst(port: int, queries: list[bytes], *, source: str) -> dict[int, bytes]:
    """Send every query from one socket at once; read until the reply to the last one
    (a slip, so the burst must end on one): UDP over loopback keeps the order, so every
    query has been answered or dropped by then. Replies by query ID."""
    replies: dict[int, bytes] = {}
    last = struct.unpack("!H", queries[-1][:2])[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(5)
        for query in queries:
            s.sendto(query, ("127.0.0.1", port))
        while last not in replies:
            data = s.recv(65535)
            replies[struct.unpack("!H", data[:2])[0]] = data
    return replies


def same(name: str, n: int, qtype: str = "A") -> list[bytes]:
    return [bytes(make_query(name, qtype, qid=i)) for i in range(1, n + 1)]


def counts(replies: dict[int, bytes]) -> tuple[int, int]:
    """(full answers, empty TC replies)."""
    full = sum(1 for r in replies.values() if not r[2] & 0x02 and r[7])
    tc = sum(1 for r in replies.values() if r[2] & 0x02 and not r[7])
    assert full + tc == len(replies)
    return full, tc


def test_past_the_rate_every_second_reply_slips_with_tc_and_the_rest_are_dropped(
        server_factory):
    s, _ = limited(server_factory)
    replies = burst(s.port, same("api.prod.global", 25), source="127.0.0.2")
    # 5 answered (a second's credit), 20 limited: every 2nd slips (TC, empty), 10 dropped.
    assert counts(replies) == (5, 10)
    stats = s.app.runtime.server.stats
    assert (stats.rate_limit_dropped, stats.rate_limit_slipped) == (10, 10)
    tc = next(r for r in replies.values() if r[2] & 0x02)
    assert tc[4:6] == b"\0\x01" and rcode_of(tc) == 0  # the question, NOERROR, no records
    # Another client (its own /32 here) is answered meanwhile.
    assert rcode(ask(s.port, "api.prod.global", source="127.0.0.3")) == "NOERROR"


def rcode_of(reply: bytes) -> int:
    return reply[3] & 0xF


def test_wire_cache_hits_are_rate_limited_too(server_factory):
    s, _ = limited(server_factory)
    query = same("api.prod.global", 1)[0]
    # The entry is made by another client of the same class; every query of the burst
    # is then answered from the wire cache.
    udp_raw(s.port, query, source="127.0.0.4")
    assert s.app.runtime.server.wire.size == 1
    queries = [struct.pack("!H", i) + query[2:] for i in range(1, 26)]
    replies = burst(s.port, queries, source="127.0.0.2")
    assert counts(replies) == (5, 10)
    for qid, raw in replies.items():  # whole messages: their ID, the question, TC or not
        reply = dns.message.from_wire(raw)
        assert reply.id == qid and str(reply.question[0].name) == "api.prod.global."


def test_a_slip_from_the_wire_cache_to_an_edns_query_keeps_its_opt_record(server_factory):
    s, _ = limited(server_factory)
    queries = [bytes(make_query("api.prod.global", edns=1232, do=True, qid=i))
               for i in range(1, 26)]
    replies = burst(s.port, queries, source="127.0.0.2")
    assert counts(replies) == (5, 10)
    for raw in replies.values():
        reply = dns.message.from_wire(raw)
        assert reply.edns == 0 and reply.ednsflags & dns.flags.DO


def test_time_brings_the_credit_back_after_the_window(server_factory):
    s, clock = limited(server_factory)
    assert counts(burst(s.port, same("api.prod.global", 25), source="127.0.0.2")) == (5, 10)
    clock.now += 1  # a flooding client owes up to `window` seconds: still limited
    assert counts(burst(s.port, same("api.prod.global", 2), source="127.0.0.2")) == (0, 1)
    clock.now += 16
    assert counts(burst(s.port, same("api.prod.global", 3), source="127.0.0.2"))[0] == 3


def test_tcp_is_never_limited(server_factory):
    s, _ = limited(server_factory.__call__, CONFIG.replace("[127.0.0.9/32]", "[]"))
    replies = tcp_raw(s.port, same("api.prod.global", 25))
    assert len(replies) == 25 and all(r[7] == 1 and not r[2] & 0x02 for r in replies)
    assert s.app.runtime.server.stats.rate_limit_dropped == 0


def test_an_exempt_client_is_never_limited(server_factory):
    s, _ = limited(server_factory)
    assert counts(burst(s.port, same("api.prod.global", 26), source="127.0.0.9")) == (26, 0)


def test_the_default_exempts_loopback_clients(server_factory):
    s, _ = limited(server_factory, CONFIG.replace(", exempt: [127.0.0.9/32]", ""))
    assert counts(burst(s.port, same("api.prod.global", 26), source="127.0.0.2")) == (26, 0)


def test_nxdomains_are_counted_per_zone_and_errors_per_class(server_factory):
    s, _ = limited(server_factory)
    # Random names under one zone share one account (3 a second): a random-subdomain
    # flood is limited although no name repeats.
    names = [bytes(make_query(f"r{i}.prod.global", qid=i)) for i in range(1, 12)]
    replies = burst(s.port, names, source="127.0.0.2")
    assert sum(1 for r in replies.values() if rcode_of(r) == 3 and not r[2] & 0x02) == 3
    # REFUSED (outside our zones, no forwarding) is an error: 2 a second.
    queries = [bytes(make_query(f"x{i}.example.org", qid=i)) for i in range(1, 9)]
    replies = burst(s.port, queries, source="127.0.0.5")
    assert sum(1 for r in replies.values() if rcode_of(r) == 5 and not r[2] & 0x02) == 2


def cookie_query(qid: int, cookie: bytes) -> bytes:
    query = dns.message.make_query("api.prod.global", "A", use_edns=0,
                                   options=[dns.edns.CookieOption(cookie[:8], cookie[8:])])
    query.id = qid
    return query.to_wire()


def test_a_valid_server_cookie_is_never_limited(server_factory):
    s, _ = limited(server_factory)
    first = dns.message.from_wire(udp_raw(s.port, cookie_query(1, b"\x22" * 8),
                                          source="127.0.0.2"))
    option = next(o for o in first.options if o.otype == dns.edns.COOKIE)
    good = option.client + option.server
    replies = burst(s.port, [cookie_query(i, good) for i in range(1, 31)], source="127.0.0.2")
    assert len(replies) == 30 and all(not r[2] & 0x02 and r[7] for r in replies.values())
    assert s.app.runtime.server.stats.rate_limit_dropped == 0


def test_a_limited_client_that_sent_a_cookie_slips_with_badcookie_and_a_fresh_one(
        server_factory):
    s, _ = limited(server_factory)
    replies = burst(s.port, [cookie_query(i, b"\x33" * 8) for i in range(1, 26)],
                    source="127.0.0.2")
    slipped = [dns.message.from_wire(r) for r in replies.values() if not r[7]]
    assert len(slipped) == 10
    assert {m.rcode() for m in slipped} == {23}  # BADCOOKIE (RFC 7873 8)
    fresh = next(o for o in slipped[0].options if o.otype == dns.edns.COOKIE)
    # RFC 7873 5.4: the client retries with the cookie, and is answered.
    retry = dns.message.from_wire(udp_raw(s.port, cookie_query(99, fresh.client + fresh.server),
                                          source="127.0.0.2"))
    assert retry.rcode() == 0 and len(retry.answer) == 1


def test_explain_says_whether_the_asking_client_is_limited(server_factory):
    s, _ = limited(server_factory, CONFIG + "acl: {allow_debug: [127.0.0.0/8]}\n")

    def explained(source: str) -> str:
        reply = ask(s.port, "api.prod.global", "TXT", qclass="CH", source=source)
        return " ".join(str(rr.rdata) for rr in reply.rr)

    assert "client 127.0.0.2/32 is not limited" in explained("127.0.0.2")
    burst(s.port, same("api.prod.global", 25), source="127.0.0.2")
    text = explained("127.0.0.2")
    assert "client 127.0.0.2/32 is being limited: answers for api.prod.global type 1" in text
    assert "127.0.0.9 (exempt), never limited" in explained("127.0.0.9")


def test_debug_explain_and_metrics_show_the_limiting(server_factory):
    s, _ = limited(server_factory)
    burst(s.port, same("api.prod.global", 25), source="127.0.0.2")
    status, report = get_json(s, "/debug/explain?name=api.prod.global&client=127.0.0.2")
    assert status == 200
    assert "note rate limit: client 127.0.0.2/32 is being limited: answers for api.prod.global " \
        "type 1" in report["lines"]
    status, report = get_json(s, "/debug/explain?name=api.prod.global&client=127.0.0.3")
    assert "rate limit: client 127.0.0.3/32 is not limited" in report["notes"]
    assert get_json(s, "/debug/explain?name=api.prod.global&client=nonsense")[0] == 400
    samples = scrape(s)
    assert value(samples, "globaldns_rate_limit_dropped_total") == 10
    assert value(samples, "globaldns_rate_limit_slipped_total") == 10


def test_the_accounts_are_bounded_by_table_size(server_factory):
    s, _ = limited(server_factory, CONFIG.replace("ipv4_prefix: 32", "ipv4_prefix: 32, "
                                                  "table_size: 8"))
    for i in range(10, 40):  # 30 clients: 30 accounts made, the oldest evicted
        assert udp_raw(s.port, bytes(make_query("api.prod.global")), source=f"127.0.0.{i}")
    accounts = s.app.runtime.server.rate_limit.accounts
    assert len(accounts) == 8
    assert {key[0][3] for key in accounts} == set(range(32, 40))


@pytest.mark.parametrize(("client", "account"), [
    ("10.8.1.7", "10.8.1.0/24"),
    ("2001:db8:1:2ff:3::1", "2001:db8:1:200::/56"),
    ("::1", "::1 (exempt)"),
])
def test_clients_are_accounted_per_prefix(client, account):
    from globaldns.dns.rate_limit import RateLimit
    from globaldns.dns.stats import Stats

    base = parse_text("rate_limit: {}\n", "t.yaml").rate_limit
    assert base is not None
    limit = RateLimit(responses=1, errors=1, nxdomains=1, slip=2, window=15,
                      ipv4_prefix=base.ipv4_prefix, ipv6_prefix=base.ipv6_prefix,
                      exempt=base.exempt, table_size=base.table_size, stats=Stats())
    assert limit.network(client) == account


def test_without_the_key_nothing_is_limited(server_factory):
    s = server_factory(CONFIG.split("rate_limit:")[0])
    assert s.app.runtime.server.rate_limit is None
    assert counts(burst(s.port, same("api.prod.global", 26), source="127.0.0.2")) == (26, 0)


@pytest.mark.parametrize(("text", "problem"), [
    ("rate_limit: {slip: -1}", "rate_limit.slip"),
    ("rate_limit: {window: 2h}", "rate_limit.window"),
    ("rate_limit: {exempt: [10.1.2.3/8]}", "rate_limit.exempt[0]"),
    ("rate_limit: {ipv6_prefix: 129}", "rate_limit.ipv6_prefix"),
    ("rate_limit: {burst: 3}", "rate_limit"),
    ("cookies: {secret_file: /nonexistent/secret}", "cookies.secret_file"),
])
def test_bad_rate_limit_and_cookie_settings_name_their_key(text, problem):
    with pytest.raises(ConfigError) as caught:
        parse_text(text + "\n", "t.yaml")
    assert problem in str(caught.value)
