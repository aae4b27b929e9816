"""The numbers a round is planned with: how many inputs a robust rule needs, the rule and f it can
actually run with on n inputs, how long each level of the tree waits, and the quorum that lets a
round close at its deadline. Pure functions of the spec and the tree, shared by the round state
machine and its tests.
"""

from __future__ import annotations

import math

from swarm_contract.spec import SwarmSpec


def rule_needs(rule: str, f: int) -> int:
    """Fewest inputs `rule` accepts with f Byzantine ones (see swarm_worker.maths.robust)."""
    if rule in ("mean", "weighted-mean"):
        return 1
    if rule in ("krum", "multi-krum"):
        return 2 * f + 3
    if rule == "bulyan":
        return 4 * f + 3
    return 2 * f + 1


def feasible_rule(rule: str, n: int, f: int, bucket: int = 1) -> tuple[str, int]:
    """The rule and f to use on n inputs: the spec's f lowered to what n allows; a rule that cannot
    run on n inputs at all (Krum on 2) falls back to the coordinate-wise median, never to the mean.
    With bucketing of size `bucket` the rule sees ceil(n / bucket) inputs."""
    if rule in ("mean", "weighted-mean"):
        return rule, 0  # no f to tolerate: these rules have breakdown point 0
    n = math.ceil(n / bucket)
    while f > 0 and n < rule_needs(rule, f):
        f -= 1
    if n < rule_needs(rule, f):
        return "median", 0
    return rule, f


def deadline_for(level: int, height: int, round_deadline: float) -> float:
    """Seconds a level waits: the root the full deadline, each level below 10% less (at least half)."""
    return round_deadline * max(0.5, 1.0 - 0.1 * (height - level))


def interior_quorum(spec: SwarmSpec, live_children: int) -> int:
    """Updates an interior aggregator needs to close at its deadline: the swarm's quorum fraction of
    its live children, and at least as many inputs as its rule needs to tolerate f (never a robust
    rule over one input), but never more than it has live children (and at least one)."""
    fraction = spec.quorum / spec.workers.replicas
    needed = max(math.ceil(fraction * live_children), rule_needs(spec.robustness.rule, spec.robustness.f))
    return max(1, min(live_children, needed))


def root_quorum(spec: SwarmSpec, live_workers: int) -> int:
    """Workers (summed over the root's children's updates) the root needs to close at its deadline."""
    return min(spec.quorum, max(1, live_workers))
