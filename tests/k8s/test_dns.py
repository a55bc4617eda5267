"""DNS answers over real UDP sockets, fed by emulated clusters, through faults.

The server is the real App (tests/helpers/server.py runs it on its own thread and loop), with
its Kubernetes sources on a scaled clock; the emulators run on the test's loop.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from globaldns.sources.k8s.fleet import KubernetesSources
from tests.helpers.k8s import (
    FastTime,
    answers,
    dns_eventually,
    query,
    timing_for,
    web,
    yaml_for,
)
from tests.helpers.server import Running
from tests.helpers.wait import eventually
from tests.k8s import emulator as em
from tests.k8s.expect import held


def attach(server: Running, fast: FastTime) -> KubernetesSources:
    """The App's own KubernetesSources (app.py starts them with the server)."""
    return server.app.runtime.kubernetes




def detach(server: Running, sources: KubernetesSources) -> None:
    """Nothing to do: the App stops its sources when the fixture stops it."""










async def test_servfail_until_ready_then_merged_answers_and_nxdomain(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    a, b = await emulators("a", "b")
    web(a, "10.1.0.1", "10.1.0.2")
    web(b, "10.2.0.1")
    a.fail(403, count=None, plurals=["endpointslices"])  # a cannot sync
    # sync_timeout 60 s runs in 1.2 s here.
    server = server_factory(yaml_for([a, b], tmp_path, sync_timeout="60s"),
                            k8s_timing=timing_for(fast))
    sources = attach(server, fast)
    try:
        await eventually(lambda: sources.status()[1]["state"] == "synced")
        # b is synced, a is not: an unknown name is SERVFAIL (no negative answer from
        # incomplete data), a known one is answered from what is there.
        assert not sources.ready
        assert await answers(server.port, "nothere.prod.global") == ("SERVFAIL", [])
        assert await answers(server.port, "web.prod.global") == ("NOERROR", ["10.2.0.1"])
        # sync_timeout passed: ready without a, negative answers are given.
        await dns_eventually(server.port, "nothere.prod.global", ("NXDOMAIN", []))
        assert sources.ready and not sources.synced
        a.clear_faults()
        await dns_eventually(server.port, "web.prod.global",
                             ("NOERROR", ["10.1.0.1", "10.1.0.2", "10.2.0.1"]))
        assert sources.synced
        # One cluster's endpoints, by cluster name.
        assert await answers(server.port, "a.web.prod.global") == (
            "NOERROR", ["10.1.0.1", "10.1.0.2"])
        # SRV targets the EndpointSlice port.
        srv = await query(server.port, "_http._tcp.web.prod.global", "SRV")
        assert {rr.rdata.port for rr in srv.rr} == {8080}
    finally:
        detach(server, sources)


async def test_answers_through_drop_410_and_an_outage_past_stale_for(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    a, b = await emulators("a", "b")
    web(a, "10.1.0.1")
    web(b, "10.2.0.1")
    a.put(em.service("prod", "only-a"))
    a.put(em.endpoint_slice("prod", "only-a-1", "only-a", endpoints=[em.endpoint("10.1.9.9")]))
    # stale_for 60 s runs in 1.2 s here.
    server = server_factory(yaml_for([a, b], tmp_path, stale_for="60s"),
                            k8s_timing=timing_for(fast))
    sources = attach(server, fast)
    port = server.port
    try:
        await dns_eventually(port, "web.prod.global", ("NOERROR", ["10.1.0.1", "10.2.0.1"]))
        await eventually(lambda: a.open_watches == 2)
        # A dropped stream: the change made meanwhile arrives on resume.
        a.drop_watches()
        web(a, "10.1.0.3")
        await dns_eventually(port, "web.prod.global", ("NOERROR", ["10.1.0.3", "10.2.0.1"]))
        # 410: missed events and compaction; the relist deletes what is gone.
        await eventually(lambda: a.open_watches == 2)
        a.freeze_watches()
        a.delete("endpointslices", "prod", "only-a-1")
        a.delete("services", "prod", "only-a")
        a.compact()
        a.drop_watches()
        await dns_eventually(port, "only-a.prod.global", ("NXDOMAIN", []))
        # Unreachable: still answered (stale), then dropped after stale_for, then back.
        await a.stop()
        await eventually(lambda: sources.status()[0]["state"] == "stale")
        assert await answers(port, "web.prod.global") == ("NOERROR", ["10.1.0.3", "10.2.0.1"])
        await dns_eventually(port, "web.prod.global", ("NOERROR", ["10.2.0.1"]))
        web(a, "10.1.0.4")
        await a.restart()
        await dns_eventually(port, "web.prod.global", ("NOERROR", ["10.1.0.4", "10.2.0.1"]))
    finally:
        detach(server, sources)


async def test_random_changes_and_faults_end_with_answers_equal_to_the_clusters(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    from tests.helpers.k8s import Chaos

    rng = random.Random(11)
    clusters = await emulators("r1", "r2")
    chaos = Chaos(rng, clusters)
    for e in clusters:
        for _ in range(10):
            chaos.change(e)
    server = server_factory(yaml_for(clusters, tmp_path, watch_idle_timeout="1s"),
                            k8s_timing=timing_for(fast))
    sources = attach(server, fast)
    try:
        await eventually(lambda: sources.synced, timeout=10)
        await chaos.run(60, fault_rate=0.15)
        chaos.calm()
        await eventually(lambda: all(s["state"] == "synced" for s in sources.status()),
                         timeout=15)
        # What the emulators hold, as DNS should answer it (fail open when none ready).
        views = [held(e) for e in clusters]
        names = {key for view in views for key in view}
        for ns in ("prod", "dev"):
            for svc in ("svc0", "svc1", "svc2", "svc3", "svc4", "svc5"):
                key = (ns, svc)
                endpoints = [ep for view in views for ep in view.get(key, ())]
                ready = sorted(addr for addr, ok in endpoints if ok)
                if key not in names:
                    expected = ("NXDOMAIN", [])
                else:
                    expected = ("NOERROR", ready or sorted(addr for addr, _ in endpoints))
                await dns_eventually(server.port, f"{svc}.{ns}.global", expected)
    finally:
        detach(server, sources)
