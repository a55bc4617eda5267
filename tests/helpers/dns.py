"""The tests' DNS client over real sockets (a small one built on dnslib, and the real `dig`),
and readers of what a reply carries (`ede`) or a query sends (`ecs`)."""

from __future__ import annotations

import ipaddress
import random
import shutil
import socket
import struct
import subprocess
from collections import Counter

import dnslib


def make_query(name: str, qtype: str = "A", *, edns: int | None = None, do: bool = False,
               rd: bool = True, cd: bool = False, options: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
               qclass: str = "IN", qid: int | None = None) -> bytes:
    q = dnslib.DNSRecord.question(name, qtype, qclass)
    q.header.id = random.randrange(65536) if qid is None else qid
    q.header.rd = int(rd)
    q.header.cd = int(cd)
    if edns is not None:
        q.add_ar(dnslib.EDNS0(udp_len=edns, flags="do" if do else "",
                              opts=[dnslib.EDNSOption(c, v) for c, v in options]))
    return q.pack()


def udp_raw(port: int, data: bytes, *, host: str = "127.0.0.1", source: str = "127.0.0.1",
            timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                       socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(timeout)
        s.sendto(data, (host, port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def tcp_raw(port: int, messages: list[bytes], *, host: str = "127.0.0.1",
            timeout: float = 2.0) -> list[bytes]:
    """Send all messages on one connection (pipelined), read as many answers."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"".join(struct.pack("!H", len(m)) + m for m in messages))
        answers = []
        buffer = b""
        while len(answers) < len(messages):
            chunk = s.recv(65535)
            if not chunk:
                break
            buffer += chunk
            while len(buffer) >= 2 and len(buffer) >= 2 + struct.unpack("!H", buffer[:2])[0]:
                n = struct.unpack("!H", buffer[:2])[0]
                answers.append(buffer[2 : 2 + n])
                buffer = buffer[2 + n :]
        return answers


def ask(port: int, name: str, qtype: str = "A", *, tcp: bool = False, source: str = "127.0.0.1",
        timeout: float = 2.0, **kw) -> dnslib.DNSRecord:  # type: ignore[no-untyped-def]
    data = make_query(name, qtype, **kw)
    raw = tcp_raw(port, [data], timeout=timeout)[0] if tcp else \
        udp_raw(port, data, source=source, timeout=timeout)
    assert raw is not None, f"no answer for {name} {qtype}"
    reply = dnslib.DNSRecord.parse(raw)
    assert reply.header.id == struct.unpack("!H", data[:2])[0]
    return reply


def rcode(reply: dnslib.DNSRecord) -> str:
    return dnslib.RCODE.get(reply.header.rcode)


def addresses(reply: dnslib.DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype in (dnslib.QTYPE.A, dnslib.QTYPE.AAAA)]


def dig(port: int, *args: str, host: str = "127.0.0.1") -> str:
    """Run the real `dig` (bind9-dnsutils); its absence is a failure, not a skip."""
    assert shutil.which("dig"), "dig is not installed (apt-get install bind9-dnsutils)"
    out = subprocess.run(["dig", f"@{host}", "-p", str(port), "+time=2", "+tries=1", *args],
                         capture_output=True, text=True, timeout=20)
    return out.stdout


def ede(reply: dnslib.DNSRecord) -> list[tuple[int, str]]:
    """The Extended DNS Errors (RFC 8914) in a reply: (code, extra text)."""
    return [(int.from_bytes(o.data[:2], "big"), o.data[2:].decode())
            for rr in reply.ar if rr.rtype == dnslib.QTYPE.OPT
            for o in rr.rdata if o.code == 15]


def ecs(subnet: str) -> tuple[int, bytes]:
    """An EDNS Client Subnet option (RFC 7871) for `options=`: source prefix, scope 0."""
    net = ipaddress.ip_network(subnet)
    family = 1 if net.version == 4 else 2
    raw = net.network_address.packed[: (net.prefixlen + 7) // 8]
    return 8, struct.pack("!HBB", family, net.prefixlen, 0) + raw


def first_records(port: int, name: str, count: int, *, source: str = "127.0.0.1",
                  options: list[tuple[int, bytes]] = ()) -> Counter[str]:  # type: ignore[assignment]
    seen: Counter[str] = Counter()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(2)
        for _ in range(count):
            s.sendto(make_query(name, edns=1232 if options else None, options=options),
                     ("127.0.0.1", port))
            reply = dnslib.DNSRecord.parse(s.recv(4096))
            seen[str(reply.rr[0].rdata)] += 1
    return seen


def share(counter: Counter[str], prefix: str) -> float:
    return 100 * sum(n for a, n in counter.items() if a.startswith(prefix)) / counter.total()
