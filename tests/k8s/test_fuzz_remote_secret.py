"""The remote-Secret kubeconfig harness (fuzz/remote_secret.py), a short fixed-seed run:
every input ends in Credentials or a one-line CredentialsError naming its origin."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers.data import ROOT


def test_the_remote_secret_fuzz_harness_finds_nothing_in_a_fixed_seed_run(
        tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    shutil.copytree(ROOT / "fuzz" / "corpus" / "remote_secret", seeds)
    (tmp_path / "new").mkdir()
    out = subprocess.run([sys.executable, str(ROOT / "fuzz" / "remote_secret.py"),
                          f"-dict={ROOT / 'fuzz' / 'remote_secret.dict'}", "-runs=30000",
                          "-seed=1", f"-artifact_prefix={tmp_path}/", str(tmp_path / "new"),
                          str(seeds)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Done 30000 runs" in out.stderr
