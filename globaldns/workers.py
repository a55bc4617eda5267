"""Several DNS processes on one port (SO_REUSEPORT), one set of watches.

The main process owns every source: the static config, health checks and Kubernetes
watches, so the Kubernetes API sees one client however many workers run. It answers DNS
itself and streams each registry change (one service's data from every source) to N-1
worker processes over a socket pair. Each worker has its own event loop, a replica of the
store and its own prepared snapshot, and shares the listening port through the kernel's
SO_REUSEPORT balancing. A worker whose main process goes away exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import socket
import struct
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from globaldns.registry.model import ServiceKey

if TYPE_CHECKING:
    from globaldns.app import App

log = logging.getLogger("globaldns.workers")

_LENGTH = struct.Struct("!I")
# A worker gets this long to start listening (a Python start on a busy machine), and this
# long to stop after SIGTERM, within the 5 s a shutdown may take.
READY_SECONDS = 30.0
STOP_SECONDS = 3.0
# A worker sends its DNS counters to the main process this often (the main's /metrics
# adds them up, so they lag by at most this much).
STATS_EVERY = 2.0


def frame(message: tuple[Any, ...]) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


class Workers:
    """The main side: starts the workers and sends them every registry change."""

    def __init__(self, app: App, count: int, *, config_path: str | None) -> None:
        self.app = app
        self.count = count
        self.config_path = config_path
        self.processes: list[subprocess.Popen[bytes]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.stats: dict[int, dict[str, Any]] = {}
        """Worker index → its last DNS counter summary (dns/stats.py)."""
        self._readers: list[asyncio.Task[None]] = []

    async def start(self, listen: str) -> None:
        for index in range(1, self.count):
            ours, theirs = socket.socketpair()
            # Before the worker runs: the key its cookie secrets derive from, read by
            # `first_message` while it starts (dns/cookies.py).
            ours.sendall(frame(("cookie_master", self.app.cookie_master)))
            command = [sys.executable, "-m", "globaldns", "serve", "--channel-fd",
                       str(theirs.fileno()), "--worker-index", str(index), "--listen", listen,
                       "--workers", str(self.count)]
            if self.config_path:
                command += ["--config", self.config_path]
            self.processes.append(subprocess.Popen(command, pass_fds=[theirs.fileno()]))
            theirs.close()
            reader, writer = await asyncio.open_connection(sock=ours)
            self.writers.append(writer)
            # "Ready" means every process answers: wait for the worker to say it listens.
            try:
                await asyncio.wait_for(reader.readexactly(1), READY_SECONDS)
            except (TimeoutError, asyncio.IncompleteReadError):
                log.error("worker %d did not start within %gs", index, READY_SECONDS)
            self._readers.append(asyncio.get_running_loop().create_task(
                self._receive(index, reader), name=f"worker {index} stats"))
        store = self.app.store
        for key in store.service_keys():
            self.changed(key)
        self.synced(self.app.snapshot.synced)
        store.subscribe(self.changed)

    def _send(self, message: tuple[Any, ...]) -> None:
        data = frame(message)
        for writer in self.writers:
            if not writer.is_closing():
                writer.write(data)

    def changed(self, key: ServiceKey) -> None:
        self._send(("service", key, self.app.store.raw(key)))

    def synced(self, synced: bool) -> None:
        self._send(("synced", synced))

    def reload(self) -> None:
        self._send(("reload",))

    def stale(self, clusters: dict[str, str]) -> None:
        self._send(("stale", clusters))

    async def _receive(self, index: int, reader: asyncio.StreamReader) -> None:
        """The worker's counters, as it sends them, until it goes away."""
        while True:
            try:
                head = await reader.readexactly(_LENGTH.size)
                message = pickle.loads(await reader.readexactly(_LENGTH.unpack(head)[0]))
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if message[0] == "stats":
                self.stats[index] = message[1]

    async def stop(self) -> None:
        for task in self._readers:
            task.cancel()
        for writer in self.writers:
            writer.close()
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                await asyncio.to_thread(proc.wait, STOP_SECONDS)
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop in %gs; killing it", proc.pid, STOP_SECONDS)
                proc.kill()


def first_message(channel_fd: int) -> tuple[Any, ...]:
    """The worker side, while it starts: the message the main process wrote before it
    started this worker (so it is there to read at once)."""
    sock = socket.socket(fileno=channel_fd)
    try:
        sock.settimeout(READY_SECONDS)
        head = _read(sock, _LENGTH.size)
        message: tuple[Any, ...] = pickle.loads(_read(sock, _LENGTH.unpack(head)[0]))
    finally:
        sock.detach()
    if message[0] != "cookie_master":
        raise ConnectionError(f"the main process sent {message[0]!r} first, not the cookie key")
    return message


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the main process went away")
        data += chunk
    return data


async def follow(app: App, channel_fd: int) -> None:
    """The worker side: apply the main process's registry changes until it goes away."""
    sock = socket.socket(fileno=channel_fd)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"R")  # listening: the main process may call itself ready
    reporting = asyncio.get_running_loop().create_task(_report(app, writer),
                                                       name="worker stats")
    try:
        await _follow(app, reader)
    finally:
        reporting.cancel()


async def _report(app: App, writer: asyncio.StreamWriter) -> None:
    while not writer.is_closing():
        await asyncio.sleep(STATS_EVERY)
        writer.write(frame(("stats", app.server.stats.summary(app.server.inflight))))


async def _follow(app: App, reader: asyncio.StreamReader) -> None:
    while True:
        try:
            head = await reader.readexactly(_LENGTH.size)
            message = pickle.loads(await reader.readexactly(_LENGTH.unpack(head)[0]))
        except (asyncio.IncompleteReadError, ConnectionError):
            log.info("worker: the main process went away; stopping")
            app.stopping.set()
            return
        kind = message[0]
        if kind == "service":
            app.store.put(message[1], message[2])
        elif kind == "synced":
            app.snapshot.set_synced(message[1])
        elif kind == "stale":
            app.snapshot.set_stale(message[1])
        elif kind == "reload":
            with contextlib.suppress(Exception):
                app.reload()
