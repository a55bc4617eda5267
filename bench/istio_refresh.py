"""What one Istio event costs with N ServiceEntries in a cluster: the Istio source
recomputes only the hosts the event touches, and the store and the snapshot redo only
those; the cost should not grow with N. Peer in the same run: the same change
as one EndpointSlice event of a Kubernetes service.

    .venv/bin/python bench/istio_refresh.py [N ...]
"""

from __future__ import annotations

import sys
import time

from globaldns.answers.snapshot import Snapshot
from globaldns.config.model import ClusterConfig, Config, ZoneConfig
from globaldns.registry.store import Store
from globaldns.sources.k8s.cluster import ClusterSource
from globaldns.sources.k8s.istio import SERVICE_ENTRIES, IstioSource
from globaldns.sources.k8s.watch import Timing


def entry(i: int, last: int = 1) -> dict[str, object]:
    return {"metadata": {"name": f"se-{i}", "namespace": "default"}, "spec": {
        "hosts": [f"svc-{i}.default.global"], "resolution": "STATIC",
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
        "endpoints": [{"address": f"10.{i // 250}.{i % 250}.{j + last}",
                       "locality": "us-west1/us-west1-a"} for j in range(10)]}}


def slice_(i: int, last: int = 1) -> dict[str, object]:
    return {"metadata": {"name": f"k-{i}-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": f"k-{i}"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 80}],
            "endpoints": [{"addresses": [f"10.{i // 250}.{i % 250}.{j + last}"]}
                          for j in range(10)]}


def per_event(n: int, rounds: int = 50) -> tuple[float, float]:
    store = Store()
    Snapshot(Config(zones=(ZoneConfig("global"),)), store)
    istio = IstioSource("east", store, owner=None, live=lambda: True)
    for i in range(n):
        istio.put(SERVICE_ENTRIES, entry(i))
    istio.publish()
    start = time.perf_counter()
    for r in range(rounds):
        istio.put(SERVICE_ENTRIES, entry(0, last=2 + r % 2))
        istio.refresh()
    istio_cost = (time.perf_counter() - start) / rounds

    cluster = ClusterSource(ClusterConfig("east"), store, load_credentials=lambda: None,  # type: ignore[arg-type,return-value]
                            timing=Timing())
    cluster._published = True
    for i in range(n):
        record = cluster._convert_slice(slice_(i))
        assert record is not None
        cluster._put_slice(record)
    start = time.perf_counter()
    for r in range(rounds):
        record = cluster._convert_slice(slice_(0, last=2 + r % 2))
        assert record is not None
        for key in cluster._put_slice(record):
            cluster._refresh(key)
    return istio_cost, (time.perf_counter() - start) / rounds


def main() -> None:
    for n in [int(a) for a in sys.argv[1:]] or [10, 100, 1000]:
        istio, k8s = per_event(n)
        print(f"{n:6d} ServiceEntries: one event {istio * 1e3:7.2f} ms; "
              f"EndpointSlice peer {k8s * 1e3:6.2f} ms; ratio {istio / k8s:6.1f}")


if __name__ == "__main__":
    main()
