"""Byzantine-robust aggregation: the one entry point the data plane calls, `aggregate`.

    result = aggregate("trimmed-mean", updates, f=2, pre_aggregation=[("nnm", None)])
    result.vector    # (d,) the aggregate
    result.selected  # (n,) how much each input was kept, in [0, 1]

`updates` is an (n, d) float matrix, one row per child; everything is pure torch and runs where the
tensors are (CPU or CUDA). The maths, breakdown point and cost of each rule are in the docstrings of
`swarm_worker.maths.robust.rules` and `swarm_worker.maths.robust.preaggregation`; every rule and step is
tested against the reference implementation byzfl 0.0.11. Summary (n inputs, f Byzantine):

    rule               requirement   breakdown   cost (time)
    mean               -             0           O(n d)
    weighted-mean      -             0           O(n d)
    median             n > 2f        1/2         O(n d) selection
    trimmed-mean       n > 2f        f/n         O(n d) selection
    krum, multi-krum   n > 2f + 2    ~1/2        O(n² d)
    bulyan             n >= 4f + 3   ~1/4        O(n² d)
    geometric-median   n > 2f        1/2         O(T n d), T = 8 Weiszfeld steps
    centered-clipping  n > 2f        <1/2        O(L n d), L = 3 clipping steps
    mda                n > 2f        f/n         O(n² d + C(n, f) n²)
    monna              n > 2f        f/n         O(n d)

The names are the contract's (`swarm_contract.spec.RULE_NAMES`, `PRE_AGGREGATION_NAMES`): the spec
offers exactly these, and `aggregate` refuses a name it has no implementation for.

Pre-aggregation steps run in order before the rule: ("nnm", None), ("bucketing", s),
("clipping", c), ("arc", None). After bucketing the rule's requirement applies to the number of
buckets, ⌈n/s⌉, with the same f.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from swarm_contract.spec import PRE_AGGREGATION_NAMES, RULE_NAMES
from swarm_worker.maths.robust import preaggregation, rules
from swarm_worker.maths.robust._kernels import coordinate_median, distances_to

RULES: tuple[str, ...] = RULE_NAMES
PRE_AGGREGATIONS: tuple[str, ...] = PRE_AGGREGATION_NAMES

#: Default bucket size s for ("bucketing", None).
DEFAULT_BUCKET_SIZE = 2
#: Default clipping threshold c for ("clipping", None), byzfl's default.
DEFAULT_CLIPPING_THRESHOLD = 2.0


@dataclass(frozen=True)
class AggregationResult:
    #: (d,) the aggregate, same dtype and device as the input.
    vector: torch.Tensor
    #: (n,) in [0, 1], how much each input was kept by the rule: 1 fully used (mean: all 1; Krum: 1
    #: for the chosen input, 0 otherwise); median and trimmed mean: the fraction of coordinates
    #: where the input lies inside the kept range; geometric median: the input's Weiszfeld weight
    #: relative to the largest; centered clipping: its clipping factor. Through a pre-aggregation
    #: step an input gets the value of the row it went into (its bucket, or its NNM mixture).
    selected: torch.Tensor


# n, f -> whether the rule can run (its condition for a bounded error), and how to say it.
_REQUIREMENTS: dict[str, tuple[Callable[[int, int], bool], str]] = {
    "median": (lambda n, f: n > 2 * f, "n > 2f"),
    "trimmed-mean": (lambda n, f: n > 2 * f, "n > 2f"),
    "krum": (lambda n, f: n > 2 * f + 2, "n > 2f + 2"),
    "multi-krum": (lambda n, f: n > 2 * f + 2, "n > 2f + 2"),
    "bulyan": (lambda n, f: n >= 4 * f + 3, "n >= 4f + 3"),
    "geometric-median": (lambda n, f: n > 2 * f, "n > 2f"),
    "centered-clipping": (lambda n, f: n > 2 * f, "n > 2f"),
    "mda": (lambda n, f: n > 2 * f, "n > 2f"),
    "monna": (lambda n, f: n > 2 * f, "n > 2f"),
}


def _check_inputs(
    rule: str, updates: torch.Tensor, f: int, weights: torch.Tensor | None, previous: torch.Tensor | None
) -> None:
    if rule not in RULES:
        raise ValueError(f"unknown aggregation rule {rule!r}; expected one of {', '.join(RULES)}")
    if not isinstance(updates, torch.Tensor) or updates.ndim != 2 or not updates.is_floating_point():
        got = (
            f"{tuple(updates.shape)} {updates.dtype}" if isinstance(updates, torch.Tensor) else type(updates)
        )
        raise ValueError(f"updates must be a floating-point (n, d) tensor, got {got}")
    n, d = updates.shape
    if n == 0 or d == 0:
        raise ValueError(f"updates must have at least one row and one column, got shape {(n, d)}")
    if isinstance(f, bool) or not isinstance(f, int) or f < 0:
        raise ValueError(f"f must be a non-negative integer, got {f!r}")
    # A finite sum proves every entry finite (Inf and NaN propagate) at the cost of a mean; only
    # when it is not (a non-finite entry, or an overflow) is every entry checked.
    if not bool(torch.isfinite(updates.sum())) and not bool(torch.isfinite(updates).all()):
        raise ValueError("updates contain NaN or Inf; drop non-finite rows before aggregating")
    if weights is not None:
        if weights.shape != (n,):
            raise ValueError(f"weights must have shape ({n},) to match updates, got {tuple(weights.shape)}")
        if (
            not bool(torch.isfinite(weights).all())
            or bool((weights < 0).any())
            or not bool(weights.sum() > 0)
        ):
            raise ValueError("weights must be finite, non-negative and not all zero")
    if previous is not None and previous.shape != (d,):
        raise ValueError(f"previous must have shape ({d},) to match updates, got {tuple(previous.shape)}")


def _check_rule_fits(rule: str, n: int, f: int, after: str) -> None:
    requirement = _REQUIREMENTS.get(rule)
    if requirement is not None and not requirement[0](n, f):
        raise ValueError(f"rule {rule!r} needs {requirement[1]}, got n={n}{after}, f={f}")
    if rule == "mda" and math.comb(n, f) > rules.MDA_MAX_SUBSETS:
        raise ValueError(
            f"rule 'mda' would check C({n}, {f}) = {math.comb(n, f)} subsets (limit "
            f"{rules.MDA_MAX_SUBSETS}); use bucketing first or another rule"
        )


def _pre_aggregate(
    step: tuple[str, float | None],
    updates: torch.Tensor,
    weights: torch.Tensor,
    f: int,
    generator: torch.Generator | None,
) -> preaggregation.PreOutput:
    name, param = step
    n = updates.shape[0]
    if name not in PRE_AGGREGATIONS:
        raise ValueError(f"unknown pre-aggregation {name!r}; expected one of {', '.join(PRE_AGGREGATIONS)}")
    if name in ("nnm", "arc"):
        if param is not None:
            raise ValueError(f"pre-aggregation {name!r} takes no parameter (it uses f), got {param!r}")
        if f >= n + (name == "arc"):
            raise ValueError(
                f"pre-aggregation {name!r} needs f < n{' + 1' if name == 'arc' else ''}, got n={n}, f={f}"
            )
        return (
            preaggregation.nnm(updates, weights, f)
            if name == "nnm"
            else preaggregation.arc(updates, weights, f)
        )
    if name == "bucketing":
        s = DEFAULT_BUCKET_SIZE if param is None else param
        if isinstance(s, bool) or not float(s).is_integer() or s < 1:
            raise ValueError(f"bucketing needs an integer bucket size s >= 1, got {param!r}")
        return preaggregation.bucketing(updates, weights, int(s), generator)
    if name == "clipping":
        c = DEFAULT_CLIPPING_THRESHOLD if param is None else float(param)
        if not math.isfinite(c) or c <= 0:
            raise ValueError(f"clipping needs a finite threshold c > 0, got {param!r}")
        return preaggregation.clipping(updates, weights, c)
    raise NotImplementedError(f"pre-aggregation {name!r} is in the spec but has no implementation")


def aggregate(
    rule: str,
    updates: torch.Tensor,
    *,
    f: int = 0,
    weights: torch.Tensor | None = None,
    previous: torch.Tensor | None = None,
    pre_aggregation: Sequence[tuple[str, float | None]] = (),
    generator: torch.Generator | None = None,
    zero_columns: int = 0,
) -> AggregationResult:
    """Aggregate `updates` (n, d) with `rule` after the `pre_aggregation` steps, tolerating f.

    weights: (n,) non-negative (sample count x reputation), used by weighted-mean,
    geometric-median and centered-clipping; ignored by "mean" (the plain mean) and by the rank-
    and selection-based rules, whose guarantees count inputs (see `rules`). previous: the last
    aggregate, the centre of centered clipping and the start of the geometric median's
    Weiszfeld steps (zeros if None); a `previous` that is not finite in the updates' dtype (the
    mean of a round with a huge input, say) is never used: it is treated as None, so one bad
    round cannot poison the next ones. generator: for bucketing's shuffle. zero_columns: the
    updates are the nonzero columns of a wider matrix with this many more all-zero columns (sparse
    updates combined on their support): the vector is the same, and `selected` of the per-coordinate
    rules (median, trimmed mean, Bulyan) is the fraction over all columns, as on the wide matrix.
    Huge finite values (the codec accepts values up to the float maximum): every rule but the
    two means stays finite and near the honest inputs with up to f of them; distances are
    float64 and never NaN, and a selection never picks an input for a NaN score (`_kernels`).
    Raises ValueError with a one-line message for an unknown rule or step, bad shapes, non-finite
    values, or an f the rule cannot tolerate with this many inputs.
    """
    _check_inputs(rule, updates, f, weights, previous)
    # Everything on the updates' device: a caller's host-side weights or centre must not make a
    # rule mix devices (the generator stays where it is: bucketing draws on the CPU and moves).
    weights = None if weights is None else weights.to(updates.device)
    previous = None if previous is None else previous.to(updates.device)
    n = updates.shape[0]
    vectors = updates
    current_weights = (
        torch.ones(n, dtype=updates.dtype, device=updates.device) if weights is None else weights
    )
    owner = torch.arange(n, device=updates.device)
    for step in pre_aggregation:
        vectors, current_weights, step_owner = _pre_aggregate(step, vectors, current_weights, f, generator)
        owner = step_owner[owner]
    m = vectors.shape[0]
    _check_rule_fits(rule, m, f, f" (after pre-aggregation, from {n})" if m != n else "")
    rule_weights = None if weights is None else current_weights
    match rule:
        case "mean":
            vector, selected = rules.mean(vectors)
        case "weighted-mean":
            vector, selected = rules.weighted_mean(vectors, rule_weights)
        case "median" | "trimmed-mean":
            vector, selected = rules.median(vectors) if rule == "median" else rules.trimmed_mean(vectors, f)
            if zero_columns and (rule == "median" or f > 0):  # every input is inside on a zero column
                columns = vectors.shape[1]
                selected = (selected * columns + zero_columns) / (columns + zero_columns)
        case "krum":
            vector, selected = rules.krum(vectors, f)
        case "multi-krum":
            vector, selected = rules.multi_krum(vectors, f)
        case "bulyan":
            vector, selected = rules.bulyan(vectors, f, zero_columns)
        case "geometric-median":
            vector, selected = rules.geometric_median(vectors, rule_weights, init=previous)
        case "centered-clipping":
            vector, selected = rules.centered_clipping(vectors, previous, rule_weights)
        case "mda":
            vector, selected = rules.mda(vectors, f)
        case "monna":
            vector, selected = rules.monna(vectors, f)
        case _:
            raise NotImplementedError(f"rule {rule!r} is in the spec but has no implementation")
    return AggregationResult(vector=vector, selected=selected[owner].clamp(0, 1))


def mad_scores(updates: torch.Tensor) -> torch.Tensor:
    """(n,) outlier score of each input, >= 0: a one-sided robust z-score of its distance to the
    coordinate-wise median.

        r_i = ||x_i - med(X)||,   score_i = max(0, r_i - med(r)) / (1.4826 MAD(r)),

    MAD(r) = med_i |r_i - med(r)|; 1.4826 MAD estimates a standard deviation for Gaussian data, so
    scores read like z-scores (> 3: suspicious). One-sided because being closer to the median than
    usual is not suspicious. The scale is floored at 1e-6 med(r) (and the smallest normal float),
    so identical honest inputs do not make a tiny deviation infinite. A row with NaN/Inf scores +inf
    and is left out of the medians; so does a row whose distance overflows (values near the float
    maximum). Breakdown point 1/2.
    Cost O(n d) selection plus one blocked distance pass; no (n, d) temporary beyond the median's.
    """
    if not isinstance(updates, torch.Tensor) or updates.ndim != 2 or not updates.is_floating_point():
        raise ValueError("updates must be a floating-point (n, d) tensor")
    finite = torch.isfinite(updates).all(1)
    scores = torch.full((updates.shape[0],), math.inf, dtype=updates.dtype, device=updates.device)
    if not bool(finite.any()):
        return scores
    rows = updates[finite]  # a non-finite input scores +inf and does not move the others
    distances = distances_to(rows, coordinate_median(rows))
    typical = coordinate_median(distances[:, None])[0]
    spread = coordinate_median((distances - typical).abs()[:, None])[0]
    tiny = torch.finfo(updates.dtype).tiny
    scale = torch.maximum(1.4826 * spread, 1e-6 * typical).clamp_min(tiny)
    scores[finite] = ((distances - typical) / scale).clamp_min(0)
    return scores


__all__ = ["PRE_AGGREGATIONS", "RULES", "AggregationResult", "aggregate", "mad_scores"]
