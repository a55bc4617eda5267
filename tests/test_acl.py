"""Who may query and who may recurse (issue 5). Clients on other addresses are real
sockets bound to 127.0.0.2 (all of 127.0.0.0/8 is loopback on Linux)."""

from __future__ import annotations

import pytest

from globaldns.chain.acl import DENY, MAX_CLIENTS, QUERY, RECURSE, Acl
from globaldns.chain.forward import Forward
from globaldns.config import ConfigError, parse_text
from globaldns.config.model import AclConfig
from tests.helpers.dns import addresses, ask, dig, ede, rcode
from tests.helpers.server import EXAMPLE, free_port
from tests.helpers.upstreams import EXAMPLE_RECORDS, fake_upstreams, forward_yaml

OTHER = "127.0.0.2"


@pytest.fixture
def upstream():
    with fake_upstreams() as make:
        yield make().add(*EXAMPLE_RECORDS)


def example_with(extra: str) -> str:
    return EXAMPLE.replace("listen: 127.0.0.1:5353", f"listen: 127.0.0.1:{free_port()}") + extra


def test_a_client_allowed_to_recurse_gets_ra_on_every_answer(server_factory, upstream):
    srv = server_factory(example_with(forward_yaml((".", [upstream]))))
    forwarded = ask(srv.port, "www.example.test")
    assert addresses(forwarded) == ["192.0.2.1"] and forwarded.header.ra == 1
    served = ask(srv.port, "user-service.production.global")
    assert served.header.aa == 1 and served.header.ra == 1
    assert ask(srv.port, "missing.production.global").header.ra == 1


def test_without_forwarding_ra_is_never_set(server_factory):
    srv = server_factory(example_with(""))
    reply = ask(srv.port, "user-service.production.global")
    assert reply.header.aa == 1 and reply.header.ra == 0
    refused = ask(srv.port, "www.example.test")
    assert rcode(refused) == "REFUSED" and refused.header.ra == 0


def test_a_client_outside_allow_recursion_is_refused_forwarded_names(server_factory, upstream):
    srv = server_factory(example_with(forward_yaml((".", [upstream]))
                                      + "acl: {allow_recursion: [127.0.0.1/32]}\n"))
    reply = ask(srv.port, "www.example.test", source=OTHER, edns=1232)
    assert rcode(reply) == "REFUSED" and reply.header.ra == 0
    assert [code for code, _text in ede(reply)] == [18]
    assert upstream.count() == 0
    # ...but still gets the served zones, without RA.
    served = ask(srv.port, "user-service.production.global", source=OTHER)
    assert addresses(served) and served.header.aa == 1 and served.header.ra == 0
    assert rcode(ask(srv.port, "missing.production.global", source=OTHER)) == "NXDOMAIN"
    # The client inside the list recurses as before.
    assert addresses(ask(srv.port, "www.example.test")) == ["192.0.2.1"]


def test_dig_from_a_client_without_recursion_sees_prohibited(server_factory, upstream):
    srv = server_factory(forward_yaml((".", [upstream]))
                         + "acl: {allow_recursion: [127.0.0.1/32]}\n")
    out = dig(srv.port, "-b", OTHER, "www.example.test")
    assert "status: REFUSED" in out and "EDE: 18 (Prohibited)" in out
    assert " ra" not in out.split("flags:")[1].split(";")[0]


def test_a_client_outside_allow_query_is_refused_everything(server_factory, upstream):
    srv = server_factory(example_with(forward_yaml((".", [upstream]))
                                      + "acl: {allow_query: [127.0.0.1/32]}\n"))
    for name in ("www.example.test", "user-service.production.global", "."):
        reply = ask(srv.port, name, source=OTHER, edns=1232)
        assert rcode(reply) == "REFUSED", name
        assert [code for code, _text in ede(reply)] == [18]
    assert upstream.count() == 0
    assert addresses(ask(srv.port, "user-service.production.global"))


