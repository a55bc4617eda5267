"""Command line: flags → config → app."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from globaldns import __version__
from globaldns.config import Config, ConfigError, load, load_default
from globaldns.config.parse import _Invalid, listen_address


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="globaldns", description=__doc__)
    parser.add_argument("--version", action="version", version=f"globaldns {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the DNS server")
    serve.add_argument("--config", help="YAML config file (default: the embedded example)")
    serve.add_argument("--listen", help="ADDR:PORT, overrides dns.listen")
    serve.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"])
    check = commands.add_parser("check-config", help="validate a config file")
    check.add_argument("file")
    return parser


def _load(path: str | None) -> Config:
    return load(path) if path else load_default()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.file)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = _load(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"globaldns: {line}", file=sys.stderr)
        return 1
    if args.listen:
        try:
            listen = listen_address(args.listen)
        except _Invalid as exc:
            print(f"globaldns: --listen: {exc}", file=sys.stderr)
            return 1
        config = dataclasses.replace(config, dns=dataclasses.replace(config.dns, listen=listen))
    from globaldns.app import run
    return run(config, config_path=args.config)


def check_config(path: str) -> int:
    try:
        config = load(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line)
        return 1
    endpoints = sum(len(s.endpoints) for s in config.services)
    print(f"{path}: ok: {len(config.zones)} zone(s), {len(config.clusters)} cluster(s), "
          f"{len(config.services)} service(s), {endpoints} endpoint(s)")
    return 0
