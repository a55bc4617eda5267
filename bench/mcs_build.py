"""What `clusterset.local` and routing annotations cost when the answer snapshot is built.

2,000 services of 10 endpoints in each of two clusters, built whole (as at start or a
reload), best of N interleaved runs; each figure is a ratio against its peer in the same
run: a second zone of `global`'s kind (the same names under another zone, which costs the
collector as much heap), and the same weights given by a config rule.

    .venv/bin/python bench/mcs_build.py [--runs 5]
"""

from __future__ import annotations

import argparse
import gc
import time

from globaldns.answers.snapshot import Snapshot
from globaldns.config.model import Config, RoutingRule, ZoneConfig
from globaldns.registry.model import Endpoint, Port, ServiceData, ServicePolicy
from globaldns.registry.store import Store

WEIGHTS = (("east", 70), ("west", 30))


def store(*, annotated: bool) -> Store:
    s = Store()
    policy = ServicePolicy("bench", "weighted", weights=WEIGHTS) if annotated else None
    for i in range(2000):
        for n, cluster in enumerate(("east", "west"), 1):
            endpoints = tuple(
                Endpoint(address=f"10.{i % 250}.{(i // 250) * 20 + j}.{n}", cluster=cluster,
                         hostname=f"pod-{j}") for j in range(10))
            s.set(f"k8s/{cluster}", ("prod", f"svc{i}"),
                  ServiceData(ports=(Port("http", 80),), endpoints=endpoints, policy=policy))
    return s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    only_global = (ZoneConfig("global"),)
    cases = {
        "global": Config(zones=only_global),
        "global + global2": Config(zones=(*only_global, ZoneConfig("global2"))),
        "global + clusterset.local": Config(zones=(*only_global,
                                                   ZoneConfig("clusterset.local"))),
        "weights by config rule": Config(zones=only_global, routing=(
            RoutingRule(match="*.prod", weights=WEIGHTS),)),
        "weights by annotation": Config(zones=only_global),
    }
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(runs):
        for name, config in cases.items():
            # A fresh store each time: a store keeps every snapshot built on it (its
            # listener), whose heap would slow the collector for the cases after it.
            source = store(annotated=name == "weights by annotation")
            gc.collect()
            start = time.perf_counter()
            Snapshot(config, source)
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"global alone: {best['global']:.2f} s")
    print(f"global + clusterset.local / global + global2: "
          f"{best['global + clusterset.local'] / best['global + global2']:.2f}")
    print(f"weights by annotation / weights by config rule: "
          f"{best['weights by annotation'] / best['weights by config rule']:.2f}")


if __name__ == "__main__":
    main()
