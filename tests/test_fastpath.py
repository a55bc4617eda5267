"""The wire cache serves repeated UDP queries without the handler chain, and never
serves what the chain would not."""

from __future__ import annotations

from globaldns.registry.model import Endpoint, Locality, ServiceData
from tests.helpers.dns import addresses, ask, make_query, rcode, udp_raw

CONFIG = """
clusters: [{name: east, locality: us-east1}]
acl: {allow_query: [127.0.0.0/30]}
services:
  - name: api
    namespace: prod
    endpoints:
      - {address: 10.7.0.1, cluster: east}
      - {address: 10.7.0.2, cluster: east}
"""


def test_repeated_queries_are_served_from_the_wire_cache_and_still_rotate(server_factory):
    s = server_factory(CONFIG)
    firsts = {addresses(ask(s.port, "api.prod.global"))[0] for _ in range(6)}
    assert firsts == {"10.7.0.1", "10.7.0.2"}
    assert s.app.runtime.server.wire.size >= 1


def test_a_registry_change_is_seen_at_once_by_cached_queries(server_factory):
    s = server_factory(CONFIG)
    for _ in range(3):
        assert len(addresses(ask(s.port, "api.prod.global"))) == 2
    assert rcode(ask(s.port, "new.prod.global")) == "NXDOMAIN"
    s.call(s.app.runtime.store.set, "k8s/east", ("prod", "api"),
           ServiceData(endpoints=(Endpoint("10.9.9.9", "east", Locality("us-east1")),)))
    s.call(s.app.runtime.store.set, "k8s/east", ("prod", "new"),
           ServiceData(endpoints=(Endpoint("10.9.9.8", "east", Locality("us-east1")),)))
    assert sorted(addresses(ask(s.port, "api.prod.global"))) == [
        "10.7.0.1", "10.7.0.2", "10.9.9.9"]
    assert addresses(ask(s.port, "new.prod.global")) == ["10.9.9.8"]


def test_the_cache_keeps_each_clients_acl_decision(server_factory):
    s = server_factory(CONFIG)
    data = bytes(make_query("api.prod.global"))
    for _ in range(3):
        assert udp_raw(s.port, data)[3] & 0xF == 0
    # Same bytes from a client outside allow_query: refused, not served from the cache.
    for _ in range(2):
        assert udp_raw(s.port, data, source="127.0.0.9")[3] & 0xF == 5


def test_queries_with_edns_options_take_the_full_path(server_factory):
    s = server_factory("resolver: {instance: i-1}\n" + CONFIG)
    for _ in range(2):
        reply = ask(s.port, "api.prod.global", edns=1232, options=[(3, b"")])
        opt = next(rr for rr in reply.ar if rr.rtype == 41)
        assert [o.data for o in opt.rdata] == [b"i-1"]
