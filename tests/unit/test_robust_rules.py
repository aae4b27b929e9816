"""Every robust rule against the reference implementation byzfl 0.0.11 on identical inputs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from byzfl.aggregators import aggregators as byz

from swarm_worker.maths.robust import _kernels, rules

torch.set_num_threads(1)

# (n, f, d, seed): small and odd/even n, f = 0 and near the rule's limit, d from 1 to a few thousand.
CASES = [(5, 1, 7, 0), (8, 1, 64, 1), (11, 2, 300, 2), (16, 3, 1000, 3), (20, 4, 2049, 4), (9, 0, 33, 5)]
CASE_IDS = [f"n{n}-f{f}-d{d}-s{s}" for n, f, d, s in CASES]
RTOL = ATOL = 1e-5


def make_updates(n: int, d: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # Distinct per-input scales and offsets so that selections are unambiguous.
    scales = torch.rand(n, 1, generator=generator) + 0.5
    return torch.randn(n, d, generator=generator) * scales + torch.randn(d, generator=generator)


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(("n", "f", "d", "seed"), CASES, ids=CASE_IDS)
def test_mean_matches_byzfl_average(n: int, f: int, d: int, seed: int) -> None:
    x = make_updates(n, d, seed)
    close(rules.mean(x)[0], byz.Average()(x.clone()))


@pytest.mark.parametrize(("n", "f", "d", "seed"), CASES, ids=CASE_IDS)
def test_weighted_mean_with_equal_weights_matches_byzfl_average(n: int, f: int, d: int, seed: int) -> None:
    x = make_updates(n, d, seed)
    close(rules.weighted_mean(x, torch.full((n,), 3.0))[0], byz.Average()(x.clone()))


def test_weighted_mean_is_the_mean_of_repeated_inputs() -> None:
    x = make_updates(4, 50, 0)
    repeated = torch.cat([x[:1], x[1:2], x[1:2], x[2:3], x[2:3], x[2:3]])  # weights 1, 2, 3, 0
    vector, selected = rules.weighted_mean(x, torch.tensor([1.0, 2.0, 3.0, 0.0]))
    close(vector, repeated.mean(0))
    assert selected.tolist() == [1, 1, 1, 0]


@pytest.mark.parametrize(("n", "f", "d", "seed"), CASES, ids=CASE_IDS)
def test_median_matches_byzfl(n: int, f: int, d: int, seed: int) -> None:
    x = make_updates(n, d, seed)
    close(rules.median(x)[0], byz.Median()(x.clone()))


@pytest.mark.parametrize(("n", "f", "d", "seed"), CASES, ids=CASE_IDS)
def test_trimmed_mean_matches_byzfl(n: int, f: int, d: int, seed: int) -> None:
    x = make_updates(n, d, seed)
    close(rules.trimmed_mean(x, f)[0], byz.TrMean(f=f)(x.clone()))


@pytest.mark.parametrize(("n", "f", "d", "seed"), CASES, ids=CASE_IDS)
def test_krum_matches_byzfl(n: int, f: int, d: int, seed: int) -> None:
    x = make_updates(n, d, seed)
    vector, selected = rules.krum(x, f)
    close(vector, byz.Krum(f=f)(x.clone()))
    assert selected.sum() == 1
    assert torch.equal(x[selected.argmax()], vector)


@pytest.mark.parametrize(("n", "f", "d", "seed"), CASES, ids=CASE_IDS)
def test_multi_krum_matches_byzfl(n: int, f: int, d: int, seed: int) -> None:
    x = make_updates(n, d, seed)
    vector, selected = rules.multi_krum(x, f)
    close(vector, byz.MultiKrum(f=f)(x.clone()))
    assert selected.sum() == n - f


def byzfl_bulyan(x: torch.Tensor, f: int) -> torch.Tensor:
    """Bulyan composed from byzfl parts: θ = n - 2f rounds of Krum(f) on the shrinking pool
    (original order kept), then byzfl's mean-around-median with f' = 2f on the θ picked."""
    pool = list(range(x.shape[0]))
    picked = []
    for _ in range(x.shape[0] - 2 * f):
        chosen = byz.Krum(f=f)(x[pool].clone())
        index = next(i for i in pool if torch.equal(x[i], chosen))
        picked.append(index)
        pool.remove(index)
    result: torch.Tensor = byz.Meamed(f=2 * f)(x[picked].clone())
    return result


# Meamed(f=2f) on θ = n - 2f inputs needs θ > 4f, so these cases have n > 6f.
BULYAN_CASES = [(7, 1, 10, 0), (8, 1, 64, 1), (13, 2, 300, 2), (19, 3, 1000, 3), (9, 0, 33, 4)]


@pytest.mark.parametrize(
    ("n", "f", "d", "seed"), BULYAN_CASES, ids=[f"n{n}-f{f}-d{d}-s{s}" for n, f, d, s in BULYAN_CASES]
)
def test_bulyan_matches_byzfl_krum_then_meamed(n: int, f: int, d: int, seed: int) -> None:
    x = make_updates(n, d, seed)
    vector, selected = rules.bulyan(x, f)
    close(vector, byzfl_bulyan(x, f))
    assert int((selected > 0).sum()) <= n - 2 * f
    # β = θ - 2f values are averaged per coordinate: the selected fractions add up to β.
    torch.testing.assert_close(selected.sum(), torch.tensor(float(n - 4 * f)))


@pytest.mark.parametrize(("n", "f", "d", "seed"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("iterations", [3, 20])
def test_geometric_median_matches_byzfl(n: int, f: int, d: int, seed: int, iterations: int) -> None:
    x = make_updates(n, d, seed)
    expected = byz.GeometricMedian(nu=0.1, T=iterations)(x.clone())
    close(rules.geometric_median(x, nu=0.1, iterations=iterations)[0], expected)


def test_geometric_median_ignores_infinite_rows_like_byzfl() -> None:
    x = make_updates(7, 20, 1)
    x[3, 5] = torch.inf
    vector, selected = rules.geometric_median(x, nu=0.1, iterations=5)
    close(vector, byz.GeometricMedian(nu=0.1, T=5)(x.clone()))
    assert selected[3] == 0


@pytest.mark.parametrize(("n", "f", "d", "seed"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize(
    ("tau", "iterations"), [(100.0, 1), (3.0, 1), (3.0, 4)], ids=["tau100-L1", "tau3-L1", "tau3-L4"]
)
def test_centered_clipping_matches_byzfl(
    n: int, f: int, d: int, seed: int, tau: float, iterations: int
) -> None:
    x = make_updates(n, d, seed)
    centre = torch.randn(d, generator=torch.Generator().manual_seed(seed + 100))
    reference = byz.CenteredClipping(L=iterations, tau=tau)
    reference.m = centre.clone()  # byzfl's constructor type check rejects a tensor m; set it after
    expected = reference(x.clone())
    close(rules.centered_clipping(x, centre, tau=tau, iterations=iterations)[0], expected)
    # byzfl's default centre (None) is zeros, as ours.
    close(
        rules.centered_clipping(x, None, tau=tau, iterations=1)[0], byz.CenteredClipping(tau=tau)(x.clone())
    )


MDA_CASES = [(5, 1, 7, 0), (8, 2, 64, 1), (11, 3, 300, 2), (14, 4, 100, 3), (6, 0, 10, 4)]


@pytest.mark.parametrize(
    ("n", "f", "d", "seed"), MDA_CASES, ids=[f"n{n}-f{f}-d{d}-s{s}" for n, f, d, s in MDA_CASES]
)
def test_mda_matches_byzfl(n: int, f: int, d: int, seed: int) -> None:
    x = make_updates(n, d, seed)
    vector, selected = rules.mda(x, f)
    close(vector, byz.MDA(f=f)(x.clone()))
    assert selected.sum() == n - f


@pytest.mark.parametrize(("n", "f", "d", "seed"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("idx", [0, 3])
def test_monna_with_input_pivot_matches_byzfl(n: int, f: int, d: int, seed: int, idx: int) -> None:
    x = make_updates(n, d, seed)
    vector, selected = rules.monna(x, f, pivot=x[idx])
    close(vector, byz.MoNNA(f=f, idx=idx)(x.clone()))
    assert selected[idx] == 1


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 16, 33, 64, 65, 130, 257])
@pytest.mark.parametrize("integers", [False, True], ids=["continuous", "ties"])
def test_ranked_mean_matches_sort_on_every_code_path(n: int, integers: bool) -> None:
    generator = torch.Generator().manual_seed(n)
    x = torch.randint(0, 3, (n, 300), generator=generator).float() if integers else torch.randn(n, 300)
    ordered = torch.sort(x, dim=0).values
    for lo, hi in {((n - 1) // 2, n // 2), (0, n - 1), (n // 4, n - 1 - n // 4)}:
        vector, lo_values, hi_values = _kernels.ranked_mean(x, lo, hi)
        close(vector, ordered[lo : hi + 1].mean(0))
        assert torch.equal(lo_values, ordered[lo])
        assert torch.equal(hi_values, ordered[hi])


def test_pairwise_distances_survive_a_large_common_offset() -> None:
    x = make_updates(6, 500, 0)
    expected = torch.cdist(x.double(), x.double()).square()
    torch.testing.assert_close(
        _kernels.pairwise_sq_distances(x + 1e4).double(), expected, rtol=1e-3, atol=1e-2
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.gpu
@pytest.mark.parametrize(
    "rule",
    [
        lambda x: rules.median(x),
        lambda x: rules.trimmed_mean(x, 2),
        lambda x: rules.krum(x, 2),
        lambda x: rules.bulyan(x, 2),
        lambda x: rules.geometric_median(x),
        lambda x: rules.centered_clipping(x),
        lambda x: rules.mda(x, 2),
        lambda x: rules.monna(x, 2),
    ],
    ids=["median", "trimmed-mean", "krum", "bulyan", "geometric-median", "centered-clipping", "mda", "monna"],
)
def test_cuda_matches_cpu(rule: Callable[[torch.Tensor], rules.RuleOutput]) -> None:
    x = make_updates(12, 5000, 7)
    cpu_vector, cpu_selected = rule(x)
    cuda_vector, cuda_selected = rule(x.cuda())
    assert cuda_vector.device.type == "cuda"
    torch.testing.assert_close(cuda_vector.cpu(), cpu_vector, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cuda_selected.cpu(), cpu_selected, rtol=1e-4, atol=1e-4)
