"""The deploy/ manifests parse, and the config they carry is valid."""

from __future__ import annotations

import yaml

from globaldns.config import parse_text
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"


def test_every_kubernetes_manifest_parses_with_kind_and_name():
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], path


def test_the_configmap_carries_a_valid_config():
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "globaldns.yaml").read_text()))
    [configmap] = [d for d in docs if d["kind"] == "ConfigMap"]
    config = parse_text(configmap["data"]["config.yaml"], "deploy ConfigMap")
    assert config.remote_secrets is not None
    assert any(c.in_cluster for c in config.clusters)
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    ports = {p["containerPort"] for p in container["ports"]}
    assert ports == {config.dns.listen.port, 9153}


def test_the_corefile_forwards_the_global_stub_domain():
    text = (DEPLOY / "coredns" / "Corefile").read_text()
    block = text.split("global:53 {")[1].split("}")[0]
    assert "forward . " in block and "rewrite edns0 subnet set 32 128" in block
