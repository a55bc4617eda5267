#!/usr/bin/env python3
"""globaldns against dnsmasq and unbound, same data, same run: `python3 bench/run.py`.

Scenarios (see bench/README.md): global, global-edns, latency (one set of authoritative
servers), forward (three caching forwarders in front of one loopback upstream), workers
(globaldns --workers 1 vs 2). Writes bench/RESULTS.md and raw outputs under bench/out/.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import checks
import gen
import perf
import report
from procs import BenchError, Proc, Supervisor, free_port, use_project_venv, wait_ready

use_project_venv()

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SCENARIOS = ("global", "global-edns", "cpu", "cpu-edns", "latency", "forward", "workers")
AUTHORITATIVE = ("global", "global-edns", "cpu", "cpu-edns", "latency")
NETNS_ENV = "GLOBALDNS_BENCH_NETNS"
INSTALL = "apt-get install -y dnsperf dnsmasq-base unbound bind9-dnsutils util-linux iproute2"
NO_FASTLANE = "globaldns-nofastlane"  # --fastlane-off: globaldns with GLOBALDNS_FASTLANE=0
REQUIRED = ("dnsperf", "dnsmasq", "unbound", "taskset", "dig")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Server:
    name: str
    cmd: list[str]
    port: int
    negative_soa: bool  # does it put the SOA in NXDOMAIN/NODATA answers? (dnsmasq: no)
    authoritative: bool  # does it set AA on its answers?
    env: dict[str, str] | None = None
    proc: Proc | None = None
    tag: str = ""  # names its log and raw files: global, forward, workers2, ...
    ordered: bool = False  # check locality order and rotation (globaldns)

    @property
    def label(self) -> str:
        return f"{self.name}.{self.tag}" if self.tag else self.name


class Bench:
    def __init__(self, args: argparse.Namespace, run: report.Run, out: Path) -> None:
        self.args = args
        self.run = run
        self.out = out
        self.sup = Supervisor()
        self.server_cpu = args.server_cpu
        self.client_cpu = args.client_cpu
        self.retries_left = args.retries
        self.wait_left = args.max_wait

    # --- helpers -------------------------------------------------------------------------

    def pin(self, cpus: str | None) -> list[str]:
        return [] if cpus is None else ["taskset", "-c", cpus]

    def write(self, name: str, text: str) -> Path:
        path = self.out / name
        path.write_text(text)
        self.run.configs.append(path)
        return path

    def start(self, server: Server) -> Server:
        log(f"starting {server.name} on 127.0.0.1:{server.port}")
        prefix = "PYTHONPATH=. " if server.env is not None else ""
        self.run.commands.append((f"{server.label} (server)", prefix + shlex.join(server.cmd)))
        server.proc = self.sup.start(
            server.name, server.cmd, log=self.out / f"{server.label}.log", env=server.env,
            cwd=REPO,
        )
        return server

    def ready(self, server: Server, qname: str) -> None:
        assert server.proc is not None
        took = wait_ready(server.proc, server.port, qname)
        log(f"{server.name} answers (after {took:.1f}s)")

    def check(self, server: Server, ds: gen.Dataset, scenario_group: list[str]) -> bool:
        problems = checks.check_server(
            server.name, server.port, ds, negative_soa=server.negative_soa,
            authoritative=server.authoritative,
        )
        if server.ordered and not problems:
            problems = checks.check_order(server.name, server.port, ds)
        if problems:
            msg = (f"{server.name} answered wrong ({len(problems)} of "
                   f"{len(checks.cases(ds))} dig checks)")
            log("FAIL: " + msg + "\n" + "\n".join(problems[:5]))
            (self.out / f"{server.label}.check.txt").write_text("\n".join(problems) + "\n")
            self.run.failures.append(
                msg + f"; details in {os.path.relpath(self.out, REPO)}/{server.label}.check.txt"
            )
            for scenario in scenario_group:
                self.run.skipped.setdefault(scenario, {})[server.name] = "wrong answers"
            return False
        log(f"{server.name}: {len(checks.cases(ds))} dig checks passed"
            + (" (and locality order, rotation)" if server.ordered else ""))
        return True

    def dnsperf(
        self, server: Server, scenario: str, queries: Path, *, expected: dict[str, float],
        **kw,
    ) -> perf.PerfResult:
        cpu = kw.pop("cpu", self.client_cpu)
        rnd = kw.pop("round", 0)
        cmd = perf.dnsperf_cmd(server.port, queries, self.args.duration, cpu=cpu, **kw)
        raw = self.out / f"dnsperf.{scenario}.{server.name}.{rnd + 1}.txt"
        log(f"{scenario}: timing {server.name} for {self.args.duration:g}s: {shlex.join(cmd)}")
        self.run.commands.append((f"{scenario}: {server.name}", shlex.join(cmd)))
        assert server.proc is not None
        for attempt in range(3):
            self.wait_quiet()
            result = perf.run(
                cmd, server=server.name, scenario=scenario, raw=raw,
                server_pid=server.proc.pid, timeout=self.args.duration + 60,
                expected_rcodes=expected,
            )
            if result.other_load <= self.args.max_other_load or self.retries_left <= 0:
                break
            self.retries_left -= 1
            noisy = raw.with_suffix(f".noisy{attempt + 1}.txt")
            raw.rename(noisy)
            log(f"  {server.name}: {result.qps:,.0f} q/s but {result.other_load:.2f} cores "
                f"of other load on the machine: discarded ({noisy.name}), running again")
            self.run.discarded += 1
        pct = result.percentiles
        log(
            f"  {server.name}: {result.qps:,.0f} q/s, avg {result.avg * 1000:.3f} ms, "
            f"max {result.max * 1000:.3f} ms"
            + (f", p99 {pct['p99'] * 1000:.3f} ms" if pct else "")
            + f", lost {result.lost}, server CPU {result.server_cores:.2f}, "
            f"dnsperf CPU {result.client_cpu:.2f}, other load {result.other_load:.2f}"
        )
        for problem in result.problems:
            log(f"  WRONG: {server.name} in {scenario}: {problem}")
            self.run.failures.append(f"{server.name} in {scenario}: {problem}")
        self.run.results.append(result)
        return result

    def wait_quiet(self) -> None:
        """Before a timed run, wait (within the run's budget) for other work to stop."""
        busy = perf.machine_busy(0.5)
        waited = 0.5
        while busy > self.args.max_other_load and self.wait_left > 0:
            if waited == 0.5:
                log(f"  the machine is busy ({busy:.2f} cores of other work): waiting for "
                    f"quiet (at most {self.wait_left:.0f} s more in this run)")
            busy = perf.machine_busy(1.0)
            waited += 1.0
            self.wait_left -= 1.0
        if waited > 0.5:
            log(f"  waited {waited:.0f} s; other work now {busy:.2f} cores")

    def stop(self, *servers: Server) -> None:
        for s in servers:
            if s.proc is not None:
                self.sup.stop(s.proc)
                if s.proc.popen.returncode not in (0, -signal.SIGTERM, None):
                    self.run.notes.append(
                        f"{s.name} exited with code {s.proc.popen.returncode} on SIGTERM"
                    )
                s.proc = None

    # --- globaldns -----------------------------------------------------------------------

    def globaldns_base(self) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        base = shlex.split(self.args.globaldns) if self.args.globaldns else [
            sys.executable, "-m", "globaldns"]
        return base, env

    def globaldns_probe(self) -> tuple[str | None, str]:
        """(why it cannot run or None, the text of `serve --help`)."""
        if self.args.peers_only:
            return "--peers-only", ""
        base, env = self.globaldns_base()
        try:
            out = subprocess.run([*base, "serve", "--help"], capture_output=True, text=True,
                                 env=env, cwd=REPO, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`{shlex.join(base)} serve --help` failed: {exc}", ""
        if out.returncode != 0 or "--config" not in out.stdout:
            tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or [""]
            return f"`{shlex.join(base)} serve --help` failed (exit {out.returncode}: " \
                   f"{tail[0][:200]})", ""
        return None, out.stdout

    def globaldns_config_ok(self, config: Path) -> str | None:
        base, env = self.globaldns_base()
        cmd = [*base, "check-config", str(config)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
        if out.returncode != 0:
            return (out.stderr or out.stdout).strip()[:500] or f"exit {out.returncode}"
        return None

    def globaldns(self, config: Path, port: int, *, cpus: str | None, tag: str,
                  workers: int | None = None, forwarder: bool = False) -> Server:
        base, env = self.globaldns_base()
        cmd = self.pin(cpus) + base + [
            "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        cmd += shlex.split(self.args.globaldns_args)
        # As a forwarder it relays the upstream's answers: AA and order are the upstream's.
        return Server("globaldns", cmd, port, negative_soa=True, authoritative=not forwarder,
                      env=env, tag=tag, ordered=not forwarder)

    # --- phases --------------------------------------------------------------------------

    def phase_authoritative(self, scenarios: list[str], gd_why: str | None) -> None:
        """global, global-edns, latency: the same *.global data on all three servers."""
        ds = gen.build_dataset("global", ttl=5, negative_ttl=5)
        lines = gen.query_lines(ds)
        queries = gen.write_lines(self.out / "queries.global.txt", lines)
        expected = gen.expected_rcode_shares(lines, ds)
        ports = {name: free_port() for name in ("globaldns", "dnsmasq", "unbound")}
        servers = []
        if gd_why is None:
            cfg = self.write("globaldns.global.yaml", gen.globaldns_config(ds, ports["globaldns"]))
            why = self.globaldns_config_ok(cfg)
            if why is not None:
                self.fail_server("globaldns", scenarios, f"check-config rejected {cfg.name}: {why}")
            else:
                servers.append(self.globaldns(cfg, ports["globaldns"], cpus=self.server_cpu,
                                              tag="global"))
                if self.args.fastlane_off:
                    # The same server with the batched UDP lane off (GLOBALDNS_FASTLANE=0).
                    port = free_port()
                    # Its own metrics port: both run at once.
                    cfg = self.write("globaldns.global-py.yaml",
                                     gen.globaldns_config(ds, port)
                                     + f"http: {{listen: '127.0.0.1:{free_port()}'}}\n")
                    off = self.globaldns(cfg, port, cpus=self.server_cpu, tag="global")
                    off.name = NO_FASTLANE
                    off.env = {**(off.env or {}), "GLOBALDNS_FASTLANE": "0"}
                    servers.append(off)
        else:
            self.skip_server("globaldns", scenarios, gd_why)
        dm = self.write("dnsmasq.global.conf",
                        gen.dnsmasq_authoritative_config(ds, ports["dnsmasq"]))
        servers.append(Server(
            "dnsmasq",
            [*self.pin(self.server_cpu), "dnsmasq", "--keep-in-foreground", f"--conf-file={dm}"],
            ports["dnsmasq"], negative_soa=False, authoritative=False, tag="global"))
        ub = self.write("unbound.global.conf",
                        gen.unbound_local_config(ds, ports["unbound"], self.out))
        servers.append(Server(
            "unbound", [*self.pin(self.server_cpu), "unbound", "-d", "-c", str(ub)],
            ports["unbound"], negative_soa=True, authoritative=True, tag="global"))
        timed = self.bring_up(servers, ds, scenarios)
        try:
            # Rounds interleave the servers, so that a slow spell of the machine is shared.
            for scenario, kw in (
                ("global", {}), ("global-edns", {"edns": True}),
                ("cpu", {"max_qps": self.args.cpu_qps}),
                ("cpu-edns", {"max_qps": self.args.cpu_qps, "edns": True}),
                ("latency", {"max_qps": self.args.latency_qps, "verbose": True}),
            ):
                if scenario in scenarios:
                    for rnd in range(self.args.rounds):
                        for s in timed:
                            self.dnsperf(s, scenario, queries, expected=expected, round=rnd,
                                         **kw)
        finally:
            self.stop(*servers)

    def bring_up(self, servers: list[Server], ds: gen.Dataset,
                 scenarios: list[str]) -> list[Server]:
        """Start, wait for and check each server; return those that may be timed."""
        ok = []
        for s in servers:
            try:
                self.start(s)
                self.ready(s, ds.names[0])
            except BenchError as exc:
                self.fail_server(s.name, scenarios, str(exc))
                self.stop(s)
                continue
            if self.check(s, ds, scenarios):
                ok.append(s)
        return ok

    def fail_server(self, name: str, scenarios: list[str], why: str) -> None:
        log(f"FAIL: {name}: {why}")
        self.run.failures.append(f"{name}: {why}")
        for scenario in scenarios:
            self.run.skipped.setdefault(scenario, {})[name] = why.splitlines()[0][:200]

    def skip_server(self, name: str, scenarios: list[str], why: str) -> None:
        log(f"not timing {name}: {why}")
        for scenario in scenarios:
            self.run.skipped.setdefault(scenario, {})[name] = why

    def phase_forward(self, gd_why: str | None) -> None:
        ds = gen.build_dataset("example", ttl=3600, negative_ttl=3600)
        lines = gen.query_lines(ds)
        queries = gen.write_lines(self.out / "queries.forward.txt", lines)
        warm = gen.write_lines(self.out / "queries.forward.warm.txt", sorted(set(lines)))
        expected = gen.expected_rcode_shares(lines, ds)
        up_port = free_port()
        control = self.out / "upstream.ctl"
        up_cfg = self.write("unbound.upstream.conf", gen.unbound_local_config(
            ds, up_port, self.out, control_socket=control))
        upstream = Server(
            "upstream", [*self.pin(self.client_cpu), "unbound", "-d", "-c", str(up_cfg)],
            up_port, negative_soa=True, authoritative=True)
        forwarders = []
        if gd_why is None:
            port = free_port()
            cfg = self.write("globaldns.forward.yaml",
                             gen.globaldns_config(None, port, forward_upstream=up_port))
            why = self.globaldns_config_ok(cfg)
            if why is not None:
                self.skip_server("globaldns", ["forward"],
                                 f"this globaldns does not accept the forward config yet "
                                 f"(check-config: {why.splitlines()[0][:160]})")
            else:
                forwarders.append(self.globaldns(cfg, port, cpus=self.server_cpu,
                                                 tag="forward", forwarder=True))
        else:
            self.skip_server("globaldns", ["forward"], gd_why)
        port = free_port()
        dm = self.write("dnsmasq.forward.conf", gen.dnsmasq_forwarder_config(port, up_port))
        forwarders.append(Server(
            "dnsmasq",
            [*self.pin(self.server_cpu), "dnsmasq", "--keep-in-foreground", f"--conf-file={dm}"],
            port, negative_soa=False, authoritative=False, tag="forward"))
        port = free_port()
        ub = self.write("unbound.forward.conf",
                        gen.unbound_forwarder_config(port, up_port, self.out))
        forwarders.append(Server(
            "unbound", [*self.pin(self.server_cpu), "unbound", "-d", "-c", str(ub)],
            port, negative_soa=True, authoritative=False, tag="forward"))
        try:
            self.start(upstream)
            self.ready(upstream, ds.names[0])
            if not self.check(upstream, ds, ["forward"]):
                raise BenchError("the upstream answers wrong; no forwarder can be timed")
            timed = self.bring_up(forwarders, ds, ["forward"])
            for s in timed:
                log(f"forward: warming {s.name} with {len(set(lines))} distinct queries")
                cmd = perf.dnsperf_cmd(s.port, warm, 0, cpu=self.client_cpu, max_runs=1,
                                       outstanding=20)
                self.run.commands.append((f"forward: warm {s.name}", shlex.join(cmd)))
                subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=120, check=True)
            for rnd in range(self.args.rounds):
                for s in timed:
                    before = self.upstream_queries(up_cfg)
                    self.dnsperf(s, "forward", queries, expected=expected, round=rnd)
                    after = self.upstream_queries(up_cfg)
                    if before is not None and after is not None:
                        self.run.upstream_queries[s.name] = (
                            self.run.upstream_queries.get(s.name, 0) + after - before)
        finally:
            self.stop(*forwarders, upstream)

    def upstream_queries(self, config: Path) -> int | None:
        if shutil.which("unbound-control") is None:
            return None
        out = subprocess.run(["unbound-control", "-c", str(config), "stats_noreset"],
                             capture_output=True, text=True, timeout=10)
        m = re.search(r"^total\.num\.queries=(\d+)$", out.stdout, re.M)
        return int(m.group(1)) if m else None

    def phase_workers(self, gd_why: str | None, serve_help: str) -> None:
        if gd_why is None and "--workers" not in serve_help:
            gd_why = "`globaldns serve --help` has no --workers yet"
        if gd_why is not None:
            self.skip_server("globaldns", ["workers"], gd_why)
            return
        ds = gen.build_dataset("global", ttl=5, negative_ttl=5)
        lines = gen.query_lines(ds)
        queries = self.out / "queries.global.txt"
        if not queries.exists():
            gen.write_lines(queries, lines)
        expected = gen.expected_rcode_shares(lines, ds)
        both = ",".join(c for c in (self.server_cpu, self.client_cpu) if c is not None) or None
        baseline = None
        for n in (1, 2):
            port = free_port()
            cfg = self.write(f"globaldns.workers{n}.yaml", gen.globaldns_config(ds, port))
            # Run one after the other (not interleaved): both would share any other port
            # globaldns opens (metrics).
            server = self.globaldns(cfg, port, cpus=self.server_cpu if n == 1 else both,
                                    workers=n, tag=f"workers{n}")
            rounds = []
            try:
                if not self.bring_up([server], ds, ["workers"]):
                    return
                time.sleep(0.5)  # let every worker bind and settle
                for rnd in range(self.args.rounds):
                    rounds.append(self.dnsperf(
                        server, f"workers{n}", queries, expected=expected, clients=8,
                        cpu=self.client_cpu if n == 1 else both, round=rnd))
            finally:
                self.stop(server)
            quiet = [r for r in rounds if r.other_load <= self.args.max_other_load] or rounds
            capacities = [(_capacity(r), r) for r in quiet]
            capacities.sort(key=lambda c: c[0])
            capacity, r = capacities[(len(capacities) - 1) // 2]
            busy = sorted((c for c in r.server_cpu.values() if c > 0.02), reverse=True)
            if baseline is None:
                baseline = capacity
            self.run.workers.append({
                "workers": n, "qps": r.qps, "client_cpu": r.client_cpu,
                "per_process": ", ".join(f"{c:.2f}" for c in busy) or "-",
                "busy": ", ".join(f"cpu{c} {100 * b:.0f} %" for c, b in r.core_busy.items()),
                "capacity": capacity,
                "projected": f"{capacity / baseline:.2f}x" if baseline else "-",
            })


def _capacity(r: perf.PerfResult) -> float:
    """Queries/s at which the busiest server process would fill its core."""
    top = max(r.server_cpu.values(), default=0.0)
    return r.qps / top if top > 0.02 else 0.0


def check_tools() -> list[str]:
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [tool for tool in REQUIRED if shutil.which(tool) is None]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=5,
                   help="seconds per timed dnsperf run (default 5)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma-separated subset of {','.join(SCENARIOS)}")
    p.add_argument("--rounds", type=int, default=3,
                   help="timed runs per server and scenario, interleaved; the report shows "
                        "the median (default 3)")
    p.add_argument("--max-other-load", type=float, default=0.15,
                   help="a timed run during which other processes used more than this many "
                        "cores is discarded and repeated (default 0.15)")
    p.add_argument("--retries", type=int, default=6,
                   help="how many such repeats the whole run may make (default 6)")
    p.add_argument("--max-wait", type=float, default=90,
                   help="seconds the whole run may wait, before timed runs, for other work on "
                        "the machine to stop (default 90)")
    p.add_argument("--latency-qps", type=int, default=20000,
                   help="fixed query rate of the latency scenario (default 20000)")
    p.add_argument("--cpu-qps", type=int, default=40000,
                   help="fixed query rate of the cpu scenarios: server CPU per answered query "
                        "(default 40000)")
    p.add_argument("--fastlane-off", action="store_true",
                   help="also time globaldns with the batched UDP fast lane off "
                        f"(GLOBALDNS_FASTLANE=0), as the server `{NO_FASTLANE}`")
    p.add_argument("--peers-only", action="store_true", help="do not run globaldns")
    p.add_argument("--globaldns", default="",
                   help="command that runs globaldns (default: this python -m globaldns, "
                        "with the repo on PYTHONPATH)")
    p.add_argument("--globaldns-args", default="",
                   help="extra arguments for `globaldns serve`, e.g. '--log-level warning'")
    p.add_argument("--server-cpu", default="0", help="CPU list for the servers (taskset)")
    p.add_argument("--client-cpu", default="1", help="CPU list for dnsperf (taskset)")
    p.add_argument("--no-pin", action="store_true", help="do not use taskset")
    p.add_argument("--no-netns", action="store_true",
                   help="do not run inside a network namespace of its own")
    p.add_argument("--out", type=Path, default=BENCH / "out",
                   help="directory for raw outputs (default bench/out)")
    p.add_argument("--results", type=Path, default=BENCH / "RESULTS.md",
                   help="where to write the report (default bench/RESULTS.md)")
    args = p.parse_args(argv)
    if args.no_pin:
        args.server_cpu = args.client_cpu = None
    return args


def enter_netns(argv: list[str]) -> bool:
    """Re-exec this script under `unshare --net` (a private loopback); True if inside one."""
    if os.environ.get(NETNS_ENV) == "1":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return True
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0 or shutil.which("ip") is None:
        log("cannot create a network namespace (needs root, unshare and ip); running on the "
            f"host's loopback instead: {probe.stderr.strip()}")
        return False
    os.environ[NETNS_ENV] = "1"
    os.execvp("unshare", ["unshare", "--net", "--", sys.executable, str(Path(__file__)),
                          *argv])
    raise AssertionError("unreachable")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        print(f"unknown scenarios {unknown}; choose from {','.join(SCENARIOS)}", file=sys.stderr)
        return 2
    missing = check_tools()
    if missing:
        print(f"missing tools: {', '.join(missing)}\ninstall them with:\n  {INSTALL}",
              file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2 and not args.no_pin:
        log("fewer than 2 CPUs: not pinning")
        args.server_cpu = args.client_cpu = None
    netns = False if args.no_netns else enter_netns(argv)

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = (args.out / stamp).resolve()
    out.mkdir(parents=True)
    latest = args.out / "latest"
    if latest.is_symlink():
        latest.unlink()
    if not latest.exists():
        latest.symlink_to(stamp)
    pinning = ("none" if args.server_cpu is None else
               f"servers `taskset -c {args.server_cpu}`, dnsperf `taskset -c {args.client_cpu}`")
    run = report.Run(
        started=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        argv=shlex.join(["python3", "bench/run.py", *argv]), duration=args.duration,
        repo=REPO, out=out, netns=netns, pinning=pinning, rounds=args.rounds,
        latency_qps=args.latency_qps, max_other_load=args.max_other_load, cpu_qps=args.cpu_qps,
    )
    bench = Bench(args, run, out)

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    t0 = time.monotonic()
    interrupted = False
    try:
        gd_why, serve_help = bench.globaldns_probe()
        if gd_why and not args.peers_only:
            log(f"globaldns cannot run: {gd_why}")
            run.notes.append(f"globaldns not timed: {gd_why}")
        if set(AUTHORITATIVE) & set(scenarios):
            bench.phase_authoritative([s for s in scenarios if s in AUTHORITATIVE], gd_why)
        if "forward" in scenarios:
            bench.phase_forward(gd_why)
        if "workers" in scenarios:
            bench.phase_workers(gd_why, serve_help)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping every process started")
        run.failures.append("run interrupted")
    except BenchError as exc:
        log(f"FAIL: {exc}")
        run.failures.append(str(exc))
    finally:
        bench.sup.stop_all()
        run.notes.extend(bench.sup.notes)
    run.notes.append(f"whole run took {time.monotonic() - t0:.0f} s")
    if not interrupted:
        report.write(run, args.results, scenarios)
        log(f"wrote {os.path.relpath(args.results, Path.cwd())}; raw outputs in {out}")
    for f in run.failures:
        log("FAILED: " + f.splitlines()[0])
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
