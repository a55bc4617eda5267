"""Faults applied to a running server with load on it (tests/faultload.py: a query loop
over a real UDP socket, every answer kept), answers judged afterwards: upstream resolvers
that are slow, dead, lying, TCP-only, oversized or truncating forever, and reloads to
broken files. Our own zone must answer every query through all of them; a forwarded name
gets the upstream's answer or SERVFAIL with an Extended DNS Error, never a lie, and the
upstream's answers again once it is back. The Kubernetes faults are in
tests/k8s/test_faults.py; docs/operations.md ("Faults") maps each fault to its test."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.data import ROOT
from tests.helpers.dns import addresses, ask, rcode
from tests.helpers.faultload import LOST, Answer, Load
from tests.helpers.server import free_port
from tests.helpers.upstreams import EXAMPLE_RECORDS, FakeUpstream, fake_upstreams, forward_yaml
from tests.helpers.wait import wait_until as until

SERVED = "web.prod.global"
SERVED_ADDRESSES = ("10.0.0.1", "10.0.0.2")
CACHED = "www.example.test"  # answered by the upstream once, then from the cache
FRESH = "n{i}.example.test"  # a new name each time: always asked upstream (NXDOMAIN)


def zone_yaml() -> str:
    return """zones: [{name: global, ttl: 5, negative_ttl: 5}]
clusters: [{name: c1, locality: r1}]
services:
  - name: web
    namespace: prod
    endpoints: [{address: 10.0.0.1, cluster: c1}, {address: 10.0.0.2, cluster: c1}]
