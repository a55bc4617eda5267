"""The command line and the process: serve, check-config, signals, startup errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers.data import ROOT
from tests.helpers.dns import addresses, ask
from tests.helpers.server import GLOBALDNS, free_port, serve


def test_serve_without_config_runs_the_embedded_default():
    port = free_port()
    proc = serve("--listen", f"127.0.0.1:{port}")
    try:
        assert sorted(addresses(ask(port, "user-service.production.global"))) == [
            "10.1.0.11", "10.1.0.12", "10.2.0.21"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(5) == 0


def test_sigint_and_sigterm_exit_zero_within_five_seconds(tmp_path: Path):
    for sig in (signal.SIGINT, signal.SIGTERM):
        port = free_port()
        config = tmp_path / "c.yaml"
        config.write_text(f"dns: {{listen: 127.0.0.1:{port}, lameduck: 0s}}\n")
        proc = serve("--config", str(config))
        assert ask(port, "global", "SOA").rr
        proc.send_signal(sig)
        assert proc.wait(5) == 0  # within five seconds, or wait() raises


def test_a_port_in_use_is_one_clear_line_and_exit_1():
    port = free_port()
    first = serve("--listen", f"127.0.0.1:{port}")
    try:
        second = subprocess.run([*GLOBALDNS, "serve", "--listen", f"127.0.0.1:{port}",
                                 "--http-listen", ""],
                                capture_output=True, text=True, timeout=20)
        assert second.returncode == 1
        errors = [line for line in second.stderr.splitlines() if "INFO" not in line]
        assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0]
        assert "in use" in errors[0]
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(5)


def test_a_bad_config_stops_serve_with_the_file_key_and_problem(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dns: {listen: 127.0.0.1:5353}\nzones: [{name: global, ttl: -1}]\n")
    out = subprocess.run([*GLOBALDNS, "serve", "--config", str(bad)], capture_output=True,
                         text=True, timeout=20)
    assert out.returncode == 1
    assert out.stderr.strip() == f"globaldns: {bad}: zones[0].ttl: -1 must not be negative"


def test_check_config_accepts_the_example_with_a_one_line_summary():
    out = subprocess.run([*GLOBALDNS, "check-config", str(ROOT / "config/example.yaml")],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0
    assert out.stdout.strip().endswith("ok: 1 zone(s), 2 cluster(s), 1 service(s), 5 endpoint(s)")


def test_check_config_prints_every_error(tmp_path: Path):
    bad = tmp_path / "my.yaml"
    bad.write_text("""
dns: {listen: nowhere, bogus: 1}
clusters: [{name: primary}]
services:
  - name: user-service
    namespace: production
    endpoints:
      - {address: 10.0.0.1, cluster: primary}
      - {address: 10.0.0.2, cluster: primary}
      - {address: 10.0.0.x, cluster: primary}
      - {address: 10.0.0.4, cluster: elsewhere, ready: maybe}
timeout: 5q
""")
    out = subprocess.run([*GLOBALDNS, "check-config", str(bad)], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert lines[0].startswith(f"{bad}: timeout: unknown key (expected one of: ")
    assert "clusters, cookies, dns," in lines[0] and lines[0].endswith("zones)")
    assert lines[1:] == [
        f"{bad}: dns.bogus: unknown key (expected one of: lameduck, listen, max_inflight, "
        "tcp_idle_timeout, tcp_max_connections, tcp_max_connections_per_client, "
        "tcp_max_inflight_per_connection, tcp_message_timeout, worker_heartbeat, workers)",
        f"{bad}: dns.listen: 'nowhere' is not HOST:PORT (IPv6 as [::1]:PORT)",
        f"{bad}: services[0].endpoints[2].address: '10.0.0.x' is not an IP address",
        f"{bad}: services[0].endpoints[3].cluster: 'elsewhere' is not a cluster listed in "
        "clusters",
        f"{bad}: services[0].endpoints[3].ready: 'maybe' is not true or false",
    ]


def test_check_config_names_a_file_it_cannot_read():
    out = subprocess.run([*GLOBALDNS, "check-config", "/nonexistent.yaml"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 1 and out.stderr.startswith("/nonexistent.yaml: cannot read")


def test_version():
    out = subprocess.run([*GLOBALDNS, "--version"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and out.stdout.startswith("globaldns 0.")


def test_the_embedded_default_is_the_example_config():
    packaged = ROOT / "globaldns" / "config" / "default.yaml"
    assert packaged.read_text() == (ROOT / "config" / "example.yaml").read_text()


def test_the_console_script_is_installed():
    bindir = Path(sys.executable).parent
    assert os.access(bindir / "globaldns", os.X_OK)


def test_serve_without_watched_clusters_never_imports_the_kubernetes_package():
    # The package costs ~30 MB and 0.2 s; only loading kubeconfig credentials needs it.
    # `-X importtime` makes the real process name every module it imports, on stderr.
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "globaldns", "serve",
                             "--listen", f"127.0.0.1:{port}"],
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if "globaldns ready" in line:
                break
        assert addresses(ask(port, "user-service.production.global"))
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=10)[1]
    modules = {line.rsplit("|", 1)[-1].strip() for line in [*lines, *rest.splitlines()]
               if line.startswith("import time:")}
    assert "globaldns.sources.k8s.credentials" in modules
    assert not {m for m in modules if m.split(".")[0] == "kubernetes"}
