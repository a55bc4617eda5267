"""deploy/monitoring: the alerting rules pass promtool and its unit tests, which make every
alert fire; each alert has a standard severity and a runbook that exists; every metric that
the rules and the dashboard use is exposed by a running server; the monitors select what
deploy/kubernetes renders."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.data import ROOT
from tests.helpers.deploy import headings_anchors, one, render
from tests.helpers.http import get

MONITORING = ROOT / "deploy" / "monitoring"
RULES = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
ALERTS = [r for group in RULES["groups"] for r in group["rules"] if "alert" in r]
DASHBOARD = json.loads((MONITORING / "dashboard.json").read_text())
EXPRESSIONS = [r["expr"] for r in ALERTS] + [
    t["expr"] for p in DASHBOARD["panels"] for t in p["targets"]]


def promtool(*args: str, cwd: Path) -> str:
    assert shutil.which("promtool"), "promtool is not installed (apt-get install prometheus)"
    result = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_rules_pass_promtool() -> None:
    out = promtool("check", "rules", "alerts.yaml", cwd=MONITORING)
    assert f"SUCCESS: {len(ALERTS)} rules found" in out


def test_the_rule_tests_pass_and_make_every_alert_fire() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yaml", cwd=MONITORING)
    cases = yaml.safe_load((MONITORING / "alerts.test.yaml").read_text())["tests"]
    fired = {t["alertname"] for case in cases for t in case["alert_rule_test"]
             if t["exp_alerts"]}
    quiet = {t["alertname"] for case in cases for t in case["alert_rule_test"]
             if not t["exp_alerts"]}
    names = {r["alert"] for r in ALERTS}
    assert fired == names
    # Each alert is also shown not to fire too early (or below its guard).
    assert quiet == names - {"GlobalDnsOverloaded"}


def test_the_rule_tests_can_fail(tmp_path: Path) -> None:
    """Without its traffic guard the SERVFAIL alert also fires for the quiet pod, and the
    unit tests catch it."""
    text = (MONITORING / "alerts.yaml").read_text()
    guard = re.search(r"\n\s*and sum by \(namespace, pod\).*> 1\n", text)
    assert guard
    (tmp_path / "alerts.yaml").write_text(text.replace(guard.group(0), "\n"))
    shutil.copy(MONITORING / "alerts.test.yaml", tmp_path)
    result = subprocess.run(["promtool", "test", "rules", "alerts.test.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "GlobalDnsServfailRatio" in result.stdout + result.stderr




def test_every_alert_has_a_severity_and_a_runbook_that_exists() -> None:
    anchors = headings_anchors((ROOT / "docs" / "operations.md").read_text())
    for rule in ALERTS:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == "docs/operations.md" and anchor in anchors, rule["alert"]
        assert anchor == rule["alert"].lower()


def test_the_prometheusrule_carries_the_same_rules() -> None:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == RULES


def test_the_stale_alert_fires_before_stale_for_drops_the_endpoints() -> None:
    from globaldns.config.model import ClusterConfig

    [stale] = [r for r in ALERTS if r["alert"] == "GlobalDnsClusterStale"]
    minutes = int(stale["for"].rstrip("m"))
    # `for` plus one evaluation and one scrape interval (1m each at most) before stale_for.
    assert (minutes + 2) * 60 < ClusterConfig("x").stale_for


def exposed_names(server_factory: Any, tmp_path: Path) -> set[str]:
    """Every sample name of /metrics with every part configured: a watched cluster (at an
    address where nothing listens), remote Secrets, forwarding (with its cache)."""
    kubeconfig = tmp_path / "dead.kubeconfig"
    kubeconfig.write_text("""apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
""")
    server = server_factory(f"""
clusters:
  - {{name: east, locality: r1}}
  - {{name: watched, kubeconfig: {kubeconfig}}}
remote_secrets: {{cluster: watched}}
services:
  - {{name: api, namespace: prod, endpoints: [{{address: 10.0.0.1, cluster: east}}]}}
forward: [{{zone: example.test, upstreams: ['127.0.0.1:9']}}]
""")
    status, _, text = get(server, "/metrics")
    assert status == 200
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names |= {name, f"{name}_total"} if kind == "counter" else {name}
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_every_metric_the_rules_and_the_dashboard_use_is_exposed(server_factory: Any,
                                                                 tmp_path: Path) -> None:
    used = {n for e in EXPRESSIONS for n in re.findall(r"\bglobaldns_[a-z0-9_]+", e)}
    assert len(used) > 15
    missing = used - exposed_names(server_factory, tmp_path)
    assert not missing, missing


def test_the_dashboard_shows_what_an_operator_needs() -> None:
    panels = DASHBOARD["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert DASHBOARD["uid"] == "globaldns"
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'job="globaldns"' in target["expr"], panel["title"]
    text = " ".join(EXPRESSIONS[len(ALERTS):])
    for metric in ("globaldns_dns_responses_total",            # queries/s by rcode
                   "globaldns_dns_request_duration_seconds_bucket",  # latency heatmap
                   "globaldns_k8s_last_sync_timestamp_seconds",  # freshness
                   "globaldns_k8s_cluster_state",              # sync state
                   "globaldns_registry_endpoints",             # endpoints per cluster
                   "globaldns_forward_upstream_healthy",       # upstream health
                   "globaldns_cache_hits_total",               # cache hit ratio
                   "globaldns_config_reloads_total"):          # reloads
        assert metric in text, metric
    assert any(p["type"] == "heatmap" for p in panels)


def test_the_monitors_select_the_metrics_service_and_the_pods() -> None:
    docs = render("primary")
    service = one(docs, "Service", "globaldns-metrics")
    deployment = one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    monitor = yaml.safe_load((MONITORING / "servicemonitor.yaml").read_text())
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [
        service["metadata"]["namespace"]]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    # The other Service (DNS) is not scraped.
    dns = one(docs, "Service", "globaldns")
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= \
        dns["metadata"]["labels"].items()
    podmonitor = yaml.safe_load((MONITORING / "podmonitor.yaml").read_text())
    assert podmonitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    [endpoint] = podmonitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in {p["name"] for p in container["ports"]}
    # jobLabel → job="globaldns", which every rule and panel selects.
    for m in (monitor, podmonitor):
        assert pod_labels[m["spec"]["jobLabel"]] == "globaldns"
        assert service["metadata"]["labels"][m["spec"]["jobLabel"]] == "globaldns"


def test_the_scrape_config_names_the_job_the_rules_select() -> None:
    scrape = yaml.safe_load((MONITORING / "prometheus.yaml").read_text())
    assert scrape["rule_files"] == ["alerts.yaml"]
    [job] = scrape["scrape_configs"]
    assert job["job_name"] == "globaldns"
    keep = {tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"]
            if r.get("action") == "keep"}
    assert keep[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)] == "globaldns"
    assert keep[("__meta_kubernetes_pod_container_port_name",)] == "metrics"
