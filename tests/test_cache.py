"""The cache of forwarded answers (issue 5), over real sockets: the server and its
upstreams are real, only the cache's clock is moved by the test (the upstream timeouts
stay real)."""

from __future__ import annotations

import socket
import threading

import dnslib
import pytest

from tests.helpers.clock import Clock
from tests.helpers.dns import addresses, ask, dig, ede, make_query, rcode, udp_raw
from tests.helpers.server import EXAMPLE, free_port
from tests.helpers.upstreams import EXAMPLE_RECORDS, fake_upstreams, forward_yaml, unbound
from tests.helpers.wait import wait_until

QT = dnslib.QTYPE


@pytest.fixture
def upstreams():
    with fake_upstreams() as make:
        yield make


@pytest.fixture
def upstream(upstreams):
    return upstreams().add(*EXAMPLE_RECORDS)


def cached_server(server_factory, upstream, *, cache: str = "", **options):
    """A forwarding server whose cache runs on a Clock the test moves."""
    text = forward_yaml((".", [upstream]), **options)
    if cache:
        text += f"cache: {{{cache}}}\n"
    srv = server_factory(text)
    clock = Clock()
    srv.call(setattr, srv.app.runtime.chain.cache, "clock", clock)
    return srv, clock


def ttls(reply: dnslib.DNSRecord) -> list[int]:
    return [rr.ttl for rr in reply.rr + reply.auth]


def test_a_cached_answer_counts_its_ttl_down(server_factory, upstream):
    srv, clock = cached_server(server_factory, upstream)
    assert ttls(ask(srv.port, "www.example.test")) == [300]
    clock.advance(7.4)
    assert ttls(ask(srv.port, "www.example.test")) == [293]
    clock.advance(0.5)  # 7.9 s: the TTL counts whole seconds
    assert ttls(ask(srv.port, "www.example.test")) == [293]
    clock.advance(0.2)
    assert ttls(ask(srv.port, "www.example.test")) == [292]
    assert upstream.count("www.example.test") == 1
    cache = srv.app.runtime.chain.cache
    assert (cache.hits, cache.misses, cache.entries) == (3, 1, 1)


def test_dig_sees_the_ttl_count_down_in_real_time(server_factory, tmp_path):
    with unbound(tmp_path, ["www.example.test. 300 IN A 192.0.2.1"]) as ub:
        srv = server_factory(forward_yaml((".", [ub])))
        first = dig(srv.port, "+noall", "+answer", "www.example.test").split()
        # unbound's local-data always says 300: a lower TTL can only come from our cache,
        # once a second has passed on the real clock.
        second = wait_until(lambda: (
            answer := dig(srv.port, "+noall", "+answer", "www.example.test").split()
        ) and int(answer[1]) < 300 and answer)
        assert first[1] == "300" and second[4] == "192.0.2.1"


def test_an_expired_answer_is_asked_for_again(server_factory, upstream):
    srv, clock = cached_server(server_factory, upstream)
    ask(srv.port, "www.example.test")
    clock.advance(300)
    assert ttls(ask(srv.port, "www.example.test")) == [300]
    assert upstream.count("www.example.test") == 2


def test_nxdomain_is_cached_for_the_soa_minimum(server_factory, upstreams):
    # RFC 2308 5: min(SOA TTL 3600, SOA MINIMUM 60).
    upstream = upstreams(negative_ttl=60).add(*EXAMPLE_RECORDS)
    srv, clock = cached_server(server_factory, upstream)
    reply = ask(srv.port, "nx.example.test")
    assert rcode(reply) == "NXDOMAIN" and ttls(reply) == [60]
    clock.advance(59)
    reply = ask(srv.port, "nx.example.test")
    assert rcode(reply) == "NXDOMAIN" and ttls(reply) == [1]
    assert upstream.count("nx.example.test") == 1
    clock.advance(1)
    ask(srv.port, "nx.example.test")
    assert upstream.count("nx.example.test") == 2


def test_nodata_is_cached_for_the_soa_minimum(server_factory, upstreams):
    upstream = upstreams(negative_ttl=30).add(*EXAMPLE_RECORDS)
    srv, clock = cached_server(server_factory, upstream)
    reply = ask(srv.port, "mail.example.test", "AAAA")
    assert rcode(reply) == "NOERROR" and not reply.rr and ttls(reply) == [30]
    clock.advance(10)
    assert ttls(ask(srv.port, "mail.example.test", "AAAA")) == [20]
    assert upstream.count("mail.example.test") == 1


def test_max_ttl_caps_the_cache_lifetime_and_the_ttls_sent(server_factory, upstream):
    srv, clock = cached_server(server_factory, upstream, cache="max_ttl: 100s")
    assert ttls(ask(srv.port, "www.example.test")) == [100]
    clock.advance(100)
    ask(srv.port, "www.example.test")
    assert upstream.count("www.example.test") == 2


def test_min_ttl_keeps_a_zero_ttl_answer(server_factory, upstream):
    upstream.add("zero.example.test. 0 IN A 192.0.2.9")
    srv, clock = cached_server(server_factory, upstream, cache="min_ttl: 30s")
    assert ttls(ask(srv.port, "zero.example.test")) == [30]
    clock.advance(29)
    assert ttls(ask(srv.port, "zero.example.test")) == [1]
    assert upstream.count("zero.example.test") == 1


