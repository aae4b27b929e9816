"""Robust aggregation rules: pure, vectorized, device-agnostic functions of an (n, d) matrix.

Every rule takes `updates` (n, d) — one row per input — and returns `(vector, selected)`: the
aggregate (d,) and, per input, how much it was kept in [0, 1]. Notation: n inputs, d coordinates,
f the number of Byzantine inputs tolerated. The breakdown point is the largest fraction of
arbitrary inputs the rule survives with a bounded error. Costs are per call, for n << d.

Conventions follow the reference implementation `byzfl` 0.0.11 (EPFL DCL), against which
tests/unit/test_robust_rules.py checks every rule; where a default differs, the docstring says why
and the test uses byzfl's parameters.

Weights (sample count x reputation) are used only by `weighted_mean`, `geometric_median` and
`centered_clipping`, whose maths has a natural weighted form. The rank- and selection-based rules
(median, trimmed mean, Krum, Multi-Krum, Bulyan, MDA, MoNNA) ignore them on purpose: their
guarantees count inputs, and a weight a Byzantine input can inflate would break that count.
"""

from __future__ import annotations

import itertools
import math

import torch

from swarm_worker.maths.robust._kernels import (
    coordinate_median,
    distances_to,
    nan_as_inf,
    pairwise_sq_distances,
    ranked_mean_and_inside,
)

RuleOutput = tuple[torch.Tensor, torch.Tensor]

#: Most subsets MDA may enumerate (C(n, f)); beyond this it is refused as too expensive.
MDA_MAX_SUBSETS = 200_000
_MDA_CHUNK = 4096


def _ones(updates: torch.Tensor) -> torch.Tensor:
    return torch.ones(updates.shape[0], dtype=updates.dtype, device=updates.device)


