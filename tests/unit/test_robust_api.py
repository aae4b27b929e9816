"""`swarm_worker.maths.robust.aggregate` and `mad_scores`: properties, robustness and argument errors."""

from __future__ import annotations

import math

import pytest
import torch

from swarm_contract.spec import PRE_AGGREGATION_NAMES, RULE_NAMES
from swarm_worker.maths.robust import RULES, AggregationResult, aggregate, mad_scores, rules

torch.set_num_threads(1)

ROBUST_RULES = [rule for rule in RULES if rule not in ("mean", "weighted-mean")]
N, F, D = 11, 2, 200


def honest_updates(n: int = N, d: int = D, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator) + torch.linspace(-1, 1, d)


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_every_rule_the_spec_offers_has_an_implementation(rule: str) -> None:
    assert aggregate(rule, honest_updates(), f=F).vector.shape == (D,)


@pytest.mark.parametrize("step", PRE_AGGREGATION_NAMES)
def test_every_pre_aggregation_the_spec_offers_has_an_implementation(step: str) -> None:
    assert aggregate("mean", honest_updates(), f=F, pre_aggregation=[(step, None)]).vector.shape == (D,)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_result_shape_dtype_and_selection_range(rule: str, dtype: torch.dtype) -> None:
    x = honest_updates().to(dtype)
    result = aggregate(rule, x, f=F, weights=torch.rand(N) + 0.1)
    assert isinstance(result, AggregationResult)
    assert result.vector.shape == (D,)
    assert result.vector.dtype == dtype
    assert result.selected.shape == (N,)
    assert bool(((result.selected >= 0) & (result.selected <= 1)).all())


@pytest.mark.parametrize("rule", RULES)
def test_permutation_of_inputs_does_not_change_the_aggregate(rule: str) -> None:
    x = honest_updates(seed=1)
    permutation = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    result = aggregate(rule, x, f=F)
    permuted = aggregate(rule, x[permutation], f=F)
    torch.testing.assert_close(permuted.vector, result.vector, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(permuted.selected, result.selected[permutation], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rule", RULES)
def test_translation_moves_the_aggregate_by_the_same_amount(rule: str) -> None:
    # Holds for every rule when the centre (`previous`) moves with the inputs.
    x = honest_updates(seed=2)
    shift = torch.full((D,), 3.0)
    previous = torch.zeros(D)
    result = aggregate(rule, x, f=F, previous=previous)
    moved = aggregate(rule, x + shift, f=F, previous=previous + shift)
    torch.testing.assert_close(moved.vector, result.vector + shift, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rule", ["mean", "weighted-mean", "median", "trimmed-mean", "multi-krum"])
def test_aggregate_of_identical_inputs_is_that_input(rule: str) -> None:
    x = honest_updates(n=1, seed=3).expand(N, D).contiguous()
    torch.testing.assert_close(aggregate(rule, x, f=F).vector, x[0])


@pytest.mark.parametrize(
    "steps",
    [(), (("nnm", None),), (("arc", None),), (("clipping", 50.0),), (("nnm", None), ("arc", None))],
    ids=["none", "nnm", "arc", "clipping", "nnm+arc"],
)
@pytest.mark.parametrize("rule", ROBUST_RULES)
def test_f_huge_outliers_leave_robust_rules_near_the_honest_mean(
    rule: str, steps: tuple[tuple[str, float | None], ...]
) -> None:
    honest = honest_updates(n=N - F, seed=4)
    x = torch.cat([torch.full((F, D), 1e6), honest])
    result = aggregate(rule, x, f=F, pre_aggregation=steps)
    # An honest input is ~sqrt(D) from the honest mean; the outliers are 1e6 * sqrt(D) away.
    assert torch.linalg.vector_norm(result.vector - honest.mean(0)) < 1.5 * math.sqrt(D)
    if rule in ("krum", "multi-krum", "mda", "monna") and not steps:
        assert result.selected[:F].tolist() == [0.0] * F


def test_mean_is_broken_by_one_outlier_and_clipping_bounds_it() -> None:
    honest = honest_updates(n=N - 1, seed=5)
    x = torch.cat([torch.full((1, D), 1e6), honest])
    assert torch.linalg.vector_norm(aggregate("mean", x).vector - honest.mean(0)) > 1e6
    clipped = aggregate("mean", x, pre_aggregation=[("clipping", 100.0)]).vector
    assert torch.linalg.vector_norm(clipped - honest.mean(0)) < 2 * 100.0 / N + 1.0


def test_weights_move_the_weighted_mean_and_not_the_plain_mean() -> None:
    x = honest_updates(n=3, seed=6)
    weights = torch.tensor([0.0, 1.0, 3.0])
    torch.testing.assert_close(aggregate("weighted-mean", x, weights=weights).vector, (x[1] + 3 * x[2]) / 4)
    torch.testing.assert_close(aggregate("mean", x, weights=weights).vector, x.mean(0))


def test_centered_clipping_steps_from_previous_by_at_most_the_median_distance() -> None:
    x = honest_updates(seed=7)
    x[:F] = 1e6
    far = torch.full((D,), 50.0)
    distances = torch.linalg.vector_norm(x - far, dim=1)
    one_step = rules.centered_clipping(x, far, iterations=1)[0]
    assert torch.linalg.vector_norm(one_step - far) <= distances.median() * (1 + 1e-6)
    # Each step shrinks the error: the outliers' pull is at most (f/n) tau, tau the median distance.
    honest_mean = x[F:].mean(0)
    result = aggregate("centered-clipping", x, f=F, previous=far)
    assert not torch.allclose(result.vector, aggregate("centered-clipping", x, f=F).vector)
    assert (
        torch.linalg.vector_norm(result.vector - honest_mean)
        < torch.linalg.vector_norm(one_step - honest_mean) / 3
    )


def test_krum_selects_exactly_one_input() -> None:
    result = aggregate("krum", honest_updates(seed=8), f=F)
    assert sorted(result.selected.tolist()) == [0.0] * (N - 1) + [1.0]


def test_median_selection_is_the_fraction_of_coordinates_in_the_middle() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 5.0], [2.0, 1.0]])
    assert aggregate("median", x).selected.tolist() == [0.0, 0.5, 0.5]


