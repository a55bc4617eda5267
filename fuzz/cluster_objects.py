"""atheris harness: EndpointSlice and Service JSON → records → store → snapshot → replies.

Each input is one or two API objects, built from the fuzzer's bytes with hostile values
where they hurt (names past 63 bytes, non-ASCII, special and bogus addresses, wrong
types, missing fields), or raw JSON. They go the way a watch event goes: the cluster
source's conversion, the store, the snapshot, and every prepared reply of the service is
encoded and parsed back.

Passes when only the documented handling occurs: a bad object or part of one is skipped
and counted (`Skipped`), nothing raises out of conversion, store or snapshot, no answer
fails to build (`build_failed` stays 0), and every reply parses.

    .venv/bin/python fuzz/cluster_objects.py -runs=1000000 -seed=1 -max_len=2048
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
    from globaldns.config.model import ClusterConfig, Config, LimitsConfig
    from globaldns.dns import wire
    from globaldns.dns.message import Query
    from globaldns.registry.model import Locality
    from globaldns.registry.store import Store
    from globaldns.sources.k8s.cluster import ClusterSource
    from globaldns.sources.k8s.watch import Timing

NAMES = ["web", "prod", "a", "x" * 63, "y" * 64, "Web", "a.b", "-a", "a_b", "é", "", "_x"]
ADDRESSES = ["10.0.0.1", "10.0.0.2", "127.0.0.1", "169.254.1.1", "0.0.0.0", "224.0.0.5",
             "::1", "fe80::1", "::", "ff02::1", "::ffff:10.0.0.1", "fd00::1", "2001:db8::1",
             "010.0.0.1", "1.2.3", "not-ip", ""]
PROTOCOLS = ["TCP", "UDP", "SCTP", "tcp", "HTTP", "x" * 70, ""]
TYPES = (1, 28, 33, 255, 16)

# Each skip logs once per object; a million hostile objects would fill the terminal.
logging.disable(logging.CRITICAL)

STORE = Store()
SNAPSHOT = Snapshot(Config(limits=LimitsConfig(max_endpoints_per_service=50)), STORE)
CLUSTER = ClusterConfig("fz", locality=Locality("r1"))


def _credentials() -> Any:
    raise AssertionError("the harness never connects")


class Objects(Draw):
    """Hostile API objects from the fuzzer's bytes."""

    def ports(self) -> list[Any]:
        return [{"name": self.value([*NAMES, "http", "grpc"]),
                 "port": self.pick([80, 0, -1, 65535, 65536, "80", None]),
                 "protocol": self.value(PROTOCOLS)}
                for _ in range(self.fdp.ConsumeIntInRange(0, 3))]

    def meta(self, name: Any, service: Any = None) -> dict[str, Any]:
        labels = {} if service is None else {"kubernetes.io/service-name": service}
        return {"name": name, "namespace": self.value(NAMES), "labels": labels}

    def endpoint(self) -> Any:
        if self.fdp.ConsumeIntInRange(0, 15) == 0:
            return self.pick([None, "x", [1]])
        return {"addresses": [self.value(ADDRESSES)
                              for _ in range(self.fdp.ConsumeIntInRange(0, 3))],
                "conditions": {"ready": self.pick([True, False, None]),
                               "serving": self.pick([True, False, None]),
                               "terminating": self.pick([True, None])},
                "hostname": self.value(NAMES), "zone": self.value(["z1", "z2"])}

    def endpoint_slice(self) -> dict[str, Any]:
        return {"metadata": self.meta(self.value([*NAMES, "web-1", "web-2"]),
                                      self.value(NAMES)),
                "addressType": self.pick(["IPv4", "IPv6", "FQDN", None]),
                "endpoints": [self.endpoint() for _ in range(self.fdp.ConsumeIntInRange(0, 8))],
                "ports": self.ports()}

    def service(self) -> dict[str, Any]:
        kind = self.pick(["ClusterIP", "ExternalName", None])
        spec: dict[str, Any] = {"type": kind, "ports": self.ports()}
        if kind == "ExternalName":
            spec["externalName"] = self.value([*NAMES, "db.example.com", "a..b"])
        return {"metadata": self.meta(self.value(NAMES)), "spec": spec}

    def raw(self) -> Any:
        try:
            return json.loads(self.fdp.ConsumeUnicodeNoSurrogates(2048))
        except ValueError:
            return None


def _check_answers(keys: set[tuple[str, str]]) -> None:
    """Every prepared reply of the service's names encodes into a reply that parses."""
    checked = 0
    for key in keys:
        for name in SNAPSHOT._owned.get(key, ()):
            table = SNAPSHOT.names[name]
            for qtype, answers in table.items():
                question = name + (qtype or 1).to_bytes(2, "big") + b"\x00\x01"
                q = Query(b"\x12\x34", 0x0100, name, question, qtype or 1, 1,
                          ("127.0.0.1", 5300), 0)
                packet = wire.encode(q, answers.pick())
                if checked < 4:
                    dnslib.DNSRecord.parse(packet)
                checked += 1


def TestOneInput(data: bytes) -> None:
    objects = Objects(data)
    source = ClusterSource(CLUSTER, STORE, load_credentials=_credentials, timing=Timing(),
                           limits=SNAPSHOT.config.limits)
    source._published = True
    touched: set[tuple[str, str]] = set()
    for _ in range(objects.fdp.ConsumeIntInRange(1, 2)):
        mode = objects.fdp.ConsumeIntInRange(0, 4)
        raw = objects.raw() if mode == 0 else (
            objects.service() if mode == 1 else objects.endpoint_slice())
        if not isinstance(raw, dict):
            continue
        if mode == 1 or (mode == 0 and "spec" in raw):
            service = source._convert_service(raw)
            if service is not None:
                source._services[service.key] = service
                touched.add(service.key)
        else:
            record = source._convert_slice(raw)
            if record is not None:
                touched.update(source._put_slice(record))
    for key in touched:
        source._refresh(key)
    if STORE.skipped.counts["build_failed"]:
        raise AssertionError("an answer failed to build")
    _check_answers(touched)
    STORE.drop_source(source.source)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
