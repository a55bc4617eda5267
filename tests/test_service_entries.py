"""The config's `service_entries` and `serve_hosts` (docs/istio.md): the documented example
served and asked with dig, and bad items refused with their key paths."""

from __future__ import annotations

import re
from typing import Any

import pytest

from globaldns.config import ConfigError, parse_text
from tests.helpers.data import ROOT
from tests.helpers.dns import ask, dig, rcode
from tests.helpers.server import free_port

DOC = (ROOT / "docs" / "istio.md").read_text()


def documented() -> tuple[str, list[tuple[list[str], list[str]]]]:
    """The example config of docs/istio.md, and its `$ dig +short ...` lines with their
    expected output."""
    example = DOC.split("### Example", 1)[1]
    config = re.search(r"```yaml\n(.*?)```", example, re.S)
    answers = re.search(r"```text\n(.*?)```", example, re.S)
    assert config and answers
    cases: list[tuple[list[str], list[str]]] = []
    for line in answers[1].splitlines():
        if line.startswith("$ dig +short "):
            cases.append((line.split()[3:], []))
        else:
            cases[-1][1].append(line)
    return config[1], cases


def test_the_documented_service_entries_are_answered_as_the_doc_says(
        server_factory: Any) -> None:
    config, cases = documented()
    assert len(cases) >= 4
    server = server_factory(config.replace("127.0.0.1:5353", f"127.0.0.1:{free_port()}"))
    for args, expected in cases:
        out = dig(server.port, "+short", *args)
        assert sorted(out.splitlines()) == sorted(expected), (args, out)


def test_a_served_host_is_ours_and_an_outside_name_is_refused_as_before(
        server_factory: Any) -> None:
    config, _ = documented()
    server = server_factory(config.replace("127.0.0.1:5353", f"127.0.0.1:{free_port()}")
                            + "  - hosts: [vms.example.org]\n"
                              "    endpoints: [{address: 10.40.0.1}]\n")
    # serve_hosts names users.api.example.com: below it is ours (NXDOMAIN, SOA of the
    # host), never forwarded.
    reply = ask(server.port, "nope.users.api.example.com")
    assert rcode(reply) == "NXDOMAIN"
    assert [str(rr.rname) for rr in reply.auth] == ["users.api.example.com."]
    # Above a host in a zone: an empty non-terminal (NODATA), not NXDOMAIN (RFC 8020);
    # it goes with the last host under it.
    reply = ask(server.port, "default.global")
    assert rcode(reply) == "NOERROR" and not reply.rr
    server.call(server.app.runtime.store.drop_source, "service_entries")
    assert rcode(ask(server.port, "default.global")) == "NXDOMAIN"
    assert rcode(ask(server.port, "nope.users.api.example.com")) == "NXDOMAIN"
    # vms.example.org matches no serve_hosts entry: not served, refused as before.
    assert rcode(ask(server.port, "vms.example.org")) == "REFUSED"


def test_explain_marks_mesh_external_endpoints(tmp_path: Any) -> None:
    from tests.helpers.cli import run_explain
    config, _ = documented()
    out = run_explain(tmp_path, config, "users.api.example.com").stdout
    assert "endpoint 203.0.113.10 cluster static locality us-east1/us-east1-b ready" in out
    assert "external (MESH_EXTERNAL)" in out
    internal = run_explain(tmp_path, config, "vm-user-service.default.global").stdout
    assert "10.30.0.1" in internal and "external" not in internal


@pytest.mark.parametrize(("item", "error"), [
    ("{hosts: ['*.example.com'], endpoints: [{address: 10.0.0.1}]}",
     "service_entries[0]: hosts[0]: '*.example.com' is not a host name"),
    ("{hosts: [a.example.com], endpoints: [{address: db.example.net}]}",
     "service_entries[0]: endpoints[0].address 'db.example.net' is no IP address"),
    ("{hosts: [a.example.com], resolution: MAGIC}",
     "service_entries[0]: resolution 'MAGIC' is not one of"),
    ("{hosts: [a.example.com], workloadSelector: {labels: {app: x}}}",
     "service_entries[0].workloadSelector: unknown key"),
    ("{hosts: [a.example.com], cluster: nowhere}",
     "service_entries[0].cluster: 'nowhere' is not a cluster listed in clusters"),
    ("{endpoints: [{address: 10.0.0.1}]}", "service_entries[0].hosts: is required"),
    ("{hosts: [a.example.com], ports: [{number: 70000, name: http}]}",
     "service_entries[0]: ports[0].number 70000"),
    ("{hosts: [a.example.com], endpoints: [{address: 10.0.0.1, weight: -1}]}",
     "endpoints[0].weight -1 is not a whole number"),
])
def test_bad_service_entries_are_config_errors_with_their_key_path(item: str,
                                                                   error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_text(f"service_entries:\n  - {item}\n", "t.yaml")
    assert error in str(caught.value), str(caught.value)


@pytest.mark.parametrize("value", ["'*'", "'*.com.'", "'a..b'", "'**.example.com'", "[1]"])
def test_bad_serve_hosts_are_config_errors(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_text(f"serve_hosts: [{value}]\n", "t.yaml")
    assert "serve_hosts[0]" in str(caught.value)


def test_serve_hosts_changed_by_a_reload_take_effect(server_factory: Any) -> None:
    config, _ = documented()
    config = config.replace("127.0.0.1:5353", f"127.0.0.1:{free_port()}")
    without = config.replace("serve_hosts: [users.api.example.com]", "serve_hosts: []")
    server = server_factory(without)
    assert rcode(ask(server.port, "users.api.example.com")) == "REFUSED"
    server.call(server.app.runtime.apply, parse_text(config, "reloaded.yaml"))
    assert dig(server.port, "+short", "users.api.example.com").split() == ["203.0.113.10"]
    server.call(server.app.runtime.apply, parse_text(without, "reloaded.yaml"))
    assert rcode(ask(server.port, "users.api.example.com")) == "REFUSED"


def test_a_numeric_looking_host_name_endpoint_is_a_cname_not_an_address(
        server_factory: Any) -> None:
    # Found by fuzz/istio_objects.py: `1.2.3` is no IP address but a host name, and was
    # taken for an address when the answers were built.
    server = server_factory(
        f"dns: {{listen: 127.0.0.1:{free_port()}}}\nserve_hosts: [a.example.org]\n"
        "service_entries:\n"
        "  - {hosts: [a.example.org], resolution: DNS, endpoints: [{address: 1.2.3}]}\n")
    assert dig(server.port, "+short", "a.example.org").split() == ["1.2.3."]
    assert server.app.runtime.store.skipped.counts["build_failed"] == 0
