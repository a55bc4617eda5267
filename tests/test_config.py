"""Config validation: every error names the file, the key path and the problem."""

from __future__ import annotations

import pytest

from globaldns.config import ConfigError, parse_text
from globaldns.config.model import AliasConfig, RoutingRule

CASES = [
    ("zones: [{name: global, ttl: 1500ms}]",
     "zones[0].ttl: '1500ms' is not a whole number of seconds"),
    ("zones: [{name: global, negative_ttl: 2d}]",
     "zones[0].negative_ttl: '2d' is not a duration (e.g. 500ms, 10s, 5m)"),
    ("zones: [{name: global, ttl: 25h}]", "zones[0].ttl: '25h' is out of range 0s..86400s"),
    ("forward: [{zone: ., upstreams: [10.0.0.1], health_check: 1s, probe_interval: 1s}]",
     "forward[0].health_check: is the old name of probe_interval; give one"),
    ("zones: []", "zones: at least one zone is required"),
    ("dns: {listen: '[::1]:99999'}", "dns.listen: port 99999 is out of range 0..65535"),
    ("resolver: {locality: a//b}",
     "resolver.locality: 'a//b' is not a locality of the form region[/zone[/subzone]]"),
    ("clusters: [{name: a, kubeconfig: /k, in_cluster: true}]",
     "clusters[0]: give either kubeconfig or in_cluster, not both"),
    ("clusters: [{name: a, namespaces: [x, x]}]",
     "clusters[0].namespaces: lists a namespace twice"),
    ("clusters: [{name: a, watch_idle_timeout: 0}]",
     "clusters[0].watch_idle_timeout: 0 must be more than zero"),
    ("clusters: [{name: a}]\nremote_secrets: {cluster: a}",
     "remote_secrets.cluster: 'a' is not a cluster with kubeconfig or in_cluster"),
    ("client_localities: [{cidr: 10.0.0.0/33, locality: r}]",
     "client_localities[0].cidr: '10.0.0.0/33' is not an IP network (e.g. 10.0.0.0/8, fc00::/7)"),
    ("routing: [{match: 'a.b.c'}]",
     "routing[0].match: 'a.b.c' is not <service>.<namespace> (* allowed)"),
    ("clusters: [{name: a}]\nrouting: [{match: a.b, weights: {a: 1, zz: 2}}]",
     "routing[0].weights.zz: 'zz' is not a cluster listed in clusters"),
    ("routing: [{match: a.b, weights: {}}]",
     "routing[0].weights: must be a mapping of name: weight"),
    ("routing: [{match: a.b, min_healthy: lots}]",
     "routing[0].min_healthy: 'lots' is not a count or a percentage (e.g. 2 or 50%)"),
    ("routing: [{match: a.b, panic_threshold: 120}]",
     "routing[0].panic_threshold: 120 is not a percentage (0-100)"),
    ("routing: [{match: a.b, answer: best}]",
     "routing[0].answer: 'best' is not one of: all, best_tier"),
    ("routing: [{match: a.b, views: [{clients: [nope], clusters: [a]}]}]",
     "routing[0].views[0].clients[0]: 'nope' is not an IP network (e.g. 10.0.0.0/8, fc00::/7)"),
    ("routing: [{match: a.b, views: [{localities: [eu-*]}]}]",
     "routing[0].views[0]: needs clusters or labels to restrict the answer to"),
    ("aliases: [{name: a.example, target: x.y.global, mode: dns}]",
     "aliases[0].mode: 'dns' is not one of: cname, flatten"),
    ("clusters: [{name: c}]\nservices: [{name: s, namespace: n, health_check: {interval: 1s},"
     " endpoints: [{address: 10.0.0.1, cluster: c}]}]",
     "services[0].health_check: needs exactly one of http or tcp"),
    ("services: [{name: s, namespace: n, subsets: [{name: v1, labels: {v: 1}}, "
     "{name: v1, labels: {v: 2}}]}]", "services[0].subsets[1].name: subset 'v1' is listed twice"),
    ("durations: 1", "durations: unknown key (expected one of: "),
    ("zones: [{name: global", "line 2, column 1: not valid YAML"),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[1][:40] for c in CASES])
def test_a_bad_config_names_file_key_path_and_problem(text, expected):
    with pytest.raises(ConfigError) as caught:
        parse_text(text, "my.yaml")
    assert any(line.startswith(f"my.yaml: {expected}") for line in caught.value.errors), \
        caught.value.errors


def test_a_relative_kubeconfig_is_relative_to_the_config_file(tmp_path):
    path = tmp_path / "globaldns.yaml"
    path.write_text("clusters: [{name: a, kubeconfig: creds/a.kubeconfig}]\n")
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "a.kubeconfig").write_text(
        "contexts: [{name: a, context: {cluster: a}}]\ncurrent-context: a\n")
    from globaldns.config import load
    assert load(path).clusters[0].kubeconfig == str(tmp_path / "creds" / "a.kubeconfig")


@pytest.mark.parametrize(("ttl", "seconds"), [("5s", 5), ("1m", 60), (30, 30), ("1h", 3600)])
def test_zone_ttls_take_durations_with_units_like_every_other_duration(ttl, seconds):
    [zone] = parse_text(f"zones: [{{name: global, ttl: {ttl}, negative_ttl: {ttl}}}]",
                        "my.yaml").zones
    assert (zone.ttl, zone.negative_ttl) == (seconds, seconds)


def test_parsers_take_their_defaults_from_the_model():
    from globaldns.config.model import Config, ZoneConfig
    config = parse_text("zones: [{name: global}]\nrouting: [{match: a.b}]\n"
                        "aliases: [{name: a.example, target: b.global}]", "my.yaml")
    assert config.zones[0] == ZoneConfig("global")
    assert config.routing[0] == RoutingRule("a.b")
    assert config.aliases[0] == AliasConfig("a.example", "b.global")
    assert config.sync_timeout == Config().sync_timeout


def test_the_old_forward_health_check_key_still_works_with_a_deprecation_warning(caplog):
    yaml = "forward: [{zone: ., upstreams: [10.0.0.1], health_check: 2s}]"
    with caplog.at_level("WARNING", logger="globaldns.config"):
        [forward] = parse_text(yaml, "my.yaml").forward
    assert forward.probe_interval == 2.0
    assert "my.yaml: forward[0].health_check is deprecated: call it probe_interval" in \
        caplog.messages
    caplog.clear()
    with caplog.at_level("WARNING", logger="globaldns.config"):
        [forward] = parse_text(yaml.replace("health_check", "probe_interval"), "my.yaml").forward
    assert forward.probe_interval == 2.0 and caplog.messages == []
