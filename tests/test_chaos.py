"""CHAOS-class TXT over real sockets: version and id for anyone, explanations of the
routing decision for acl.allow_debug clients only."""

from __future__ import annotations

import re
from typing import Any

import dnslib

from tests.helpers.dns import ask, dig, ecs, ede, rcode
from tests.helpers.http import scrape, value
from tests.helpers.server import Running

CONFIG = """
resolver: {locality: us-central1/us-central1-a, instance: chaos-test}
client_localities: [{cidr: 10.20.0.0/16, locality: us-west1/us-west1-b}]
clusters:
  - {name: primary, locality: us-central1}
  - {name: remote, locality: us-west1}
services:
  - name: user-service
    namespace: production
    endpoints:
      - {address: 10.1.0.11, cluster: primary, locality: us-central1/us-central1-a}
      - {address: 10.2.0.21, cluster: remote, locality: us-west1/us-west1-b}
      - {address: 10.2.0.22, cluster: remote, locality: us-west1/us-west1-a, ready: false}
acl: {allow_debug: [127.0.0.1/32]}
"""


def txt(reply: dnslib.DNSRecord) -> list[str]:
    assert all(rr.rclass == 3 for rr in reply.rr), "CHAOS answers are class CH"
    return [b"".join(rr.rdata.data).decode() for rr in reply.rr if rr.rtype == dnslib.QTYPE.TXT]






def test_explanation_for_an_allowed_client(server_factory: Any) -> None:
    server: Running = server_factory(CONFIG)
    reply = ask(server.port, "user-service.production.global", "TXT", qclass="CH", tcp=True)
    assert rcode(reply) == "NOERROR" and reply.header.aa
    lines = txt(reply)
    assert lines[0] == "name user-service.production.global client 127.0.0.1"
    assert lines[1] == "client locality us-central1/us-central1-a from resolver"
    assert "endpoint 10.1.0.11 cluster primary locality us-central1/us-central1-a ready; " \
        "tier same zone; leads 100% of answers" in lines
    assert any(line.startswith("endpoint 10.2.0.22 cluster remote") and "not ready" in line
               for line in lines)
    assert lines[-1] == "result NOERROR"
    assert all(rr.ttl == 0 for rr in reply.rr)


def test_explanation_follows_the_client_subnet(server_factory: Any) -> None:
    server: Running = server_factory(CONFIG)
    reply = ask(server.port, "user-service.production.global", "TXT", qclass="CH", tcp=True,
                edns=1232, options=[ecs("10.20.3.0/24")])
    lines = txt(reply)
    assert "client locality us-west1/us-west1-b from ecs (ecs scope /16)" in lines
    assert any(line.startswith("endpoint 10.2.0.21") and "tier same zone" in line
               for line in lines)


def test_explanations_are_refused_outside_allow_debug(server_factory: Any) -> None:
    server: Running = server_factory(CONFIG)
    reply = ask(server.port, "user-service.production.global", "TXT", qclass="CH",
                source="127.0.0.2", edns=1232)
    assert rcode(reply) == "REFUSED" and not reply.rr
    assert ede(reply) and ede(reply)[0][0] == 18  # Prohibited (RFC 8914)
    # version and id are for everyone the ACL lets ask.
    assert txt(ask(server.port, "version.bind", "TXT", qclass="CH", source="127.0.0.2")) \
        == [f"globaldns {__import__('globaldns').__version__}"]
    m = scrape(server)
    assert value(m, "globaldns_acl_refused_total", reason="debug") == 1
    assert value(m, "globaldns_chaos_answers_total", kind="version") == 1


def test_version_and_id(server_factory: Any) -> None:
    server: Running = server_factory(CONFIG)
    version = f"globaldns {__import__('globaldns').__version__}"
    for name, expected in (("version.bind", version), ("version.server", version),
                           ("id.server", "chaos-test"), ("hostname.bind", "chaos-test"),
                           ("ID.Server", "chaos-test")):
        reply = ask(server.port, name, "TXT", qclass="CH")
        assert rcode(reply) == "NOERROR" and txt(reply) == [expected], name
        assert str(reply.q.qname) == name + "."  # the question as asked
    # Another type of a CHAOS name: NODATA.
    reply = ask(server.port, "version.bind", "A", qclass="CH")
    assert rcode(reply) == "NOERROR" and not reply.rr
    # A CHAOS name we do not know: REFUSED, Not Supported.
    reply = ask(server.port, "example.com", "TXT", qclass="CH", edns=1232)
    assert rcode(reply) == "REFUSED" and ede(reply)[0][0] == 21


def test_dig_shows_the_explanation(server_factory: Any) -> None:
    server: Running = server_factory(CONFIG)
    out = dig(server.port, "CH", "TXT", "user-service.production.global")
    assert "status: NOERROR" in out
    assert '"client locality us-central1/us-central1-a from resolver"' in out
    assert len(re.findall(r"\sCH\s+TXT\s", out)) >= 6
    version = dig(server.port, "+short", "CH", "TXT", "version.bind")
    assert version.strip() == f'"globaldns {__import__("globaldns").__version__}"'


def test_a_long_explanation_is_truncated_over_udp_and_whole_over_tcp(
        server_factory: Any) -> None:
    endpoints = "\n".join(f"      - {{address: 10.3.{i // 250}.{i % 250 + 1}, cluster: primary}}"
                          for i in range(40))
    server: Running = server_factory(CONFIG.replace("acl: {", f"""  - name: big
    namespace: production
    endpoints:
{endpoints}
acl: {{"""))
    udp = ask(server.port, "big.production.global", "TXT", qclass="CH")
    assert udp.header.tc
    tcp = ask(server.port, "big.production.global", "TXT", qclass="CH", tcp=True)
    assert not tcp.header.tc and len(txt(tcp)) > 40


def test_version_for_a_client_that_may_not_recurse(server_factory: Any) -> None:
    """A CHAOS name looks like a forwarded one; it is still ours to answer."""
    server: Running = server_factory(CONFIG.replace(
        "acl: {allow_debug: [127.0.0.1/32]}",
        "acl: {allow_query: [127.0.0.0/8], allow_recursion: [127.0.0.1/32]}\n"
        "forward: [{zone: '.', upstreams: ['127.0.0.1:9']}]"))
    reply = ask(server.port, "version.bind", "TXT", qclass="CH", source="127.0.0.2")
    assert rcode(reply) == "NOERROR" and txt(reply)
    # ... while an IN name of a forward zone stays refused to it.
    assert rcode(ask(server.port, "www.example.com", source="127.0.0.2")) == "REFUSED"
