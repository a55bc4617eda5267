"""atheris harness: ServiceEntry, WorkloadEntry and WorkloadGroup JSON → records → store →
snapshot → replies (docs/istio.md).

Each input is a few Istio objects built from the fuzzer's bytes with hostile values where
they hurt (wildcard, overlong and non-ASCII hosts, special and bogus addresses, host-name
addresses, wrong types, huge weights, odd probes), or raw JSON. They go the way a watch
event goes: the Istio source's `put`, `publish` into the store, the snapshot (with
`serve_hosts` names and patterns), and replies of the hosts are encoded and parsed back.

Passes when only the documented handling occurs: what cannot be used is skipped and
counted, nothing raises out of conversion, store or snapshot, no answer fails to build,
and the hosts written event by event (only those each event touched) are exactly what a
full computation of the cluster gives.

    .venv/bin/python fuzz/istio_objects.py -runs=1000000 -seed=1 -max_len=2048
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import atheris
from hostile import Draw

with atheris.instrument_imports(include=["globaldns"]):
    import dnslib

    from globaldns.answers.snapshot import Snapshot
    from globaldns.config.model import Config, LimitsConfig, ZoneConfig
    from globaldns.dns import wire
    from globaldns.dns.message import Query
    from globaldns.registry.store import Store
    from globaldns.sources.k8s.istio import PLURALS, IstioSource

HOSTS = ["users.api.example.com", "a.example.org", "b.a.example.org", "x.default.global",
         "global", "default.global", "*.example.com", "a" * 64 + ".com", "é.example.org",
         "UPPER.Example.Org.", "", "a..b", "api.elsewhere.net", "_x._tcp.a.example.org"]
ADDRESSES = ["10.0.0.1", "10.0.0.2", "127.0.0.1", "169.254.169.254", "::1", "fd00::1",
             "db.example.net", "unix:///run/x.sock", "1.2.3", "", "-bad-.example.com"]
NAMES = ["web", "vm-1", "x" * 70, "", "Web", "a.b"]

logging.disable(logging.CRITICAL)

STORE = Store()
SNAPSHOT = Snapshot(Config(zones=(ZoneConfig("global"),),
                           serve_hosts=("users.api.example.com", "*.example.org"),
                           limits=LimitsConfig(max_endpoints_per_service=50)), STORE)


class Objects(Draw):
    """Hostile Istio objects from the fuzzer's bytes."""

    def many(self, make: Any, most: int) -> list[Any]:
        return [make() for _ in range(self.fdp.ConsumeIntInRange(0, most))]

    def endpoint(self) -> Any:
        return {"address": self.value(ADDRESSES),
                "locality": self.value(["us-west1/us-west1-a", "r", "a//b", "a/b/c/d"]),
                "weight": self.value([1, 0, 3, 70000]),
                "labels": self.value([{"app": "web"}, {"app": 1}, {}]),
                "ports": self.value([{"http": 8080}, {"http": 0}, {"x": "80"}]),
                "network": self.value(["n1", ""])}

    def meta(self) -> dict[str, Any]:
        return {"name": self.value(NAMES), "namespace": self.value(["default", "other"]),
                "ownerReferences": [{"kind": "WorkloadGroup", "name": self.value(NAMES)}]}

    def object(self, plural: str) -> Any:
        if plural == "serviceentries":
            return {"metadata": self.meta(), "spec": {
                "hosts": self.many(lambda: self.value(HOSTS), 3),
                "ports": self.many(lambda: {"number": self.value([80, 0, 70000]),
                                            "name": self.value(NAMES),
                                            "protocol": self.value(["HTTP", "UDP"])}, 2),
                "endpoints": self.many(self.endpoint, 4),
                "location": self.value(["MESH_EXTERNAL", "MESH_INTERNAL"]),
                "resolution": self.value(["STATIC", "DNS", "NONE", "MAGIC"]),
                "workloadSelector": self.value([{"labels": {"app": "web"}}, None])}}
        if plural == "workloadentries":
            return {"metadata": self.meta(), "spec": self.endpoint(),
                    "status": {"conditions": [{"type": "Healthy",
                                               "status": self.value(["True", "False"])}]}}
        return {"metadata": self.meta(), "spec": {"probe": self.value([
            {"httpGet": {"port": self.value([8080, 0]), "path": self.value(["/", "x"])},
             "periodSeconds": self.value([1, 0, 99999])},
            {"tcpSocket": {"port": 22}}, {"exec": {"command": ["x"]}}])}}

    def raw(self) -> Any:
        try:
            return json.loads(self.fdp.ConsumeUnicodeNoSurrogates(2048))
        except ValueError:
            return None


def TestOneInput(data: bytes) -> None:
    objects = Objects(data)
    source = IstioSource("fz", STORE, owner=None, live=lambda: True,
                         limits=SNAPSHOT.config.limits)
    for _ in range(objects.fdp.ConsumeIntInRange(1, 4)):
        plural = objects.pick(list(PLURALS))
        raw = objects.raw() if objects.fdp.ConsumeIntInRange(0, 5) == 0 else \
            objects.object(plural)
        if isinstance(raw, dict):
            if objects.fdp.ConsumeIntInRange(0, 3) == 0:
                source.put(plural, raw)
                source.put(plural, objects.object(plural))  # often the same name again
            else:
                source.put(plural, raw)
        source.refresh()  # only the hosts this event touched
    # What the events wrote, host by host, is what the whole cluster computes to.
    written = {key: STORE.raw(key)[source.source] for key in STORE.keys_of(source.source)}
    if written != source.services():
        raise AssertionError("the hosts written per event differ from a full computation")
    if STORE.skipped.counts["build_failed"]:
        raise AssertionError("an answer failed to build")
    checked = 0
    for key in STORE.keys_of(source.source):
        for name in SNAPSHOT._owned.get(key, ()):
            for qtype, answers in SNAPSHOT.names[name].items():
                question = name + (qtype or 1).to_bytes(2, "big") + b"\x00\x01"
                q = Query(b"\x12\x34", 0x0100, name, question, qtype or 1, 1,
                          ("127.0.0.1", 5300), 0)
                packet = wire.encode(q, answers.pick())
                if checked < 4:
                    dnslib.DNSRecord.parse(packet)
                checked += 1
    source.drop()


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
