"""Scale of the Kubernetes watches: many clusters, many services, one registry.

    python bench/k8s_scale.py [--clusters 10] [--services 2000] [--endpoints 5]
                              [--changes 1000]

A child process runs the emulated API servers (tests/k8s/emulator.py, one per cluster,
on 127.0.0.1); this process runs only KubernetesSources + Store (+ the DNS answer
Snapshot, which is what a query reads), so its RSS is globaldns's own. It reports:
- time from start() to `synced` (every cluster listed), and RSS after it;
- propagation: the emulator writes a change (timestamped in the child) → the store's
  listener sees it here (same host clock), p50/p99 over --changes changes;
- the cost of one event (EndpointSlice MODIFIED → merge → store → snapshot), timed in
  this process, with the full registry and with a one-cluster registry (10x fewer
  endpoints): it should not grow with the registry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from globaldns.config.model import ClusterConfig, Config  # noqa: E402
from globaldns.registry.model import Locality  # noqa: E402
from globaldns.registry.store import Store  # noqa: E402


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process, in MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


SHARD = 200
"""Services carry the label bench/shard=<n // SHARD>; the small registry watches shard 0:
the same clusters and per-service width, a tenth (at 2,000 services) of the endpoints."""


def marker(seq: int) -> str:
    return f"10.250.{seq >> 8 & 255}.{seq & 255}"


# --- the child: emulated clusters ------------------------------------------------------


async def serve(args: argparse.Namespace) -> None:
    from tests.k8s import emulator as em

    directory = Path(args.dir)
    emulators = []
    for c in range(args.clusters):
        e = em.Emulator(f"c{c}", history_limit=20_000)
        for s in range(args.services):
            shard = {"bench/shard": str(s // SHARD)}
            e.put(em.service("bench", f"svc{s}", labels=shard))
            e.put(em.endpoint_slice("bench", f"svc{s}-1", f"svc{s}", labels=shard, endpoints=[
                em.endpoint(f"10.{c}.{(s * args.endpoints + i) >> 8 & 255}."
                            f"{(s * args.endpoints + i) & 255}", zone=f"z{i % 3}")
                for i in range(args.endpoints)]))
        await e.start()
        emulators.append(e)
    kubeconfigs = [e.write_kubeconfig(directory / f"{e.name}.kubeconfig") for e in emulators]
    print(json.dumps({"kubeconfigs": kubeconfigs}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        command, *rest = line.split()
        if command == "emit":
            count, interval = int(rest[0]), float(rest[1])
            emitted = []
            for seq in range(count):
                e = emulators[seq % len(emulators)]
                s = (seq * 7) % args.services
                emitted.append(time.time())
                e.put(em.endpoint_slice("bench", f"svc{s}-1", f"svc{s}",
                                        labels={"bench/shard": str(s // SHARD)}, endpoints=[
                    em.endpoint(marker(seq))] + [em.endpoint(f"10.251.0.{i}")
                                                 for i in range(args.endpoints - 1)]))
                await asyncio.sleep(interval)
            print(json.dumps({"emitted": emitted}), flush=True)
    for e in emulators:
        await e.stop()


# --- this process: globaldns -----------------------------------------------------------


def cluster_configs(kubeconfigs: list[str], selector: str = "") -> tuple[ClusterConfig, ...]:
    return tuple(ClusterConfig(name=Path(k).stem, kubeconfig=k, label_selector=selector,
                               locality=Locality(f"region-{i}"))
                 for i, k in enumerate(kubeconfigs))


def event_objects(n: int, endpoints: int, run: int) -> list[dict[str, Any]]:
    """n slice updates, each a real change (run: a fresh address block per call)."""
    from tests.k8s import emulator as em

    objects = []
    for i in range(n):
        s = i % SHARD  # services every registry size has
        obj = em.endpoint_slice("bench", f"svc{s}-1", f"svc{s}", labels={"bench/shard": "0"},
                                endpoints=[em.endpoint(f"10.{100 + run}.{i >> 8 & 255}.{i & 255}"),
                                           *(em.endpoint(f"10.253.0.{k}")
                                             for k in range(endpoints - 1))])
        obj["metadata"]["resourceVersion"] = str(10**9 + i)
        objects.append(obj)
    return objects


RUNS = iter(range(100))


def event_cost(sources: Any, n: int, endpoints: int) -> float:
    """Microseconds per EndpointSlice MODIFIED event, applied as a watch applies it (the
    HTTP read and JSON decode are in the propagation figure instead); best of 5."""
    source = sources.clusters()[0]
    watch = next(w for w in source.watches if w.resource.plural == "endpointslices")
    best = float("inf")
    for _ in range(5):
        objects = event_objects(n, endpoints, next(RUNS))
        start = time.perf_counter()
        for obj in objects:
            source.event(watch, "MODIFIED", obj)
        best = min(best, (time.perf_counter() - start) / len(objects) * 1e6)
    return best


async def synced_sources(kubeconfigs: list[str], selector: str = "") -> tuple[Any, Store,
                                                                               dict]:
    from globaldns.sources.k8s.fleet import KubernetesSources

    config = Config(clusters=cluster_configs(kubeconfigs, selector))
    store = Store()
    sources = KubernetesSources(config, store)
    before = rss_mb()[0]
    start = time.perf_counter()
    await sources.start()
    while not sources.synced:
        await asyncio.sleep(0.005)
    synced = time.perf_counter() - start
    rss, peak = rss_mb()
    endpoints = sum(s["endpoints"] for s in sources.status())
    return sources, store, {"synced_s": synced, "rss_mb": rss, "peak_rss_mb": peak,
                            "rss_before_mb": before, "endpoints": endpoints}


async def main(args: argparse.Namespace) -> None:
    import globaldns.sources.k8s.fleet  # noqa: F401  (import time is startup, not sync)
    from globaldns.answers.snapshot import Snapshot

    with tempfile.TemporaryDirectory() as directory:
        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "serve", "--dir", directory,
            "--clusters", str(args.clusters), "--services", str(args.services),
            "--endpoints", str(args.endpoints),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, limit=2**26)
        assert child.stdout is not None and child.stdin is not None
        t0 = time.perf_counter()
        kubeconfigs = json.loads(await child.stdout.readline())["kubeconfigs"]
        print(f"emulators (child process) ready: {len(kubeconfigs)} clusters x "
              f"{args.services} services x {args.endpoints} endpoints "
              f"({time.perf_counter() - t0:.1f}s to build)")

        # Full registry, KubernetesSources + Store only: time to synced, RSS.
        sources, store, full = await synced_sources(kubeconfigs)
        print(f"all synced: {full['synced_s']:.2f}s for {full['endpoints']} endpoints in "
              f"{len(store.service_keys())} merged services; RSS {full['rss_mb']:.0f} MB "
              f"(peak {full['peak_rss_mb']:.0f} MB; {full['rss_before_mb']:.0f} MB "
              f"before start)")

        # Propagation: emulator write (child clock) -> store listener (ours).
        seen: dict[int, float] = {}

        def listener(key: tuple[str, str]) -> None:
            now = time.time()
            for data in store.raw(key).values():
                if data.endpoints and data.endpoints[0].address.startswith("10.250."):
                    _, _, hi, lo = data.endpoints[0].address.split(".")
                    seen.setdefault(int(hi) << 8 | int(lo), now)

        store.subscribe(listener)
        child.stdin.write(f"emit {args.changes} {args.interval}\n".encode())
        await child.stdin.drain()
        emitted = json.loads(await child.stdout.readline())["emitted"]
        deadline = time.time() + 10
        while len(seen) < len(emitted) and time.time() < deadline:
            await asyncio.sleep(0.01)
        latencies = sorted((seen[i] - t) * 1000 for i, t in enumerate(emitted) if i in seen)
        p50 = statistics.median(latencies)
        p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
        print(f"propagation, emulator write -> store (one change every "
              f"{args.interval * 1000:g} ms): {len(latencies)}/{len(emitted)} seen, "
              f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {latencies[-1]:.2f} ms")

        big_k8s = event_cost(sources, args.events, args.endpoints)
        big_dns = 0.0
        if args.snapshot:
            t1 = time.perf_counter()
            snapshot = Snapshot(Config(clusters=cluster_configs(kubeconfigs)), store)
            build = time.perf_counter() - t1
            big_dns = event_cost(sources, args.events, args.endpoints)
            print(f"DNS Snapshot over that registry: built in {build:.1f}s, RSS then "
                  f"{rss_mb()[0]:.0f} MB")
            del snapshot
        await sources.stop()

        # A tenth of the endpoints (same clusters, same per-service width).
        small_sources, small_store, small = await synced_sources(
            kubeconfigs, selector="bench/shard=0")
        small_k8s = event_cost(small_sources, args.events, args.endpoints)
        print(f"one event, slice MODIFIED -> merge -> store: {small_k8s:.1f} us at "
              f"{small['endpoints']} endpoints, {big_k8s:.1f} us at {full['endpoints']}")
        if args.snapshot:
            Snapshot(Config(clusters=cluster_configs(kubeconfigs)), small_store)
            small_dns = event_cost(small_sources, args.events, args.endpoints)
            print(f"one event, the same + DNS Snapshot update: {small_dns:.1f} us at "
                  f"{small['endpoints']} endpoints, {big_dns:.1f} us at "
                  f"{full['endpoints']} (services {args.clusters} clusters wide: "
                  f"{args.clusters * args.endpoints} endpoints each)")
        await small_sources.stop()
        child.stdin.write(b"\n")
        await child.stdin.drain()
        child.stdin.close()
        await child.wait()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "serve"])
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--events", type=int, default=1000,
                        help="events timed for the per-event cost")
    parser.add_argument("--interval", type=float, default=0.002,
                        help="seconds between emitted changes")
    parser.add_argument("--snapshot", action="store_true",
                        help="also time the DNS answer Snapshot (slow for wide services)")
    parser.add_argument("--dir", default="")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.mode == "serve":
        asyncio.run(serve(arguments))
    else:
        asyncio.run(main(arguments))
