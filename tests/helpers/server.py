"""A globaldns under test: in this process (the App on its own thread and event loop,
started from YAML text) or as a `globaldns serve` process."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from globaldns.app import App
from globaldns.config import parse_text
from globaldns.config.model import DnsConfig, ListenAddress
from tests.helpers.data import ROOT

GLOBALDNS = [sys.executable, "-m", "globaldns"]

def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


class Running:
    """A started App on a background event loop."""

    def __init__(self, app: App, loop: asyncio.AbstractEventLoop, thread: threading.Thread):
        self.app = app
        self.loop = loop
        self.thread = thread

    @property
    def port(self) -> int:
        return self.app.runtime.port

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(*args) on the server's loop (the only thread that may touch its state)."""
        async def run() -> Any:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def stop(self) -> None:
        self.run(self.app.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def start(yaml_text: str, *, source: str = "test.yaml", **kw: Any) -> Running:
    if not re.search(r"(?m)^http:", yaml_text):
        # Not the default 127.0.0.1:9153: tests run side by side with each other (and with
        # a globaldns someone runs on this machine).
        yaml_text = "http: {listen: 127.0.0.1:0}\n" + yaml_text
    config = parse_text(yaml_text, source)
    if config.dns.listen == DnsConfig().listen:
        # Nor the default DNS port, for the same reason.
        config = dataclasses.replace(config, dns=dataclasses.replace(
            config.dns, listen=ListenAddress("127.0.0.1", free_port())))
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    def main() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            try:
                app = App(config, **kw)
                await app.start()
                box["app"] = app
            except BaseException as exc:  # reported to the test thread
                box["error"] = exc
            finally:
                ready.set()

        loop.run_until_complete(boot())
        if "app" in box:
            loop.run_forever()
        loop.close()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    ready.wait(10)
    if "error" in box:
        raise box["error"]
    return Running(box["app"], loop, thread)


EXAMPLE = (ROOT / "config" / "example.yaml").read_text()


def serve(*args: str) -> subprocess.Popen[str]:
    """`globaldns serve ARGS` with HTTP on a free port, once it says it is ready."""
    if "--http-listen" not in args:
        args = (*args, "--http-listen", f"127.0.0.1:{free_port()}")
    proc = subprocess.Popen([*GLOBALDNS, "serve", *args], stderr=subprocess.PIPE, text=True)
    # Reads until the ready line or the end of stderr (the process ended): no clock.
    for line in proc.stderr:  # type: ignore[union-attr]
        if "globaldns ready" in line:
            return proc
    proc.kill()
    raise AssertionError(f"globaldns did not start (exit {proc.wait()})")