def test_a_zero_ttl_answer_is_not_cached_by_default(server_factory, upstream):
    upstream.add("zero.example.test. 0 IN A 192.0.2.9")
    srv, _clock = cached_server(server_factory, upstream)
    ask(srv.port, "zero.example.test")
    ask(srv.port, "zero.example.test")
    assert upstream.count("zero.example.test") == 2


def test_the_key_is_name_type_class_and_the_do_ad_cd_bits(server_factory, upstream):
    srv, _clock = cached_server(server_factory, upstream)
    ask(srv.port, "www.example.test")
    ask(srv.port, "www.example.test", "AAAA")
    ask(srv.port, "www.example.test", edns=1232, do=True)
    ask(srv.port, "www.example.test", cd=True)
    assert upstream.count("www.example.test") == 4
    # ...and not the name's case, the EDNS size or the RD bit.
    for variant in ({"name": "WWW.example.TEST"}, {"edns": 4096}, {"rd": False}):
        ask(srv.port, variant.pop("name", "www.example.test"), **variant)
    assert upstream.count("www.example.test") == 4


def test_a_cache_hit_echoes_the_clients_question_casing(server_factory, upstream):
    srv, _clock = cached_server(server_factory, upstream)
    ask(srv.port, "www.example.test")
    query = make_query("wWw.EXAMPLE.test")
    raw = udp_raw(srv.port, query)
    assert raw is not None and raw[12 : len(query)] == query[12:]
    assert addresses(dnslib.DNSRecord.parse(raw)) == ["192.0.2.1"]
    assert srv.app.runtime.chain.cache.hits == 1


def test_the_least_recently_used_entry_is_evicted_at_capacity(server_factory, upstream):
    upstream.add("a.example.test. 300 IN A 192.0.2.10", "b.example.test. 300 IN A 192.0.2.11",
                 "c.example.test. 300 IN A 192.0.2.12")
    srv, _clock = cached_server(server_factory, upstream, cache="capacity: 2")
    ask(srv.port, "a.example.test")
    ask(srv.port, "b.example.test")
    ask(srv.port, "a.example.test")  # a is now the most recently used
    ask(srv.port, "c.example.test")  # evicts b
    cache = srv.app.runtime.chain.cache
    assert (cache.entries, cache.evictions) == (2, 1)
    ask(srv.port, "a.example.test")
    assert upstream.count("a.example.test") == 1
    ask(srv.port, "b.example.test")
    assert upstream.count("b.example.test") == 2
    assert (cache.entries, cache.evictions) == (2, 2)


def test_a_popular_entry_is_prefetched_before_it_expires(server_factory, upstream):
    upstream.add("hot.example.test. 100 IN A 192.0.2.50")
    srv, clock = cached_server(server_factory, upstream)
    for _ in range(3):  # a miss and two hits: popular
        ask(srv.port, "hot.example.test")
    clock.advance(95)  # less than 10 % of the TTL left
    assert ttls(ask(srv.port, "hot.example.test")) == [5]  # served from the cache at once...
    cache = srv.app.runtime.chain.cache
    assert cache.prefetches == 1
    assert wait_until(lambda: upstream.count("hot.example.test") == 2  # ...and refreshed
                      and not cache.pending)
    clock.advance(10)  # past the first answer's expiry: the prefetched one is still fresh
    assert ttls(ask(srv.port, "hot.example.test")) == [90]
    assert upstream.count("hot.example.test") == 2


def test_an_unpopular_entry_is_not_prefetched(server_factory, upstream):
    upstream.add("cold.example.test. 100 IN A 192.0.2.51")
    srv, clock = cached_server(server_factory, upstream)
    ask(srv.port, "cold.example.test")
    clock.advance(95)
    ask(srv.port, "cold.example.test")
    # A prefetch is counted when the answer that triggers it is sent (see the hot case).
    assert upstream.count("cold.example.test") == 1 and srv.app.runtime.chain.cache.prefetches == 0


def test_prefetch_can_be_turned_off(server_factory, upstream):
    upstream.add("hot.example.test. 100 IN A 192.0.2.50")
    srv, clock = cached_server(server_factory, upstream, cache="prefetch: false")
    for _ in range(3):
        ask(srv.port, "hot.example.test")
    clock.advance(95)
    ask(srv.port, "hot.example.test")
    assert upstream.count("hot.example.test") == 1 and srv.app.runtime.chain.cache.prefetches == 0


def test_an_expired_answer_is_served_stale_when_the_upstreams_fail(server_factory, upstream):
    # RFC 8767: TTL 30, EDE 3, for up to serve_stale after expiry.
    srv, clock = cached_server(server_factory, upstream, timeout="500ms", tries=1)
    ask(srv.port, "www.example.test")
    upstream.mode = "silent"
    clock.advance(300 + 1800)
    reply = ask(srv.port, "www.example.test", edns=1232)
    assert rcode(reply) == "NOERROR" and addresses(reply) == ["192.0.2.1"]
    assert ttls(reply) == [30]
    assert (3, "Stale Answer") in ede(reply)
    assert upstream.count("www.example.test") == 2
    # RFC 8767 4: after a failed refresh, the stale answer comes at once for a while.
    assert addresses(ask(srv.port, "www.example.test")) == ["192.0.2.1"]
    assert upstream.count("www.example.test") == 2  # the upstream is not asked again
    assert srv.app.runtime.chain.cache.stale_served == 2


