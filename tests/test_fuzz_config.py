"""The config parser's atheris harness (fuzz/config.py), a short fixed-seed run: every
input ends in a Config or a ConfigError naming the source, never another exception."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers.data import ROOT


def test_the_config_fuzz_harness_finds_nothing_in_a_fixed_seed_run(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    shutil.copytree(ROOT / "fuzz" / "corpus" / "config", seeds)
    (tmp_path / "new").mkdir()
    out = subprocess.run([sys.executable, str(ROOT / "fuzz" / "config.py"),
                          f"-dict={ROOT / 'fuzz' / 'config.dict'}", "-runs=50000", "-seed=1",
                          f"-artifact_prefix={tmp_path}/", str(tmp_path / "new"), str(seeds)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Done 50000 runs" in out.stderr
