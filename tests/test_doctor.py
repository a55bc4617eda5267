"""`globaldns doctor` against sample Corefiles and a real globaldns on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from globaldns.cli import main
from globaldns.doctor import parse_corefile
from tests.conftest import ROOT, Running, free_port

CONFIG = """
zones: [{name: global, ttl: 5, negative_ttl: 5}]
clusters: [{name: east, locality: r1}]
services:
  - name: api
    namespace: prod
    endpoints: [{address: 10.0.0.1, cluster: east}]
"""
CLIENT_AWARE = CONFIG + "client_localities: [{cidr: 10.8.0.0/14, locality: r1/z1}]\n"

GOOD = """
# The cluster's CoreDNS.
global:53 {{
    errors
    forward . {server}
}}
.:53 {{
    kubernetes cluster.local in-addr.arpa ip6.arpa
    forward . /etc/resolv.conf
    cache 30
}}
"""

# NodeLocal DNSCache as the add-on ships it: `.` goes to the node's resolvers.
NODELOCAL = """
cluster.local:53 {
    errors
    cache {
        success 9984 30
        denial 9984 5
    }
    bind 169.254.20.10
    forward . __PILLAR__CLUSTER__DNS__ {
        force_tcp
    }
}
.:53 {
    errors
    cache 30
    bind 169.254.20.10
    forward . __PILLAR__UPSTREAM__SERVERS__
}
"""


def doctor(tmp_path: Path, corefile: str, config: str, *args: str,
           capsys: Any) -> tuple[int, str]:
    (tmp_path / "Corefile").write_text(corefile)
    (tmp_path / "gd.yaml").write_text(config)
    code = main(["doctor", "--corefile", str(tmp_path / "Corefile"), "--config",
                 str(tmp_path / "gd.yaml"), "--timeout", "1", *args])
    return code, capsys.readouterr().out


def served(server_factory: Any, config: str) -> tuple[Running, str]:
    server: Running = server_factory(config)
    address = f"127.0.0.1:{server.port}"
    return server, f"dns: {{listen: {address}}}\n" + config


def test_a_good_setup_passes_every_check_and_probe(server_factory: Any, tmp_path: Path,
                                                   capsys: Any) -> None:
    server, config = served(server_factory, CONFIG)
    code, out = doctor(tmp_path, GOOD.format(server=f"127.0.0.1:{server.port}"), config,
                       capsys=capsys)
    assert code == 0, out
    assert "PROBLEM" not in out and out.rstrip().endswith("no problems found")
    assert "`. NS` health probe (UDP, RD, no EDNS): REFUSED" in out
    assert "`global SOA` over UDP (EDNS 1232): NOERROR, 1 record(s), AA" in out
    assert "`global SOA` over TCP: NOERROR, 1 record(s), AA" in out
    # A name of a service, as a pod would ask it.
    code, out = doctor(tmp_path, GOOD.format(server=f"127.0.0.1:{server.port}"), config,
                       "--name", "api.prod.global", capsys=capsys)
    assert code == 0 and "`api.prod.global A` over TCP: NOERROR, 1 record(s), AA" in out


def test_client_aware_routing_needs_ecs_and_no_shared_cache(server_factory: Any,
                                                             tmp_path: Path,
                                                             capsys: Any) -> None:
    server, config = served(server_factory, CLIENT_AWARE)
    corefile = f"""global:53 {{
    forward . 127.0.0.1:{server.port}
    cache 5
}}
"""
    code, out = doctor(tmp_path, corefile, config, capsys=capsys)
    assert code == 1
    assert "PROBLEM  `cache` (line 3) is shared by every client and does not key on ECS" in out
    assert "fix: remove `cache` from the `global` block" in out
    assert "does not pass the client's address on: globaldns sees only CoreDNS's address" in out
    assert "fix: add `rewrite edns0 subnet set 32 128` to the `global` block" in out
    assert "`global SOA` over UDP (EDNS 1232, ECS)" in out
    assert out.rstrip().endswith("2 problem(s) found")
    fixed = f"""global:53 {{
    rewrite edns0 subnet set 32 128
    forward . 127.0.0.1:{server.port}
}}
"""
    code, out = doctor(tmp_path, fixed, config, capsys=capsys)
    assert code == 0, out
    assert "ECS stamped: `rewrite edns0 subnet set 32 128` (line 2)" in out


def test_wrong_targets_missing_blocks_and_a_late_cache(server_factory: Any, tmp_path: Path,
                                                       capsys: Any) -> None:
    server, config = served(server_factory, CONFIG)
    ours = f"127.0.0.1:{server.port}"
    code, out = doctor(tmp_path, f"global {{\n  forward . {ours} 10.0.0.9\n}}\n", config,
                       capsys=capsys)
    assert code == 1
    assert f"sends `global` to 10.0.0.9:53, not to globaldns at {ours} (CoreDNS spreads " \
        "queries over every upstream)" in out
    code, out = doctor(tmp_path, ".:53 {\n  forward . /etc/resolv.conf\n}\n", config,
                       capsys=capsys)
    assert "no server block for `global`; its names go to the `.` block (line 1), which " \
        "forwards to /etc/resolv.conf" in out
    assert f"fix: add `global:53 {{ forward . {ours} }}`" in out
    late = f"""dns://global.:53 {{
    forward . dns://{ours}
    cache 30 {{
        success 9984 30 10
        denial 9984 30 60
    }}
}}
"""
    code, out = doctor(tmp_path, late, config, capsys=capsys)
    assert "keeps answers at least 10s, longer than our ttl 5s" in out
    assert "keeps negative answers at least 60s, longer than our negative_ttl 5s" in out
    assert "forwards to globaldns" in out


def test_nodelocal_must_send_global_to_the_cluster_dns_and_stamp_ecs(
        server_factory: Any, tmp_path: Path, capsys: Any) -> None:
    server, config = served(server_factory, CLIENT_AWARE)
    ours = f"127.0.0.1:{server.port}"
    coredns = f"global:53 {{\n    rewrite edns0 subnet set 32 128\n    forward . {ours}\n}}\n"
    (tmp_path / "nodelocal").write_text(NODELOCAL)
    code, out = doctor(tmp_path, coredns, config, "--nodelocal", str(tmp_path / "nodelocal"),
                       capsys=capsys)
    assert code == 1
    assert "NodeLocal DNSCache: " in out
    assert "no server block for `global`; its names go to the `.` block (line 13), which " \
        "forwards to __PILLAR__UPSTREAM__SERVERS__" in out
    assert "overwrites the client subnet that NodeLocal DNSCache stamped" in out
    assert "fix: `rewrite edns0 subnet append 32 128` (or no rewrite here)" in out

    (tmp_path / "nodelocal").write_text(NODELOCAL + """global:53 {
    rewrite edns0 subnet set 32 128
    cache {
        success 9984 30 5
    }
    forward . __PILLAR__CLUSTER__DNS__ {
        force_tcp
    }
}
""")
    coredns = f"global:53 {{\n    rewrite edns0 subnet append 32 128\n    forward . {ours}\n}}\n"
    code, out = doctor(tmp_path, coredns, config, "--nodelocal", str(tmp_path / "nodelocal"),
                       capsys=capsys)
    assert code == 0, out
    assert "to the cluster DNS, which forwards to globaldns" in out
    assert "is per node: fine for locality routing" in out


def test_an_unreachable_globaldns_fails_the_probes(tmp_path: Path, capsys: Any) -> None:
    ours = f"127.0.0.1:{free_port()}"  # nobody listens there
    code, out = doctor(tmp_path, f"global:53 {{\n  forward . {ours}\n}}\n",
                       f"dns: {{listen: {ours}}}\n" + CONFIG, capsys=capsys)
    assert code == 1
    assert "`. NS` health probe (UDP, RD, no EDNS): no answer from" in out
    assert "fix: is globaldns running and reachable from here? (`--server`)" in out


def test_the_deploy_corefile_forwards_global_to_the_globaldns_service(
        server_factory: Any, tmp_path: Path, capsys: Any) -> None:
    server, config = served(server_factory, CONFIG)
    code, out = doctor(tmp_path, (ROOT / "deploy" / "coredns" / "Corefile").read_text(),
                       config, "--server", "10.96.0.53:53", "--probe",
                       f"127.0.0.1:{server.port}", capsys=capsys)
    assert code == 0, out


def test_corefile_parsing() -> None:
    blocks = parse_corefile("""
(common) {
    errors
    log
}
global:53 dns://other.zone.:5353 {   # two zones
    import common
    forward . 10.0.0.1 {
        max_fails 3
        health_check 1s
    }
    cache {
        success 9984 30 "5"
    }
}
""")
    (block,) = blocks
    assert block.zones == ["global", "other.zone"]
    assert [d.name for d in block.directives] == ["errors", "log", "forward", "cache"]
    forward = block.get("forward")[0]
    assert forward.args == [".", "10.0.0.1"] and forward.sub("max_fails")[0].args == ["3"]
    assert block.get("cache")[0].sub("success")[0].args == ["9984", "30", "5"]


def test_a_broken_corefile_is_reported(tmp_path: Path, capsys: Any) -> None:
    code, out = doctor(tmp_path, "global:53 {\n  forward . 10.0.0.1\n", CONFIG, capsys=capsys)
    assert code == 1 and "a '{' is never closed" in out


@pytest.mark.parametrize("argv", [["doctor"], ["doctor", "--corefile"]])
def test_the_corefile_is_required(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        main(argv)
