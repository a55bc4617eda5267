"""A bad config never gets in: `check-config` and `serve` exit 1 with the file, the key path
and the reason (never a traceback); a bad reload is recorded as failed and the running config
keeps answering; `explain` says why instead of crashing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from globaldns.config import ConfigError, load, parse_text
from tests.helpers.dns import addresses, ask
from tests.helpers.http import scrape, value
from tests.helpers.server import Running, free_port

GLOBALDNS = [sys.executable, "-m", "globaldns"]

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: east, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: east, user: {token: not-a-secret}}]
contexts: [{name: east, context: {cluster: east, user: east}}]
current-context: east
"""

STATIC = """clusters: [{name: east, locality: us-east1/b}, {name: west, locality: us-west1/a}]
services:
  - name: web
    namespace: prod
    endpoints:
      - {address: 10.0.0.1, cluster: east}
      - {address: 10.0.0.2, cluster: west}
"""

# (id, config text, key path, reason). `{kubeconfig}` is a valid kubeconfig file next to
# the config; `{missing}` a path that does not exist.
CASES: list[tuple[str, str, str, str]] = [
    ("distribute-to-pattern", STATIC + """routing:
  - match: web.prod
    distribute: [{from: us-east1/*, to: {"us west/*": 100}}]
""", "routing[0].distribute[0].to.us west/*", "is not a locality pattern"),
    ("view-misspelled-cluster", STATIC + """routing:
  - match: web.prod
    views: [{clients: [10.0.0.0/8], clusters: [esat]}]
""", "routing[0].views[0].clusters[0]", "'esat' is not a cluster listed in clusters"),
    ("weights-cluster-in-another-case", STATIC + """routing:
  - match: web.prod
    weights: {East: 1}
""", "routing[0].weights.East", "'East' is not a cluster listed in clusters"),
    ("kubeconfig-missing", "clusters: [{name: east, kubeconfig: '{missing}'}]\n",
     "clusters[0].kubeconfig", "No such file or directory"),
    ("kubeconfig-home-of-no-user", "clusters: [{name: east, kubeconfig: '~nosuchuser/k'}]\n",
     "clusters[0].kubeconfig", "its ~ names no home directory on this host"),
    ("kubeconfig-context-missing",
     "clusters: [{name: east, kubeconfig: '{kubeconfig}', context: nowhere}]\n",
     "clusters[0].context", "'nowhere' is not a context in"),
    ("label-selector", "clusters: [{name: east, label_selector: 'app in (web'}]\n",
     "clusters[0].label_selector", "is not a label selector"),
    ("label-selector-key", "clusters: [{name: east, label_selector: 'app=web,bad key'}]\n",
     "clusters[0].label_selector", "is not a label selector"),
    ("remote-secrets-label", "clusters: [{name: east, kubeconfig: '{kubeconfig}'}]\n"
     "remote_secrets: {cluster: east, label: 'istio/multiCluster=true=1'}\n",
     "remote_secrets.label", "is not a label selector"),
    ("namespace-uppercase", "clusters: [{name: east, namespaces: [Prod]}]\n",
     "clusters[0].namespaces[0]", "'Prod' is not a namespace name (DNS-1123"),
    ("namespace-underscore", "clusters: [{name: east, namespaces: [my_ns]}]\n",
     "clusters[0].namespaces[0]", "'my_ns' is not a namespace name (DNS-1123"),
    ("service-namespace-uppercase",
     "clusters: [{name: east}]\nservices: [{name: web, namespace: Prod}]\n",
     "services[0].namespace", "'Prod' is not a namespace name"),
    ("cluster-name-uppercase", "clusters: [{name: East}]\n",
     "clusters[0].name", "'East' cannot be a DNS label"),
    ("cluster-name-underscore", "clusters: [{name: east_1}]\n",
     "clusters[0].name", "'east_1' cannot be a DNS label"),
    ("acl-host-bits", "acl: {allow_query: [10.1.2.3/8]}\n",
     "acl.allow_query[0]", "'10.1.2.3/8' has host bits set (the network is 10.0.0.0/8)"),
    ("client-localities-host-bits",
     "client_localities: [{cidr: 192.168.1.1/24, locality: us-east1}]\n",
     "client_localities[0].cidr", "has host bits set (the network is 192.168.1.0/24)"),
    ("view-clients-host-bits", STATIC + """routing:
  - match: web.prod
    views: [{clients: ['fd00::1/8'], clusters: [east]}]
""", "routing[0].views[0].clients[0]", "has host bits set (the network is fd00::/8)"),
    ("match-shadowed-identical", STATIC + """routing:
  - {match: web.prod, answer: best_tier}
  - {match: web.prod, weights: {east: 1}}
""", "routing[1].match", "is never used: routing[0] ('web.prod')"),
    ("match-shadowed-wildcard", STATIC + """routing:
  - {match: '*.prod'}
  - {match: web.prod, weights: {east: 1}}
""", "routing[1].match", "is never used: routing[0] ('*.prod')"),
    ("duration-not-finite", "clusters: [{name: east, stale_for: .inf}]\n",
     "clusters[0].stale_for", "is more than a year"),
    ("weight-too-large", STATIC + """routing:
  - match: web.prod
    weights: {east: 1000000000000, west: 1}
""", "routing[0].weights", "must be a whole number 0..10000"),
    ("label-value-mapping", STATIC.replace("cluster: west}", "cluster: west, labels: {v: {x: 1}}}"),
     "services[0].endpoints[1].labels", "must be a single value, not a mapping"),
    ("yaml-impossible-date", "sync_timeout: 2024-02-30\n", "", "not valid YAML"),
]


