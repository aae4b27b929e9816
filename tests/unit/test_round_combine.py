"""Combining a round's updates in their sparse form (swarm_worker.node.combine): on a common
support the rule runs on (n, k) rows and its aggregate stays (k,); own supports are combined on
the union of the supports, and the means by one (d,) scatter-add; every result, `selected` and
reputation signal equals the one of the densified (n, d) matrix."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from swarm_contract.manifest import parse_spec
from swarm_contract.topology import plan_tree
from swarm_worker.maths import robust
from swarm_worker.maths.compression import SparseVector, dense_to_sparse
from swarm_worker.maths.reputation import cosines, duplicates
from swarm_worker.node.admission import ChildUpdate
from swarm_worker.node.combine import Aggregate, combine, rows_of, scatter_mean, sparse_cosines
from swarm_worker.node.round import RoundState
from swarm_worker.node.traffic import Traffic
from swarm_worker.protocol.codec import Message

D, N, K = 400, 7, 20
T0 = 1_000.0


def _sparse_update(indices: torch.Tensor, values: torch.Tensor, samples: int = 10) -> ChildUpdate:
    return ChildUpdate(values, indices, D, samples, 1, 0.5)


def _own_supports(seed: int, n: int = N) -> list[ChildUpdate]:
    generator = torch.Generator().manual_seed(seed)
    updates = []
    for i in range(n):
        indices = torch.sort(torch.randperm(D, generator=generator)[:K]).values
        # Half the support shared by all, so the union is smaller than n k and duplicates are possible.
        indices = torch.unique(torch.cat([indices, torch.arange(K // 2)]))
        values = torch.randn(indices.numel(), generator=generator) + (i % 3)
        updates.append(_sparse_update(indices, values, samples=10 + i))
    return updates


def _on_support(seed: int, support: torch.Tensor, n: int = N) -> list[ChildUpdate]:
    generator = torch.Generator().manual_seed(seed)
    return [
        ChildUpdate(torch.randn(support.numel(), generator=generator), support, D, 10, 1, 0.5, None, True)
        for _ in range(n)
    ]


def _dense(updates: list[ChildUpdate]) -> torch.Tensor:
    return torch.stack([u.vector for u in updates])


SUPPORT = torch.sort(torch.randperm(D, generator=torch.Generator().manual_seed(5))[:K]).values
RULE_F = [(rule, 0 if rule in ("mean", "weighted-mean") else 1) for rule in robust.RULES]


@pytest.mark.parametrize(("rule", "f"), RULE_F, ids=[r for r, _ in RULE_F])
@pytest.mark.parametrize("form", ["common", "own"])
def test_every_rule_on_the_rows_equals_the_rule_on_the_dense_matrix(rule: str, f: int, form: str) -> None:
    updates = _on_support(1, SUPPORT) if form == "common" else _own_supports(1)
    weights = torch.tensor([float(u.samples) for u in updates])
    got = combine(updates, rule, f=f, weights=weights, previous=None, pre_aggregation=(), want_rows=True)
    dense = _dense(updates)
    expected = robust.aggregate(rule, dense, f=f, weights=weights)
    torch.testing.assert_close(got.aggregate.dense(), expected.vector, rtol=1e-5, atol=1e-6)
    if rule == "bulyan":
        # The zero columns are shared evenly among the picked inputs (on the dense matrix
        # torch.topk's tie order gives them to some): the same inputs, the same total.
        assert torch.equal(got.selected > 0, expected.selected > 0)
        torch.testing.assert_close(got.selected.sum(), expected.selected.sum(), rtol=1e-5, atol=1e-6)
    else:
        torch.testing.assert_close(got.selected, expected.selected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.cosines, cosines(dense, expected.vector), rtol=1e-5, atol=1e-6)
    assert got.rows is not None
    if form == "common":
        assert got.rows.values.shape == (N, K)  # never (n, d)
        assert got.aggregate.values.shape == (K,)
        assert got.aggregate.columns is SUPPORT
    else:
        assert got.rows.values.shape[1] < D


def test_reputation_signals_on_the_union_rows_equal_the_dense_ones() -> None:
    updates = _own_supports(2)
    updates.append(_sparse_update(updates[0].indices, updates[0].values * 2))  # type: ignore[arg-type]
    rows = rows_of(updates)
    dense = _dense(updates)
    assert rows.columns is not None
    assert rows.values.shape == (N + 1, rows.columns.numel())
    torch.testing.assert_close(robust.mad_scores(rows.values), robust.mad_scores(dense), rtol=1e-5, atol=1e-6)
    assert torch.equal(duplicates(rows.values), duplicates(dense))
    assert bool(duplicates(dense)[0])
    assert bool(duplicates(dense)[-1])


def test_the_mean_of_own_supports_is_one_scatter_add_without_rows() -> None:
    updates = _own_supports(3)
    weights = torch.tensor([float(u.samples) for u in updates])
    got = combine(
        updates, "weighted-mean", f=0, weights=weights, previous=None, pre_aggregation=(), want_rows=False
    )
    dense = _dense(updates)
    expected = (weights @ dense) / weights.sum()
    assert got.rows is None
    assert got.aggregate.columns is None
    assert got.aggregate.values.shape == (D,)
    torch.testing.assert_close(got.aggregate.values, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(scatter_mean(updates, torch.ones(N)), dense.mean(0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        sparse_cosines(updates, expected), cosines(dense, expected), rtol=1e-5, atol=1e-6
    )


def test_a_dense_update_makes_dense_rows() -> None:
    updates = [*_own_supports(4, n=3), ChildUpdate(torch.randn(D), None, D, 10, 1, 0.5)]
    rows = rows_of(updates)
    assert rows.columns is None
    torch.testing.assert_close(rows.values, _dense(updates))
    torch.testing.assert_close(scatter_mean(updates, torch.ones(4)), _dense(updates).mean(0))


@pytest.mark.parametrize("previous_columns", ["sparse", "dense"])
def test_the_previous_aggregate_is_taken_on_this_rounds_columns(previous_columns: str) -> None:
    """Centered clipping starts from the previous aggregate restricted to the round's columns."""
    previous_dense = torch.randn(D, generator=torch.Generator().manual_seed(6))
    old_support = torch.sort(torch.randperm(D, generator=torch.Generator().manual_seed(7))[:K]).values
    previous = (
        Aggregate(previous_dense[old_support], old_support, D)
        if previous_columns == "sparse"
        else Aggregate(previous_dense, None, D)
    )
    restricted = previous.dense() if previous_columns == "sparse" else previous_dense
    torch.testing.assert_close(previous.on(SUPPORT), restricted[SUPPORT], rtol=0, atol=0)
    updates = _on_support(8, SUPPORT)
    weights = torch.ones(N)
    got = combine(
        updates,
        "centered-clipping",
        f=1,
        weights=weights,
        previous=previous,
        pre_aggregation=(),
        want_rows=False,
    )
    centre = torch.zeros(D)
    centre[SUPPORT] = restricted[SUPPORT]
    expected = robust.aggregate("centered-clipping", _dense(updates), f=1, weights=weights, previous=centre)
    torch.testing.assert_close(got.aggregate.dense(), expected.vector, rtol=1e-5, atol=1e-6)
    assert got.aggregate.dense()[~torch.isin(torch.arange(D), SUPPORT)].abs().max() == 0


