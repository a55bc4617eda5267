"""Waiting for something to happen, never for a length of time: poll a condition until it
holds, and fail (never pass) when it does not within a bound generous enough for a loaded
machine. The bound is a safety net, not a measurement: no test asserts how long it took."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

# Long enough that a machine running seven test suites at once still gets there; a
# condition that is never met fails the test after this long instead of hanging it.
BOUND = 20.0
# How often the condition is looked at: short, since nothing is measured.
POLL = 0.01


def wait_until(condition: Callable[[], Any], *, timeout: float = BOUND,
               what: str = "") -> Any:
    """Poll `condition()` until it is truthy and return its value; AssertionError after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout:g}s: {what or condition}")
        # Polling: the condition changes on another thread (a server's loop, a process).
        time.sleep(POLL)


async def eventually(condition: Callable[[], Any], *, timeout: float = BOUND,
                     what: str = "") -> Any:
    """wait_until for async tests: the event loop keeps running between polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout:g}s: {what or condition}")
        # Polling: lets the loop run the tasks that will make the condition true.
        await asyncio.sleep(POLL)


def closed_by_server(conn: socket.socket, within: float = 5.0) -> bool:
    """Whether the server closes `conn` within `within` seconds (any bytes it sends
    first are read and ignored)."""
    conn.settimeout(within)
    try:
        while conn.recv(65535):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True
