"""`globaldns doctor` against sample Corefiles and a real globaldns on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from globaldns.cli import main
from globaldns.tools.doctor import parse_corefile
from tests.helpers.data import ROOT
from tests.helpers.server import Running, free_port

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


# --- the shipped snippets (deploy/coredns) ------------------------------------------------

COREDNS = ROOT / "deploy" / "coredns"
SERVICE_IP = "10.96.0.53:53"  # deploy/kubernetes/overlays/*/params.yaml (checked below)


def shipped(server_factory: Any, tmp_path: Path, capsys: Any, corefile: str, *,
            aware: bool, nodelocal: str | None = None) -> tuple[int, str]:
    """doctor on shipped text, with globaldns's config, as the Corefile names it (the
    Service's clusterIP), probed on loopback."""
    server, config = served(server_factory, CLIENT_AWARE if aware else CONFIG)
    args = ["--server", SERVICE_IP, "--probe", f"127.0.0.1:{server.port}"]
    if nodelocal is not None:
        (tmp_path / "nodelocal").write_text(nodelocal)
        args += ["--nodelocal", str(tmp_path / "nodelocal")]
    return doctor(tmp_path, corefile, config, *args, capsys=capsys)


def helm_corefile(values: dict[str, Any]) -> str:
    """The Corefile the coredns Helm chart renders from `servers` (its
    templates/configmap.yaml: `zone:port {`, then `name parameters` and `configBlock`)."""
    out = []
    for server in values["servers"]:
        keys = " ".join(f"{z.get('scheme', '')}{z['zone']}:{server['port']}"
                        for z in server["zones"])
        out.append(keys + " {")
        for plugin in server["plugins"]:
            line = f"    {plugin['name']} {plugin.get('parameters', '')}".rstrip()
            if "configBlock" in plugin:
                block = "\n".join(f"        {x}" for x in plugin["configBlock"].splitlines())
                line += " {\n" + block + "\n    }"
            out.append(line)
        out.append("}")
    return "\n".join(out) + "\n"


@pytest.mark.parametrize(("corefile", "aware", "nodelocal"), [
    ("global.Corefile", False, None),
    ("global-ecs.Corefile", True, None),
    ("global.Corefile", False, "nodelocal.Corefile"),
    ("global-behind-nodelocal-ecs.Corefile", True, "nodelocal-ecs.Corefile"),
])
def test_each_shipped_corefile_passes_doctor(server_factory: Any, tmp_path: Path,
                                             capsys: Any, corefile: str, aware: bool,
                                             nodelocal: str | None) -> None:
    code, out = shipped(server_factory, tmp_path, capsys, (COREDNS / corefile).read_text(),
                        aware=aware, nodelocal=nodelocal and (COREDNS / nodelocal).read_text())
    assert code == 0, out
    assert "forwards to globaldns" in out and out.rstrip().endswith("no problems found")


@pytest.mark.parametrize("overlay", ["primary", "remote", "istio", "mcs"])
def test_the_overlays_configs_pass_doctor_with_the_shipped_blocks(
        server_factory: Any, tmp_path: Path, capsys: Any, overlay: str) -> None:
    """doctor with each overlay's own config (its zones and TTLs), as in a cluster; the
    probes go to a globaldns on loopback that serves `global`."""
    overlays = ROOT / "deploy" / "kubernetes" / "overlays"
    config = overlays / overlay / "config.yaml"
    if not config.exists():  # istio: primary's config
        config = overlays / "primary" / "config.yaml"
    server = server_factory(CONFIG)
    corefile = (COREDNS / "global.Corefile").read_text()
    if "name: clusterset.local" in config.read_text():
        corefile += (COREDNS / "clusterset.Corefile").read_text()
    (tmp_path / "Corefile").write_text(corefile)
    code = main(["doctor", "--corefile", str(tmp_path / "Corefile"), "--config", str(config),
                 "--server", SERVICE_IP, "--probe", f"127.0.0.1:{server.port}",
                 "--timeout", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("forwards to globaldns") == (2 if overlay == "mcs" else 1), out


def test_the_plain_block_is_wrong_for_client_aware_routing(server_factory: Any,
                                                           tmp_path: Path,
                                                           capsys: Any) -> None:
    """Why global-ecs.Corefile exists: the cached, unstamped block fails doctor there."""
    code, out = shipped(server_factory, tmp_path, capsys,
                        (COREDNS / "global.Corefile").read_text(), aware=True)
    assert code == 1
    assert "is shared by every client and does not key on ECS" in out
    assert "does not pass the client's address on" in out


def test_the_helm_values_and_the_aks_configmap_pass_doctor(server_factory: Any,
                                                          tmp_path: Path,
                                                          capsys: Any) -> None:
    values = yaml.safe_load((COREDNS / "helm-values.yaml").read_text())
    rendered = helm_corefile(values)
    assert rendered.startswith("global.:53 {")
    code, out = shipped(server_factory, tmp_path, capsys, rendered, aware=False)
    assert code == 0, rendered + out
    aks = yaml.safe_load((COREDNS / "aks-coredns-custom.yaml").read_text())
    assert aks["metadata"] == {"name": "coredns-custom", "namespace": "kube-system"}
    code, out = shipped(server_factory, tmp_path, capsys, aks["data"]["global.server"],
                        aware=False)
    assert code == 0, out


def test_the_snippets_name_the_service_address_the_overlays_set() -> None:
    for params in (ROOT / "deploy" / "kubernetes" / "overlays").glob("*/params.yaml"):
        ip = yaml.safe_load(params.read_text())["data"]["clusterIP"]
        assert f"{ip}:53" == SERVICE_IP, params
    gke = yaml.safe_load((COREDNS / "gke-kube-dns.yaml").read_text())
    assert json.loads(gke["data"]["stubDomains"]) == {"global": [SERVICE_IP.split(":")[0]]}
    for path in COREDNS.iterdir():
        if path.suffix in (".Corefile", ".yaml") and "nodelocal" not in path.name:
            assert SERVICE_IP.split(":")[0] in path.read_text(), path
