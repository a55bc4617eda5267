"""Test-side DNS clients over real sockets: a small one built on dnslib, and `dig`."""

from __future__ import annotations

import random
import shutil
import socket
import struct
import subprocess

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
        **kw) -> dnslib.DNSRecord:  # type: ignore[no-untyped-def]
    data = make_query(name, qtype, **kw)
    raw = tcp_raw(port, [data])[0] if tcp else udp_raw(port, data, source=source)
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
