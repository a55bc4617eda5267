"""DNS COOKIE (RFC 7873, server cookies of RFC 9018) over real sockets: dig, dnspython."""

from __future__ import annotations

import re
import time

import dns.edns
import dns.message
import dns.query
import dns.rcode
import pytest

from globaldns.dns.cookies import Cookies, server_cookie, siphash24
from globaldns.dns.message import UDP, parse
from globaldns.dns.stats import Stats
from tests.helpers.dns import dig, make_query, udp_raw

CONFIG = """
clusters: [{name: east, locality: us-east1}]
resolver: {instance: cookie-test}
services:
  - name: api
    namespace: prod
    endpoints:
      - {address: 10.7.0.1, cluster: east}
  - name: big
    namespace: prod
    endpoints:
""" + "".join(f"      - {{address: 10.8.{i // 250}.{i % 250 + 1}, cluster: east}}\n"
              for i in range(120))

# RFC 9018 Appendix A: (secrets, client address, cookie received, time of the query,
# cookie option the server returns, the server cookie received was valid). A.3's cookie is
# 1 h 52 min old, past the hour of 4.3, so it is invalid then (its hash is checked at its
# own time below); A.4's was made with the previous secret.
VECTORS = [
    ("e5e973e5a6b2a43f48e7dc849e37bfcf", "198.51.100.100", "2464c4abcf10c957", 1559731985,
     "2464c4abcf10c957010000005cf79f111f8130c3eee29480", False),
    ("e5e973e5a6b2a43f48e7dc849e37bfcf", "198.51.100.100",
     "2464c4abcf10c957010000005cf79f111f8130c3eee29480", 1559734385,
     "2464c4abcf10c957010000005cf7a871d4a564a1442aca77", True),
    ("e5e973e5a6b2a43f48e7dc849e37bfcf", "203.0.113.203",
     "fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5", 1559734700,
     "fc93fc62807ddb86010000005cf7a9acf73a7810aca2381e", False),
    ("e5e973e5a6b2a43f48e7dc849e37bfcf", "203.0.113.203",
     "fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5", 1559727985,
     None, True),
    ("445536bcd2513298075a5d379663c962 dd3bdf9344b678b185a6f5cb60fca715",
     "2001:db8:220:1:59de:d0f4:8769:82b8",
     "22681ab97d52c298010000005cf7c57926556bd0934c72f8", 1559741961,
     "22681ab97d52c298010000005cf7c609a6bb79d16625507a", True),
]


def test_siphash_2_4_gives_the_reference_vectors():
    # The SipHash paper's Appendix A: key 00..0f, message 00..0e, result a129ca6149be45e5
    # (as an integer; the reference vectors.h lists it as bytes, little-endian).
    key = bytes(range(16))
    assert siphash24(key, bytes(range(15))) == (0xA129CA6149BE45E5).to_bytes(8, "little")
    assert siphash24(key, b"").hex() == "310e0edd47db6f72"


@pytest.mark.parametrize(("secrets", "ip", "sent", "now", "returned", "valid"), VECTORS)
def test_server_cookies_match_the_rfc_9018_test_vectors(secrets, ip, sent, now, returned,
                                                        valid):
    q = parse(bytes(make_query("example.com", edns=4096, options=[(10, bytes.fromhex(sent))])),
              (ip, 53000), UDP)
    stats = Stats()
    jar = Cookies(master=b"", rotate=86400, stats=stats, clock=lambda: now,
                  secrets=tuple(bytes.fromhex(s) for s in secrets.split()))
    jar.check(q)
    if returned is not None:
        assert q.cookie_reply.hex() == returned
    else:  # renewed: reserved bytes set (RFC 9018 4.2: zero in the cookies we make)
        assert q.cookie_reply[:12] == bytes.fromhex(sent[:16]) + bytes.fromhex("01000000")
    assert q.cookie_ok == valid


def test_a_server_cookie_from_another_address_is_invalid():
    secret = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")
    cookie = bytes.fromhex("2464c4abcf10c957") + server_cookie(
        secret, bytes.fromhex("2464c4abcf10c957"), bytes([198, 51, 100, 100]), 1559731985)
    q = parse(bytes(make_query("example.com", edns=4096, options=[(10, cookie)])),
              ("198.51.100.101", 53000), UDP)
    stats = Stats()
    Cookies(master=b"", rotate=86400, stats=stats, secrets=(secret,),
            clock=lambda: 1559731990).check(q)
    assert not q.cookie_ok and stats.cookies_invalid == 1


def _cookie(out: str) -> str:
    found = re.search(r"; COOKIE: ([0-9a-f]+)", out)
    assert found, out
    return found.group(1)


def test_dig_cookie_shows_the_server_cookie_and_it_is_accepted_back(server_factory):
    s = server_factory(CONFIG)
    out = dig(s.port, "api.prod.global", "+cookie")
    returned = _cookie(out)
    assert len(returned) == 48 and "(good)" in out
    assert returned[16:18] == "01"  # version 1 (RFC 9018 4.1)
    out = dig(s.port, "api.prod.global", f"+cookie={returned}")
    assert "status: NOERROR" in out and "10.7.0.1" in out
    # Accepted: echoed as it came (it is fresh), and counted as valid.
    assert _cookie(out) == returned
    assert s.app.runtime.server.stats.cookies_valid == 1


def _dnspython_query(name: str, cookie: bytes, payload: int = 1232) -> dns.message.Message:
    return dns.message.make_query(name, "A", use_edns=0, payload=payload,
                                  options=[dns.edns.CookieOption(cookie[:8], cookie[8:])])


