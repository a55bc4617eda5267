"""Random endpoint changes and faults (seeded, bounded): no update is ever lost.

Three emulated clusters get random creates, updates, relabels and deletes of Services and
EndpointSlices, interleaved with random faults: dropped and frozen streams, compaction,
401/403/500 answers, expired continue tokens, the server down and back. When the faults
stop, each cluster's part of the store must equal what its emulator holds.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from globaldns.config.model import Config
from globaldns.registry.store import Store
from globaldns.sources.k8s.fleet import KubernetesSources
from tests.helpers.k8s import Chaos, FastTime, cluster_config
from tests.helpers.wait import eventually
from tests.k8s.expect import held, published

# More seeds: GLOBALDNS_RANDOM_SEEDS=100 (each run takes about a second).
SEEDS = list(range(1, 1 + int(os.environ.get("GLOBALDNS_RANDOM_SEEDS", "3"))))




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
