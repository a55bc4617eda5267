"""`globaldns doctor`: is the CoreDNS (and NodeLocal DNSCache) in front of us set up right?

It reads the Corefile enough to find the server block of each served zone (`global:53 {`),
checks what matters between CoreDNS and globaldns, then sends the queries CoreDNS would
send to globaldns, and prints each finding with how to fix it. Exit code 1 when anything
is wrong.

Checks, per served zone:
- the block exists and `forward`s only to globaldns (`--server`, else `dns.listen`);
- `cache` in front of globaldns: its TTL floor (`success CAPACITY [TTL] [MINTTL]`, MINTTL
  5 s by default) must not exceed our `ttl`/`negative_ttl`, or endpoint changes reach
  clients late; and a cache shared by every client (CoreDNS's cache does not key on ECS)
  undoes client-aware routing (`client_localities`, `views` by client);
- ECS: with client-aware routing the block must stamp the client's address
  (`rewrite edns0 subnet set 32 128`), or globaldns sees only CoreDNS's address; behind
  NodeLocal DNSCache the node-local cache is the hop that sees the pod, so it stamps, and
  CoreDNS must not overwrite it (`append`, or no rewrite);
- probes, as CoreDNS sends them: `. IN NS` with RD and no EDNS (its upstream health
  check: any answer is healthy), and a name of each zone over UDP (EDNS, with ECS when
  stamped) and over TCP.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from globaldns.config import Config, ConfigError, load, load_default
from globaldns.config.model import ListenAddress
from globaldns.config.values import Invalid, listen_address
from globaldns.dns.message import text_to_wire
from globaldns.dns.names import Rcode
from globaldns.routing.policy import ClientLocator

# CoreDNS's cache defaults (plugin/cache): MINTTL 5 s for success and denial.
COREDNS_MIN_TTL = 5


# --- the Corefile ---------------------------------------------------------------------------

@dataclasses.dataclass
class Directive:
    name: str
    args: list[str]
    line: int
    block: list[Directive] = dataclasses.field(default_factory=list)

    def sub(self, name: str) -> list[Directive]:
        return [d for d in self.block if d.name == name]

    def __str__(self) -> str:
        return " ".join([self.name, *self.args])


@dataclasses.dataclass
class ServerBlock:
    keys: list[str]
    line: int
    directives: list[Directive]

    @property
    def zones(self) -> list[str]:
        """The zones of the block's keys: `dns://global.:53` → `global`; `.` → ``."""
        out = []
        for key in self.keys:
            key = re.sub(r"^[a-z]+://", "", key.lower())
            key = re.sub(r":\d+$", "", key)
            out.append(key.rstrip("."))
        return out

    def get(self, name: str) -> list[Directive]:
        return [d for d in self.directives if d.name == name]


class CorefileError(Exception):
    pass


def _tokens(text: str) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw)
        for match in re.finditer(r'"[^"]*"|[{}]|[^\s{}]+', line):
            token = match.group(0)
            yield number, token.strip('"') if token.startswith('"') else token


def parse_corefile(text: str) -> list[ServerBlock]:
    """Server blocks with their directives; `(snippets)` are expanded where imported."""
    tokens = list(_tokens(text))
    pos = 0

    def directives(depth: int) -> list[Directive]:
        nonlocal pos
        out: list[Directive] = []
        while pos < len(tokens):
            line, token = tokens[pos]
            if token == "}":
                pos += 1
                return out
            if token == "{":
                raise CorefileError(f"line {line}: '{{' without a directive")
            pos += 1
            args = []
            while pos < len(tokens) and tokens[pos][0] == line and tokens[pos][1] not in "{}":
                args.append(tokens[pos][1])
                pos += 1
            d = Directive(token, args, line)
            if pos < len(tokens) and tokens[pos][1] == "{" and tokens[pos][0] == line:
                pos += 1
                d.block = directives(depth + 1)
            out.append(d)
        if depth:
            raise CorefileError("a '{' is never closed")
        return out

    blocks: list[ServerBlock] = []
    snippets: dict[str, list[Directive]] = {}
    while pos < len(tokens):
        line, _ = tokens[pos]
        keys = []
        while pos < len(tokens) and tokens[pos][1] != "{":
            if tokens[pos][1] == "}":
                raise CorefileError(f"line {tokens[pos][0]}: '}}' without a block")
            keys.append(tokens[pos][1].rstrip(","))
            pos += 1
        if pos >= len(tokens):
            raise CorefileError(f"line {line}: {' '.join(keys)}: no '{{' block")
        pos += 1
        body = directives(1)
        if len(keys) == 1 and keys[0].startswith("(") and keys[0].endswith(")"):
            snippets[keys[0][1:-1]] = body
        else:
            blocks.append(ServerBlock(keys, line, body))
    for block in blocks:
        expanded: list[Directive] = []
        for d in block.directives:
            if d.name == "import" and d.args and d.args[0] in snippets:
                expanded.extend(snippets[d.args[0]])
            else:
                expanded.append(d)
        block.directives = expanded
    return blocks


