"""Fixtures for the Kubernetes tests: emulated clusters, kubeconfigs, time that runs fast."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from globaldns.config.model import ClusterConfig, Config
from globaldns.registry.model import Locality
from globaldns.sources.k8s.watch import Timing
from tests.k8s.emulator import Emulator

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "k8s"

# Virtual seconds per real second: backoff, stale_for and sync_timeout run this much
# faster. Watch idle timeouts are network timeouts and stay real.
SPEED = 50.0


class FastTime:
    """A Timing whose seconds are 1/SPEED real seconds; records every sleep asked for."""

    def __init__(self, speed: float = SPEED, seed: int = 7) -> None:
        self.speed = speed
        self.sleeps: list[float] = []
        self.timing = Timing(clock=self.clock, sleep=self.sleep, rng=random.Random(seed))

    def clock(self) -> float:
        return time.monotonic() * self.speed

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(seconds / self.speed)


@pytest.fixture
def fast() -> FastTime:
    return FastTime()


@pytest.fixture
async def emulators() -> AsyncIterator[Callable[..., Any]]:
    """`await emulators("a", "b")`: started emulators, stopped at the end of the test."""
    started: list[Emulator] = []

    async def make(*names: str, **kw: Any) -> list[Emulator]:
        made = []
        for name in names:
            emulator = Emulator(name, **kw)
            await emulator.start()
            started.append(emulator)
            made.append(emulator)
        return made

    yield make
    for emulator in started:
        await emulator.stop()


def cluster_config(emulator: Emulator, directory: Path, **kw: Any) -> ClusterConfig:
    """A `clusters` entry for an emulator, with a kubeconfig file written for it."""
    path = emulator.write_kubeconfig(directory / f"{emulator.name}.kubeconfig")
    kw.setdefault("locality", Locality.parse(f"region-{emulator.name}"))
    return ClusterConfig(name=emulator.name, kubeconfig=path, **kw)


def config_of(*clusters: ClusterConfig, **kw: Any) -> Config:
    return Config(clusters=tuple(clusters), **kw)


async def eventually(predicate: Callable[[], Any], *, timeout: float = 5.0,
                     what: str = "") -> None:
    """Wait until `predicate()` is true (polling; the loop keeps running meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.01)