def test_the_root_probe_is_answered_promptly_to_a_client_without_recursion(server_factory,
                                                                             upstream):
    upstream.mode = "silent"
    # Promptly: within the client's 10 s, where the upstream would hold it for an hour.
    srv = server_factory(forward_yaml((".", [upstream]), timeout="1h")
                         + "acl: {allow_recursion: [127.0.0.1/32]}\n")
    assert rcode(ask(srv.port, ".", "NS", source=OTHER, timeout=10)) == "REFUSED"
    assert upstream.count(probes=True) == 0


def test_an_empty_allow_recursion_makes_no_one_recurse(server_factory, upstream):
    srv = server_factory(forward_yaml((".", [upstream])) + "acl: {allow_recursion: []}\n")
    assert rcode(ask(srv.port, "www.example.test")) == "REFUSED"
    assert upstream.count() == 0


def _acl(config: AclConfig | None = None) -> Acl:
    forward = Forward(parse_text("forward: [{zone: ., upstreams: [10.0.0.53]}]",
                                 "t.yaml").forward, served=["global"])
    return Acl(config or AclConfig(), forward=forward)


@pytest.mark.parametrize(("client", "decision"), [
    ("127.0.0.1", RECURSE), ("127.8.9.10", RECURSE), ("::1", RECURSE),
    ("10.1.2.3", RECURSE), ("172.16.0.1", RECURSE), ("172.31.255.255", RECURSE),
    ("192.168.1.1", RECURSE), ("fd00::1", RECURSE), ("fc00::1", RECURSE),
    ("::ffff:192.168.1.1", RECURSE),  # a v4 client on a dual-stack socket
    ("8.8.8.8", DENY), ("172.32.0.1", DENY), ("2001:db8::1", DENY), ("fe80::1%lo", DENY),
    ("", DENY), ("not-an-address", DENY)])
def test_the_default_lists_are_loopback_and_private_ranges(client, decision):
    assert _acl().decide(client) == decision


def test_recursion_needs_forwarding_and_both_lists():
    acl = _acl(AclConfig(allow_recursion=("10.0.0.0/8",), allow_query=("10.0.0.0/8",
                                                                       "192.0.2.0/24")))
    assert (acl.decide("10.0.0.1"), acl.decide("192.0.2.1"), acl.decide("198.51.100.1")) \
        == (RECURSE, QUERY, DENY)
    no_forward = Acl(AclConfig(), forward=None)
    assert no_forward.decide("127.0.0.1") == QUERY


def test_the_per_client_memory_is_bounded():
    acl = _acl()
    for i in range(MAX_CLIENTS + 50):
        acl.decide(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    assert len(acl.decisions) <= MAX_CLIENTS


def test_acl_config(tmp_path):
    config = parse_text("acl: {allow_recursion: [10.0.0.0/8, 192.0.2.1], "
                        "allow_query: ['10.0.0.0/8', 'fd00::/8']}", "my.yaml")
    assert config.acl.allow_recursion == ("10.0.0.0/8", "192.0.2.1/32")
    assert config.acl.allow_query == ("10.0.0.0/8", "fd00::/8")
    assert parse_text("", "my.yaml").acl == AclConfig()


@pytest.mark.parametrize(("text", "error"), [
    ("acl: {allow_query: [10.0.0.0/33]}",
     "my.yaml: acl.allow_query[0]: '10.0.0.0/33' is not an IP network"),
    ("acl: {allow_query: [10.1.2.3/8]}",
     "my.yaml: acl.allow_query[0]: '10.1.2.3/8' has host bits set (the network is 10.0.0.0/8)"),
    ("acl: {allow_recursion: [everyone]}",
     "my.yaml: acl.allow_recursion[0]: 'everyone' is not an IP network"),
    ("acl: {allow_recursion: 10.0.0.0/8}",
     "my.yaml: acl.allow_recursion: must be a list, not a string"),
    ("acl: {deny: [10.0.0.0/8]}", "my.yaml: acl.deny: unknown key"),
])
def test_acl_config_errors_name_the_key(text, error):
    with pytest.raises(ConfigError) as failure:
        parse_text(text, "my.yaml")
    assert any(line.startswith(error) for line in failure.value.errors), failure.value.errors
