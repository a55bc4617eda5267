#!/usr/bin/env python3
"""Soak: the real server under steady load while its clusters change, restart and reload.

    python3 bench/soak.py                                  # 10 minutes, writes out/ + prints
    python3 bench/soak.py --duration 60 --qps 100 --check-rate 100 --warmup 20 \\
        --restart-every 10 --reload-every 20 --no-latency          # the test suite's form

What runs (every process started here is stopped by PID at the end):
- three emulated API servers (tests/k8s/emulator.py) in this process, each holding the same
  `--services` services with 2 ready endpoints each (6 addresses per merged name);
- the server, `python bench/soak.py serve`: the App exactly as `globaldns serve --config`
  runs it, plus a sampler that writes its count of asyncio tasks once a second;
- load: the maximum q/s is measured first with dnsperf (unless `--qps`), then half of it is
  sent for `--duration` seconds: `--check-rate` q/s by a checker process that keeps every
  answer, the rest by dnsperf; every name in both has random 0x20 casing;
- `--changes` EndpointSlice changes per second, spread over the three clusters (each
  replaces one service's endpoints in one cluster with two new addresses);
- one cluster's API server stopped and started again (0.5 s down, its data kept) every
  `--restart-every` seconds, in turn; no changes are made to it while it is down;
- a reload every `--reload-every` seconds: the config file gets another static service and
  the server a SIGHUP.

Pass (each printed with its figure; exit 1 when one fails):
- no SERVFAIL (every name has healthy endpoints), from the checker and from dnsperf;
- every checked answer's addresses are a set the emulators held at some moment between one
  TTL before the query was sent and the moment its answer came back, with the question's
  casing echoed byte for byte;
- at most `--max-lost` % of the checked queries unanswered (2 s);
- resident memory after warm-up grows less than `--rss-growth` %, and the tasks, threads,
  file descriptors and sockets at the end (lowest of the last 10 s) are no more than the
  most seen during warm-up;
- every reload applied (`globaldns_config_reloads_total{result="success"}`);
- p99 of the checked queries below 5 ms (not with `--no-latency`: the test suite runs on
  a shared machine and asserts no timing).
Also reported: the server's CPU (cores used on average) and the machine's CPU pressure
(the share of time some task waited for a CPU, /proc/pressure/cpu): a p99 measured while
others hold the CPUs is theirs as much as ours.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from procs import BenchError, Supervisor, free_port, use_project_venv, wait_ready  # noqa: E402

use_project_venv()
sys.path.insert(0, str(REPO))

ZONE = "global"
NAMESPACE = "soak"
TTL = 5
CLUSTERS = ("a", "b", "c")
ENDPOINTS = 2  # per service per cluster
DOWN_SECONDS = 0.5


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def qname(service: int) -> str:
    return f"svc{service}.{NAMESPACE}.{ZONE}"


def cased(name: str, rng: random.Random) -> str:
    """Random 0x20 casing (draft-vixie-dnsext-dns0x20): each letter's case at random."""
    return "".join(c.upper() if c.isalpha() and rng.random() < 0.5 else c for c in name)


def encode_query(qid: int, name: str) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return header + labels + b"\0" + struct.pack("!HH", 1, 1)


# --- the server child: the App as `globaldns serve` runs it, and a task sampler ---------


def serve(config_path: str, stats_path: str) -> int:
    import uvloop

    from globaldns.app import App
    from globaldns.config import load

    async def sample(out: Any) -> None:
        while True:
            out.write(f"{time.monotonic():.3f} {len(asyncio.all_tasks())}\n")
            out.flush()
            await asyncio.sleep(1.0)

    async def main() -> None:
        with open(stats_path, "w") as out:
            sampler = asyncio.create_task(sample(out))
            try:
                await App(load(config_path), config_path=config_path).run()
            finally:
                sampler.cancel()

    uvloop.run(main())
    return 0


# --- the checker child: paced queries, every answer kept --------------------------------


