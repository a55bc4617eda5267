"""The benchmark data and the server configs made from it.

Every server is given the same names and records, so that a queries/s figure is a
comparison of servers, not of data sets: N names with 3 A records each and no AAAA, and
a query file that is 90 % A hits, 5 % AAAA (NODATA) and 5 % NXDOMAIN.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

NAMESPACE = "bench"
RECORDS_PER_NAME = 3
QUERY_LINES = 20_000
# Locality of the resolver and of the endpoints: two endpoints in the resolver's own
# zone and one in another region, so that globaldns orders two tiers and rotates the first.
RESOLVER_LOCALITY = "us-central1/us-central1-a"


@dataclass(frozen=True)
class Dataset:
    """Names (lowercase, no trailing dot) under `zone`, their A records, and absent names."""

    zone: str
    ttl: int
    negative_ttl: int
    names: tuple[str, ...]
    addresses: dict[str, tuple[str, ...]]
    nx_names: tuple[str, ...]

    def service(self, name: str) -> str:
        return name.split(".", 1)[0]


def build_dataset(zone: str, *, count: int = 1000, ttl: int, negative_ttl: int) -> Dataset:
    names = tuple(f"svc{i:04d}.{NAMESPACE}.{zone}" for i in range(count))
    addresses = {
        name: tuple(f"10.{k + 1}.{i // 256}.{i % 256}" for k in range(RECORDS_PER_NAME))
        for i, name in enumerate(names)
    }
    nx_names = tuple(f"nx{i:04d}.{NAMESPACE}.{zone}" for i in range(count))
    return Dataset(zone, ttl, negative_ttl, names, addresses, nx_names)


def query_lines(ds: Dataset, *, lines: int = QUERY_LINES, seed: int = 7) -> list[str]:
    """dnsperf input: exactly 90 % A hits, 5 % AAAA NODATA, 5 % NXDOMAIN, shuffled."""
    n_nodata = lines * 5 // 100
    n_nx = lines * 5 // 100
    n_hit = lines - n_nodata - n_nx
    out = [f"{ds.names[i % len(ds.names)]} A" for i in range(n_hit)]
    out += [f"{ds.names[i % len(ds.names)]} AAAA" for i in range(n_nodata)]
    out += [f"{ds.nx_names[i % len(ds.nx_names)]} A" for i in range(n_nx)]
    random.Random(seed).shuffle(out)
    return out


def expected_rcode_shares(lines: list[str], ds: Dataset) -> dict[str, float]:
    absent = set(ds.nx_names)
    nx = sum(1 for line in lines if line.split()[0] in absent)
    return {"NOERROR": 1 - nx / len(lines), "NXDOMAIN": nx / len(lines)}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def _dump_yaml(doc: dict) -> str:
    try:
        import yaml  # globaldns depends on pyyaml; JSON is the fallback (it is YAML too)
    except ImportError:
        return json.dumps(doc, indent=2) + "\n"
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)


# --- globaldns ---------------------------------------------------------------------------

def globaldns_config(
    ds: Dataset | None, port: int, *, forward_upstream: int | None = None
) -> str:
    doc: dict = {
        # No lameduck: the harness stops each server with SIGTERM and a 5 s grace.
        "dns": {"listen": f"127.0.0.1:{port}", "lameduck": "0s"},
        "resolver": {"locality": RESOLVER_LOCALITY},
        "zones": [{"name": "global", "ttl": 5, "negative_ttl": 5}],
        "clusters": [
            {"name": "primary", "locality": "us-central1"},
            {"name": "remote", "locality": "us-west1"},
        ],
    }
    if ds is not None:
        assert ds.zone == "global", "globaldns serves the global zone"
        doc["zones"] = [{"name": "global", "ttl": ds.ttl, "negative_ttl": ds.negative_ttl}]
        doc["services"] = [
            {
                "name": ds.service(name),
                "namespace": NAMESPACE,
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                "endpoints": [
                    {"address": a, "cluster": "primary", "locality": RESOLVER_LOCALITY}
                    if k < 2
                    else {"address": a, "cluster": "remote"}
                    for k, a in enumerate(ds.addresses[name])
                ],
            }
            for name in ds.names
        ]
    if forward_upstream is not None:
        doc["forward"] = [{"zone": ".", "upstreams": [f"127.0.0.1:{forward_upstream}"]}]
        doc["cache"] = {"capacity": 10000}
    return _dump_yaml(doc)


# --- dnsmasq -----------------------------------------------------------------------------

def _dnsmasq_common(port: int) -> list[str]:
    # Loopback only, no /etc/hosts, no resolv.conf, no DHCP, stays in the foreground.
    return [
        f"port={port}",
        "listen-address=127.0.0.1",
        "bind-interfaces",
        "no-resolv",
        "no-poll",
        "no-hosts",
        "pid-file=",
        "log-facility=-",
    ]


def dnsmasq_authoritative_config(ds: Dataset, port: int) -> str:
    lines = [
        *_dnsmasq_common(port),
        # `local=` answers the zone from local data only: unknown names get NXDOMAIN,
        # known names without AAAA get NODATA; nothing is forwarded (there is no server).
        f"local=/{ds.zone}/",
        f"local-ttl={ds.ttl}",
        f"neg-ttl={ds.negative_ttl}",
    ]
    for name in ds.names:
        lines += [f"host-record={name},{a}" for a in ds.addresses[name]]
    return "\n".join(lines) + "\n"


def dnsmasq_forwarder_config(port: int, upstream_port: int) -> str:
    lines = [*_dnsmasq_common(port), f"server=127.0.0.1#{upstream_port}", "cache-size=10000"]
    return "\n".join(lines) + "\n"


# --- unbound -----------------------------------------------------------------------------

def _unbound_server(
    port: int, workdir: Path, control_socket: Path | None
) -> tuple[list[str], list[str]]:
    lines = [
        "server:",
        "  interface: 127.0.0.1",
        f"  port: {port}",
        "  num-threads: 1",
        "  do-daemonize: no",
        '  chroot: ""',
        '  username: ""',
        '  pidfile: ""',
        f'  directory: "{workdir}"',
        "  use-syslog: no",
        '  logfile: ""',
        "  verbosity: 1",
        "  do-ip6: no",
        # No validator, so no trust anchor and no DNSSEC lookups of its own.
        '  module-config: "iterator"',
        "  access-control: 127.0.0.0/8 allow",
    ]
    ctl = ["remote-control:"]
    if control_socket is None:
        ctl.append("  control-enable: no")
    else:
        ctl += [
            "  control-enable: yes",
            f'  control-interface: "{control_socket}"',
            "  control-use-cert: no",
        ]
    return lines, ctl


def unbound_local_config(
    ds: Dataset, port: int, workdir: Path, *, control_socket: Path | None = None
) -> str:
    """unbound answering `ds` from local-data, refusing everything else (never recursing)."""
    server, ctl = _unbound_server(port, workdir, control_socket)
    z = ds.zone
    server += [
        "  do-not-query-localhost: yes",
        # Every name outside our zone is refused, so unbound never recurses or primes.
        '  local-zone: "." refuse',
        f'  local-zone: "{z}." static',
        f'  local-data: "{z}. {ds.ttl} IN SOA ns.{z}. hostmaster.{z}. 1 3600 600 86400 '
        f'{ds.negative_ttl}"',
        f'  local-data: "{z}. {ds.ttl} IN NS ns.{z}."',
    ]
    for name in ds.names:
        server += [f'  local-data: "{name}. {ds.ttl} IN A {a}"' for a in ds.addresses[name]]
    return "\n".join(server + ctl) + "\n"


def unbound_forwarder_config(port: int, upstream_port: int, workdir: Path) -> str:
    """unbound as a caching forwarder whose only upstream is on loopback."""
    server, ctl = _unbound_server(port, workdir, None)
    server += [
        # Needed to forward to 127.0.0.1; the forward-zone below is the only way out.
        "  do-not-query-localhost: no",
        "  msg-cache-size: 32m",
        "  rrset-cache-size: 64m",
        "forward-zone:",
        '  name: "."',
        f"  forward-addr: 127.0.0.1@{upstream_port}",
        "  forward-first: no",
    ]
    return "\n".join(server + ctl) + "\n"
