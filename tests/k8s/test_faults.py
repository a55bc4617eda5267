"""Kubernetes API faults applied to a running server with load on it (tests/faultload.py:
a UDP query loop on its own thread, every answer kept), answers judged afterwards: a
cluster's API down for minutes then back, a storm of 410s, a watch that stalls without
closing, 403 on one cluster. Through each, `web.prod.global` is answered NOERROR every
time with what the clusters held (a cluster that cannot be reached keeps its last
endpoints while stale), and once the fault is gone with what they hold now.

The server's watch timing runs on FastTime (50 virtual seconds per real one): "minutes"
down take seconds. The emulators run on the test's loop, so every wait on the load is
made in a thread."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from globaldns.sources.k8s.watch import BACKOFF_BASE
from tests.helpers.faultload import Answer, Load
from tests.helpers.k8s import FastTime, dns_eventually, timing_for, web, yaml_for
from tests.helpers.server import Running
from tests.helpers.wait import eventually

NAME = "web.prod.global"


def state(server: Running, name: str) -> str:
    return next(s["state"] for s in server.app.runtime.kubernetes.status() if s["cluster"] == name)


def cluster(server: Running, name: str) -> Any:
    return next(s for s in server.app.runtime.kubernetes.clusters() if s.name == name)


async def more(load: Load, count: int = 20) -> list[Answer]:
    """`count` more answers from now (waited for in a thread: the emulators keep serving)."""
    mark = load.mark()
    return await asyncio.to_thread(load.wait_for, count, after=mark)


def judged(answers: list[Answer], *allowed: tuple[str, ...]) -> None:
    """Every answer NOERROR, casing echoed, its addresses one of the allowed sets."""
    sets = {tuple(sorted(a)) for a in allowed}
    bad = [a for a in answers if a.rcode != "NOERROR" or not a.echoed
           or a.addresses not in sets]
    assert answers and not bad, f"{len(bad)} of {len(answers)} wrong, e.g. {bad[:3]}"


async def start(server_factory: Any, emulators: list[Any], tmp_path: Path, fast: FastTime,
                **extra: str) -> Running:
    server: Running = server_factory(yaml_for(emulators, tmp_path, **extra),
                                     k8s_timing=timing_for(fast))
    await eventually(lambda: server.app.runtime.kubernetes.synced, timeout=10)
    return server


async def test_a_cluster_api_down_for_minutes_then_back_is_answered_throughout(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    a, b = await emulators("a", "b")
    web(a, "10.1.0.1")
    web(b, "10.2.0.1")
    server = await start(server_factory, [a, b], tmp_path, fast)  # stale_for: 300 s
    port = server.port
    await dns_eventually(port, NAME, ("NOERROR", ["10.1.0.1", "10.2.0.1"]))
    with Load(port, [NAME]) as load:
        await more(load)
        await a.stop()
        down_at = fast.clock()
        await eventually(lambda: state(server, "a") == "stale")
        web(a, "10.1.0.9")  # changed while its API server is away
        await eventually(lambda: fast.clock() - down_at >= 180, timeout=30,
                         what="three virtual minutes")
        await more(load)
        assert state(server, "a") == "stale"  # still within stale_for
        away = load.mark()
        await a.restart()
        await dns_eventually(port, NAME, ("NOERROR", ["10.1.0.9", "10.2.0.1"]))
        back = load.mark()
        await more(load)
    judged(load.answers[:away], ("10.1.0.1", "10.2.0.1"))
    judged(load.answers[away:], ("10.1.0.1", "10.2.0.1"), ("10.1.0.9", "10.2.0.1"))
    judged(load.answers[back:], ("10.1.0.9", "10.2.0.1"))
    await eventually(lambda: state(server, "a") == "synced", timeout=10)
    assert cluster(server, "a").errors_by_kind["connection"] >= 2  # it kept trying


async def test_a_storm_of_410s_under_load_relists_and_answers_every_query(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    a, b = await emulators("a", "b")
    web(a, "10.1.0.1")
    web(b, "10.2.0.1")
    server = await start(server_factory, [a, b], tmp_path, fast)
    port = server.port
    await dns_eventually(port, NAME, ("NOERROR", ["10.1.0.1", "10.2.0.1"]))
    allowed = [("10.1.0.1", "10.2.0.1")]
    with Load(port, [NAME]) as load:
        await more(load)
        # Every watch request answered 410 thirty times over, and meanwhile changes made
        # behind compactions and dropped streams: each 410 costs a relist.
        a.fail(410, count=30, on="watch")
        for i in range(10):
            await eventually(lambda: a.open_watches >= 1 or a.faults, what="a watch")
            a.freeze_watches()
            web(a, f"10.1.1.{i}")
            allowed.append((f"10.1.1.{i}", "10.2.0.1"))
            a.compact()
            a.drop_watches()
            await more(load, 5)
        await dns_eventually(port, NAME, ("NOERROR", ["10.1.1.9", "10.2.0.1"]))
        settled = load.mark()
        await more(load)
    judged(load.answers, *allowed)
    judged(load.answers[settled:], ("10.1.1.9", "10.2.0.1"))
    assert cluster(server, "a").relists >= 10
    await eventually(lambda: state(server, "a") == state(server, "b") == "synced",
                     timeout=10)


async def test_a_watch_that_stalls_without_closing_is_reopened_under_load(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    a, b = await emulators("a", "b")
    web(a, "10.1.0.1")
    web(b, "10.2.0.1")
    # watch_idle_timeout is a network timeout: real seconds.
    server = await start(server_factory, [a, b], tmp_path, fast, watch_idle_timeout="300ms")
    port = server.port
    await dns_eventually(port, NAME, ("NOERROR", ["10.1.0.1", "10.2.0.1"]))
    with Load(port, [NAME]) as load:
        await more(load)
        await eventually(lambda: a.open_watches == 2)
        a.freeze_watches()  # open, silent: a dead NAT entry
        web(a, "10.1.0.2")
        await dns_eventually(port, NAME, ("NOERROR", ["10.1.0.2", "10.2.0.1"]))
        settled = load.mark()
        await more(load)
    judged(load.answers, ("10.1.0.1", "10.2.0.1"), ("10.1.0.2", "10.2.0.1"))
    judged(load.answers[settled:], ("10.1.0.2", "10.2.0.1"))
    assert cluster(server, "a").errors_by_kind["idle_timeout"] >= 1
    assert cluster(server, "a").relists == 0  # resumed from its resourceVersion


async def test_403_on_one_cluster_under_load_keeps_its_endpoints_and_the_others_flowing(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    a, b = await emulators("a", "b")
    web(a, "10.1.0.1")
    web(b, "10.2.0.1")
    server = await start(server_factory, [a, b], tmp_path, fast)
    port = server.port
    await dns_eventually(port, NAME, ("NOERROR", ["10.1.0.1", "10.2.0.1"]))
    with Load(port, [NAME]) as load:
        await more(load)
        a.fail(403, count=None)  # RBAC taken away
        a.drop_watches()
        await eventually(lambda: cluster(server, "a").errors_by_kind["forbidden"] >= 2)
        assert state(server, "a") == "stale"
        web(a, "10.1.0.2")  # not seen while forbidden
        web(b, "10.2.0.2")  # seen: the other cluster keeps flowing
        await dns_eventually(port, NAME, ("NOERROR", ["10.1.0.1", "10.2.0.2"]))
        forbidden = load.mark()
        await more(load)
        cleared = load.mark()
        a.clear_faults()
        await dns_eventually(port, NAME, ("NOERROR", ["10.1.0.2", "10.2.0.2"]))
        settled = load.mark()
        await more(load)
    judged(load.answers[:cleared], ("10.1.0.1", "10.2.0.1"), ("10.1.0.1", "10.2.0.2"))
    judged(load.answers[forbidden:cleared], ("10.1.0.1", "10.2.0.2"))
    judged(load.answers[cleared:], ("10.1.0.1", "10.2.0.2"), ("10.1.0.2", "10.2.0.2"))
    judged(load.answers[settled:], ("10.1.0.2", "10.2.0.2"))
    await eventually(lambda: state(server, "a") == "synced", timeout=10)  # both watches


async def test_a_quiet_watch_that_idles_out_again_and_again_reopens_at_the_first_step(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    # A watch with no events and no bookmarks (a Services watch in a quiet cluster) ends
    # by idle timeout every time; each reopen must not back off further than the last,
    # or after a few the watch stays closed for the 30 s cap and misses changes that long.
    a, b = await emulators("a", "b")
    web(a, "10.1.0.1")
    web(b, "10.2.0.1")
    server: Running = server_factory(
        yaml_for([a, b], tmp_path, watch_idle_timeout="300ms"), k8s_timing=fast.timing)
    await eventually(lambda: server.app.runtime.kubernetes.synced, timeout=10)
    with Load(server.port, [NAME]) as load:
        await eventually(lambda: cluster(server, "a").errors_by_kind["idle_timeout"] >= 8,
                         timeout=20)
        answers = await more(load)
    judged(answers, ("10.1.0.1", "10.2.0.1"))
    backoffs = [s for s in fast.sleeps if s < 20]  # not the sync_timeout/stale_for timers
    assert backoffs and max(backoffs) <= BACKOFF_BASE
