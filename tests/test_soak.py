"""The soak (bench/soak.py) in the test suite's form: 60 s by default (GLOBALDNS_SOAK_SECONDS
sets it), a light load (100 q/s, every answer checked), 100 EndpointSlice changes per
second across 3 emulated clusters, a cluster restarted every 10 s and a reload every 20 s.
Its pass criteria are counts, never timings: no SERVFAIL, every answer consistent with the
clusters within one TTL, the 0x20 casing echoed, at most 0.1 % of queries lost, every
reload applied, resident memory within 25 % of its size after warm-up, and no more tasks,
threads, file descriptors or sockets at the end than during warm-up. The 10-minute run at half the
measured maximum, judged on p99 too, is recorded in bench/RESULTS-soak.md."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.data import ROOT

SOAK = ROOT / "bench" / "soak.py"
SECONDS = float(os.environ.get("GLOBALDNS_SOAK_SECONDS", "60"))


def test_the_soak_in_its_short_form_passes_every_check(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(SOAK), "--duration", str(SECONDS), "--warmup", str(SECONDS / 3),
         "--qps", "100", "--check-rate", "100", "--restart-every", str(SECONDS / 6),
         "--reload-every", str(SECONDS / 3), "--rss-growth", "25", "--max-lost", "0.1",
         "--no-latency", "--json", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=SECONDS + 120)
    assert out.stdout, out.stderr[-3000:]
    verdict = json.loads(out.stdout.splitlines()[-1])
    figures = verdict["figures"]
    failed = [name for name, ok in verdict["checks"].items() if not ok]
    assert not failed, f"{failed}: {json.dumps(figures, indent=1)[:3000]}"
    assert out.returncode == 0
    assert figures["answered"] >= 0.9 * 100 * SECONDS
    assert figures["counts"]["restarts"] >= 3 and figures["counts"]["reloads"] >= 2


def _soak_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_the_soak_judges_each_cluster_part_of_an_answer_by_its_age() -> None:
    soak = _soak_module()
    truth = soak.Truth(1)
    for cluster, address in zip(soak.CLUSTERS, ("10.0.0.1", "10.0.0.2", "10.0.0.3"),
                                strict=True):
        truth.set(0, cluster, (address,), 100.0)
    truth.set(0, "a", ("10.0.1.1",), 110.0)
    truth.set(0, "b", ("10.0.1.2",), 112.0)
    # Current; then a's old part beside b's new one (a set never held all at once: each
    # cluster is followed on its own stream) 2 s, 4 s and 7 s after a's part was replaced:
    # within the 5 s TTL for the first two, stale for the last.
    assert truth.staleness(0, frozenset({"10.0.1.1", "10.0.1.2", "10.0.0.3"}), 113, 113) == 0
    old_a = frozenset({"10.0.0.1", "10.0.1.2", "10.0.0.3"})
    assert [truth.staleness(0, old_a, t, t) for t in (112, 114, 117)] == [2, 4, 7]
    # b's part before b held it: an answer from the future is never consistent.
    assert truth.staleness(0, old_a, 109, 109) > 1e9
    # An address no cluster ever held, or a cluster's part missing: never consistent.
    assert truth.staleness(0, frozenset({"10.0.1.1", "10.0.1.2", "6.6.6.6"}), 113, 113) > 1e9
    assert truth.staleness(0, frozenset({"10.0.1.1", "10.0.1.2"}), 113, 113) > 1e9
