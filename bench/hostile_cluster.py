"""How long one huge EndpointSlice holds the event loop, from watch event to DNS answers.

    python bench/hostile_cluster.py [--endpoints 20000] [--runs 3]

A child process runs one emulated API server (tests/k8s/emulator.py); this process runs
KubernetesSources + Store + the DNS answer Snapshot, and a probe task that wakes every
millisecond and records the longest gap between two wake-ups: the longest time anything
held the loop. Then the emulator writes one EndpointSlice of --endpoints addresses (a
~1.5 MB watch event at 20,000), and the run ends when the snapshot answers for its last
endpoint. Two configs:
- `limits.max_endpoints_per_service` raised to --endpoints: the slice is parsed,
  converted and prepared in steps (k8s/jsonsteps, objects.endpoint_slice_steps,
  Snapshot._update_later), and swapped in whole;
- the default limit (1,000): the slice is skipped before it is parsed.
Reported per run: the longest loop gap while the slice was applied, the time until it was
answered, and the number of steps the loop was given back in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procs import use_project_venv  # noqa: E402

use_project_venv()

from globaldns.config.model import ClusterConfig, Config, LimitsConfig  # noqa: E402
from globaldns.dns.message import text_to_wire  # noqa: E402
from globaldns.registry.model import Locality  # noqa: E402
from globaldns.registry.store import Store  # noqa: E402


def address(i: int) -> str:
    return f"10.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"


async def serve(args: argparse.Namespace) -> None:
    from tests.k8s import emulator as em

    e = em.Emulator("big")
    e.put(em.service("prod", "web"))
    e.put(em.endpoint_slice("prod", "web-1", "web", endpoints=[em.endpoint("10.0.0.1")]))
    e.put(em.service("prod", "crowd"))
    await e.start()
    print(json.dumps({"kubeconfig": e.write_kubeconfig(Path(args.dir) / "big.kubeconfig")}),
          flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        run = int(line)
        e.put(em.endpoint_slice("prod", "crowd-1", "crowd", endpoints=[
            em.endpoint(address(run * 7 + i)) for i in range(args.endpoints)]))
        print(json.dumps({"sent": run}), flush=True)
    await e.stop()


class Collections:
    """Garbage collections (gc.callbacks): the longest one, and how many, by generation."""

    def __init__(self) -> None:
        self.started = 0.0
        self.longest = 0.0
        self.count = [0, 0, 0]
        gc.callbacks.append(self._callback)

    def reset(self) -> None:
        self.longest = 0.0
        self.count = [0, 0, 0]

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self.started)
            self.count[info["generation"]] += 1


class Probe:
    """The longest gaps between two wake-ups of a 1 ms sleeper: the loop's worst block, in
    wall time and in this thread's CPU time (which leaves out time the OS gave other
    processes: the bench machine is shared), and the worst CPU block with no full GC in it
    (our code's longest step)."""

    def __init__(self, collections: Collections) -> None:
        self.collections = collections
        self.wall = self.cpu = self.cpu_no_gc = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last, last_cpu = time.perf_counter(), time.thread_time()
        full = self.collections.count[2]
        while True:
            await asyncio.sleep(0.001)
            now, cpu = time.perf_counter(), time.thread_time()
            self.wall = max(self.wall, now - last - 0.001)
            self.cpu = max(self.cpu, cpu - last_cpu)
            if self.collections.count[2] == full:
                self.cpu_no_gc = max(self.cpu_no_gc, cpu - last_cpu)
            last, last_cpu, full = now, cpu, self.collections.count[2]

    def start(self) -> None:
        self.wall = self.cpu = self.cpu_no_gc = 0.0
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def one_config(child: asyncio.subprocess.Process, kubeconfig: str, limit: int,
                     args: argparse.Namespace, first_run: int) -> None:
    from globaldns.answers.snapshot import Snapshot
    from globaldns.sources.k8s.fleet import KubernetesSources

    assert child.stdin is not None and child.stdout is not None
    config = Config(clusters=(ClusterConfig("big", kubeconfig=kubeconfig,
                                            locality=Locality("r1")),),
                    limits=LimitsConfig(max_endpoints_per_service=limit))
    store = Store()
    snapshot = Snapshot(config, store)
    sources = KubernetesSources(config, store)
    await sources.start()
    while not sources.synced or not all(w.healthy for s in sources.clusters()
                                        for w in s.watches):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the watches are open
    gc.freeze()  # as App.run does after start
    collections = Collections()
    probe = Probe(collections)
    for run in range(first_run, first_run + args.runs):
        source = sources.clusters()[0]
        yields = source.yields + snapshot.yields
        last = text_to_wire(f"{address(run * 7 + args.endpoints - 1).replace('.', '-')}"
                            ".big.crowd.prod.global")
        skipped = store.skipped.counts["too_many_endpoints"]
        collections.reset()
        probe.start()
        start = time.perf_counter()
        child.stdin.write(f"{run}\n".encode())
        await child.stdin.drain()
        await child.stdout.readline()
        while last not in snapshot.names and \
                store.skipped.counts["too_many_endpoints"] == skipped:
            await asyncio.sleep(0.001)
        took = time.perf_counter() - start
        await probe.stop()
        outcome = "answered" if last in snapshot.names else "skipped unparsed"
        print(f"  limit {limit:>6}: {args.endpoints} endpoints {outcome} in "
              f"{took * 1000:7.1f} ms; longest loop block {probe.wall * 1000:5.1f} ms wall, "
              f"{probe.cpu * 1000:5.1f} ms CPU, {probe.cpu_no_gc * 1000:5.1f} ms CPU without a "
              "full GC; "
              f"loop given back {source.yields + snapshot.yields - yields} times; "
              f"GCs (gen 0/1/2) {'/'.join(map(str, collections.count))}, longest "
              f"{collections.longest * 1000:.1f} ms")
    await sources.stop()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as directory:
        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "serve", "--dir", directory,
            "--endpoints", str(args.endpoints),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, limit=2**26)
        assert child.stdout is not None and child.stdin is not None
        kubeconfig = json.loads(await child.stdout.readline())["kubeconfig"]
        print(f"one EndpointSlice of {args.endpoints} endpoints, written {args.runs} times "
              "per config (each time new addresses):")
        await one_config(child, kubeconfig, args.endpoints, args, 0)
        await one_config(child, kubeconfig, LimitsConfig().max_endpoints_per_service,
                         args, args.runs)
        child.stdin.write(b"\n")
        await child.stdin.drain()
        child.stdin.close()
        await child.wait()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "serve"])
    parser.add_argument("--endpoints", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default="")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    asyncio.run(serve(arguments) if arguments.mode == "serve" else main(arguments))
