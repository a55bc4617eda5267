"""The `globaldns` command run as a process, as an operator runs it."""

from __future__ import annotations

import subprocess

from tests.helpers.server import GLOBALDNS


def explain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GLOBALDNS, "explain", *args], capture_output=True, text=True,
                          timeout=30)


def run_explain(tmp_path, config: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "c.yaml"
    path.write_text(config)
    return explain(*args, "--config", str(path))
