"""atheris harness for the batched UDP fast lane (globaldns/dns/_fastlane.c, issue 16).

Each input is cut into up to 64 datagrams (0..65507 bytes, the largest IPv4 UDP payload),
sent from up to four client sockets on random loopback addresses over real sockets, and
drained with `drain`, whose callables build the reply the server's packet reader would
(fuzz/packets.py's `reply_to`): `hit` (as the wire cache) for some, then `rate` (as the
rate limit), `miss` (as the full path) for the rest. Pass, for every input:
- every datagram reaches the handler whole and in order per client, with its sender's
  address; none is read twice, none is left behind;
- every reply goes back, by the one sendmmsg, to the client that sent the query, carries
  the query's ID and parses with dnspython.

    .venv/bin/python fuzz/fastlane.py -runs=100000 -seed=1 -max_len=262144
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["globaldns.dns.message", "globaldns.dns.wire"]):
    from packets import reply_to

    from globaldns.dns import _fastlane  # type: ignore[attr-defined]
    from globaldns.dns.message import UDP

import dns.message

MAX_DATAGRAM = 65507
SERVER = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
SERVER.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
SERVER.bind(("127.0.0.1", 0))
SERVER.setblocking(False)
BUFFER = bytearray(_fastlane.BATCH * _fastlane.DATAGRAM)
CLIENTS = []
for i in range(4):
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    client.bind((f"127.0.{i}.{i + 1}", 0))
    client.setblocking(False)
    CLIENTS.append(client)


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    sent: list[tuple[int, bytes]] = []
    for _ in range(fdp.ConsumeIntInRange(1, _fastlane.BATCH)):
        who = fdp.ConsumeIntInRange(0, len(CLIENTS) - 1)
        size = fdp.ConsumeIntInRange(0, MAX_DATAGRAM) if fdp.ConsumeBool() \
            else fdp.ConsumeIntInRange(0, 600)
        datagram = fdp.ConsumeBytes(size)
        CLIENTS[who].sendto(datagram, SERVER.getsockname())
        sent.append((who, datagram))
    names = {c.getsockname(): i for i, c in enumerate(CLIENTS)}
    seen: list[tuple[int, bytes]] = []
    expected: dict[int, list[bytes]] = {}

    def handler(datagram: bytes, addr: tuple[str, int]) -> bytes | None:
        who = names[addr]
        seen.append((who, datagram))
        reply = reply_to(datagram, UDP)
        if reply is not None:
            expected.setdefault(who, []).append(datagram[:2])
        return reply

    def hit(datagram: bytes, ip: str) -> bytes | None:
        """As the wire cache: answers some datagrams (an odd first byte and a reply), and
        nothing is seen of the others until `miss` has them."""
        if not datagram or datagram[0] % 2 == 0 or reply_to(datagram, UDP) is None:
            return None
        return handler(datagram, next(a for a in names if a[0] == ip))

    def rate(ip: str, reply: bytes) -> bytes:
        if ip not in {a[0] for a in names}:
            raise AssertionError(f"rate limit asked about {ip}")
        return reply

    while len(seen) < len(sent):
        if _fastlane.drain(SERVER.fileno(), BUFFER, hit, rate, handler, _fastlane.BATCH) == 0:
            raise AssertionError(f"{len(sent) - len(seen)} datagrams never arrived")
    if _fastlane.drain(SERVER.fileno(), BUFFER, hit, rate, handler, _fastlane.BATCH) != 0:
        raise AssertionError("more datagrams than were sent")
    for who in range(len(CLIENTS)):
        if [d for w, d in seen if w == who] != [d for w, d in sent if w == who]:
            raise AssertionError(f"client {who}: datagrams changed or reordered")
        ids = []
        while True:
            try:
                reply = CLIENTS[who].recv(65535)
            except BlockingIOError:
                break
            ids.append(dns.message.from_wire(reply, keyring=False).id.to_bytes(2, "big"))
        if ids != expected.get(who, []):
            raise AssertionError(f"client {who}: replies {len(ids)}, queries answered "
                                 f"{len(expected.get(who, []))}")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
