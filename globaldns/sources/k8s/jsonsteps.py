"""JSON parsing that yields to the event loop: `json.loads` for a big watch event.

`json.loads` holds the loop (and, in C, the GIL, so a thread does not help) for the whole
text: 15-30 ms for a 20,000-endpoint EndpointSlice. `loads` parses the same JSON in steps
of `STEP` values, awaiting between them; strings are read by the json module's C scanner,
the structure by a small explicit-stack machine (no recursion, so no depth limit to hit).
Small texts go to `json.loads` at once.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Generator
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

SLICED_BYTES = 256 * 1024
"""Texts up to this size (a few ms of `json.loads`) are parsed in one go."""
STEP = 1000
"""Values parsed between two yields to the loop (a few ms at most)."""

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_LITERALS = {"t": ("true", True), "f": ("false", False), "n": ("null", None)}


async def loads(data: bytes) -> Any:
    """`json.loads(data)`, yielding to the loop every `STEP` values of a big text."""
    if len(data) <= SLICED_BYTES:
        return json.loads(data)
    steps = parse(data.decode())
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        await asyncio.sleep(0)


def parse(text: str) -> Generator[None, None, Any]:
    """The value of `text`, yielding after every `STEP` values; ValueError if it is not
    one JSON value."""
    stack: list[Any] = []  # open containers, innermost last
    keys: list[Any] = []  # the pending key of each open object (None for an array)
    n = len(text)
    i = _skip(text, 0)
    count = 0
    value: Any
    while True:
        if i >= n:
            raise ValueError("JSON ends inside a value")
        c = text[i]
        if c == '"':
            value, i = scanstring(text, i + 1, True)
        elif c == "{" or c == "[":
            i = _skip(text, i + 1)
            if i < n and text[i] == ("}" if c == "{" else "]"):
                value, i = ({} if c == "{" else []), i + 1
            else:
                stack.append({} if c == "{" else [])
                if c == "{":
                    keys.append("")
                    i = _key(text, i, keys)
                else:
                    keys.append(None)
                continue
        elif c in _LITERALS:
            word, value = _LITERALS[c]
            if not text.startswith(word, i):
                raise ValueError(f"not JSON at {i}")
            i += len(word)
        else:
            m = _NUMBER.match(text, i)
            if m is None:
                raise ValueError(f"not JSON at {i}")
            number = m.group()
            value = float(number) if m.group(1) or m.group(2) else int(number)
            i = m.end()
        # A complete value: put it in its container, close what it completes.
        while True:
            count += 1
            if count == STEP:
                count = 0
                yield
            if not stack:
                if _skip(text, i) != n:
                    raise ValueError("extra data after the JSON value")
                return value
            key = keys[-1]
            if key is None:
                stack[-1].append(value)
            else:
                stack[-1][key] = value
            if i < n and text[i] in _WHITESPACE:
                i = _skip(text, i)
            if i < n and text[i] == ",":
                i = _skip(text, i + 1)
                if key is not None:
                    i = _key(text, i, keys)
                break
            if i < n and text[i] == ("]" if key is None else "}"):
                value = stack.pop()
                keys.pop()
                i += 1
                continue
            raise ValueError(f"expected ',' or a closing bracket at {i}")


_WHITESPACE = " \t\n\r"


def _skip(text: str, i: int) -> int:
    """`i` past any whitespace."""
    if i < len(text) and text[i] in _WHITESPACE:
        return _WS.match(text, i).end()  # type: ignore[union-attr]
    return i


def _key(text: str, i: int, keys: list[Any]) -> int:
    """Read `"key" :` at `i` into the innermost object's pending key."""
    if i >= len(text) or text[i] != '"':
        raise ValueError(f"expected a key at {i}")
    key, i = scanstring(text, i + 1, True)
    i = _skip(text, i)
    if i >= len(text) or text[i] != ":":
        raise ValueError(f"expected ':' at {i}")
    keys[-1] = key
    return _skip(text, i + 1)
