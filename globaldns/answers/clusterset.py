"""The `clusterset.local` zone, per the MCS DNS specification (KEP-1645 specification.md).

A zone named `clusterset.local` in `zones` is served with the names of that
specification instead of `<service>.<namespace>.<zone>`:

- `dns-version.clusterset.local TXT "1.0.0"` (§2.2);
- a service with a ClusterSetIP ServiceImport (read in the cluster globaldns runs in):
  `<svc>.<ns>.svc.clusterset.local` A/AAAA its clusterset IPs, and per named port
  `_<port>._<proto>.<svc>.<ns>.svc.clusterset.local SRV` to that name (§2.3);
- any other exported service, as a multicluster headless service: A/AAAA its ready
  endpoints, routed (locality, health, routing rule or annotations) as in `global`;
  `<hostname>.<clusterid>.<svc>.<ns>.svc.clusterset.local` per ready endpoint, and SRV per
  named port to those names (§2.4); no ready endpoint: the name does not exist (§2.4.1);
- never `<clusterid>.<svc>.<ns>.svc.clusterset.local` (§2.3.4, §2.4.4).

PTR records (§2.3.3, §2.4.3) are not served: the reverse zones are the cluster DNS's.
"""

from __future__ import annotations

from collections.abc import Generator

from globaldns.answers import tables as T
from globaldns.dns import records as R
from globaldns.dns.message import text_to_wire
from globaldns.dns.names import QType
from globaldns.dns.wire import Body
from globaldns.registry.model import Endpoint, Locality, Port
from globaldns.registry.store import MergedService, Skipped

ZONE = "clusterset.local"
SCHEMA_VERSION = "1.0.0"
"""The version of the specification these names follow (its §1)."""
# §2.2's example; the version changes only with this code.
VERSION_TTL = 28800


def namespace_name(namespace: str, zone: str) -> str:
    """The empty non-terminal a namespace makes in a zone."""
    return f"{namespace}.svc.{zone}" if zone == ZONE else f"{namespace}.{zone}"


def apex(zone: T.Zone) -> dict[bytes, T.NameTable]:
    """The names the zone has with no service: the schema version, and `svc`."""
    version = f"dns-version.{ZONE}"
    svc = f"svc.{ZONE}"
    return {
        text_to_wire(version): {
            QType.TXT: T.AnswerSet([T.answer(R.body(version, answer=[
                R.txt(version, VERSION_TTL, [SCHEMA_VERSION])]))]),
            T.NODATA: zone.nodata},
        text_to_wire(svc): {T.NODATA: zone.nodata},
    }


