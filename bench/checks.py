"""Correctness checks with `dig`, run against every server before it is timed.

A server that answers wrong is not timed: a fast wrong answer is no result. Answers are
compared as sets (globaldns orders by locality and rotates per query).
"""

from __future__ import annotations

import random
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gen import Dataset

_STATUS = re.compile(r"status: (\w+)")
_FLAGS = re.compile(r";; flags: ([a-z ]*);")


@dataclass(frozen=True)
class Case:
    qname: str
    qtype: str
    options: tuple[str, ...]  # extra dig options: +tcp, +noedns
    rcode: str
    answer: frozenset[tuple[str, str, str]]  # (name, type, rdata)
    negative: bool  # NXDOMAIN/NODATA: the zone SOA belongs in the authority section

    def describe(self) -> str:
        return " ".join([self.qname, self.qtype, *self.options])


@dataclass
class Reply:
    rcode: str | None
    flags: set[str]
    edns: bool
    answer: set[tuple[str, str, str]]
    authority_types: set[str]
    raw: str


def cases(ds: Dataset, *, seed: int = 11) -> list[Case]:
    rng = random.Random(seed)
    names = list(ds.names)
    hits = [names[0], names[-1], *rng.sample(names[1:-1], 28)]
    out: list[Case] = []

    def hit(name: str, qname: str, options: tuple[str, ...] = ()) -> Case:
        answer = frozenset((name, "A", a) for a in ds.addresses[name])
        return Case(qname, "A", options, "NOERROR", answer, False)

    out += [hit(n, n) for n in hits]
    out += [hit(n, n, ("+noedns",)) for n in rng.sample(names, 10)]
    out += [hit(n, n, ("+tcp",)) for n in rng.sample(names, 5)]
    out += [hit(n, _mixed_case(n, rng)) for n in rng.sample(names, 3)]
    out += [
        Case(n, "AAAA", opts, "NOERROR", frozenset(), True)
        for n, opts in zip(rng.sample(names, 10), [()] * 8 + [("+noedns",), ("+tcp",)],
                           strict=True)
    ]
    out += [
        Case(n, "A", opts, "NXDOMAIN", frozenset(), True)
        for n, opts in zip(rng.sample(list(ds.nx_names), 10),
                           [()] * 8 + [("+noedns",), ("+tcp",)], strict=True)
    ]
    return out


def _mixed_case(name: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c for c in name)


def dig(port: int, case: Case) -> Reply:
    cmd = [
        "dig", "@127.0.0.1", "-p", str(port), case.qname, case.qtype,
        "+tries=1", "+time=3", "+noall", "+comments", "+answer", "+authority", *case.options,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
    text = proc.stdout
    rcode = m.group(1) if (m := _STATUS.search(text)) else None
    flags = set(m.group(1).split()) if (m := _FLAGS.search(text)) else set()
    answer: set[tuple[str, str, str]] = set()
    authority: set[str] = set()
    section = None
    for line in text.splitlines():
        if line.startswith(";; ANSWER SECTION"):
            section = "answer"
        elif line.startswith(";; AUTHORITY SECTION"):
            section = "authority"
        elif line.startswith(";") or not line.strip():
            if line.startswith(";; ") and "SECTION" in line:
                section = None
            continue
        else:
            parts = line.split(None, 4)
            if len(parts) == 5 and section == "answer":
                answer.add((parts[0].rstrip(".").lower(), parts[3], parts[4].strip()))
            elif len(parts) == 5 and section == "authority":
                authority.add(parts[3])
    edns = "OPT PSEUDOSECTION" in text
    return Reply(rcode, flags, edns, answer, authority, text + proc.stderr)


def check_server(
    name: str, port: int, ds: Dataset, *, negative_soa: bool, authoritative: bool
) -> list[str]:
    """Run every case against the server; return the problems found (empty: correct)."""
    todo = cases(ds)
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda c: dig(port, c), todo))
    problems = []
    for case, reply in zip(todo, replies, strict=True):
        why = []
        if reply.rcode != case.rcode:
            why.append(f"rcode {reply.rcode}, expected {case.rcode}")
        if reply.answer != set(case.answer):
            why.append(
                f"answer {sorted(reply.answer)}, expected {sorted(case.answer)}"
            )
        if case.negative and negative_soa and "SOA" not in reply.authority_types:
            why.append("no SOA in the authority section of a negative answer (RFC 2308)")
        if authoritative and reply.rcode is not None and "aa" not in reply.flags:
            why.append("AA bit not set")
        if "tc" in reply.flags:
            why.append("TC bit set on a small answer")
        want_edns = "+noedns" not in case.options
        if reply.rcode is not None and reply.edns != want_edns:
            why.append("no OPT record in the reply to an EDNS query" if want_edns
                       else "OPT record in the reply to a query without EDNS")
        if why:
            problems.append(f"{name}: `dig {case.describe()}`: " + "; ".join(why)
                            + "\n" + _indent(reply.raw))
    return problems


def _indent(text: str) -> str:
    return "\n".join("      " + line for line in text.strip().splitlines()[:20])


def check_order(name: str, port: int, ds: Dataset, *, queries: int = 6) -> list[str]:
    """globaldns only: the two local endpoints lead, the remote one is last, and the local
    tier rotates from query to query (the behaviour that must survive any fast path)."""
    qname = ds.names[0]
    local, remote = set(ds.addresses[qname][:2]), ds.addresses[qname][2]
    orders = []
    for _ in range(queries):
        proc = subprocess.run(
            ["dig", "@127.0.0.1", "-p", str(port), qname, "A", "+short", "+tries=1", "+time=3"],
            capture_output=True, text=True, timeout=15,
        )
        orders.append(tuple(proc.stdout.split()))
    problems = []
    if any(o[-1:] != (remote,) or set(o[:2]) != local for o in orders):
        problems.append(f"{name}: `dig {qname} A` is not ordered by locality (the two "
                        f"us-central1-a addresses first, {remote} last): {orders}")
    if len({o[0] for o in orders if o}) < 2:
        problems.append(f"{name}: `dig {qname} A` {queries} times: the first tier never "
                        f"rotates: {orders}")
    return problems