"""


@pytest.fixture
def upstreams() -> Iterator[Callable[..., FakeUpstream]]:
    with fake_upstreams() as make:
        yield make


def served_ok(answers: list[Answer]) -> None:
    """Every answer of our zone: NOERROR, both addresses, casing echoed, none lost."""
    bad = [a for a in answers if (a.rcode, a.addresses, a.echoed) !=
           ("NOERROR", SERVED_ADDRESSES, True)]
    assert not bad and answers, f"{len(bad)} of {len(answers)} wrong, e.g. {bad[:3]}"


def forwarded_ok(answers: list[Answer], *, servfail: bool) -> Counter[str]:
    """Forwarded names get the upstream's answer (`servfail`: or SERVFAIL with an EDE);
    never another address, never lost."""
    outcomes: Counter[str] = Counter()
    for a in answers:
        right = ((a.rcode, a.addresses) == ("NOERROR", ("192.0.2.1",)) if a.name == CACHED
                 else (a.rcode, a.addresses) == ("NXDOMAIN", ()))
        if right and a.echoed:
            outcomes["right"] += 1
        elif servfail and a.rcode == "SERVFAIL" and a.ede:
            outcomes["servfail"] += 1
        else:
            raise AssertionError(f"forwarded {a.name}: {a}")
    assert answers and LOST not in outcomes
    return outcomes


def back(port: int) -> bool:
    """The upstream answers through us again (a fresh name: not from the cache)."""
    return rcode(ask(port, f"probe{random.randrange(10**9)}.example.test")) == "NXDOMAIN"


# Each fault: the forward options, how to apply it to the upstream(s), whether SERVFAIL is
# the right answer meanwhile, and how to clear it (None: it stays, and answers must stay
# right through it).
FAULTS: dict[str, tuple[dict[str, str], Callable[..., None], bool,
                        Callable[..., None] | None]] = {
    # Slower than usual but within the timeout: every answer still right.
    "slow": ({"timeout": "1s"}, lambda up: setattr(up[0], "delay", 0.2), False,
             lambda up: setattr(up[0], "delay", 0.0)),
    # Silent: every try times out (EDE 22), then it answers again.
    "silent": ({"timeout": "200ms", "tries": "1", "health_check": "50ms"},
               lambda up: setattr(up[0], "mode", "silent"), True,
               lambda up: setattr(up[0], "mode", "answer")),
    # Lying: replies that do not match the query are dropped, never relayed.
    "wrong ID": ({"timeout": "200ms", "tries": "1", "health_check": "50ms"},
                 lambda up: setattr(up[0], "mode", "wrong_id"), True,
                 lambda up: setattr(up[0], "mode", "answer")),
    "wrong question": ({"timeout": "200ms", "tries": "1", "health_check": "50ms"},
                       lambda up: setattr(up[0], "mode", "wrong_question"), True,
                       lambda up: setattr(up[0], "mode", "answer")),
    "spoofed before the real answer": ({"timeout": "1s"},
                                       lambda up: setattr(up[0], "mode", "spoofed_first"),
                                       False, None),
    # Bigger than the 1232 bytes we advertise, without TC: asked again over TCP.
    "oversized UDP": ({}, lambda up: setattr(up[0], "mode", "oversized"), False, None),
    # TC over UDP every time, the whole answer over TCP.
    "TC over UDP forever": ({}, lambda up: setattr(up[0], "mode", "truncate"), False, None),
    # One of two dies (its port closes): the other answers every query.
    "one of two dead": ({"policy": "round_robin", "health_check": "50ms"},
                        lambda up: up[0].stop(), False, None),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_an_upstream_fault_under_load_never_touches_our_zone_and_never_lies(
        server_factory: Any, upstreams: Callable[..., FakeUpstream], fault: str) -> None:
    options, apply, servfail, clear = FAULTS[fault]
    ups = [upstreams().add(*EXAMPLE_RECORDS) for _ in range(2 if "two" in fault else 1)]
    srv = server_factory(zone_yaml() + forward_yaml((".", ups), **options))
    with Load(srv.port, [SERVED]) as served, \
            Load(srv.port, [CACHED, FRESH], seed=1) as forwarded:
        forwarded_ok(forwarded.wait_for(20), servfail=False)
        during = forwarded.mark()
        apply(ups)
        forwarded.wait_for(20, after=during)
        if clear is not None:
            clear(ups)
            assert until(lambda: back(srv.port), timeout=10)
        after = forwarded.mark()
        forwarded_ok(forwarded.wait_for(20, after=after), servfail=False)
        served.wait_for(50)
    outcomes = forwarded_ok(forwarded.answers[during:after], servfail=servfail)
    served_ok(served.answers)
    if fault in ("silent", "wrong ID", "wrong question"):
        assert outcomes["servfail"] >= 1  # the fault was seen, and answered SERVFAIL


def test_a_tcp_only_upstream_under_load_answers_over_one_reused_connection(
        server_factory: Any, upstreams: Callable[..., FakeUpstream]) -> None:
    tcp_only = upstreams(udp=False).add(*EXAMPLE_RECORDS)
    srv = server_factory(zone_yaml() + forward_yaml((".", [tcp_only]), force_tcp="true"))
    with Load(srv.port, [SERVED]) as served, \
            Load(srv.port, [CACHED, FRESH], seed=1) as forwarded:
        forwarded.wait_for(100)
        served.wait_for(50)
    forwarded_ok(forwarded.answers, servfail=False)
    served_ok(served.answers)
    assert {s.transport for s in tcp_only.queries} == {"tcp"}
    assert tcp_only.tcp_connections == 1


def test_a_tcp_only_upstream_without_force_tcp_is_servfail_and_our_zone_answers(
        server_factory: Any, upstreams: Callable[..., FakeUpstream]) -> None:
    tcp_only = upstreams(udp=False).add(*EXAMPLE_RECORDS)
    srv = server_factory(zone_yaml() + forward_yaml((".", [tcp_only])))
    with Load(srv.port, [SERVED]) as served, Load(srv.port, [FRESH], seed=1) as forwarded:
        forwarded.wait_for(50)
        served.wait_for(50)
    outcomes = forwarded_ok(forwarded.answers, servfail=True)
    assert outcomes == {"servfail": len(forwarded.answers)}
    assert {a.ede for a in forwarded.answers} == {(23,)}  # network error, at once
    served_ok(served.answers)


def test_an_upstream_answering_tc_and_refusing_tcp_is_servfail_without_a_retry_storm(
        server_factory: Any, upstreams: Callable[..., FakeUpstream]) -> None:
    udp_only = upstreams(tcp=False).add(*EXAMPLE_RECORDS)
    udp_only.mode = "truncate"
    srv = server_factory(zone_yaml() + forward_yaml((".", [udp_only]), tries="2"))
    with Load(srv.port, [SERVED]) as served, Load(srv.port, [FRESH], seed=1) as forwarded:
        forwarded.wait_for(50)
        served.wait_for(50)
    outcomes = forwarded_ok(forwarded.answers, servfail=True)
    assert outcomes == {"servfail": len(forwarded.answers)}
    served_ok(served.answers)
    # Each client query costs the upstream at most `tries` UDP queries: TC is not retried
    # over UDP, and the refused TCP is not retried either.
    asked = Counter(s.qname for s in udp_only.queries if s.qname.startswith("n"))
    assert asked and max(asked.values()) <= 2


# -- reload to a broken file, under load ------------------------------------------------

BROKEN: dict[str, Callable[[Path], None]] = {
    "a YAML syntax error": lambda p: p.write_text("zones: [{name: global\nservices: ]]\n"),
    "binary garbage": lambda p: p.write_bytes(bytes(range(256)) * 8),
    "an empty file": lambda p: p.write_text(""),
    "only comments": lambda p: p.write_text("# emptied by a broken template\n\n"),
    "a value that fails a check": lambda p: p.write_text(
        p.read_text().replace("10.0.0.2", "10.0.0.x")),
    "a directory in its place": lambda p: (p.unlink(), p.mkdir()),
    "the file gone": lambda p: p.unlink(),
}


def test_reloads_to_broken_files_under_load_keep_every_answer(
        server_factory: Any, tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "gd.yaml"
    good = (f"dns: {{listen: 127.0.0.1:{port}}}\nreload: {{interval: 50ms}}\n"
            + zone_yaml())
    path.write_text(good)
    srv = server_factory(good, config_path=str(path))
    reloads = srv.app.runtime.reloads
    with Load(port, [SERVED]) as served:
        for name, breaks in BROKEN.items():
            failures = reloads.results["failure"]
            mark = served.mark()
            breaks(path)
            served.wait_for(20, after=mark)
            if name not in ("the file gone", "a directory in its place"):
                assert until(lambda f=failures: reloads.results["failure"] > f), name
            if path.is_dir():
                path.rmdir()
            path.write_text(good)
        # Fixed: a real change applies, under the same load.
        changed = served.mark()
        path.write_text(good.replace("10.0.0.2", "10.0.0.3"))
        assert until(lambda: addresses(ask(port, SERVED)) == ["10.0.0.1", "10.0.0.3"])
        served.wait_for(20, after=served.mark())
    served_ok(served.answers[:changed])
    assert {a.addresses for a in served.answers[changed:]} <= {
        SERVED_ADDRESSES, ("10.0.0.1", "10.0.0.3")}
    assert all(a.rcode == "NOERROR" for a in served.answers)
    assert reloads.results["success"] == 1


def test_every_test_the_faults_table_names_exists() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    table = text[text.index("### Faults"):]
    named = re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", table)
    assert len(named) >= 10
    for path, test in named:
        assert re.search(rf"^(?:async )?def {test}\(", (ROOT / path).read_text(), re.M), test