def test_a_wrong_server_cookie_gets_a_normal_answer_and_a_fresh_cookie(server_factory):
    s = server_factory(CONFIG)
    wrong = bytes.fromhex("0102030405060708") + bytes.fromhex("01000000") \
        + int(time.time()).to_bytes(4, "big") + bytes(8)
    reply = dns.query.udp(_dnspython_query("api.prod.global", wrong), "127.0.0.1",
                          port=s.port, timeout=2)
    assert reply.rcode() == dns.rcode.NOERROR
    assert [str(rr) for rrset in reply.answer for rr in rrset] == ["10.7.0.1"]
    option = next(o for o in reply.options if o.otype == dns.edns.COOKIE)
    assert option.client == wrong[:8] and option.server != wrong[8:]
    assert s.app.runtime.server.stats.cookies_invalid == 1
    # The fresh one is good.
    good = option.client + option.server
    dns.query.udp(_dnspython_query("api.prod.global", good), "127.0.0.1", port=s.port,
                  timeout=2)
    assert s.app.runtime.server.stats.cookies_valid == 1


@pytest.mark.parametrize("length", [1, 7, 9, 15, 41])
def test_a_cookie_option_of_a_wrong_length_is_formerr(server_factory, length):
    s = server_factory(CONFIG)
    raw = udp_raw(s.port, make_query("api.prod.global", edns=1232,
                                     options=[(10, bytes(length))]))
    assert raw is not None and raw[3] & 0xF == 1


def test_only_a_query_with_a_valid_server_cookie_gets_a_udp_reply_past_1232_bytes(
        server_factory):
    s = server_factory(CONFIG)
    first = dns.query.udp(_dnspython_query("big.prod.global", b"\x11" * 8, 4096),
                          "127.0.0.1", port=s.port, timeout=2)
    assert first.flags & dns.flags.TC  # no server cookie yet: capped at 1232
    option = next(o for o in first.options if o.otype == dns.edns.COOKIE)
    good = option.client + option.server
    wire = _dnspython_query("big.prod.global", good, 4096).to_wire()
    raw = udp_raw(s.port, wire)
    assert raw is not None and len(raw) > 1232
    reply = dns.message.from_wire(raw)
    assert not reply.flags & dns.flags.TC
    assert sum(len(rrset) for rrset in reply.answer) == 120


def test_a_secret_file_makes_rfc_9018_cookies_any_implementation_can_check(
        server_factory, tmp_path):
    secret = "e5e973e5a6b2a43f48e7dc849e37bfcf"
    (tmp_path / "secret").write_text(secret + "\n")
    s = server_factory(CONFIG + f"cookies: {{secret_file: {tmp_path / 'secret'}}}\n")
    now = int(time.time())
    client = bytes.fromhex("2464c4abcf10c957")
    ours = client + server_cookie(bytes.fromhex(secret), client, bytes([127, 0, 0, 1]), now)
    out = dig(s.port, "api.prod.global", f"+cookie={ours.hex()}")
    assert _cookie(out) in (ours.hex(),
                            (client + server_cookie(bytes.fromhex(secret), client,
                                                    bytes([127, 0, 0, 1]), now + 1)).hex())
    assert s.app.runtime.server.stats.cookies_valid == 1


def test_the_previous_secret_is_accepted_for_one_rotation_then_not(server_factory):
    s = server_factory(CONFIG + "cookies: {rotate: 1h}\n")
    start = 3600 * 500_000 + 3000  # 10 minutes before a rotation
    now = [float(start)]
    s.call(setattr, s.app.runtime.server.cookies, "clock", lambda: now[0])
    cookie = bytes.fromhex(_cookie(dig(s.port, "api.prod.global", "+cookie")))

    def echoed_at(moment: float) -> bool:
        now[0] = moment
        reply = dns.query.udp(_dnspython_query("api.prod.global", cookie), "127.0.0.1",
                              port=s.port, timeout=2)
        option = next(o for o in reply.options if o.otype == dns.edns.COOKIE)
        return option.server == cookie[8:]

    assert echoed_at(start + 60)
    assert s.app.runtime.server.stats.cookies_valid == 1
    # After the rotation the secret that made it is the previous one: still valid, and the
    # reply carries a fresh cookie made with the new secret.
    assert not echoed_at(start + 660)
    assert s.app.runtime.server.stats.cookies_valid == 2
    # Its timestamp is good for an hour (RFC 9018 4.3): past it, invalid.
    echoed_at(start + 3601)
    stats = s.app.runtime.server.stats
    assert (stats.cookies_valid, stats.cookies_invalid) == (2, 1)


def test_every_worker_process_accepts_the_cookies_of_every_other(tmp_path):
    from tests.helpers.server import free_port, serve

    port = free_port()
    path = tmp_path / "w.yaml"
    path.write_text(f"dns: {{listen: 127.0.0.1:{port}}}\n" + CONFIG)
    proc = serve("--config", str(path), "--workers", "2")
    try:
        out = dig(port, "api.prod.global", "+cookie")
        cookie = bytes.fromhex(_cookie(out))
        nsids, echoed = set(), []
        for _ in range(40):  # each from a new source port: the kernel spreads them
            query = _dnspython_query("api.prod.global", cookie)
            query.use_edns(0, options=[*query.options, dns.edns.GenericOption(3, b"")])
            reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
            for option in reply.options:
                if option.otype == 3:
                    nsids.add(option.nsid)
                if option.otype == dns.edns.COOKIE:
                    # Valid and fresh: echoed as sent; another secret would make a new one.
                    echoed.append(option.client + option.server == cookie)
        assert len(nsids) == 2, "both workers answered"
        assert len(echoed) == 40 and all(echoed)
    finally:
        proc.terminate()
        proc.wait(10)
