"""The Istio-objects fuzz harness, a short fixed-seed run (fuzz/istio_objects.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[2] / "fuzz" / "istio_objects.py"


def test_hostile_istio_objects_never_escape_the_documented_handling(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(HARNESS), "-runs=20000", "-seed=1",
                          "-max_len=2048"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Done 20000 runs" in run.stderr
