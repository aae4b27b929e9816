"""Robust aggregation against huge finite values.

A Byzantine worker controls its bytes, and the codec rejects NaN/Inf but accepts float32 values up
to the float maximum (~3.4e38), whose squares overflow. With f attackers sending such values, every
robust rule must return a finite vector inside the honest ball (distance to the honest mean at most
the largest honest distance to it) and keep nothing of the attackers. The two means have breakdown
point 0 by design: the test asserts that they are steered, so the breakdown stays documented.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from swarm_contract.spec import RULE_NAMES
from swarm_worker.maths.robust import RULES, _kernels, aggregate, mad_scores, preaggregation

torch.set_num_threads(1)

F, D = 2, 64
MAX = torch.finfo(torch.float32).max
BREAKDOWN_ZERO = ("mean", "weighted-mean")
ROBUST_RULES = [rule for rule in RULES if rule not in BREAKDOWN_ZERO]
#: The honest ball, with float32 rounding: Krum returns an honest input, possibly the farthest.
BALL_TOLERANCE = 1 + 1e-5
#: How much of an attacker a robust rule may keep (`selected`): centered clipping keeps τ/distance.
KEPT_AT_MOST = 1e-6


def _alternating(value: float) -> torch.Tensor:
    return torch.tensor([value, -value]).repeat(D // 2)


# The f = 2 attacker rows (colluders send the same row unless the attack says otherwise).
ATTACKS: dict[str, Callable[[], list[torch.Tensor]]] = {
    "plus-3e38": lambda: [torch.full((D,), 3e38)] * 2,
    "minus-3e38": lambda: [torch.full((D,), -3e38)] * 2,
    "plus-1e30": lambda: [torch.full((D,), 1e30)] * 2,
    "mixed-signs-3e38": lambda: [_alternating(3e38)] * 2,
    "plus-1e18-no-overflow": lambda: [torch.full((D,), 1e18)] * 2,  # |x|² = 6.4e37: no overflow
    "plus-max-and-minus-max": lambda: [torch.full((D,), MAX), torch.full((D,), -MAX)],
}
# Attacks whose two rows do not cancel in a sum: the mean is steered by each of them.
STEERING = ["plus-3e38", "minus-3e38", "plus-1e30", "mixed-signs-3e38", "plus-1e18-no-overflow"]
POSITIONS = {"first": (0, 1), "last": (-2, -1), "spread": (2, -3)}


def rule_inputs(rule: str) -> int:
    return 11 if rule == "bulyan" else 10  # Bulyan needs n >= 4f + 3 for f = 2


def attacked(
    n: int, attack: str, position: str, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(n, D) inputs: n - 2 honest rows around a known vector and the attack's 2 rows at `position`;
    also the honest rows and the attackers' indices."""
    generator = torch.Generator().manual_seed(seed)
    honest = 0.5 * torch.linspace(-1, 1, D) + torch.randn(n - 2, D, generator=generator)
    where = [i % n for i in POSITIONS[position]]
    x = torch.empty(n, D)
    x[[i for i in range(n) if i not in where]] = honest
    for i, row in zip(where, ATTACKS[attack](), strict=True):
        x[i] = row
    return x, honest, where


def assert_in_honest_ball(vector: torch.Tensor, honest: torch.Tensor, slack: float = 0.0) -> None:
    assert bool(torch.isfinite(vector).all()), vector
    centre = honest.mean(0)
    radius = float(torch.linalg.vector_norm(honest - centre, dim=1).max())
    error = float(torch.linalg.vector_norm(vector - centre))
    assert error <= radius * BALL_TOLERANCE + slack, (error, radius)


def test_the_rule_lists_cover_every_rule_the_spec_offers() -> None:
    assert set(ROBUST_RULES) | set(BREAKDOWN_ZERO) == set(RULE_NAMES)


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("rule", ROBUST_RULES)
def test_huge_values_leave_robust_rules_in_the_honest_ball(rule: str, attack: str, position: str) -> None:
    x, honest, attackers = attacked(rule_inputs(rule), attack, position)
    result = aggregate(rule, x, f=F)
    assert_in_honest_ball(result.vector, honest)
    assert float(result.selected[attackers].max()) <= KEPT_AT_MOST


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("attack", STEERING)
@pytest.mark.parametrize("rule", BREAKDOWN_ZERO)
def test_huge_values_steer_the_means_by_design(rule: str, attack: str, position: str) -> None:
    x, honest, _ = attacked(10, attack, position)
    vector = aggregate(rule, x, f=F, weights=torch.ones(10)).vector
    error = torch.linalg.vector_norm((vector - honest.mean(0)).double())
    assert not bool(torch.isfinite(vector).all()) or float(error) > 1e15


