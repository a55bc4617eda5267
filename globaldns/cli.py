"""Command line: flags → config → app."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import logging
import sys
from collections.abc import Callable
from typing import Any

from globaldns import __version__
from globaldns.config import Config, ConfigError, load, load_default
from globaldns.config.values import Invalid, listen_address

DESCRIPTION = """\
A DNS resolver for multi-cluster Kubernetes: it watches the EndpointSlices of many
clusters and answers <service>.<namespace>.global with the healthy endpoints, nearest
first; other names it forwards to upstream resolvers. Metrics, health and debug pages
are served over HTTP (default 127.0.0.1:9153)."""

EPILOG = """\
examples:
  globaldns serve --config globaldns.yaml
  globaldns check-config globaldns.yaml
  globaldns explain user-service.production.global --client 10.8.1.7 \\
      --server http://127.0.0.1:9153
  globaldns doctor --corefile Corefile

Each command has its own --help. Documentation: README.md and docs/ in the source."""

# A /debug/explain report is a few KB; a server that sends more is not one.
MAX_EXPLAIN_BYTES = 1024 * 1024
EXPLAIN_TIMEOUT = 10.0


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an IP address") from None


def _server_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or len(value) > 2048:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an http:// or https:// URL (e.g. http://127.0.0.1:9153)")
    return value.rstrip("/")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="globaldns", description=DESCRIPTION,
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"globaldns {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the DNS server")
    serve.add_argument("--config", help="YAML config file (default: the embedded example)")
    serve.add_argument("--listen", help="ADDR:PORT, overrides dns.listen")
    serve.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"])
    serve.add_argument("--http-listen", metavar="ADDR:PORT",
                       help="overrides http.listen; an empty string turns HTTP off")
    serve.add_argument("--workers", type=int,
                       help="processes sharing the port (SO_REUSEPORT); overrides dns.workers")
    serve.add_argument("--channel-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    check = commands.add_parser("check-config", help="validate a config file")
    check.add_argument("file")
    explain = commands.add_parser(
        "explain", help="why a name answers what it does",
        description="Why a name answers what it does for a client: its locality, the "
        "routing rule, each endpoint and the answer. Asks a running server (--server, its "
        "/debug/explain page: the live registry, watched clusters included) or reads a "
        "config's static services (--config). Exit status: 0 an answer, 1 NXDOMAIN, "
        "2 an error.")
    explain.add_argument("name")
    explain.add_argument("--client", default="127.0.0.1", type=_ip,
                         help="the client's IP address (default 127.0.0.1)")
    explain.add_argument("--ecs", help="an EDNS Client Subnet, e.g. 10.20.0.0/24")
    where = explain.add_mutually_exclusive_group()
    where.add_argument("--server", type=_server_url, metavar="URL",
                       help="a running globaldns's HTTP address, e.g. http://127.0.0.1:9153")
    where.add_argument("--config", help="YAML config file, static services only (default: "
                       "the embedded example)")
    explain.add_argument("--json", action="store_true", help="print JSON")
    doctor = commands.add_parser("doctor", help="check the CoreDNS (and NodeLocal "
                                 "DNSCache) setup in front of globaldns, and probe it")
    from globaldns.tools.doctor import add_arguments
    add_arguments(doctor)
    remote = commands.add_parser("create-remote-secret", help="print a least-privilege "
                                 "reader for a remote cluster, then its remote Secret")
    from globaldns.tools import remote_secret
    remote_secret.add_arguments(remote)
    return parser


def _load(path: str | None) -> Config:
    return load(path) if path else load_default()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "explain":
        return explain(args)
    if args.command == "doctor":
        from globaldns.tools.doctor import main as doctor
        return doctor(args)
    if args.command == "create-remote-secret":
        from globaldns.tools import remote_secret
        return remote_secret.main(args)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = _load(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"globaldns: {line}", file=sys.stderr)
        return 1
    try:
        overrides = _overrides(args)
    except ValueError as exc:
        print(f"globaldns: {exc}", file=sys.stderr)
        return 1
    config = overrides(config)
    from globaldns.app import run
    return run(config, config_path=args.config, channel_fd=args.channel_fd,
               worker_index=args.worker_index, overrides=overrides)


def _overrides(args: argparse.Namespace) -> Callable[[Config], Config]:
    """The command line's settings over a config's: at start, and again on every reload
    (the file does not know them). ValueError names the flag that is wrong."""
    dns: dict[str, Any] = {}
    http: dict[str, Any] = {}
    if args.listen:
        try:
            dns["listen"] = listen_address(args.listen)
        except Invalid as exc:
            raise ValueError(f"--listen: {exc}") from None
    if args.http_listen is not None:
        try:
            http["listen"] = listen_address(args.http_listen) if args.http_listen else None
        except Invalid as exc:
            raise ValueError(f"--http-listen: {exc}") from None
    if args.workers is not None:
        if not 1 <= args.workers <= 64:
            raise ValueError("--workers: must be 1..64")
        dns["workers"] = args.workers

    def apply(config: Config) -> Config:
        return dataclasses.replace(config, dns=dataclasses.replace(config.dns, **dns),
                                   http=dataclasses.replace(config.http, **http))
    return apply


def check_config(path: str) -> int:
    try:
        config = load(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    endpoints = sum(len(s.endpoints) for s in config.services)
    print(f"{path}: ok: {len(config.zones)} zone(s), {len(config.clusters)} cluster(s), "
          f"{len(config.services)} service(s), {endpoints} endpoint(s)")
    return 0


def explain(args: argparse.Namespace) -> int:
    """Explain, from a running server or from a config's static services; say which."""
    import json

    from globaldns.answers.explain import lines

    try:
        if args.server:
            report = _explain_remote(args)
            source = f"server {args.server} (its live registry)"
        else:
            report = _explain_static(args)
            source = f"config {args.config or '(embedded default)'} (static services only)"
    except ValueError as exc:
        for line in str(exc).splitlines():
            print(f"globaldns: {line}", file=sys.stderr)
        return 2
    report.pop("lines", None)
    report["source"] = source
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join([f"source {source}", *lines(report)]))
    return 1 if str(report.get("answer", "")).startswith("NXDOMAIN") else 0


