"""A process's lifetime under a query loop: a worker SIGKILLed, and SIGTERM with lameduck.

`python3 bench/lifetime.py [--rounds 3]` (with the project's venv) starts `globaldns serve`
processes on loopback and asks `api.prod.global` from 32 source ports, one query at a time,
each waiting up to 1 s (tests/helpers/processes.py's `Load`). Per round it prints:
- kill: --workers 2, the worker SIGKILLed under the loop: queries sent and lost, lost
  among those sent after the restart (the new worker answering, /ready 200), the seconds
  from the kill to /ready 200, and the q/s after it;
- sigterm: dns.lameduck 2s, SIGTERM under the loop: queries sent and lost while /ready
  is 503 and the process still answers, and the exit status.
Figures in bench/RESULTS-lifetime.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.processes import Load, answering_worker, get, restarts, serve
from tests.helpers.wait import wait_until


def kill_round(directory: Path) -> str:
    proc, port, http = serve(directory, workers=2, heartbeat="300ms")
    try:
        worker = answering_worker(proc.pid, http)
        with Load(port) as load:
            wait_until(lambda: load.answered >= 2000, timeout=30)
            killed = time.monotonic()
            os.kill(worker, signal.SIGKILL)
            wait_until(lambda: restarts(http, "exited") >= 1, timeout=10)
            wait_until(lambda: get(http, "/ready")[0] == 200, timeout=30)
            ready = time.monotonic()
            mark, answered = load.sent, load.answered
            wait_until(lambda: load.answered >= answered + 2000, timeout=30)
            rate = (load.answered - answered) / (time.monotonic() - ready)
        return (f"kill: sent {load.sent}, lost {load.lost} ({100 * load.lost / load.sent:.2f} %),"
                f" lost after the restart {load.lost_since(mark)}; kill to /ready 200 "
                f"{ready - killed:.2f} s; {rate:.0f} q/s")
    finally:
        proc.kill()
        proc.wait()


def sigterm_round(directory: Path) -> str:
    proc, port, http = serve(directory, lameduck="2s")
    with Load(port) as load:
        wait_until(lambda: load.answered >= 1000, timeout=30)
        before = load.sent
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: get(http, "/ready")[0] == 503, timeout=5)
        during = load.sent
        wait_until(lambda: load.sent >= during + 2000, timeout=30)
        after = load.sent - before
    status = proc.wait(15)
    return (f"sigterm: sent {load.sent}, lost {load.lost}; {after} sent after SIGTERM; "
            f"exit {status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            for name, round_ in (("kill", kill_round), ("sigterm", sigterm_round)):
                directory = Path(tmp) / f"{name}{n}"
                directory.mkdir()
                print(round_(directory), flush=True)


if __name__ == "__main__":
    main()
