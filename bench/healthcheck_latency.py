"""DNS answer latency while active health checks run on the same event loop, against the
same server without checks (the peer, in the same run).

    python3 bench/healthcheck_latency.py [--seconds 3] [--endpoints 500]

The checked server has `--endpoints` endpoints (100 services) on a port where nothing
listens, checked every 500 ms: 1,000 refused connects a second, more than 5,000 endpoints
checked every 10 s would cost, and every endpoint flips to unhealthy once. Both servers
answer one unchecked name for `--seconds`, one query at a time from this process; the
script prints p50, p99 and max of each and the ratio checked / unchecked. It was a test
(tests/test_healthcheck.py) with absolute bounds, which a loaded machine broke; here the
figure is a ratio against the peer. Writing every flip where its check ended once stalled
the loop for 100+ ms; a ratio near 1 says the writer task keeps queries flowing.
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import sys
import time
from pathlib import Path

from procs import use_project_venv

use_project_venv()

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.dns import addresses, ask  # noqa: E402
from tests.helpers.server import Running, start  # noqa: E402

PROBE = """
  - name: probe
    namespace: production
    endpoints: [{address: 10.9.0.1, cluster: primary}]
"""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(endpoints: int) -> str:
    services = ""
    if endpoints:
        port = closed_port()
        per = max(1, endpoints // 100)
        services = "".join(f"""
  - name: svc{i}
    namespace: production
    health_check: {{tcp: {{port: {port}}}, interval: 500ms, unhealthy_threshold: 2}}
    endpoints: [{", ".join(f"{{address: 127.1.{i}.{j + 1}, cluster: primary}}"
                            for j in range(per))}]
""" for i in range(min(100, endpoints)))
    return f"""
zones: [{{name: global, ttl: 0, on_all_unhealthy: none}}]
clusters: [{{name: primary, locality: us-central1}}]
services:
{services}{PROBE}"""


def measure(server: Running, seconds: float) -> list[float]:
    latencies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        assert addresses(ask(server.port, "probe.production.global")) == ["10.9.0.1"]
        latencies.append(time.perf_counter() - t)
    latencies.sort()
    return latencies


def summary(latencies: list[float]) -> tuple[float, float, float]:
    return (statistics.median(latencies), latencies[int(len(latencies) * 0.99)],
            latencies[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--endpoints", type=int, default=500)
    args = p.parse_args()
    # 500 flips are 500 warnings: not what this measures.
    logging.getLogger("globaldns.healthcheck").setLevel(logging.ERROR)
    results = {}
    for name, endpoints in (("unchecked", 0), ("checked", args.endpoints)):
        server = start(config(endpoints))
        try:
            results[name] = summary(measure(server, args.seconds))
            if endpoints:
                health = server.app.health
                print(f"checked: {len(health.endpoints)} endpoints, "
                      f"{health.checks['refused']} refused checks, "
                      f"{health.transitions['unhealthy']} flips")
        finally:
            server.stop()
    for name, (p50, p99, top) in results.items():
        print(f"{name:9}  p50 {p50 * 1e3:6.2f} ms  p99 {p99 * 1e3:6.2f} ms  "
              f"max {top * 1e3:7.2f} ms")
    (a50, a99, _), (b50, b99, _) = results["checked"], results["unchecked"]
    print(f"ratio checked/unchecked  p50 {a50 / b50:.2f}  p99 {a99 / b99:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
