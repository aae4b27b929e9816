"""consensus.speculation: evaluating a proposal gives the same commit point at every replica that
holds the same state, leaves the replica's state exactly as it was, and refuses a proposal the round
could not take (an input twice, a dropped input, too few for the quorum)."""

from __future__ import annotations

import copy

import torch

from swarm_contract.manifest import parse_spec
from swarm_contract.topology import ROOT_ID, plan_tree
from swarm_worker.consensus.speculation import Speculation, evaluate, install
from swarm_worker.maths.compression import dense_to_sparse
from swarm_worker.node.round import RoundState
from swarm_worker.node.traffic import Traffic
from swarm_worker.protocol.codec import Message
from swarm_worker.training.steps import OuterStep

NUMEL = 300
SPEC = parse_spec(
    {
        "workers": {"replicas": 4},
        "topology": {"branchingFactor": 4},
        "robustness": {"rule": "trimmed-mean", "f": 1},
        "compression": {"support": "own"},
        "training": {"outerOptimizer": {"name": "sgd", "lr": 1.0, "momentum": 0.9}},
    }
)


def replica() -> tuple[RoundState, OuterStep]:
    tree = plan_tree(4, 4)
    theta = torch.linspace(-1, 1, NUMEL)
    state = RoundState(SPEC, tree, tree.node(ROOT_ID), NUMEL, Traffic(ROOT_ID), theta, 5, 0.0)
    return state, OuterStep(SPEC.training.outer_optimizer, NUMEL)


def update(rank: int, round_index: int = 5) -> Message:
    values = torch.randn(NUMEL, generator=torch.Generator().manual_seed(rank)) * 0.01
    meta = {"samples": 32, "workers": 1, "loss": 0.3, "nodes": [], "traffic": []}
    return Message(
        "update",
        "job",
        round_index,
        f"worker-{rank}",
        meta,
        {"delta": dense_to_sparse(values, torch.float16)},
    )


def run(state: RoundState, outer: OuterStep, inputs: list[Message]) -> Speculation | str:
    return evaluate(SPEC, "job", 0, state, outer, inputs, NUMEL)


def test_two_replicas_with_the_same_state_compute_the_same_point() -> None:
    inputs = [update(r) for r in range(4)]
    a, b = replica(), replica()
    got_a, got_b = run(*a, inputs), run(*b, list(reversed(inputs)))  # order does not matter
    assert isinstance(got_a, Speculation)
    assert isinstance(got_b, Speculation)
    assert got_a.outcome.point == got_b.outcome.point
    assert torch.equal(got_a.outcome.theta, got_b.outcome.theta)
    other = run(*replica(), inputs[:3])  # another input set: another point
    assert isinstance(other, Speculation)
    assert other.outcome.point.digest() != got_a.outcome.point.digest()


def test_evaluation_leaves_the_state_as_it_was_and_install_applies_it() -> None:
    state, outer = replica()
    state.accept(update(0), 1.0)  # a child's update taken directly, before the proposal
    before = (
        dict(state.pending), copy.deepcopy(state.book.nodes), state.theta.clone(), state.previous_aggregate,
    )  # fmt: skip
    got = run(state, outer, [update(r) for r in range(4)])
    assert isinstance(got, Speculation)
    assert dict(state.pending) == before[0]
    assert state.book.nodes == before[1]
    assert torch.equal(state.theta, before[2])
    assert state.previous_aggregate is before[3]
    assert outer.momentum is not None
    assert not outer.momentum.any()
    assert not state.closed
    install(state, outer, got.books)  # what a commit does: the books after the round
    assert state.book.nodes == got.books.reputations
    assert outer.momentum.any()


def test_a_proposal_the_round_cannot_take_is_refused() -> None:
    state, outer = replica()
    assert run(state, outer, [update(0), update(0), update(1), update(2)]) == "worker-0 twice"
    assert "worker-3" in str(run(state, outer, [update(0), update(1), update(2), update(3, round_index=4)]))
    assert run(state, outer, [update(0)]) == "quorum"
    assert not state.pending
