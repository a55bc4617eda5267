"""Upstreams the forwarding tests control, all on loopback: a small dnslib server on its own
event loop thread (answering, slow, silent, wrong ID, wrong question, truncating,
SERVFAIL, TCP-only, and the hostile answers of `HOSTILE`), and a real `unbound` serving
`local-data`."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dnslib

from tests.helpers.dns import make_query, udp_raw
from tests.helpers.server import free_port

QT = dnslib.QTYPE

EXAMPLE_RECORDS = ("www.example.test. 300 IN A 192.0.2.1",
                   "www.example.test. 300 IN AAAA 2001:db8::1",
                   "mail.example.test. 300 IN A 192.0.2.25")


def forward_yaml(*zones: tuple[str, list[object]], **options: object) -> str:
    """A `forward:` section; options apply to every zone."""
    lines = ["forward:"]
    for zone, ups in zones:
        lines.append(f"  - zone: {zone!r}")
        lines.append(f"    upstreams: [{', '.join(repr(str(u)) for u in ups)}]")
        lines += [f"    {k}: {v}" for k, v in options.items()]
    return "\n".join(lines) + "\n"


class Background:
    """An event loop on its own thread, for the test-side servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class Seen:
    """One query as the upstream received it."""

    transport: str
    port: int
    id: int
    qname: str
    qtype: int
    rd: bool
    ad: bool
    cd: bool
    edns: bool
    do: bool


