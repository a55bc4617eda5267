"""Where the bytes and the seconds of a 100k-endpoint registry go, in-process.

Builds the registry the way the server's first sync does (each cluster converts its
EndpointSlices and Services from API-shaped dicts, then publishes every service into the
Store, which prepares the Snapshot service by service), and prints per cluster the seconds
of the publish (one call on the event loop in the server), then tracemalloc's total and
top allocation sites, a census of live objects by type, and `gc.get_stats()` with the
time of one full collection. Not a timed test: run it by hand.

    .venv/bin/python bench/k8s_census.py --layout shared
    .venv/bin/python bench/k8s_census.py --layout distinct --config bench/out/latest/...yaml
"""

from __future__ import annotations

import argparse
import gc
import re
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.k8s_e2e import base_address, service_name  # noqa: E402
from globaldns.answers.snapshot import Snapshot  # noqa: E402
from globaldns.config import parse_text  # noqa: E402
from globaldns.registry.store import Store  # noqa: E402
from globaldns.sources.k8s import objects  # noqa: E402
from tests.k8s import emulator as em  # noqa: E402

CONFIG = """\
dns: {listen: 127.0.0.1:0}
resolver: {locality: r0/r0-a}
zones: [{name: global}]
clusters:
""" + "".join(f"  - {{name: c{c}, locality: r{c % 3}}}\n" for c in range(10))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--layout", default="shared", choices=["shared", "distinct"])
    p.add_argument("--clusters", type=int, default=10)
    p.add_argument("--services", type=int, default=2000)
    p.add_argument("--endpoints", type=int, default=5)
    p.add_argument("--tracemalloc", action="store_true",
                   help="trace allocations (slows the build several times)")
    args = p.parse_args()
    config = parse_text(CONFIG, "census.yaml")
    store = Store()
    snapshot = Snapshot(config, store)
    localities = {c.name: c.locality for c in config.clusters}
    base = rss_mb()
    if args.tracemalloc:
        tracemalloc.start()
    publish = []
    for c in range(args.clusters):
        cluster = f"c{c}"
        data = {}
        for s in range(args.services):
            name = service_name(args.layout, c, s)
            eps = [em.endpoint(base_address(args.layout, c, s, i, args.endpoints),
                               zone=f"z{i % 3}") for i in range(args.endpoints)]
            raw = em.endpoint_slice(args.layout, f"{name}-1", name, endpoints=eps)
            raw["metadata"]["resourceVersion"] = "1"
            record = objects.endpoint_slice(raw, cluster=cluster, locality=localities[cluster])
            service = objects.service(em.service(args.layout, name))
            data[(args.layout, name)] = objects.merge(service, [record])
        start = time.perf_counter()
        store.replace_source(f"k8s/{cluster}", data)
        publish.append(time.perf_counter() - start)
    print(f"layout {args.layout}: {len(store.service_keys())} services, "
          f"{args.clusters * args.services * args.endpoints} endpoints")
    print("publish per cluster (s, one loop turn in the server):",
          " ".join(f"{t:.2f}" for t in publish), f"total {sum(publish):.2f}")
    print(f"RSS growth {rss_mb() - base:.0f} MB (RSS {rss_mb():.0f} MB)")
    if args.tracemalloc:
        taken = tracemalloc.take_snapshot()
        stats = taken.statistics("lineno")
        print(f"tracemalloc: {sum(s.size for s in stats) / 2**20:.1f} MB live")
        for st in stats[:15]:
            where = re.sub(r"^.*?/(globaldns|tests|bench)/", r"\1/", str(st.traceback[0]))
            print(f"  {st.size / 2**20:7.1f} MB {st.count:9d}  {where}")
        tracemalloc.stop()
    census: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for o in gc.get_objects():
        census[type(o).__name__] += 1
        sizes[type(o).__name__] += sys.getsizeof(o)
    print(f"gc-tracked objects: {sum(census.values())}; by type (count, shallow MB):")
    for name, n in census.most_common(15):
        print(f"  {n:9d} {sizes[name] / 2**20:7.1f}  {name}")
    print("gc.get_stats():", gc.get_stats())
    start = time.perf_counter()
    gc.collect()
    print(f"one full collection: {(time.perf_counter() - start) * 1000:.0f} ms")
    gc.freeze()
    start = time.perf_counter()
    gc.collect()
    print(f"after gc.freeze(): {(time.perf_counter() - start) * 1000:.1f} ms")
    del snapshot


if __name__ == "__main__":
    main()
