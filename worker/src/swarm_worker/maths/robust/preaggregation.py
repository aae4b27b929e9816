"""Pre-aggregation steps: (n, d) -> (m, d) transforms applied before a robust rule.

They follow byzfl 0.0.11 (`byzfl.aggregators.preaggregators`), against which
tests/unit/test_robust_preaggregation.py checks each one. Every step also returns `owner`, an
(n,) index of the output row each input went into, so `aggregate` can report per-input selection
through the chain, and the per-output weights.
"""

from __future__ import annotations

import torch

from swarm_worker.maths.robust._kernels import clip_rows, pairwise_sq_distances

PreOutput = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (vectors, weights, owner)


def _identity_owner(updates: torch.Tensor) -> torch.Tensor:
    return torch.arange(updates.shape[0], device=updates.device)


def nnm(updates: torch.Tensor, weights: torch.Tensor, f: int) -> PreOutput:
    """Nearest-neighbour mixing (Allouah et al., AISTATS 2023; byzfl `NNM`): replace each x_i by
    the mean of its n - f nearest inputs (Euclidean, itself included).

    Makes any rule with breakdown f/n robust under heterogeneity at the cost of mixing; needs
    f < n. Cost O(n² d) for distances (one matmul) plus one (n, n) x (n, d) matmul for the means,
    O(n²) memory beyond the (n, d) output. Weights and owners pass through (row i stays row i).
    """
    n = updates.shape[0]
    nearest = torch.topk(pairwise_sq_distances(updates), n - f, dim=1, largest=False).indices
    mixing = torch.zeros(n, n, dtype=updates.dtype, device=updates.device)
    mixing.scatter_(1, nearest, 1.0 / (n - f))
    return mixing @ updates, weights, _identity_owner(updates)


def bucketing(
    updates: torch.Tensor, weights: torch.Tensor, s: int, generator: torch.Generator | None = None
) -> PreOutput:
    """Bucketing (Karimireddy et al., ICLR 2022; byzfl `Bucketing`): shuffle the inputs with a
    random permutation (`torch.randperm`, from `generator` or torch's default one, as byzfl), cut
    them into ⌈n/s⌉ buckets of s consecutive inputs (the last may be smaller) and return each
    bucket's plain mean.

    With f Byzantine inputs at most f buckets are spoiled, so the next rule sees f out of ⌈n/s⌉
    and needs its condition on that smaller n. Bucket weight is the sum of its inputs' weights.
    Cost O(n d) time, one (⌈n/s⌉, d) output. The permutation is drawn on CPU.
    """
    n = updates.shape[0]
    permutation = torch.randperm(n, generator=generator).to(updates.device)
    buckets = (n + s - 1) // s
    bucket_of_position = torch.arange(n, device=updates.device) // s
    owner = torch.empty_like(permutation)
    owner[permutation] = bucket_of_position
    # Each input is divided by s as it is added, so a bucket of values near the float maximum
    # averages to a finite value instead of overflowing; a smaller last bucket is rescaled.
    means = torch.zeros(buckets, updates.shape[1], dtype=updates.dtype, device=updates.device)
    means.index_add_(0, owner, updates, alpha=1 / s)
    if n % s:
        means[-1] *= s / (n % s)
    bucket_weights = torch.zeros(buckets, dtype=weights.dtype, device=weights.device)
    bucket_weights.index_add_(0, owner, weights)
    return means, bucket_weights, owner


def clipping(updates: torch.Tensor, weights: torch.Tensor, c: float) -> PreOutput:
    """Static norm clipping (byzfl `Clipping`): x_i ← x_i min(1, c / ||x_i||).

    Bounds each input's influence on a mean to c/n. Not robust on its own (breakdown 0 for a rule
    that is not); c is in the updates' units. A row of values near the float maximum, whose norm
    overflows, is still clipped to norm c along its direction (`clip_rows`). Cost O(n d) time, one
    (n, d) output.
    """
    return clip_rows(updates, c), weights, _identity_owner(updates)


def arc(updates: torch.Tensor, weights: torch.Tensor, f: int) -> PreOutput:
    """Adaptive robust clipping (Allouah et al., 2024; byzfl `ARC`): clip the k = ⌊2f(n - f)/n⌋
    largest-norm inputs to the norm of the (n - k)-th smallest, leaving the others unchanged.

    Needs f <= n. Cost O(n d) time (norms, one scaling), one (n, d) output.
    """
    n = updates.shape[0]
    norms = torch.linalg.vector_norm(updates, dim=1)
    clipped = int((2 * f / n) * (n - f))  # byzfl's exact expression, so rounding agrees
    if clipped == 0:
        return updates.clone(), weights, _identity_owner(updates)
    # A norm that overflowed is +inf here, above every finite one: the ranking is still right.
    threshold = torch.kthvalue(norms, n - clipped).values
    return clip_rows(updates, threshold, norms), weights, _identity_owner(updates)
