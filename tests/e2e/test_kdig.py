"""Through knot's `kdig`: a second real client, and one that sends EDNS Client Subnet the
way CoreDNS's `rewrite edns0 subnet` does."""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.helpers.configs import DISTRIBUTE


def kdig(port: int, *args: str) -> str:
    assert shutil.which("kdig"), "kdig is not installed (apt-get install knot-dnsutils)"
    out = subprocess.run(["kdig", "@127.0.0.1", "-p", str(port), "+time=2", "+retry=0", *args],
                         capture_output=True, text=True, timeout=20)
    return out.stdout


def addresses(out: str) -> list[str]:
    return re.findall(r"\sIN\s+A\s+(\S+)", out.split(";; ANSWER SECTION:")[-1])


def test_kdig_over_udp_and_tcp(example):
    for transport in ("+notcp", "+tcp"):
        out = kdig(example.port, "user-service.production.global", transport)
        assert "status: NOERROR" in out
        assert sorted(addresses(out)) == ["10.1.0.11", "10.1.0.12", "10.2.0.21"]
        assert re.search(r"Flags: qr aa", out)


def test_kdig_with_a_client_subnet_is_routed_by_it(server_factory):
    s = server_factory(DISTRIBUTE)
    # 10.8.0.0/14 is us-west1 in client_localities: the us-west1 endpoints lead.
    out = kdig(s.port, "order-service.production.global", "+subnet=10.9.1.0/24")
    assert set(addresses(out)[:2]) == {"10.2.0.1", "10.2.0.2"}, out
    assert re.search(r"CLIENT-SUBNET: 10\.9\.1\.0/24/14", out), out


def test_kdig_nxdomain_carries_the_soa(example):
    out = kdig(example.port, "nope.production.global")
    assert "status: NXDOMAIN" in out
    assert re.search(r"global\.\s+5\s+IN\s+SOA\s+ns\.global\.", out), out
