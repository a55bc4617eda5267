"""Real `globaldns serve` processes for the lifetime tests and bench/lifetime.py: start one
on free ports, a UDP query loop against it, its readiness, metrics and worker processes."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers.data import ROOT
from tests.helpers.dns import make_query
from tests.helpers.server import free_port
from tests.helpers.wait import wait_until

CONFIG = """\
dns: {{listen: 127.0.0.1:{port}, lameduck: {lameduck}, worker_heartbeat: {heartbeat}}}
http: {{listen: 127.0.0.1:{http}}}
clusters: [{{name: c, locality: r1}}]
services:
  - name: api
    namespace: prod
    endpoints: [{{address: 10.1.1.1, cluster: c}}]
"""


class Load:
    """A thread asking `api.prod.global` over UDP, one query at a time, turning over
    `sockets` source ports; each query waits up to a second for its answer."""

    def __init__(self, port: int, *, sockets: int = 32) -> None:
        self.port = port
        self.sockets = sockets
        self.sent = self.answered = self.lost = 0
        self.lost_ones: list[int] = []
        """The `sent` number of every query lost."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def lost_since(self, sent: int) -> int:
        """Queries lost of those sent after the `sent`th."""
        return sum(1 for n in self.lost_ones if n > sent)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        pool = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(self.sockets)]
        try:
            for sock in pool:
                sock.settimeout(1.0)
            qid = 0
            while not self._stop.is_set():
                qid = (qid + 1) & 0xFFFF
                sock = pool[qid % len(pool)]
                sock.sendto(make_query("api.prod.global", qid=qid), ("127.0.0.1", self.port))
                self.sent += 1
                try:
                    while struct.unpack("!H", sock.recv(4096)[:2])[0] != qid:
                        pass
                except TimeoutError:
                    self.lost += 1
                    self.lost_ones.append(self.sent)
                    continue
                self.answered += 1
        finally:
            for sock in pool:
                sock.close()


def serve(tmp_path: Path, *, workers: int = 1, lameduck: str = "0s",
          heartbeat: str = "1s", extra: str = "") -> tuple[subprocess.Popen[str], int, int]:
    port, http = free_port(), free_port()
    path = tmp_path / "gd.yaml"
    path.write_text(CONFIG.format(port=port, http=http, lameduck=lameduck,
                                  heartbeat=heartbeat) + extra)
    proc = subprocess.Popen([sys.executable, "-m", "globaldns", "serve", "--config", str(path),
                             "--workers", str(workers)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "globaldns ready on" in line:
            break
    # The rest of its log goes on being read, so the pipe never fills.
    threading.Thread(target=_drain, args=(proc.stderr, tmp_path / "server.log"),
                     daemon=True).start()
    return proc, port, http


def _drain(stream: Any, log: Path) -> None:
    with log.open("w") as out:
        for line in stream:
            out.write(line)
            out.flush()



def get(http: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(http: int, line: str) -> float | None:
    _, text = get(http, "/metrics")
    for row in text.splitlines():
        if row.startswith(line + " "):
            return float(row.rsplit(" ", 1)[1])
    return None


def restarts(http: int, reason: str) -> float:
    return metric(http, f'globaldns_workers_restarts_total{{reason="{reason}"}}') or 0.0


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def answering_worker(main: int, http: int) -> int:
    """The one worker, once it answers (on a loaded machine a worker can miss its first
    heartbeats and be replaced while it starts)."""
    assert wait_until(lambda: get(http, "/ready")[0] == 200, timeout=30)
    [worker] = children(main)
    return worker


def gone(pid: int) -> bool:
    """The process has ended (a zombie not yet reaped counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
