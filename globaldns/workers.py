"""Several DNS processes on one port (SO_REUSEPORT), one set of watches, supervised.

The main process owns every source: the static config, health checks and Kubernetes
watches, so the Kubernetes API sees one client however many workers run. It answers DNS
itself and streams each registry change (one service's data from every source) to N-1
worker processes over a socket pair. Each worker has its own event loop, a replica of the
store and its own prepared snapshot, and shares the listening port through the kernel's
SO_REUSEPORT balancing.

Supervision (the main side, one task per worker slot):
- a worker that exits or is killed is started again at once (after a crash loop, with a
  backoff of at most RESTART_BACKOFF_MAX), logged and counted
  (`globaldns_workers_restarts_total{reason="exited"}`);
- every `dns.worker_heartbeat` the main process pings each worker over its channel; the
  worker answers from its event loop (with its DNS counters). One that misses
  MISSED_HEARTBEATS in a row (stopped, stuck) is killed and replaced
  (`reason="unresponsive"`). /ready is 503 while fewer than N processes answer;
- the stream to a worker is bounded: at most one pending message per service (and per
  kind of state), sent when the worker has read the previous ones; a worker that falls
  behind gets the latest data of each service, never an unbounded backlog;
- a worker dies with its main process (PR_SET_PDEATHSIG, and the channel's end of file);
  a worker whose follower fails exits with status 1, and is started again, rather than
  answer from a registry that no longer follows.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from globaldns.registry.model import ServiceKey
from globaldns.runtime import Runtime

log = logging.getLogger("globaldns.workers")

_LENGTH = struct.Struct("!I")
# A worker gets this long to start listening (a Python start on a busy machine), and this
# long to stop after its lameduck period, within the exit's grace period.
READY_SECONDS = 30.0
STOP_SECONDS = 3.0
# Heartbeats a worker may miss before it is replaced.
MISSED_HEARTBEATS = 3
# A worker that keeps dying is started again after 0.5, 1, 2, 4, 4... s (within the 5 s a
# restart may take); one that ran this long counts as healthy again.
RESTART_BACKOFF = 0.5
RESTART_BACKOFF_MAX = 4.0
STABLE_SECONDS = 30.0
# Messages written between two yields to the loop (the first sync of a large registry).
SEND_SLICE = 200
# prctl(2): the signal the kernel sends us when the parent process dies.
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


class ProtocolError(Exception):
    """The main process sent something a worker does not understand."""


def frame(message: tuple[Any, ...]) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message; None when the other side went away."""
    try:
        head = await reader.readexactly(_LENGTH.size)
        message: tuple[Any, ...] = pickle.loads(
            await reader.readexactly(_LENGTH.unpack(head)[0]))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return message


