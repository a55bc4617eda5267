"""Loop time of /debug/registry at 100,000 endpoints (issue 10).

    python3 bench/hostile_http.py [--endpoints 100000] [--requests 20] [--legacy-all]

globaldns's App runs in this process on its own event loop thread, with its registry
filled directly (the store, as the watches fill it) in three shapes of the same size:
1,000 services x 100 endpoints, 100,000 services x 1, and 1 service x 100,000. A client
in the main thread asks for pages one at a time, so the loop thread does nothing but
answer them: the CPU time of that thread during one request (parsing, the handler, JSON,
writing) is the loop time the request cost. Reported: the first request after the fill
(it sorts the new service keys in slices: its CPU, and the longest the loop was held at
once, seen by a 1 ms timer), the first page (p50 and max over --requests), and a walk of
every page with `continue` (pages, max and total loop time). Generation-2 collections
walk every object of the process (100,000 endpoints make them long) whatever code
allocated last; their loop-thread CPU is taken out of the per-request figures and
reported apart.
--legacy-all asks once for `?limit=0` (the whole registry, the old API) on builds that
still have it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from procs import use_project_venv  # noqa: E402

use_project_venv()

from globaldns.app import App  # noqa: E402
from globaldns.config import parse_text  # noqa: E402
from globaldns.registry.model import Endpoint, ServiceData  # noqa: E402

CONFIG = "dns: {listen: 127.0.0.1:0}\nhttp: {listen: 127.0.0.1:0}\nzones: [{name: global}]\n"


class Server:
    """The App on a loop thread; `cpu()` is that thread's CPU time."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.app: App | None = None
        started = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)

            async def boot() -> None:
                self.app = App(parse_text(CONFIG, "bench.yaml"))
                await self.app.start()

            self.loop.run_until_complete(boot())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        started.wait(30)
        assert self.thread.ident is not None
        self.clock = time.pthread_getcpuclockid(self.thread.ident)
        self.full_gcs: list[float] = []
        """Loop-thread CPU seconds of each generation-2 collection (they walk every
        object of the process, whatever allocated last; reported apart)."""
        self._gc_start = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2 or threading.get_ident() != self.thread.ident:
            return
        if phase == "start":
            self._gc_start = self.cpu()
        else:
            self.full_gcs.append(self.cpu() - self._gc_start)

    def cpu(self) -> float:
        return time.clock_gettime(self.clock)

    def call(self, fn: Any, *args: Any) -> Any:
        async def run() -> Any:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(600)

    def get(self, path: str) -> tuple[float, int, bytes]:
        """(loop CPU seconds without full GCs, status, body) of one GET."""
        assert self.app is not None
        url = f"http://127.0.0.1:{self.app.http.port}{path}"
        gcs = len(self.full_gcs)
        before = self.cpu()
        try:
            with urllib.request.urlopen(url, timeout=600) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        return self.cpu() - before - sum(self.full_gcs[gcs:]), status, body

    def settle(self) -> None:
        """Wait until the loop is idle (the store's listeners have done their work)."""
        for _ in range(200):
            before = self.cpu()
            time.sleep(0.3)
            if self.cpu() - before < 0.003:
                return

    def longest_hold(self, path: str) -> tuple[float, float]:
        """(loop CPU seconds, the longest the loop was held at once) of one GET, seen by a
        timer asking to run every millisecond meanwhile."""
        worst = [0.0]
        done = threading.Event()

        async def probe() -> None:
            loop = asyncio.get_running_loop()
            while not done.is_set():
                before = loop.time()
                await asyncio.sleep(0.001)
                worst[0] = max(worst[0], loop.time() - before - 0.001)

        task = asyncio.run_coroutine_threadsafe(probe(), self.loop)
        cost, status, _ = self.get(path)
        done.set()
        task.result(10)
        assert status == 200
        return cost, worst[0]

    def stop(self) -> None:
        assert self.app is not None
        asyncio.run_coroutine_threadsafe(self.app.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def fill(app: App, services: int, per_service: int) -> None:
    store = app.runtime.store
    for key in list(store.service_keys()):
        for source in list(store.raw(key)):
            store.delete(source, key)
    n = 0
    for s in range(services):
        endpoints = []
        for _ in range(per_service):
            endpoints.append(Endpoint(address=f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}",
                                      cluster="east", labels=(("app", f"svc{s}"),)))
            n += 1
        store.set("k8s/east", (f"ns{s % 50}", f"svc{s:06d}"), ServiceData(
            endpoints=tuple(endpoints)))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def shape(server: Server, services: int, per_service: int, args: argparse.Namespace) -> None:
    assert server.app is not None
    server.call(fill, server.app, services, per_service)
    server.settle()
    gcs = len(server.full_gcs)
    rebuild, hold = server.longest_hold("/debug/registry")
    first = [server.get("/debug/registry") for _ in range(args.requests)]
    assert all(status == 200 for _, status, _ in first), first[0][2][:200]
    costs = [c for c, _, _ in first]
    pages, walk, token, size = 0, [], "", 0
    while True:
        path = "/debug/registry" + (f"?continue={urllib.parse.quote(token)}" if token else "")
        cost, status, body = server.get(path)
        page = json.loads(body)
        pages += 1
        walk.append(cost)
        size = max(size, len(body))
        token = page.get("continue")
        if not token:
            break
    print(f"| {services:,} x {per_service:,} | {ms(rebuild)} / {ms(hold)} | "
          f"{ms(statistics.median(costs))} | "
          f"{ms(max(costs))} | {pages} | {ms(max(walk))} | {ms(sum(walk))} | "
          f"{size / 1e6:.2f} | {len(server.full_gcs) - gcs}, "
          f"{ms(max(server.full_gcs[gcs:], default=0))} |", flush=True)
    if args.legacy_all:
        cost, status, body = server.get("/debug/registry?limit=0")
        print(f"|   `?limit=0` (whole registry): {ms(cost)} ms loop time, status {status}, "
              f"{len(body) / 1e6:.1f} MB |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--legacy-all", action="store_true")
    args = parser.parse_args()
    server = Server()
    n = args.endpoints
    print("| services x endpoints | first request after the fill: loop CPU / longest "
          "hold (ms) | first page p50 (ms) | first page max (ms) | pages | walk: max per "
          "page (ms) | walk: total (ms) | largest page (MB) | full GCs in the loop "
          "thread meanwhile: count, longest (ms) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    try:
        for services, per_service in ((n // 100, 100), (n, 1), (1, n)):
            shape(server, services, per_service, args)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
