"""What rate limiting and cookies cost a query: globaldns with `rate_limit` off, on with
the client exempt, and on with the client accounted (a rate no query reaches, so every
reply is still sent), and with every query carrying a valid server cookie; dnsperf against
each in turn, in rounds, in the same run (the cookie variant: dnsperf sends one valid
server cookie, made with a secret file, in every query). Reported as q/s ratios against `off` of the
same round: absolute figures move with the machine.

    python3 bench/ratelimit.py [--duration 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procs import free_port, use_project_venv

use_project_venv()

from globaldns.dns.cookies import server_cookie  # noqa: E402

HEAD = """dns: {{listen: 127.0.0.1:{port}}}
http: {{listen: ''}}
"""
CONFIG = """clusters: [{name: east, locality: us-east1}]
services:
""" + "".join(f"""  - name: svc{i}
    namespace: bench
    endpoints: [{{address: 10.1.{i // 250}.{i % 250 + 1}, cluster: east}}]
""" for i in range(100))

ACCOUNTED = "rate_limit: {responses_per_second: 1000000, exempt: []}\n"
SECRET = "e5e973e5a6b2a43f48e7dc849e37bfcf"
# name → (config added, dnsperf flags)
VARIANTS = {
    "off": ("", []),
    "on, client exempt": ("rate_limit: {}\n", []),
    "on, client accounted": (ACCOUNTED, []),
    "on, client accounted, EDNS without cookie": (ACCOUNTED, ["-e"]),
    "on, every query with a valid server cookie": (ACCOUNTED, ["-e", "-E", "cookie"]),
}


def start(config: str, folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    path = folder / f"c{port}.yaml"
    path.write_text(HEAD.format(port=port) + CONFIG + config)
    proc = subprocess.Popen([sys.executable, "-m", "globaldns", "serve", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+time=1", "+tries=1",
                              "svc1.bench.global"], capture_output=True, text=True)
        if "status: NOERROR" in out.stdout:
            return proc, port
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("globaldns did not start")


def cookie_flag() -> str:
    """dnsperf's `-E code:hex` for a server cookie made now for 127.0.0.1 (valid an hour)."""
    client = bytes.fromhex("0102030405060708")
    cookie = client + server_cookie(bytes.fromhex(SECRET), client, bytes([127, 0, 0, 1]),
                                    int(time.time()))
    return f"10:{cookie.hex()}"


def qps(port: int, queries: Path, duration: float, flags: list[str]) -> float:
    flags = [cookie_flag() if f == "cookie" else f for f in flags]
    out = subprocess.run(["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries),
                          "-l", f"{duration:g}", "-q", "100", *flags],
                         capture_output=True, text=True)
    found = re.search(r"Queries per second:\s+([\d.]+)", out.stdout)
    if not found:
        raise SystemExit(out.stdout + out.stderr)
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        queries = folder / "queries"
        secret = folder / "secret"
        secret.write_text(SECRET + "\n")
        queries.write_text("".join(f"svc{i % 100}.bench.global A\n" for i in range(1000)))
        ratios: dict[str, list[float]] = {name: [] for name in VARIANTS}
        absolute: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            base = 0.0
            for name, (extra, flags) in VARIANTS.items():
                proc, port = start(extra + f"cookies: {{secret_file: {secret}}}\n", folder)
                try:
                    rate = qps(port, queries, args.duration, flags)
                finally:
                    proc.terminate()
                    proc.wait(10)
                base = base or rate
                absolute[name].append(rate)
                ratios[name].append(rate / base)
        print(f"| rate_limit | q/s (median of {args.rounds}) | ratio to off (median) |")
        print("| --- | --- | --- |")
        for name in VARIANTS:
            print(f"| {name} | {statistics.median(absolute[name]):,.0f} | "
                  f"{statistics.median(ratios[name]):.2f} |")


if __name__ == "__main__":
    main()
