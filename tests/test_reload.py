"""Hot reload: the file watcher and SIGHUP, under a running query loop that must lose no
answer; bad configs keep the running one; unchanged clusters keep their watches."""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import dnslib

from tests.helpers.clock import Ticks
from tests.helpers.data import ROOT
from tests.helpers.dns import addresses, ask, make_query, rcode
from tests.helpers.http import get, scrape, value
from tests.helpers.k8s import FastTime, timing_for, web, yaml_for
from tests.helpers.server import Running, free_port
from tests.helpers.wait import eventually, wait_until


def publish(path: Path, text: str) -> None:
    """Replace the file in one step, as kubelet updates a mounted ConfigMap: a watcher
    that looks between a truncate and a write would otherwise load an empty file."""
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    os.replace(partial, path)


def config(port: int, *addresses_: str, extra: str = "") -> str:
    endpoints = "\n".join(f"      - {{address: {a}, cluster: east}}" for a in addresses_)
    return f"""dns: {{listen: 127.0.0.1:{port}}}
http: {{listen: 127.0.0.1:0}}
reload: {{interval: 100ms}}
clusters: [{{name: east, locality: r1}}]
services:
  - name: api
    namespace: prod
    endpoints:
{endpoints}
{extra}"""


class QueryLoop:
    """A thread asking `api.prod.global` over UDP again and again, each query waiting up to
    a second for its answer: counts the answers, the lost ones and what was answered."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent = self.answered = self.lost = 0
        self.seen: set[tuple[str, ...]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> QueryLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1.0)
            qid = 0
            while not self._stop.is_set():
                qid = (qid + 1) & 0xFFFF
                sock.sendto(make_query("api.prod.global", qid=qid), ("127.0.0.1", self.port))
                self.sent += 1
                try:
                    while True:
                        data = sock.recv(4096)
                        if struct.unpack("!H", data[:2])[0] == qid:
                            break
                except TimeoutError:
                    self.lost += 1
                    continue
                self.answered += 1
                reply = dnslib.DNSRecord.parse(data)
                self.seen.add(tuple(sorted(addresses(reply))))


def test_valid_changes_apply_without_losing_a_query(server_factory: Any, tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "gd.yaml"
    path.write_text(config(port, "10.0.0.1"))
    server: Running = server_factory(path.read_text(), config_path=str(path))
    versions = [("10.0.0.1", "10.0.0.2"), ("10.0.0.3",), ("10.0.0.1", "10.0.0.4")]
    with QueryLoop(port) as loop:
        wait_until(lambda: loop.answered >= 10)
        for addrs in versions:
            publish(path, config(port, *addrs))
            wait_until(lambda a=addrs: addresses(ask(port, "api.prod.global")) and
                       sorted(addresses(ask(port, "api.prod.global"))) == sorted(a))
            answered = loop.answered
            wait_until(lambda n=answered: loop.answered >= n + 20)  # queries on this version
    assert loop.lost == 0 and loop.answered == loop.sent and loop.answered > 50
    assert {("10.0.0.1",), ("10.0.0.3",)} <= loop.seen
    m = scrape(server)
    assert value(m, "globaldns_config_reloads_total", result="success") == 3
    assert value(m, "globaldns_config_reloads_total", result="failure") == 0
    assert value(m, "globaldns_config_last_reload_successful") == 1
    assert value(m, "globaldns_config_load_timestamp_seconds") > time.time() - 10


def test_an_invalid_config_keeps_the_running_one(server_factory: Any, tmp_path: Path,
                                                  caplog: Any) -> None:
    port = free_port()
    path = tmp_path / "gd.yaml"
    path.write_text(config(port, "10.0.0.1"))
    server: Running = server_factory(path.read_text(), config_path=str(path))
    hash_before = server.app.runtime.reloads.hash
    caplog.set_level(logging.ERROR, logger="globaldns.reload")
    with QueryLoop(port) as loop:
        wait_until(lambda: loop.answered >= 10)
        publish(path, config(port, "10.0.0.x", "10.0.0.2") + "cache: {capacity: lots}\n")
        reloads = server.app.runtime.reloads
        assert wait_until(lambda: reloads.results["failure"] == 1)
        # The watcher keeps looking, but does not retry the same content: five more looks
        # (the one that failed may still be finishing), and still one failure.
        looked = reloads.checks
        assert wait_until(lambda: reloads.checks >= looked + 5)
    assert loop.lost == 0 and loop.answered > 20
    assert loop.seen == {("10.0.0.1",)}
    assert server.app.runtime.reloads.results == {"success": 0, "failure": 1}
    errors = [r.getMessage() for r in caplog.records if "reload rejected:" in r.getMessage()]
    assert f"reload rejected: {path}: services[0].endpoints[0].address: '10.0.0.x' is not " \
        "an IP address" in errors
    assert f"reload rejected: {path}: cache.capacity: 'lots' is not an integer" in errors
    m = scrape(server)
    assert value(m, "globaldns_config_reloads_total", result="failure") == 1
    assert value(m, "globaldns_config_last_reload_successful") == 0
    assert value(m, "globaldns_config_info", source=str(path), hash=hash_before) == 1
    _, _, page = get(server, "/")
    assert "last reload rejected" in page and "is not an IP address" in page
    # Fixed: applied, and the failure state clears.
    publish(path, config(port, "10.0.0.5"))
    assert wait_until(lambda: addresses(ask(port, "api.prod.global")) == ["10.0.0.5"])
    assert server.app.runtime.reloads.last_error == []
    assert server.app.runtime.reloads.hash != hash_before


def test_touching_the_file_without_changing_it_reloads_nothing(server_factory: Any,
                                                                tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "gd.yaml"
    path.write_text(config(port, "10.0.0.1"))
    server: Running = server_factory(path.read_text(), config_path=str(path))
    reloads = server.app.runtime.reloads
    ticks = Ticks(server.loop)  # the watcher looks when the test says so
    server.run(reloads.stop())
    reloads.sleep = ticks.sleep
    server.call(reloads.start)
    os.utime(path, (time.time() + 5, time.time() + 5))
    ticks.tick(0.1)
    assert wait_until(lambda: ticks.sleeping == 2)  # it looked, and waits again
    assert reloads.results == {"success": 0, "failure": 0}
    # The same watcher applies a real change at its next look.
    publish(path, config(port, "10.0.0.9"))
    ticks.tick(0.1)
    assert wait_until(lambda: ticks.sleeping == 3)
    assert reloads.results == {"success": 1, "failure": 0}
    assert addresses(ask(port, "api.prod.global")) == ["10.0.0.9"]


def test_what_needs_a_restart_keeps_running_and_the_rest_applies(server_factory: Any,
                                                                 tmp_path: Path) -> None:
    port, other = free_port(), free_port()
    path = tmp_path / "gd.yaml"
    path.write_text(config(port, "10.0.0.1"))
    server: Running = server_factory(path.read_text(), config_path=str(path))
    path.write_text(config(other, "10.0.0.2", extra="log: {queries: true, file: "
                           f"{tmp_path / 'q.log'}}}\nacl: {{allow_query: [127.0.0.1/32]}}\n"))
    assert server.run(server.app.runtime.reloads.reload(why="test")) is True
    assert server.app.runtime.config.dns.listen.port == port
    assert addresses(ask(port, "api.prod.global")) == ["10.0.0.2"]
    # The ACL and the query log took effect.
    assert rcode(ask(port, "api.prod.global", source="127.0.0.2")) == "REFUSED"
    assert wait_until(lambda: (tmp_path / "q.log").exists()
                      and len((tmp_path / "q.log").read_text().splitlines()) == 2)


async def test_unchanged_clusters_keep_their_watches(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime,
) -> None:
    a, b = await emulators("a", "b")
    web(a, "10.1.0.1")
    web(b, "10.2.0.1")
    path = tmp_path / "gd.yaml"
    base = (f"dns: {{listen: 127.0.0.1:{free_port()}}}\nhttp: {{listen: 127.0.0.1:0}}\n"
            "reload: {interval: 0}\n")
    path.write_text(base + yaml_for([a, b], tmp_path))
    server: Running = server_factory(path.read_text(), config_path=str(path),
                                     k8s_timing=timing_for(fast))
    await eventually(lambda: server.app.runtime.kubernetes.synced and a.open_watches == 2
                     and b.open_watches == 2, timeout=10)
    opens = (a.watch_opens, b.watch_opens)
    lists = (a.lists, b.lists)
    # b changes (its stale_for), a stays as it was; a static service is added.
    text = yaml_for([a, b], tmp_path).replace(
        f"    kubeconfig: {tmp_path / 'b.kubeconfig'}\n",
        f"    kubeconfig: {tmp_path / 'b.kubeconfig'}\n    stale_for: 120s\n")
    path.write_text(base + text + "services:\n  - name: extra\n    namespace: prod\n"
                    "    endpoints: [{address: 10.9.0.1, cluster: a}]\n")
    assert await _reload(server)
    await eventually(lambda: b.watch_opens > opens[1] and b.open_watches == 2, timeout=10)
    assert (a.watch_opens, a.lists) == (opens[0], lists[0])
    reply = await _ask(server.port, "extra.prod.global")
    assert addresses(reply) == ["10.9.0.1"]
    reply = await _ask(server.port, "web.prod.global")
    assert sorted(addresses(reply)) == ["10.1.0.1", "10.2.0.1"]


async def _reload(server: Running) -> bool:
    import asyncio
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
        server.app.runtime.reloads.reload(why="test"), server.loop))


async def _ask(port: int, name: str) -> dnslib.DNSRecord:
    import asyncio
    return await asyncio.to_thread(ask, port, name)


def test_sighup_reloads_a_running_server(tmp_path: Path) -> None:
    port, http_port = free_port(), free_port()
    path = tmp_path / "gd.yaml"
    path.write_text(config(port, "10.0.0.1").replace("100ms", "0"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # --http-listen overrides the file's http.listen, at start and after every reload.
    process = subprocess.Popen([sys.executable, "-m", "globaldns", "serve", "--config",
                                str(path), "--http-listen", f"127.0.0.1:{http_port}"],
                               env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "globaldns ready on" in line:
                break
        assert addresses(ask(port, "api.prod.global")) == ["10.0.0.1"]
        with QueryLoop(port) as loop:
            wait_until(lambda: loop.answered >= 10)
            path.write_text(config(port, "10.0.0.7").replace("100ms", "0"))
            process.send_signal(signal.SIGHUP)
            assert wait_until(lambda: addresses(ask(port, "api.prod.global")) == ["10.0.0.7"])
            path.write_text("services: [oops\n")
            process.send_signal(signal.SIGHUP)

            def rejected() -> bool:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics",
                                            timeout=5) as r:
                    return 'globaldns_config_reloads_total{result="failure"} 1.0' in \
                        r.read().decode()
            wait_until(rejected)
        assert loop.lost == 0
        assert addresses(ask(port, "api.prod.global")) == ["10.0.0.7"]
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert 'globaldns_config_reloads_total{result="success"} 1.0' in metrics
        assert 'globaldns_config_reloads_total{result="failure"} 1.0' in metrics
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "reload (SIGHUP) rejected" in err and "not valid YAML" in err