class FakeUpstream:
    """A DNS server for `example.test` on 127.0.0.1, its behaviour set by `mode`:
    answer | silent | servfail | refused | wrong_id | wrong_question | spoofed_first |
    truncate (TC over UDP, the whole answer over TCP) | one of `HOSTILE` | oversized (more
    than 1232 bytes over UDP, no TC) | meta_record (a TSIG next to the answer) | big (TXT
    records of about `big_bytes` in all for any name, over TCP; TC over UDP). `delay` (or
    `delays` per name) holds answers back; `hold()` keeps every answer until `release()`,
    and `waiting`/`peak` count the queries held at once; `udp=False` makes it TCP-only (its
    UDP port is closed). `poison` adds records of other names to every answer: (section,
    zone line), section one of answer, authority, additional, in the order given."""

    def __init__(self, background: Background, *, udp: bool = True, tcp: bool = True,
                 zone: str = "example.test", negative_ttl: int = 60,
                 host: str = "127.0.0.1") -> None:
        self.background = background
        self.host = host
        self.zone = zone
        self.negative_ttl = negative_ttl
        self.mode = "answer"
        self.big_bytes = 65_000
        self.delay = 0.0
        self.delays: dict[str, float] = {}
        self.records: dict[tuple[str, int], list[dnslib.RR]] = {}
        self.poison: list[tuple[str, str]] = []
        self.queries: list[Seen] = []
        self.tcp_connections = 0
        self.waiting = 0
        self.peak = 0
        self._gate: asyncio.Event | None = None
        self.port = free_port() if host == "127.0.0.1" else _free_port6()
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        background.run(self._start(udp, tcp))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def add(self, *zone_lines: str) -> FakeUpstream:
        for line in zone_lines:
            for rr in dnslib.RR.fromZone(line):
                key = (str(rr.rname).lower().rstrip("."), rr.rtype)
                self.records.setdefault(key, []).append(rr)
        return self

    def count(self, qname: str | None = None, *, probes: bool = False) -> int:
        """Queries received (for `qname`), health probes (`. NS`) left out unless asked."""
        return sum(1 for s in list(self.queries)
                   if (qname is None or s.qname == qname)
                   and (probes or not (s.qname == "" and s.qtype == QT.NS)))

    def probes(self) -> int:
        return sum(1 for s in list(self.queries) if s.qname == "" and s.qtype == QT.NS)

    def stop(self) -> None:
        self.background.run(self._stop())

    def hold(self) -> None:
        self.background.loop.call_soon_threadsafe(self._gate.clear)  # type: ignore[union-attr]

    def release(self) -> None:
        self.background.loop.call_soon_threadsafe(self._gate.set)  # type: ignore[union-attr]

    async def held(self) -> None:
        """Wait while the answers are held (counted in `waiting` and `peak`)."""
        assert self._gate is not None
        if self._gate.is_set():
            return
        self.waiting += 1
        self.peak = max(self.peak, self.waiting)
        try:
            await self._gate.wait()
        finally:
            self.waiting -= 1

    async def _start(self, udp: bool, tcp: bool) -> None:
        self._gate = asyncio.Event()
        self._gate.set()
        loop = asyncio.get_running_loop()
        if udp:
            self._udp_transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpSide(self), local_addr=(self.host, self.port))
        if tcp:
            self._tcp_server = await asyncio.start_server(self._tcp_client, self.host,
                                                          self.port)

    async def _stop(self) -> None:
        if self._udp_transport is not None:
            self._udp_transport.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.wait(self._clients, timeout=2)

    def _log(self, request: dnslib.DNSRecord, transport: str, port: int) -> None:
        opt = [rr for rr in request.ar if rr.rtype == QT.OPT]
        h = request.header
        self.queries.append(Seen(
            transport, port, h.id, str(request.q.qname).lower().rstrip("."), request.q.qtype,
            bool(h.rd), bool(h.ad), bool(h.cd), bool(opt),
            bool(opt and opt[0].ttl & 0x8000)))

    def answer(self, request: dnslib.DNSRecord, *, tcp: bool) -> dnslib.DNSRecord:
        reply = request.reply(ra=1, aa=1)
        reply.ar = []
        name = str(request.q.qname).lower().rstrip(".")
        qtype = request.q.qtype
        if self.mode == "servfail":
            reply.header.rcode = dnslib.RCODE.SERVFAIL
        elif self.mode == "refused":
            reply.header.rcode = dnslib.RCODE.REFUSED
        elif name == "" and qtype == QT.NS:
            reply.add_answer(*dnslib.RR.fromZone(". 3600 IN NS a.root-servers.net."))
        elif self.mode == "truncate" and not tcp:
            reply.header.tc = 1
        elif (name, qtype) in self.records:
            for rr in self.records[(name, qtype)]:
                reply.add_answer(rr)
        else:
            if not any(n == name for n, _t in self.records):
                reply.header.rcode = dnslib.RCODE.NXDOMAIN
            z = self.zone
            reply.add_auth(*dnslib.RR.fromZone(
                f"{z}. 3600 IN SOA ns.{z}. hostmaster.{z}. 1 3600 600 86400 "
                f"{self.negative_ttl}"))
        for section, line in self.poison:
            getattr(reply, {"answer": "rr", "authority": "auth", "additional": "ar"}[section]
                    ).extend(dnslib.RR.fromZone(line))
        opt = [rr for rr in request.ar if rr.rtype == QT.OPT]
        if opt:
            reply.add_ar(dnslib.EDNS0(udp_len=1232, flags="do" if opt[0].ttl & 0x8000 else ""))
        return reply

    def replies(self, data: bytes, *, tcp: bool) -> list[tuple[float, bytes]]:
        """What to send back for one query, with the delay before each."""
        try:
            request = dnslib.DNSRecord.parse(data)
        except Exception:
            return []
        reply = self.answer(request, tcp=tcp)
        delay = self.delays.get(str(request.q.qname).lower().rstrip("."), self.delay)
        mode = self.mode
        if mode == "silent":
            return []
        if mode == "oversized" and not tcp:
            # More than the 1232 bytes asked for, without TC: other records than over TCP.
            for i in range(80):
                reply.add_answer(*dnslib.RR.fromZone(f"{request.q.qname} 300 IN A 6.6.6.{i}"))
            return [(delay, reply.pack())]
        if mode in HOSTILE:
            return [(delay, HOSTILE[mode](data))]
        if mode == "meta_record":
            return [(delay, _meta_record(data))]
        if mode == "big":
            return [(delay, _big_answer(data, self.big_bytes) if tcp else _truncated(data))]
        if mode == "wrong_id":
            reply.header.id = (reply.header.id + 1) & 0xFFFF
            return [(delay, reply.pack())]
        if mode == "wrong_question":
            reply.q.qname = dnslib.DNSLabel("other." + self.zone)
            return [(delay, reply.pack())]
        if mode == "spoofed_first":
            wrong_id = dnslib.DNSRecord.parse(reply.pack())
            wrong_id.header.id = (wrong_id.header.id + 1) & 0xFFFF
            wrong_id.rr = [*dnslib.RR.fromZone(f"{request.q.qname} 300 IN A 6.6.6.6")]
            wrong_q = dnslib.DNSRecord.parse(reply.pack())
            wrong_q.q.qname = dnslib.DNSLabel("other." + self.zone)
            wrong_q.rr = [*dnslib.RR.fromZone(f"other.{self.zone} 300 IN A 6.6.6.6")]
            return [(0.0, wrong_id.pack()), (0.0, wrong_q.pack()),
                    (0.0, b"spoof-from-another-port"), (0.05 + delay, reply.pack())]
        return [(delay, reply.pack())]

    async def _tcp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        self.tcp_connections += 1
        me = asyncio.current_task()
        assert me is not None
        self._clients.add(me)
        me.add_done_callback(self._clients.discard)
        port = writer.get_extra_info("peername")[1]
        tasks = set()
        try:
            for _ in range(10_000):
                head = await reader.readexactly(2)
                data = await reader.readexactly(int.from_bytes(head, "big"))
                with contextlib.suppress(Exception):
                    self._log(dnslib.DNSRecord.parse(data), "tcp", port)
                task = asyncio.get_running_loop().create_task(
                    self._tcp_answer(writer, self.replies(data, tcp=True)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            writer.close()

    async def _tcp_answer(self, writer: asyncio.StreamWriter,
                          replies: list[tuple[float, bytes]]) -> None:
        await self.held()
        for delay, wire in replies:
            if delay:
                # The upstream's programmed slowness (`delay`), a peer's behaviour under
                # test; no test asserts on the time it takes.
                await asyncio.sleep(delay)
            if wire != b"spoof-from-another-port" and not writer.is_closing():
                writer.write(len(wire).to_bytes(2, "big") + wire)


# -- hostile answers, byte by byte --------------------------------------------------------------

def _rr(owner: bytes, rtype: int, rdata: bytes, ttl: int = 300, rclass: int = 1) -> bytes:
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def _qend(query: bytes) -> int:
    """Where the (uncompressed) question of `query` ends."""
    return query.index(b"\x00", 12) + 5


def _answer(query: bytes, *records: bytes) -> bytes:
    """A NOERROR answer to `query` with these answer records."""
    return query[:2] + struct.pack("!HHHHH", 0x8580, 1, len(records), 0, 0) \
        + query[12 : _qend(query)] + b"".join(records)


def _forward_pointer(query: bytes) -> bytes:
    # The CNAME's target points at the next record's owner, after itself.
    cname_rdata = _qend(query) + 2 + 10 + 2
    target = b"\x01a\x07example\x04test\x00"
    return _answer(query, _rr(b"\xc0\x0c", 5, struct.pack("!H", 0xC000 | cname_rdata)),
                   _rr(target, 1, bytes([192, 0, 2, 1])))


def _header_pointer(query: bytes) -> bytes:
    # The owner is "the name at offset 2", which is the header's flags and counts.
    return _answer(query, _rr(b"\xc0\x02", 1, bytes([192, 0, 2, 1])))


def _pointer_loop(query: bytes) -> bytes:
    # A TXT whose string holds a pointer to the next owner, which points back at it.
    txt = _qend(query) + 2 + 10
    loop = txt + 1
    second = txt + 3
    return _answer(query, _rr(b"\xc0\x0c", 16, b"\x02" + struct.pack("!H", 0xC000 | second)),
                   _rr(struct.pack("!H", 0xC000 | loop), 1, bytes([192, 0, 2, 1])))


def _pointer_into_ttl(query: bytes) -> bytes:
    # An MX exchange that points into the A record's TTL (00 00 03 00): a valid name until a
    # cache counts the TTL down and the name changes under it.
    ttl_byte = _qend(query) + 2 + 4 + 2
    return _answer(query, _rr(b"\xc0\x0c", 1, bytes([0, 1, 2, 3]), ttl=0x300),
                   _rr(b"\xc0\x0c", 15, b"\x00\x0a" + struct.pack("!H", 0xC000 | ttl_byte)))


def _bad_rdata_label(query: bytes) -> bytes:
    # An MX exchange with a label of type 0x40 (RFC 6891 retired the extended labels).
    return _answer(query, _rr(b"\xc0\x0c", 15, b"\x00\x0a\x04mail\x40\x00"))


def _rdata_overrun(query: bytes) -> bytes:
    # A CNAME whose target goes on past its RDLENGTH, into the next record.
    return _answer(query, _rr(b"\xc0\x0c", 5, b"\x03www"[:2]),
                   _rr(b"\xc0\x0c", 1, bytes([192, 0, 2, 1])))


def _big_answer(query: bytes, size: int) -> bytes:
    # TXT records of one 255-byte string each (268 bytes a record), `size` bytes at most.
    txt = _rr(b"\xc0\x0c", 16, b"\xff" + bytes(255))
    room = size - _qend(query)
    return _answer(query, *[txt] * (room // len(txt)))


def _truncated(query: bytes) -> bytes:
    return query[:2] + struct.pack("!HHHHH", 0x8780, 1, 0, 0, 0) + query[12 : _qend(query)]


def _meta_record(query: bytes) -> bytes:
    # The answer, and a TSIG record (class ANY) that the upstream's hop has no use for.
    return _answer(query, _rr(b"\xc0\x0c", 1, bytes([192, 0, 2, 1])),
                   _rr(b"\xc0\x0c", 250, b"\x00" + bytes(16), ttl=0, rclass=255))


HOSTILE = {"forward_pointer": _forward_pointer, "header_pointer": _header_pointer,
           "pointer_loop": _pointer_loop, "pointer_into_ttl": _pointer_into_ttl,
           "bad_rdata_label": _bad_rdata_label,
           "rdata_overrun": _rdata_overrun}
"""Modes whose answer breaks the wire format: the query's bytes to the answer's."""


class _UdpSide(asyncio.DatagramProtocol):
    def __init__(self, owner: FakeUpstream) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(Exception):
            self.owner._log(dnslib.DNSRecord.parse(data), "udp", addr[1])
        replies = self.owner.replies(data, tcp=False)
        asyncio.get_running_loop().create_task(self._send(replies, addr))

    async def _send(self, replies: list[tuple[float, bytes]], addr: tuple[str, int]) -> None:
        await self.owner.held()
        for delay, wire in replies:
            if delay:
                # The upstream's programmed slowness (`delay`), a peer's behaviour under
                # test; no test asserts on the time it takes.
                await asyncio.sleep(delay)
            if wire == b"spoof-from-another-port":
                # The right ID and question, from a port the query was not sent to.
                family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
                with socket.socket(family, socket.SOCK_DGRAM) as other:
                    other.bind((addr[0], 0))
                    other.sendto(replies[-1][1], addr)
                continue
            if self.transport is not None and not self.transport.is_closing():
                self.transport.sendto(wire, addr)


# -- unbound -----------------------------------------------------------------------------------

UNBOUND_CONF = """\
server:
  interface: 127.0.0.1
  port: {port}
  do-ip6: no
  do-daemonize: no
  chroot: ""
  username: ""
  directory: "{dir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-not-query-localhost: no
  access-control: 127.0.0.0/8 allow
  # Never query beyond loopback: no validator, no trust anchor, every name answered
  # locally (the root is a static local zone), and only a loopback source address.
  module-config: "iterator"
  outgoing-interface: 127.0.0.1
  local-zone: "." static
{zones}
"""


class Unbound:
    """A real unbound answering `local-data` on a random loopback port; stopped by PID."""

    def __init__(self, directory: Path, local_data: list[str], *,
                 zones: tuple[str, ...] = ("example.test",)) -> None:
        assert shutil.which("unbound"), "unbound is not installed (apt-get install unbound)"
        self.port = free_port()
        lines = []
        for zone in zones:
            lines.append(f'  local-zone: "{zone}." static')
            lines.append(f'  local-data: "{zone}. 3600 IN SOA ns.{zone}. hostmaster.{zone}. '
                         f'1 3600 600 86400 120"')
        lines += [f"  local-data: '{line}'" for line in local_data]
        self.conf = directory / "unbound.conf"
        self.conf.write_text(UNBOUND_CONF.format(port=self.port, dir=directory,
                                                 zones="\n".join(lines)))
        self.log = directory / "unbound.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(["unbound", "-d", "-c", str(self.conf)],
                                            stdout=log, stderr=subprocess.STDOUT)
        probe = make_query(f"{zones[0]}", "SOA")
        for _ in range(100):  # up to 10 s for it to start
            if self.process.poll() is not None:
                raise RuntimeError(f"unbound exited: {self.log.read_text()}")
            if udp_raw(self.port, probe, timeout=0.1) is not None:
                return
        self.stop()
        raise RuntimeError(f"unbound did not answer: {self.log.read_text()}")

    def __str__(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@contextlib.contextmanager
def unbound(directory: Path, local_data: list[str], **kw: Any) -> Iterator[Unbound]:
    server = Unbound(directory, local_data, **kw)
    try:
        yield server
    finally:
        server.stop()


def _free_port6() -> int:
    """A port free for both UDP and TCP on ::1."""
    for _ in range(100):
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u:
            u.bind(("::1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("::1", port))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no free port on ::1")


@contextlib.contextmanager
def fake_upstreams() -> Iterator[Any]:
    """A factory of FakeUpstreams on one background loop, all stopped at the end."""
    background = Background()
    made: list[FakeUpstream] = []

    def make(**kw: Any) -> FakeUpstream:
        upstream = FakeUpstream(background, **kw)
        made.append(upstream)
        return upstream

    try:
        yield make
    finally:
        for upstream in made:
            upstream.stop()
        background.close()
