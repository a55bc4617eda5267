"""Why an answer is what it is, for one client: `globaldns explain`, `/debug/explain` and
CHAOS TXT all print this."""

from __future__ import annotations

import ipaddress
from typing import Any

from globaldns.answers import clusterset
from globaldns.answers.snapshot import Snapshot
from globaldns.dns.message import text_to_wire
from globaldns.registry.store import Store
from globaldns.routing.locality import TIER_NAMES, tier


def parse_ecs(subnet: str) -> tuple[int, int, bytes]:
    """`10.20.0.0/16` → the ECS option's (family, source prefix, address bytes)."""
    net = ipaddress.ip_network(subnet, strict=False)
    return (1 if net.version == 4 else 2, net.prefixlen,
            net.network_address.packed[: (net.prefixlen + 7) // 8])


def explain(snapshot: Snapshot, store: Store, name: str, *, client: str = "127.0.0.1",
            ecs: str | tuple[int, int, bytes] | None = None) -> dict[str, Any]:
    name = name.lower().rstrip(".")
    ecs_tuple = parse_ecs(ecs) if isinstance(ecs, str) else ecs
    profile = snapshot.locator.locate(client, ecs_tuple)
    out: dict[str, Any] = {
        "name": name, "client": client, "ecs": ecs if isinstance(ecs, str) else None,
        "locality": str(profile.locality) or "(none)", "locality_from": profile.origin,
        "ecs_scope": profile.scope if ecs_tuple else None,
    }
    for alias in snapshot.config.aliases:
        if alias.name == name:
            out["alias"] = f"{alias.mode} to {alias.target}"
            name = alias.target
    try:
        zone = snapshot.zone_of(text_to_wire(name))
    except ValueError:
        zone = None
    if zone is not None and store.get(("", name)) is not None \
            and text_to_wire(name) in snapshot.names:
        out["host"] = "a ServiceEntry host (docs/istio.md)"
    if zone is None:
        out["answer"] = "not in a served zone: forwarded if a forward zone covers it, else REFUSED"
        return out
    labels = name[: -len(zone.name) - 1].split(".") if name != zone.name else []
    out["zone"] = zone.name
    if zone.name == clusterset.ZONE and labels[-1:] == ["svc"]:
        labels = labels[:-1]  # <service>.<namespace>.svc.clusterset.local
    if "host" in out:
        labels = [name, ""]
    elif len(labels) not in (2, 3):
        out["answer"] = "not a service name (<service>.<namespace>.<zone>)"
        return out
    subset_name = labels[0] if len(labels) == 3 else ""
    key = (labels[-1], labels[-2])
    service = store.get(key)
    if service is None:
        out["answer"] = "NXDOMAIN: no such service" if snapshot.synced else \
            "SERVFAIL: not synced yet"
        return out
    members = list(service.endpoints)
    if subset_name:
        subsets = snapshot.subsets_of(key, snapshot.rules.match(key[1], key[0]))
        subset = next((s for s in subsets if s.name == subset_name), None)
        if subset is None:
            out["answer"] = f"NXDOMAIN: {subset_name!r} is not a subset of {key[1]}.{key[0]}"
            return out
        members = [e for e in members if set(subset.labels) <= set(e.labels)]
        out["subset"] = f"{subset.name} {dict(subset.labels)}"
    p, _, health = snapshot.plan(key, members, profile, zone.config)
    out["rule"] = snapshot.rule_for(service)[1]
    group_of: dict[str, str] = {}
    total = sum(w for w, _ in p.groups)
    # A plan with nothing to answer (a view or subset matching no endpoint) has one empty
    # group and no leads.
    for (weight, _), lead in zip(p.groups, p.leads or ((),) * len(p.groups), strict=True):
        share = f"{100 * weight / total:.0f}%"
        for e in lead:
            group_of[e.address] = f"{share} (shared)" if len(lead) > 1 else share
    out["endpoints"] = [{
        "address": e.address, "cluster": e.cluster, "locality": str(e.locality) or "(none)",
        "ready": e.ready, "cluster_healthy": health.get(e.cluster, True),
        "tier": TIER_NAMES[tier(profile.locality, e.locality)],
        "leads": group_of.get(e.address, ""),
        "answered": any(e in order for _, orders in p.groups for order in orders),
        "external": e.external, "network": e.network,
    } for e in members]
    out["groups"] = [{"weight": w, "first_answer": [e.address for e in orders[0]]}
                     for w, orders in p.groups if orders]
    out["notes"] = list(p.notes)
    out["answer"] = "NOERROR" if any(g["first_answer"] for g in out["groups"]) else \
        "NOERROR, no records (NODATA)"
    return out


def lines(report: dict[str, Any]) -> list[str]:
    """The report as short text lines (for the terminal and CHAOS TXT records)."""
    out = [f"name {report['name']} client {report['client']}"
           + (f" ecs {report['ecs']}" if report.get("ecs") else ""),
           f"client locality {report['locality']} from {report['locality_from']}"
           + (f" (ecs scope /{report['ecs_scope']})" if report.get("ecs_scope") is not None
              else "")]
    for key in ("alias", "host", "zone", "subset", "rule"):
        if key in report:
            out.append(f"{key} {report[key]}")
    for e in report.get("endpoints", []):
        state = "ready" if e["ready"] else "not ready"
        if not e["cluster_healthy"]:
            state += ", cluster below min_healthy"
        out.append(f"endpoint {e['address']} cluster {e['cluster']} locality {e['locality']}"
                   f" {state}; tier {e['tier']}"
                   + ("; external (MESH_EXTERNAL)" if e.get("external") else "")
                   + (f"; network {e['network']}" if e.get("network") else "")
                   + (f"; leads {e['leads']} of answers" if e["leads"] else "")
                   + ("" if e["answered"] else "; not answered"))
    for note in report.get("notes", []):
        out.append(f"note {note}")
    for g in report.get("groups", []):
        out.append(f"answer (weight {g['weight']}): {' '.join(g['first_answer']) or '-'}")
    out.append(f"result {report['answer']}")
    return out
