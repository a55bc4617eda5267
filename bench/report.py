"""bench/RESULTS.md: the machine, the method, the figures as ratios, the exact commands."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from perf import PerfResult

PEERS = ("dnsmasq", "unbound")


@dataclass
class Run:
    started: str
    argv: str
    duration: float
    repo: Path
    out: Path
    netns: bool
    pinning: str
    rounds: int = 1
    latency_qps: int = 20000
    cpu_qps: int = 40000
    load_start: str = field(default_factory=lambda: load_average())
    max_other_load: float = 0.15
    discarded: int = 0  # timed runs repeated because other work disturbed them
    results: list[PerfResult] = field(default_factory=list)
    # scenario -> server -> why it was not timed (failed check, not available, ...)
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    commands: list[tuple[str, str]] = field(default_factory=list)  # (what, command line)
    configs: list[Path] = field(default_factory=list)
    upstream_queries: dict[str, int] = field(default_factory=dict)
    workers: list[dict] = field(default_factory=list)

    def of(self, scenario: str) -> list[PerfResult]:
        return [r for r in self.results if r.scenario == scenario]


def _sh(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (out.stdout or out.stderr).strip()


def load_average() -> str:
    """The machine's load average (1, 5, 15 minutes): other engineers' work shows here."""
    try:
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def fastlane(repo: Path) -> str:
    """Whether globaldns runs with the compiled UDP fast lane (issue 16)."""
    if os.environ.get("GLOBALDNS_FASTLANE", "1") == "0":
        return "off (GLOBALDNS_FASTLANE=0)"
    built = list((repo / "globaldns" / "dns").glob("_fastlane*.so"))
    return "on (recvmmsg/sendmmsg, dns/_fastlane.c built)" if built else "not built"


def machine(repo: Path) -> list[tuple[str, str]]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = _sh(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
    if not commit or "fatal" in commit or "ambiguous" in commit:
        commit = "(no commit yet)"
    dirty = _sh(["git", "-C", str(repo), "status", "--porcelain", "--", "globaldns"])
    if dirty and dirty != "?":
        commit += " + uncommitted changes in globaldns/"
    try:
        import uvloop  # noqa: F401
        uv = "installed"
    except ImportError:
        uv = "not installed"
    return [
        ("nproc", str(os.cpu_count())),
        ("CPU", cpu),
        ("kernel", platform.release()),
        ("python", platform.python_version() + f" (uvloop {uv})"),
        ("dnsperf", _sh(["dnsperf", "-h"]).splitlines()[-1]),
        ("dnsmasq", _sh(["dnsmasq", "--version"]).splitlines()[0]),
        ("unbound", _sh(["unbound", "-V"]).splitlines()[0]),
        ("globaldns", commit),
        ("UDP fast lane", fastlane(repo)),
    ]


def _q(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def _ratio(a: PerfResult | None, b: PerfResult | None) -> str:
    if a is None or b is None or not b.qps:
        return "-"
    return f"{a.qps / b.qps:.2f}x"


def _us(r: PerfResult | None) -> float:
    """Server CPU per answered query, in microseconds."""
    return r.server_cores * 1e6 / r.qps if r is not None and r.qps else 0.0


def _cpu_ratio(a: PerfResult | None, b: PerfResult | None) -> str:
    """CPU per query of a over b's (below 1.0: a is cheaper)."""
    return f"{_us(a) / _us(b):.2f}x" if _us(a) and _us(b) else "-"


def _busy(r: PerfResult) -> str:
    return ", ".join(f"cpu{c} {100 * b:.0f} %" for c, b in sorted(r.core_busy.items()))


def _verdict(rounds: list[PerfResult]) -> str:
    problems = [p for r in rounds for p in r.problems]
    return "ok" if not problems else "WRONG: " + "; ".join(problems)


