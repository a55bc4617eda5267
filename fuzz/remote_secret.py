"""atheris harness for a remote Secret's kubeconfig: bytes → Credentials or CredentialsError.

Input: one byte choosing `allow_insecure`, then the kubeconfig text (what a Secret's data
key decodes to; text that is not UTF-8 never gets this far). Pass: `Credentials`, or
`CredentialsError` (its subclass `Rejected` carries a reason from the closed set) whose
message is one line of printable text naming the origin; never another exception.
Run: `python fuzz/remote_secret.py -dict=fuzz/remote_secret.dict CORPUS_DIR
fuzz/corpus/remote_secret` (new inputs go to the first directory).
"""

from __future__ import annotations

import re
import sys

import atheris

with atheris.instrument_imports(include=["globaldns.sources.k8s.credentials"]):
    from globaldns.sources.k8s.credentials import (
        Credentials,
        CredentialsError,
        Rejected,
        Rejection,
        from_kubeconfig_text,
    )

ORIGIN = "secret fuzz/fuzz key c"
_PRINTABLE_LINE = re.compile(r"[\x20-\x7e]*")


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    try:
        text = data[1:].decode()
    except UnicodeDecodeError:
        return
    try:
        credentials = from_kubeconfig_text(text, origin=ORIGIN, allow_insecure=bool(data[0] & 1))
    except Rejected as exc:
        assert exc.reason in Rejection, exc.reason
        check_message(str(exc))
        return
    except CredentialsError as exc:
        check_message(str(exc))
        return
    assert isinstance(credentials, Credentials)
    assert credentials.server.startswith("https://" if not data[0] & 1 else "http")


def check_message(message: str) -> None:
    assert ORIGIN in message, message
    assert _PRINTABLE_LINE.fullmatch(message), repr(message)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
