"""The relay check's atheris harness (fuzz/relayed_reply.py), a short fixed-seed run from
CZ-NIC's responses: every input ends in a relayed body or MalformedReply, under 1 ms of
CPU, and every reply built from it parses with dnspython."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.data import ROOT

HARNESS = ROOT / "fuzz" / "relayed_reply.py"


def test_the_relayed_reply_fuzz_harness_finds_nothing_in_a_fixed_seed_run(tmp_path: Path
                                                                          ) -> None:
    seeds, new = tmp_path / "seeds", tmp_path / "new"
    subprocess.run([sys.executable, str(HARNESS), "seeds", str(seeds)], check=True, timeout=60)
    new.mkdir()
    out = subprocess.run([sys.executable, str(HARNESS), "-runs=10000", "-seed=1",
                          "-max_len=4096", f"-artifact_prefix={tmp_path}/", str(new),
                          str(seeds)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Done 10000 runs" in out.stderr