def _grouped(run: Run, scenario: str, key=lambda r: r.qps) -> dict[str, list[PerfResult]]:
    """server -> its rounds, the median one (by `key`) first."""
    groups: dict[str, list[PerfResult]] = {}
    for r in run.of(scenario):
        groups.setdefault(r.server, []).append(r)
    for server, rounds in groups.items():
        # Rounds disturbed by other work on the machine count only if all were.
        quiet = [r for r in rounds if r.other_load <= run.max_other_load] or rounds
        ordered = sorted(quiet, key=key)
        median = ordered[(len(ordered) - 1) // 2]
        groups[server] = [median] + [r for r in rounds if r is not median]
    return groups


def _medians(run: Run, scenario: str) -> dict[str, PerfResult]:
    return {server: rounds[0] for server, rounds in _grouped(run, scenario).items()}


def _spread(rounds: list[PerfResult]) -> str:
    if len(rounds) < 2:
        return ""
    qps = [r.qps for r in rounds]
    return f" ({_q(min(qps))}-{_q(max(qps))})"


def _qps_table(run: Run, scenario: str) -> list[str]:
    groups = _grouped(run, scenario)
    rows = {server: rounds[0] for server, rounds in groups.items()}
    lines = [
        "| server | queries/s | globaldns / this | server CPU (cores) | CPU per query (µs) "
        "| dnsperf CPU (cores) | CPU busy (per core) | other load (cores) | avg latency (ms) "
        "| max latency (ms) | lost | answers |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows.values():
        lines.append(
            f"| {r.server} | {_q(r.qps)}{_spread(groups[r.server])} | "
            f"{_ratio(rows.get('globaldns'), r) if r.server != 'globaldns' else ''} | "
            f"{r.server_cores:.2f} | {_us(r):.2f} | {r.client_cpu:.2f} | {_busy(r)} | "
            f"{r.other_load:.2f} | "
            f"{_ms(r.avg)} | "
            f"{_ms(r.max)} | "
            f"{sum(x.lost for x in groups[r.server])} | "
            f"{_verdict(groups[r.server])} |"
        )
    for server, why in run.skipped.get(scenario, {}).items():
        lines.append(f"| {server} | not timed: {why} | | | | | | | | | | |")
    return lines


def _cpu_table(run: Run, scenario: str) -> list[str]:
    """The fixed-rate runs: server CPU per answered query, the median round by that."""
    groups = _grouped(run, scenario, key=_us)
    rows = {server: rounds[0] for server, rounds in groups.items()}
    lines = [
        "| server | offered q/s | answered q/s | server CPU (cores) | CPU per query (µs) "
        "| globaldns / this (CPU per query) | other load (cores) | lost | answers |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows.values():
        spread = [_us(x) for x in groups[r.server]]
        lines.append(
            f"| {r.server} | {run.cpu_qps} | {_q(r.qps)} | {r.server_cores:.3f} | "
            f"{_us(r):.2f}" + (f" ({min(spread):.2f}-{max(spread):.2f})" if len(spread) > 1
                               else "")
            + f" | {_cpu_ratio(rows.get('globaldns'), r) if r.server != 'globaldns' else ''} | "
            f"{r.other_load:.2f} | {sum(x.lost for x in groups[r.server])} | "
            f"{_verdict(groups[r.server])} |")
    for server, why in run.skipped.get(scenario, {}).items():
        lines.append(f"| {server} | not timed: {why} | | | | | | | |")
    return lines


def _ratio_line(run: Run, scenario: str) -> str:
    rows = _medians(run, scenario)
    g = rows.get("globaldns")
    if g is None:
        return "globaldns not timed in this scenario."
    parts = [f"globaldns / {p} = **{_ratio(g, rows.get(p))}**" for p in PEERS if p in rows]
    line = "Ratios: " + ", ".join(parts) + "."
    bound = [p for p in PEERS if p in rows and rows[p].client_cpu >= 0.95]
    if bound:
        line += (f" dnsperf filled its core in the {' and '.join(bound)} run(s): those "
                 "servers could answer more than shown, so the ratios against them are "
                 "upper bounds.")
    return line


def _noisy(run: Run, *rows: PerfResult) -> str:
    load = max(r.other_load for r in rows)
    if load <= run.max_other_load:
        return ""
    return f" **- NOISY: up to {load:.2f} cores of other work during these runs**"


def _goals(run: Run, scenarios: list[str]) -> list[str]:
    out = []
    for scenario, goal in (("global", "1 (no EDNS)"), ("global-edns", "1 (EDNS)"),
                           ("forward", "2")):
        rows = _medians(run, scenario)
        g, d = rows.get("globaldns"), rows.get("dnsmasq")
        if scenario in scenarios and g and d:
            ratio = g.qps / d.qps
            out.append(f"- goal {goal}: globaldns / dnsmasq = {ratio:.2f}x "
                       f"({'met' if ratio >= 1.0 else 'not met'}; target >= 1.0x)"
                       + _noisy(run, g, d))
    for scenario, what in (("cpu", f"at {run.cpu_qps} q/s, no EDNS"),
                           ("cpu-edns", f"at {run.cpu_qps} q/s, EDNS"),
                           ("global", "at saturation, no EDNS"),
                           ("global-edns", "at saturation, EDNS")):
        rows = {s: rounds[0] for s, rounds in
                _grouped(run, scenario, key=_us if scenario.startswith("cpu") else
                         (lambda r: r.qps)).items()}
        g, u = rows.get("globaldns"), rows.get("unbound")
        if scenario in scenarios and _us(g) and _us(u):
            ratio = _us(g) / _us(u)
            out.append(f"- CPU per query {what} (issue 16): globaldns {_us(g):.2f} µs, unbound "
                       f"{_us(u):.2f} µs = {ratio:.2f}x ({'met' if ratio <= 1.0 else 'not met'}; "
                       "target <= 1.0x)" + _noisy(run, g, u))
    lat = _grouped(run, "latency", key=lambda r: r.percentiles.get("p99", 0.0))
    if "globaldns" in lat and lat["globaldns"][0].percentiles:
        p99 = lat["globaldns"][0].percentiles["p99"] * 1000
        out.append(f"- goal 3: globaldns p99 at {run.latency_qps} q/s = {p99:.3f} ms "
                   f"({'met' if p99 < 1 else 'not met'}; target < 1 ms)"
                   + _noisy(run, lat["globaldns"][0]))
    if run.workers and len(run.workers) == 2:
        out.append(f"- goal 4: 2 workers / 1 worker (projected) = {run.workers[1]['projected']} "
                   "(target >= 1.8x)")
    return out


def _latency_table(run: Run) -> list[str]:
    lines = [
        "| server | offered q/s | achieved q/s | avg (ms) | p50 (ms) | p99 (ms) "
        "| p99.9 (ms) | max (ms) | lost | answers |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    groups = _grouped(run, "latency", key=lambda r: r.percentiles.get("p99", 0.0))
    for rounds in groups.values():
        r = rounds[0]
        p = r.percentiles
        offered = r.cmd.split(" -Q ")[1].split()[0] if " -Q " in r.cmd else "?"
        lines.append(
            f"| {r.server} | {offered} | {_q(r.qps)} | {_ms(r.avg)} | "
            f"{_ms(p.get('p50', 0))} | {_ms(p.get('p99', 0))} | {_ms(p.get('p99.9', 0))} | "
            f"{_ms(r.max)} | {sum(x.lost for x in rounds)} | {_verdict(rounds)} |"
        )
    for server, why in run.skipped.get("latency", {}).items():
        lines.append(f"| {server} | not timed: {why} | | | | | | | | |")
    return lines


def _display(run: Run, cmd: str) -> str:
    """A command as one would type it from the repository root."""
    return cmd.replace(str(run.repo) + "/", "").replace(sys.executable, "python3")


def write(run: Run, path: Path, scenarios: list[str]) -> None:
    rel = lambda p: os.path.relpath(p, run.repo)  # noqa: E731
    md = [
        "# globaldns benchmark results",
        "",
        f"Written by `{run.argv}` (bench/run.py; see bench/README.md). "
        "Ratios are what we report: absolute numbers move with the machine and its noise; "
        "the peers run in the same run, on the same data, pinned the same way.",
        "",
        f"- date: {run.started}",
        f"- load average (1 / 5 / 15 min) at the start: {run.load_start}; at the end: "
        f"{load_average()}",
    ]
    md += [f"- {k}: {v}" for k, v in machine(run.repo)]
    md += [
        f"- duration per timed run: {run.duration:g} s; network namespace of its own: "
        f"{'yes (unshare --net, loopback only)' if run.netns else 'no'}",
        f"- pinning: {run.pinning}",
        f"- rounds: {run.rounds} timed run(s) per server and scenario, servers interleaved"
        + ("; each figure is the median round (of the rounds without other load on the "
           "machine, when there are any), (min-max of all rounds) beside it"
           if run.rounds > 1 else ""),
        f"- raw outputs and configs: `{rel(run.out)}/` (not committed)",
        "",
        "Data: 1,000 names x 3 A records (2 endpoints in the resolver's own zone, 1 in another "
        "region), no AAAA; the query file is 20,000 lines, exactly 90 % A hits, 5 % AAAA "
        "(NODATA), 5 % NXDOMAIN, shuffled; dnsperf loops over it. Every server is checked "
        "with `dig` (A sets, NODATA, NXDOMAIN, EDNS and no EDNS, TCP, mixed case) before it "
        "is timed, and every timed run's rcode mix is checked against the query file's.",
        "",
    ]
    titles = {
        "global": "`*.global` answers, no EDNS (goal 1)",
        "global-edns": "`*.global` answers, EDNS (`dnsperf -e`) (goal 1)",
        "forward": "Forwarded queries from a warm cache (goal 2; issue 5)",
    }
    goals = _goals(run, scenarios)
    if goals:
        md += ["## Goals of issue 7 in this run", "", *goals, "",
               "Where the time goes and what would close a gap (profile of the server under "
               "dnsperf): [docs/performance.md](../docs/performance.md). Kubernetes scale "
               "(goal 5, issue 3): [RESULTS-k8s.md](RESULTS-k8s.md).", ""]
    for scenario in ("cpu", "cpu-edns"):
        if scenario not in scenarios:
            continue
        md += [f"## Server CPU per answered query at {run.cpu_qps} q/s"
               + (", EDNS (`dnsperf -e`)" if scenario == "cpu-edns" else ", no EDNS")
               + " (issue 16)", ""]
        md += _cpu_table(run, scenario)
        md += ["", "Method: `dnsperf -Q RATE` offers a fixed rate below every server's "
               "saturation; the server's CPU time (its process tree, from /proc/PID/stat "
               "before and after) divided by the queries answered. Unlike queries/s at "
               "saturation, this does not depend on how fast dnsperf is. Each figure is the "
               "median round, (min-max of the rounds) beside it.", ""]
    for scenario in ("global", "global-edns", "forward"):
        if scenario not in scenarios:
            continue
        md += [f"## {titles[scenario]}", ""]
        md += _qps_table(run, scenario)
        md += ["", _ratio_line(run, scenario), ""]
        if scenario == "forward":
            md += [
                "Upstream: unbound with local-data on loopback (TTL 3600, so nothing expires "
                "during the run); same 1,000 names under `bench.example`. Each forwarder was "
                "warmed with every distinct query of the file once (`dnsperf -n 1`) before "
                "it was timed. Queries that reached the upstream during the timed run "
                "(unbound-control `total.num.queries` before/after; 0 = all from cache): "
                + (", ".join(f"{k} {v}" for k, v in run.upstream_queries.items()) or "n/a")
                + ".",
                "",
            ]
    if "latency" in scenarios:
        md += ["## Latency at a fixed rate (goal 3)", ""]
        md += _latency_table(run)
        md += [
            "",
            "Method: `dnsperf -Q RATE -v` sends at a fixed rate with up to 100 queries "
            "outstanding and prints one line per answered query with its latency as dnsperf "
            "measured it (send to receive, in dnsperf's own loop on its own core); p50/p99/"
            "p99.9 are computed here from all those lines (nearest rank). Average and max "
            "are dnsperf's own summary. Lost queries (no answer within 2 s) are not in the "
            "percentiles but are counted in 'lost'.",
            "",
        ]
    if "workers" in scenarios:
        md += ["## `--workers` (goal 4)", ""]
        if run.workers:
            md += [
                "| workers | queries/s | server CPU per process (cores) | dnsperf CPU "
                "| CPU busy | q/s per core of the busiest worker | projected vs 1 worker |",
                "| ---: | ---: | --- | ---: | --- | ---: | ---: |",
            ]
            for w in run.workers:
                md.append(
                    f"| {w['workers']} | {_q(w['qps'])} | {w['per_process']} | "
                    f"{w['client_cpu']:.2f} | {w['busy']} | {_q(w['capacity'])} | "
                    f"{w['projected']} |"
                )
            md += [
                "",
                "Method: the machine has 2 cores, so 2 workers and dnsperf cannot each have a "
                "core. The 1-worker run pins the server to one core and dnsperf to the other; "
                "the 2-worker run lets the server use both cores and dnsperf float. dnsperf "
                "uses 8 client sockets (`-c 8`) so that SO_REUSEPORT spreads them over the "
                "workers. The CPU time of every server process is read from /proc before and "
                "after. Capacity = queries/s divided by the CPU share of the busiest worker "
                "process: the rate at which that worker would saturate its own core, assuming "
                "cost per query stays the same; this includes imbalance between workers. The "
                "projection is capacity(2) / capacity(1); the raw queries/s of the shared run "
                "are shown too, and are bounded by dnsperf's share of the 2 cores.",
                "",
            ]
        for server, why in run.skipped.get("workers", {}).items():
            md += [f"- {server} not timed: {why}", ""]
    noisy = [r for r in run.results if r.other_load > run.max_other_load]
    if noisy:
        run.notes.insert(0, (
            f"**{len(noisy)} of {len(run.results)} timed runs had more than "
            f"{run.max_other_load:g} cores of other work on the machine** (retries exhausted; "
            f"{run.discarded} disturbed runs were discarded and repeated): "
            + ", ".join(f"{r.scenario}/{r.server} {r.other_load:.2f}" for r in noisy)
            + ". Figures from such runs are not trustworthy; rerun on a quiet machine."))
    elif run.discarded:
        run.notes.insert(0, f"{run.discarded} timed runs disturbed by other work on the "
                            "machine were discarded and repeated")
    if run.failures or run.notes:
        md += ["## Failures and notes", ""]
        md += [f"- **FAILED**: {f.splitlines()[0]}" for f in run.failures]
        md += [f"- {n}" for n in run.notes]
        md += [""]
    md += ["## Exact commands", "", "```"]
    md += [f"# {what}\n{_display(run, cmd)}" for what, cmd in run.commands]
    md += ["```", "", "Configs: " + ", ".join(f"`{rel(p)}`" for p in run.configs), ""]
    path.write_text("\n".join(md))