def _state(rule: str, **spec: Any) -> RoundState:
    parsed = parse_spec(
        {
            "workers": {"replicas": 8},
            "topology": {"branchingFactor": 4},
            "robustness": {"rule": rule, "f": 1},
            **spec,
        }
    )
    tree = plan_tree(8, 4)
    return RoundState(
        parsed, tree, tree.node("agg-0"), D, Traffic("agg-0"), torch.zeros(D), 3, T0, torch.device("cpu")
    )


def _message(node: str, payload: SparseVector) -> Message:
    meta = {"samples": 10, "workers": 1, "loss": 0.5, "nodes": [], "traffic": []}
    return Message("update", "job", 3, node, meta, {"delta": payload})


def test_a_round_on_the_common_support_keeps_k_values_and_scores_on_them() -> None:
    state = _state("median")
    support = state.support
    assert support is not None
    generator = torch.Generator().manual_seed(9)
    sent = []
    for i in range(4):
        values = torch.randn(state.k, generator=generator).half()
        keep = torch.arange(state.k) != i  # a child may leave out entries: zeros there
        sent.append(torch.where(keep, values.float(), 0))
        payload = SparseVector(support[keep].to(torch.int32), values[keep], D)
        assert state.accept(_message(f"worker-{i}", payload), T0) is None
        assert state.pending[f"worker-{i}"].values.shape == (state.k,)
    result = state.close()
    assert result.aggregate.columns is support
    assert result.aggregate.values.shape == (state.k,)
    expected = torch.zeros(D)
    expected[support] = robust.aggregate("median", torch.stack(sent), f=1).vector
    torch.testing.assert_close(result.vector, expected, rtol=0, atol=0)
    assert {r["id"] for r in state.records()} == {f"worker-{i}" for i in range(4)}


def test_a_round_of_means_on_own_supports_equals_the_dense_weighted_mean() -> None:
    state = _state("mean", robustness={"rule": "mean"})
    generator = torch.Generator().manual_seed(10)
    dense = torch.zeros(4, D)
    for i in range(4):
        indices = torch.sort(torch.randperm(D, generator=generator)[: state.k]).values
        dense[i, indices] = torch.randn(state.k, generator=generator).half().float()
        assert state.accept(_message(f"worker-{i}", dense_to_sparse(dense[i], torch.float16)), T0) is None
    result = state.close()
    torch.testing.assert_close(result.vector, dense.mean(0), rtol=1e-6, atol=1e-7)
    assert result.aggregate.columns is None
