"""Per-service routing from annotations, at the edge.

The `globaldns.io/*` routing annotations of a Service or ServiceExport become
`Annotations`, then one `ServicePolicy`. Every value is bounded before it is read; an
annotation that cannot be read is ignored, counted (`bad_annotation`) and logged once, and
the service is served as if it were absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from globaldns.registry.model import ServicePolicy, is_cluster_name
from globaldns.registry.store import Skipped

EXPORT_LABEL = "globaldns.io/export"
"""`labeled` export: a Service with this label set to "true" is exported."""
STRATEGY = "globaldns.io/strategy"
PRIMARY_CLUSTER = "globaldns.io/primary-cluster"
WEIGHTS = "globaldns.io/weights"
TTL = "globaldns.io/ttl"
ANNOTATIONS = (STRATEGY, PRIMARY_CLUSTER, WEIGHTS, TTL)
STRATEGIES = ("failover", "distribute", "weighted", "geo")

# Bounds, checked before a value is split or converted: no real value comes near them.
MAX_VALUE = 1024
MAX_WEIGHTS = 64
MAX_WEIGHT = 10_000
MAX_TTL = 86_400
"""One day: a longer TTL pins an answer past any failover (RFC 2181 §8 allows more)."""


@dataclass(frozen=True, slots=True)
class Annotations:
    """The readable `globaldns.io/*` routing annotations of one object (None: absent)."""

    strategy: str | None = None
    primary_cluster: str | None = None
    weights: tuple[tuple[str, int], ...] | None = None
    ttl: int | None = None

    def over(self, base: Annotations) -> Annotations:
        """These values, and `base`'s where these are absent."""
        return Annotations(
            self.strategy if self.strategy is not None else base.strategy,
            self.primary_cluster if self.primary_cluster is not None else base.primary_cluster,
            self.weights if self.weights is not None else base.weights,
            self.ttl if self.ttl is not None else base.ttl)

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.strategy, self.primary_cluster, self.weights,
                                           self.ttl))


NONE = Annotations()


def _weights(text: str) -> tuple[tuple[str, int], ...]:
    parts = text.split(",", MAX_WEIGHTS)
    if len(parts) > MAX_WEIGHTS:
        raise ValueError(f"more than {MAX_WEIGHTS} clusters")
    out: dict[str, int] = {}
    for part in parts:
        cluster, sep, number = part.strip().partition("=")
        cluster = cluster.strip().lower()
        number = number.strip()
        if not sep or not is_cluster_name(cluster):
            raise ValueError(f"{part.strip()[:80]!r} is not <cluster>=<weight>")
        if not (number.isascii() and number.isdigit() and len(number) <= 5
                and int(number) <= MAX_WEIGHT):
            raise ValueError(f"weight {number[:20]!r} is not a whole number 0..{MAX_WEIGHT}")
        if cluster in out:
            raise ValueError(f"cluster {cluster} is given twice")
        out[cluster] = int(number)
    if not any(out.values()):
        raise ValueError("every weight is 0")
    return tuple(out.items())


def read(meta: Mapping[str, Any], *, what: str, skipped: Skipped | None) -> Annotations:
    """The routing annotations of one object; each unreadable one skipped and counted."""
    raw = meta.get("annotations") or {}
    if not isinstance(raw, dict):
        return NONE
    values: dict[str, Any] = {}
    for key in ANNOTATIONS:
        value = raw.get(key)
        if value is None:
            continue
        try:
            if not isinstance(value, str) or len(value) > MAX_VALUE:
                raise ValueError(f"not text of at most {MAX_VALUE} characters")
            text = value.strip()
            if key == STRATEGY:
                if text.lower() not in STRATEGIES:
                    raise ValueError(f"{text[:40]!r} is none of {', '.join(STRATEGIES)}")
                values["strategy"] = text.lower()
            elif key == PRIMARY_CLUSTER:
                if not is_cluster_name(text.lower()):
                    raise ValueError(f"{text[:80]!r} is not a cluster name")
                values["primary_cluster"] = text.lower()
            elif key == WEIGHTS:
                values["weights"] = _weights(text)
            else:
                if not (text.isascii() and text.isdigit() and len(text) <= 6
                        and int(text) <= MAX_TTL):
                    raise ValueError(f"{text[:20]!r} is not a whole number of seconds "
                                     f"0..{MAX_TTL}")
                values["ttl"] = int(text)
        except ValueError as exc:
            if skipped is not None:
                skipped.skip("bad_annotation", f"{what} {key}", str(exc))
    return Annotations(**values)


def policy(service: Annotations, export: Annotations, *, origin: str
           ) -> ServicePolicy | None:
    """The service's policy: the ServiceExport's annotations over the Service's, key by
    key. A strategy left out follows from what is given: a primary cluster means
    `failover`, weights mean `weighted`."""
    merged = export.over(service)
    if not merged:
        return None
    strategy = merged.strategy or ("failover" if merged.primary_cluster else
                                   "weighted" if merged.weights else "")
    return ServicePolicy(origin=origin, strategy=strategy,
                         primary_cluster=merged.primary_cluster or "",
                         weights=merged.weights or (), ttl=merged.ttl)


