"""Time the test moves instead of waiting for: a clock to read (`Clock`), and a clock with
a `sleep` that returns only when the test moves time past it (`ManualTime`)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any

from tests.helpers.wait import eventually


class Clock:
    """A clock the test moves (e.g. the cache's `clock`)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Ticks:
    """A sleep (and clock) the test drives, for a task on the server's loop: each sleep
    waits for the test's `tick(seconds)`, which moves the clock by that much. `sleeping`
    counts the sleeps begun, so the test knows when the task finished a round."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.now = 1000.0
        self.sleeping = 0
        self._ticks: asyncio.Queue[float] = asyncio.Queue()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeping += 1
        self.now += await self._ticks.get()

    def tick(self, seconds: float) -> None:
        """Let one sleep end, `seconds` later (from any thread)."""
        self.loop.call_soon_threadsafe(self._ticks.put_nowait, seconds)


class ManualTime:
    """`now()` and `sleep()` for code that takes them (health checks, upstream probes):
    a sleep ends when `advance()` moves time to its end, in order of their ends. A
    `sleep(0)` only yields, as asyncio's does."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None], asyncio.Task[Any]]] = []
        self._order = itertools.count()
        self.sleeps: list[float] = []
        """Every non-zero sleep asked for, in order."""

    def now(self) -> float:
        return self.t

    def _asleep(self) -> set[asyncio.Task[Any]]:
        return {task for _, _, future, task in self._sleepers if not future.done()}

    @property
    def sleeping(self) -> int:
        """Tasks waiting in sleep() now."""
        return len(self._asleep())

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        self.sleeps.append(seconds)
        future = asyncio.get_running_loop().create_future()
        task = asyncio.current_task()
        assert task is not None
        heapq.heappush(self._sleepers, (self.t + seconds, next(self._order), future, task))
        try:
            await future
        finally:
            future.cancel()  # a cancelled sleeper is no longer counted

    async def until_sleeping(self, count: int) -> None:
        """Wait (really, bounded) until `count` tasks sleep, e.g. every task started."""
        await eventually(lambda: self.sleeping >= count,
                         what=f"{count} tasks sleeping (now {self.sleeping})")

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking each sleep that ends on the way, in
        order; after each wake-up, wait (really, bounded) until every task woken is asleep
        again or finished: the work it did, such as a probe over a real socket, is done."""
        end = self.t + seconds
        while self._sleepers and self._sleepers[0][0] <= end:
            self.t = max(self.t, self._sleepers[0][0])
            woken = []
            while self._sleepers and self._sleepers[0][0] <= self.t:
                _, _, future, task = heapq.heappop(self._sleepers)
                if not future.done():
                    future.set_result(None)
                    woken.append(task)
            await eventually(lambda w=woken: all(t.done() or t in self._asleep() for t in w),
                             what="the woken tasks to sleep again or end")
        self.t = end