def test_mad_scores_flag_outliers_and_only_them() -> None:
    honest = honest_updates(n=N - F, seed=9)
    x = torch.cat([honest, honest[:F] * 20])
    scores = mad_scores(x)
    assert scores.shape == (N,)
    assert bool((scores >= 0).all())
    assert bool((scores[-F:] > 10).all())
    assert bool((scores[:-F] < 3).all())


def test_mad_scores_of_identical_inputs_are_zero_and_non_finite_rows_are_infinite() -> None:
    x = honest_updates(n=1, seed=10).expand(5, D).contiguous()
    assert mad_scores(x).tolist() == [0.0] * 5
    x[2, 3] = math.nan
    scores = mad_scores(x)
    assert scores[2] == math.inf
    assert scores[[0, 1, 3, 4]].tolist() == [0.0] * 4


BAD_CALLS = [
    ("unknown rule", {"rule": "average"}, "unknown aggregation rule 'average'"),
    ("1-D updates", {"updates": torch.zeros(5)}, "floating-point \\(n, d\\) tensor"),
    ("integer updates", {"updates": torch.zeros(5, 3, dtype=torch.int64)}, "floating-point"),
    ("no rows", {"updates": torch.zeros(0, 3)}, "at least one row"),
    ("negative f", {"f": -1}, "non-negative integer"),
    ("bool f", {"f": True}, "non-negative integer"),
    ("nan input", {"updates": torch.tensor([[0.0, math.nan]] * 5)}, "NaN or Inf"),
    ("weights shape", {"weights": torch.ones(4)}, "weights must have shape \\(5,\\)"),
    ("negative weight", {"weights": torch.tensor([1.0, -1, 1, 1, 1])}, "non-negative"),
    ("zero weights", {"weights": torch.zeros(5)}, "not all zero"),
    ("previous shape", {"previous": torch.zeros(4)}, "previous must have shape \\(3,\\)"),
    ("krum f", {"rule": "krum", "f": 2}, "'krum' needs n > 2f \\+ 2, got n=5, f=2"),
    ("multi-krum f", {"rule": "multi-krum", "f": 2}, "needs n > 2f \\+ 2"),
    ("bulyan f", {"rule": "bulyan", "f": 1}, "'bulyan' needs n >= 4f \\+ 3"),
    ("median f", {"rule": "median", "f": 3}, "'median' needs n > 2f"),
    ("trimmed-mean f", {"rule": "trimmed-mean", "f": 3}, "needs n > 2f"),
    ("monna f", {"rule": "monna", "f": 3}, "needs n > 2f"),
    ("unknown step", {"pre_aggregation": [("sparsify", None)]}, "unknown pre-aggregation 'sparsify'"),
    ("bucket size", {"pre_aggregation": [("bucketing", 1.5)]}, "integer bucket size"),
    ("bucket zero", {"pre_aggregation": [("bucketing", 0)]}, "integer bucket size"),
    ("clip threshold", {"pre_aggregation": [("clipping", -1.0)]}, "threshold c > 0"),
    ("nnm param", {"pre_aggregation": [("nnm", 3.0)]}, "takes no parameter"),
    ("nnm f", {"pre_aggregation": [("nnm", None)], "f": 5}, "'nnm' needs f < n"),
    (
        "too few buckets",
        {"rule": "krum", "f": 1, "pre_aggregation": [("bucketing", 2)]},
        "got n=3 \\(after pre-aggregation, from 5\\)",
    ),
]


@pytest.mark.parametrize(("changes", "message"), [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_arguments_raise_one_clear_value_error(changes: dict[str, object], message: str) -> None:
    call: dict[str, object] = {"rule": "mean", "updates": torch.zeros(5, 3), **changes}
    rule = call.pop("rule")
    updates = call.pop("updates")
    with pytest.raises(ValueError, match=message):
        aggregate(rule, updates, **call)  # type: ignore[arg-type]


def test_mda_refuses_an_exhaustive_search_that_is_too_large() -> None:
    with pytest.raises(ValueError, match="'mda' would check C\\(40, 15\\)"):
        aggregate("mda", torch.zeros(40, 2), f=15)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.gpu
@pytest.mark.parametrize("rule", RULES)
def test_cuda_inputs_give_cuda_results_equal_to_cpu(rule: str) -> None:
    x = honest_updates(seed=11)
    steps: list[tuple[str, float | None]] = [("nnm", None), ("arc", None)]
    cpu = aggregate(rule, x, f=F, pre_aggregation=steps)
    cuda = aggregate(rule, x.cuda(), f=F, pre_aggregation=steps)
    assert cuda.vector.device.type == "cuda"
    assert cuda.selected.device.type == "cuda"
    torch.testing.assert_close(cuda.vector.cpu(), cpu.vector, rtol=1e-4, atol=1e-4)
