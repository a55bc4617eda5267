"""A process's lifetime under load: SIGTERM lameduck, supervised workers (--workers N).

Real server processes on loopback, a query loop asking from many source ports (so the
kernel's SO_REUSEPORT balancing reaches every worker), and real signals by PID. Waits are
for events (a metric, /ready, a process's end), never for a time."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from globaldns.registry.model import Endpoint, ServiceData
from globaldns.workers import frame
from tests.helpers.data import ROOT
from tests.helpers.dns import addresses, ask, make_query
from tests.helpers.processes import (
    Load,
    answering_worker,
    children,
    get,
    gone,
    metric,
    restarts,
    serve,
)
from tests.helpers.server import free_port
from tests.helpers.upstreams import fake_upstreams, forward_yaml
from tests.helpers.wait import wait_until


@pytest.fixture
def servers() -> Iterator[Callable[..., tuple[subprocess.Popen[str], int, int]]]:
    started: list[subprocess.Popen[str]] = []

    def start(tmp_path: Path, **kw: Any) -> tuple[subprocess.Popen[str], int, int]:
        proc, port, http = serve(tmp_path, **kw)
        started.append(proc)
        return proc, port, http

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# --- lameduck ----------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_loses_no_answer(tmp_path: Path, servers: Any, workers: int) -> None:
    """With workers, the main process passes SIGTERM on: every process lameducks."""
    proc, port, http = servers(tmp_path, lameduck="3s", workers=workers)
    if workers > 1:
        answering_worker(proc.pid, http)
    with Load(port) as load:
        assert wait_until(lambda: load.answered >= 300, timeout=20)
        proc.send_signal(signal.SIGTERM)
        # /ready turns 503 at once, and UDP and TCP are still answered.
        assert wait_until(lambda: get(http, "/ready")[0] == 503, timeout=5)
        assert json.loads(get(http, "/ready")[1])["reason"] == "shutting down"
        after = load.answered
        assert wait_until(lambda: load.answered >= after + 300, timeout=20)
        assert addresses(ask(port, "api.prod.global", tcp=True)) == ["10.1.1.1"]
    assert load.lost == 0, f"{load.lost} of {load.sent} queries lost"
    assert proc.wait(15) == 0


def test_a_forwarded_query_in_flight_at_sigterm_is_answered(tmp_path: Path,
                                                            servers: Any) -> None:
    with fake_upstreams() as upstreams:
        upstream = upstreams().add("www.example.test. 300 IN A 192.0.2.1")
        proc, port, http = servers(
            tmp_path, extra=forward_yaml(("example.test", [upstream]), timeout="10s"))
        upstream.hold()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(10)
            client.sendto(make_query("www.example.test", qid=7), ("127.0.0.1", port))
            assert wait_until(lambda: upstream.waiting == 1, timeout=5)
            proc.send_signal(signal.SIGTERM)
            assert wait_until(lambda: get(http, "/ready")[0] == 503, timeout=5)
            upstream.release()
            reply = client.recv(4096)
        assert struct.unpack("!H", reply[:2])[0] == 7
        assert proc.wait(15) == 0


# --- supervised workers ------------------------------------------------------------------

def test_a_killed_worker_is_restarted_and_loses_under_one_percent(tmp_path: Path,
                                                                  servers: Any) -> None:
    proc, port, http = servers(tmp_path, workers=2, heartbeat="300ms")
    worker = answering_worker(proc.pid, http)
    with Load(port) as load:
        assert wait_until(lambda: load.answered >= 500, timeout=20)
        os.kill(worker, signal.SIGKILL)
        assert wait_until(lambda: restarts(http, "exited") >= 1, timeout=10)
        assert wait_until(lambda: get(http, "/ready")[0] == 200, timeout=30)
        restarted, before_answered = load.sent, load.answered
        assert wait_until(lambda: load.answered >= before_answered + 1000, timeout=30)
    [new] = children(proc.pid)
    assert new != worker
    assert load.lost / load.sent < 0.01, f"{load.lost} of {load.sent} queries lost"
    assert load.lost_since(restarted) == 0, "lost after the restart"


def test_a_stopped_worker_is_replaced_and_ready_says_so(tmp_path: Path,
                                                        servers: Any) -> None:
    proc, _, http = servers(tmp_path, workers=2, heartbeat="300ms")
    worker = answering_worker(proc.pid, http)
    os.kill(worker, signal.SIGSTOP)
    assert wait_until(lambda: get(http, "/ready")[0] == 503, timeout=10)
    assert "1 of 2 processes answer" in json.loads(get(http, "/ready")[1])["reason"]
    assert wait_until(lambda: restarts(http, "unresponsive") >= 1, timeout=10)
    assert wait_until(lambda: gone(worker), timeout=10)
    assert wait_until(lambda: get(http, "/ready")[0] == 200, timeout=30)
    assert metric(http, "globaldns_workers_answering") == 1
    [new] = children(proc.pid)
    assert new != worker


def test_workers_exit_within_a_second_when_the_main_process_dies(tmp_path: Path,
                                                                 servers: Any) -> None:
    proc, _, _ = servers(tmp_path, workers=3)
    workers = children(proc.pid)
    assert len(workers) == 2
    pidfds = [os.pidfd_open(pid) for pid in workers]
    try:
        proc.kill()
        proc.wait(10)
        pending = set(pidfds)
        while pending:
            # pidfds turn readable when their process ends: the one bound is the spec's.
            readable, _, _ = select.select(list(pending), [], [], 1.0)
            assert readable, f"workers {workers} still running 1 s after the main died"
            pending -= set(readable)
    finally:
        for fd in pidfds:
            os.close(fd)


def test_a_worker_whose_follower_fails_exits_1(tmp_path: Path) -> None:
    """A message the follower cannot apply ends the worker (status 1, so its main process
    starts a new one) instead of leaving it answering from a frozen registry."""
    ours, theirs = socket.socketpair()
    ours.sendall(frame(("cookie_master", os.urandom(32))))  # what the main sends first
    port = free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "globaldns", "serve", "--channel-fd", str(theirs.fileno()),
         "--worker-index", "1", "--listen", f"127.0.0.1:{port}", "--workers", "2"],
        pass_fds=[theirs.fileno()], env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE, text=True)
    theirs.close()
    with ours:
        ours.settimeout(30)
        ours.sendall(frame(("start",)))  # an empty registry, as the main's first sync
        assert ours.recv(1) == b"R"
        ours.sendall(frame(("service", ("prod", "api"), "not a service's data")))
        _, err = worker.communicate(timeout=15)
    assert worker.returncode == 1
    assert "following the main process failed" in err


def test_a_worker_that_does_not_read_holds_one_message_per_service(
        server_factory: Any) -> None:
    """Backpressure: while a worker reads nothing (stopped), the main process keeps at
    most one pending message per service for it, whatever the number of changes, and
    writes no more than the stream's high-water mark."""
    server = server_factory("dns: {workers: 2, worker_heartbeat: 1h}\n")
    workers = server.app.workers
    worker = workers.processes[1].pid
    channel = workers.channels[1]
    os.kill(worker, signal.SIGSTOP)
    try:
        store = server.app.runtime.store

        def churn(rounds: int) -> None:
            for n in range(rounds):
                for i in range(10):
                    store.set("test", ("prod", f"s{i}"), ServiceData(endpoints=(Endpoint(
                        address=f"10.2.{n % 250}.{i + 1}", cluster="c"),)))

        for _ in range(20):
            server.call(churn, 1000)
        assert server.call(lambda: len(channel.pending)) <= 10 + 3
        assert server.call(channel.writer.transport.get_write_buffer_size) < 256 << 10
    finally:
        os.kill(worker, signal.SIGCONT)
    assert wait_until(lambda: server.call(lambda: len(channel.pending)) == 0, timeout=10)
