"""Plan the aggregation tree: which node is whose parent.

Workers are the leaves. Bottom-level aggregators take up to `branching` workers each; levels of
aggregators are added until one level has at most `branching` nodes, which all report to the root.
With `replicas <= branching` the workers report to the root directly.

    plan_tree(8, 4):  root <- agg-0 <- worker-0..3
                      root <- agg-1 <- worker-4..7

Node ids are stable (`root`, `agg-<i>`, `worker-<rank>`); Kubernetes pod names are `<job>-<id>`, so
a replaced pod keeps its DNS name and its children find it again. Pure: the operator uses it too.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["worker", "aggregator", "root"]
ROOT_ID = "root"


def worker_id(rank: int) -> str:
    return f"worker-{rank}"


def aggregator_id(index: int) -> str:
    return f"agg-{index}"


@dataclass(frozen=True)
class TreeNode:
    id: str
    role: Role
    parent: str | None
    children: tuple[str, ...] = ()
    #: Height above the leaves: workers 0, bottom aggregators 1, the root `Tree.height`.
    level: int = 0
    #: Worker ranks in this node's subtree (a worker: its own rank).
    ranks: tuple[int, ...] = field(default=())


@dataclass(frozen=True)
class Tree:
    nodes: dict[str, TreeNode]
    height: int

    def node(self, node_id: str) -> TreeNode:
        try:
            return self.nodes[node_id]
        except KeyError as e:
            raise KeyError(f"no node {node_id!r} in the tree") from e

    @property
    def aggregators(self) -> list[TreeNode]:
        """Interior aggregators, bottom level first (the order to start them in)."""
        return sorted(
            (n for n in self.nodes.values() if n.role == "aggregator"), key=lambda n: (n.level, n.id)
        )

    @property
    def workers(self) -> list[TreeNode]:
        return sorted((n for n in self.nodes.values() if n.role == "worker"), key=lambda n: n.ranks[0])


def _chunks(items: list[str], size: int) -> list[list[str]]:
    """Split into ceil(len/size) groups of near-equal size (sizes differ by at most one)."""
    groups = math.ceil(len(items) / size)
    base, extra = divmod(len(items), groups)
    out, start = [], 0
    for g in range(groups):
        end = start + base + (1 if g < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def plan_tree(replicas: int, branching: int) -> Tree:
    if replicas < 1:
        raise ValueError("replicas must be >= 1")
    if branching < 2:
        raise ValueError("branching must be >= 2")
    parent: dict[str, str] = {}
    children: dict[str, list[str]] = {}
    level_of: dict[str, int] = {}
    ranks_of: dict[str, tuple[int, ...]] = {}
    layer = [worker_id(r) for r in range(replicas)]
    for r, w in enumerate(layer):
        level_of[w] = 0
        ranks_of[w] = (r,)
    level, next_agg = 0, 0
    while len(layer) > branching:
        level += 1
        new_layer = []
        for group in _chunks(layer, branching):
            agg = aggregator_id(next_agg)
            next_agg += 1
            children[agg] = group
            level_of[agg] = level
            ranks_of[agg] = tuple(r for c in group for r in ranks_of[c])
            for c in group:
                parent[c] = agg
            new_layer.append(agg)
        layer = new_layer
    height = level + 1
    children[ROOT_ID] = layer
    level_of[ROOT_ID] = height
    ranks_of[ROOT_ID] = tuple(range(replicas))
    for c in layer:
        parent[c] = ROOT_ID
    nodes: dict[str, TreeNode] = {}
    for node_id, lvl in level_of.items():
        role: Role = "root" if node_id == ROOT_ID else ("worker" if lvl == 0 else "aggregator")
        nodes[node_id] = TreeNode(
            id=node_id,
            role=role,
            parent=parent.get(node_id),
            children=tuple(children.get(node_id, ())),
            level=lvl,
            ranks=ranks_of[node_id],
        )
    return Tree(nodes=nodes, height=height)


def bottom_aggregators(tree: Tree) -> list[TreeNode]:
    """The nodes the workers report to (level 1), by id: with `topology.reshuffle` a worker may
    report to any of them. A tree without interior aggregators has only the root there."""
    return sorted((n for n in tree.nodes.values() if n.role != "worker" and n.level == 1), key=lambda n: n.id)


def below(tree: Tree, node_id: str) -> frozenset[str]:
    """Ids of every node strictly below `node_id` in the planned tree."""
    out: set[str] = set()
    todo = list(tree.node(node_id).children)
    while todo:
        child = todo.pop()
        out.add(child)
        todo.extend(tree.node(child).children)
    return frozenset(out)


def reportable(tree: Tree, child_id: str, *, reshuffle: bool) -> frozenset[str]:
    """Nodes whose records a parent takes from its child `child_id`: those below the child, never
    the child itself (its parent measures it). With `reshuffle` any worker may report to any bottom
    aggregator, so a child with a bottom aggregator in its subtree may report on every worker."""
    nodes = below(tree, child_id)
    bottom = {n.id for n in bottom_aggregators(tree)}
    if reshuffle and (child_id in bottom or nodes & bottom):
        nodes |= {n.id for n in tree.workers}
    return frozenset(nodes) - {child_id}


def measurers(tree: Tree, *, reshuffle: bool) -> dict[str, frozenset[str]]:
    """Node id -> the aggregators that may measure it (a record's `parent`): its planned parent, or
    with `reshuffle` any bottom aggregator for a worker. The root has none: nobody scores it."""
    bottom = frozenset(n.id for n in bottom_aggregators(tree))
    return {
        n.id: bottom if reshuffle and n.role == "worker" else frozenset({n.parent})
        for n in tree.nodes.values()
        if n.parent is not None
    }


def round_assignment(tree: Tree, round_index: int, seed: int) -> dict[str, tuple[str, ...]]:
    """Which workers report to which bottom-level aggregator in `round_index`, reshuffled every round.

    A fixed tree lets an adversary who controls ⌈(b+1)/2⌉ children of one aggregator capture it every
    round (a median tree of fan-in b and depth L falls to ⌈(b+1)/2⌉^L of b^L leaves). Drawing the
    assignment afresh each round from a public seed, with the group sizes of the planned tree, makes
    every group a uniform random sample of the workers: with f Byzantine among n workers, a group of
    size g holds more than its rule tolerates only with the hypergeometric tail probability, and never
    the same group two rounds running by the adversary's choice. Every node computes the same
    assignment from (seed, round), so nothing is sent. Interior levels above the bottom stay fixed.
    """
    bottom = bottom_aggregators(tree)
    workers = [w.id for w in tree.workers]
    gen = random.Random(f"{seed}:{round_index}")
    gen.shuffle(workers)
    out: dict[str, tuple[str, ...]] = {}
    start = 0
    for node in bottom:
        size = sum(1 for c in node.children if tree.nodes[c].role == "worker")
        out[node.id] = tuple(workers[start : start + size])
        start += size
    return out


def parent_in_round(tree: Tree, worker: str, round_index: int, seed: int) -> str:
    """The bottom aggregator `worker` reports to in `round_index` (see `round_assignment`)."""
    for agg, members in round_assignment(tree, round_index, seed).items():
        if worker in members:
            return agg
    raise KeyError(f"{worker!r} is not a worker of this tree")