# --- findings -------------------------------------------------------------------------------

@dataclasses.dataclass
class Report:
    problems: int = 0
    lines: list[str] = dataclasses.field(default_factory=list)

    def ok(self, text: str) -> None:
        self.lines.append(f"  ok       {text}")

    def note(self, text: str) -> None:
        self.lines.append(f"  note     {text}")

    def problem(self, text: str, fix: str) -> None:
        self.problems += 1
        self.lines.append(f"  PROBLEM  {text}")
        self.lines.append(f"           fix: {fix}")

    def heading(self, text: str) -> None:
        self.lines.append(text)


def forward_target(arg: str) -> ListenAddress | str:
    """A `forward` TO: an address (port 53 by default), or the text (a file, a pillar)."""
    raw = re.sub(r"^dns://", "", arg)
    if raw.startswith(("/", "__PILLAR__", "tls://", "https://")):
        return raw
    if re.match(r"^\[[^\]]+\]$", raw) or (raw.count(":") > 1 and not raw.startswith("[")):
        raw = f"[{raw.strip('[]')}]:53"
    elif ":" not in raw:
        raw = f"{raw}:53"
    try:
        return listen_address(raw)
    except Invalid:
        return arg


def client_aware(config: Config) -> bool:
    """Does an answer depend on who asks (so ECS matters and a shared cache hurts)?"""
    return ClientLocator(config).dependent


def _cache_floor(cache: Directive) -> tuple[int, int]:
    """The (success, denial) TTL floors of a `cache` directive."""
    floors = {"success": COREDNS_MIN_TTL, "denial": COREDNS_MIN_TTL}
    for kind in floors:
        for sub in cache.sub(kind):
            if len(sub.args) >= 3 and sub.args[2].isdigit():
                floors[kind] = int(sub.args[2])
    return floors["success"], floors["denial"]


def _ecs_rewrite(block: ServerBlock) -> Directive | None:
    for d in block.get("rewrite"):
        args = [a for a in d.args if a not in ("continue", "stop")]
        if len(args) >= 2 and args[0] == "edns0" and args[1] == "subnet":
            return d
    return None