# (rule, steps, slack): the error bound beyond the honest ball. Mean after clipping to c (or ARC's
# threshold) is the honest mean shrunk by 8/10 plus two inputs of norm at most c, each / 10.
STEPS: list[tuple[str, list[tuple[str, float | None]], float]] = [
    ("median", [("nnm", None)], 0.0),
    ("krum", [("nnm", None)], 0.0),
    ("trimmed-mean", [("bucketing", 2.0)], 0.0),
    ("mda", [("bucketing", 2.0)], 0.0),
    ("geometric-median", [("arc", None)], 0.0),
    ("multi-krum", [("arc", None)], 0.0),
    ("centered-clipping", [("clipping", 100.0)], 0.0),
    ("mean", [("clipping", 5.0)], 2 * 5.0 / 10),
    ("mean", [("arc", None)], 2 * 12.0 / 10),
]


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize(
    ("rule", "steps", "slack"), STEPS, ids=[f"{rule}-after-{steps[0][0]}" for rule, steps, _ in STEPS]
)
def test_huge_values_through_pre_aggregation(
    rule: str, steps: list[tuple[str, float | None]], slack: float, attack: str
) -> None:
    x, honest, _ = attacked(10, attack, "spread")
    result = aggregate(rule, x, f=F, pre_aggregation=steps, generator=torch.Generator().manual_seed(3))
    # The mean after clipping also shrinks the honest mean by 8/10: allow for that too.
    shrink = float(torch.linalg.vector_norm(honest.mean(0))) * 2 / 10 if rule == "mean" else 0.0
    assert_in_honest_ball(result.vector, honest, slack + shrink)


@pytest.mark.parametrize("attack", ATTACKS)
def test_pairwise_distances_are_float64_never_nan_and_exact_for_the_honest_rows(attack: str) -> None:
    x, honest, attackers = attacked(10, attack, "spread")
    distances = _kernels.pairwise_sq_distances(x)
    assert distances.dtype == torch.float64
    assert not bool(distances.isnan().any())
    kept = [i for i in range(10) if i not in attackers]
    expected = torch.cdist(honest.double(), honest.double()).square()
    torch.testing.assert_close(distances[kept][:, kept], expected, rtol=1e-4, atol=1e-3)
    assert float(distances[attackers][:, kept].min()) > 1e30


@pytest.mark.parametrize("attack", ATTACKS)
def test_clipping_and_arc_clip_a_row_whose_norm_overflows_along_its_direction(attack: str) -> None:
    x, _, attackers = attacked(10, attack, "first")
    clipped = preaggregation.clipping(x, torch.ones(10), 5.0)[0]
    norms = torch.linalg.vector_norm(clipped, dim=1)
    torch.testing.assert_close(norms[attackers], torch.full((2,), 5.0), rtol=1e-5, atol=0)
    direction = x[attackers] / torch.linalg.vector_norm(x[attackers], ord=math.inf, dim=1, keepdim=True)
    assert torch.equal(torch.sign(clipped[attackers]), torch.sign(direction))
    arc_rows = preaggregation.arc(x, torch.ones(10), F)[0]
    # ARC clips k = 3 rows to the (n - k) = 7th smallest norm: the 2 attackers on top, the 7th of 8 honest.
    threshold = torch.linalg.vector_norm(x[2:], dim=1).sort().values[6]
    torch.testing.assert_close(
        torch.linalg.vector_norm(arc_rows[attackers], dim=1), threshold.expand(2), rtol=1e-5, atol=0
    )


@pytest.mark.parametrize("s", [2, 3, 10])
def test_bucket_means_of_values_near_the_float_maximum_are_finite(s: int) -> None:
    x, _, _ = attacked(10, "plus-max-and-minus-max", "first")
    x[1] = MAX  # both attackers at +max: a bucket holding both must average to +max, not inf
    for seed in range(8):
        buckets = preaggregation.bucketing(x, torch.ones(10), s, torch.Generator().manual_seed(seed))[0]
        assert bool(torch.isfinite(buckets).all())


@pytest.mark.parametrize("attack", ATTACKS)
def test_mad_scores_flag_huge_rows_and_keep_honest_scores_finite(attack: str) -> None:
    x, _, attackers = attacked(10, attack, "last")
    scores = mad_scores(x)
    honest = [i for i in range(10) if i not in attackers]
    assert float(scores[attackers].min()) > 1e6
    assert bool(torch.isfinite(scores[honest]).all())
    assert float(scores[honest].max()) < 10


@pytest.mark.parametrize(
    "previous",
    [
        torch.full((D,), math.nan),
        torch.full((D,), math.inf),
        torch.cat([torch.zeros(D - 1), torch.tensor([-math.inf])]),
        torch.full((D,), 1e300, dtype=torch.float64),  # finite, but inf in the updates' float32
    ],
    ids=["nan", "inf", "one-minus-inf", "float64-beyond-float32"],
)
@pytest.mark.parametrize("rule", ["centered-clipping", "geometric-median"])
def test_a_non_finite_previous_is_ignored(rule: str, previous: torch.Tensor) -> None:
    x, _, _ = attacked(10, "plus-3e38", "spread")
    expected = aggregate(rule, x, f=F, previous=None).vector
    result = aggregate(rule, x, f=F, previous=previous).vector
    assert bool(torch.isfinite(result).all())
    assert torch.equal(result, expected)
