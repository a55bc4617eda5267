"""Every config example in the docs is accepted as written."""

from __future__ import annotations

import re

import pytest

from globaldns.config import parse_text
from tests.helpers.data import ROOT

DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


def complete_examples() -> list[tuple[str, int, str]]:
    out = []
    for doc in DOCS:
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S)):
            if "clusters:" in block or "services:" in block or block.startswith("dns:"):
                out.append((doc.name, i, block))
    return out


@pytest.mark.parametrize(("doc", "index", "block"), complete_examples(),
                         ids=lambda v: str(v)[:20])
def test_the_docs_config_examples_are_valid(doc, index, block):
    parse_text(block, f"{doc} example {index}")


def test_routing_doc_has_an_example_for_each_seed_case():
    text = (ROOT / "docs" / "routing.md").read_text()
    for heading in ("Geo by client", "80/20 locality split", "70/30 between clusters",
                    "Primary / backup", "Premium users", "Alias"):
        assert f"### {heading}" in text


def test_every_test_and_file_the_security_page_names_exists():
    text = (ROOT / "docs" / "security.md").read_text()
    defined = {m for path in (ROOT / "tests").rglob("test_*.py")
               for m in re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M)}
    named = set(re.findall(r"`(?:[\w/]+\.py::)?(test_\w+?)(?:\[|`|,)", text))
    named |= set(re.findall(r", `?(test_\w+)`", text))
    assert len(named) > 40 and named <= defined, sorted(named - defined)
    for path in re.findall(r"`((?:fuzz|bench)/[\w.-]+)`", text):
        assert (ROOT / path).exists(), path
