"""One dnsperf run: the command, its parsed statistics, and the CPU both sides used."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from procs import BenchError, cpu_seconds, process_tree

_NUM = r"([0-9.]+)"
_PATTERNS = {
    "sent": re.compile(r"Queries sent:\s+(\d+)"),
    "completed": re.compile(r"Queries completed:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
    "run_time": re.compile(r"Run time \(s\):\s+" + _NUM),
    "qps": re.compile(r"Queries per second:\s+" + _NUM),
    "avg": re.compile(r"Average Latency \(s\):\s+" + _NUM),
    "min": re.compile(r"Average Latency \(s\):.*\(min " + _NUM),
    "max": re.compile(r"Average Latency \(s\):.*max " + _NUM + r"\)"),
    "stddev": re.compile(r"Latency StdDev \(s\):\s+" + _NUM),
}
_RCODES = re.compile(r"Response codes:\s+(.*)")
_VERBOSE = re.compile(rb"^> (\S+) \S+ \S+ ([0-9.]+)$")


@dataclass
class PerfResult:
    server: str
    scenario: str
    cmd: str
    raw: Path
    qps: float = 0.0
    sent: int = 0
    completed: int = 0
    lost: int = 0
    run_time: float = 0.0
    avg: float = 0.0
    min: float = 0.0
    max: float = 0.0
    stddev: float = 0.0
    rcodes: dict[str, int] = field(default_factory=dict)
    # From -v per-query lines (latency scenario only).
    percentiles: dict[str, float] = field(default_factory=dict)
    # CPU seconds per wall second: the server's process tree (per process) and dnsperf.
    server_cpu: dict[int, float] = field(default_factory=dict)
    client_cpu: float = 0.0
    # Busy share of each CPU (from /proc/stat, softirq included: on loopback much of the
    # packet work is softirq time that no process is charged for).
    core_busy: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def server_cores(self) -> float:
        return sum(self.server_cpu.values())

    @property
    def other_load(self) -> float:
        """CPU busy that neither the server nor dnsperf used: other work on the machine
        (near 0 on a quiet machine; softirq of our own packets is mostly charged to us)."""
        return max(0.0, sum(self.core_busy.values()) - self.server_cores - self.client_cpu)


def dnsperf_cmd(
    port: int, queries: Path, duration: float, *, cpu: str | None, edns: bool = False,
    max_qps: int | None = None, outstanding: int = 100, clients: int = 1,
    verbose: bool = False, max_runs: int | None = None,
) -> list[str]:
    cmd = [] if cpu is None else ["taskset", "-c", cpu]
    cmd += ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries),
            "-q", str(outstanding), "-t", "2"]
    if max_runs is not None:
        cmd += ["-n", str(max_runs)]
    else:
        cmd += ["-l", f"{duration:g}"]
    if clients > 1:
        cmd += ["-c", str(clients)]
    if edns:
        cmd.append("-e")
    if max_qps is not None:
        cmd += ["-Q", str(max_qps)]
    if verbose:
        cmd.append("-v")
    return cmd


def run(
    cmd: list[str], *, server: str, scenario: str, raw: Path, server_pid: int | None,
    timeout: float, expected_rcodes: dict[str, float] | None = None,
) -> PerfResult:
    tree = process_tree(server_pid) if server_pid else []
    before = cpu_seconds(tree)
    cores_before = _core_times()
    t0 = time.monotonic()
    with raw.open("wb") as fh:
        fh.write(f"# {shlex.join(cmd)}\n".encode())
        fh.flush()
        popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        watchdog = threading.Timer(timeout, popen.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(popen.pid, 0)
            popen.returncode = os.waitstatus_to_exitcode(status)
        except BaseException:
            popen.kill()
            popen.wait()
            raise
        finally:
            watchdog.cancel()
    wall = time.monotonic() - t0
    after = cpu_seconds(tree)
    cores_after = _core_times()
    result = PerfResult(server, scenario, shlex.join(cmd), raw)
    for cpu, (busy1, total1) in cores_after.items():
        busy0, total0 = cores_before.get(cpu, (0, 0))
        if total1 > total0:
            result.core_busy[cpu] = (busy1 - busy0) / (total1 - total0)
    result.server_cpu = {pid: (after[pid] - before.get(pid, 0.0)) / wall for pid in after}
    result.client_cpu = (usage.ru_utime + usage.ru_stime) / wall
    if popen.returncode != 0:
        raise BenchError(f"dnsperf exited with {popen.returncode}: see {raw}")
    _parse(result, raw.read_bytes())
    _judge(result, expected_rcodes)
    return result


def machine_busy(interval: float) -> float:
    """Cores' worth of CPU busy on the whole machine over the next `interval` seconds."""
    before = _core_times()
    time.sleep(interval)
    after = _core_times()
    return sum(
        (after[c][0] - before[c][0]) / max(1, after[c][1] - before[c][1]) for c in after
    )


def _core_times() -> dict[str, tuple[int, int]]:
    """Per CPU: (busy jiffies, total jiffies); idle and iowait count as not busy."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *values = line.split()
                ticks = [int(v) for v in values[:8]]
                out[name[3:]] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return out


def _parse(result: PerfResult, data: bytes) -> None:
    text = data[-4096:].decode(errors="replace")
    for key, pattern in _PATTERNS.items():
        m = pattern.search(text)
        if m is None:
            raise BenchError(f"no '{key}' in dnsperf output {result.raw}")
        value = m.group(1)
        setattr(result, key, int(value) if key in ("sent", "completed", "lost") else float(value))
    if m := _RCODES.search(text):
        for part in m.group(1).split(", "):
            rcode, count = part.split()[:2]
            result.rcodes[rcode] = int(count)
    if b"\n> " in data[:65536]:
        latencies = sorted(
            float(m.group(2))
            for line in data.splitlines()
            if (m := _VERBOSE.match(line))
        )
        if latencies:
            result.percentiles = {
                f"p{p:g}": latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))]
                for p in (50, 90, 99, 99.9)
            }
            result.percentiles["n"] = len(latencies)


def _judge(result: PerfResult, expected: dict[str, float] | None) -> None:
    if result.completed == 0:
        result.problems.append("no query completed")
        return
    if result.lost > 0.001 * result.sent:
        result.problems.append(
            f"{result.lost} of {result.sent} queries lost ({100 * result.lost / result.sent:.2f} %)"
        )
    if expected is None:
        return
    for rcode, count in result.rcodes.items():
        share = count / result.completed
        want = expected.get(rcode, 0.0)
        if abs(share - want) > 0.01:
            result.problems.append(
                f"{rcode} was {100 * share:.2f} % of answers, expected {100 * want:.2f} %"
            )
