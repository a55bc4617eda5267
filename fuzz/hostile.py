"""What the object harnesses share: values drawn from the fuzzer's bytes, either one of a
pool of plausible ones, a random string, or a value of the wrong type."""

from __future__ import annotations

from typing import Any

import atheris

WRONG_TYPES: list[Any] = [7, None, [], {}, 1.5, True, -1, 2**40]


class Draw:
    def __init__(self, data: bytes) -> None:
        self.fdp = atheris.FuzzedDataProvider(data)

    def pick(self, pool: list[Any]) -> Any:
        return pool[self.fdp.ConsumeIntInRange(0, len(pool) - 1)]

    def value(self, pool: list[Any]) -> Any:
        """One of `pool` mostly; else a random string (1 in 8) or a wrong type (1 in 8)."""
        mode = self.fdp.ConsumeIntInRange(0, 7)
        if mode == 0:
            return self.fdp.ConsumeUnicodeNoSurrogates(self.fdp.ConsumeIntInRange(0, 80))
        if mode == 1:
            return self.pick(WRONG_TYPES)
        return self.pick(pool)
