"""Every pre-aggregation step against the reference implementation byzfl 0.0.11."""

from __future__ import annotations

import pytest
import torch
from byzfl.aggregators import preaggregators as byz

from swarm_worker.maths.robust import aggregate, preaggregation

torch.set_num_threads(1)

CASES = [(5, 1, 7, 0), (8, 2, 64, 1), (11, 3, 300, 2), (16, 5, 1000, 3), (9, 0, 33, 4)]
CASE_IDS = [f"n{n}-f{f}-d{d}-s{s}" for n, f, d, s in CASES]
RTOL = ATOL = 1e-5


def make_updates(n: int, d: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    scales = torch.rand(n, 1, generator=generator) * 3 + 0.5  # distinct norms: ARC and clipping bite
    return torch.randn(n, d, generator=generator) * scales


@pytest.mark.parametrize(("n", "f", "d", "seed"), CASES, ids=CASE_IDS)
def test_nnm_matches_byzfl(n: int, f: int, d: int, seed: int) -> None:
    x = make_updates(n, d, seed)
    mixed, _, owner = preaggregation.nnm(x, torch.ones(n), f)
    torch.testing.assert_close(mixed, byz.NNM(f=f)(x.clone()), rtol=RTOL, atol=ATOL)
    assert owner.tolist() == list(range(n))


@pytest.mark.parametrize(("n", "f", "d", "seed"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("s", [1, 2, 3, 4])
def test_bucketing_matches_byzfl_with_the_same_seed(n: int, f: int, d: int, seed: int, s: int) -> None:
    x = make_updates(n, d, seed)
    torch.manual_seed(seed)  # byzfl draws from torch's default generator
    expected = byz.Bucketing(s=s)(x.clone())
    buckets, weights, owner = preaggregation.bucketing(
        x, torch.ones(n), s, torch.Generator().manual_seed(seed)
    )
    torch.testing.assert_close(buckets, expected, rtol=RTOL, atol=ATOL)
    assert weights.sum() == n
    assert torch.bincount(owner).tolist() == [s] * (n // s) + ([n % s] if n % s else [])


def test_bucketing_without_generator_uses_torch_default_like_byzfl() -> None:
    x = make_updates(10, 20, 0)
    torch.manual_seed(5)
    expected = byz.Bucketing(s=3)(x.clone())
    torch.manual_seed(5)
    torch.testing.assert_close(
        preaggregation.bucketing(x, torch.ones(10), 3)[0], expected, rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize(("n", "f", "d", "seed"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("c", [0.5, 2.0, 50.0, 1e4])
def test_clipping_matches_byzfl(n: int, f: int, d: int, seed: int, c: float) -> None:
    x = make_updates(n, d, seed)
    clipped = preaggregation.clipping(x, torch.ones(n), c)[0]
    torch.testing.assert_close(clipped, byz.Clipping(c=c)(x.clone()), rtol=RTOL, atol=ATOL)
    assert bool((torch.linalg.vector_norm(clipped, dim=1) <= c * (1 + 1e-6)).all())


@pytest.mark.parametrize(("n", "f", "d", "seed"), CASES, ids=CASE_IDS)
def test_arc_matches_byzfl(n: int, f: int, d: int, seed: int) -> None:
    x = make_updates(n, d, seed)
    torch.testing.assert_close(
        preaggregation.arc(x, torch.ones(n), f)[0], byz.ARC(f=f)(x.clone()), rtol=RTOL, atol=ATOL
    )


def test_arc_clips_exactly_the_largest_norms() -> None:
    x = torch.diag(torch.arange(1.0, 11.0))  # norms 1..10
    clipped = preaggregation.arc(x, torch.ones(10), 2)[0]  # k = floor(2*2*8/10) = 3
    assert torch.linalg.vector_norm(clipped, dim=1).tolist() == [1, 2, 3, 4, 5, 6, 7, 7, 7, 7]


def test_bucketing_maps_selection_back_to_each_input() -> None:
    x = make_updates(9, 30, 0)
    x[0] = 1e6
    result = aggregate("krum", x, f=1, pre_aggregation=[("bucketing", 2.0)], generator=torch.Generator())
    # The chosen bucket's inputs (two, or one for the last bucket) are selected, the others not.
    assert int(result.selected.sum()) in (1, 2)
    assert result.selected[0] == 0


def test_chained_steps_match_byzfl_chain() -> None:
    x = make_updates(12, 200, 3)
    torch.manual_seed(1)
    expected = byz.Clipping(c=3.0)(byz.Bucketing(s=2)(byz.NNM(f=2)(x.clone())))
    torch.manual_seed(1)
    steps: list[tuple[str, float | None]] = [("nnm", None), ("bucketing", 2), ("clipping", 3.0)]
    result = aggregate("mean", x, f=2, pre_aggregation=steps)
    torch.testing.assert_close(result.vector, expected.mean(0), rtol=RTOL, atol=ATOL)
