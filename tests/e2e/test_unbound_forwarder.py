"""A real resolver in front of us: unbound with a forward-zone for `global`, the way
CoreDNS's stub domain forwards it. unbound is confined to loopback: it has no root hints
to prime from, and every zone it may ask about is forwarded to 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.helpers.dns import addresses, ask, dig, rcode
from tests.helpers.server import free_port
from tests.helpers.wait import wait_until


def start_unbound(tmp_path: Path, upstream_port: int) -> tuple[subprocess.Popen[bytes], int]:
    unbound = shutil.which("unbound") or "/usr/sbin/unbound"
    assert Path(unbound).exists(), "unbound is not installed (apt-get install unbound)"
    port = free_port()
    conf = tmp_path / "unbound.conf"
    conf.write_text(f"""
server:
    interface: 127.0.0.1
    port: {port}
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{tmp_path}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    domain-insecure: "global"
    local-zone: "global." transparent
    # Nothing leaves loopback: every other name is answered locally as refused.
    local-zone: "." refuse
    root-hints: ""
    use-caps-for-id: yes
    harden-referral-path: no
    qname-minimisation: no
    module-config: "iterator"
forward-zone:
    name: "global"
    forward-addr: 127.0.0.1@{upstream_port}
""")
    proc = subprocess.Popen([unbound, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    def up() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
        return "status:" in dig(port, "global", "SOA")

    try:
        wait_until(up, what="unbound to answer")
    except AssertionError:
        proc.kill()
        raise
    return proc, port


def test_resolving_through_unbound_forwarding_global_to_us(example, tmp_path):
    proc, port = start_unbound(tmp_path, example.port)
    try:
        reply = ask(port, "user-service.production.global")
        assert rcode(reply) == "NOERROR"
        assert sorted(addresses(reply)) == ["10.1.0.11", "10.1.0.12", "10.2.0.21"]
        # use-caps-for-id: unbound randomises the case and checks that we echo it.
        for _ in range(3):
            assert sorted(addresses(ask(port, "USER-service.production.global", "AAAA"))) == [
                "fd00::21"]
        assert rcode(ask(port, "nope.production.global")) == "NXDOMAIN"
        out = dig(port, "_http._tcp.user-service.production.global", "SRV")
        assert "status: NOERROR" in out and out.count("IN\tSRV") == 4
    finally:
        proc.terminate()
        proc.wait(5)
