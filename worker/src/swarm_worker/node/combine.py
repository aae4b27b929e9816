"""Combining a round's accepted updates without an (n, d) matrix where the updates are sparse.

The rows are what the robust rule and the reputation signals see (n updates, d = θ's length):

    common support   every update holds k values on the round's support S: rows (n, k) on the
                     columns S; the rule runs on them and the aggregate stays (k,) on S (sent up as
                     it is, scattered into θ's (d,) change only at the root)
    own supports     sparse updates on their own indices: rows (n, |U|) on U, the union of their
                     supports (|U| <= min(d, sum of their sizes)); with the two means and no
                     pre-aggregation the aggregate is one (d,) scatter-add accumulator instead, and
                     the rows are built only for the reputation signals (when reputation is on)
    dense            any dense update (compression.method none, or an aggregator's mostly-nonzero
                     aggregate): rows (n, d); node.aggregation_memory refuses this at node start
                     when it cannot fit

Exactness: a coordinate outside the rows' columns is zero in every update, so every rule gives 0
there, and every distance, norm, dot product and coordinate-wise median over the columns equals
the one over all d: the aggregate, `selected` and the reputation signals (cosines, MAD scores,
duplicates) computed on the rows are those of the densified (n, d) matrix (`selected` of the
per-coordinate rules counts the zero columns too: `robust.aggregate`'s `zero_columns`; Bulyan
shares them evenly among its picked inputs, where torch.topk's tie order gave them to some). One
deliberate difference: the previous aggregate (the centre of centered clipping, the start of the geometric
median) is taken on this round's columns only, so no rule leaves part of last round's aggregate on
coordinates no update of this round touched (on the dense matrix centered clipping kept a decayed
copy of it there, and at the root it reached θ).
Values live on the device the updates were moved to; indices and columns stay on the CPU, where the
support is, and are moved to the device once per use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from swarm_worker.maths import robust
from swarm_worker.maths.reputation import cosines
from swarm_worker.node.admission import ChildUpdate

#: Rules computed by one scatter-add accumulator when the updates have their own supports.
MEAN_RULES = ("mean", "weighted-mean")


@dataclass(frozen=True)
class Aggregate:
    """A round's aggregate: `values` on `columns` (int64 ascending, CPU), or dense (d,) when None."""

    values: torch.Tensor
    columns: torch.Tensor | None
    numel: int

    def dense(self) -> torch.Tensor:
        """(d,) fp32 on the values' device."""
        if self.columns is None:
            return self.values
        out = torch.zeros(self.numel, dtype=self.values.dtype, device=self.values.device)
        out[self.columns.to(out.device)] = self.values
        return out

    def on(self, columns: torch.Tensor | None) -> torch.Tensor:
        """The aggregate's values on `columns` (zeros where it has none); all d when None."""
        if columns is None:
            return self.dense()
        device = self.values.device
        if columns is self.columns:  # the round's own support (an interior aggregator sending up)
            return self.values
        if self.columns is None:
            return self.values[columns.to(device)]
        if self.columns.numel() == 0:
            return torch.zeros(columns.numel(), dtype=self.values.dtype, device=device)
        position = torch.searchsorted(self.columns, columns).clamp_max(self.columns.numel() - 1)
        hit = (self.columns[position] == columns).to(device)
        return torch.where(hit, self.values[position.to(device)], 0)


@dataclass(frozen=True)
class Rows:
    """The updates as rows (n, c) on `columns` (c,) of θ (int64 ascending, CPU); all d when None."""

    values: torch.Tensor
    columns: torch.Tensor | None


@dataclass(frozen=True)
class Combined:
    aggregate: Aggregate
    #: (n,) in [0, 1]: how much the rule kept of each update (`robust.AggregationResult.selected`).
    selected: torch.Tensor
    #: (n,) cosine of each update with the aggregate (`maths.reputation.cosines`).
    cosines: torch.Tensor
    #: The rows the rule ran on; None when the mean was accumulated and no rows were asked for.
    rows: Rows | None


def rows_of(updates: Sequence[ChildUpdate]) -> Rows:
    """The updates as rows on the smallest exact set of columns: the common support, the union of
    their own supports, or all d when one of them is dense."""
    device = updates[0].values.device
    if all(u.on_support for u in updates):
        return Rows(torch.stack([u.values for u in updates]), updates[0].indices)
    if any(u.indices is None for u in updates):
        return Rows(torch.stack([u.vector for u in updates]), None)
    columns = torch.unique(torch.cat([u.indices for u in updates if u.indices is not None]))
    values = torch.zeros(len(updates), columns.numel(), dtype=torch.float32, device=device)
    for row, u in zip(values, updates, strict=True):
        assert u.indices is not None
        row[torch.searchsorted(columns, u.indices).to(device)] = u.values
    return Rows(values, columns)


def scatter_mean(updates: Sequence[ChildUpdate], weights: torch.Tensor) -> torch.Tensor:
    """Σ_i w_i x_i / Σ_i w_i as one (d,) accumulator: each update added at its own indices."""
    first = updates[0]
    total = torch.zeros(first.numel, dtype=torch.float32, device=first.values.device)
    for u, w in zip(updates, weights.tolist(), strict=True):
        if u.indices is None:
            total.add_(u.values, alpha=w)
        else:
            total.index_add_(0, u.indices.to(total.device), u.values, alpha=w)
    return total / weights.sum().to(total.device)


def sparse_cosines(updates: Sequence[ChildUpdate], aggregate: torch.Tensor) -> torch.Tensor:
    """`maths.reputation.cosines` of the updates with the dense aggregate (d,), each dot product
    taken on the update's own indices."""
    dots, norms = [], []
    for u in updates:
        on = aggregate if u.indices is None else aggregate[u.indices.to(aggregate.device)]
        dots.append(torch.dot(u.values, on))
        norms.append(torch.linalg.vector_norm(u.values))
    dot, norm = torch.stack(dots), torch.stack(norms) * torch.linalg.vector_norm(aggregate)
    return torch.where(norm > 0, dot / norm.clamp_min(1e-30), torch.zeros_like(dot))


def combine(
    updates: Sequence[ChildUpdate],
    rule: str,
    *,
    f: int,
    weights: torch.Tensor,
    previous: Aggregate | None,
    pre_aggregation: Sequence[tuple[str, float | None]],
    want_rows: bool,
) -> Combined:
    """The robust aggregate of `updates` (rule, f, weights and steps as `robust.aggregate`), on the
    form the module docstring describes; `want_rows`: the rows are needed (reputation scoring)."""
    numel, device = updates[0].numel, updates[0].values.device
    weights = weights.to(device)
    own_supports = not any(u.on_support for u in updates)
    if rule in MEAN_RULES and not pre_aggregation and own_supports:
        uniform = torch.ones_like(weights) if rule == "mean" else weights
        total = scatter_mean(updates, uniform)
        rows = rows_of(updates) if want_rows else None
        return Combined(
            Aggregate(total, None, numel), (uniform > 0).to(total.dtype), sparse_cosines(updates, total), rows
        )
    rows = rows_of(updates)
    result = robust.aggregate(
        rule,
        rows.values,
        f=f,
        weights=weights,
        previous=None if previous is None else previous.on(rows.columns),
        pre_aggregation=pre_aggregation,
        zero_columns=0 if rows.columns is None else numel - rows.columns.numel(),
    )
    aggregate = Aggregate(result.vector, rows.columns, numel)
    return Combined(aggregate, result.selected, cosines(rows.values, result.vector), rows)
