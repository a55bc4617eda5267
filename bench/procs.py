"""Starting, probing and stopping the processes of a run, each by its PID.

Every process is started in its own session (so Ctrl-C reaches only the harness, which
then stops them in order) and recorded; `Supervisor.stop_all` ends each one with SIGTERM,
then SIGKILL, and also ends any child it left behind (found by process group in /proc).
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def use_project_venv() -> None:
    """Re-run this script with the project's venv (`.venv`, made by `scripts/test` or the
    README's first command) when the running Python cannot import globaldns, so that
    `python3 bench/run.py` works as documented; stop with the command to make it if absent."""
    try:
        import dnslib  # noqa: F401

        import globaldns  # noqa: F401
    except ImportError:
        venv = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
        if not venv.exists() or Path(sys.executable) == venv:
            sys.exit("globaldns is not importable: make the project's venv first with\n"
                     "  python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'")
        os.execv(str(venv), [str(venv), *sys.argv])



class BenchError(Exception):
    """A failure that ends the run with a message (a server that does not start, ...)."""


@dataclass
class Proc:
    name: str
    cmd: list[str]
    popen: subprocess.Popen
    log: Path
    leftovers: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


class Supervisor:
    def __init__(self) -> None:
        self.procs: list[Proc] = []
        self.notes: list[str] = []

    def start(
        self, name: str, cmd: list[str], *, log: Path, env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        fh = log.open("wb")
        try:
            popen = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                start_new_session=True, env=env, cwd=cwd,
            )
        finally:
            fh.close()
        proc = Proc(name, cmd, popen, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, *, grace: float = 5.0) -> None:
        if proc not in self.procs:
            return
        self.procs.remove(proc)
        group = _process_group(proc.pid)  # children share the group (own session)
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.notes.append(f"{proc.name} (pid {proc.pid}) ignored SIGTERM for {grace}s")
                os.kill(proc.pid, signal.SIGKILL)
                proc.popen.wait(5)
        # Children (e.g. worker processes) that outlived their parent: end them by PID.
        deadline = time.monotonic() + grace
        left = [p for p in group if _alive(p)]
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = [p for p in left if _alive(p)]
        if left:
            proc.leftovers = left
            self.notes.append(
                f"{proc.name}: child processes {left} still alive {grace}s after the parent "
                "exited; killed"
            )
            for p in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)

    def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            try:
                self.stop(proc)
            except Exception as exc:  # keep stopping the others
                self.notes.append(f"stopping {proc.name} (pid {proc.pid}): {exc}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces: split after its closing parenthesis.
    return data.rsplit(")", 1)[1].split()


def _process_group(pgid: int) -> list[int]:
    """PIDs (other than the leader) whose process group is `pgid`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pgid:
            continue
        st = _stat_fields(int(entry))
        if st is not None and int(st[2]) == pgid:
            out.append(int(entry))
    return out


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat_fields(int(entry))
            if st is not None:
                children.setdefault(int(st[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User+system CPU seconds used so far by each PID (threads included)."""
    out = {}
    for pid in pids:
        st = _stat_fields(pid)
        if st is not None:
            out[pid] = (int(st[11]) + int(st[12])) / CLK_TCK
    return out


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise BenchError("no free port on 127.0.0.1")


def _query(qname: str, qtype: int = 1) -> tuple[int, bytes]:
    qid = random.randrange(65536)
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    wire = b"".join(bytes([len(p)]) + p.encode() for p in qname.rstrip(".").split("."))
    return qid, header + wire + b"\0" + struct.pack("!HH", qtype, 1)


def wait_ready(proc: Proc, port: int, qname: str, *, timeout: float = 20.0) -> float:
    """Wait until `port` answers a UDP query for `qname`; return the seconds it took."""
    start = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() - start < timeout:
            if proc.popen.poll() is not None:
                raise BenchError(
                    f"{proc.name} exited with code {proc.popen.returncode} before answering"
                    f"\n  command: {shlex.join(proc.cmd)}\n  log tail:\n{proc.log_tail()}"
                )
            qid, pkt = _query(qname)
            try:
                s.sendto(pkt, ("127.0.0.1", port))
                while True:
                    data = s.recv(4096)
                    if len(data) >= 2 and struct.unpack("!H", data[:2])[0] == qid:
                        return time.monotonic() - start
            except (TimeoutError, ConnectionRefusedError):
                time.sleep(0.05)
    raise BenchError(
        f"{proc.name} did not answer on 127.0.0.1:{port} within {timeout}s"
        f"\n  command: {shlex.join(proc.cmd)}\n  log tail:\n{proc.log_tail()}"
    )
