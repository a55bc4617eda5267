"""`--workers N`: N processes answer on one port; one of them owns the sources and the
others follow its registry."""

from __future__ import annotations

import signal
import socket

import dnslib

from tests.helpers.dns import make_query
from tests.helpers.server import free_port, serve
from tests.helpers.wait import wait_until

CONFIG = """
dns: {{listen: 127.0.0.1:{port}}}
resolver: {{instance: gd}}
clusters: [{{name: c, locality: r1}}]
services:
  - name: api
    namespace: prod
    endpoints: [{{address: {address}, cluster: c}}]
"""


def sample(port: int, count: int = 60) -> tuple[set[str], set[str]]:
    """Answers and NSIDs seen from `count` different source ports."""
    answers, nsids = set(), set()
    for _ in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(make_query("api.prod.global", edns=1232, options=[(3, b"")]),
                     ("127.0.0.1", port))
            reply = dnslib.DNSRecord.parse(s.recv(4096))
        answers.update(str(rr.rdata) for rr in reply.rr)
        opt = next(rr for rr in reply.ar if rr.rtype == 41)
        nsids.update(o.data.decode() for o in opt.rdata if o.code == 3)
    return answers, nsids


def test_two_workers_share_the_port_and_follow_the_main_registry(tmp_path):
    port = free_port()
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(port=port, address="10.1.1.1"))
    proc = serve("--config", str(path), "--workers", "2")
    try:
        answers, nsids = sample(port)
        assert answers == {"10.1.1.1"}
        assert nsids == {"gd", "gd/1"}, "both processes answer"
        path.write_text(CONFIG.format(port=port, address="10.2.2.2"))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: sample(port) == ({"10.2.2.2"}, {"gd", "gd/1"}))
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
