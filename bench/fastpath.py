"""The per-query cost of the UDP path in-process, this checkout against another revision,
in the same run: `python3 bench/fastpath.py [--base REV] [--rounds 5] [--queries 200000]`.

Each round runs both trees in fresh interpreters, interleaved, and times
`UdpListener.datagram_received` (the socket left out: a transport whose `sendto` does
nothing) for: a repeated lowercase query (the wire-cache hit), the same name in 64
casings (0x20), and a query that always takes the full path (an EDNS option). The report
is the least ns per query of each over the rounds (the run least disturbed by other
load on the machine) and the ratio this/base, and the same for the median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """
clusters: [{name: east, locality: us-east1}]
services:
  - name: api
    namespace: prod
    endpoints:
      - {address: 10.7.0.1, cluster: east}
      - {address: 10.7.0.2, cluster: east}
      - {address: 10.7.0.3, cluster: east}
"""


def _query(name: str, *, option: bool = False) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    head = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00" + (b"\x00\x01" if option else b"\x00\x00")
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x04\x00\x03\x00\x00" if option else b""
    return head + labels + b"\x00\x00\x01\x00\x01" + opt


def worker(queries: int) -> None:
    """Run inside one tree (its path first on sys.path): print ns per query as JSON."""
    import asyncio

    from globaldns.app import App
    from globaldns.config.parse import parse_text
    from globaldns.dns.udp import UdpListener

    class Transport:
        def sendto(self, data: bytes, addr: object) -> None:
            pass

    app = App(parse_text(CONFIG, "bench.yaml"))
    # The server moved from App to its Runtime (issue 15); a base revision may predate it.
    runtime = getattr(app, "runtime", app)
    listener = UdpListener(runtime.server)
    listener.transport = Transport()  # type: ignore[assignment]
    addr = ("127.0.0.1", 5300)
    name = "api.prod.global"
    casings = [_query("".join(c.upper() if i >> k & 1 else c for k, c in enumerate(name)))
               for i in range(64)]
    cases = {"hit": [_query(name)], "casings": casings,
             "full path": [_query(name, option=True)]}
    out = {}

    async def run() -> None:
        receive = listener.datagram_received
        for case, packets in cases.items():
            for data in packets:
                receive(data, addr)  # the slow path once: remembered
            n = len(packets)
            start = time.perf_counter_ns()
            for i in range(queries):
                receive(packets[i % n], addr)
            out[case] = (time.perf_counter_ns() - start) / queries
    asyncio.run(run())
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="HEAD~1", help="the revision to compare against")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--queries", type=int, default=200_000)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.queries)
        return
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.base, "globaldns"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        trees = {"base": Path(tmp), "this": ROOT}
        results: dict[str, list[dict[str, float]]] = {"base": [], "this": []}
        for _ in range(args.rounds):
            for label, tree in trees.items():
                done = subprocess.run(
                    [sys.executable, __file__, "--worker", "--queries", str(args.queries)],
                    env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                    check=True, capture_output=True, text=True, cwd=tree)
                results[label].append(json.loads(done.stdout.strip().splitlines()[-1]))
    base_rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.base],
                              check=True, capture_output=True, text=True).stdout.strip()
    print(f"ns per query over {args.rounds} rounds of {args.queries} "
          f"(base {args.base} = {base_rev})")
    print(f"{'case':<12} {'base min':>9} {'this min':>9} {'ratio':>6}   "
          f"{'base med':>9} {'this med':>9} {'ratio':>6}")
    for case in results["base"][0]:
        row = []
        for pick in (min, statistics.median):
            base = pick(r[case] for r in results["base"])
            this = pick(r[case] for r in results["this"])
            row.append(f"{base:9.0f} {this:9.0f} {this / base:6.3f}")
        print(f"{case:<12} " + "   ".join(row))


if __name__ == "__main__":
    main()
