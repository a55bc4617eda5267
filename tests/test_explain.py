"""`globaldns explain` tells why an answer is what it is, and agrees with the server."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers.cli import explain, run_explain
from tests.helpers.configs import DISTRIBUTE, VIEWS, WEIGHTS
from tests.helpers.dns import addresses, ask
from tests.helpers.k8s import FastTime, dns_eventually, timing_for, web, yaml_for
from tests.helpers.server import GLOBALDNS, free_port


def test_explain_shows_rule_locality_endpoints_and_answer(tmp_path):
    out = run_explain(tmp_path, DISTRIBUTE, "order-service.production.global",
                      "--client", "127.0.0.40")
    assert out.returncode == 0, out.stderr
    text = out.stdout.splitlines()
    assert text[0] == f"source config {tmp_path / 'c.yaml'} (static services only)"
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
    assert "not in a served zone" in out.stdout and out.returncode == 0
    out = run_explain(tmp_path, WEIGHTS, "nope.production.global")
    assert "result NXDOMAIN: no such service" in out.stdout
    assert out.returncode == 1  # NXDOMAIN, as `host` and `grep` say "not found"


def test_the_client_must_be_an_ip_address(tmp_path):
    out = run_explain(tmp_path, WEIGHTS, "payment-service.production.global",
                      "--client", "laptop.example")
    assert out.returncode == 2 and out.stdout == ""
    assert "argument --client: 'laptop.example' is not an IP address" in out.stderr


async def test_explain_asks_a_running_server_for_a_watched_service(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime) -> None:
    [a] = await emulators("a")
    web(a, "10.1.0.1", "10.1.0.2")
    yaml = yaml_for([a], tmp_path)
    server = server_factory(yaml, k8s_timing=timing_for(fast))
    await dns_eventually(server.port, "web.prod.global", ("NOERROR", ["10.1.0.1", "10.1.0.2"]))
    url = f"http://127.0.0.1:{server.app.http.port}"
    # A blocking process: in a thread, so the emulator on this loop keeps serving.
    out = await asyncio.to_thread(explain, "web.prod.global", "--server", url)
    assert out.returncode == 0, out.stderr
    text = out.stdout.splitlines()
    assert text[0] == f"source server {url} (its live registry)"
    assert [line.split()[1] for line in text if line.startswith("endpoint ")] == [
        "10.1.0.1", "10.1.0.2"]
    report = json.loads((await asyncio.to_thread(
        explain, "web.prod.global", "--server", url, "--json", "--client", "10.9.9.9")).stdout)
    assert report["source"] == f"server {url} (its live registry)"
    assert report["client"] == "10.9.9.9" and report["answer"] == "NOERROR"
    # The config alone does not know the watched service, and says where to ask instead.
    path = tmp_path / "c.yaml"
    path.write_text(yaml)
    out = await asyncio.to_thread(explain, "web.prod.global", "--config", str(path))
    assert out.returncode == 1 and "result NXDOMAIN: no such service" in out.stdout
    assert "note clusters a are watched, and their services are not in the config: ask a " \
        "running server with --server URL" in out.stdout


def test_explain_says_why_it_cannot_ask_a_server(server_factory):
    out = explain("web.prod.global", "--server", f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("globaldns: http://127.0.0.1:")
    assert "cannot ask it" in out.stderr
    out = explain("web.prod.global", "--server", "127.0.0.1:9153")
    assert out.returncode == 2
    assert "is not an http:// or https:// URL" in out.stderr
    # A client outside acl.allow_debug: the server says no, and the tool says why.
    server = server_factory("acl: {allow_debug: [10.0.0.0/8]}\n")
    out = explain("web.prod.global", "--server", f"http://127.0.0.1:{server.app.http.port}")
    assert out.returncode == 2
    assert "HTTP 403 (acl.allow_debug decides who may)" in out.stderr


def test_help_describes_the_program():
    out = subprocess.run([*GLOBALDNS, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert "A DNS resolver for multi-cluster Kubernetes" in out.stdout
    assert "flags → config → app" not in out.stdout
    assert "globaldns explain user-service.production.global" in out.stdout
