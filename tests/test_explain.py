"""`globaldns explain` tells why an answer is what it is, and agrees with the server."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers.configs import DISTRIBUTE, VIEWS, WEIGHTS
from tests.helpers.dns import addresses, ask

GLOBALDNS = [sys.executable, "-m", "globaldns"]


def run_explain(tmp_path, config: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "c.yaml"
    path.write_text(config)
    return subprocess.run([*GLOBALDNS, "explain", *args, "--config", str(path)],
                          capture_output=True, text=True, timeout=20)


def test_explain_shows_rule_locality_endpoints_and_answer(tmp_path):
    out = run_explain(tmp_path, DISTRIBUTE, "order-service.production.global",
                      "--client", "127.0.0.40")
    assert out.returncode == 0, out.stderr
    text = out.stdout.splitlines()
    assert "client locality us-east1/us-east1-b from client_localities" in text
    assert "rule order-service.production" in text
    assert any(line.startswith("endpoint 10.3.0.1 cluster east locality us-east1/us-east1-b "
                               "not ready") and line.endswith("not answered") for line in text)
    assert "note failover: no healthy endpoint in us-east1; answering from us-west1" in text
    assert text[-1] == "result NOERROR"


def test_explain_json_agrees_with_the_dns_answer(tmp_path, server_factory):
    out = run_explain(tmp_path, VIEWS, "catalog-service.production.global", "--ecs",
                      "10.20.1.0/24", "--json")
    report = json.loads(out.stdout)
    assert report["locality_from"] == "ecs"
    [group] = report["groups"]
    s = server_factory(VIEWS)
    from tests.helpers.dns import ecs
    answer = addresses(ask(s.port, "catalog-service.production.global", edns=1232,
                           options=[ecs("10.20.1.0/24")]))
    assert sorted(answer) == sorted(group["first_answer"]) == ["10.6.0.1", "10.6.0.2"]


def test_explain_weights(tmp_path):
    out = run_explain(tmp_path, WEIGHTS, "payment-service.production.global", "--json")
    report = json.loads(out.stdout)
    leads = {e["address"]: e["leads"] for e in report["endpoints"]}
    assert leads == {"10.1.0.1": "70% (shared)", "10.1.0.2": "70% (shared)",
                     "10.2.0.1": "30%"}


def test_explain_outside_the_zones_and_unknown_names(tmp_path):
    out = run_explain(tmp_path, WEIGHTS, "www.example.com")
    assert "not in a served zone" in out.stdout
    out = run_explain(tmp_path, WEIGHTS, "nope.production.global")
    assert "result NXDOMAIN: no such service" in out.stdout
