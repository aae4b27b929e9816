"""How many misbehaving inputs a round can tolerate, and what that guarantees about progress.

Every aggregator combines its children with the spec's rule, tolerating up to f Byzantine inputs,
lowered to what its number of children allows (`feasible_rule`). Up to that many children may also
be silent or send only what the round drops: a round must still close without them. So an
aggregator with n children closes at its deadline on n - f_n updates (f_n its feasible f), and the
root is guaranteed `guaranteed_workers` workers per round in the worst case (the f_n children with
the most workers missing at every aggregator). Pure: the spec's validation and the round state
machine both use it.
"""

from __future__ import annotations

import math

from swarm_contract.topology import ROOT_ID, Tree


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


def tolerated(rule: str, children: int, f: int, bucket: int = 1) -> int:
    """Children an aggregator with `children` children closes a round without: its feasible f."""
    return feasible_rule(rule, children, f, bucket)[1]


def guaranteed_workers(tree: Tree, rule: str, f: int, bucket: int = 1) -> int:
    """Workers the root hears from in a round when, at every aggregator, the `tolerated` children
    with the most workers below them send nothing usable."""

    def heard(node_id: str) -> int:
        node = tree.node(node_id)
        if node.role == "worker":
            return 1
        below = sorted(heard(c) for c in node.children)
        return sum(below[: len(below) - tolerated(rule, len(below), f, bucket)])

    return heard(ROOT_ID)
