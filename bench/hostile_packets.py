"""What hostile packets cost (issue 10, "Packets"): the CPU of accepting or rejecting the
worst packets up to 65,535 bytes, and normal queries' latency while the worst one floods.

    python3 bench/hostile_packets.py                  # about 60 s; writes bench/RESULTS-hostile.md
    python3 bench/hostile_packets.py --no-write --flood-seconds 3

1. In this process, for each packet of `packets()`: CPU per packet (process time, median
   and worst of --repeats batches) of what the server does before its handler chain:
   `parse`, then `error_reply` for a refused one (dns/message.py, dns/wire.py). Goal:
   < 1 ms each.
2. `python -m globaldns serve` as its own process (pinned to CPU 0 when `taskset` is
   there; this harness on CPU 1), loopback only. Normal queries (A, 200/s, each waiting
   for its answer) are timed for --flood-seconds without load, then again while a child
   process sends the 800-pointer packet at 1,000/s over UDP, then while it sends the
   costliest message of step 1 (65,535 bytes, NOTAUTH) at 1,000/s over one TCP
   connection. Goal: p99 < 5 ms under the flood.
   The server's CPU share and its gate counter are read from /proc and /metrics.
Every process it starts is stopped by PID. Bounded: 3 x --rounds x --flood-seconds of load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import shutil
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from procs import Supervisor, cpu_seconds, free_port, use_project_venv, wait_ready  # noqa: E402

use_project_venv()

from globaldns.dns.message import TCP, UDP, Malformed, parse  # noqa: E402
from globaldns.dns.wire import error_reply  # noqa: E402

NAME = "user-service.production.global"
CONFIG = """
dns: {listen: 127.0.0.1:%d}
http: {listen: 127.0.0.1:%d}
clusters: [{name: c1, locality: r1}]
services:
  - name: user-service
    namespace: production
    endpoints: [{address: 10.1.0.11, cluster: c1}, {address: 10.1.0.12, cluster: c1}]
