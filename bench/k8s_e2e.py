#!/usr/bin/env python3
"""End to end: the real globaldns server fed by emulated clusters, measured through DNS.

    python3 bench/k8s_e2e.py                  # about 4 minutes; writes bench/RESULTS-k8s.md
    python3 bench/k8s_e2e.py --rev HEAD       # run the committed globaldns, not the work tree
    python3 bench/k8s_e2e.py --layouts shared --sizes full --changes 200 --no-write   # quick

One child process runs the emulated API servers (tests/k8s/emulator.py, one per cluster, on
127.0.0.1) and writes their kubeconfig files; `python -m globaldns serve --config FILE` runs
as its own process, pinned to CPU 0 (`taskset`). For each run (a layout and a size):
- time from the server's start to ready, through DNS: an unknown name stops being SERVFAIL
  (NXDOMAIN: every cluster listed) and the last service answers all its addresses (and
  `/ready` over HTTP when the build has an `http` config key); the server's RSS (VmRSS,
  VmHWM from /proc);
- propagation: with dnsperf sending `--qps` queries/s for every service of the run (CPU 1),
  `--changes` EndpointSlice changes, one every `--interval` s, each replacing one endpoint of
  one (cluster, service) with a unique marker address; the time from the emulator writing
  the watch event to the moment a poller (this process) sees the marker in the DNS answer;
- the CPU every process used, and the CPU that other work on the machine took meanwhile
  ("other load"): a disturbed run is repeated while the time budget allows;
- the time from SIGTERM to the process's end.
Sizes: `full` (--services per cluster) and `small` (--small-services per cluster, the same
emulators through a label selector): the per-event cost compared at 10k vs 100k endpoints.
`--profile` adds the event timed in-process (Store + Snapshot, no I/O, GC pauses), what
the Snapshot allocates (tracemalloc) and py-spy over a start. Layouts: `shared` (every
cluster has the same services: merged global services of clusters x endpoints addresses) and
`distinct` (each cluster its own services). Every process started is stopped by PID at the
end, also on errors and Ctrl-C. Raw data under bench/out/k8s-e2e-<time>/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import datetime
import itertools
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from procs import (  # noqa: E402
    BenchError,
    Proc,
    Supervisor,
    free_port,
    process_tree,
    use_project_venv,
)

use_project_venv()

ZONE = "global"
SERVER_CPU = "0"
CLIENT_CPU = "1"
STRIDE = 7919  # prime: change i hits pair (i * STRIDE + offset) mod pairs, all distinct


def log(msg: str) -> None:
    print(f"[k8s-e2e {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the data: the same functions name it here and in the emulator child ---------------


def service_name(layout: str, cluster: int, s: int) -> str:
    return f"svc{s}" if layout == "shared" else f"c{cluster}-svc{s}"


def qname(layout: str, cluster: int, s: int) -> str:
    return f"{service_name(layout, cluster, s)}.{layout}.{ZONE}"


def base_address(layout: str, cluster: int, s: int, i: int, endpoints: int) -> str:
    n = s * endpoints + i
    first = cluster if layout == "shared" else 100 + cluster
    return f"10.{first}.{n >> 8 & 255}.{n & 255}"


def marker(seq: int) -> str:
    return f"10.{250 + (seq >> 16)}.{seq >> 8 & 255}.{seq & 255}"


# --- the child: emulated clusters ------------------------------------------------------


async def emulate(args: argparse.Namespace) -> None:
    """Both layouts in every emulator (namespaces `shared` and `distinct`); commands on
    stdin, one JSON line per answer on stdout."""
    sys.path.insert(0, str(REPO))
    from tests.k8s import emulator as em

    t0 = time.monotonic()
    pending: dict[str, int] = {}  # marker address -> change id
    put_at: dict[int, float] = {}
    written_at: dict[int, float] = {}
    encode = em._line

    def line(event: dict[str, Any]) -> bytes:
        # The event is encoded just before the watch handler writes it to the stream: this
        # is the moment the emulator emits it.
        if pending and event.get("type") == "MODIFIED":
            eps = event["object"].get("endpoints") or ()
            if eps and eps[0]["addresses"][0] in pending:
                written_at[pending.pop(eps[0]["addresses"][0])] = time.monotonic()
        return encode(event)

    em._line = line
    emulators = []
    for c in range(args.clusters):
        e = em.Emulator(f"c{c}", history_limit=1_000_000)
        for layout in ("shared", "distinct"):
            for s in range(args.services):
                name = service_name(layout, c, s)
                labels = {"bench/shard": "0" if s < args.small_services else "1"}
                e.put(em.service(layout, name, labels=labels))
                e.put(em.endpoint_slice(layout, f"{name}-1", name, labels=labels, endpoints=[
                    em.endpoint(base_address(layout, c, s, i, args.endpoints),
                                zone=f"z{i % 3}") for i in range(args.endpoints)]))
        await e.start()
        emulators.append(e)
    directory = Path(args.dir)
    kubeconfigs = [e.write_kubeconfig(directory / f"{e.name}.kubeconfig") for e in emulators]
    print(json.dumps({"kubeconfigs": kubeconfigs, "build_s": time.monotonic() - t0}),
          flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line_in := (await reader.readline()).decode().strip():
        command, *rest = line_in.split()
        if command == "change":
            change_id, cluster, namespace, slice_name, address = rest
            e = emulators[int(cluster)]
            obj = copy.deepcopy(e.get("endpointslices", namespace, slice_name))
            obj["endpoints"][0]["addresses"] = [address]
            pending[address] = int(change_id)
            put_at[int(change_id)] = time.monotonic()
            e.put(obj)
        elif command == "times":
            print(json.dumps({"put": put_at, "written": written_at}), flush=True)
            put_at, written_at = {}, {}
            pending.clear()
    for e in emulators:
        await e.stop()


# --- the child: in-process cost of one event (Store + Snapshot, no I/O) ----------------


def event_cost(args: argparse.Namespace) -> None:
    """Fill a Store with every cluster's services, build the Snapshot over it once, then
    time single slice changes as a watch event applies them (conversion, merge, store,
    snapshot). `--memory`: what the Snapshot build allocates, by source line (tracemalloc).
    Prints one JSON line."""
    sys.path.append(str(REPO))  # tests/; globaldns comes first from PYTHONPATH (--rev)
    import gc

    from globaldns.answers.snapshot import Snapshot
    from globaldns.config import load
    from globaldns.registry.store import Store
    from globaldns.sources.k8s import objects
    from tests.k8s import emulator as em

    config = load(args.config)
    store = Store()
    layout, services, endpoints = args.layout, args.services, args.endpoints
    locality = {c.name: c.locality for c in config.clusters}

    def data(c: int, s: int, first: str | None = None) -> tuple[tuple[str, str], Any]:
        name = service_name(layout, c, s)
        eps = [em.endpoint(base_address(layout, c, s, i, endpoints), zone=f"z{i % 3}")
               for i in range(endpoints)]
        if first is not None:
            eps[0] = em.endpoint(first, zone="z0")
        raw = em.endpoint_slice(layout, f"{name}-1", name, endpoints=eps)
        raw["metadata"]["resourceVersion"] = "1"
        record = objects.endpoint_slice(raw, cluster=f"c{c}", locality=locality[f"c{c}"])
        service = objects.service(em.service(layout, name))
        return (layout, name), objects.merge(service, [record])

    collections: list[float] = []  # full (generation 2) garbage collections, seconds
    began = [0.0]

    def gc_timer(phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                began[0] = time.perf_counter()
            else:
                collections.append(time.perf_counter() - began[0])

    def fill(store: Store) -> None:
        for c in range(args.clusters):
            store.replace_source(f"k8s/c{c}", dict(data(c, s) for s in range(services)))

    memory: dict[str, Any] = {}
    if args.memory:
        # On a registry of its own, thrown away: tracemalloc slows the build down.
        import tracemalloc

        scratch = Store()
        fill(scratch)
        tracemalloc.start()
        kept = Snapshot(config, scratch)
        taken = tracemalloc.take_snapshot()
        tracemalloc.stop()
        stats = taken.statistics("lineno")
        total = sum(st.size for st in stats)
        count = len(scratch.service_keys())
        memory = {"total_mb": total / 2**20, "services": count,
                  "per_service_kb": total / 1024 / max(1, count),
                  "sites": [(re.sub(r"^.*?/globaldns/", "globaldns/", str(st.traceback[0])),
                             st.size / 2**20, st.count) for st in stats[:12]]}
        del kept, scratch, taken, stats
    fill(store)
    gc.collect()
    start = time.perf_counter()
    # One build over the whole registry: each service prepared once (the server's first
    # sync prepares a merged service again each time one more cluster publishes it).
    snapshot = Snapshot(config, store)
    build = time.perf_counter() - start
    gc.collect()
    gc.callbacks.append(gc_timer)
    times = []
    pairs = args.clusters * services
    for i in range(args.events):
        k = (i * STRIDE + 17) % pairs
        key, value = data(k % args.clusters, k // args.clusters, first=marker(60000 + i))
        start = time.perf_counter()
        store.set(f"k8s/c{k % args.clusters}", key, value)
        times.append(time.perf_counter() - start)
    times.sort()
    gc.callbacks.remove(gc_timer)
    pauses = []
    for _ in range(3):
        start = time.perf_counter()
        gc.collect()
        pauses.append(time.perf_counter() - start)
    print(json.dumps({
        "layout": layout, "services": services, "endpoints": args.clusters * services *
        endpoints, "build_s": build, "names": len(snapshot.names), "memory": memory,
        "gc_full": len(collections), "gc_full_max_ms": max(collections, default=0) * 1000,
        "objects": len(gc.get_objects()), "gc_collect_ms": statistics.median(pauses) * 1000,
        "event_us": {"p50": times[len(times) // 2] * 1e6,
                     "p99": times[int(len(times) * 0.99)] * 1e6,
                     "mean": statistics.fmean(times) * 1e6}}), flush=True)


# --- the child: a bounded Python load generator (when dnsperf is missing) --------------


def load(args: argparse.Namespace) -> None:
    names = Path(args.queries).read_text().split("\n")
    names = [n.split()[0] for n in names if n.strip()]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", args.port))
    sock.setblocking(False)
    sent = received = 0
    rcodes: dict[int, int] = {}
    start = time.monotonic()
    end = start + args.duration
    i = 0
    while (now := time.monotonic()) < end:
        due = int((now - start) * args.qps)
        while sent < due:
            sock.send(query(names[i % len(names)], i & 0xFFFF)[1])
            sent += 1
            i += 1
        with contextlib.suppress(BlockingIOError):
            while True:
                reply = sock.recv(4096)
                received += 1
                rcodes[reply[3] & 15] = rcodes.get(reply[3] & 15, 0) + 1
        time.sleep(0.0005)
    print(json.dumps({"sent": sent, "completed": received, "qps": received / args.duration,
                      "rcodes": rcodes}), flush=True)


# --- DNS on the wire -------------------------------------------------------------------


def query(name: str, qid: int, qtype: int = 1) -> tuple[int, bytes]:
    """An A query with RD and an EDNS OPT of 4096 bytes (a 50-address answer fits)."""
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1)
    wire = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    opt = b"\0" + struct.pack("!HHIH", 41, 4096, 0, 0)
    return qid, header + wire + struct.pack("!HH", qtype, 1) + opt


RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}


def addresses(reply: bytes) -> list[str]:
    """The IPv4 addresses in the answer section."""
    ancount = struct.unpack("!H", reply[6:8])[0]
    pos = 12
    pos = _skip_name(reply, pos) + 4
    out = []
    for _ in range(ancount):
        pos = _skip_name(reply, pos)
        rtype, _, _, rdlen = struct.unpack("!HHIH", reply[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            out.append(socket.inet_ntoa(reply[pos:pos + 4]))
        pos += rdlen
    return out


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0:
            return pos + 2
        pos += length + 1


class Resolver:
    """One connected UDP socket to the server (so every datagram is the server's). A reply
    counts with our ID, or when `accept` says so (a late reply to an earlier question that
    already shows what we wait for). `longest_silence`: the longest time between two
    datagrams from the server, i.e. how long its event loop answered nothing."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(("127.0.0.1", port))
        self.qid = random.randrange(65536)
        self.last_rx = 0.0
        self.longest_silence = 0.0
        self.rx_times: list[float] | None = None
        """When a list: the time of every datagram received."""

    def ask(self, name: str, timeout: float = 0.2,
            accept: Any = None) -> bytes | None:
        self.qid = (self.qid + 1) & 0xFFFF
        qid, packet = query(name, self.qid)
        self.sock.settimeout(timeout)
        try:
            self.sock.send(packet)
            deadline = time.monotonic() + timeout
            while True:
                data = self.sock.recv(4096)
                now = time.monotonic()
                if self.last_rx:
                    self.longest_silence = max(self.longest_silence, now - self.last_rx)
                self.last_rx = now
                if self.rx_times is not None:
                    self.rx_times.append(now)
                if len(data) >= 12 and (struct.unpack("!H", data[:2])[0] == qid
                                        or (accept is not None and accept(data))):
                    return data
                self.sock.settimeout(max(0.001, deadline - now))
        except (TimeoutError, ConnectionRefusedError):
            return None

    def close(self) -> None:
        self.sock.close()


# --- the machine: CPU of every process, memory of the server ---------------------------


def proc_table() -> dict[int, tuple[str, int, float]]:
    """pid -> (comm, ppid, CPU seconds used so far) for every process."""
    table = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                data = f.read()
        except OSError:
            continue
        comm = data[data.index("(") + 1:data.rindex(")")]
        fields = data.rsplit(")", 1)[1].split()
        table[int(entry)] = (comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return table


def core_times() -> dict[str, tuple[int, int]]:
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *values = line.split()
                ticks = [int(v) for v in values[:8]]
                out[name[3:]] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return out


@dataclass
class Usage:
    """CPU over a window: ours per role, the rest of the machine ("other")."""

    wall: float = 0.0
    cores: dict[str, float] = field(default_factory=dict)  # role -> cores
    busy: dict[str, float] = field(default_factory=dict)  # cpu -> busy share
    other: float = 0.0
    others: list[str] = field(default_factory=list)  # the biggest other processes


class Window:
    def __init__(self) -> None:
        self.t = time.monotonic()
        self.procs = proc_table()
        self.cores = core_times()

    def close(self, roles: dict[str, int]) -> Usage:
        wall = time.monotonic() - self.t
        procs, cores = proc_table(), core_times()
        ours: dict[int, str] = {}
        for pid in process_tree(os.getpid()):
            ours[pid] = "bench"
        for role, pid in roles.items():
            for p in process_tree(pid):
                ours[p] = role
        usage = Usage(wall=wall)
        other: list[tuple[float, str]] = []
        for pid, (comm, ppid, cpu) in procs.items():
            delta = cpu - self.procs.get(pid, (comm, ppid, 0.0))[2]
            if delta <= 0:
                continue
            if pid in ours:
                usage.cores[ours[pid]] = usage.cores.get(ours[pid], 0.0) + delta / wall
            elif ppid != 2 and pid != 2:  # kernel threads (softirq of our packets) aside
                other.append((delta / wall, f"{comm} (pid {pid})"))
        usage.other = sum(c for c, _ in other)
        usage.others = [f"{name} {c:.2f}" for c, name in sorted(other, reverse=True)[:3]
                        if c >= 0.02]
        for cpu, (busy1, total1) in cores.items():
            busy0, total0 = self.cores.get(cpu, (0, 0))
            if total1 > total0:
                usage.busy[cpu] = (busy1 - busy0) / (total1 - total0)
        return usage


def memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of `pid` in MB."""
    fields = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


def machine_busy(interval: float) -> float:
    before = core_times()
    time.sleep(interval)
    after = core_times()
    return sum((after[c][0] - before[c][0]) / max(1, after[c][1] - before[c][1])
               for c in after)


# --- full garbage collections inside the server (--profile) ---------------------------

GC_PROBE = """\
# Written by bench/k8s_e2e.py --profile: logs the server's full (generation 2) garbage
# collections, with CLOCK_MONOTONIC times, to gc-<pid>.log beside this file.
import gc, os, time
_dir = os.path.dirname(os.path.abspath(__file__))
_log = open(os.path.join(_dir, f"gc-{os.getpid()}.log"), "a", buffering=1)
_start = [0.0]
def _full_gc(phase, info):
    if info["generation"] == 2:
        if phase == "start":
            _start[0] = time.monotonic()
        else:
            _log.write(f"{_start[0]:.6f} {time.monotonic() - _start[0]:.6f} "
                       f"{info['collected']}\\n")
gc.callbacks.append(_full_gc)
"""


def gc_pauses(path: Path, start: float, end: float) -> dict[str, float]:
    """Full collections that began in [start, end): count, total and longest seconds."""
    pauses = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            began, took, _ = line.split()
            if start <= float(began) < end:
                pauses.append(float(took))
    return {"count": len(pauses), "total_s": sum(pauses), "max_s": max(pauses, default=0.0)}


# --- one run ---------------------------------------------------------------------------


@dataclass
class RunResult:
    layout: str
    size: str
    clusters: int
    services_per_cluster: int
    global_services: int
    endpoints: int
    attempt: int = 1
    listening_s: float = 0.0
    synced_s: float = 0.0
    complete_s: float = 0.0
    ready_s: float = 0.0
    http_ready_s: float | None = None
    sync_usage: Usage | None = None
    rss_ready_mb: float = 0.0
    rss_end_mb: float = 0.0
    hwm_mb: float = 0.0
    checked: int = 0
    load: dict[str, Any] = field(default_factory=dict)
    changes: int = 0
    seen: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)  # from the event's write
    latency_put_ms: dict[str, float] = field(default_factory=dict)  # from Emulator.put
    emit_ms: dict[str, float] = field(default_factory=dict)  # put -> write, emulator side
    polls: int = 0
    slipped: int = 0
    prop_usage: Usage | None = None
    disturbed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    exit_s: float | None = None
    gc_sync: dict[str, float] = field(default_factory=dict)
    gc_propagation: dict[str, float] = field(default_factory=dict)
    failed: str = ""
    prop_window: tuple[float, float] | None = None
    sync_stall_s: float = 0.0
    """The longest time without any DNS answer between the first answer and ready."""
    samples: list[tuple[int, float | None, float | None, float | None]] = field(
        default_factory=list)
    """Per change: id, put, written, seen (s after the first change); results.json only."""


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)
    return {"p50": v[len(v) // 2], "p90": v[int(len(v) * 0.9)],
            "p99": v[min(len(v) - 1, int(len(v) * 0.99))], "max": v[-1], "n": len(v)}


class Bench:
    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args = args
        self.out = out
        self.sup = Supervisor()
        self.emulator: Proc | None = None
        self.kubeconfigs: list[str] = []
        self.emulator_build_s = 0.0
        self.env = dict(os.environ)
        self.source = str(REPO)
        self.http_supported = False
        self.seq = 0
        self.change_id = 0
        self.current: dict[tuple[str, int, int], str] = {}  # changed endpoint 0 so far
        self.results: list[RunResult] = []
        self.costs: list[dict[str, Any]] = []
        self.profile: str = ""
        self.notes: list[str] = []
        self.started = time.monotonic()
        self.has_dnsperf = shutil.which("dnsperf") is not None and not args.no_dnsperf
        self.gc_probe = out / "gcprobe"
        if args.profile:
            self.gc_probe.mkdir()
            (self.gc_probe / "sitecustomize.py").write_text(GC_PROBE)
        self.pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2 \
            and not args.no_pin

    def pinned(self, cpu: str) -> list[str]:
        return ["taskset", "-c", cpu] if self.pin else []

    # --- setup -------------------------------------------------------------------

    def prepare_source(self) -> str:
        """Which globaldns runs: the work tree, or `git archive REV` (so that edits being
        made in the work tree meanwhile do not mix into the figures)."""
        if self.args.rev:
            target = self.out / "src"
            target.mkdir()
            archive = subprocess.run(["git", "-C", str(REPO), "archive", self.args.rev,
                                      "globaldns"], capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
            commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short",
                                     self.args.rev], capture_output=True, text=True,
                                    check=True).stdout.strip()
            self.source = str(target)
            described = f"{commit} (`git archive {self.args.rev}`, run from {target})"
        else:
            commit = _sh(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
            dirty = _sh(["git", "-C", str(REPO), "status", "--porcelain", "--", "globaldns"])
            described = commit + (" + uncommitted changes in globaldns/" if dirty else "")
        self.env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [self.source, str(REPO), os.environ.get("PYTHONPATH")]))
        where = subprocess.run([sys.executable, "-c", "import globaldns; print(globaldns."
                                "__file__)"], capture_output=True, text=True, env=self.env,
                               cwd=self.out, check=True).stdout.strip()
        if not where.startswith(self.source):
            raise BenchError(f"globaldns imports from {where}, not {self.source}")
        return described

    def start_emulators(self) -> None:
        a = self.args
        cmd = [*self.pinned(CLIENT_CPU), sys.executable, str(Path(__file__).resolve()),
               "emulate", "--dir", str(self.out), "--clusters", str(a.clusters),
               "--services", str(a.services), "--small-services", str(a.small_services),
               "--endpoints", str(a.endpoints)]
        log_path = self.out / "emulators.log"
        with log_path.open("wb") as fh:
            popen = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=fh, start_new_session=True,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
        self.emulator = Proc("emulators", cmd, popen, log_path)
        self.sup.procs.append(self.emulator)
        hello = self.emulator_answer(timeout=600)
        self.kubeconfigs = hello["kubeconfigs"]
        self.emulator_build_s = hello["build_s"]

    def emulator_command(self, line: str) -> None:
        assert self.emulator is not None and self.emulator.popen.stdin is not None
        self.emulator.popen.stdin.write(line.encode() + b"\n")
        self.emulator.popen.stdin.flush()

    def emulator_answer(self, timeout: float = 60) -> dict[str, Any]:
        assert self.emulator is not None and self.emulator.popen.stdout is not None
        stdout = self.emulator.popen.stdout
        timer = _Alarm(timeout)
        with timer:
            line = stdout.readline()
        if not line:
            raise BenchError(f"the emulator process ended (code {self.emulator.popen.poll()})"
                             f"; log tail:\n{self.emulator.log_tail()}")
        return json.loads(line)

    def config(self, layout: str, size: str, port: int, http_port: int | None) -> Path:
        lines = [
            "# written by bench/k8s_e2e.py",
            "dns:", f"  listen: 127.0.0.1:{port}",
            # The exit after SIGTERM is measured without the lameduck period.
            "  lameduck: 0s",
            "resolver:", "  locality: region-0/z0",
            "zones:", f"  - name: {ZONE}", "    ttl: 5", "    negative_ttl: 5",
            # Readiness must come from the sync, never from the timeout.
            "sync_timeout: 600s",
            "clusters:"]
        for c, kubeconfig in enumerate(self.kubeconfigs):
            lines += [f"  - name: c{c}", f"    locality: region-{c}",
                      f"    kubeconfig: {kubeconfig}", f"    namespaces: [{layout}]"]
            if size == "small":
                lines.append("    label_selector: bench/shard=0")
        if http_port is not None:
            lines += ["http:", f"  listen: 127.0.0.1:{http_port}"]
        path = self.out / f"globaldns.{layout}-{size}.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def probe_http(self) -> None:
        """Does this build know `http.listen`? Then /ready is read too (on a free port, so
        that no default port is taken)."""
        path = self.config("shared", "small", 5353, free_port())
        out = subprocess.run([sys.executable, "-m", "globaldns", "check-config", str(path)],
                             capture_output=True, text=True, env=self.env, cwd=self.out,
                             timeout=60)
        self.http_supported = out.returncode == 0
        if not self.http_supported and "http" not in out.stdout + out.stderr:
            raise BenchError(f"check-config rejects the bench config: {out.stdout}"
                             f"{out.stderr}")

    # --- phases ------------------------------------------------------------------

    def wait_quiet(self, limit: float) -> float:
        busy = machine_busy(0.5)
        waited = 0.0
        if busy > self.args.max_other_load:
            log(f"  the machine is busy ({busy:.2f} cores before we start): waiting up to "
                f"{limit:.0f} s for quiet")
        while busy > self.args.max_other_load and waited < limit:
            busy = machine_busy(1.0)
            waited += 1.0
        return busy

    def run(self, layout: str, size: str, attempt: int) -> RunResult:
        a = self.args
        services = a.services if size == "full" else a.small_services
        result = RunResult(layout, size, a.clusters, services,
                           services if layout == "shared" else services * a.clusters,
                           a.clusters * services * a.endpoints, attempt=attempt)
        t_run = time.monotonic()
        port = free_port()
        http_port = free_port() if self.http_supported else None
        config = self.config(layout, size, port, http_port)
        tag = f"{layout}-{size}-{attempt}"
        cmd = [*self.pinned(SERVER_CPU), sys.executable, "-m", "globaldns", "serve",
               "--config", str(config), "--log-level", "warning"]
        log(f"{layout}/{size}: {result.global_services} services, {result.endpoints} "
            f"endpoints; starting `{shlex.join(cmd)}`")
        window = Window()
        env = self.env
        if a.profile:
            env = {**env, "PYTHONPATH": f"{self.gc_probe}{os.pathsep}{env['PYTHONPATH']}"}
        t0 = time.monotonic()
        server = self.sup.start(f"globaldns.{tag}", cmd, log=self.out / f"globaldns.{tag}.log",
                                env=env, cwd=self.out)
        try:
            try:
                self.wait_ready(server, result, layout, services, port, http_port, t0)
            finally:
                result.sync_usage = window.close({"server": server.pid, **self.roles()})
            result.rss_ready_mb, result.hwm_mb = memory(server.pid)
            log(f"  ready in {result.ready_s:.2f} s (listening {result.listening_s:.2f} s, "
                f"synced {result.synced_s:.2f} s; longest without a DNS answer "
                f"{result.sync_stall_s:.2f} s); RSS {result.rss_ready_mb:.0f} MB "
                f"(peak {result.hwm_mb:.0f} MB); server CPU "
                f"{result.sync_usage.cores.get('server', 0):.2f} cores, other load "
                f"{result.sync_usage.other:.2f}")
            resolver = Resolver(port)
            try:
                self.verify(resolver, result, layout, services)
                self.propagation(server, resolver, result, layout, services, port, tag)
            finally:
                resolver.close()
            result.rss_end_mb, result.hwm_mb = memory(server.pid)
            result.exit_s = self.terminate(server)
        except BenchError as exc:
            # One failed run is a result too (e.g. a sync that never converges); the other
            # runs still happen.
            result.failed = str(exc).splitlines()[0]
            result.problems.append(result.failed)
            result.rss_end_mb, result.hwm_mb = memory(server.pid)
            (self.out / f"failure.{tag}.txt").write_text(str(exc))
            log(f"  FAILED: {exc}")
        finally:
            self.sup.stop(server)
        if a.profile:
            log_path = self.gc_probe / f"gc-{server.pid}.log"
            ready = t0 + (result.ready_s or a.ready_timeout)
            result.gc_sync = gc_pauses(log_path, t0, ready)
            if result.prop_window:
                result.gc_propagation = gc_pauses(log_path, *result.prop_window)
        if result.exit_s is None and not result.failed:
            result.problems.append(f"the server was still running {a.exit_timeout:g} s after "
                                   "SIGTERM (killed)")
        elif server.popen.returncode not in (0, -signal.SIGTERM):
            result.problems.append(f"server exited with {server.popen.returncode}")
        for name, usage in (("sync", result.sync_usage), ("propagation", result.prop_usage)):
            if usage is not None and usage.other > a.max_other_load:
                result.disturbed.append(f"{name}: other load {usage.other:.2f} cores "
                                        f"({', '.join(usage.others) or 'many small'})")
        result.duration_s = time.monotonic() - t_run
        return result

    def terminate(self, server: Proc) -> float | None:
        """SIGTERM, and the seconds until the process is gone (None: still there after
        --exit-timeout; the caller then kills it)."""
        start = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, signal.SIGTERM)
        try:
            server.popen.wait(self.args.exit_timeout)
        except subprocess.TimeoutExpired:
            return None
        return time.monotonic() - start

    def roles(self) -> dict[str, int]:
        return {"emulators": self.emulator.pid} if self.emulator is not None else {}

    def wait_ready(self, server: Proc, result: RunResult, layout: str, services: int,
                   port: int, http_port: int | None, t0: float, *,
                   on_listening: Any = None, rx_times: list[float] | None = None) -> None:
        """Poll every 10 ms: an unknown name (SERVFAIL → NXDOMAIN) and the last service
        (all its addresses); /ready too when served."""
        a = self.args
        last = qname(layout, a.clusters - 1, services - 1)
        want = a.endpoints * (a.clusters if layout == "shared" else 1)
        unknown = f"no-such-service.{layout}.{ZONE}"
        resolver = Resolver(port)
        resolver.rx_times = rx_times
        next_http = 0.0
        try:
            while True:
                now = time.monotonic()
                if now - t0 > a.ready_timeout:
                    raise BenchError(f"not ready after {a.ready_timeout:g} s (server log: "
                                     f"{server.log.name})\n{server.log_tail()}")
                if server.popen.poll() is not None:
                    raise BenchError(f"globaldns exited with {server.popen.returncode} (server "
                                     f"log: {server.log.name})\n{server.log_tail()}")
                reply = resolver.ask(unknown, 0.05)
                result.sync_stall_s = resolver.longest_silence
                if reply is not None:
                    if not result.listening_s:
                        result.listening_s = time.monotonic() - t0
                        if on_listening is not None:
                            on_listening()
                    rcode = reply[3] & 15
                    if not result.synced_s and rcode == 3:
                        result.synced_s = time.monotonic() - t0
                    elif result.synced_s and rcode == 2:
                        # NXDOMAIN and then SERVFAIL again: a negative answer was given
                        # before the data was complete (resolvers cache it).
                        result.problems.append(
                            f"NXDOMAIN for an unknown name at {result.synced_s:.3f} s, before "
                            f"the sync (SERVFAIL again at {time.monotonic() - t0:.3f} s)")
                        result.synced_s = 0.0
                if result.synced_s and not result.complete_s:
                    reply = resolver.ask(last, 0.05)
                    if reply is not None and reply[3] & 15 == 0 and \
                            len(addresses(reply)) == want:
                        result.complete_s = time.monotonic() - t0
                if http_port is not None and result.http_ready_s is None and now >= next_http:
                    next_http = now + 0.05
                    url = f"http://127.0.0.1:{http_port}/ready"
                    with contextlib.suppress(urllib.error.URLError, OSError), \
                            urllib.request.urlopen(url, timeout=0.2) as r:
                        if r.status == 200:
                            result.http_ready_s = time.monotonic() - t0
                if result.synced_s and result.complete_s and (
                        http_port is None or result.http_ready_s is not None
                        or now - t0 > result.complete_s + 2):
                    result.ready_s = max(result.synced_s, result.complete_s)
                    return
                time.sleep(0.01)
        finally:
            resolver.close()

    def expected(self, layout: str, cluster: int, s: int) -> set[str]:
        a = self.args
        clusters = range(a.clusters) if layout == "shared" else [cluster]
        want = set()
        for c in clusters:
            addrs = [base_address(layout, c, s, i, a.endpoints) for i in range(a.endpoints)]
            if (layout, c, s) in self.current:
                addrs[0] = self.current[(layout, c, s)]
            want.update(addrs)
        return want

    def verify(self, resolver: Resolver, result: RunResult, layout: str,
               services: int) -> None:
        """The answers are right before we time anything: 50 services' full address sets,
        and NXDOMAIN for an unknown name."""
        a = self.args
        rng = random.Random(7)
        for _ in range(50):
            c, s = rng.randrange(a.clusters), rng.randrange(services)
            reply = resolver.ask(qname(layout, c, s), 1.0)
            got = set(addresses(reply)) if reply is not None and reply[3] & 15 == 0 else None
            if got != self.expected(layout, c, s):
                raise BenchError(f"wrong answer for {qname(layout, c, s)}: "
                                 f"{sorted(got) if got else got}")
            result.checked += 1
        reply = resolver.ask(f"no-such-service.{layout}.{ZONE}", 1.0)
        if reply is None or reply[3] & 15 != 3:
            raise BenchError("an unknown name is not NXDOMAIN after ready")

    def start_load(self, layout: str, services: int, port: int, duration: float,
                   tag: str) -> Proc:
        a = self.args
        names = [qname(layout, c, s) for c in range(a.clusters if layout == "distinct" else 1)
                 for s in range(services)]
        random.Random(11).shuffle(names)
        queries = self.out / f"queries.{layout}-{services}.txt"
        queries.write_text("".join(f"{n} A\n" for n in names))
        if self.has_dnsperf:
            # -e: EDNS (a 50-address answer needs more than 512 bytes); -c 4: four
            # source ports, so the load is not one 5-tuple.
            cmd = [*self.pinned(CLIENT_CPU), "dnsperf", "-s", "127.0.0.1", "-p", str(port),
                   "-d", str(queries), "-e", "-c", "4", "-q", "100", "-t", "2",
                   "-Q", str(a.qps), "-l", f"{duration:.0f}"]
        else:
            cmd = [*self.pinned(CLIENT_CPU), sys.executable, str(Path(__file__).resolve()),
                   "load", "--queries", str(queries), "--port", str(port), "--qps",
                   str(a.qps), "--duration", f"{duration:.0f}"]
        return self.sup.start(f"load.{tag}", cmd, log=self.out / f"load.{tag}.txt")

    def propagation(self, server: Proc, resolver: Resolver, result: RunResult, layout: str,
                    services: int, port: int, tag: str) -> None:
        a = self.args
        duration = a.warmup + a.changes * a.interval + 3
        load = self.start_load(layout, services, port, duration, tag)
        t_load = time.monotonic()
        time.sleep(a.warmup)
        window = Window()
        pairs = a.clusters * services
        offset = random.Random(attempt_seed(result)).randrange(pairs)
        seen_at: dict[int, float] = {}
        ids: list[int] = []
        start = time.monotonic()
        for i in range(a.changes):
            due = start + i * a.interval
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            elif now - due > a.interval:
                result.slipped += 1
            k = (i * STRIDE + offset) % pairs
            c, s = k % a.clusters, k // a.clusters
            self.seq += 1
            self.change_id += 1
            address = marker(self.seq)
            needle = b"\x00\x04" + socket.inet_aton(address)
            name = service_name(layout, c, s)
            self.emulator_command(f"change {self.change_id} {c} {layout} {name}-1 {address}")
            self.current[(layout, c, s)] = address
            ids.append(self.change_id)
            deadline = time.monotonic() + a.change_timeout
            target = qname(layout, c, s)
            while time.monotonic() < deadline:
                sent = time.monotonic()
                reply = resolver.ask(target, 0.05, accept=lambda d, n=needle: n in d)
                result.polls += 1
                if reply is not None and needle in reply and reply[3] & 15 == 0:
                    seen_at[self.change_id] = time.monotonic()
                    break
                pause = a.poll_interval - (time.monotonic() - sent)
                if pause > 0:
                    time.sleep(pause)
        result.prop_usage = window.close({"server": server.pid, "load": load.pid,
                                          **self.roles()})
        result.prop_window = (start, time.monotonic())
        self.emulator_command("times")
        times = self.emulator_answer()
        put = {int(k): v for k, v in times["put"].items()}
        written = {int(k): v for k, v in times["written"].items()}
        result.changes = len(ids)
        result.seen = len(seen_at)
        result.samples = [(i, *(round(t[i] - start, 6) if i in t else None
                                for t in (put, written, seen_at))) for i in ids]
        # A change never seen counts as the change timeout: the percentiles stay honest.
        result.latency_ms = percentiles([
            (seen_at[i] - written[i]) * 1000 if i in seen_at and i in written
            else a.change_timeout * 1000 for i in ids])
        result.latency_put_ms = percentiles([
            (seen_at[i] - put[i]) * 1000 if i in seen_at else a.change_timeout * 1000
            for i in ids])
        result.emit_ms = percentiles([(written[i] - put[i]) * 1000 for i in ids
                                      if i in written])
        if result.seen < result.changes:
            result.problems.append(f"{result.changes - result.seen} changes never seen in "
                                   f"DNS within {a.change_timeout:g} s")
        try:
            load.popen.wait(max(1.0, duration - (time.monotonic() - t_load)) + 15)
        except subprocess.TimeoutExpired:
            result.problems.append("the load generator did not end in time")
        self.sup.stop(load)
        result.load = parse_load(load.log.read_text(errors="replace"), self.has_dnsperf)
        result.load["cmd"] = shlex.join(load.cmd)
        lat = result.latency_ms
        log(f"  propagation: {result.seen}/{result.changes} seen; p50 {lat['p50']:.2f} ms, "
            f"p99 {lat['p99']:.2f} ms, max {lat['max']:.2f} ms (emulator write -> DNS); "
            f"load {result.load.get('qps', 0):.0f} q/s, lost {result.load.get('lost', '?')}; "
            f"server CPU {result.prop_usage.cores.get('server', 0):.2f} cores; other load "
            f"{result.prop_usage.other:.2f}")

    def event_costs(self) -> None:
        a = self.args
        for layout in self.args.layouts:
            for size in self.args.sizes:
                services = a.services if size == "full" else a.small_services
                config = self.config(layout, size, 5353, None)
                cmd = [*self.pinned(SERVER_CPU), sys.executable, str(Path(__file__).resolve()),
                       "event-cost", "--config", str(config), "--layout", layout,
                       "--clusters", str(a.clusters), "--services", str(services),
                       "--endpoints", str(a.endpoints), "--events", str(a.events)]
                if a.profile and size == "small":
                    cmd.append("--memory")
                proc = self.sup.start(f"event-cost.{layout}-{size}", cmd,
                                      log=self.out / f"event-cost.{layout}-{size}.txt",
                                      env=self.env, cwd=self.out)
                try:
                    proc.popen.wait(a.ready_timeout * 2)
                except subprocess.TimeoutExpired:
                    self.notes.append(f"in-process event cost {layout}/{size} timed out")
                    continue
                finally:
                    self.sup.stop(proc)
                lines = proc.log.read_text().strip().splitlines()
                try:
                    cost = json.loads(lines[-1])
                except (IndexError, ValueError):
                    self.notes.append(f"in-process event cost {layout}/{size} failed: "
                                      f"{proc.log_tail(3)}")
                    continue
                cost["size"] = size
                self.costs.append(cost)
                log(f"in-process {layout}/{size}: one event p50 {cost['event_us']['p50']:.0f} "
                    f"us, p99 {cost['event_us']['p99']:.0f} us at {cost['endpoints']} "
                    f"endpoints; snapshot built once in {cost['build_s']:.1f} s")

    def profile_sync(self, layout: str) -> None:
        """Where a start's time goes: py-spy samples the server (100 Hz) from its first DNS
        answer to ready; a separate start, not one of the timed runs."""
        a = self.args
        spy = shutil.which("py-spy")
        if spy is None:
            self.notes.append("no sync profile: py-spy is not installed (pip install py-spy)")
            return
        port = free_port()
        config = self.config(layout, "full", port, None)
        raw = self.out / f"sync-{layout}.pyspy.txt"
        # Info: the log says when each cluster synced (and published its services).
        cmd = [*self.pinned(SERVER_CPU), sys.executable, "-m", "globaldns", "serve",
               "--config", str(config), "--log-level", "info"]
        # --nonblocking: a paused server misses its own HTTP timeouts while it builds.
        spy_cmd = [*self.pinned(CLIENT_CPU), spy, "record", "-f", "raw", "--nolineno", "-r",
                   "100", "--nonblocking", "-o", str(raw), "--pid"]
        log(f"profiling the first sync ({layout}) with py-spy")
        env = {**self.env, "PYTHONPATH": f"{self.gc_probe}{os.pathsep}{self.env['PYTHONPATH']}"}
        wall_offset = time.time() - time.monotonic()
        t0 = time.monotonic()
        server = self.sup.start(f"globaldns.profile-{layout}", cmd,
                                log=self.out / f"globaldns.profile-{layout}.log",
                                env=env, cwd=self.out)
        spied: list[Proc] = []

        def attach() -> None:
            spied.append(self.sup.start("py-spy", [*spy_cmd, str(server.pid)],
                                        log=self.out / f"py-spy.{layout}.log"))

        result = RunResult(layout, "full", a.clusters, a.services, 0, 0)
        rx: list[float] = []
        try:
            self.wait_ready(server, result, layout, a.services, port, None, t0,
                            on_listening=attach, rx_times=rx)
        finally:
            for proc in spied:  # py-spy writes its file on SIGINT
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(60)
                self.sup.stop(proc)
            self.sup.stop(server)
        if not raw.exists():
            self.notes.append(f"py-spy wrote no profile; see {self.out}/py-spy.{layout}.log")
            return
        sampled = result.ready_s - result.listening_s
        width = a.services * (1 if layout == "shared" else a.clusters)
        gc_log = self.gc_probe / f"gc-{server.pid}.log"
        gcs = gc_pauses(gc_log, t0 + result.listening_s, t0 + result.ready_s)
        self.profile += (
            f"### `{layout}` ({width:,} services): from the first DNS answer to ready "
            f"({sampled:.1f} s with py-spy attached; ready at {result.ready_s:.1f} s)\n\n"
            f"{gcs['count']:.0f} full garbage collections took {gcs['total_s']:.1f} s of "
            f"it (longest {gcs['max_s']:.2f} s; GC log). py-spy cannot sample inside the "
            "collector without pausing the server, so that time shows up in the Python "
            "functions that allocated when a collection started.\n\n"
            + self.silences(rx, t0, gc_log, server.log, wall_offset)
            + f"```\n{collapse(raw, sampled)}```\n\n")

    def silences(self, rx: list[float], t0: float, gc_log: Path, server_log: Path,
                 wall_offset: float) -> str:
        """Stretches longer than 0.5 s in which the server sent no DNS answer at all (it
        is probed every ~10 ms), with the full GCs and the clusters' first publishes in
        each."""
        synced = []
        for line in server_log.read_text(errors="replace").splitlines():
            m = re.match(r"(\S+ \S+),(\d+) INFO globaldns.k8s: k8s (\S+): \S+ → synced", line)
            if m:
                wall = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
                synced.append((wall + int(m.group(2)) / 1000 - wall_offset, m.group(3)))
        rows = []
        for a, b in itertools.pairwise(rx):
            if b - a > 0.5:
                gcs = gc_pauses(gc_log, a, b)
                names = [name for t, name in synced if a <= t < b]
                rows.append(f"| {a - t0:.1f} | {b - a:.2f} | {gcs['total_s']:.2f} "
                            f"({gcs['count']:.0f}) | {', '.join(names) or '-'} |")
        if not rows:
            return "No stretch of more than 0.5 s without a DNS answer.\n\n"
        return ("Stretches without any DNS answer (the readiness probe asks every ~10 ms); "
                "a cluster is listed when its first publish (`syncing → synced`, logged "
                "after it) ended inside:\n\n"
                "| from (s after start) | silent for (s) | full GCs inside (s, count) | "
                "clusters synced inside |\n| ---: | ---: | ---: | --- |\n"
                + "\n".join(rows) + "\n\n")

def attempt_seed(result: RunResult) -> int:
    return hash((result.layout, result.size, result.attempt)) & 0xFFFF


def collapse(raw: Path, seconds: float, top: int = 22) -> str:
    """py-spy's raw (collapsed) stacks as two tables: own time and inclusive time per
    function, in % of the samples and in seconds (100 samples per second)."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        # The main thread only: the others are idle pool threads (credentials loading).
        if not count.isdigit() or not stack.startswith("_run_module_as_main"):
            continue
        n = int(count)
        frames = [re.sub(r"\S*/(globaldns|site-packages|python3\.\d+)/", r"\1/", f)
                  for f in stack.split(";")[3:]]  # past runpy and __main__
        if not frames:
            continue
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n
    if not total:
        return "no samples of the main thread\n"
    lines = [f"main thread: {total} samples at 100 Hz = {total / 100:.1f} s busy of "
             f"{seconds:.1f} s sampled", "", "own time:"]
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * n / total:5.1f} %  {n / 100:6.1f} s  {name}")
    lines += ["", "inclusive time (the function and what it calls):"]
    for name, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top + 8]:
        lines.append(f"{100 * n / total:5.1f} %  {n / 100:6.1f} s  {name}")
    return "\n".join(lines) + "\n"


