"""Top-k selectors, sparsify/densify and the error-feedback invariant (swarm_worker.maths.compression)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_worker.maths.compression import (
    VALUE_DTYPES,
    ErrorFeedbackCompressor,
    SparseVector,
    dense_to_sparse,
    k_for,
    select,
    sparsify,
    topk_exact,
    topk_sampled,
)


def reference_topk(vec: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest |vec| by a full stable sort: the obvious, slow reference."""
    order = torch.sort(vec.abs(), descending=True, stable=True).indices
    return torch.sort(order[:k]).values


def captured_mass(vec: torch.Tensor, chosen: torch.Tensor, k: int) -> float:
    """L1 mass of the chosen coordinates as a fraction of the true top-k's."""
    return float(vec[chosen].abs().sum() / vec[reference_topk(vec, k)].abs().sum())


def is_ascending_unique(idx: torch.Tensor) -> bool:
    return idx.numel() < 2 or bool((idx[1:] > idx[:-1]).all())


# Vectors the selectors see: gaussian updates, heavy tails, and a sparse-ish spiky one.
def _gaussian(d: int, g: torch.Generator) -> torch.Tensor:
    return torch.randn(d, generator=g)


def _student_t2(d: int, g: torch.Generator) -> torch.Tensor:
    # t with 2 degrees of freedom: infinite variance, a few huge coordinates.
    z = torch.randn(d, generator=g)
    chi2 = torch.randn(d, generator=g) ** 2 + torch.randn(d, generator=g) ** 2
    return z / torch.sqrt(chi2 / 2)


def _cauchy(d: int, g: torch.Generator) -> torch.Tensor:
    return torch.tan(math.pi * (torch.rand(d, generator=g) - 0.5))


