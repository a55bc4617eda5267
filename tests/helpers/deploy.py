"""The deployment manifests as rendered by kustomize, and the docs' heading anchors."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from tests.helpers.data import ROOT

KUBERNETES = ROOT / "deploy" / "kubernetes"
BIN = Path(sys.executable).parent
# The oldest version we support, and the newest the installed kubernetes-validate knows.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def tool(name: str) -> str:
    """A tool the `test` extra installs into the venv; its absence fails the test."""
    path = BIN / name
    assert path.exists(), f"{path} missing: pip install -e '.[test]'"
    return str(path)


@functools.cache
def render(overlay: str) -> list[dict[str, Any]]:
    result = subprocess.run([tool("kubectl"), "kustomize", str(KUBERNETES / "overlays" / overlay)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return doc


def headings_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors
