"""DNS COOKIE (RFC 7873) with the interoperable server cookies of RFC 9018.

A query's COOKIE option is read (and its length checked) by `dns/message.py`; here the
server cookie is checked and the one to send back is made. A server cookie is version 1:
version, three reserved bytes, a 32-bit timestamp and the SipHash-2-4 of client cookie,
version, reserved, timestamp and client address under a 16-byte secret (RFC 9018 4.1-4.4).

Secrets: from `cookies.secret_file` (its first line makes cookies, a second line is the
previous secret, still accepted: the operator rotates by writing both and reloading), or
derived from a random master key made at start, one secret per `cookies.rotate` period
(the previous period's accepted). The master goes to every worker process, so each worker
derives the same secrets and accepts every other worker's cookies.

Checking costs a pure-Python SipHash (about 10 µs); the last few thousand cookies found
valid are remembered per client address, so a client reusing its cookie costs a dict
lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import stat
import struct
import time
from collections.abc import Callable
from typing import Final

from globaldns.dns.message import Query
from globaldns.dns.stats import Stats

OPT_COOKIE: Final = 10
SECRET_BYTES: Final = 16
# RFC 9018 4.3: a server cookie is valid for an hour after its timestamp and up to five
# minutes before it (clock skew within an anycast set); one older than half an hour is
# replaced by a fresh one in the reply.
MAX_AGE: Final = 3600
MAX_AHEAD: Final = 300
RENEW_AFTER: Final = 1800
# Cookies found valid, remembered so a repeated one costs no hash; past this, forgotten.
MAX_REMEMBERED = 4096
# The secret-file is a line or two of hex: anything much larger is not one.
MAX_SECRET_FILE = 1024

_MASK = 0xFFFFFFFFFFFFFFFF
_QUAD = struct.Struct("<Q")


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK


def _sip_rounds(v0: int, v1: int, v2: int, v3: int,
                n: int) -> tuple[int, int, int, int]:
    """`n` SipRounds over the state (2 per message block, 4 to finish: SipHash-2-4)."""
    for _ in range(n):
        v0 = (v0 + v1) & _MASK
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & _MASK
        v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & _MASK
        v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & _MASK
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


def siphash24(key: bytes, data: bytes) -> bytes:
    """SipHash-2-4 (Aumasson and Bernstein, 2012) of `data` under a 16-byte key; the
    64-bit result as 8 bytes, little-endian, as RFC 9018 4.4 puts it in the cookie."""
    k0, k1 = struct.unpack("<QQ", key)
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573
    size = len(data)
    tail = size & ~7
    last = data[tail:] + bytes(7 - (size & 7)) + bytes((size & 0xFF,))
    for pos in range(0, tail + 8, 8):
        m = _QUAD.unpack_from(data, pos)[0] if pos < tail else _QUAD.unpack(last)[0]
        v3 ^= m
        v0, v1, v2, v3 = _sip_rounds(v0, v1, v2, v3, 2)
        v0 ^= m
    v2 ^= 0xFF
    v0, v1, v2, v3 = _sip_rounds(v0, v1, v2, v3, 4)
    return _QUAD.pack(v0 ^ v1 ^ v2 ^ v3)


def server_cookie(secret: bytes, client_cookie: bytes, client_ip: bytes, stamp: int,
                  reserved: bytes = b"\0\0\0") -> bytes:
    """RFC 9018 4.1: version 1, reserved, timestamp, hash (16 bytes)."""
    head = b"\x01" + reserved + struct.pack("!I", stamp)
    return head + siphash24(secret, client_cookie + head + client_ip)


def read_secret_file(path: str) -> tuple[bytes, ...]:
    """The secrets of a secret file: one or two lines of 32 hex digits (the first makes
    cookies, the second is the previous secret). Raises ValueError, naming no secret."""
    # Non-blocking, and a regular file only: a FIFO or device named here must not hang us.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("is not a regular file")
        content = os.read(fd, MAX_SECRET_FILE + 1)
    finally:
        os.close(fd)
    if len(content) > MAX_SECRET_FILE:
        raise ValueError(f"is longer than {MAX_SECRET_FILE} bytes")
    lines = [line.strip() for line in content.decode("ascii", "replace").splitlines()
             if line.strip()]
    if not 1 <= len(lines) <= 2:
        raise ValueError("must hold one or two lines (the secret, then the previous one)")
    secrets = []
    for number, line in enumerate(lines, 1):
        try:
            secret = bytes.fromhex(line)
        except ValueError:
            secret = b""
        if len(secret) != SECRET_BYTES:
            raise ValueError(f"line {number} is not {SECRET_BYTES} bytes as hex "
                             f"({2 * SECRET_BYTES} hex digits)")
        secrets.append(secret)
    return tuple(secrets)


class Cookies:
    """Checks the server cookie of a query and makes the one its reply carries."""

    def __init__(self, *, master: bytes, rotate: float, secrets: tuple[bytes, ...] = (),
                 stats: Stats, clock: Callable[[], float] = time.time) -> None:
        self.master = master
        self.rotate = rotate
        self.fixed = secrets
        """From the secret file: the first makes cookies, all are accepted."""
        self.clock = clock
        self._period = -1
        self._derived: tuple[bytes, ...] = ()
        self._valid: dict[tuple[str, bytes], tuple[int, bool]] = {}
        """(client address, cookie) → (its timestamp, made with the current secret)."""
        self._addresses: dict[str, bytes] = {}
        self.stats = stats

    def secrets(self, now: float) -> tuple[bytes, ...]:
        """The secret that makes cookies now, then those still accepted."""
        if self.fixed:
            return self.fixed
        period = int(now // self.rotate)
        if period != self._period:
            self._derived = (self._derive(period), self._derive(period - 1))
            self._period = period
            self._valid.clear()
        return self._derived

    def _derive(self, period: int) -> bytes:
        return hmac.new(self.master, b"globaldns cookie secret %d" % period,
                        hashlib.sha256).digest()[:SECRET_BYTES]

    def _address(self, ip: str) -> bytes:
        packed = self._addresses.get(ip)
        if packed is None:
            packed = ipaddress.ip_address(ip.split("%", 1)[0]).packed
            if len(self._addresses) >= MAX_REMEMBERED:
                self._addresses.clear()
            self._addresses[ip] = packed
        return packed

    def check(self, q: Query) -> None:
        """Sets `q.cookie_ok` (a valid server cookie came with it) and `q.cookie_reply`
        (the option value to send back: its client cookie and our server cookie)."""
        cookie = q.cookie
        assert cookie is not None
        now = self.clock()
        ip = q.client[0]
        client = cookie[:8]
        if len(cookie) > 8:
            self.secrets(now)  # a new period forgets what the old secrets made valid
            known = self._valid.get((ip, cookie))
            if known is None:
                which = self._verify(cookie, ip, now)
                if which >= 0:
                    known = (_stamp(cookie), which == 0)
                    if len(self._valid) >= MAX_REMEMBERED:
                        self._valid.clear()
                    self._valid[(ip, cookie)] = known
            if known is not None and now - MAX_AGE <= known[0] <= now + MAX_AHEAD:
                self.stats.cookies_valid += 1
                q.cookie_ok = True
                # RFC 9018 4.3: renewed past half an hour; also one from the previous
                # secret, and one with reserved bits set (A.3).
                if known[1] and now - known[0] <= RENEW_AFTER and cookie[9:12] == b"\0\0\0":
                    q.cookie_reply = cookie
                    return
            else:
                self.stats.cookies_invalid += 1
        else:
            self.stats.cookies_new += 1
        q.cookie_reply = client + self.make(client, ip, now)

    def make(self, client: bytes, ip: str, now: float) -> bytes:
        return server_cookie(self.secrets(now)[0], client, self._address(ip), int(now))

    def _verify(self, cookie: bytes, ip: str, now: float) -> int:
        """The index of the secret that made this cookie, or -1."""
        if len(cookie) != 24 or cookie[8] != 1:
            return -1
        stamp = _stamp(cookie)
        if not now - MAX_AGE <= stamp <= now + MAX_AHEAD:
            return -1
        address = self._address(ip)
        client = cookie[:8]
        reserved = cookie[9:12]
        for index, secret in enumerate(self.secrets(now)):
            if hmac.compare_digest(server_cookie(secret, client, address, stamp, reserved),
                                   cookie[8:]):
                return index
        return -1


def _stamp(cookie: bytes) -> int:
    return int.from_bytes(cookie[12:16], "big")