def names(zone: T.Zone, service: MergedService, answers: T.Router, skipped: Skipped
          ) -> Generator[None, None, dict[bytes, T.NameTable]]:
    """The names of one exported service in `clusterset.local`; `answers` routes its
    endpoints (`Snapshot.router`), `skipped` counts what is left out."""
    namespace, name = service.key
    base = f"{name}.{namespace}.svc.{zone.name}"
    ttl = T.ttl_of(zone, service)
    out: dict[bytes, T.NameTable] = {}
    yield
    # An ExternalName Service has no MCS records (a ServiceExport of one is a conflict,
    # KEP-1645 "Constraints and Conflict Resolution").
    if service.external_name or not T.fits(base):
        if service.external_name == "":
            skipped.skip("name_too_long", base)
        return out
    ports = T.ports(service)
    imported = service.imported
    if imported is not None and not imported.headless:
        if not imported.ips:
            return out  # no clusterset IP allocated yet: nothing to answer with
        out.update(_clusterset_ip(zone, base, imported.ips, ports, ttl))
        return out

    ready = [e for e in service.endpoints if e.ready]
    if not ready:
        return out
    parts: dict[str, bytes] = {}

    def part(e: Endpoint) -> bytes:
        found = parts.get(e.address)
        if found is None:
            found = parts[e.address] = R.record(R.QUESTION, *T.typed(e, ttl))
        return found

    def encode(order: list[Endpoint], _locality: Locality) -> Body:
        return R.joined([part(e) for e in T.unique(order)])

    table: T.NameTable = {T.NODATA: zone.nodata, QType.ANY: T.AnswerSet([T.answer(
        R.body(base, answer=[R.hinfo_rfc8482(base, ttl)]))])}
    for rtype, family in ((QType.A, 4), (QType.AAAA, 6)):
        members = [e for e in ready if e.family == family]
        if members:
            table[rtype] = answers(members, encode)
    out[text_to_wire(base)] = table

    # One name per hostname and cluster: every ready address of it (§2.4.1).
    named: dict[str, dict[int, list[bytes]]] = {}
    unnamed: set[int] = set()
    for count, e in enumerate(ready, 1):
        if count % T.STEP == 0:
            yield
        label = e.label()
        owner = f"{label}.{e.cluster}.{base}"
        # fits(owner), knowing base fits: the endpoint's label and cluster are checked.
        if not (0 < len(label) <= 63 and len(owner) <= 253 and label.isascii()
                and "." not in label and 0 < len(e.cluster) <= 63 and e.cluster.isascii()
                and "." not in e.cluster):
            skipped.skip("name_too_long", owner)
            unnamed.add(id(e))
            continue
        record = part(e)
        of_type = named.setdefault(owner, {}).setdefault(
            QType.A if e.family == 4 else QType.AAAA, [])
        if record not in of_type:
            of_type.append(record)
    for owner, by_type in named.items():
        etable: T.NameTable = {T.NODATA: zone.nodata}
        for kind, parts_ in by_type.items():
            etable[kind] = T.AnswerSet([T.answer(R.joined(parts_))])
        out[text_to_wire(owner)] = etable
    yield
    for port in ports:
        proto = f"_{port.protocol}.{base}"
        sname = f"_{port.name}.{proto}"
        if not T.fits(sname):
            skipped.skip("name_too_long", sname)
            continue
        out.setdefault(text_to_wire(proto), {T.NODATA: zone.nodata})
        targets = [e for e in ready if T.port_of(e, port) and id(e) not in unnamed]
        stable: T.NameTable = {T.NODATA: zone.nodata}
        if targets:
            stable[QType.SRV] = answers(targets, T.srv_encoder(zone, base, sname, port, ttl=ttl))
        out[text_to_wire(sname)] = stable
    return out


def _clusterset_ip(zone: T.Zone, base: str, ips: tuple[str, ...], ports: list[Port],
                   ttl: int) -> dict[bytes, T.NameTable]:
    """§2.3: the clusterset IPs, and SRV records naming the service itself."""
    out: dict[bytes, T.NameTable] = {}
    records = [R.address(base, ttl, ip) for ip in ips]
    table: T.NameTable = {T.NODATA: zone.nodata, QType.ANY: T.AnswerSet([T.answer(
        R.body(base, answer=[R.hinfo_rfc8482(base, ttl)]))])}
    for rtype in (QType.A, QType.AAAA):
        same = [r for r in records if r.rtype == rtype]
        if same:
            table[rtype] = T.AnswerSet([T.answer(R.body(base, answer=same))])
    out[text_to_wire(base)] = table
    for port in ports:
        proto = f"_{port.protocol}.{base}"
        sname = f"_{port.name}.{proto}"
        if not T.fits(sname):
            continue
        out.setdefault(text_to_wire(proto), {T.NODATA: zone.nodata})
        srv = R.RR(sname, QType.SRV, ttl,
                   R.srv_rdata(priority=0, weight=1, port=port.port, target=base))
        out[text_to_wire(sname)] = {
            QType.SRV: T.AnswerSet([T.answer(R.body(sname, answer=[srv],
                                                     additional=records))]),
            T.NODATA: zone.nodata}
    return out