def _write(tmp_path: Path, text: str) -> Path:
    kubeconfig = tmp_path / "east.kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    path = tmp_path / "globaldns.yaml"
    path.write_text(text.replace("{kubeconfig}", str(kubeconfig))
                    .replace("{missing}", str(tmp_path / "missing.kubeconfig")))
    return path


def _expected(path: Path, key: str) -> str:
    return f"{path}: {key}: " if key else f"{path}: "


@pytest.mark.parametrize(("text", "key", "reason"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_check_config_names_the_file_key_path_and_reason(tmp_path: Path, text: str, key: str,
                                                         reason: str) -> None:
    path = _write(tmp_path, text)
    out = subprocess.run([*GLOBALDNS, "check-config", str(path)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1, out
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert any(line.startswith(_expected(path, key)) and reason in line for line in lines), lines


@pytest.mark.parametrize(("text", "key", "reason"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_serve_refuses_a_bad_config_with_one_clear_line(tmp_path: Path, text: str, key: str,
                                                        reason: str) -> None:
    path = _write(tmp_path, text)
    proc = subprocess.Popen([*GLOBALDNS, "serve", "--config", str(path), "--listen",
                             f"127.0.0.1:{free_port()}", "--http-listen", ""],
                            stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert all(line.startswith(f"globaldns: {path}: ") for line in lines), lines
    assert any(line.startswith("globaldns: " + _expected(path, key)) and reason in line
               for line in lines), lines


def test_a_config_that_is_not_utf8_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "globaldns.yaml"
    path.write_bytes(b"zones: [{name: gl\xffobal}]\n")
    for command in (["check-config", str(path)], ["serve", "--config", str(path)]):
        out = subprocess.run([*GLOBALDNS, *command], capture_output=True, text=True, timeout=30)
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert out.stderr.strip().endswith(f"{path}: not UTF-8 text (byte offset 17)")


BAD_RELOADS = {
    "distribute-to-pattern": """routing:
  - match: web.prod
    distribute: [{from: us-east1/*, to: {"us west/*": 100}}]
""",
    "view-misspelled-cluster": """routing:
  - match: web.prod
    views: [{clients: [127.0.0.0/8], clusters: [esat]}]
""",
    "yaml-impossible-date": "sync_timeout: 2024-02-30\n",
}


@pytest.mark.parametrize("extra", BAD_RELOADS.values(), ids=BAD_RELOADS.keys())
def test_a_bad_reload_is_recorded_and_the_old_config_keeps_answering(
        server_factory: Any, tmp_path: Path, extra: str) -> None:
    port = free_port()
    head = f"dns: {{listen: 127.0.0.1:{port}}}\nhttp: {{listen: 127.0.0.1:0}}\n" \
        "reload: {interval: 0}\n" + STATIC
    path = tmp_path / "globaldns.yaml"
    path.write_text(head)
    server: Running = server_factory(head, config_path=str(path))
    assert sorted(addresses(ask(port, "web.prod.global"))) == ["10.0.0.1", "10.0.0.2"]
    path.write_text(head + extra)
    applied = asyncio.run_coroutine_threadsafe(server.app.runtime.reloads.reload(why="test"),
                                               server.loop).result(30)
    assert applied is False
    assert server.app.runtime.reloads.results == {"success": 0, "failure": 1}
    assert all(line.startswith(f"{path}: ") for line in server.app.runtime.reloads.last_error)
    m = scrape(server)
    assert value(m, "globaldns_config_last_reload_successful") == 0
    assert value(m, "globaldns_config_reloads_total", result="failure") == 1
    assert sorted(addresses(ask(port, "web.prod.global"))) == ["10.0.0.1", "10.0.0.2"]


def test_explain_with_a_misspelled_view_cluster_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "globaldns.yaml"
    path.write_text(STATIC + """routing:
  - match: web.prod
    views: [{clients: [10.0.0.0/8], clusters: [esat]}]
""")
    out = subprocess.run([*GLOBALDNS, "explain", "web.prod.global", "--client", "10.9.9.9",
                          "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "Traceback" not in out.stderr  # 2: an error (1 is NXDOMAIN)
    assert out.stderr.strip() == (f"globaldns: {path}: routing[0].views[0].clusters[0]: "
                                  "'esat' is not a cluster listed in clusters")


def test_explain_a_view_whose_cluster_has_no_endpoints_says_nodata(tmp_path: Path) -> None:
    path = tmp_path / "globaldns.yaml"
    path.write_text(STATIC.replace("{name: west, locality: us-west1/a}",
                                   "{name: west, locality: us-west1/a}, {name: north}")
                    + """routing:
  - match: web.prod
    views: [{clients: [10.0.0.0/8], clusters: [north]}]
""")
    out = subprocess.run([*GLOBALDNS, "explain", "web.prod.global", "--client", "10.9.9.9",
                          "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "note view 0 matched: restricted to north" in out.stdout
    assert out.stdout.strip().endswith("result NOERROR, no records (NODATA)")


@pytest.mark.parametrize("selector", [
    "app=web", "app==web,tier!=db", "env in (prod, staging)", "env notin (dev)", "!canary",
    "canary", "globaldns.io/export=true", "istio/multiCluster=true", "app=", "rank>1",
    "a.b-c.d/e.f_g=h_i.j-k"])
def test_a_valid_label_selector_is_accepted(selector: str) -> None:
    text = f"clusters: [{{name: east, label_selector: '{selector}'}}]"
    assert parse_text(text, "my.yaml").clusters[0].label_selector == selector


@pytest.mark.parametrize(("rules", "shadowed"), [
    (["web.prod", "*.prod"], False),
    (["*.prod", "web.*"], False),
    (["web-*.prod", "web-1.prod"], True),
    (["web-*.prod", "web-*.prod"], True),
    (["web-*.prod", "web-1*.prod"], False),  # covered in fact, but not provably cheaply
    (["*.*", "x.y"], True),
    (["Web.Prod", "web.prod"], True),
])
def test_a_rule_is_shadowed_only_when_an_earlier_one_covers_it(rules: list[str],
                                                                shadowed: bool) -> None:
    text = "routing: [" + ", ".join(f"{{match: '{m}'}}" for m in rules) + "]"
    if not shadowed:
        parse_text(text, "my.yaml")
        return
    with pytest.raises(ConfigError) as caught:
        parse_text(text, "my.yaml")
    assert caught.value.errors == [
        f"my.yaml: routing[1].match: '{rules[1]}' is never used: routing[0] "
        f"('{rules[0].lower()}') matches every name it does, and the first matching rule wins"]


@pytest.mark.parametrize("text", [
    "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)),
    "clusters: [{name: c, namespaces: &a [*a]}]",
])
def test_yaml_aliases_may_not_expand_past_the_file(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_text(text, "my.yaml")
    assert caught.value.errors == ["my.yaml: YAML aliases expand to more values than the file "
                                   "holds (a recursive or exponential alias)"]


def test_a_kubeconfig_with_its_context_is_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path, "clusters: [{name: east, kubeconfig: '{kubeconfig}'},\n"
                  "           {name: west, kubeconfig: '{kubeconfig}', context: east}]\n")
    assert [c.context for c in load(path).clusters] == ["", "east"]
