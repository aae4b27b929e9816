"""Vectorized building blocks shared by the robust rules: order statistics and distances.

Coordinate-wise order statistics of an (n, d) matrix with small n (the common case: n is the
number of children of one aggregator) are slow with `torch.sort`/`torch.median`/`torch.kthvalue`
on CPU, because those kernels pay a per-row cost for each of the d length-n rows. Here, on CPU and
for n <= `NETWORK_MAX_N`, the n rows are instead run through a Batcher odd-even merge sorting
network pruned to the ranks needed: each comparator is one `torch.minimum` and one
`torch.maximum` over a block of columns, so the work is ~n log² n / 4 vectorized, cache-resident
passes: 1.5-3x faster than `torch.median` at n = 16 and 3-10x faster than `torch.sort` or
`torch.kthvalue` at n = 65..256 on one core (benchmarks/bench_aggregation.py). `torch.kthvalue`
(selection) was measured and loses to both on CPU, also on a coordinate-major (d, n) copy, so
larger n on CPU sorts a coordinate-major copy. On other devices (CUDA) `torch.sort` along dim 0
is used, one fast kernel there, in column blocks of `_SORT_BLOCK_ELEMENTS`: a sort returns its
values and int64 indices, three times the input's bytes, which on a GPU must not scale with d.
Nothing here makes a host tensor or reads device data back except for a scalar decision, so every
function runs where its input is.

Distances are computed without (n, d) temporaries: in column blocks for distances to one point,
and through the Gram matrix of inputs centred on one of them for all pairs.

Huge values: the codec rejects NaN/Inf but not finite values near the float maximum, whose squares
overflow. Distances here never come out NaN: `distances_to` saturates at +inf (sums of squares
only), `pairwise_sq_distances` is float64 and exact for any finite float32 input, and `clip_rows`
rescales the rows whose norm overflowed. Rules pass scores through `nan_as_inf` before any
argmin/topk, so a row is never picked because its score is NaN (`torch.argmin` returns a NaN).
"""

from __future__ import annotations

import functools
import math

import torch

#: Largest n for which the sorting network is used on CPU (it is still 3x faster than a sort at 256).
NETWORK_MAX_N = 256
#: Columns per block for the sorting network: n rows of this many floats stay in L2 cache.
_NETWORK_BLOCK = 1 << 15
#: Elements (rows x columns) per block for blocked row-distance computations.
_DISTANCE_BLOCK_ELEMENTS = 1 << 22
#: Elements (rows x columns) per block sorted at once off the CPU: 128 MiB of fp32 values and
#: 256 MiB of int64 indices, large enough to keep a GPU busy.
_SORT_BLOCK_ELEMENTS = 1 << 25


@functools.lru_cache(maxsize=256)
def _network(n: int, lo: int, hi: int) -> tuple[tuple[int, int], ...]:
    """Comparators (a, b), a < b, of Batcher's odd-even merge sort for n wires, pruned to those
    whose outputs reach ranks lo..hi. Padding wires (index >= n) hold +inf, so a comparator that
    touches one is a no-op and is dropped."""
    size = 1
    while size < n:
        size *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n:
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    needed = set(range(lo, hi + 1))
    kept: list[tuple[int, int]] = []
    for a, b in reversed(pairs):
        if a in needed or b in needed:
            kept.append((a, b))
            needed.update((a, b))
    return tuple(reversed(kept))