def _spiky(d: int, g: torch.Generator) -> torch.Tensor:
    vec = 1e-3 * torch.randn(d, generator=g)
    spikes = torch.randint(0, d, (d // 200,), generator=g)
    vec[spikes] = 100 * torch.randn(spikes.numel(), generator=g)
    return vec


DISTRIBUTIONS = {"gaussian": _gaussian, "student_t2": _student_t2, "cauchy": _cauchy, "spiky": _spiky}


@pytest.mark.parametrize(("numel", "ratio", "k"), [(10, 0.01, 1), (100, 0.1, 10), (7, 1.0, 7), (5, 2.0, 5)])
def test_k_for_rounds_up_and_stays_in_range(numel: int, ratio: float, k: int) -> None:
    assert k_for(numel, ratio) == k


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=list(DISTRIBUTIONS))
@pytest.mark.parametrize("k", [1, 17, 1000])
def test_exact_topk_matches_reference(dist: str, k: int) -> None:
    vec = DISTRIBUTIONS[dist](5000, torch.Generator().manual_seed(k))
    assert torch.equal(topk_exact(vec, k), reference_topk(vec, k))


@given(values=st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=200), data=st.data())
@settings(max_examples=100, deadline=None)
def test_exact_topk_holds_the_largest_magnitudes(values: list[float], data: st.DataObject) -> None:
    vec = torch.tensor(values, dtype=torch.float32)
    k = data.draw(st.integers(1, vec.numel()))
    idx = topk_exact(vec, k)
    assert idx.numel() == k
    assert is_ascending_unique(idx)
    # Ties make the index set ambiguous; the sorted magnitudes are not.
    assert torch.equal(
        torch.sort(vec[idx].abs()).values, torch.sort(vec[reference_topk(vec, k)].abs()).values
    )


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=list(DISTRIBUTIONS))
@pytest.mark.parametrize(("numel", "ratio"), [(200_000, 0.01), (500_000, 0.001), (300_000, 0.1)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_topk_is_k_ascending_unique_and_captures_the_mass(
    dist: str, numel: int, ratio: float, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    vec = DISTRIBUTIONS[dist](numel, g)
    k = k_for(numel, ratio)
    assert int(torch.count_nonzero(vec)) >= k  # so the top k are k nonzero coordinates
    idx = topk_sampled(vec, k, generator=g)
    assert idx.dtype == torch.int64
    assert idx.numel() == k
    assert is_ascending_unique(idx)
    assert int(idx[0]) >= 0
    assert int(idx[-1]) < numel
    assert captured_mass(vec, idx, k) >= 0.95


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_sampled_topk_works_for_every_float_dtype(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(3)
    vec = _gaussian(200_000, g).to(dtype)
    assert int(torch.count_nonzero(vec)) >= 2000
    idx = topk_sampled(vec, 2000, generator=g)
    assert idx.numel() == 2000
    assert is_ascending_unique(idx)
    assert captured_mass(vec.float(), idx, 2000) >= 0.95


@pytest.mark.parametrize("margin", [0.2, 0.5, 1.0, 1.2, 3.0])
def test_sampled_topk_returns_the_exact_topk_even_when_the_sample_threshold_overshoots(margin: float) -> None:
    # margin < 1 aims below k on purpose, forcing the retry and then the exact fallback.
    g = torch.Generator().manual_seed(4)
    vec = _gaussian(300_000, g)
    idx = topk_sampled(vec, 3000, margin=margin, generator=g)
    assert torch.equal(idx, reference_topk(vec, 3000))


def test_sampled_topk_breaks_ties_at_the_cut_towards_lower_indices() -> None:
    # Half the coordinates share the k-th magnitude, so the cut falls inside a block of ties.
    vec = torch.ones(200_000)
    vec[::2] = -1.0
    vec[:1000] = torch.linspace(2, 3, 1000)
    idx = topk_sampled(vec, 5000, generator=torch.Generator().manual_seed(5))
    assert torch.equal(idx, torch.arange(5000))


def _exactly_k_nonzeros(d: int, k: int, g: torch.Generator) -> torch.Tensor:
    vec = torch.zeros(d)
    vec[torch.randperm(d, generator=g)[:k]] = torch.randn(k, generator=g).abs() + 0.5
    return vec


def _few_nonzeros(d: int, k: int, g: torch.Generator) -> torch.Tensor:
    vec = torch.zeros(d)
    vec[torch.randperm(d, generator=g)[: k // 3]] = torch.randn(k // 3, generator=g)
    return vec


def _tied_at_the_cut(d: int, k: int, g: torch.Generator) -> torch.Tensor:
    vec = torch.where(torch.rand(d, generator=g) < 0.5, -0.25, 0.25)
    vec[torch.randperm(d, generator=g)[: k // 2]] = 3.0
    return vec


def _all_zero(d: int, k: int, g: torch.Generator) -> torch.Tensor:
    return torch.zeros(d)


# Zeros and ties, where a selector that counted `> threshold` instead of `>=` (or dropped zeros)
# would return fewer than k indices. On large vectors the sampled selector breaks ties like the stable
# reference (towards lower indices); on small ones it is torch.topk, whose tie order is unspecified.
ZEROS_AND_TIES = {
    "exactly-k-nonzeros": _exactly_k_nonzeros,
    "fewer-nonzeros-than-k": _few_nonzeros,
    "ties-at-the-cut": _tied_at_the_cut,
    "all-zero": _all_zero,
}


@pytest.mark.parametrize("case", ZEROS_AND_TIES, ids=list(ZEROS_AND_TIES))
@pytest.mark.parametrize(
    ("numel", "k", "stable_ties"),
    [(300_000, 3000, True), (1000, 10, False)],
    ids=["sampled-path", "exact-path"],
)
def test_selectors_return_exactly_k_indices_through_zeros_and_ties(
    case: str, numel: int, k: int, stable_ties: bool
) -> None:
    g = torch.Generator().manual_seed(12)
    vec = ZEROS_AND_TIES[case](numel, k, g)
    nonzero = set(torch.nonzero(vec).flatten().tolist())
    reference = reference_topk(vec, k)
    sampled = topk_sampled(vec, k, generator=g)
    if stable_ties:
        assert torch.equal(sampled, reference)
    for idx in (topk_exact(vec, k), sampled):
        assert idx.numel() == k
        assert is_ascending_unique(idx)
        chosen = set(idx.tolist())
        # Every nonzero that fits is chosen before any zero; ties may go either way in topk_exact.
        assert chosen >= nonzero if len(nonzero) <= k else chosen <= nonzero
        torch.testing.assert_close(vec[idx].abs().sort().values, vec[reference].abs().sort().values)


def test_sampled_topk_falls_back_to_exact_for_small_vectors_and_large_k() -> None:
    g = torch.Generator().manual_seed(6)
    small = _gaussian(1000, g)
    assert torch.equal(topk_sampled(small, 10, generator=g), reference_topk(small, 10))
    dense_k = _gaussian(200_000, g)
    assert torch.equal(topk_sampled(dense_k, 60_000, generator=g), topk_exact(dense_k, 60_000))


def test_sampled_topk_is_reproducible_with_a_seeded_generator() -> None:
    vec = _cauchy(300_000, torch.Generator().manual_seed(7))
    first = topk_sampled(vec, 3000, margin=1.0, generator=torch.Generator().manual_seed(8))
    second = topk_sampled(vec, 3000, margin=1.0, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, second)


def test_select_dispatches_and_refuses_unknown_selectors() -> None:
    vec = _gaussian(100_000, torch.Generator().manual_seed(9))
    assert torch.equal(select(vec, 100, "exact"), reference_topk(vec, 100))
    assert torch.equal(
        select(vec, 100, "sampled", torch.Generator().manual_seed(0)), reference_topk(vec, 100)
    )
    with pytest.raises(ValueError, match="unknown selector 'random'"):
        select(vec, 100, "random")


@given(values=st.lists(st.sampled_from([0.0, 0.0, 0.0, 1.5, -2.25, 2.0**-14, 65504.0]), max_size=300))
@settings(max_examples=100, deadline=None)
def test_dense_to_sparse_round_trips(values: list[float]) -> None:
    vec = torch.tensor(values, dtype=torch.float32)
    sparse = dense_to_sparse(vec, torch.float16)  # every value above is exact in float16
    assert sparse.indices.dtype == torch.int32
    assert is_ascending_unique(sparse.indices)
    assert sparse.values.dtype == torch.float16
    assert sparse.numel == vec.numel()
    assert bool((sparse.values != 0).all())
    assert torch.equal(sparse.to_dense(), vec)
    assert sparse.nbytes == sparse.indices.numel() * 4 + sparse.values.numel() * 2


def test_sparsify_casts_values_and_densifies_into_any_dtype() -> None:
    vec = torch.tensor([0.0, 1.0 / 3.0, 0.0, -7.0])
    sparse = sparsify(vec, torch.tensor([1, 3]), torch.bfloat16)
    assert sparse == SparseVector(indices=sparse.indices, values=sparse.values, numel=4)
    assert torch.equal(sparse.indices, torch.tensor([1, 3], dtype=torch.int32))
    torch.testing.assert_close(sparse.to_dense(torch.float64), vec.double(), rtol=2**-8, atol=0.0)


@pytest.mark.parametrize("value_dtype", list(VALUE_DTYPES), ids=list(VALUE_DTYPES))
@pytest.mark.parametrize("selector", ["exact", "sampled"])
def test_error_feedback_conserves_every_bit(value_dtype: str, selector: str) -> None:
    """sent + new residual == update + old residual, exactly, rounding of the values included."""
    numel = 120_000
    g = torch.Generator().manual_seed(10)
    compressor = ErrorFeedbackCompressor(
        numel, ratio=0.01, value_dtype=VALUE_DTYPES[value_dtype], selector=selector, seed=1
    )
    for _ in range(4):
        update = _student_t2(numel, g)
        old_residual = compressor.residual.clone()
        sparse = compressor.compress(update)
        assert sparse.values.dtype == VALUE_DTYPES[value_dtype]
        assert sparse.indices.numel() == compressor.k
        assert is_ascending_unique(sparse.indices)
        acc = update + old_residual
        # On the sent coordinates the residual is exactly the rounding error; elsewhere it is acc.
        assert torch.equal(compressor.residual + sparse.to_dense(), acc)
        unsent = torch.ones(numel, dtype=torch.bool)
        unsent[sparse.indices.long()] = False
        assert torch.equal(compressor.residual[unsent], acc[unsent])


def test_error_feedback_off_keeps_no_residual_and_leaves_the_update_alone() -> None:
    update = _gaussian(50_000, torch.Generator().manual_seed(11))
    before = update.clone()
    compressor = ErrorFeedbackCompressor(50_000, ratio=0.01, value_dtype=torch.float16, error_feedback=False)
    sparse = compressor.compress(update)
    assert torch.equal(update, before)
    assert torch.equal(compressor.residual, torch.zeros(50_000))
    assert sparse.indices.numel() == 500


def test_error_feedback_eventually_sends_everything() -> None:
    # A constant update at 10%: each coordinate waits at most ~10 rounds; the residual stays bounded.
    numel, rounds = 1000, 50
    compressor = ErrorFeedbackCompressor(numel, ratio=0.1, value_dtype=torch.float32, selector="exact")
    update = torch.linspace(0.1, 1.0, numel)
    sent = torch.zeros(numel)
    for _ in range(rounds):
        sent += compressor.compress(update).to_dense()
    torch.testing.assert_close(sent + compressor.residual, rounds * update, rtol=1e-5, atol=1e-4)
    # Coordinates reach the cut (about 5 accumulated) in ~5/update rounds: all but the smallest were sent.
    assert bool((sent[numel // 10 :] > 0).all())
    assert float(compressor.residual.abs().max()) <= 6.0