def _die_with_parent() -> None:
    """In the child, before exec: the kernel kills it when the main process dies."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Channel:
    """The main → worker stream: one pending message per key (a service, or a kind of
    state), written as fast as the worker reads."""

    def __init__(self, writer: asyncio.StreamWriter, runtime: Runtime) -> None:
        self.writer = writer
        self.runtime = runtime
        self.pending: dict[Hashable, tuple[Any, ...]] = {}
        self.wake = asyncio.Event()

    def put(self, key: Hashable, message: tuple[Any, ...]) -> None:
        self.pending[key] = message
        self.wake.set()

    def put_all(self) -> None:
        """Everything a new worker needs: every service, sync and stale state."""
        for key in self.runtime.store.service_keys():
            self.put(("service", key), ("service", key))
        self.put("synced", ("synced", self.runtime.snapshot.synced))
        self.put("stale", ("stale", self.runtime.snapshot.stale))
        self.put("start", ("start",))

    async def run(self) -> None:
        store, writer = self.runtime.store, self.writer
        while True:
            await self.wake.wait()
            self.wake.clear()
            sent = 0
            while self.pending:
                key = next(iter(self.pending))
                message = self.pending.pop(key)
                if message[0] == "service":  # its data as it is now, not as it was queued
                    message = ("service", message[1], store.raw(message[1]))
                writer.write(frame(message))
                await writer.drain()  # waits while the worker has not read enough
                sent += 1
                if sent % SEND_SLICE == 0:
                    await asyncio.sleep(0)


class Workers:
    """The main side: starts the workers, streams them every registry change, and
    replaces any that exits or stops answering."""

    def __init__(self, runtime: Runtime, count: int, *, config_path: str | None,
                 listen: str,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.runtime = runtime
        self.count = count
        self.config_path = config_path
        self.listen = listen
        self.sleep = sleep
        self.channels: dict[int, Channel] = {}
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self.lameducking = False
        self._slots: list[asyncio.Task[None]] = []
        self._started: dict[int, asyncio.Event] = {}
        runtime.replicas.wanted = count - 1

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for index in range(1, self.count):
            self._started[index] = asyncio.Event()
            self._slots.append(loop.create_task(self._supervise(index),
                                                name=f"worker {index}"))
        self.runtime.store.subscribe(self.changed)
        self.runtime.on_state.append(self.state_changed)
        # "Ready" means every process answers: wait for every worker's first start.
        waits = [loop.create_task(e.wait()) for e in self._started.values()]
        _, late = await asyncio.wait(waits, timeout=READY_SECONDS)
        for task in late:
            task.cancel()
        if late:
            log.error("%d worker(s) did not start within %gs", len(late), READY_SECONDS)

    # --- what the workers are told -----------------------------------------------------

    def changed(self, key: ServiceKey) -> None:
        for channel in self.channels.values():
            channel.put(("service", key), ("service", key))

    def state_changed(self) -> None:
        snapshot = self.runtime.snapshot
        for channel in self.channels.values():
            channel.put("synced", ("synced", snapshot.synced))
            channel.put("stale", ("stale", snapshot.stale))

    def reload(self) -> None:
        for channel in self.channels.values():
            channel.put("reload", ("reload",))

    # --- supervision -------------------------------------------------------------------

    async def _supervise(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self.stopping:
            started = loop.time()
            pid, reason = await self._run(index)
            if self.stopping:
                return
            self.runtime.replicas.restarts[reason] += 1
            if loop.time() - started > STABLE_SECONDS:
                failures = 0
            delay = min(RESTART_BACKOFF * 2 ** (failures - 1), RESTART_BACKOFF_MAX) \
                if failures else 0.0
            failures += 1
            log.warning("worker %d (pid %d) %s; starting a new one%s", index, pid, reason,
                        f" in {delay:g}s" if delay else "")
            if delay:
                await self.sleep(delay)

    async def _run(self, index: int) -> tuple[int, str]:
        """One worker process, from its start until it is gone: its pid, and why it went
        ("exited" or "unresponsive")."""
        replicas = self.runtime.replicas
        ours, theirs = socket.socketpair()
        # Before the worker runs: the key its cookie secrets derive from, read by
        # `first_message` while it starts (dns/cookies.py).
        ours.sendall(frame(("cookie_master", self.runtime.cookie_master)))
        command = [sys.executable, "-m", "globaldns", "serve", "--channel-fd",
                   str(theirs.fileno()), "--worker-index", str(index), "--listen", self.listen,
                   "--workers", str(self.count)]
        if self.config_path:
            command += ["--config", self.config_path]
        proc = subprocess.Popen(command, pass_fds=[theirs.fileno()],
                                preexec_fn=_die_with_parent)
        theirs.close()
        self.processes[index] = proc
        reader, writer = await asyncio.open_connection(sock=ours)
        channel = Channel(writer, self.runtime)
        channel.put_all()
        self.channels[index] = channel
        sender = asyncio.get_running_loop().create_task(channel.run(),
                                                        name=f"worker {index} channel")
        try:
            try:
                await asyncio.wait_for(reader.readexactly(1), READY_SECONDS)
            except asyncio.IncompleteReadError:
                return proc.pid, "exited"
            except TimeoutError:
                return proc.pid, "unresponsive"
            replicas.answering.add(index)
            self._started[index].set()
            return proc.pid, await self._watch(index, reader, channel)
        finally:
            replicas.answering.discard(index)
            replicas.stats.pop(index, None)
            self.channels.pop(index, None)
            sender.cancel()
            writer.close()
            if proc.poll() is None and not self.stopping:
                proc.kill()
            await asyncio.to_thread(proc.wait)

    async def _watch(self, index: int, reader: asyncio.StreamReader,
                     channel: Channel) -> str:
        """Read the worker's answers and ping it; return why it is gone."""
        loop = asyncio.get_running_loop()
        replicas = self.runtime.replicas
        answered = loop.time()
        read = loop.create_task(read_frame(reader))
        try:
            while True:
                interval = self.runtime.config.dns.worker_heartbeat
                done, _ = await asyncio.wait({read}, timeout=interval)
                if read in done:
                    message = read.result()
                    if message is None:
                        return "exited"
                    if message[0] == "pong":
                        answered = loop.time()
                        replicas.stats[index] = message[1]
                        replicas.answering.add(index)
                    read = loop.create_task(read_frame(reader))
                    continue
                late = loop.time() - answered
                if late > interval * 1.5:
                    replicas.answering.discard(index)  # /ready says so at once
                if late > interval * MISSED_HEARTBEATS and not self.stopping:
                    return "unresponsive"
                channel.put("ping", ("ping",))
        finally:
            read.cancel()

    # --- shutdown ------------------------------------------------------------------------

    def lameduck(self) -> None:
        """SIGTERM: every worker keeps answering for its own lameduck period, then exits."""
        self.stopping = self.lameducking = True
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    async def stop(self) -> None:
        """Stop the workers (at once, unless lameduck() asked them to finish) and wait."""
        self.stopping = True
        if not self.lameducking:
            for proc in self.processes.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
        if not self._slots:
            return
        _, late = await asyncio.wait(self._slots, timeout=STOP_SECONDS)
        for proc in self.processes.values():
            if proc.poll() is None:
                log.warning("worker %d did not stop in %gs; killing it", proc.pid,
                            STOP_SECONDS)
                proc.kill()
        if late:
            await asyncio.wait(late)


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


