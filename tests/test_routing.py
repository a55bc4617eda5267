"""Routing policy (issue 4) through real DNS queries: client locality from ECS, source
address or the resolver; distribute, failover, weights, backup, views, best_tier, health
thresholds, panic, subsets and aliases."""

from __future__ import annotations

import dnslib

from tests.helpers.configs import CLUSTERS, DISTRIBUTE, VIEWS, WEIGHTS
from tests.helpers.dns import addresses, ask, ecs, ede, first_records, rcode, share


def test_distribute_splits_the_first_record_80_20_over_20000_queries(server_factory):
    s = server_factory(DISTRIBUTE)
    seen = first_records(s.port, "order-service.production.global", 20000)
    assert abs(share(seen, "10.1.") - 80) <= 2
    assert abs(share(seen, "10.2.") - 20) <= 2
    assert seen["10.1.0.1"] and seen["10.1.0.2"]  # rotation within the chosen locality


def test_failover_answers_from_the_failover_region_before_any_other(server_factory):
    s = server_factory(DISTRIBUTE)
    reply = ask(s.port, "order-service.production.global", source="127.0.0.40", edns=1232)
    order = addresses(reply)
    assert set(order[:2]) == {"10.2.0.1", "10.2.0.2"}, order
    assert "10.3.0.1" not in order
    assert any(t.startswith("failover: no healthy endpoint in us-east1") for _, t in ede(reply))


def test_client_locality_comes_from_ecs_first(server_factory):
    s = server_factory(DISTRIBUTE)
    # The source (127.0.0.1) is in us-central1, but ECS says us-west1: nearest is us-west1.
    reply = ask(s.port, "order-service.production.global", edns=1232,
                options=[ecs("10.9.0.0/24")])
    assert set(addresses(reply)[:2]) == {"10.2.0.1", "10.2.0.2"}
    opt = next(rr for rr in reply.ar if rr.rtype == dnslib.QTYPE.OPT)
    ecs_reply = next(o.data for o in opt.rdata if o.code == 8)
    assert ecs_reply[:3] == b"\x00\x01\x18" and ecs_reply[3] == 14  # scope = the /14
    # An IPv6 ECS inside fd10::/32 (us-east1) fails over to us-west1 too.
    reply = ask(s.port, "order-service.production.global", edns=1232,
                options=[ecs("fd10:0:1::/48")])
    assert set(addresses(reply)[:2]) == {"10.2.0.1", "10.2.0.2"}




def test_weights_per_cluster_split_70_30(server_factory):
    s = server_factory(WEIGHTS)
    seen = first_records(s.port, "payment-service.production.global", 20000)
    assert abs(share(seen, "10.1.") - 70) <= 2 and abs(share(seen, "10.2.") - 30) <= 2


def test_weight_zero_is_a_backup_used_only_when_the_others_have_none_healthy(server_factory):
    s = server_factory(WEIGHTS)
    for _ in range(5):
        assert addresses(ask(s.port, "inventory-service.production.global")) == ["10.1.1.1"]
    s2 = server_factory(WEIGHTS.replace("{address: 10.1.1.1, cluster: primary}",
                                        "{address: 10.1.1.1, cluster: primary, ready: false}"))
    reply = ask(s2.port, "inventory-service.production.global", edns=1232)
    assert addresses(reply) == ["10.5.1.1"]
    assert any("backup" in t for _, t in ede(reply))




def test_views_restrict_the_answer_by_client_address(server_factory):
    s = server_factory(VIEWS)
    assert sorted(addresses(ask(s.port, "catalog-service.production.global",
                                source="127.0.0.20"))) == ["10.6.0.1", "10.6.0.2"]
    reply = ask(s.port, "catalog-service.production.global", edns=1232,
                options=[ecs("10.20.5.0/24")])
    assert sorted(addresses(reply)) == ["10.6.0.1", "10.6.0.2"]


def test_views_restrict_the_answer_by_client_locality_and_labels(server_factory):
    s = server_factory(VIEWS.replace(
        "  - {cidr: 10.8.0.0/14",
        "  - {cidr: 127.0.0.64/26, locality: eu-west1/eu-west1-a}\n  - {cidr: 10.8.0.0/14"))
    assert addresses(ask(s.port, "catalog-service.production.global",
                         source="127.0.0.70")) == ["10.7.0.1"]


def test_best_tier_answers_only_the_nearest_tier_plus_spill(server_factory):
    s = server_factory(VIEWS)
    for _ in range(4):
        order = addresses(ask(s.port, "catalog-service.production.global"))
        assert len(order) == 3
        assert set(order[:2]) == {"10.1.0.1", "10.1.0.2"}
        assert order[2] in {"10.1.0.3", "10.1.0.4", "10.6.0.1", "10.6.0.2"}


HEALTH = CLUSTERS + """
routing:
  - match: "*.production"
    min_healthy: 50%
    panic_threshold: 30
    max_answers: 4
services:
  - name: thin
    namespace: production
    endpoints:
      - {address: 10.1.0.1, cluster: primary}
      - {address: 10.1.0.2, cluster: primary, ready: false}
      - {address: 10.1.0.3, cluster: primary, ready: false}
      - {address: 10.2.0.1, cluster: remote}
      - {address: 10.2.0.2, cluster: remote}
  - name: panicky
    namespace: production
    endpoints:
      - {address: 10.1.0.1, cluster: primary}
      - {address: 10.1.0.2, cluster: primary, ready: false}
      - {address: 10.1.0.3, cluster: primary, ready: false}
      - {address: 10.1.0.4, cluster: primary, ready: false}
      - {address: 10.2.0.1, cluster: remote, ready: false}
  - name: wide
    namespace: production
    endpoints:
""" + "".join(f"      - {{address: 10.9.0.{i}, cluster: primary}}\n" for i in range(1, 9))