class _Alarm:
    """A blocking read that gives up after `seconds` (SIGALRM)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        def expire(_signum: int, _frame: object) -> None:
            raise BenchError(f"no answer from the emulator process in {self.seconds:g} s")

        self.old = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.old)


def parse_load(text: str, dnsperf: bool) -> dict[str, Any]:
    if not dnsperf:
        try:
            data = json.loads(text.strip().splitlines()[-1])
        except (IndexError, ValueError):
            return {"error": text[-300:]}
        data["lost"] = data["sent"] - data["completed"]
        data["rcodes"] = {RCODES.get(int(k), k): v for k, v in data["rcodes"].items()}
        return data
    out: dict[str, Any] = {}
    for key, pattern in (("sent", r"Queries sent:\s+(\d+)"),
                         ("completed", r"Queries completed:\s+(\d+)"),
                         ("lost", r"Queries lost:\s+(\d+)"),
                         ("qps", r"Queries per second:\s+([0-9.]+)"),
                         ("avg_latency_ms", r"Average Latency \(s\):\s+([0-9.]+)"),
                         ("max_latency_ms", r"Average Latency \(s\):.*max ([0-9.]+)\)")):
        if m := re.search(pattern, text):
            value = float(m.group(1))
            out[key] = value * 1000 if key.endswith("_ms") else value
    if m := re.search(r"Response codes:\s+(.*)", text):
        out["rcodes"] = {p.split()[0]: int(p.split()[1]) for p in m.group(1).split(", ")}
    return out


def _sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine() -> dict[str, str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    try:
        import uvloop
        uv = f"uvloop {uvloop.__version__}"
    except ImportError:
        uv = "no uvloop"
    dnsperf = _sh(["dnsperf", "-h"]).splitlines()[-1:] if shutil.which("dnsperf") else []
    return {"nproc": str(os.cpu_count()), "CPU": cpu, "kernel": platform.release(),
            "python": f"{platform.python_version()} ({uv})",
            "dnsperf": dnsperf[0] if dnsperf else "not installed",
            "memory": f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') >> 30} GB"}


# --- the report ------------------------------------------------------------------------


def _ms(d: dict[str, float], key: str) -> str:
    return f"{d[key]:.1f}" if key in d else "-"


def _usage(u: Usage | None, role: str) -> str:
    return f"{u.cores.get(role, 0.0):.2f}" if u is not None else "-"


def write_results(bench: Bench, path: Path, info: dict[str, Any]) -> None:
    a = bench.args
    results = bench.results
    kept = _kept(results)
    lines = [
        "# globaldns: Kubernetes end to end (issue 3 benchmarks)", "",
        "Written by `python3 bench/k8s_e2e.py` (see bench/README.md, \"k8s_e2e.py\"). The real "
        "server (`python -m globaldns serve`) is fed by emulated API servers over HTTP and "
        "measured through DNS on 127.0.0.1. Absolute figures move with the machine; the "
        "machine and its other load are recorded with them.", "",
        f"- date: {info['date']}",
        *(f"- {k}: {v}" for k, v in info["machine"].items()),
        f"- load average before / after: {info['load_before']} / {info['load_after']}",
        f"- globaldns: {info['globaldns']}",
        f"- command: `{info['command']}`",
        f"- pinning: {info['pinning']}",
        f"- data: {a.clusters} emulated clusters (one emulator each, all in one child "
        f"process), {a.services:,} services per cluster x {a.endpoints} endpoints "
        f"({a.clusters * a.services * a.endpoints:,} endpoints); `small`: the first "
        f"{a.small_services:,} services of each cluster (label selector), "
        f"{a.clusters * a.small_services * a.endpoints:,} endpoints",
        "- layouts: **shared** = every cluster has the same services (namespace `shared`): "
        f"{a.services:,} merged global services of {a.clusters * a.endpoints} endpoints "
        f"each; **distinct** = each cluster its own services (namespace `distinct`): "
        f"{a.clusters * a.services:,} global services of {a.endpoints} endpoints each",
        f"- emulators built in {bench.emulator_build_s:.1f} s; raw outputs: "
        f"`{os.path.relpath(bench.out, REPO)}/` (not committed)",
        f"- whole run: {info['elapsed']:.0f} s", "",
        "## Goals", ""]
    for r in kept:
        if r.size != "full":
            continue
        if r.failed:
            lines.append(f"- {r.layout} ({r.global_services:,} services, {r.endpoints:,} "
                         f"endpoints): **failed**: {r.failed}" +
                         (f" — disturbed: {'; '.join(r.disturbed)}" if r.disturbed else ""))
            continue
        lines += [
            f"- {r.layout} ({r.global_services:,} services, {r.endpoints:,} endpoints): "
            f"ready in **{r.ready_s:.1f} s** (goal < 20 s: {_met(r.ready_s < 20)}); RSS "
            f"**{r.rss_end_mb:.0f} MB**, peak {r.hwm_mb:.0f} MB (goal < 400 MB: "
            f"{_met(r.hwm_mb < 400)}); propagation p99 **{_ms(r.latency_ms, 'p99')} ms** "
            f"(goal < 50 ms: {_met(r.latency_ms.get('p99', 1e9) < 50)})"
            + (f" — disturbed: {'; '.join(r.disturbed)}" if r.disturbed else "")]
    for layout in a.layouts:
        full = next((r for r in kept if r.layout == layout and r.size == "full"), None)
        small = next((r for r in kept if r.layout == layout and r.size == "small"), None)
        if full and small and full.latency_ms and small.latency_ms:
            lines.append(
                f"- {layout}, one event at {small.endpoints:,} vs {full.endpoints:,} "
                f"endpoints: propagation p50 {_ms(small.latency_ms, 'p50')} vs "
                f"{_ms(full.latency_ms, 'p50')} ms, p99 {_ms(small.latency_ms, 'p99')} vs "
                f"{_ms(full.latency_ms, 'p99')} ms" + _cost_line(bench.costs, layout))
    for r in kept:
        cost = next((c for c in bench.costs if c["layout"] == r.layout and c["size"] == r.size),
                    None)
        if r.size == "full" and cost and r.sync_usage:
            cpu = r.sync_usage.cores.get("server", 0.0) * r.sync_usage.wall
            gc_part = (f", {r.gc_sync['total_s']:.1f} s of it in {r.gc_sync['count']:.0f} full "
                       "garbage collections" if r.gc_sync else "")
            merged = (f"; the first sync prepares each merged service again each time one "
                      f"more of the {r.clusters} clusters publishes it" if r.layout == "shared"
                      else "")
            lines.append(
                f"- {r.layout}: the server used {cpu:.1f} s of CPU from start to ready"
                f"{gc_part}; building the answer Snapshot once over the same registry "
                f"in-process takes {cost['build_s']:.1f} s{merged}")
    lines += ["", "## Time to ready and memory", "",
              "| layout | size | global services | endpoints | listening (s) | NXDOMAIN "
              "(synced) (s) | last service complete (s) | ready (s) | /ready 200 (s) | "
              "longest without a DNS answer while syncing (s) | "
              "server CPU (cores) | emulators CPU (cores) | other load (cores) | RSS at "
              "ready (MB) | RSS at end (MB) | VmHWM (MB) | exit after SIGTERM (s) | full GCs "
              "while syncing: count, total / longest (s) |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
              "---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        ready = "not ready" if r.failed else f"{r.ready_s:.2f}"
        lines.append(
            f"| {r.layout}{_attempt(r, kept)} | {r.size} | {r.global_services:,} | "
            f"{r.endpoints:,} | {r.listening_s:.2f} | {r.synced_s:.2f} | {r.complete_s:.2f} "
            f"| **{ready}** | "
            f"{'-' if r.http_ready_s is None else f'{r.http_ready_s:.2f}'} | "
            f"{r.sync_stall_s:.2f} | "
            f"{_usage(r.sync_usage, 'server')} | {_usage(r.sync_usage, 'emulators')} | "
            f"{r.sync_usage.other if r.sync_usage else 0:.2f} | {r.rss_ready_mb:.0f} | "
            f"{r.rss_end_mb:.0f} | {r.hwm_mb:.0f} | "
            f"{'-' if r.failed else 'killed' if r.exit_s is None else f'{r.exit_s:.1f}'} | "
            f"{_gc(r.gc_sync, 's')} |")
    lines += ["", f"## Propagation: emulator event → DNS answer, {a.changes:,} changes "
              f"under {a.qps:,} q/s", "",
              "| layout | size | endpoints | seen | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) "
              "| p50 / p99 from `put` (ms) | emulator put→write p50 / max (ms) | load q/s "
              "| lost | rcodes | load latency avg / max (ms) | server CPU (cores) | other "
              "load (cores) | poller queries | full GCs: count, total / longest (ms) |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
              "---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        if not r.latency_ms:
            continue
        ld = r.load
        rc = ", ".join(f"{k} {v}" for k, v in (ld.get("rcodes") or {}).items())
        lines.append(
            f"| {r.layout}{_attempt(r, kept)} | {r.size} | {r.endpoints:,} | "
            f"{r.seen}/{r.changes} | {_ms(r.latency_ms, 'p50')} | {_ms(r.latency_ms, 'p90')} "
            f"| **{_ms(r.latency_ms, 'p99')}** | {_ms(r.latency_ms, 'max')} | "
            f"{_ms(r.latency_put_ms, 'p50')} / {_ms(r.latency_put_ms, 'p99')} | "
            f"{_ms(r.emit_ms, 'p50')} / {_ms(r.emit_ms, 'max')} | {ld.get('qps', 0):,.0f} | "
            f"{ld.get('lost', '?')} | {rc} | {_ms(ld, 'avg_latency_ms')} / "
            f"{_ms(ld, 'max_latency_ms')} | {_usage(r.prop_usage, 'server')} | "
            f"{r.prop_usage.other if r.prop_usage else 0:.2f} | {r.polls:,} | "
            f"{_gc(r.gc_propagation, 'ms')} |")
    if bench.costs:
        lines += ["", "## One event in-process (Store + Snapshot, no I/O)", "",
                  "The same slice change applied as a watch applies it (EndpointSlice → "
                  "record → merge → `Store.set` → `Snapshot.update`), in a child process "
                  f"pinned to CPU {SERVER_CPU}, over a registry of the run's size whose "
                  "Snapshot was built once (each service prepared once); "
                  f"{a.events} events, each timed alone. A full GC is a collection of "
                  "generation 2, timed with `gc.callbacks`.", "",
                  "| layout | endpoints | names in the snapshot | Snapshot built once over "
                  "the registry (s) | one event p50 (us) | p99 (us) | mean (us) | objects "
                  "tracked by the GC | full GCs during the events | longest (ms) | one "
                  "`gc.collect()` (ms) |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for c in bench.costs:
            e = c["event_us"]
            lines.append(f"| {c['layout']} | {c['endpoints']:,} | {c['names']:,} | "
                         f"{c['build_s']:.1f} | {e['p50']:.0f} | {e['p99']:.0f} | "
                         f"{e['mean']:.0f} | {c['objects']:,} | {c['gc_full']} | "
                         f"{c['gc_full_max_ms']:.0f} | {c['gc_collect_ms']:.0f} |")
        for c in bench.costs:
            m = c.get("memory")
            if not m:
                continue
            lines += ["", f"What the Snapshot build allocates, {c['layout']}, "
                      f"{m['services']:,} services ({c['endpoints']:,} endpoints): "
                      f"{m['total_mb']:.0f} MB live after the build, **{m['per_service_kb']:.0f}"
                      " KB per global service** (tracemalloc, by source line):", "",
                      "| MB | blocks | allocated at |", "| ---: | ---: | --- |"]
            lines += [f"| {mb:.1f} | {count:,} | `{site}` |" for site, mb, count in m["sites"]]
    if bench.profile:
        lines += ["", "## Where the server spends its start", "", bench.profile.rstrip()]
    lines += ["", "## Method", "",
              f"- Server: `python -m globaldns serve --config FILE --log-level warning`, "
              f"pinned to CPU {SERVER_CPU}; the config lists the {a.clusters} clusters with "
              "the kubeconfig files the emulators wrote (token auth, plain HTTP on "
              "127.0.0.1), `namespaces: [<layout>]`, `sync_timeout: 600s` (ready comes from "
              "the sync, never from the timeout), resolver locality `region-0/z0`, cluster "
              "`cN` in `region-N`, endpoints in zones z0-z2.",
              "- Ready: from the server process's start (fork+exec, imports included) until "
              "both an unknown name answers NXDOMAIN instead of SERVFAIL (every cluster has "
              "listed) and the last service of the last cluster answers all its addresses; "
              "polled over UDP every 10 ms. *Listening* is the first DNS answer of any kind; "
              "*longest without a DNS answer* is the longest gap between answers to those "
              "probes from then to ready (the event loop was busy that long). "
              "RSS is VmRSS / VmHWM of the server process from /proc. Before timing, 50 "
              "random services are checked to answer exactly their expected address set "
              "and an unknown name NXDOMAIN.",
              f"- Load: `dnsperf -e -c 4 -q 100 -Q {a.qps}` over every service name of the "
              f"run (A, shuffled), pinned to CPU {CLIENT_CPU} with the emulators and the "
              f"poller; it starts {a.warmup:g} s before the first change and runs past the "
              "last. EDNS because a 50-address answer is larger than 512 bytes.",
              f"- Changes: {a.changes:,}, one every {a.interval * 1000:g} ms, each on a "
              "different (cluster, service): the emulator replaces endpoint 0 of the "
              "service's slice in that cluster with a unique marker address (one "
              "EndpointSlice MODIFIED event). The start time is taken in the emulator "
              "process when it encodes the event for the open watch stream (just before the "
              "socket write); `put` is the moment the change is made (includes the "
              "emulator's own scheduling). The end time is when the poller, in the bench "
              "process, receives the first answer for the changed service's A name that "
              f"contains the marker; it asks every {a.poll_interval * 1000:g} ms (or right "
              "after the previous reply) with EDNS, so the figures include up to one poll "
              "interval plus one round trip. Both clocks are CLOCK_MONOTONIC of the same "
              f"host. A change not seen within {a.change_timeout:g} s counts as "
              f"{a.change_timeout:g} s.",
              "- Full GCs (with `--profile`): a `sitecustomize` put on the server's PYTHONPATH "
              "by the bench (nothing in globaldns/ changes) appends a `gc.callbacks` hook "
              "that logs every generation-2 collection with its CLOCK_MONOTONIC start and "
              "duration; the collections that began during the sync or the propagation "
              "window are counted.",
              f"- Exit: after the propagation, SIGTERM, and the seconds until the process is "
              f"gone (SIGKILL after {a.exit_timeout:g} s).",
              "- Other load: CPU time of every process that is not ours (from /proc, kernel "
              "threads aside) over the window, in cores; a window above "
              f"{a.max_other_load} cores is marked disturbed and the run repeated when the "
              f"time budget ({a.budget:.0f} s) allows; every attempt is listed, the goals use "
              "the quietest one."]
    if bench.notes or any(r.problems for r in results):
        lines += ["", "## Notes", ""]
        lines += [f"- {n}" for n in bench.notes]
        for r in results:
            lines += [f"- {r.layout}/{r.size} attempt {r.attempt}: {p}" for p in r.problems]
            lines += [f"- {r.layout}/{r.size} attempt {r.attempt} disturbed: {d}"
                      for d in r.disturbed]
    path.write_text("\n".join(lines) + "\n")


def _gc(g: dict[str, float], unit: str) -> str:
    if not g:
        return "-"
    k, digits = (1000, 1) if unit == "ms" else (1, 2)
    return f"{g['count']:.0f}, {g['total_s'] * k:.{digits}f} / {g['max_s'] * k:.{digits}f}"


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _kept(results: list[RunResult]) -> list[RunResult]:
    """Per layout and size, the attempt with the least other load."""
    best: dict[tuple[str, str], RunResult] = {}
    for r in results:
        key = (r.layout, r.size)
        if key not in best or _noise(r) < _noise(best[key]):
            best[key] = r
    return list(best.values())


def _noise(r: RunResult) -> tuple[bool, float]:
    """Completed runs first, then the least other load."""
    return bool(r.failed), max(r.sync_usage.other if r.sync_usage else 9.0,
                               r.prop_usage.other if r.prop_usage else 0.0)


def _attempt(r: RunResult, kept: list[RunResult]) -> str:
    return "" if r in kept and r.attempt == 1 else \
        f" (attempt {r.attempt}{', kept' if r in kept else ''})"


def _cost_line(costs: list[dict[str, Any]], layout: str) -> str:
    mine = {c["size"]: c for c in costs if c["layout"] == layout}
    if "full" not in mine or "small" not in mine:
        return ""
    s, f = mine["small"]["event_us"], mine["full"]["event_us"]
    return (f"; in-process p50 {s['p50']:.0f} vs {f['p50']:.0f} us, p99 {s['p99']:.0f} vs "
            f"{f['p99']:.0f} us")


# --- command line ----------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", nargs="?", default="run",
                   choices=["run", "emulate", "event-cost", "load"])
    p.add_argument("--clusters", type=int, default=10)
    p.add_argument("--services", type=int, default=2000, help="per cluster")
    p.add_argument("--small-services", type=int, default=200,
                   help="per cluster in the `small` size")
    p.add_argument("--endpoints", type=int, default=5, help="per service and cluster")
    p.add_argument("--layouts", default="shared,distinct")
    p.add_argument("--sizes", default="full,small")
    p.add_argument("--changes", type=int, default=1000)
    p.add_argument("--interval", type=float, default=0.02, help="seconds between changes")
    p.add_argument("--qps", type=int, default=5000, help="background load, queries/s")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--poll-interval", type=float, default=0.0005)
    p.add_argument("--change-timeout", type=float, default=2.0)
    p.add_argument("--ready-timeout", type=float, default=180.0)
    p.add_argument("--exit-timeout", type=float, default=30.0,
                   help="seconds the server gets to exit after SIGTERM")
    p.add_argument("--events", type=int, default=500, help="in-process events timed")
    p.add_argument("--profile", action="store_true",
                   help="also (about 4 minutes more): one event timed in-process at each "
                   "size, what the Snapshot allocates (tracemalloc, small size), py-spy over "
                   "one more start of the server per layout")
    p.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--max-other-load", type=float, default=0.15)
    p.add_argument("--retries", type=int, default=1, help="repeats of a disturbed run")
    p.add_argument("--quiet-wait", type=float, default=30.0,
                   help="seconds to wait for other work to stop before each run")
    p.add_argument("--budget", type=float, default=300.0,
                   help="seconds: no repeat starts past this")
    p.add_argument("--rev", default="", help="run globaldns from `git archive REV`")
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--no-dnsperf", action="store_true", help="use the Python load sender")
    p.add_argument("--results", type=Path, default=BENCH / "RESULTS-k8s.md")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--out", type=Path, default=BENCH / "out")
    # child modes
    p.add_argument("--dir", default="")
    p.add_argument("--config", default="")
    p.add_argument("--layout", default="shared")
    p.add_argument("--queries", default="")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--duration", type=float, default=0)
    args = p.parse_args(argv)
    if args.mode == "run":
        args.layouts = [x for x in args.layouts.split(",") if x]
        args.sizes = [x for x in args.sizes.split(",") if x]
        if set(args.layouts) - {"shared", "distinct"} or set(args.sizes) - {"full", "small"}:
            p.error("--layouts: shared,distinct; --sizes: full,small")
        if args.services * args.endpoints > 65536 or args.clusters > 100:
            p.error("at most 65,536 endpoints per cluster and layout, 100 clusters")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.mode == "emulate":
        asyncio.run(emulate(args))
        return 0
    if args.mode == "event-cost":
        event_cost(args)
        return 0
    if args.mode == "load":
        load(args)
        return 0
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = (args.out / f"k8s-e2e-{stamp}").resolve()
    out.mkdir(parents=True)
    bench = Bench(args, out)
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": machine(), "load_before": _loadavg(),
        "command": shlex.join(["python3", "bench/k8s_e2e.py", *argv]),
        "pinning": (f"server `taskset -c {SERVER_CPU}`; emulators, load generator and "
                    f"poller `taskset -c {CLIENT_CPU}`" if bench.pin else "none")}
    if not bench.has_dnsperf:
        bench.notes.append("dnsperf not used: the load is the bounded Python sender "
                           "(`k8s_e2e.py load`)")

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    failed = ""
    try:
        info["globaldns"] = bench.prepare_source()
        log(f"globaldns: {info['globaldns']}; output in {out}")
        log(f"building {args.clusters} emulators x {args.services} services x 2 layouts "
            f"(child process)")
        bench.start_emulators()
        log(f"emulators ready in {bench.emulator_build_s:.1f} s")
        bench.probe_http()
        plan = [(layout, size) for size in args.sizes for layout in args.layouts]
        for layout, size in plan:
            attempt = 1
            while True:
                bench.wait_quiet(args.quiet_wait)
                result = bench.run(layout, size, attempt)
                bench.results.append(result)
                if result.problems:
                    log(f"  problems: {'; '.join(result.problems)}")
                if not result.disturbed or attempt > args.retries:
                    break
                left = args.budget - (time.monotonic() - bench.started)
                if left < result.duration_s * 1.2 + 30 * (len(plan) - plan.index(
                        (layout, size)) - 1):
                    bench.notes.append(f"{layout}/{size}: disturbed, not repeated (time "
                                       "budget)")
                    break
                log(f"  disturbed ({'; '.join(result.disturbed)}): repeating")
                attempt += 1
        if args.profile:
            bench.event_costs()
            for layout in args.layouts:
                bench.profile_sync(layout)
    except KeyboardInterrupt:
        failed = "interrupted"
        log("interrupted: stopping every process started")
    except BenchError as exc:
        failed = str(exc)
        log(f"FAIL: {exc}")
    finally:
        if bench.emulator is not None and bench.emulator.popen.poll() is None:
            with contextlib.suppress(OSError):
                bench.emulator_command("")
        bench.sup.stop_all()
        bench.notes.extend(bench.sup.notes)
    info["load_after"] = _loadavg()
    info["elapsed"] = time.monotonic() - bench.started
    (out / "results.json").write_text(json.dumps(
        {"info": info, "runs": [asdict(r) for r in bench.results], "costs": bench.costs},
        indent=1, default=str))
    if failed:
        bench.notes.append(f"run failed: {failed.splitlines()[0]}")
    if not args.no_write and bench.results and failed != "interrupted":
        write_results(bench, args.results, info)
        log(f"wrote {os.path.relpath(args.results, Path.cwd())}")
    log(f"whole run {info['elapsed']:.0f} s; raw outputs in {out}")
    return 1 if failed else 0


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
