"""Load for the fault tests: a bounded query loop over a real UDP socket, on its own thread,
that keeps every answer so the test can judge them after the fault."""

from __future__ import annotations

import random
import socket
import struct
import threading
from dataclasses import dataclass

import dnslib

from tests.helpers.dns import make_query


@dataclass(frozen=True)
class Answer:
    name: str
    """As asked, lowercased; "" for a query that got no answer in time."""
    rcode: str
    addresses: tuple[str, ...]
    ede: tuple[int, ...]
    echoed: bool
    """The question came back byte for byte (its 0x20 casing too)."""


LOST = "LOST"


class Load:
    """Ask `names` in turn (`{i}` in a name becomes a counter: a name never asked before),
    each with random 0x20 casing, one query at a time, until stopped or `limit` queries;
    a query unanswered within `timeout` is kept as LOST. Between two queries it waits
    `pace` seconds on its stop event, so the load stays light on a shared machine."""

    def __init__(self, port: int, names: list[str], *, limit: int = 20_000,
                 timeout: float = 3.0, pace: float = 0.002, seed: int = 0) -> None:
        self.port = port
        self.names = names
        self.limit = limit
        self.timeout = timeout
        self.pace = pace
        self.rng = random.Random(seed)
        self.answers: list[Answer] = []
        self._more = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)

    def mark(self) -> int:
        """Where the answers given from now on start."""
        return len(self.answers)

    def since(self, mark: int) -> list[Answer]:
        return self.answers[mark:]

    def wait_for(self, count: int, *, after: int = 0, timeout: float = 30.0) -> list[Answer]:
        """At least `count` answers after the mark `after` (the loop keeps running)."""
        with self._more:
            ok = self._more.wait_for(lambda: len(self.answers) >= after + count or
                                     not self._thread.is_alive(), timeout)
        assert ok and len(self.answers) >= after + count, (
            f"{len(self.answers) - after} of {count} answers")
        return self.answers[after:]

    def _cased(self, name: str) -> str:
        return "".join(c.upper() if c.isalpha() and self.rng.random() < 0.5 else c
                       for c in name)

    def _run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(self.timeout)
            for n in range(self.limit):
                if self._stop.is_set():
                    return
                name = self.names[n % len(self.names)].replace("{i}", str(n))
                qid = n & 0xFFFF
                data = make_query(self._cased(name), qid=qid, edns=1232)
                sock.sendto(data, ("127.0.0.1", self.port))
                self._record(name, data, self._receive(sock, qid))
                self._stop.wait(self.pace)

    def _receive(self, sock: socket.socket, qid: int) -> bytes | None:
        try:
            while True:
                reply = sock.recv(65535)
                if len(reply) >= 2 and struct.unpack("!H", reply[:2])[0] == qid:
                    return reply
        except TimeoutError:
            return None

    def _record(self, name: str, query: bytes, raw: bytes | None) -> None:
        if raw is None:
            answer = Answer(name, LOST, (), (), False)
        else:
            reply = dnslib.DNSRecord.parse(raw)
            question_end = len(query) - 11  # the query: header, question, OPT (11 bytes)
            answer = Answer(
                name, dnslib.RCODE.get(reply.header.rcode),
                tuple(sorted(str(rr.rdata) for rr in reply.rr
                             if rr.rtype in (dnslib.QTYPE.A, dnslib.QTYPE.AAAA))),
                tuple(int.from_bytes(o.data[:2], "big") for rr in reply.ar
                      if rr.rtype == dnslib.QTYPE.OPT for o in rr.rdata if o.code == 15),
                raw[12:question_end] == query[12:question_end])
        with self._more:
            self.answers.append(answer)
            self._more.notify_all()
