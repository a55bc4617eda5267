"""deploy/monitoring: the alerting rules pass promtool, fire when they should, and name
only metrics globaldns exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.conftest import ROOT

MONITORING = ROOT / "deploy" / "monitoring"


def promtool(*args: str, cwd: Path) -> str:
    assert shutil.which("promtool"), "promtool is not installed (apt-get install prometheus)"
    result = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_rules_pass_promtool() -> None:
    assert "SUCCESS: 7 rules found" in promtool("check", "rules", "alerts.yaml",
                                                cwd=MONITORING)


def test_the_rules_fire_when_they_should(tmp_path: Path) -> None:
    (tmp_path / "alerts.yaml").write_text((MONITORING / "alerts.yaml").read_text())
    (tmp_path / "test.yaml").write_text("""
rule_files: [alerts.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'globaldns_ready{pod="gd-0"}'
        values: '1 0x10'
      - series: 'globaldns_dns_responses_total{pod="gd-0",rcode="NOERROR"}'
        values: '0+100x20'
      - series: 'globaldns_dns_responses_total{pod="gd-0",rcode="SERVFAIL"}'
        values: '0+5x20'
      - series: 'globaldns_config_last_reload_successful{pod="gd-0"}'
        values: '1 1 0 0 0'
      - series: 'globaldns_k8s_cluster_state{pod="gd-0",cluster="east",state="stale"}'
        values: '0 0 1x10'
    alert_rule_test:
      - {eval_time: 4m, alertname: GlobalDnsNotReady, exp_alerts: []}
      - eval_time: 7m
        alertname: GlobalDnsNotReady
        exp_alerts:
          - exp_labels: {pod: gd-0, severity: page}
            exp_annotations: {summary: "globaldns gd-0 not ready for 5 minutes (see /ready)"}
      - eval_time: 16m
        alertname: GlobalDnsServfailRatio
        exp_alerts:
          - exp_labels: {pod: gd-0, severity: page}
            exp_annotations: {summary: "more than 1% SERVFAIL from gd-0"}
      - eval_time: 4m
        alertname: GlobalDnsReloadRejected
        exp_alerts:
          - exp_labels: {pod: gd-0, severity: ticket}
            exp_annotations:
              summary: "gd-0 rejected its new config and runs the old one (see its log or /)"
      - eval_time: 8m
        alertname: GlobalDnsClusterNotSynced
        exp_alerts:
          - exp_labels: {pod: gd-0, cluster: east, state: stale, severity: page}
            exp_annotations: {summary: "cluster east is stale on gd-0"}
""")
    promtool("test", "rules", "test.yaml", cwd=tmp_path)


def test_the_rules_and_the_scrape_config_name_what_exists() -> None:
    documented = set(re.findall(r"`(globaldns_[a-z0-9_]+)`",
                                (ROOT / "docs" / "operations.md").read_text()))
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    for rule in rules["groups"][0]["rules"]:
        for name in re.findall(r"globaldns_[a-z0-9_]+", rule["expr"]):
            assert name in documented, (rule["alert"], name)
    scrape = yaml.safe_load((MONITORING / "prometheus.yaml").read_text())
    assert scrape["rule_files"] == ["alerts.yaml"]
    [job] = scrape["scrape_configs"]
    assert job["job_name"] == "globaldns"
    assert any(r.get("replacement") == "$1:9153" for r in job["relabel_configs"])
