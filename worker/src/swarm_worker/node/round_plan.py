"""The numbers a round is planned with: how many inputs a robust rule needs, the rule and f it can
actually run with on n inputs, how long each level of the tree waits, and the quorum that lets a
round close at its deadline. Pure functions of the spec and the tree, shared by the round state
machine and its tests.
"""

from __future__ import annotations

import math

from swarm_contract.spec import SwarmSpec
from swarm_contract.tolerance import feasible_rule, rule_needs, tolerated

__all__ = ["deadline_for", "feasible_rule", "interior_quorum", "root_quorum", "rule_needs"]


def deadline_for(level: int, height: int, round_deadline: float) -> float:
    """Seconds a level waits: the root the full deadline, each level below 10% less (at least half)."""
    return round_deadline * max(0.5, 1.0 - 0.1 * (height - level))


def interior_quorum(spec: SwarmSpec, live_children: int) -> int:
    """Updates an interior aggregator needs to close at its deadline: the swarm's quorum fraction of
    its live children, and at least as many inputs as its rule needs to tolerate f (never a robust
    rule over one input), but never more than its live children less the f it tolerates, so up to f
    silent or always-dropped children cannot stall its round (and at least one)."""
    rule, f, bucket = spec.robustness.rule, spec.robustness.f, spec.bucket_size
    spare = tolerated(rule, live_children, f, bucket)
    fraction = spec.quorum / spec.workers.replicas
    needed = max(math.ceil(fraction * live_children), rule_needs(rule, spare))
    return max(1, min(live_children - spare, needed))


def root_quorum(spec: SwarmSpec, live_workers: int) -> int:
    """Workers (summed over the root's children's updates) the root needs to close at its deadline:
    `spec.quorum`, lowered to what f misbehaving children per aggregator still guarantee."""
    return max(1, min(spec.quorum, spec.guaranteed_workers, live_workers))