def check_block(report: Report, blocks: list[ServerBlock], zone: str, config: Config, *,
                server: ListenAddress, role: str) -> ServerBlock | None:
    """The checks of one Corefile's block for one served zone. `role`: `coredns` (the
    cluster DNS, which clients ask directly), `nodelocal` (NodeLocal DNSCache, which they
    ask first) or `coredns-behind-nodelocal`."""
    block = next((b for b in blocks if zone in b.zones), None)
    zone_config = next(z for z in config.zones if z.name == zone)
    if block is None:
        catch_all = next((b for b in blocks if "" in b.zones), None)
        where = "" if catch_all is None else (
            f"; its names go to the `.` block (line {catch_all.line}), which forwards to "
            + (", ".join(" ".join(d.args[1:]) for d in catch_all.get("forward")) or "nowhere"))
        target = "__PILLAR__CLUSTER__DNS__ (CoreDNS)" if role == "nodelocal" else str(server)
        report.problem(f"no server block for `{zone}`{where}",
                       f"add `{zone}:53 {{ forward . {target} }}`")
        return None
    report.ok(f"server block `{' '.join(block.keys)}` (line {block.line}) serves `{zone}`")

    forwards = block.get("forward")
    if not forwards:
        report.problem(f"the `{zone}` block does not forward", f"add `forward . {server}`")
    for d in forwards:
        targets = [forward_target(a) for a in d.args[1:]]
        if role == "nodelocal" and all(isinstance(t, str) and "CLUSTER__DNS" in t
                                       for t in targets):
            report.ok(f"`{d}` (line {d.line}): to the cluster DNS, which forwards to globaldns")
            continue
        wrong = [t for t in targets if t != server]
        if not targets:
            report.problem(f"`{d}` (line {d.line}) has no upstream", f"`forward . {server}`")
        elif wrong:
            report.problem(
                f"`{d}` (line {d.line}) sends `{zone}` to {', '.join(map(str, wrong))}, "
                f"not to globaldns at {server}" + (
                    " (CoreDNS spreads queries over every upstream)" if len(wrong) < len(targets)
                    else ""),
                f"`forward . {server}` (or give --server with globaldns's address)")
        else:
            report.ok(f"`{d}` (line {d.line}) forwards to globaldns")

    aware = client_aware(config)
    for cache in block.get("cache"):
        success_floor, denial_floor = _cache_floor(cache)
        if success_floor > zone_config.ttl:
            report.problem(
                f"`cache` (line {cache.line}) keeps answers at least {success_floor}s, longer "
                f"than our ttl {zone_config.ttl}s: endpoint changes reach clients late",
                f"`cache {{ success 9984 30 {zone_config.ttl} }}` (MINTTL ≤ ttl)")
        if denial_floor > zone_config.negative_ttl:
            report.problem(
                f"`cache` (line {cache.line}) keeps negative answers at least {denial_floor}s, "
                f"longer than our negative_ttl {zone_config.negative_ttl}s",
                f"`cache {{ denial 9984 30 {zone_config.negative_ttl} }}`")
        if success_floor <= zone_config.ttl and denial_floor <= zone_config.negative_ttl:
            report.ok(f"`{cache}` (line {cache.line}): TTL floor {success_floor}s ≤ ttl "
                      f"{zone_config.ttl}s")
        if cache.sub("serve_stale"):
            report.note(f"`cache` (line {cache.line}) has serve_stale: while globaldns is "
                        "unreachable, CoreDNS answers expired endpoints")
        if aware and role != "nodelocal":
            report.problem(
                f"`cache` (line {cache.line}) is shared by every client and does not key on "
                "ECS, but our answers depend on the client (client_localities / views): a "
                "cached answer for one client goes to the others",
                f"remove `cache` from the `{zone}` block (globaldns answers in microseconds)")
        elif aware:
            report.note(f"`cache` (line {cache.line}) is per node: fine for locality routing "
                        "(a node is in one zone), not for views that split one node's pods")

    rewrite = _ecs_rewrite(block)
    if rewrite is not None:
        action = next((a for a in rewrite.args[2:] if a in ("set", "replace", "append",
                                                            "unset")), "")
        if action == "unset":
            report.problem(f"`{rewrite}` (line {rewrite.line}) removes the client subnet",
                           "remove it")
        elif role == "coredns-behind-nodelocal" and action in ("set", "replace"):
            report.problem(
                f"`{rewrite}` (line {rewrite.line}) overwrites the client subnet that "
                "NodeLocal DNSCache stamped with the node-local cache's own address",
                "`rewrite edns0 subnet append 32 128` (or no rewrite here)")
        else:
            report.ok(f"ECS stamped: `{rewrite}` (line {rewrite.line})")
    elif aware and role in ("coredns", "nodelocal"):
        report.problem(
            "client-aware routing is configured (client_localities / views), but the block "
            "does not pass the client's address on: globaldns sees only "
            + ("CoreDNS's" if role == "coredns" else "the node-local cache's") + " address",
            f"add `rewrite edns0 subnet set 32 128` to the `{zone}` block")
    elif aware:
        report.ok("ECS is stamped by NodeLocal DNSCache and passed on unchanged")
    elif not aware:
        report.ok("no client-aware routing configured: ECS not needed")
    return block


# --- probes ---------------------------------------------------------------------------------

def _query(name: str, qtype: int, *, rd: bool, edns: bool, ecs: bool) -> bytes:
    qid = int.from_bytes(os.urandom(2), "big")
    header = struct.pack("!HHHHHH", qid, 0x0100 if rd else 0, 1, 0, 0, 1 if edns else 0)
    message = header + text_to_wire(name) + struct.pack("!HH", qtype, 1)
    if edns:
        options = b""
        if ecs:  # what `rewrite edns0 subnet set 32 128` adds for 127.0.0.1
            value = struct.pack("!HBB", 1, 32, 0) + socket.inet_aton("127.0.0.1")
            options = struct.pack("!HH", 8, len(value)) + value
        message += struct.pack("!BHHBBHH", 0, 41, 1232, 0, 0, 0, len(options)) + options
    return message


def _exchange(address: ListenAddress, message: bytes, *, tcp: bool, timeout: float) -> bytes:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    target = (address.host, address.port)
    if tcp:
        with socket.create_connection(target, timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(message)) + message)
            data = b""
            while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
                chunk = s.recv(65535)
                if not chunk:
                    raise ConnectionError("connection closed before the answer")
                data += chunk
            reply = data[2:]
    else:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(message, target)
            while True:
                reply, source = s.recvfrom(65535)
                if source[:2] == target and reply[:2] == message[:2]:
                    break
    if reply[:2] != message[:2]:
        raise ConnectionError("the answer's ID does not match the query's")
    return reply


