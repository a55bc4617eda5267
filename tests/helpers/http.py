"""Test-side HTTP: fetch a page of a running server, read its Prometheus metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.server import Running

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(server: Running, path: str, *, timeout: float = 5.0) -> tuple[int, str, str]:
    """(status, content type, body) of GET http://127.0.0.1:<http port><path>."""
    url = f"http://127.0.0.1:{server.app.http.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def get_json(server: Running, path: str) -> tuple[int, Any]:
    status, _, body = get(server, path)
    return status, json.loads(body)


def scrape(server: Running) -> Samples:
    """Every sample of /metrics: (name, labels) → value."""
    status, _, text = get(server, "/metrics")
    assert status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def promtool_check(text: str) -> str:
    """`promtool check metrics` on an exposition; its absence is a failure, not a skip
    (Debian package `prometheus`)."""
    assert shutil.which("promtool"), "promtool is not installed (apt-get install prometheus)"
    result = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                            capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr
