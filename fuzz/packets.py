"""atheris harness for the packet reader and the error reply path (dns/message.py parse,
dns/wire.py encode and error_reply).

Each input is one packet, read as UDP and as TCP. Pass, for every input:
- `parse` returns a Query or None, or raises `Malformed` (the one documented exception);
- the reply we would send (an empty NOERROR to a Query, `error_reply` to a Malformed)
  parses with dnspython and carries the packet's ID;
- reading it and building the reply costs < 1 ms of CPU (measured again with the garbage
  collector off before it counts as a failure, so a collection does not).

    .venv/bin/python fuzz/packets.py -runs=1000000 -seed=1
"""

from __future__ import annotations

import gc
import sys
import time

import atheris

with atheris.instrument_imports(include=["globaldns.dns.message", "globaldns.dns.wire"]):
    from globaldns.dns.message import TCP, UDP, Malformed, parse
    from globaldns.dns.wire import ZONE, Reply, encode, error_reply, rcode_body

import dns.message

CLIENT = ("192.0.2.1", 53000)
BUDGET_NS = 1_000_000
_EMPTY = Reply(rcode_body(0), by=ZONE)


def reply_to(data: bytes, transport: int) -> bytes | None:
    """What the server would send back: None (drop), a reply, or an error reply."""
    try:
        q = parse(data, CLIENT, transport)
    except Malformed as bad:
        return None if bad.rcode is None else error_reply(data, bad)
    return None if q is None else encode(q, _EMPTY)


def timed(data: bytes, transport: int) -> tuple[bytes | None, int]:
    start = time.thread_time_ns()
    reply = reply_to(data, transport)
    return reply, time.thread_time_ns() - start


def TestOneInput(data: bytes) -> None:
    for transport in (UDP, TCP):
        reply, spent = timed(data, transport)
        if spent > BUDGET_NS:
            gc.disable()
            try:
                reply, spent = timed(data, transport)
            finally:
                gc.enable()
            if spent > BUDGET_NS:
                raise AssertionError(f"{spent / 1e6:.2f} ms of CPU for {len(data)} bytes")
        if reply is None:
            continue
        message = dns.message.from_wire(reply, keyring=False)
        if message.id != int.from_bytes(data[:2], "big") or reply[:2] != data[:2]:
            raise AssertionError("the reply does not carry the query's ID")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