def check(port: int, rate: float, duration: float, services: int, out_path: str,
          seed: int) -> int:
    """Send `rate` q/s for `duration` s; write one JSON line per query:
    [sent, received or null, service, rcode, addresses, casing echoed]."""
    import dnslib
    import uvloop

    rng = random.Random(seed)
    pending: dict[int, tuple[float, int, bytes]] = {}
    rows: list[list[Any]] = []

    class Side(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            now = time.monotonic()
            if len(data) < 12:
                return
            qid = struct.unpack("!H", data[:2])[0]
            sent = pending.pop(qid, None)
            if sent is None:
                return
            t0, service, question = sent
            rcode = data[3] & 0x0F
            echoed = data[12:12 + len(question)] == question
            try:
                reply = dnslib.DNSRecord.parse(data)
                addresses = sorted(str(rr.rdata) for rr in reply.rr if rr.rtype == 1)
            except Exception:
                addresses, rcode = [], -1
            rows.append([t0, now, service, rcode, addresses, echoed])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # As big as the server's: on a busy machine the checker is descheduled too, and
        # answers dropped by its own full buffer would be counted as the server's losses.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.connect(("127.0.0.1", port))
        transport, _ = await loop.create_datagram_endpoint(Side, sock=sock)
        start = time.monotonic()
        sent = 0
        while (now := time.monotonic()) < start + duration:
            due = int((now - start) * rate) + 1
            while sent < due:
                qid = rng.randrange(65536)
                while qid in pending:
                    qid = rng.randrange(65536)
                service = rng.randrange(services)
                wire = encode_query(qid, cased(qname(service), rng))
                pending[qid] = (time.monotonic(), service, wire[12:])
                transport.sendto(wire)
                sent += 1
            # Unanswered after 2 s: lost.
            for qid, (t0, service, _) in list(pending.items()):
                if now - t0 > 2.0:
                    del pending[qid]
                    rows.append([t0, None, service, None, [], False])
            await asyncio.sleep(0.005)
        await asyncio.sleep(2.0)
        for t0, service, _ in pending.values():
            rows.append([t0, None, service, None, [], False])
        transport.close()

    uvloop.run(main())
    with open(out_path, "w") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    return 0


# --- the registry as the emulators hold it, with its history ----------------------------


@dataclass
class Truth:
    """What each cluster held for each service, and since when. The clusters change
    independently and the server follows each on its own stream, so an answer is judged
    per cluster: its addresses of one cluster must be a set that cluster held."""

    services: int
    history: dict[tuple[int, str], list[tuple[float, frozenset[str]]]] = field(
        default_factory=dict)
    times: dict[tuple[int, str], list[float]] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)
    counter: int = 1 << 16

    def addresses(self) -> tuple[str, ...]:
        out = []
        for _ in range(ENDPOINTS):
            n = self.counter
            self.counter += 1
            out.append(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")
        return tuple(out)

    def merged(self, service: int) -> frozenset[str]:
        return frozenset(a for c in CLUSTERS for a in self.history[(service, c)][-1][1])

    def set(self, service: int, cluster: str, addresses: tuple[str, ...], when: float) -> None:
        for address in addresses:
            self.owner[address] = cluster
        self.history.setdefault((service, cluster), []).append((when, frozenset(addresses)))
        self.times.setdefault((service, cluster), []).append(when)

    def staleness(self, service: int, addresses: frozenset[str], sent: float,
                  received: float) -> float:
        """How long before `sent` the answer stopped being current: for each cluster, the
        time since its part of the answer was replaced (0 when it was held at some moment
        in [sent, received]); infinity for a part that cluster never held."""
        parts: dict[str, set[str]] = {c: set() for c in CLUSTERS}
        for address in addresses:
            if address not in self.owner:
                return float("inf")
            parts[self.owner[address]].add(address)
        worst = 0.0
        for cluster, part in parts.items():
            versions = self.history[(service, cluster)]
            times = self.times[(service, cluster)]
            age = float("inf")
            for i in range(bisect.bisect_right(times, received) - 1, -1, -1):
                if versions[i][1] == part:
                    end = times[i + 1] if i + 1 < len(times) else received
                    age = max(0.0, sent - end)
                    break
            worst = max(worst, age)
        return worst


def put_service(emulator: Any, service: int, addresses: tuple[str, ...]) -> None:
    from tests.k8s import emulator as em
    emulator.put(em.endpoint_slice(NAMESPACE, f"svc{service}-1", f"svc{service}",
                                   endpoints=[em.endpoint(a) for a in addresses]))


def config_text(dns_port: int, http_port: int, kubeconfigs: dict[str, str],
                reloads: int) -> str:
    # No lameduck: the harness stops the server with SIGTERM and a 5 s grace.
    lines = [f"dns: {{listen: 127.0.0.1:{dns_port}, lameduck: 0s}}",
             f"http: {{listen: 127.0.0.1:{http_port}}}",
             "reload: {interval: 0s}",
             f"zones: [{{name: {ZONE}, ttl: {TTL}, negative_ttl: {TTL}}}]",
             "clusters:"]
    for name, path in kubeconfigs.items():
        lines += [f"  - name: {name}", f"    locality: region-{name}",
                  f"    kubeconfig: {path}"]
    # What each reload changes: one more static service (the answers are rebuilt).
    lines.append("services:")
    for i in range(reloads + 1):
        lines += [f"  - name: reload{i}", "    namespace: static",
                  f"    endpoints: [{{address: 10.255.{i >> 8 & 255}.{i & 255}, cluster: a}}]"]
    return "\n".join(lines) + "\n"


# --- the server's resources, from /proc and the sampler ---------------------------------


def resources(pid: int, stats_path: Path) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    fds = sockets = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        fds += 1
        sockets += target.startswith("socket:")
    tasks = 0
    lines = stats_path.read_text().splitlines() if stats_path.exists() else []
    if lines:
        tasks = int(lines[-1].split()[1])
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    snmp = Path("/proc/net/snmp").read_text().split("\nUdp: ")[2].split()
    return {"t": time.monotonic(), "udp_rcvbuf_errors": int(snmp[4]), "rss_kb": rss,
            "threads": threads, "fds": fds, "sockets": sockets, "tasks": tasks, "cpu_s": cpu,
            "pressure_us": pressure()}


def pressure() -> float:
    """Microseconds some task on the machine waited for a CPU (/proc/pressure/cpu): how
    much of the run other work on the machine took from this one."""
    try:
        text = Path("/proc/pressure/cpu").read_text()
    except OSError:
        return 0.0
    m = re.search(r"^some .*total=(\d+)", text, re.M)
    return float(m.group(1)) if m else 0.0


def dnsperf_qps(text: str) -> float:
    m = re.search(r"Queries per second:\s+([\d.]+)", text)
    return float(m.group(1)) if m else 0.0


def dnsperf_rcodes(text: str) -> dict[str, int]:
    m = re.search(r"Response codes:\s+(.*)", text)
    if not m:
        return {}
    return {code: int(n) for code, n in re.findall(r"([A-Z]+) (\d+)", m.group(1))}


def metric(http_port: int, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} ([\d.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


# --- the run ----------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        default = BENCH / "out" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
        self.out = Path(args.out or default).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.supervisor = Supervisor()
        self.truth = Truth(args.services)
        self.emulators: dict[str, Any] = {}
        self.down: set[str] = set()
        self.samples: list[dict[str, float]] = []
        self.counts = {"changes": 0, "restarts": 0, "reloads": 0, "late_ticks": 0}
        self.dns_port = free_port()
        self.http_port = free_port()
        self.config = self.out / "config.yaml"
        self.stats = self.out / "tasks.txt"

    async def run(self) -> dict[str, Any]:
        from tests.k8s.emulator import Emulator, service
        try:
            for name in CLUSTERS:
                emulator = Emulator(name)
                await emulator.start()
                self.emulators[name] = emulator
                for s in range(self.args.services):
                    emulator.put(service(NAMESPACE, f"svc{s}"))
                    addresses = self.truth.addresses()
                    put_service(emulator, s, addresses)
                    self.truth.set(s, name, addresses, time.monotonic())
            self.kubeconfigs = {n: e.write_kubeconfig(self.out / f"{n}.kubeconfig")
                                for n, e in self.emulators.items()}
            self.config.write_text(config_text(self.dns_port, self.http_port,
                                               self.kubeconfigs, 0))
            self.server = self.supervisor.start(
                "server", [sys.executable, str(Path(__file__).resolve()), "serve",
                           str(self.config), str(self.stats)], log=self.out / "server.log")
            await asyncio.to_thread(wait_ready, self.server, self.dns_port, qname(0))
            await self.synced()
            qps = self.args.qps or await self.measure()
            return await self.load(qps)
        finally:
            self.supervisor.stop_all()
            for emulator in self.emulators.values():
                await emulator.stop()

    async def synced(self) -> None:
        """Every name answers every cluster's addresses."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = True
            for s in range(self.args.services):
                got = await asyncio.to_thread(self.ask, qname(s))
                done = done and got == self.truth.merged(s)
            if done:
                return
            await asyncio.sleep(0.2)
        raise BenchError("the server did not answer every cluster's endpoints in 60 s")

    def ask(self, name: str) -> frozenset[str]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            s.sendto(encode_query(1, name), ("127.0.0.1", self.dns_port))
            try:
                data = s.recv(4096)
            except TimeoutError:
                return frozenset()
        import dnslib
        return frozenset(str(rr.rdata) for rr in dnslib.DNSRecord.parse(data).rr
                         if rr.rtype == 1)

    def names_file(self) -> Path:
        path = self.out / "names.txt"
        with path.open("w") as f:
            for _ in range(4096):
                f.write(f"{cased(qname(self.rng.randrange(self.args.services)), self.rng)} A\n")
        return path

    async def measure(self) -> float:
        log(f"measuring the maximum q/s for {self.args.measure:g} s (dnsperf)")
        out = await asyncio.to_thread(subprocess.run, [
            "dnsperf", "-s", "127.0.0.1", "-p", str(self.dns_port), "-d",
            str(self.names_file()), "-l", str(self.args.measure), "-c", "4", "-q", "200"],
            capture_output=True, text=True, timeout=self.args.measure + 30)
        (self.out / "dnsperf-max.txt").write_text(out.stdout)
        qps = dnsperf_qps(out.stdout)
        if not qps:
            raise BenchError(f"dnsperf measured nothing:\n{out.stdout}{out.stderr}")
        log(f"maximum {qps:.0f} q/s: the soak runs at {qps / 2:.0f}")
        self.max_qps = qps
        return qps / 2

    async def load(self, qps: float) -> dict[str, Any]:
        args = self.args
        check_rate = min(args.check_rate, qps)
        bulk = qps - check_rate
        results = self.out / "checked.jsonl"
        log(f"{args.duration:g} s at {qps:.0f} q/s ({check_rate:.0f} checked), "
            f"{args.changes} changes/s, a restart every {args.restart_every:g} s, "
            f"a reload every {args.reload_every:g} s")
        checker = self.supervisor.start("checker", [
            sys.executable, str(Path(__file__).resolve()), "check", str(self.dns_port),
            str(check_rate), str(args.duration), str(args.services), str(results),
            str(args.seed)], log=self.out / "checker.log")
        dnsperf = None
        if bulk >= 1:
            dnsperf = self.supervisor.start("dnsperf", [
                "dnsperf", "-s", "127.0.0.1", "-p", str(self.dns_port), "-d",
                str(self.names_file()), "-l", str(args.duration), "-Q", str(int(bulk)),
                "-c", "2", "-q", "500"], log=self.out / "dnsperf.txt")
        start = time.monotonic()
        self.warm_until = start + args.warmup
        tasks = [asyncio.create_task(c) for c in (
            self.change(start), self.restarts(start), self.reloads(start), self.sample())]
        try:
            while checker.popen.poll() is None:
                await asyncio.sleep(0.2)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if dnsperf is not None:
            await asyncio.to_thread(dnsperf.popen.wait, 30)
        reloads_applied = metric(self.http_port, "globaldns_config_reloads_total",
                                 'result="success"')
        return self.verdict(qps, check_rate, results,
                            (self.out / "dnsperf.txt").read_text() if dnsperf else "",
                            reloads_applied)

    async def change(self, start: float) -> None:
        """`--changes` per second: each replaces one service's endpoints in one cluster."""
        period = 1.0 / self.args.changes
        n = 0
        while True:
            n += 1
            due = start + n * period
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:
                self.counts["late_ticks"] += 1
            up = [c for c in CLUSTERS if c not in self.down]
            cluster = self.rng.choice(up)
            s = self.rng.randrange(self.args.services)
            addresses = self.truth.addresses()
            put_service(self.emulators[cluster], s, addresses)
            self.truth.set(s, cluster, addresses, time.monotonic())
            self.counts["changes"] += 1

    async def restarts(self, start: float) -> None:
        n = 0
        while True:
            n += 1
            await asyncio.sleep(max(0.0, start + n * self.args.restart_every - time.monotonic()))
            name = CLUSTERS[(n - 1) % len(CLUSTERS)]
            self.down.add(name)
            await self.emulators[name].stop()
            await asyncio.sleep(DOWN_SECONDS)
            await self.emulators[name].restart()
            self.down.discard(name)
            self.counts["restarts"] += 1

    async def reloads(self, start: float) -> None:
        n = 0
        while True:
            n += 1
            await asyncio.sleep(max(0.0, start + n * self.args.reload_every - time.monotonic()))
            self.config.write_text(config_text(self.dns_port, self.http_port,
                                               self.kubeconfigs, n))
            os.kill(self.server.pid, signal.SIGHUP)
            self.counts["reloads"] += 1

    async def sample(self) -> None:
        while True:
            self.samples.append(await asyncio.to_thread(resources, self.server.pid,
                                                        self.stats))
            await asyncio.sleep(1.0)

    def verdict(self, qps: float, check_rate: float, results: Path, dnsperf_text: str,
                reloads_applied: float) -> dict[str, Any]:
        args = self.args
        rows = [json.loads(line) for line in results.read_text().splitlines()]
        answered = [r for r in rows if r[1] is not None]
        lost = len(rows) - len(answered)
        servfail = sum(1 for r in answered if r[3] == 2)
        other_rcode = sum(1 for r in answered if r[3] not in (0, 2))
        casing = sum(1 for r in answered if not r[5])
        stale = [(self.truth.staleness(r[2], frozenset(r[4]), r[0], r[1]), r)
                 for r in answered if r[3] == 0]
        inconsistent = [(round(age, 3), r) for age, r in stale if age > TTL]
        latencies = sorted((r[1] - r[0]) * 1000 for r in answered)
        p50 = statistics.median(latencies) if latencies else 0.0
        p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0
        bulk_rcodes = dnsperf_rcodes(dnsperf_text)
        warm = [s for s in self.samples if s["t"] <= self.warm_until]
        after = [s for s in self.samples if s["t"] > self.warm_until]
        if not warm or len(after) < 5:
            raise BenchError(f"too few resource samples ({len(warm)} in warm-up, "
                             f"{len(after)} after): raise --duration or lower --warmup")
        end = after[-10:]
        rss_base = statistics.median(s["rss_kb"] for s in warm[-5:])
        rss_end = statistics.median(s["rss_kb"] for s in end[-5:])
        growth = {k: {"warm_max": max(s[k] for s in warm), "end_min": min(s[k] for s in end)}
                  for k in ("tasks", "threads", "fds", "sockets")}
        figures: dict[str, Any] = {
            "qps": round(qps), "max_qps": round(getattr(self, "max_qps", 0)),
            "checked": len(rows), "answered": len(answered), "lost": lost,
            "servfail": servfail, "other_rcode": other_rcode, "casing_not_echoed": casing,
            "inconsistent": len(inconsistent), "inconsistent_examples": inconsistent[:3],
            "max_staleness_s": round(max((age for age, _ in stale), default=0.0), 3),
            "p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
            "bulk_rcodes": bulk_rcodes, "bulk_qps": dnsperf_qps(dnsperf_text),
            "rss_kb_after_warmup": rss_base, "rss_kb_end": rss_end,
            "rss_growth_pct": round((rss_end - rss_base) / rss_base * 100, 2),
            "resources": growth, "counts": self.counts, "reloads_applied": reloads_applied,
            "server_cpu_cores": round((after[-1]["cpu_s"] - warm[0]["cpu_s"])
                                      / (after[-1]["t"] - warm[0]["t"]), 3),
            "cpu_pressure_pct": round((after[-1]["pressure_us"] - warm[0]["pressure_us"])
                                      / 1e4 / (after[-1]["t"] - warm[0]["t"]), 1),
            "loadavg": Path("/proc/loadavg").read_text().split()[:3],
            "udp_rcvbuf_errors_machine": after[-1]["udp_rcvbuf_errors"]
            - warm[0]["udp_rcvbuf_errors"],
        }
        checks = {
            "no SERVFAIL": servfail == 0 and bulk_rcodes.get("SERVFAIL", 0) == 0,
            "only NOERROR": other_rcode == 0 and set(bulk_rcodes) <= {"NOERROR"},
            "casing echoed": casing == 0,
            "answers consistent within one TTL": not inconsistent,
            f"lost <= {args.max_lost:g} %": lost <= len(rows) * args.max_lost / 100,
            f"RSS growth < {args.rss_growth:g} %": rss_end < rss_base * (
                1 + args.rss_growth / 100),
            "no growth in tasks, threads, fds, sockets": all(
                g["end_min"] <= g["warm_max"] for g in growth.values()),
            "every reload applied": reloads_applied == self.counts["reloads"],
            "every change and restart made": self.counts["restarts"] >= 1 and
            self.counts["changes"] >= args.changes * args.duration * 0.9,
        }
        if not args.no_latency:
            checks["p99 < 5 ms"] = p99 < 5.0
        return {"figures": figures, "checks": checks, "passed": all(checks.values()),
                "out": str(self.out)}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    p.add_argument("--warmup", type=float, default=60.0,
                   help="seconds at the start whose resources are the baseline")
    p.add_argument("--qps", type=float, default=0.0,
                   help="total q/s (default: half the maximum, measured first)")
    p.add_argument("--measure", type=int, default=10, help="seconds of the maximum's measure")
    p.add_argument("--check-rate", type=float, default=500.0,
                   help="q/s of the load sent by the checker, every answer checked")
    p.add_argument("--changes", type=float, default=100.0, help="EndpointSlice changes/s")
    p.add_argument("--services", type=int, default=30)
    p.add_argument("--restart-every", type=float, default=60.0)
    p.add_argument("--reload-every", type=float, default=120.0)
    p.add_argument("--rss-growth", type=float, default=5.0, help="percent allowed")
    p.add_argument("--max-lost", type=float, default=0.1, help="percent of checked queries")
    p.add_argument("--no-latency", action="store_true", help="report p99, do not judge it")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="", help="directory for the raw data")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        return serve(argv[1], argv[2])
    if argv[:1] == ["check"]:
        port, rate, duration, services, out, seed = argv[1:7]
        return check(int(port), float(rate), float(duration), int(services), out, int(seed))
    args = parse_args(argv)
    try:
        result = asyncio.run(Soak(args).run())
    except BenchError as exc:
        log(f"failed: {exc}")
        return 2
    (Path(result["out"]) / "verdict.json").write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result["figures"].items():
            print(f"{key:28} {value}")
        for check_name, ok in result["checks"].items():
            print(f"{'PASS' if ok else 'FAIL'}  {check_name}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