class Follower:
    """The worker side: a replica of the main process's registry, kept current from its
    channel. Anything that fails here ends the worker (its App exits 1 and the main
    process starts a new one)."""

    def __init__(self, runtime: Runtime, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.runtime = runtime
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, runtime: Runtime, channel_fd: int) -> Follower:
        reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=channel_fd))
        return cls(runtime, reader, writer)

    async def catch_up(self) -> None:
        """Apply the main process's registry as it is now: a worker listens only once it
        can answer what the main process answers (never NXDOMAIN from an empty store)."""
        while True:
            message = await read_frame(self.reader)
            if message is None:
                raise ProtocolError("the main process went away before the first sync")
            if message[0] == "start":
                return
            await self._apply(message)

    async def run(self) -> None:
        """Say we listen, then follow until the main process goes away."""
        self.writer.write(b"R")
        while True:
            message = await read_frame(self.reader)
            if message is None:
                log.info("worker %d: the main process went away; stopping", os.getpid())
                return
            await self._apply(message)

    async def _apply(self, message: tuple[Any, ...]) -> None:
        runtime, kind = self.runtime, message[0]
        if kind == "service":
            runtime.store.put(message[1], message[2])
        elif kind == "synced":
            runtime.snapshot.set_synced(message[1])
        elif kind == "stale":
            runtime.snapshot.set_stale(message[1])
        elif kind == "ping":
            server = runtime.server
            self.writer.write(frame(("pong", server.stats.summary(server.inflight))))
        elif kind == "reload":
            await runtime.reloads.reload(why="the main process reloaded")
        else:
            raise ProtocolError(f"unknown message {kind!r} from the main process")
