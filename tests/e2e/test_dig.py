"""The core cases as an engineer sees them: through the real `dig`, like dig output."""

from __future__ import annotations

import re

import pytest

from tests.helpers.dns import dig

CASES = [
    # (dig arguments, status, answer lines (owner, type, data) or None for "no answer")
    (["user-service.production.global"], "NOERROR",
     {("user-service.production.global.", "A", "10.1.0.11"),
      ("user-service.production.global.", "A", "10.1.0.12"),
      ("user-service.production.global.", "A", "10.2.0.21")}),
    (["user-service.production.global", "AAAA", "+tcp"], "NOERROR",
     {("user-service.production.global.", "AAAA", "fd00::21")}),
    (["10-2-0-21.remote.user-service.production.global"], "NOERROR",
     {("10-2-0-21.remote.user-service.production.global.", "A", "10.2.0.21")}),
    (["missing.production.global"], "NXDOMAIN", None),
    (["production.global"], "NOERROR", None),
    (["global", "NS"], "NOERROR", {("global.", "NS", "ns.global.")}),
    (["example.org"], "REFUSED", None),
]


def answers(out: str) -> set[tuple[str, str, str]]:
    section = out.split(";; ANSWER SECTION:\n")[1].split("\n\n")[0] if "ANSWER SECTION" in out \
        else ""
    rows = set()
    for line in section.splitlines():
        owner, _ttl, _cls, rtype, data = re.split(r"\s+", line, maxsplit=4)
        rows.add((owner, rtype, data))
    return rows


@pytest.mark.parametrize(("args", "status", "expected"), CASES)
def test_dig(example, args, status, expected):
    out = dig(example.port, *args)
    assert f"status: {status}" in out
    if status != "REFUSED":
        assert re.search(r"flags: qr aa", out), out
    assert answers(out) == (expected or set())
    if expected is None and status != "REFUSED":
        assert re.search(r"AUTHORITY SECTION:\nglobal\.\s+5\s+IN\s+SOA\s+ns\.global\.", out)


def test_dig_case_echo_and_nsid(example):
    out = dig(example.port, "User-Service.PRODUCTION.global", "+nsid")
    assert re.search(r";User-Service\.PRODUCTION\.global\.\s+IN\s+A", out)
    assert "; NSID:" in out


def test_dig_tc_then_tcp_retry_gets_everything(server_factory):
    endpoints = "\n".join(f"      - {{address: 10.9.0.{i + 1}, cluster: c}}" for i in range(60))
    s = server_factory(f"""
clusters: [{{name: c}}]
services:
  - name: big
    namespace: ns
    endpoints:
{endpoints}
""")
    out = dig(s.port, "big.ns.global", "+noedns", "+ignore")
    assert re.search(r"flags: qr aa tc", out)
    out = dig(s.port, "big.ns.global", "+noedns")  # dig retries over TCP on TC
    assert "(TCP)" in out and len(answers(out)) == 60