def _indicator(updates: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    selected = torch.zeros(updates.shape[0], dtype=updates.dtype, device=updates.device)
    selected[indices] = 1
    return selected


def _start(updates: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    """A copy of `previous` in the updates' dtype, or zeros if it is None or not finite there:
    a non-finite centre would poison every later step (and every later round through it)."""
    start = None if previous is None else previous.to(updates.dtype)
    if start is None or not bool(torch.isfinite(start).all()):
        return torch.zeros_like(updates[0])
    return start.clone()


def mean(updates: torch.Tensor) -> RuleOutput:
    """Arithmetic mean  x̄ = (1/n) Σ_i x_i  (byzfl `Average`).

    Breakdown point 0: one input moves it arbitrarily far (one input near the float maximum makes
    it ±inf; this is by design, robustness is the other rules' job). Cost O(n d) time, O(d) memory.
    """
    return updates.mean(0), _ones(updates)


def weighted_mean(updates: torch.Tensor, weights: torch.Tensor | None = None) -> RuleOutput:
    """Weighted mean  Σ_i w_i x_i / Σ_i w_i  (FedAvg with w = sample count x reputation).

    Uniform weights give `mean`. Breakdown point 0. Cost O(n d) (one mat-vec), O(d) memory.
    `selected` is 1 for inputs with positive weight, 0 for those with weight 0.
    """
    if weights is None:
        return mean(updates)
    w = weights.to(updates.dtype)
    return (w @ updates) / w.sum(), (w > 0).to(updates.dtype)


def median(updates: torch.Tensor) -> RuleOutput:
    """Coordinate-wise median: for each j the middle value of x_1j..x_nj; for even n the mean of
    the two middle values (byzfl uses `torch.quantile(q=0.5)`, the same definition).

    Breakdown point 1/2 (per coordinate): needs n > 2f. Cost O(n d) with selection (a sorting
    network for n <= 64 on CPU, see `_kernels`), one (n, d) working copy in cache-sized blocks.
    `selected`: fraction of coordinates where the input lies between the two middle values.
    """
    n = updates.shape[0]
    return ranked_mean_and_inside(updates, (n - 1) // 2, n // 2)


def trimmed_mean(updates: torch.Tensor, f: int) -> RuleOutput:
    """Coordinate-wise f-trimmed mean: for each j drop the f smallest and f largest of
    x_1j..x_nj and average the n - 2f others (byzfl `TrMean`: sort, slice [f:n-f], mean).

    Breakdown point f/n < 1/2: needs n > 2f. Cost O(n d) with selection (as `median`).
    `selected`: fraction of coordinates where the input is inside the kept range.
    """
    n = updates.shape[0]
    if f == 0:
        return mean(updates)
    return ranked_mean_and_inside(updates, f, n - f - 1)


def _krum_scores(sq_distances: torch.Tensor, f: int, alive: torch.Tensor | None = None) -> torch.Tensor:
    """Krum score of each input: the sum of squared distances to its m - f - 1 nearest other
    inputs, m = number alive (byzfl's count: it sorts each row, drops the 0 self-distance and
    keeps [1:m-f]). Dead inputs score +inf. The distances are float64 and never NaN (`_kernels`),
    so huge inputs score huge, never NaN, and are not chosen."""
    n = sq_distances.shape[0]
    masked = sq_distances.clone()
    masked.fill_diagonal_(math.inf)
    m = n
    if alive is not None:
        masked[:, ~alive] = math.inf
        m = int(alive.sum())
    neighbours = m - f - 1
    scores = nan_as_inf(torch.topk(masked, neighbours, dim=1, largest=False).values.sum(1))
    if alive is not None:
        scores[~alive] = math.inf
    return scores


def krum(updates: torch.Tensor, f: int) -> RuleOutput:
    """Krum (Blanchard et al., NeurIPS 2017): return the input x_k with the smallest score
    s_i = Σ_{j ∈ N_i} ||x_i - x_j||², N_i its n - f - 1 nearest other inputs.

    The neighbour count follows byzfl (n - f - 1); the paper uses n - f - 2. Both rank the same way
    in all but rare cases; we keep byzfl's so the two agree exactly. Requirement n > 2f + 2 (the
    paper's condition for its guarantee), breakdown point ~ (n - 2)/2n. Cost O(n² d) flops for
    the pairwise distances (one matmul), O(n²) memory plus one centred (n, d) copy.
    """
    scores = _krum_scores(pairwise_sq_distances(updates), f)
    chosen = torch.argmin(scores)
    return updates[chosen].clone(), _indicator(updates, chosen)


def multi_krum(updates: torch.Tensor, f: int) -> RuleOutput:
    """Multi-Krum (Blanchard et al. 2017; El Mhamdi et al. 2018): average the m = n - f inputs with
    the smallest Krum scores (byzfl `MultiKrum`: m = n - f, scores as `krum`).

    Requirement n > 2f + 2, breakdown point as Krum. Cost as Krum plus O(m d) for the mean.
    """
    n = updates.shape[0]
    scores = _krum_scores(pairwise_sq_distances(updates), f)
    chosen = torch.topk(scores, n - f, largest=False).indices
    return updates[chosen].mean(0), _indicator(updates, chosen)


def bulyan(updates: torch.Tensor, f: int, zero_columns: int = 0) -> RuleOutput:
    """Bulyan (El Mhamdi et al., ICML 2018) on top of Krum.

    1. Selection: θ = n - 2f times, pick the input Krum (with f) chooses among those not yet
       picked and remove it from the pool (Krum's score is recomputed on the shrinking pool).
    2. Aggregation: per coordinate, average the β = θ - 2f picked values closest to the picked
       coordinate-wise median (the mean of the two middle values for even θ).

    byzfl 0.0.11 has no Bulyan; the test composes byzfl's `Krum` (step 1) and `Meamed` with f' = 2f
    (step 2, the same "mean around the median") and checks equality. Requirement n >= 4f + 3;
    breakdown point ~ 1/4. Cost O(n² d) distances once plus O(θ n²) scoring, O(θ d log θ) top-k.
    `selected`: fraction of coordinates where the input was among the β averaged (0 if not picked);
    `zero_columns` more all-zero columns (`aggregate`) count β/θ of a coordinate for each picked input.
    """
    n = updates.shape[0]
    theta = n - 2 * f
    beta = theta - 2 * f
    sq_distances = pairwise_sq_distances(updates)
    alive = torch.ones(n, dtype=torch.bool, device=updates.device)
    picked: list[torch.Tensor] = []
    for _ in range(theta):
        chosen = torch.argmin(_krum_scores(sq_distances, f, alive))
        picked.append(chosen)
        alive[chosen] = False
    picked_index = torch.stack(picked)
    pool = updates[picked_index]  # (θ, d)
    centre = coordinate_median(pool)
    closest = torch.topk((pool - centre).abs_(), beta, dim=0, largest=False).indices  # (β, d)
    vector = torch.gather(pool, 0, closest).mean(0)
    counts = torch.zeros(theta, dtype=torch.int64, device=updates.device)
    counts.scatter_add_(0, closest.flatten(), torch.ones_like(closest.flatten()))
    selected = torch.zeros(n, dtype=updates.dtype, device=updates.device)
    kept = counts.to(updates.dtype) + zero_columns * beta / theta
    selected[picked_index] = kept / max(updates.shape[1] + zero_columns, 1)
    return vector, selected


def geometric_median(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    init: torch.Tensor | None = None,
    nu: float = 0.1,
    iterations: int = 8,
) -> RuleOutput:
    """Geometric median argmin_z Σ_i w_i ||x_i - z|| by smoothed Weiszfeld iterations
    (Pillutla et al., RFA, 2022; byzfl `GeometricMedian`):

        β_i = w_i / max(nu, ||x_i - z||),   z ← Σ_i β_i x_i / Σ_i β_i.

    Starts from `init` (zeros if None, as byzfl, or if not finite). Distances are computed in column
    blocks and the update is one mat-vec, so there is no (n, d) temporary. byzfl's default is 3
    iterations; ours is 8 because 3 from zero is far from converged (the test runs both with byzfl's
    T). Inputs with an infinite coordinate are ignored, as byzfl does; an input so far that its
    distance overflows gets β = 0. Breakdown point 1/2: needs n > 2f.
    Cost O(iterations n d) time, O(n + d) extra memory. `selected`: β_i / max_k β_k at the end.
    """
    w = _ones(updates) if weights is None else weights.to(updates.dtype)
    finite_rows = ~torch.isinf(updates).any(1)
    rows = updates if bool(finite_rows.all()) else updates[finite_rows]
    w_rows = w if rows is updates else w[finite_rows]
    z = _start(updates, init)
    beta = w_rows
    for _ in range(iterations):
        beta = w_rows / distances_to(rows, z).clamp_min(nu)
        z = (beta @ rows) / beta.sum()
    selected = torch.zeros_like(w)
    selected[finite_rows] = beta / beta.max()
    return z, selected


def centered_clipping(
    updates: torch.Tensor,
    previous: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    *,
    tau: float | None = None,
    iterations: int = 3,
) -> RuleOutput:
    """Centered clipping (Karimireddy et al., ICML 2021; byzfl `CenteredClipping`): from the
    centre v = `previous` (zeros if None or not finite), `iterations` times

        c_i = min(1, τ / ||x_i - v||),   v ← v + Σ_i w_i c_i (x_i - v) / Σ_i w_i.

    byzfl uses a fixed τ = 100 and L = 1 iteration. A fixed τ is scale-dependent (updates of norm
    1e-3 are never clipped at 100), so with `tau=None` (our default) τ is chosen per iteration as
    the median of the distances ||x_i - v||: with n > 2f it is at most an honest input's distance,
    so each Byzantine input moves v by at most τ w_i / Σ w. Three iterations let a poor centre (the
    first round, v = 0) converge. The test runs byzfl's τ and L. Breakdown point < 1/2 (needs
    n > 2f). Cost O(iterations n d) time, no (n, d) temporary. `selected`: the last c_i.
    """
    w = _ones(updates) if weights is None else weights.to(updates.dtype)
    v = _start(updates, previous)
    clip = _ones(updates)
    for _ in range(iterations):
        distances = distances_to(updates, v)
        threshold = coordinate_median(distances[:, None])[0] if tau is None else distances.new_tensor(tau)
        clip = torch.where(distances > threshold, threshold / distances, 1)
        coefficients = w * clip
        # Σ c_i (x_i - v) = c @ X - (Σ c_i) v: one mat-vec, no (n, d) difference matrix.
        v = v + (coefficients @ updates - coefficients.sum() * v) / w.sum()
    return v, clip


def mda(updates: torch.Tensor, f: int) -> RuleOutput:
    """Minimum-diameter averaging (El Mhamdi et al. 2018; byzfl `MDA`): among all subsets S of
    n - f inputs, take the one of smallest diameter max_{i,j ∈ S} ||x_i - x_j|| (the first in
    lexicographic order on ties, as byzfl's `itertools.combinations` loop) and average it.

    Breakdown point f/n < 1/2 (needs n > 2f). Cost O(n² d) for the distances plus
    O(C(n, f) (n - f)²) for the exhaustive search, vectorized in chunks; refused (ValueError from
    `aggregate`) when C(n, f) > MDA_MAX_SUBSETS: use bucketing or another rule for large n.
    """
    n = updates.shape[0]
    k = n - f
    distances = pairwise_sq_distances(updates)
    subsets = itertools.combinations(range(n), k)
    best_value = math.inf
    best_subset = torch.arange(k, device=updates.device)
    while chunk_list := list(itertools.islice(subsets, _MDA_CHUNK)):
        chunk = torch.tensor(chunk_list, device=updates.device)  # (c, k)
        diameters = nan_as_inf(distances[chunk[:, :, None], chunk[:, None, :]].flatten(1).amax(1))
        index = int(torch.argmin(diameters))
        value = float(diameters[index])
        if value < best_value:
            best_value, best_subset = value, chunk[index]
    return updates[best_subset].mean(0), _indicator(updates, best_subset)


def monna(updates: torch.Tensor, f: int, pivot: torch.Tensor | None = None) -> RuleOutput:
    """MoNNA (Allouah et al., AISTATS 2023; byzfl `MoNNA`): average the n - f inputs nearest
    (Euclidean) to a trusted pivot.

    byzfl's pivot is an input chosen by index (`idx`, the server's own honest vector in the
    paper). An aggregator here has no input of its own that it can trust, so unless `pivot` is
    given the pivot is the coordinate-wise median, which n > 2f inputs keep within the range of
    the honest ones (per coordinate). The test passes updates[idx] as the pivot and
    matches byzfl. Breakdown point f/n < 1/2. Cost O(n d) for distances and O((n - f) d) mean.
    """
    n = updates.shape[0]
    centre = coordinate_median(updates) if pivot is None else pivot.to(updates.dtype)
    chosen = torch.topk(nan_as_inf(distances_to(updates, centre)), n - f, largest=False).indices
    return updates[chosen].mean(0), _indicator(updates, chosen)
