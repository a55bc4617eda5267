"""A service's own routing: its `globaldns.io/*` annotations over the config's rule.

Precedence, highest first: the ServiceExport's annotations, the Service's, the first
matching `routing` rule, the default (locality tiers). A strategy annotation replaces how
the rule chooses (`weights`, `distribute`, `failover`, `answer`); what else the rule says
(views, min_healthy, panic_threshold, max_answers, shuffle, subsets) still applies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from globaldns.config.model import RoutingRule
from globaldns.registry.model import ServicePolicy

MatchedRule = tuple[int, RoutingRule]
NO_RULE = "(none: locality tiers and rotation)"


def _strategy(policy: ServicePolicy, clusters: Sequence[str]) -> dict[str, object]:
    """The rule fields a strategy sets."""
    cleared: dict[str, object] = {"weights": (), "distribute": (), "failover": (),
                                  "answer": "all"}
    if policy.strategy == "failover" and policy.primary_cluster:
        # The primary's endpoints only while it has a healthy one (best_tier cuts the
        # answer after them); then the nearest tier of the others.
        return cleared | {"weights": ((policy.primary_cluster, 1),), "answer": "best_tier"}
    if policy.strategy in ("failover", "geo"):
        # Without a primary, failover is geo: the nearest healthy tier, then the next.
        return cleared | {"answer": "best_tier"}
    if policy.strategy == "weighted" and policy.weights:
        return cleared | {"weights": policy.weights}
    # distribute, or weighted without weights: every cluster leads an equal share.
    return cleared | {"weights": tuple((c, 1) for c in clusters)}


def annotated(matched: MatchedRule | None, policy: ServicePolicy | None,
              clusters: Sequence[str]) -> tuple[MatchedRule | None, str]:
    """The rule a service is routed by, and a line saying where it came from (explain)."""
    described = matched[1].match if matched is not None else NO_RULE
    if policy is None or not policy.strategy:
        if policy is not None and policy.ttl is not None:
            described += f"; ttl {policy.ttl} from annotations of {policy.origin}"
        return matched, described
    base = matched[1] if matched is not None else RoutingRule(match="*")
    rule = dataclasses.replace(base, **_strategy(policy, clusters))  # type: ignore[arg-type]
    what = [f"strategy {policy.strategy}"]
    if policy.primary_cluster:
        what.append(f"primary-cluster {policy.primary_cluster}")
    if policy.weights:
        what.append("weights " + ",".join(f"{c}={w}" for c, w in policy.weights))
    if policy.ttl is not None:
        what.append(f"ttl {policy.ttl}")
    over = f" over config rule {described}" if matched is not None else ""
    return ((matched[0] if matched is not None else 0, rule),
            f"annotations of {policy.origin} ({', '.join(what)}){over}")
