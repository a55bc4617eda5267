"""Config value converters: one YAML value → one typed value, or `Invalid` with the
problem (the parser adds the file and key path). No converter knows where its value sits."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import reprlib
import stat
from collections.abc import Callable
from typing import Any

from globaldns.config.model import ListenAddress
from globaldns.registry.model import Locality


class Invalid(Exception):
    """A value that cannot be converted; its text is the problem, without a key path."""


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_DNS_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
# RFC 1123 labels, what Kubernetes calls DNS-1123 labels (namespace names): lowercase.
_DNS1123_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# A timer longer than a year is a typo (and a huge one overflows the OS's timers).
_MAX_DURATION = 366 * 86400.0
# A kubeconfig or a resolv.conf is a few KB: a bound on what is read at all.
MAX_FILE_BYTES = 1024 * 1024
_MAX_WEIGHT = 10_000


def kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


# Error messages quote a value, never a whole subtree (a value can be a huge YAML list).
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlist = _REPR.maxdict = 4
_REPR.maxlevel = 2


def show(value: Any) -> str:
    return _REPR.repr(value)


def scalar(value: Any) -> str:
    """A YAML scalar as text; a mapping or list is an error, never turned into text."""
    if isinstance(value, dict | list):
        raise Invalid(f"must be a single value, not {kind(value)}")
    return str(value)


def duration(value: Any) -> float:
    if isinstance(value, bool):
        raise Invalid(f"{show(value)} is not a duration (e.g. 500ms, 10s, 5m)")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(scalar(value).strip())
        if not match:
            raise Invalid(f"{show(value)} is not a duration (e.g. 500ms, 10s, 5m)")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0:
        raise Invalid(f"{show(value)} must not be negative")
    if not math.isfinite(seconds) or seconds > _MAX_DURATION:
        raise Invalid(f"{show(value)} is more than a year")
    return seconds


def integer(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"{show(value)} is not an integer")
        if not low <= value <= high:
            raise Invalid(f"{value} is out of range {low}..{high}")
        return value
    return convert


_BYTE_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
               "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30}


def byte_size(low: int, high: int) -> Callable[[Any], int]:
    """A size in bytes: an integer, or a number with a unit (`64MB`, `512KiB`)."""
    def convert(value: Any) -> int:
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d{1,12})\s*([A-Za-z]{0,3})\s*", value)
            unit = _BYTE_UNITS.get(match.group(2).upper()) if match else None
            if match is None or unit is None:
                raise Invalid(f"{show(value)} is not a size (e.g. 64MB, 512KiB, 1000000)")
            value = int(match.group(1)) * unit
        return integer(low, high)(value)
    return convert


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{show(value)} is not true or false")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid(f"{show(value)} is not a non-empty string")
    return value


def choice(*options: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in options:
            raise Invalid(f"{show(value)} is not one of: {', '.join(options)}")
        return str(value)
    return convert


def ip_address(value: Any) -> str:
    try:
        return str(ipaddress.ip_address(scalar(value)))
    except ValueError:
        raise Invalid(f"{show(value)} is not an IP address") from None


def locality(value: Any) -> Locality:
    try:
        return Locality.parse(text(value))
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def dns_label(value: Any) -> str:
    label = text(value).lower()
    if not _DNS_LABEL.match(label):
        raise Invalid(f"{show(value)} is not a DNS label (letters, digits, '-', at most 63)")
    return label


def cluster_name(value: Any) -> str:
    """A cluster name: it becomes a DNS label (`<cluster>.<service>...`), so lowercase RFC
    1123, at most 63 characters."""
    name = text(value)
    if not _DNS1123_LABEL.fullmatch(name):
        raise Invalid(f"{show(value)} cannot be a DNS label (lowercase letters, digits and "
                       "'-', at most 63, starting and ending with a letter or digit)")
    return name


def namespace(value: Any) -> str:
    """A Kubernetes namespace name: a DNS-1123 label, taken as written (never lowercased)."""
    name = text(value)
    if not _DNS1123_LABEL.fullmatch(name):
        raise Invalid(f"{show(value)} is not a namespace name (DNS-1123: lowercase letters, "
                       "digits and '-', at most 63, starting and ending with a letter or digit)")
    return name


def domain(value: Any) -> str:
    name = text(value).strip().lower().rstrip(".")
    if name and not all(_DNS_LABEL.match(label) for label in name.split(".")):
        raise Invalid(f"{show(value)} is not a domain name")
    return name


def serve_host(value: Any) -> str:
    """A host name, or `*.domain`: one leading wildcard label, as Istio writes hosts."""
    name = text(value).strip().lower().rstrip(".")
    rest = name[2:] if name.startswith("*.") else name
    if "." not in rest or not domain(rest):
        raise Invalid(f"{show(value)} is not a host name or *.domain")
    return name


def listen_address(value: Any) -> ListenAddress:
    raw = scalar(value)
    match = re.match(r"^\[([0-9a-fA-F:.]+)\]:([0-9]{1,5})$", raw) or \
        re.match(r"^([^:]+):([0-9]{1,5})$", raw)
    if not match:
        raise Invalid(f"{show(raw)} is not HOST:PORT (IPv6 as [::1]:PORT)")
    host, port = match.group(1), int(match.group(2))
    host = ip_address(host) if host != "localhost" else "127.0.0.1"
    if not 0 <= port <= 65535:
        raise Invalid(f"port {port} is out of range 0..65535")
    return ListenAddress(host, port)


def labels(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise Invalid("must be a mapping of label: value")
    return tuple(sorted((scalar(k), scalar(v)) for k, v in value.items()))


def read_bounded(path: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """A regular file's bytes, at most `limit` of them: never a FIFO or a device that
    blocks or never ends. OSError (strerror set) when it is not one."""
    if "\0" in path:
        raise OSError(0, "not a file name (a NUL byte)")
    with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(0, "not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(0, f"larger than {limit // 1024} KiB")
    return data
# Kubernetes label selector syntax (apimachinery labels.Parse): requirements separated by
# commas: `key`, `!key`, `key=value`, `key==value`, `key!=value`, `key in (a, b)`,
# `key notin (a, b)`, `key>1`, `key<1`.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?" + _LABEL_NAME)
_LABEL_VALUE = re.compile(f"({_LABEL_NAME})?")
_SET = re.compile(r"([^\s(),!=<>]+)\s+(in|notin)\s*\(([^()]*)\)")
_COMPARE = re.compile(r"([^\s(),!=<>]+)\s*(==|=|!=|<|>)\s*([^\s(),!=<>]*)")
_EXISTS = re.compile(r"(!?)\s*([^\s(),!=<>]+)")
_MAX_SELECTOR = 4096


def label_selector(value: Any) -> str:
    raw = text(value).strip()
    if len(raw) > _MAX_SELECTOR:
        raise Invalid(f"is longer than {_MAX_SELECTOR} characters")
    for requirement in _requirements(raw):
        problem = _requirement_problem(requirement.strip())
        if problem:
            raise Invalid(f"{show(raw)} is not a label selector: {problem}")
    return raw


def _requirements(selector: str) -> list[str]:
    """Split at the commas outside parentheses."""
    out, start, depth = [], 0, 0
    for i, char in enumerate(selector):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            out.append(selector[start:i])
            start = i + 1
    out.append(selector[start:])
    return out


def _requirement_problem(req: str) -> str:
    if not req:
        return "an empty requirement"
    values: list[str] = []
    if match := _SET.fullmatch(req):
        key = match.group(1)
        values = [v.strip() for v in match.group(3).split(",")]
        if values == [""]:
            return f"{show(req)}: {match.group(2)} needs at least one value"
    elif match := _COMPARE.fullmatch(req):
        key, op, value = match.groups()
        if op in "<>" and not value.isdigit():
            return f"{show(req)}: {op} needs a whole number"
        values = [value]
    elif match := _EXISTS.fullmatch(req):
        key = match.group(2)
    else:
        return f"{show(req)} is not key, !key, key=value, key!=value, key in (...)"
    if not _LABEL_KEY.fullmatch(key):
        return f"{show(key)} is not a label key ([prefix/]name, name at most 63 characters)"
    for value in values:
        if not _LABEL_VALUE.fullmatch(value):
            return f"{show(value)} is not a label value (at most 63 letters, digits, '-_.')"
    return ""


def upstream(value: Any) -> tuple[ListenAddress, ...]:
    """`IP[:PORT]`, `[IPV6]:PORT`, a bare IPv6 address, or a file path such as
    /etc/resolv.conf, whose `nameserver` lines are taken (port 53)."""
    raw = text(value).strip()
    if raw.startswith(("/", "./", "../")):
        return _nameservers(raw)
    match = re.match(r"^\[([^\]]+)\](?::(\d+))?$", raw)
    if match:
        host, port = match.group(1), match.group(2)
    elif raw.count(":") > 1:
        host, port = raw, None
    else:
        host, _, port = raw.partition(":")
        port = port or None
    try:
        host = ip_address(host)
    except Invalid:
        raise Invalid(f"{show(raw)} is not IP[:PORT] ([IPV6]:PORT) or a file path; "
                       "host names are not resolved") from None
    if port is not None and not (re.fullmatch("[0-9]{1,5}", port) and 1 <= int(port) <= 65535):
        raise Invalid(f"{show(raw)}: port {show(port)} is out of range 1..65535")
    return (ListenAddress(host, int(port) if port else 53),)


def _nameservers(path: str) -> tuple[ListenAddress, ...]:
    try:
        lines = read_bounded(path).decode("utf-8", "replace").splitlines()
    except OSError as exc:
        raise Invalid(f"cannot read {path}: {exc.strerror}") from None
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                found.append(ListenAddress(ip_address(fields[1]), 53))
            except Invalid:
                raise Invalid(f"{path}: {show(fields[1])} is not an IP address") from None
    if not found:
        raise Invalid(f"{path} has no nameserver lines")
    return tuple(found)


def positive_duration(value: Any) -> float:
    seconds = duration(value)
    if seconds <= 0:
        raise Invalid(f"{show(value)} must be more than zero")
    return seconds


def whole_seconds(value: Any) -> int:
    return round(duration(value))


def seconds(low: int, high: int) -> Callable[[Any], int]:
    """Whole seconds within low..high, written as a duration (`5s`, `1m`) or a number."""
    def convert(value: Any) -> int:
        amount = duration(value)
        if amount != int(amount):
            raise Invalid(f"{show(value)} is not a whole number of seconds")
        if not low <= amount <= high:
            raise Invalid(f"{show(value)} is out of range {low}s..{high}s")
        return int(amount)
    return convert


def network(value: Any) -> str:
    """A CIDR; host bits set (`10.1.2.3/8`) are an error: which network was meant?"""
    raw = scalar(value).strip()
    try:
        return str(ipaddress.ip_network(raw))
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(raw, strict=False)
    except ValueError:
        raise Invalid(f"{show(value)} is not an IP network (e.g. 10.0.0.0/8, fc00::/7)") from None
    raise Invalid(f"{show(value)} has host bits set (the network is {loose})")


def fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise Invalid(f"{show(value)} is not a fraction between 0 and 1 (e.g. 0.01)")
    return float(value)


def status_range(value: Any) -> tuple[int, int]:
    match = re.match(r"^\s*(\d{3})\s*(?:-\s*(\d{3}))?\s*$", scalar(value))
    if not match:
        raise Invalid(f"{show(value)} is not a status or range (e.g. 200 or 200-399)")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if not 100 <= low <= high <= 599:
        raise Invalid(f"{show(value)} is not a range of HTTP statuses")
    return low, high
_PATTERN = re.compile(r"^[a-z0-9*][a-z0-9*_.-]*(/[a-z0-9*][a-z0-9*_.-]*){0,2}$")


def pattern(value: Any) -> str:
    """A locality pattern: `us-central1/*`, `eu-*`, `us-east1`."""
    raw = text(value).lower().strip("/")
    if not _PATTERN.match(raw):
        raise Invalid(f"{show(value)} is not a locality pattern "
                       "(region[/zone[/subzone]], * allowed)")
    if any(len(part) > 63 or part.count("*") > 2 for part in raw.split("/")):
        # Each `*` is a regex loop run against endpoint localities: keep them few and short.
        raise Invalid(f"{show(value)}: a part is longer than 63 or has more than two '*'")
    return raw


def weight_map(value: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, dict) or not value:
        raise Invalid("must be a mapping of name: weight")
    out = []
    for key, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, int) or \
                not 0 <= weight <= _MAX_WEIGHT:
            raise Invalid(f"weight of {show(key)} must be a whole number 0..{_MAX_WEIGHT}, "
                           f"not {show(weight)}")
        out.append((scalar(key), weight))
    if not any(w for _, w in out):
        raise Invalid("at least one weight must be above 0")
    return tuple(out)


def min_healthy(value: Any) -> tuple[float, bool]:
    raw = scalar(value).strip()
    match = re.match(r"^(\d+(?:\.\d+)?)(%?)$", raw)
    if isinstance(value, bool) or not match:
        raise Invalid(f"{show(value)} is not a count or a percentage (e.g. 2 or 50%)")
    amount, percent = float(match.group(1)), bool(match.group(2))
    if percent and amount > 100:
        raise Invalid(f"{show(value)} is more than 100%")
    return amount, percent


def percentage(value: Any) -> float:
    raw = scalar(value).strip().rstrip("%")
    try:
        amount = float(raw)
    except ValueError:
        raise Invalid(f"{show(value)} is not a percentage (0-100)") from None
    if isinstance(value, bool) or not 0 <= amount <= 100:
        raise Invalid(f"{show(value)} is not a percentage (0-100)")
    return amount
