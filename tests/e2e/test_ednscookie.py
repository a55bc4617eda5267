"""ISC's EDNS compliance check `ednscookie` (genreport, https://gitlab.isc.org/isc-projects/
DNS-Compliance-Testing), reproduced with the real dig because genreport is not installed:
it sends `dig +norec +noad +edns=0 +nocookie +ednsopt=10:<8-byte client cookie> soa
<zone>` and reports `ok` when the reply is NOERROR, EDNS version 0, with the SOA, and
carries a COOKIE option that starts with the client cookie sent and is 16 to 40 bytes
long (a server cookie of 8 to 32 bytes); `nocookie` when the option is missing."""

from __future__ import annotations

import re

from tests.helpers.dns import dig

CLIENT = "0102030405060708"


def test_genreport_ednscookie_check_is_ok(example):
    out = dig(example.port, "+norec", "+noad", "+edns=0", "+nocookie",
              f"+ednsopt=10:{CLIENT}", "soa", "global")
    assert "status: NOERROR" in out
    assert re.search(r"EDNS: version: 0", out)
    assert re.search(r"(?m)^global\.\s+\d+\s+IN\s+SOA\s", out)
    cookie = re.search(r"; COOKIE: ([0-9a-f]+)", out)
    assert cookie, out
    value = cookie.group(1)
    assert value.startswith(CLIENT) and 16 <= len(value) // 2 <= 40
