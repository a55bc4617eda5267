"""Random endpoint changes and faults (seeded, bounded): no update is ever lost.

Three emulated clusters get random creates, updates, relabels and deletes of Services and
EndpointSlices, interleaved with random faults: dropped and frozen streams, compaction,
401/403/500 answers, expired continue tokens, the server down and back. When the faults
stop, each cluster's part of the store must equal what its emulator holds.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
from pathlib import Path
from typing import Any

import pytest

from globaldns.config.model import Config
from globaldns.registry.store import Store
from globaldns.sources.k8s.fleet import KubernetesSources
from tests.k8s import emulator as em
from tests.k8s.conftest import FastTime, cluster_config, eventually
from tests.k8s.expect import held, published

# More seeds: GLOBALDNS_RANDOM_SEEDS=100 (each run takes about a second).
SEEDS = list(range(1, 1 + int(os.environ.get("GLOBALDNS_RANDOM_SEEDS", "3"))))
SERVICES = [f"svc{i}" for i in range(6)]
NAMESPACES = ["prod", "dev"]


class Chaos:
    def __init__(self, rng: random.Random, emulators: list[em.Emulator]) -> None:
        self.rng = rng
        self.emulators = emulators
        self.addresses = itertools.count(1)
        self.log: list[str] = []

    async def run(self, steps: int, fault_rate: float) -> None:
        """`steps` random changes, a share of them faults, with short random pauses."""
        rng = self.rng
        for _ in range(steps):
            e = rng.choice(self.emulators)
            if rng.random() < fault_rate:
                await self.fault(e)
            else:
                self.change(e)
            if rng.random() < 0.3:
                await asyncio.sleep(rng.uniform(0, 0.03))

    def calm(self) -> None:
        """No more faults: every emulator answers promptly again."""
        for e in self.emulators:
            e.clear_faults()
            e.latency = 0
            e.continue_ttl = 300.0

    def address(self) -> str:
        n = next(self.addresses)
        return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"

    def change(self, e: em.Emulator) -> None:
        rng = self.rng
        ns, svc = rng.choice(NAMESPACES), rng.choice(SERVICES)
        roll = rng.random()
        if roll < 0.45:
            name = f"{svc}-{rng.randrange(3)}"
            owner = svc if rng.random() < 0.9 else rng.choice(SERVICES)  # relabel
            endpoints = [em.endpoint(self.address(), ready=rng.random() < 0.8,
                                     zone=rng.choice(["", "a", "b"]))
                         for _ in range(rng.randrange(4))]
            e.put(em.endpoint_slice(ns, name, owner, endpoints=endpoints))
            self.log.append(f"{e.name} slice {ns}/{name}→{owner} {len(endpoints)}")
        elif roll < 0.65:
            e.delete("endpointslices", ns, f"{svc}-{rng.randrange(3)}")
            self.log.append(f"{e.name} delete slice {ns}/{svc}")
        elif roll < 0.85:
            e.put(em.service(ns, svc, ports=[("http", rng.choice([80, 8080]), "TCP")]))
            self.log.append(f"{e.name} service {ns}/{svc}")
        else:
            e.delete("services", ns, svc)
            self.log.append(f"{e.name} delete service {ns}/{svc}")

    async def fault(self, e: em.Emulator) -> None:
        rng = self.rng
        kind = rng.choice(["drop", "freeze", "compact", "compact-drop", "500", "401", "403",
                           "expire-continue", "down", "latency"])
        self.log.append(f"{e.name} FAULT {kind}")
        if kind == "drop":
            e.drop_watches()
        elif kind == "freeze":
            e.freeze_watches()
        elif kind == "compact":
            e.compact()
        elif kind == "compact-drop":
            e.compact()
            e.drop_watches()
        elif kind in ("500", "401", "403"):
            e.fail(int(kind), count=rng.randrange(1, 4))
            e.drop_watches()
        elif kind == "expire-continue":
            e.continue_ttl = 0
            e.drop_watches()
        elif kind == "down":
            await e.stop()
            await asyncio.sleep(rng.uniform(0, 0.15))
            await e.restart()
        elif kind == "latency":
            e.latency = rng.uniform(0, 0.05)


@pytest.mark.parametrize("seed", SEEDS)
async def test_random_changes_and_faults_lose_no_update(seed: int, emulators: Any,
                                                        tmp_path: Path) -> None:
    rng = random.Random(seed)
    clusters = await emulators("r1", "r2", "r3")
    chaos = Chaos(rng, clusters)
    for e in clusters:
        for _ in range(15):
            chaos.change(e)
    fast = FastTime(seed=seed)
    store = Store()
    configs = [cluster_config(e, tmp_path, watch_idle_timeout=0.4,
                              # r3 drops its data quickly, so recoveries republish it.
                              stale_for=5.0 if e.name == "r3" else 300.0)
               for e in clusters]
    sources = KubernetesSources(Config(clusters=tuple(configs)), store, timing=fast.timing)
    await sources.start()
    try:
        await eventually(lambda: sources.synced)
        for e in clusters:
            e.page_cap = 3  # every relist paginates
        await chaos.run(120, fault_rate=0.12)
        chaos.calm()
        for e in clusters:
            await eventually(
                lambda e=e: published(store, f"k8s/{e.name}") == held(e), timeout=15,
                what=f"{e.name} converged; last ops: {chaos.log[-8:]}")
        await eventually(lambda: all(s["state"] == "synced" for s in sources.status()),
                         timeout=10)
        for status in sources.status():
            assert "internal" not in status["errors_by_kind"], status
        if os.environ.get("GLOBALDNS_RANDOM_VERBOSE"):
            for status in sources.status():
                print(status["cluster"], status["relists"], status["errors_by_kind"],
                      status["events"])
    finally:
        await sources.stop()
