"""atheris harness for config parsing: YAML bytes → parse, validate, build.

Pass: `ConfigError` (the one documented exception) or a Config, for every input; never
another exception. Run: `python fuzz/config.py -dict=fuzz/config.dict CORPUS_DIR
fuzz/corpus/config` (new inputs go to the first directory; keep the seeds read-only).
Seeds: config/example.yaml, the bad configs of tests/test_hostile_config.py (kubeconfig
paths replaced by `k` and `m`) and one config with aliases; the dictionary holds every key
parse.py knows and a few YAML tokens and values.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["globaldns.config"]):
    from globaldns.config.parse import ConfigError, parse_bytes


def TestOneInput(data: bytes) -> None:
    try:
        parse_bytes(data, "<fuzz>")
    except ConfigError as exc:
        # Every line names the source: the file, then the key path and the problem. An
        # error caught by the config boundary ("cannot be used") is a check that raised
        # something other than its own error: a finding, though it never reaches users.
        assert all(line.startswith("<fuzz>: ") for line in exc.errors), exc.errors
        assert not any("cannot be used: " in line for line in exc.errors), exc.errors


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
