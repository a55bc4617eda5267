"""Files the tests read: the repository, and tests/data (fixtures and the fuzz corpus,
with their provenance in tests/data/README.md)."""

from __future__ import annotations

import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
CORPUS = DATA / "fuzz" / "dns-packets.bin"


def corpus() -> list[bytes]:
    """The DNS packet corpus: length-prefixed messages."""
    assert CORPUS.exists(), f"{CORPUS} is missing: see tests/data/README.md"
    data = CORPUS.read_bytes()
    out, i = [], 0
    while i + 2 <= len(data):
        n = struct.unpack_from("!H", data, i)[0]
        out.append(data[i + 2 : i + 2 + n])
        i += 2 + n
    return out