def test_a_cluster_below_min_healthy_is_left_out(server_factory):
    s = server_factory(HEALTH)
    # primary has 1 of 3 ready (33% < 50%): its ready endpoint is not answered.
    assert sorted(addresses(ask(s.port, "thin.production.global"))) == ["10.2.0.1", "10.2.0.2"]


def test_below_the_panic_threshold_every_endpoint_is_answered_with_a_reason(server_factory):
    s = server_factory(HEALTH)
    reply = ask(s.port, "panicky.production.global", edns=1232)
    assert len(addresses(reply)) == 4  # max_answers: 4 of the 5
    assert any(t.startswith("panic: 1 of 5 endpoints healthy") for _, t in ede(reply))


def test_max_answers_from_a_rule(server_factory):
    s = server_factory(HEALTH)
    seen = set()
    for _ in range(8):
        order = addresses(ask(s.port, "wide.production.global"))
        assert len(order) == 4
        seen.add(order[0])
    assert len(seen) == 8


def test_fail_open_carries_an_extended_error(server_factory):
    s = server_factory(CLUSTERS + """
services:
  - name: down
    namespace: production
    endpoints: [{address: 10.1.0.1, cluster: primary, ready: false}]
""")
    reply = ask(s.port, "down.production.global", edns=1232)
    assert addresses(reply) == ["10.1.0.1"]
    assert [text for _, text in ede(reply)] == ["fail-open: no healthy endpoint; answering all 1"]


def test_shuffle_false_keeps_one_order(server_factory):
    s = server_factory(HEALTH.replace("    max_answers: 4", "    max_answers: 4\n"
                                      "    shuffle: false"))
    orders = {tuple(addresses(ask(s.port, "wide.production.global"))) for _ in range(5)}
    assert orders == {("10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4")}


SUBSETS = CLUSTERS + """
aliases:
  - {name: users.api.example.com, target: user-service.production.global, mode: cname}
  - {name: flat.example.com, target: v2.user-service.production.global, mode: flatten}
  - {name: pending.example.com, target: nobody.production.global}
services:
  - name: user-service
    namespace: production
    subsets: [{name: v2, labels: {version: v2}}]
    endpoints:
      - {address: 10.1.0.1, cluster: primary, labels: {version: v1}}
      - {address: 10.1.0.2, cluster: primary, labels: {version: v2}}
      - {address: "fd00::2", cluster: primary, labels: {version: v2}}
"""


def test_a_subset_answers_only_endpoints_with_its_labels(server_factory):
    s = server_factory(SUBSETS)
    assert addresses(ask(s.port, "v2.user-service.production.global")) == ["10.1.0.2"]
    assert addresses(ask(s.port, "v2.user-service.production.global", "AAAA")) == ["fd00::2"]
    assert len(addresses(ask(s.port, "user-service.production.global"))) == 2


def test_a_cname_alias_answers_the_cname_and_the_targets_records(server_factory):
    s = server_factory(SUBSETS)
    reply = ask(s.port, "Users.API.example.com")
    assert rcode(reply) == "NOERROR" and reply.header.aa
    assert next((str(rr.rname), str(rr.rdata)) for rr in reply.rr) == (
        "Users.API.example.com.", "user-service.production.global.")
    assert sorted(addresses(reply)) == ["10.1.0.1", "10.1.0.2"]
    assert {str(rr.rname) for rr in reply.rr[1:]} == {"user-service.production.global."}


def test_a_flatten_alias_answers_addresses_under_its_own_name(server_factory):
    s = server_factory(SUBSETS)
    reply = ask(s.port, "flat.example.com")
    assert [(str(rr.rname), str(rr.rdata)) for rr in reply.rr] == [
        ("flat.example.com.", "10.1.0.2")]


def test_an_alias_whose_target_does_not_exist_is_a_bare_cname(server_factory):
    s = server_factory(SUBSETS)
    reply = ask(s.port, "pending.example.com")
    assert [str(rr.rdata) for rr in reply.rr] == ["nobody.production.global."]


def test_min_healthy_has_hysteresis(server_factory):
    from globaldns.registry.model import Endpoint, Locality, ServiceData
    s = server_factory(CLUSTERS + """
routing:
  - match: "*.production"
    min_healthy: 50%
""")

    def write(ready_count: int) -> None:
        endpoints = tuple(Endpoint(address=f"10.1.0.{i}", cluster="primary",
                                   locality=Locality("us-central1"), ready=i <= ready_count)
                          for i in range(1, 5))
        endpoints += (Endpoint(address="10.2.0.1", cluster="remote",
                               locality=Locality("us-west1")),)
        s.call(s.app.runtime.store.set, "k8s/test", ("production", "flappy"),
               ServiceData(endpoints=endpoints))

    def primary_answered() -> bool:
        return any(a.startswith("10.1.") for a in
                   addresses(ask(s.port, "flappy.production.global")))

    write(2)  # 50%: healthy
    assert primary_answered()
    write(1)  # 25%: unhealthy
    assert not primary_answered()
    write(2)  # back at 50%, but an unhealthy cluster needs 60% to return
    assert not primary_answered()
    write(3)  # 75%: healthy again
    assert primary_answered()
