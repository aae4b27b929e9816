"""Pure parts of the aggregator: rule feasibility, per-level deadlines, the wire form of aggregates."""

from __future__ import annotations

import pytest
import torch

from swarm_worker.maths import robust
from swarm_worker.maths.compression import SparseVector, to_wire
from swarm_worker.node.round_plan import deadline_for, feasible_rule


@pytest.mark.parametrize(
    ("rule", "n", "f", "expected"),
    [
        ("median", 4, 1, ("median", 1)),
        ("median", 2, 1, ("median", 0)),
        ("krum", 5, 1, ("krum", 1)),
        ("krum", 4, 1, ("krum", 0)),
        ("krum", 2, 1, ("median", 0)),
        ("bulyan", 7, 1, ("bulyan", 1)),
        ("bulyan", 6, 1, ("bulyan", 0)),
        ("weighted-mean", 1, 3, ("weighted-mean", 0)),
        ("trimmed-mean", 9, 4, ("trimmed-mean", 4)),
    ],
    ids=lambda v: str(v),
)
def test_feasible_rule(rule: str, n: int, f: int, expected: tuple[str, int]) -> None:
    assert feasible_rule(rule, n, f) == expected
    chosen, chosen_f = expected
    result = robust.aggregate(chosen, torch.randn(n, 6), f=chosen_f, weights=torch.ones(n))
    assert result.vector.shape == (6,)


def test_bucketing_counts_buckets_not_inputs() -> None:
    assert feasible_rule("centered-clipping", 8, 2, bucket=2) == ("centered-clipping", 1)
    assert feasible_rule("centered-clipping", 10, 2, bucket=2) == ("centered-clipping", 2)
    result = robust.aggregate(
        "centered-clipping", torch.randn(8, 6), f=1, weights=torch.ones(8), pre_aggregation=[("bucketing", 2)]
    )
    assert result.vector.shape == (6,)


@pytest.mark.parametrize(
    ("level", "height", "expected"), [(2, 2, 10.0), (1, 2, 9.0), (1, 9, 5.0)], ids=["root", "below", "floor"]
)
def test_lower_levels_close_earlier(level: int, height: int, expected: float) -> None:
    assert deadline_for(level, height, 10.0) == pytest.approx(expected)


def test_to_wire_is_sparse_when_mostly_zero_and_dense_otherwise() -> None:
    v = torch.zeros(100)
    v[[3, 50]] = torch.tensor([1.5, -2.0])
    sparse = to_wire(v, torch.float16)
    assert isinstance(sparse, SparseVector)
    torch.testing.assert_close(sparse.to_dense(), v)
    dense = torch.randn(100)
    assert to_wire(dense, torch.float16) is dense
