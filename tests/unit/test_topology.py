"""The aggregation tree: every worker has one path to the root, fan-in never exceeds branching."""

from __future__ import annotations

import pytest

from swarm_contract.topology import ROOT_ID, parent_in_round, plan_tree, round_assignment


@pytest.mark.parametrize(
    ("replicas", "branching", "height", "aggregators"),
    [(1, 4, 1, 0), (4, 4, 1, 0), (8, 4, 2, 2), (10, 4, 2, 3), (17, 4, 3, 7), (25, 5, 2, 5)],
    ids=lambda v: str(v),
)
def test_tree_shape(replicas: int, branching: int, height: int, aggregators: int) -> None:
    tree = plan_tree(replicas, branching)
    assert tree.height == height
    assert len(tree.aggregators) == aggregators
    assert len(tree.workers) == replicas
    for node in tree.nodes.values():
        assert len(node.children) <= branching
        for child in node.children:
            assert tree.node(child).parent == node.id
    for worker in tree.workers:
        node, hops = worker, 0
        while node.parent is not None:
            node, hops = tree.node(node.parent), hops + 1
        assert node.id == ROOT_ID
        assert hops == height
    assert tree.node(ROOT_ID).ranks == tuple(range(replicas))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="replicas"):
        plan_tree(0, 4)
    with pytest.raises(ValueError, match="branching"):
        plan_tree(4, 1)


def test_round_assignment_is_a_partition_with_the_planned_sizes_and_changes_per_round() -> None:
    tree = plan_tree(8, 4)
    seen = set()
    for r in range(6):
        groups = round_assignment(tree, r, seed=1)
        assert sorted(groups) == ["agg-0", "agg-1"]
        members = [w for g in groups.values() for w in g]
        assert sorted(members) == sorted(w.id for w in tree.workers)
        assert [len(g) for g in groups.values()] == [4, 4]
        seen.add(groups["agg-0"])
        assert round_assignment(tree, r, seed=1) == groups  # every node computes the same
    assert len(seen) > 1
    w = "worker-3"
    assert w in round_assignment(tree, 2, 1)[parent_in_round(tree, w, 2, 1)]