"""


def header(qid: int, *, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, 0x0100, qd, an, ns, ar)


def question(name: str = NAME, qtype: int = 1) -> bytes:
    return b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\0" \
        + struct.pack("!HH", qtype, 1)


def opt(options: bytes) -> bytes:
    return b"\0" + struct.pack("!HHIH", 41, 1232, 0, len(options)) + options


def chained_pointers(count: int, rdlen: int = 8) -> bytes:
    """`count` additional records, each owned by a pointer to the previous one's owner:
    1 + 2 + ... + count hops for a reader without a bound (800: 16 KB)."""
    body = bytearray(question())
    owner = 12
    for _ in range(count):
        here = 12 + len(body)
        body += struct.pack("!HHHIH", 0xC000 | owner, 65280, 1, 0, rdlen) + bytes(rdlen)
        owner = here
    return header(1, ar=count) + bytes(body)


def pointer_chain_in_allowed_shape(size: int = 65535) -> bytes:
    """One question, an OPT whose option holds a chain of pointers each to the one before,
    and a TSIG owned by the last: a shape the gate lets through, read by the bounded reader
    (which stops at 127 hops)."""
    q = question()
    start = 12 + len(q) + 11 + 4
    chain = bytearray(b"\x01a\x00")
    while len(chain) < size - 200:
        chain += struct.pack("!H", 0xC000 | (start + len(chain) - 2))
    tsig = struct.pack("!HHHIH", 0xC000 | (start + len(chain) - 2), 250, 255, 0, 0)
    grow = size - (12 + len(q) + 11 + 4 + len(chain) + len(tsig))
    options = struct.pack("!HH", 65001, len(chain) + grow) + chain + bytes(grow)
    return header(2, ar=2) + q + opt(options) + tsig


def longest_names(size: int = 65535) -> bytes:
    """The most work an accepted shape asks of the reader: an ignored record whose RDATA
    holds 126 blocks (a one-byte label, then a pointer to the block 4 bytes before), then
    a TSIG whose owner and algorithm each point at the last block: two names of 253 bytes
    through 127 pointers each, every jump landing before the last. Answered NOTAUTH/BADKEY."""
    q = question()
    rdata_at = 12 + len(q) + 11  # the ignored record: root owner, then 10 fixed bytes
    blocks = bytearray(b"\0")  # the root, at rdata_at
    for j in range(126):
        below = rdata_at if j == 0 else rdata_at + 1 + 4 * (j - 1)
        blocks += b"\x01a" + struct.pack("!H", 0xC000 | below)
    top = rdata_at + 1 + 4 * 125
    rdata = struct.pack("!H", 0xC000 | top) + bytes(8) + struct.pack("!HHHH", 0, 1, 0, 0)
    tsig = struct.pack("!H", 0xC000 | top) + struct.pack("!HHIH", 250, 255, 0, len(rdata)) \
        + rdata
    pad = size - (rdata_at + len(blocks) + len(tsig))
    ignored = b"\0" + struct.pack("!HHIH", 65280, 1, 0, len(blocks) + pad) + bytes(blocks) \
        + bytes(pad)
    return header(3, ar=2) + q + ignored + tsig


def packets() -> dict[str, tuple[bytes, int]]:
    """name → (packet, transport)."""
    q = question()
    many = struct.pack("!HH", 65001, 0) * ((65535 - 12 - len(q) - 11) // 4)
    one_big = struct.pack("!HH", 65001, 65535 - 12 - len(q) - 11 - 4) \
        + bytes(65535 - 12 - len(q) - 11 - 4)
    return {
        "common query (baseline)": (header(4) + q, UDP),
        "common query with EDNS (baseline)": (header(5, ar=1) + q + opt(b""), UDP),
        "800 chained pointers, 16 KB, UDP (gate: FORMERR)": (chained_pointers(800), UDP),
        "800 chained pointers, 16 KB, TCP (gate: FORMERR)": (chained_pointers(800), TCP),
        "1,360 chained pointers (all a pointer reaches), TCP (gate: FORMERR)":
            (chained_pointers(1360, rdlen=0), TCP),
        "65,507-byte UDP datagram, no EDNS (gate: FORMERR)":
            (header(6) + q + bytes(65507 - 12 - len(q)), UDP),
        "65,535-byte TCP, pointer chain in an OPT + TSIG (reader: FORMERR at 127 hops)":
            (pointer_chain_in_allowed_shape(), TCP),
        "65,535-byte TCP, 2 longest names through 127 pointers each (NOTAUTH/BADKEY)":
            (longest_names(), TCP),
        "65,535-byte TCP, 16,369 empty EDNS options (FORMERR after 16)":
            (header(7, ar=1) + q + opt(many), TCP),
        "65,535-byte TCP, one 65 KB EDNS option (accepted)":
            (header(8, ar=1) + q + opt(one_big), TCP),
    }


def reader_cost(packet: bytes, transport: int) -> tuple[str, float]:
    """What the server does before the chain: the outcome, and the CPU seconds it took."""
    start = time.process_time()
    try:
        q = parse(packet, ("192.0.2.1", 5300), transport)
        outcome = "dropped" if q is None else "accepted"
    except Malformed as bad:
        wire = error_reply(packet, bad) if bad.rcode is not None else b""
        outcome = {1: "FORMERR", 4: "NOTIMP", 9: "NOTAUTH", 16: "BADVERS"}.get(
            bad.rcode or 0, "dropped") + (f" ({bad})" if str(bad) else "") \
            + (f", reply {len(wire)} B" if wire else "")
    return outcome, time.process_time() - start


def dnslib_cost(packet: bytes) -> float:
    """CPU seconds dnslib takes to parse `packet`: what the query path did before."""
    import dnslib
    start = time.process_time()
    with contextlib.suppress(Exception):  # dnslib raises several types for bad input
        dnslib.DNSRecord.parse(packet)
    return time.process_time() - start


def measure_reader(repeats: int, per_batch: int) -> list[dict[str, object]]:
    rows = []
    for name, (packet, transport) in packets().items():
        outcome, _ = reader_cost(packet, transport)
        batches = []
        for _ in range(repeats):
            start = time.process_time()
            for _ in range(per_batch):
                reader_cost(packet, transport)
            batches.append((time.process_time() - start) / per_batch)
        rows.append({"packet": name, "bytes": len(packet), "outcome": outcome,
                     "median_us": statistics.median(batches) * 1e6,
                     "worst_us": max(batches) * 1e6})
    return rows


# --- the flood --------------------------------------------------------------------------


def timed_queries(port: int, seconds: float, rate: float) -> list[float]:
    """Latencies (ms) of A queries sent one at a time at `rate`/s for `seconds`."""
    out: list[float] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.connect(("127.0.0.1", port))
        gap = 1.0 / rate
        next_at = time.monotonic()
        end = next_at + seconds
        qid = 0
        while next_at < end:
            qid = (qid + 1) & 0xFFFF
            query = header(qid) + question()
            start = time.perf_counter()
            s.send(query)
            try:
                while True:
                    reply = s.recv(4096)
                    if reply[:2] == query[:2]:
                        break
                out.append((time.perf_counter() - start) * 1000)
            except TimeoutError:
                out.append(1000.0)
            next_at += gap
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    return out


def flood(send: Callable[[], None], rate: float, stop: Any) -> int:
    sent = 0
    gap = 1.0 / rate
    next_at = time.monotonic()
    while not stop.is_set():
        send()
        sent += 1
        next_at += gap
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return sent


def udp_sender(port: int, packet: bytes) -> Callable[[], None]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)

    def send() -> None:
        with contextlib.suppress(BlockingIOError):
            s.send(packet)
        try:  # read and discard the refusals, so our buffer never fills
            while True:
                s.recv(65535)
        except BlockingIOError:
            pass

    return send


def tcp_sender(port: int, packet: bytes) -> Callable[[], None]:
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(True)
    framed = struct.pack("!H", len(packet)) + packet
    drain = threading.Thread(target=_drain, args=(s,), daemon=True)
    drain.start()

    def send() -> None:
        s.sendall(framed)

    return send


def _drain(s: socket.socket) -> None:
    try:
        while s.recv(65535):
            pass
    except OSError:
        pass


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def gate_count(http_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("globaldns_dns_gate_refused_total "):
                return float(line.split()[1])
    return 0.0


def one_load(pid: int, port: int, http_port: int, label: str,
             flood_with: tuple[str, bytes] | None, seconds: float,
             round_no: int) -> dict[str, object]:
    """Normal queries timed for `seconds` while a child process sends the flood packet at
    1,000/s (a process, not a thread: the timing never waits for the GIL)."""
    stop = multiprocessing.Event()
    sent = multiprocessing.Value("q", 0)
    child = None
    if flood_with is not None:
        child = multiprocessing.Process(target=_flooder, args=(port, *flood_with, stop, sent),
                                        daemon=True)
    gate_before = gate_count(http_port)
    cpu_before = sum(cpu_seconds([pid]).values())
    started = time.monotonic()
    if child is not None:
        child.start()
    latencies = timed_queries(port, seconds, 200)
    stop.set()
    if child is not None:
        child.join(5)
        if child.is_alive():
            child.kill()
            child.join(5)
    wall = time.monotonic() - started
    cpu = sum(cpu_seconds([pid]).values()) - cpu_before
    return {"round": round_no, "load": label, "queries": len(latencies),
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies), "lost": sum(1 for x in latencies if x >= 1000.0),
            "flood_sent": sent.value,
            "gate_refused": gate_count(http_port) - gate_before, "server_cpu": cpu / wall}


def _flooder(port: int, transport: str, packet: bytes, stop: Any, sent: Any) -> None:
    send = udp_sender(port, packet) if transport == "udp" else tcp_sender(port, packet)
    sent.value = flood(send, 1000, stop)


def measure_flood(seconds: float, rounds: int, udp_packet: bytes,
                  tcp_packet: bytes) -> list[dict[str, object]]:
    sup = Supervisor()
    work = Path(tempfile.mkdtemp(prefix="hostile-"))
    port, http_port = free_port(), free_port()
    (work / "config.yaml").write_text(CONFIG % (port, http_port))
    cmd = [sys.executable, "-m", "globaldns", "serve", "--config", str(work / "config.yaml"),
           "--log-level", "warning"]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
        os.sched_setaffinity(0, {1})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    rows: list[dict[str, object]] = []
    try:
        proc = sup.start("globaldns", cmd, log=work / "server.log", env=env, cwd=ROOT)
        wait_ready(proc, port, NAME)
        loads: tuple[tuple[str, tuple[str, bytes] | None], ...] = (
            ("no flood", None),
            ("800-pointer UDP packet at 1,000/s", ("udp", udp_packet)),
            ("65,535-byte TCP, 2 longest names (NOTAUTH) at 1,000/s", ("tcp", tcp_packet)))
        for round_no in range(1, rounds + 1):
            for label, flood_with in loads:
                rows.append(one_load(proc.pid, port, http_port, label, flood_with, seconds,
                                     round_no))
    finally:
        sup.stop_all()
    return rows


def report(reader: list[dict[str, object]], flood_rows: list[dict[str, object]],
           command: str, *, before: float, load: tuple[float, float, float]) -> str:
    lines = [
        "# Hostile packets: what they cost",
        "",
        f"Command: `{command}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; load average at the start "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (other processes share the cores).",
        "",
        f"For reference, the query path before this change: dnslib took "
        f"{before * 1000:,.0f} ms of CPU to parse the 800-pointer packet once.",
        "",
        "## CPU per packet, before the handler chain (goal < 1 ms)",
        "",
        "`parse`, and `error_reply` for a refused packet, in one process (process time;",
        "median and worst of the batches).",
        "",
        "| packet | bytes | outcome | median µs | worst µs |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for r in reader:
        lines.append(f"| {r['packet']} | {r['bytes']:,} | {r['outcome']} | "
                     f"{r['median_us']:.1f} | {r['worst_us']:.1f} |")
    lines += [
        "",
        "## Normal queries while the worst packets flood (goal p99 < 5 ms)",
        "",
        "A queries at 200/s, one at a time, against `globaldns serve` (server on CPU 0,",
        "harness on CPU 1), loopback only.",
        "",
        "| round | load | queries | p50 ms | p99 ms | max ms | lost | flood sent | "
        "gate refused | server CPU |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in flood_rows:
        lines.append(f"| {r['round']} | {r['load']} | {r['queries']} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['max_ms']:.2f} | {r['lost']} | "
                     f"{r['flood_sent']:,} | {r['gate_refused']:,.0f} | "
                     f"{r['server_cpu']:.2f} |")
    lines += ["", "Median over the rounds (the loads interleave, so each round's noise from",
              "other processes is shared by its three rows):", "",
              "| load | p99 ms (median of rounds) | p99 ms per round |", "| --- | ---: | --- |"]
    for label in dict.fromkeys(str(r["load"]) for r in flood_rows):
        p99s = [float(r["p99_ms"]) for r in flood_rows if r["load"] == label]  # type: ignore[arg-type]
        lines.append(f"| {label} | {statistics.median(p99s):.2f} | "
                     + " / ".join(f"{x:.2f}" for x in p99s) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--per-batch", type=int, default=200)
    parser.add_argument("--flood-seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()
    reader = measure_reader(args.repeats, args.per_batch)
    before = dnslib_cost(chained_pointers(800))
    all_packets = packets()
    flood_rows = measure_flood(args.flood_seconds, args.rounds,
                               all_packets["800 chained pointers, 16 KB, UDP (gate: FORMERR)"][0],
                               longest_names())
    command = "python3 bench/hostile_packets.py " + " ".join(sys.argv[1:])
    text = report(reader, flood_rows, command.strip(), before=before, load=load)
    print(text)
    print(json.dumps({"reader": reader, "flood": flood_rows}, indent=1), file=sys.stderr)
    if not args.no_write:
        (ROOT / "bench" / "RESULTS-hostile.md").write_text(text)


if __name__ == "__main__":
    main()
