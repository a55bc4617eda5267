"""What the Kubernetes tests share: emulated clusters' configs and kubeconfigs, time that
runs fast (`FastTime`, `timing_for`), DNS queries from async tests, random changes
(`Chaos`)."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from pathlib import Path
from typing import Any

from aiohttp import web as aiohttp_web

from globaldns.config.model import ClusterConfig, Config
from globaldns.registry.model import Locality
from globaldns.sources.k8s.watch import Timing
from tests.helpers.data import DATA
from tests.helpers.dns import addresses, ask, rcode
from tests.k8s import emulator as em
from tests.k8s.emulator import Emulator

FIXTURES = DATA / "k8s"


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
        # Scaled, not skipped: the watches' network timeouts stay real (see SPEED), so the
        # virtual seconds must pass at a known pace beside them.
        await asyncio.sleep(seconds / self.speed)


def cluster_config(emulator: Emulator, directory: Path, **kw: Any) -> ClusterConfig:
    """A `clusters` entry for an emulator, with a kubeconfig file written for it."""
    path = emulator.write_kubeconfig(directory / f"{emulator.name}.kubeconfig")
    kw.setdefault("locality", Locality.parse(f"region-{emulator.name}"))
    return ClusterConfig(name=emulator.name, kubeconfig=path, **kw)


def config_of(*clusters: ClusterConfig, **kw: Any) -> Config:
    return Config(clusters=tuple(clusters), **kw)


async def serve(app: aiohttp_web.Application) -> tuple[aiohttp_web.AppRunner, str]:
    """Serve an aiohttp app on a free loopback port: (runner, base URL)."""
    runner = aiohttp_web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = aiohttp_web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def yaml_for(emulators: list[em.Emulator], directory: Path, *, sync_timeout: str = "30s",
             **extra: str) -> str:
    lines = ["zones: [{name: global, ttl: 5, negative_ttl: 5}]",
             f"sync_timeout: {sync_timeout}", "clusters:"]
    for e in emulators:
        path = e.write_kubeconfig(directory / f"{e.name}.kubeconfig")
        lines.append(f"  - name: {e.name}")
        lines.append(f"    locality: region-{e.name}")
        lines.append(f"    kubeconfig: {path}")
        for key, value in extra.items():
            lines.append(f"    {key}: {value}")
    return "\n".join(lines) + "\n"


def timing_for(fast: FastTime) -> Timing:
    """The App's watch timing: scaled seconds; its rng is touched from the App's loop only."""
    return Timing(clock=fast.clock, sleep=_scaled_sleep, rng=random.Random(5))


async def _scaled_sleep(seconds: float) -> None:
    # Scaled virtual seconds, as FastTime.sleep (without its record: another loop's).
    await asyncio.sleep(seconds / SPEED)


async def query(port: int, name: str, qtype: str = "A") -> Any:
    # A blocking socket call: in a thread, so the emulators on this loop keep serving.
    return await asyncio.to_thread(ask, port, name, qtype)


async def answers(port: int, name: str) -> tuple[str, list[str]]:
    reply = await query(port, name)
    return rcode(reply), sorted(addresses(reply))


async def dns_eventually(port: int, name: str, expected: tuple[str, list[str]],
                         timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await answers(port, name)
        if got == expected:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{name}: {got} != {expected}")
        # Polling: the answer changes on the server's loop as the watches deliver.
        await asyncio.sleep(0.02)


def web(e: em.Emulator, *addresses: str, ready: bool = True) -> None:
    e.put(em.service("prod", "web"))
    e.put(em.endpoint_slice("prod", "web-1", "web",
                            endpoints=[em.endpoint(a, ready=ready) for a in addresses]))


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
                # Seeded random interleaving of changes with the watches, not a wait for
                # anything: the test asserts on the end state once calm, never on time.
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
            # The outage's (random) length: a fault injected, not a wait for anything.
            await asyncio.sleep(rng.uniform(0, 0.15))
            await e.restart()
        elif kind == "latency":
            e.latency = rng.uniform(0, 0.05)