def test_dig_shows_the_stale_answer_and_its_extended_error(server_factory, upstream):
    srv, clock = cached_server(server_factory, upstream, timeout="200ms", tries=1)
    dig(srv.port, "www.example.test")  # dig sets AD, which is part of the key
    upstream.stop()  # nobody listens any more
    clock.advance(400)
    out = dig(srv.port, "www.example.test")
    assert "status: NOERROR" in out and "192.0.2.1" in out
    assert "EDE: 3 (Stale Answer)" in out


def test_nothing_is_served_stale_past_the_serve_stale_window(server_factory, upstream):
    srv, clock = cached_server(server_factory, upstream, cache="serve_stale: 10m",
                               timeout="200ms", tries=1)
    ask(srv.port, "www.example.test")
    upstream.mode = "silent"
    clock.advance(300 + 600)
    reply = ask(srv.port, "www.example.test", edns=1232)
    assert rcode(reply) == "SERVFAIL" and [c for c, _t in ede(reply)] == [22]


def test_serve_stale_can_be_turned_off(server_factory, upstream):
    srv, clock = cached_server(server_factory, upstream, cache="serve_stale: 0s",
                               timeout="200ms", tries=1)
    ask(srv.port, "www.example.test")
    upstream.mode = "silent"
    clock.advance(301)
    assert rcode(ask(srv.port, "www.example.test")) == "SERVFAIL"


def test_servfail_is_not_cached(server_factory, upstream):
    upstream.mode = "servfail"
    srv, _clock = cached_server(server_factory, upstream)
    ask(srv.port, "www.example.test")
    ask(srv.port, "www.example.test")
    assert upstream.count("www.example.test") == 2 and srv.app.runtime.chain.cache.entries == 0


def test_a_cached_answer_is_truncated_for_udp_and_whole_over_tcp(server_factory, upstream):
    upstream.add(*(f"big.example.test. 300 IN A 192.0.2.{i}" for i in range(1, 61)))
    srv, _clock = cached_server(server_factory, upstream)
    small = ask(srv.port, "big.example.test")
    assert small.header.tc == 1
    big = ask(srv.port, "big.example.test", tcp=True)  # the client's retry: a cache hit
    assert big.header.tc == 0 and len(big.rr) == 60
    assert upstream.count("big.example.test") == 1


def test_concurrent_misses_of_one_name_share_one_upstream_query(server_factory, upstream):
    upstream.delay = 0.3
    srv, _clock = cached_server(server_factory, upstream)
    socks = []
    for i in range(5):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(make_query("www.example.test", qid=i), ("127.0.0.1", srv.port))
        socks.append(s)
    answers = []
    for s in socks:
        with s:
            answers.append(dnslib.DNSRecord.parse(s.recv(4096)))
    assert sorted(a.header.id for a in answers) == list(range(5))
    assert all(addresses(a) == ["192.0.2.1"] for a in answers)
    assert upstream.count("www.example.test") == 1


def test_served_zone_answers_do_not_go_through_the_cache(server_factory, upstream):
    srv = server_factory(EXAMPLE.replace("listen: 127.0.0.1:5353",
                                         f"listen: 127.0.0.1:{free_port()}")
                         + forward_yaml((".", [upstream])))
    for _ in range(3):
        ask(srv.port, "user-service.production.global")
        ask(srv.port, "missing.production.global")
    cache = srv.app.runtime.chain.cache
    assert (cache.hits, cache.misses, cache.entries) == (0, 0, 0)


def test_a_capacity_of_zero_turns_the_cache_off(server_factory, upstream):
    srv = server_factory(forward_yaml((".", [upstream])) + "cache: {capacity: 0}\n")
    assert srv.app.runtime.chain.cache is None
    ask(srv.port, "www.example.test")
    ask(srv.port, "www.example.test")
    assert upstream.count("www.example.test") == 2


def test_many_clients_at_once_on_a_small_cache(server_factory, upstream):
    upstream.add(*(f"h{i}.example.test. 300 IN A 192.0.2.{i}" for i in range(1, 51)))
    srv, _clock = cached_server(server_factory, upstream, cache="capacity: 10")
    failures: list[str] = []

    def client(offset: int) -> None:
        for j in range(50):
            i = (offset + j) % 50 + 1
            reply = ask(srv.port, f"h{i}.example.test")
            if addresses(reply) != [f"192.0.2.{i}"]:
                failures.append(f"h{i}: {addresses(reply)}")

    threads = [threading.Thread(target=client, args=(k * 7,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert failures == []
    assert srv.app.runtime.chain.cache.entries <= 10 and srv.app.runtime.chain.cache.evictions > 0
