"""CPU the relay check adds to each forwarded reply (issue 10): `relay.relayed()` against the
walk it replaced (`relayed()` of globaldns/dns/upstream.py at a baseline commit, read
with git), on the same replies, in one process.

    python3 bench/relay.py                  # baseline 855a248, 2,000 rounds
    python3 bench/relay.py --baseline REV --rounds 5000

Prints a Markdown table: µs of CPU per reply before and after, and the difference. The
figure is per upstream reply (a cache hit costs nothing more). Absolute numbers move with
the machine; the difference is what to read.
"""

from __future__ import annotations

import argparse
import importlib.util
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import use_project_venv

use_project_venv()

import dnslib  # noqa: E402

from globaldns.dns.relay import relayed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def reply(qname: str, qtype: str, *, answer: list[str] = (),  # type: ignore[assignment]
          authority: list[str] = (), additional: list[str] = (),  # type: ignore[assignment]
          rcode: int = 0) -> tuple[bytes, int]:
    """An upstream reply as dnslib compresses it, with an OPT record; (wire, question end)."""
    q = dnslib.DNSRecord.question(qname, qtype)
    r = q.reply()
    r.header.rcode = rcode
    for line in answer:
        r.add_answer(*dnslib.RR.fromZone(line))
    for line in authority:
        r.add_auth(*dnslib.RR.fromZone(line))
    for line in additional:
        r.add_ar(*dnslib.RR.fromZone(line))
    r.add_ar(dnslib.EDNS0(udp_len=1232))
    return bytes(r.pack()), len(q.pack())


def raw(records: list[bytes]) -> tuple[bytes, int]:
    """A 64 KB-class reply for www.example.test A, records given as bytes."""
    question = b"\x03www\x07example\x04test\x00\x00\x01\x00\x01"
    head = b"\x12\x34\x81\x80" + struct.pack("!HHHH", 1, len(records), 0, 0)
    return head + question + b"".join(records), 12 + len(question)


def rr(owner: bytes, rtype: int, rdata: bytes) -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, 300, len(rdata)) + rdata


SOA = "example.test. 60 IN SOA ns.example.test. h.example.test. 1 2 3 4 5"
CASES: list[tuple[str, tuple[bytes, int]]] = [
    ("A, one record", reply("www.example.test", "A",
                            answer=["www.example.test. 300 IN A 192.0.2.1"])),
    ("AAAA, two records", reply("www.example.test", "AAAA",
                                answer=["www.example.test. 300 IN AAAA 2001:db8::1",
                                        "www.example.test. 300 IN AAAA 2001:db8::2"])),
    ("CNAME chain, two A", reply("www.example.test", "A",
                                 answer=["www.example.test. 300 IN CNAME edge.cdn.test.",
                                         "edge.cdn.test. 300 IN A 192.0.2.7",
                                         "edge.cdn.test. 300 IN A 192.0.2.8"])),
    ("NXDOMAIN with SOA", reply("nx.example.test", "A", authority=[SOA], rcode=3)),
    ("MX, two, with glue", reply("example.test", "MX",
                                 answer=["example.test. 300 IN MX 10 mx1.example.test.",
                                         "example.test. 300 IN MX 20 mx2.example.test."],
                                 additional=["mx1.example.test. 300 IN A 192.0.2.25",
                                             "mx2.example.test. 300 IN A 192.0.2.26"])),
    ("poisoned: one record stripped, re-encoded", reply(
        "www.example.test", "A",
        answer=["www.example.test. 300 IN A 192.0.2.1", "www.bank.test. 300 IN A 6.6.6.6"],
        authority=["example.test. 300 IN NS ns.example.test."])),
    ("64 KB over TCP: 4,000 A", raw([rr(b"\xc0\x0c", 1, bytes(4))] * 4000)),
    ("64 KB over TCP: 3,000 MX, re-encoded (worst found)", raw(
        [rr(b"\x01z\x00", 1, bytes(4))]
        + [rr(b"\xc0\x0c", 15, b"\x00\x01\x04mail\xc0\x0c")] * 3000)),
]


def baseline(rev: str) -> Callable[[bytes, int], object]:
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:globaldns/dns/upstream.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "baseline_upstream.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_upstream", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.relayed  # type: ignore[no-any-return]


def per_call(fn: Callable[[bytes, int], object], wire: bytes, qend: int, rounds: int) -> float:
    """µs of CPU per call, the best of 5 runs of `rounds` calls."""
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(rounds):
            fn(wire, qend)
        best = min(best, (time.process_time() - start) / rounds)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="855a248")
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    old = baseline(args.baseline)
    print(f"| reply | bytes | before ({args.baseline}), µs | after, µs | added, µs |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (wire, qend) in CASES:
        rounds = args.rounds if len(wire) < 4096 else max(args.rounds // 200, 5)
        before = per_call(old, wire, qend, rounds)
        after = per_call(relayed, wire, qend, rounds)
        print(f"| {name} | {len(wire)} | {before:.1f} | {after:.1f} | {after - before:+.1f} |")


if __name__ == "__main__":
    main()