def _explain_static(args: argparse.Namespace) -> dict[str, Any]:
    from globaldns.answers.explain import explain as run_explain
    from globaldns.answers.snapshot import Snapshot
    from globaldns.registry.store import Store
    from globaldns.sources.static import apply_static

    try:
        config = _load(args.config)
    except ConfigError as exc:
        raise ValueError("\n".join(exc.errors)) from None
    store = Store()
    apply_static(store, config)
    report = run_explain(Snapshot(config, store), store, args.name, client=args.client,
                         ecs=args.ecs)
    watched = [c.name for c in config.clusters if c.watched]
    if watched:
        report.setdefault("notes", []).append(
            f"clusters {', '.join(watched)} are watched, and their services are not in the "
            "config: ask a running server with --server URL")
    return report


def _explain_remote(args: argparse.Namespace) -> dict[str, Any]:
    """GET <server>/debug/explain: a bounded read of a JSON object."""
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    query = {"name": args.name, "client": args.client}
    if args.ecs:
        query["ecs"] = args.ecs
    url = f"{args.server}/debug/explain?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(url, timeout=EXPLAIN_TIMEOUT) as response:
            body = response.read(MAX_EXPLAIN_BYTES + 1)
    except urllib.error.HTTPError as exc:
        detail = exc.read(4096).decode("utf-8", "replace")
        with contextlib.suppress(ValueError, AttributeError):
            detail = str(json.loads(detail).get("error", detail))
        hint = " (acl.allow_debug decides who may)" if exc.code == 403 else ""
        raise ValueError(f"{args.server}: HTTP {exc.code}{hint}: {detail[:300]}") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ValueError(f"{args.server}: cannot ask it: {reason}") from None
    if len(body) > MAX_EXPLAIN_BYTES:
        raise ValueError(f"{args.server}: the answer is larger than "
                         f"{MAX_EXPLAIN_BYTES // 1024} KiB: not an explain report")
    try:
        report = json.loads(body)
    except ValueError:
        raise ValueError(f"{args.server}: the answer is not JSON: is it globaldns?") from None
    if not isinstance(report, dict) or not isinstance(report.get("answer"), str):
        raise ValueError(f"{args.server}: the answer is not an explain report")
    return report
