"""atheris harness: an upstream reply → the relay check (`globaldns.dns.relay.relayed`) → the
reply a client gets.

Each input is a whole upstream reply. Inputs the forwarder would never pass to the check
(not one plain question: `_matches` compares it with ours) are skipped. Passes when:
`relayed()` returns or raises `MalformedReply`, nothing else; it takes less than 1 ms of
CPU; and the client's reply built from what it returned — whole, cut for a 512-byte
client, and with every TTL rewritten at the offsets the cache uses — parses with
dnspython, each of its TTLs being the one written. dnspython reads the RDATA of the types
the check looks into (relay.CHECKED_IN, CHECKED_ANY_CLASS) with their own parsers, the
other types' as opaque bytes (RFC 3597), as the relay treats them.

    .venv/bin/python fuzz/relayed_reply.py seeds /tmp/relay-seeds  # writes the seeds
    .venv/bin/python fuzz/relayed_reply.py -runs=1000000 -seed=1 -max_len=4096 \\
        /tmp/relay-new /tmp/relay-seeds
"""

from __future__ import annotations

import contextlib
import importlib.util
import struct
import sys
import time
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["globaldns"]):
    from globaldns.dns import relay, wire
    from globaldns.dns.message import TCP, UDP, Query
    from globaldns.dns.relay import CHECKED_ANY_CLASS, CHECKED_IN, MalformedReply, relayed

import dns.message
import dns.rdata

# The CPU bound is the real code's, not the coverage-instrumented copy's (several times
# slower): a second, plain copy of the module is timed.
_spec = importlib.util.spec_from_file_location("relay_plain", relay.__file__)
assert _spec is not None and _spec.loader is not None
plain = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plain)

CPU_LIMIT = 0.001
TTL_MARK = 0x01020304

_real_class = dns.rdata.get_rdata_class


def _as_relayed(rdclass, rdtype, use_generic=True):  # type: ignore[no-untyped-def]
    if rdtype in (CHECKED_IN if rdclass == 1 else CHECKED_ANY_CLASS) or rdtype == 41:
        return _real_class(rdclass, rdtype, use_generic)
    return dns.rdata.GenericRdata


dns.rdata.get_rdata_class = _as_relayed


def _question_end(data: bytes) -> int:
    """Where the one plain question ends; -1 when there is not exactly one such."""
    if len(data) < 17 or data[4:6] != b"\x00\x01":
        return -1
    pos = 12
    while pos < len(data) and pos < 12 + 255:
        length = data[pos]
        if length == 0:
            return pos + 5 if pos + 5 <= len(data) else -1
        if length > 63:
            return -1
        pos += length + 1
    return -1


def _check(reply: bytes, body: wire.Body) -> None:
    message = dns.message.from_wire(reply)
    assert len(message.question) == 1
    counts = [sum(len(rrset) for rrset in section)
              for section in (message.answer, message.authority, message.additional)]
    assert counts[0] <= body.an and counts[1] <= body.ns, (counts, body.an, body.ns)


def TestOneInput(data: bytes) -> None:
    qend = _question_end(data)
    if qend < 0:
        return
    start = time.process_time()
    with contextlib.suppress(plain.MalformedReply):
        plain.relayed(data, qend)
    spent = time.process_time() - start
    if spent > CPU_LIMIT:
        raise AssertionError(f"{spent * 1000:.2f} ms of CPU for {len(data)} bytes")
    try:
        body = relayed(data, qend)
    except MalformedReply:
        return
    assert len(body.ttls) == len(body.ttl_offsets) == body.an + body.ns + body.ar
    question = data[12:qend]
    qname = question[:-4].lower()
    qtype, qclass = struct.unpack("!HH", question[-4:])
    for transport, edns in ((TCP, 1232), (UDP, -1)):  # whole, and cut to 512 bytes
        q = Query(data[:2], 0x0100, qname, question, qtype, qclass, ("127.0.0.1", 1), transport)
        q.edns = edns
        q.ra = True
        _check(wire.encode(q, wire.Reply(body, by=wire.FORWARD, ede=body.ede)), body)
    marked = bytearray(body.data)
    for offset in body.ttl_offsets:
        struct.pack_into("!I", marked, offset, TTL_MARK)
    patched = wire.Body(body.rcode, False, bytes(marked), body.an, body.ns, body.ar, body.ends)
    q = Query(data[:2], 0x0100, qname, question, qtype, qclass, ("127.0.0.1", 1), TCP)
    message = dns.message.from_wire(wire.encode(q, wire.Reply(patched, by=wire.FORWARD)))
    for section in (message.answer, message.authority, message.additional):
        for rrset in section:
            assert rrset.ttl == TTL_MARK, rrset


def write_seeds(directory: Path) -> None:
    """Seeds: the responses with one plain question among tests/data/fuzz/dns-packets.bin
    (CZ-NIC's corpus, see tests/data/README.md)."""
    directory.mkdir(parents=True, exist_ok=True)
    packets = (Path(__file__).resolve().parent.parent / "tests" / "data" / "fuzz"
               / "dns-packets.bin").read_bytes()
    pos = n = 0
    while pos + 2 <= len(packets):
        length = int.from_bytes(packets[pos : pos + 2], "big")
        packet = packets[pos + 2 : pos + 2 + length]
        pos += 2 + length
        if packet[2:3] and packet[2] & 0x80 and _question_end(packet) > 0:
            (directory / f"{n:05d}").write_bytes(packet)
            n += 1


def main() -> None:
    if sys.argv[1:2] == ["seeds"]:
        write_seeds(Path(sys.argv[2]))
        return
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
