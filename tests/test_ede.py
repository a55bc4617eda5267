"""Every SERVFAIL, stale answer and refusal says why: an Extended DNS Error (RFC 8914),
checked over real sockets, the way `dig` shows it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.dns import ask, ede, make_query, rcode, udp_raw
from tests.helpers.k8s import FastTime, timing_for, web, yaml_for
from tests.helpers.server import Running
from tests.helpers.upstreams import fake_upstreams
from tests.helpers.wait import eventually, wait_until

CONFIG = """
clusters: [{name: east, locality: r1}]
services:
  - name: api
    namespace: prod
    endpoints: [{address: 10.0.0.1, cluster: east}]
acl: {allow_query: [127.0.0.1/32], allow_debug: [127.0.0.1/32]}
"""




# (what, query name, qtype, qclass, source address, rcode, EDE code, text contains)
CASES = [
    ("no zone and no forward zone", "www.example.com", "A", "IN", "127.0.0.1",
     "REFUSED", 20, "Not Authoritative"),
    ("a client outside allow_query", "api.prod.global", "A", "IN", "127.0.0.2",
     "REFUSED", 18, "Prohibited"),
    ("an explanation outside allow_debug", "api.prod.global", "TXT", "CH", "127.0.0.3",
     "REFUSED", 18, "allow_debug"),
    ("a CHAOS name we do not serve", "example.com", "TXT", "CH", "127.0.0.1",
     "REFUSED", 21, "Not Supported"),
]


@pytest.mark.parametrize(("what", "name", "qtype", "qclass", "source", "expected", "code",
                          "text"), CASES, ids=[c[0] for c in CASES])
def test_refusals_say_why(server_factory: Any, what: str, name: str, qtype: str,
                          qclass: str, source: str, expected: str, code: int,
                          text: str) -> None:
    # 127.0.0.3 may query but not ask for explanations; 127.0.0.2 may not query at all.
    server: Running = server_factory(CONFIG.replace(
        "allow_query: [127.0.0.1/32]", "allow_query: [127.0.0.1/32, 127.0.0.3/32]"))
    reply = ask(server.port, name, qtype, qclass=qclass, source=source, edns=1232)
    assert rcode(reply) == expected
    assert [c for c, _ in ede(reply)] == [code]
    assert text in ede(reply)[0][1]


def test_forwarding_failures_say_why(server_factory: Any) -> None:
    with fake_upstreams() as make:
        silent = make()
        silent.mode = "silent"
        server: Running = server_factory(
            CONFIG + f"forward: [{{zone: example.test, upstreams: ['{silent}'], "
            "timeout: 300ms, tries: 1}]\n")
        reply = ask(server.port, "www.example.test", edns=1232)
        assert rcode(reply) == "SERVFAIL"
        assert ede(reply)[0][0] == 22 and "no answer in time" in ede(reply)[0][1]
        reply = ask(server.port, "example.test", "AXFR", edns=1232, tcp=True)
        assert rcode(reply) == "REFUSED" and ede(reply) == [(21, "Not Supported: zone "
                                                              "transfers")]


def test_overload_says_why(server_factory: Any) -> None:
    with fake_upstreams() as make:
        silent = make()
        silent.mode = "silent"
        server: Running = server_factory(
            CONFIG.replace("clusters:", "dns: {max_inflight: 1}\nclusters:")
            + f"forward: [{{zone: example.test, upstreams: ['{silent}'], timeout: 1s, "
            "tries: 1}]\n")
        waiting = threading.Thread(target=udp_raw, args=(
            server.port, make_query("a.example.test", edns=1232)), kwargs={"timeout": 2})
        waiting.start()
        try:
            assert wait_until(lambda: server.app.runtime.server.inflight == 1)
            reply = ask(server.port, "b.example.test", edns=1232)
            assert rcode(reply) == "REFUSED"
            assert ede(reply) == [(0, "overloaded: too many queries in flight")]
        finally:
            waiting.join()


async def test_not_synced_and_stale_clusters_say_why(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime,
) -> None:
    a, b = await emulators("a", "b")
    web(a, "10.1.0.1")
    web(b, "10.2.0.1")
    b.fail(403, count=None, plurals=["endpointslices"])  # b cannot list yet
    server: Running = server_factory(yaml_for([a, b], tmp_path, sync_timeout="600s",
                                              stale_for="600s"),
                                     k8s_timing=timing_for(fast))
    await eventually(lambda: server.app.runtime.kubernetes.status()[0]["state"] == "synced")
    reply = await asyncio.to_thread(ask, server.port, "nothere.prod.global", edns=1232)
    assert rcode(reply) == "SERVFAIL"
    assert ede(reply)[0][0] == 14 and "not synced" in ede(reply)[0][1]  # Not Ready
    b.clear_faults()
    await eventually(lambda: server.app.runtime.kubernetes.synced, timeout=10)
    reply = await asyncio.to_thread(ask, server.port, "web.prod.global", edns=1232)
    assert rcode(reply) == "NOERROR" and ede(reply) == []

    # a goes away: its last known endpoints are still answered, and the answer says so.
    await a.stop()
    await eventually(lambda: server.app.runtime.kubernetes.status()[0]["state"] == "stale",
                     timeout=10)
    reply = await asyncio.to_thread(ask, server.port, "web.prod.global", edns=1232)
    assert rcode(reply) == "NOERROR"
    assert sorted(str(rr.rdata) for rr in reply.rr) == ["10.1.0.1", "10.2.0.1"]
    ((code, text),) = ede(reply)
    assert code == 3 and text.startswith("cluster a unreachable (") \
        and text.endswith("): last known endpoints")
    # Names of a alone are stale, those of b alone are not.
    reply = await asyncio.to_thread(ask, server.port, "a.web.prod.global", edns=1232)
    assert [c for c, _ in ede(reply)] == [3]
    reply = await asyncio.to_thread(ask, server.port, "b.web.prod.global", edns=1232)
    assert ede(reply) == []
    await a.restart()
    await eventually(lambda: server.app.runtime.kubernetes.status()[0]["state"] == "synced",
                     timeout=10)
    reply = await asyncio.to_thread(ask, server.port, "web.prod.global", edns=1232)
    assert ede(reply) == []
