"""CPU per config parse (uninstrumented): every file of a corpus directory (e.g. the inputs
a fuzz run of fuzz/config.py kept), then hostile shapes at full size.

    python3 bench/config_parse.py [CORPUS_DIR ...]

Prints, per group, the count and the mean, p99 and max CPU per input (process time), and
what each input ended in (a Config or a ConfigError; anything else is a failure).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from procs import use_project_venv

use_project_venv()

from globaldns.config.parse import MAX_CONFIG_BYTES, ConfigError, parse_bytes  # noqa: E402


def laughs(levels: int, width: int) -> bytes:
    """Billion laughs: each alias list holds `width` references to the one before."""
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    lines.append(f"clusters: [{{name: c, namespaces: *a{levels - 1}}}]")
    return "\n".join(lines).encode()


def hostile() -> dict[str, bytes]:
    big_services = "clusters: [{name: c}]\nservices:\n" + "".join(
        f"  - {{name: s{i}, namespace: n, endpoints: [{{address: 10.0.{i // 250}.{i % 250},"
        f" cluster: c}}]}}\n" for i in range(20_000))
    return {
        "laughs 9^9 in 600 bytes": laughs(9, 9),
        "recursive alias": b"clusters: [{name: c, namespaces: &a [*a]}]",
        "nested 999 deep": b"[" * 999 + b"]" * 999,
        "nested 100,000 deep": b"[" * 100_000,
        "a 15 MiB string": b"sync_timeout: '" + b"x" * (15 * 2**20) + b"'",
        "over the 16 MiB bound": b"#" * (MAX_CONFIG_BYTES + 1),
        "20,000 static services (1.5 MB)": big_services.encode(),
        "label selector of 4,000 commas": b"clusters: [{name: c, label_selector: '"
                                          + b"," * 4000 + b"'}]",
        "match with 60 stars": b"routing: [{match: '" + b"*" * 60 + b".x'}]",
    }


def measure(name: str, inputs: list[bytes]) -> None:
    times, outcomes = [], {"Config": 0, "ConfigError": 0}
    for data in inputs:
        start = time.process_time()
        try:
            parse_bytes(data, "<bench>")
            outcomes["Config"] += 1
        except ConfigError:
            outcomes["ConfigError"] += 1
        times.append(time.process_time() - start)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{name}: {len(times)} input(s), mean {statistics.mean(times) * 1e3:.3f} ms, "
          f"p99 {p99 * 1e3:.3f} ms, max {times[-1] * 1e3:.3f} ms CPU; "
          f"{outcomes['Config']} Config, {outcomes['ConfigError']} ConfigError")


def main() -> None:
    for directory in sys.argv[1:]:
        files = sorted(p for p in Path(directory).iterdir() if p.is_file())
        measure(directory, [p.read_bytes() for p in files])
    for name, data in hostile().items():
        measure(name, [data])


if __name__ == "__main__":
    main()
