"""k8s/jsonsteps: the stepped JSON parser gives json.loads's value, or its refusal."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from globaldns.sources.k8s import jsonsteps

GOOD = ['{}', '[]', '0', '-1.5e3', '"s"', 'true', 'null', ' [ [ ] , { } ] ',
        '{"a":[1,2.5,-3e2,true,false,null,"x\\u00e9\\n\\"q"],"b":{"c":{}}}',
        '{"a" : 1 , "b" : [ 1 , 2 ] }', '[[[[[[[[[[1]]]]]]]]]]', '{"a":1,"a":2}']
BAD = ['', '{', '[1,]', '{"a"}', '[1 2]', 'tru', '{"a":1}x', '[', '{"a":1,}', '-', '01',
       '{1:2}', '"open', '[1]]', 'nul', '{"a":[}']


def parsed(text: str) -> Any:
    steps = jsonsteps.parse(text)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


@pytest.mark.parametrize("text", GOOD)
def test_valid_json_parses_to_what_json_loads_gives(text: str) -> None:
    assert parsed(text) == json.loads(text)


@pytest.mark.parametrize("text", BAD)
def test_what_json_loads_refuses_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        parsed(text)


def _value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(7 if depth < 6 else 5)
    if kind == 0:
        return rng.randint(-10**6, 10**6)
    if kind == 1:
        return rng.random() * 10 ** rng.randint(-5, 5)
    if kind == 2:
        return "".join(rng.choice('ab"\\\n\u00e9\u2603 ') for _ in range(rng.randrange(6)))
    if kind == 3:
        return rng.choice([True, False])
    if kind == 4:
        return None
    if kind == 5:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {str(rng.randrange(100)): _value(rng, depth + 1) for _ in range(rng.randrange(5))}


def test_random_documents_compact_or_spaced_parse_alike_and_big_ones_yield_in_steps() -> None:
    rng = random.Random(3)
    for _ in range(300):
        value = _value(rng, 0)
        for text in (json.dumps(value), json.dumps(value, indent=1)):
            assert parsed(text) == json.loads(text)
    big = json.dumps([{"addresses": [f"10.0.{i >> 8}.{i & 255}"]} for i in range(5000)])
    steps = jsonsteps.parse(big)
    yields = 0
    while True:
        try:
            next(steps)
            yields += 1
        except StopIteration as done:
            assert done.value == json.loads(big)
            break
    assert yields >= 10_000 // jsonsteps.STEP
