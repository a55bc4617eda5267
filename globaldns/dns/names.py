"""The DNS vocabulary, each number once: rcodes, qtypes, classes and Extended DNS Error codes.

IntEnums, so a value is still the int that goes on the wire and `Rcode(3).name` is its
presentation. In 3.11 reading a member costs about 70 ns; the per-record loops of the
parsers bind the few they compare to module names once.
"""

from enum import IntEnum


class Rcode(IntEnum):
    """RFC 1035 4.1.1, RFC 6895 2.3; BADVERS (RFC 6891 6.1.3), BADKEY (RFC 8945 5.2.2) and
    BADCOOKIE (RFC 7873 8) need the OPT record's extended rcode or the TSIG record's error
    field."""

    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5
    YXDOMAIN = 6
    YXRRSET = 7
    NXRRSET = 8
    NOTAUTH = 9
    NOTZONE = 10
    BADVERS = 16
    BADKEY = 17
    BADCOOKIE = 23


class QType(IntEnum):
    """The record types this code names (RFC 1035 3.2.2, 3.2.3 and their successors)."""

    A = 1
    NS = 2
    CNAME = 5
    SOA = 6
    PTR = 12
    HINFO = 13
    MX = 15
    TXT = 16
    AAAA = 28
    SRV = 33
    NAPTR = 35
    DNAME = 39
    OPT = 41
    DS = 43
    RRSIG = 46
    NSEC = 47
    DNSKEY = 48
    NSEC3 = 50
    SVCB = 64
    HTTPS = 65
    SPF = 99
    TSIG = 250
    IXFR = 251
    AXFR = 252
    ANY = 255
    CAA = 257


class QClass(IntEnum):
    """RFC 1035 3.2.4, 3.2.5: Internet, CHAOS, and the query class `*`."""

    IN = 1
    CH = 3
    ANY = 255


class Ede(IntEnum):
    """Extended DNS Error info codes (RFC 8914 4)."""

    OTHER = 0
    STALE_ANSWER = 3
    NOT_READY = 14
    PROHIBITED = 18
    NOT_AUTHORITATIVE = 20
    NOT_SUPPORTED = 21
    NO_REACHABLE_AUTHORITY = 22
    NETWORK_ERROR = 23