def probe(report: Report, address: ListenAddress, name: str, qtype: int, *, what: str,
          rd: bool = True, edns: bool = True, ecs: bool = False, tcp: bool = False,
          timeout: float, expect_aa: bool = False) -> bytes | None:
    message = _query(name, qtype, rd=rd, edns=edns, ecs=ecs)
    started = time.perf_counter()
    try:
        reply = _exchange(address, message, tcp=tcp, timeout=timeout)
    except (OSError, ConnectionError) as exc:
        report.problem(f"{what}: no answer from {address} ({exc})",
                       "is globaldns running and reachable from here? (`--server`)")
        return None
    ms = (time.perf_counter() - started) * 1000
    flags = struct.unpack("!H", reply[2:4])[0]
    rcode = flags & 0xF
    rcode_text = Rcode(rcode).name if rcode <= Rcode.REFUSED else str(rcode)
    answers = struct.unpack("!H", reply[6:8])[0]
    detail = f"{rcode_text}, {answers} record(s){', AA' if flags & 0x0400 else ''}" \
        f"{', TC' if flags & 0x0200 else ''} in {ms:.1f} ms"
    if expect_aa and (rcode not in (0, 3) or not flags & 0x0400):
        report.problem(f"{what}: {detail}", "globaldns should answer its zones "
                       "authoritatively: is it synced (/ready) and serving this zone?")
    else:
        report.ok(f"{what}: {detail}")
    return reply


# --- the command ----------------------------------------------------------------------------

def run(corefile: str, *, nodelocal: str | None = None, config_path: str | None = None,
        server: str | None = None, probe_at: str | None = None, name: str | None = None,
        timeout: float = 2.0) -> tuple[int, list[str]]:
    """(exit code, lines to print)."""
    report = Report()
    try:
        config = load(config_path) if config_path else load_default()
    except ConfigError as exc:
        return 1, [f"globaldns doctor: {line}" for line in exc.errors]
    try:
        target = listen_address(server) if server else config.dns.listen
        probes = listen_address(probe_at) if probe_at else target
    except Invalid as exc:
        return 1, [f"globaldns doctor: --server/--probe: {exc}"]
    if target.host in ("0.0.0.0", "::"):
        target = dataclasses.replace(target, host="127.0.0.1" if target.host == "0.0.0.0"
                                     else "::1")
        probes = probes if probe_at else target

    files: list[tuple[str, str, str]] = [(corefile, "CoreDNS", "coredns")]
    if nodelocal:
        files.insert(0, (nodelocal, "NodeLocal DNSCache", "nodelocal"))
    for path, label, role in files:
        try:
            blocks = parse_corefile(Path(path).read_text())
        except OSError as exc:
            return 1, [f"globaldns doctor: {path}: cannot read: {exc.strerror}"]
        except CorefileError as exc:
            return 1, [f"globaldns doctor: {path}: {exc}"]
        report.heading(f"{label}: {path}")
        if role == "coredns" and nodelocal:
            role = "coredns-behind-nodelocal"
        for zone in config.zones:
            check_block(report, blocks, zone.name, config, server=target, role=role)

    report.heading(f"probes to globaldns at {probes} (as CoreDNS sends them):")
    probe(report, probes, ".", 2, what="`. NS` health probe (UDP, RD, no EDNS)",
          edns=False, timeout=timeout)
    for zone in config.zones:
        qname = name if name else zone.name
        qtype = 1 if name else 6
        label = f"`{qname} {'A' if name else 'SOA'}`"
        reply = probe(report, probes, qname, qtype, what=f"{label} over UDP (EDNS 1232"
                      f"{', ECS' if client_aware(config) else ''})",
                      ecs=client_aware(config), timeout=timeout, expect_aa=True)
        probe(report, probes, qname, qtype, what=f"{label} over TCP", tcp=True,
              timeout=timeout, expect_aa=True)
        if reply is not None and name is None:
            break
    problems = report.problems
    report.heading("no problems found" if not problems else
                   f"{problems} problem(s) found")
    return (1 if problems else 0), report.lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corefile", required=True, help="the cluster CoreDNS's Corefile")
    parser.add_argument("--nodelocal", help="NodeLocal DNSCache's Corefile, if it runs")
    parser.add_argument("--config", help="globaldns's config (default: the embedded one)")
    parser.add_argument("--server", help="ADDR:PORT of globaldns as the Corefile should "
                        "name it (default: the config's dns.listen)")
    parser.add_argument("--probe", help="ADDR:PORT to send the probes to (default: --server)")
    parser.add_argument("--name", help="a name to probe (default: each zone's SOA)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per probe")


def main(args: argparse.Namespace) -> int:
    code, lines = run(args.corefile, nodelocal=args.nodelocal, config_path=args.config,
                      server=args.server, probe_at=args.probe, name=args.name,
                      timeout=args.timeout)
    print("\n".join(lines))
    return code


__all__: Sequence[str] = ("add_arguments", "main", "parse_corefile", "run")
