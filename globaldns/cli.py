"""Command line: flags → config → app."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable
from typing import Any

from globaldns import __version__
from globaldns.config import Config, ConfigError, load, load_default
from globaldns.config.values import Invalid, listen_address


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="globaldns", description=__doc__)
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
    explain = commands.add_parser("explain", help="why a name answers what it does")
    explain.add_argument("name")
    explain.add_argument("--client", default="127.0.0.1", help="the client's address")
    explain.add_argument("--ecs", help="an EDNS Client Subnet, e.g. 10.20.0.0/24")
    explain.add_argument("--config", help="YAML config file (default: the embedded example)")
    explain.add_argument("--json", action="store_true", help="print JSON")
    doctor = commands.add_parser("doctor", help="check the CoreDNS (and NodeLocal "
                                 "DNSCache) setup in front of globaldns, and probe it")
    from globaldns.tools.doctor import add_arguments
    add_arguments(doctor)
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
    """Explain from the config's static services (no watches are started)."""
    import json

    from globaldns.answers.explain import explain as run_explain
    from globaldns.answers.explain import lines
    from globaldns.answers.snapshot import Snapshot
    from globaldns.registry.store import Store
    from globaldns.sources.static import apply_static

    try:
        config = _load(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"globaldns: {line}", file=sys.stderr)
        return 1
    store = Store()
    apply_static(store, config)
    snapshot = Snapshot(config, store)
    try:
        report = run_explain(snapshot, store, args.name, client=args.client, ecs=args.ecs)
    except ValueError as exc:
        print(f"globaldns: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else "\n".join(lines(report)))
    return 0
