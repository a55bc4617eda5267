"""The registry's incremental interface, seen through DNS: a change to one service
re-prepares that service's names and nothing else."""

from __future__ import annotations

from globaldns.dns.message import text_to_wire
from globaldns.registry.model import Endpoint, Locality, Port, ServiceData
from tests.helpers.dns import addresses, ask, rcode

CONFIG = """
clusters: [{name: east, locality: us-east1}]
services:
  - name: other
    namespace: prod
    endpoints: [{address: 10.7.0.1, cluster: east}]
"""


def endpoint(address: str, cluster: str = "east", **kw) -> Endpoint:  # type: ignore[no-untyped-def]
    return Endpoint(address=address, cluster=cluster, locality=Locality("us-east1"), **kw)


def test_a_source_write_changes_the_answer_and_touches_only_that_service(server_factory):
    s = server_factory(CONFIG)
    store = s.app.runtime.store
    assert rcode(ask(s.port, "api.prod.global")) == "NXDOMAIN"
    other = s.app.runtime.snapshot.names[text_to_wire("other.prod.global")]

    s.call(store.set, "k8s/east", ("prod", "api"),
           ServiceData(ports=(Port("http", 8080),), endpoints=(endpoint("10.5.0.1"),)))
    assert addresses(ask(s.port, "api.prod.global")) == ["10.5.0.1"]
    assert s.app.runtime.snapshot.names[text_to_wire("other.prod.global")] is other

    s.call(store.set, "k8s/west", ("prod", "api"),
           ServiceData(endpoints=(endpoint("10.6.0.1", "west"),)))
    assert sorted(addresses(ask(s.port, "api.prod.global"))) == ["10.5.0.1", "10.6.0.1"]

    s.call(store.delete, "k8s/east", ("prod", "api"))
    assert addresses(ask(s.port, "api.prod.global")) == ["10.6.0.1"]
    assert rcode(ask(s.port, "_http._tcp.api.prod.global", "SRV")) == "NXDOMAIN"

    s.call(store.drop_source, "k8s/west")
    assert rcode(ask(s.port, "api.prod.global")) == "NXDOMAIN"
    assert rcode(ask(s.port, "10-6-0-1.west.api.prod.global")) == "NXDOMAIN"
    assert addresses(ask(s.port, "other.prod.global")) == ["10.7.0.1"]
    assert s.app.runtime.snapshot.names[text_to_wire("other.prod.global")] is other


def test_a_namespace_stays_an_empty_non_terminal_while_any_service_lives_in_it(server_factory):
    s = server_factory(CONFIG)
    store = s.app.runtime.store
    s.call(store.set, "k8s/east", ("shop", "a"), ServiceData(endpoints=(endpoint("10.1.1.1"),)))
    s.call(store.set, "k8s/east", ("shop", "b"), ServiceData(endpoints=(endpoint("10.1.1.2"),)))
    assert rcode(ask(s.port, "shop.global")) == "NOERROR"
    s.call(store.delete, "k8s/east", ("shop", "a"))
    assert rcode(ask(s.port, "shop.global")) == "NOERROR"
    s.call(store.delete, "k8s/east", ("shop", "b"))
    assert rcode(ask(s.port, "shop.global")) == "NXDOMAIN"


def test_an_external_name_service_answers_a_cname(server_factory):
    s = server_factory(CONFIG)
    s.call(s.app.runtime.store.set, "k8s/east", ("prod", "db"),
           ServiceData(external_name="db.example.com"))
    reply = ask(s.port, "db.prod.global")
    assert [str(rr.rdata) for rr in reply.rr] == ["db.example.com."]


def test_before_sync_an_unknown_name_is_servfail_not_nxdomain(server_factory):
    s = server_factory(CONFIG)
    s.call(s.app.runtime.snapshot.set_synced, False)
    reply = ask(s.port, "unknown.prod.global", edns=1232)
    assert rcode(reply) == "SERVFAIL"
    assert addresses(ask(s.port, "other.prod.global")) == ["10.7.0.1"]
    s.call(s.app.runtime.snapshot.set_synced, True)
    assert rcode(ask(s.port, "unknown.prod.global")) == "NXDOMAIN"


def test_a_watched_cluster_that_has_not_listed_means_servfail_from_the_first_query(
        server_factory, tmp_path):
    missing = tmp_path / "nowhere.kubeconfig"  # never loads: the cluster never syncs
    s = server_factory(CONFIG.replace("clusters: [{name: east, locality: us-east1}]",
                                      f"clusters: [{{name: east, locality: us-east1, "
                                      f"kubeconfig: {missing}}}]"))
    assert rcode(ask(s.port, "unknown.prod.global")) == "SERVFAIL"
    assert addresses(ask(s.port, "other.prod.global")) == ["10.7.0.1"]


def test_the_snapshot_is_unsynced_before_the_listeners_open(tmp_path):
    from globaldns.app import App
    from globaldns.config import parse_text
    config = parse_text(f"clusters: [{{name: east, kubeconfig: {tmp_path / 'k'}}}]\n", "t.yaml")
    assert App(config).runtime.snapshot.synced is False
    assert App(parse_text(CONFIG, "t.yaml")).runtime.snapshot.synced is True


def test_a_replaced_service_leaves_no_reference_cycle_for_the_collector(server_factory):
    # Snapshot.update freezes a big service's answers out of the collector (gc.freeze):
    # only refcounting frees them, so answers, asked once (their replies are made on
    # first use), must hold no cycle.
    import gc

    s = server_factory(CONFIG)
    store = s.app.runtime.store

    def version(n: int) -> ServiceData:
        return ServiceData(ports=(Port("http", 8080),), endpoints=tuple(
            endpoint(f"10.{n}.0.{i}", "east" if i % 2 else "west") for i in range(1, 40)))

    names = ["api.prod.global", "east.api.prod.global", "10-1-0-1.east.api.prod.global"]
    s.call(store.set, "k8s/east", ("prod", "api"), version(1))
    for name in names:
        assert rcode(ask(s.port, name)) == "NOERROR"
    assert rcode(ask(s.port, "_http._tcp.api.prod.global", "SRV")) == "NOERROR"
    s.call(gc.collect)
    s.call(store.set, "k8s/east", ("prod", "api"), version(2))
    assert s.call(gc.collect) == 0


def test_a_big_new_service_answers_as_soon_as_it_is_written(server_factory):
    # Past 1,000 endpoints a change is prepared in steps, but a service with no answers
    # yet is prepared at once: a name that exists is never NXDOMAIN, even for a moment.
    s = server_factory(CONFIG)
    big = ServiceData(endpoints=tuple(endpoint(f"10.9.{i >> 8}.{i & 255}")
                                      for i in range(1500)))
    s.call(s.app.runtime.store.set, "k8s/east", ("prod", "big"), big)
    assert rcode(ask(s.port, "big.prod.global")) == "NOERROR"
    assert addresses(ask(s.port, "10-9-5-219.east.big.prod.global")) == ["10.9.5.219"]
