"""Fixtures: a real globaldns server (tests/helpers/server.py), started from YAML text and
stopped at the end of the test; emulated Kubernetes clusters and fast time for them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.helpers.k8s import FastTime
from tests.helpers.server import EXAMPLE, Running, free_port, start
from tests.k8s.emulator import Emulator


@pytest.fixture
def server_factory() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def factory(yaml_text: str, **kw: Any) -> Running:
        running = start(yaml_text, **kw)
        started.append(running)
        return running

    yield factory
    for running in started:
        running.stop()


@pytest.fixture
def example(server_factory: Callable[..., Running]) -> Running:
    """The README's example config, as served by `globaldns serve` without --config."""
    return server_factory(EXAMPLE.replace("listen: 127.0.0.1:5353",
                                          f"listen: 127.0.0.1:{free_port()}"))


@pytest.fixture
def fast() -> FastTime:
    """Kubernetes timing whose seconds run SPEED times faster (tests/helpers/k8s.py)."""
    return FastTime()


@pytest.fixture
async def emulators() -> AsyncIterator[Callable[..., Any]]:
    """`await emulators("a", "b")`: started emulated clusters, stopped at the end."""
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