def _use_network(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.shape[0] <= NETWORK_MAX_N


def _sorted_block(block: torch.Tensor, lo: int, hi: int) -> list[torch.Tensor]:
    """Rows of `block` (n, c) sorted per column by the sorting network; ranks lo..hi are exact."""
    rows = list(block.clone().unbind(0))
    for a, b in _network(block.shape[0], lo, hi):
        smaller = torch.minimum(rows[a], rows[b])
        torch.maximum(rows[a], rows[b], out=rows[b])
        rows[a] = smaller
    return rows


def ranked_mean_and_inside(x: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`ranked_mean` and `fraction_inside` of its kept range in one pass where the sorting network
    runs (the block is still in cache): (d,) mean of ranks lo..hi, (n,) fraction of coordinates
    where each input lies between the values of ranks lo and hi."""
    if not _use_network(x) or not 0 <= lo <= hi < x.shape[0]:
        vector, lo_values, hi_values = ranked_mean(x, lo, hi)
        return vector, fraction_inside(x, lo_values, hi_values)
    n, d = x.shape
    vector = torch.empty(d, dtype=x.dtype, device=x.device)
    inside = torch.zeros(n, dtype=torch.int64, device=x.device)
    count = hi - lo + 1
    for start in range(0, d, _NETWORK_BLOCK):
        stop = min(start + _NETWORK_BLOCK, d)
        block = x[:, start:stop]
        rows = _sorted_block(block, lo, hi)
        kept = torch.stack(rows[lo : hi + 1]).sum(0) if count > 1 else rows[lo]
        torch.div(kept, count, out=vector[start:stop])
        inside += ((block >= rows[lo]) & (block <= rows[hi])).sum(1)
    return vector, inside.to(x.dtype) / max(d, 1)


def ranked_mean(x: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per coordinate of x (n, d): the mean of the order statistics of ranks lo..hi (0-based,
    inclusive), and the values at ranks lo and hi.

    lo = hi = (n-1)/2 is the median of odd n; lo = n/2-1, hi = n/2 the median of even n (the mean of
    the two middle values, as `torch.quantile(q=0.5)`); lo = f, hi = n-f-1 the f-trimmed mean.
    Cost O(n d) memory traffic per pass; see the module docstring for the three code paths.
    """
    n = x.shape[0]
    if not 0 <= lo <= hi < n:
        raise ValueError(f"ranks must satisfy 0 <= lo <= hi < n, got lo={lo}, hi={hi}, n={n}")
    count = hi - lo + 1
    if _use_network(x):
        d = x.shape[1]
        mean = torch.empty(d, dtype=x.dtype, device=x.device)
        lo_values = torch.empty_like(mean)
        hi_values = torch.empty_like(mean)
        for start in range(0, d, _NETWORK_BLOCK):
            stop = min(start + _NETWORK_BLOCK, d)
            rows = _sorted_block(x[:, start:stop], lo, hi)
            kept = torch.stack(rows[lo : hi + 1]).sum(0) if count > 1 else rows[lo]
            torch.div(kept, count, out=mean[start:stop])
            lo_values[start:stop] = rows[lo]
            hi_values[start:stop] = rows[hi]
        return mean, lo_values, hi_values
    if x.device.type != "cpu":
        return ranked_mean_sorted_blocks(x, lo, hi)
    # CPU, large n: sorting a coordinate-major copy beats torch.kthvalue here (measured: two
    # kthvalue selections plus the masked sum of the kept range cost 2x a sort at n = 128).
    ordered = torch.sort(x.t().contiguous(), dim=1).values  # (d, n)
    return ordered[:, lo : hi + 1].mean(1), ordered[:, lo].contiguous(), ordered[:, hi].contiguous()


def ranked_mean_sorted_blocks(
    x: torch.Tensor, lo: int, hi: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`ranked_mean` by `torch.sort` along dim 0 in column blocks (its path off the CPU; callable on
    any device, so the blocking is tested on the CPU too)."""
    n, d = x.shape
    mean = torch.empty(d, dtype=x.dtype, device=x.device)
    lo_values, hi_values = torch.empty_like(mean), torch.empty_like(mean)
    block = max(1, _SORT_BLOCK_ELEMENTS // n)
    for start in range(0, d, block):
        stop = min(start + block, d)
        ordered = torch.sort(x[:, start:stop], dim=0).values
        torch.mean(ordered[lo : hi + 1], 0, out=mean[start:stop])
        lo_values[start:stop], hi_values[start:stop] = ordered[lo], ordered[hi]
    return mean, lo_values, hi_values


def coordinate_median(x: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median of x (n, d), the mean of the two middle values for even n."""
    n = x.shape[0]
    return ranked_mean(x, (n - 1) // 2, n // 2)[0]


def fraction_inside(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """(n,) fraction of coordinates j where lo[j] <= x[i, j] <= hi[j]."""
    n, d = x.shape
    inside = torch.zeros(n, dtype=torch.int64, device=x.device)
    block = max(1, _DISTANCE_BLOCK_ELEMENTS // max(n, 1))
    for start in range(0, d, block):
        part = x[:, start : start + block]
        inside += ((part >= lo[start : start + block]) & (part <= hi[start : start + block])).sum(1)
    return inside.to(x.dtype) / max(d, 1)


def nan_as_inf(scores: torch.Tensor) -> torch.Tensor:
    """`scores` with NaN replaced by +inf, for a selection by smallest score: `torch.argmin`
    returns the index of a NaN, so a NaN score would win."""
    return torch.where(torch.isnan(scores), math.inf, scores)


def clip_rows(
    x: torch.Tensor, limit: float | torch.Tensor, norms: torch.Tensor | None = None
) -> torch.Tensor:
    """x_i min(1, limit / ||x_i||) for each row of x (n, d): rows longer than `limit` scaled to it.

    A finite row whose sum of squares overflows (values near the float maximum) is first divided
    by its max-abs, so it is clipped to norm `limit` along its own direction, not zeroed or made
    inf. With an infinite limit nothing is clipped. `norms`: the rows' `vector_norm`s if known.
    Cost O(n d), one (n, d) output.
    """
    norms = torch.linalg.vector_norm(x, dim=1) if norms is None else norms
    clipped = x * torch.where(norms > limit, limit / norms, 1)[:, None]
    overflowed = torch.isinf(norms)
    if bool(overflowed.any()) and math.isfinite(float(limit)):
        rows = x[overflowed]  # only the huge rows are copied
        rows = rows / torch.linalg.vector_norm(rows, ord=math.inf, dim=1, keepdim=True)
        clipped[overflowed] = rows * (limit / torch.linalg.vector_norm(rows, dim=1, keepdim=True))
    return clipped


def distances_to(x: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """(n,) Euclidean distances ||x_i - point||, in column blocks (no (n, d) temporary).

    A distance whose square overflows the dtype (> ~1.8e19 in float32: only huge, Byzantine
    values) is +inf, never NaN: callers treat it as "farthest", which is what it is."""
    n, d = x.shape
    squared = torch.zeros(n, dtype=x.dtype, device=x.device)
    block = max(1, _DISTANCE_BLOCK_ELEMENTS // max(n, 1))
    for start in range(0, d, block):
        diff = x[:, start : start + block] - point[start : start + block]
        squared += torch.linalg.vector_norm(diff, dim=1).square()
    return squared.sqrt()


def pairwise_sq_distances(x: torch.Tensor) -> torch.Tensor:
    """(n, n) float64 squared Euclidean distances, diagonal exactly 0, never NaN, via one (n, n)
    Gram matrix.

    The inputs are first centred on the input of median norm: ||a-b||^2 = |a|^2 + |b|^2 - 2ab
    loses precision when a common offset is large compared with the spread, and the median-norm
    input is close to the honest cluster whenever a majority is honest (unlike the mean, which f
    outliers can drag away). The (n, n) terms are combined in float64, so sums of large squared
    norms cannot overflow. If a squared norm or a Gram entry overflowed in the input dtype (an
    input near the float maximum: inf - inf would be NaN), the centred rows are recomputed halved
    (x/2 - c/2 cannot overflow), each divided by its own max-abs s_i, and with G the Gram matrix
    of these rows (entries <= d)

        ||a - b||^2 = 4 (s_a² G_aa + s_b² G_bb - 2 s_a s_b G_ab)   in float64,

    so each row keeps its own relative precision: the honest rows' distances are as exact as
    without the huge ones. An entry still not finite (float64 inputs near their maximum) is +inf.
    Cost: one (n, d) centred copy, O(n² d) flops in one matmul; two more passes on overflow.
    """
    n = x.shape[0]
    centre = x[torch.argsort(torch.linalg.vector_norm(x, dim=1))[(n - 1) // 2]]
    centred = x - centre
    squared_norms: torch.Tensor = torch.linalg.vector_norm(centred, dim=1).square()
    gram = torch.mm(centred, centred.T)
    if bool(torch.isfinite(squared_norms).all() & torch.isfinite(gram).all()):
        gram, squared_norms = gram.double(), squared_norms.double()
    else:
        torch.mul(x, 0.5, out=centred)
        centred.sub_(centre, alpha=0.5)
        scales = torch.linalg.vector_norm(centred, ord=math.inf, dim=1)
        scales = torch.where(scales > 0, scales, 1)  # a row equal to the centre stays 0
        centred.div_(scales[:, None])
        doubled = scales.double() * 2
        gram = torch.mm(centred, centred.T).double() * (doubled[:, None] * doubled[None, :])
        squared_norms = gram.diagonal()
    distances = nan_as_inf(squared_norms[:, None] + squared_norms[None, :] - gram.mul(2)).clamp_min(0)
    distances.fill_diagonal_(0)
    return distances
