"""The round state machine (swarm_worker.node.round) without sockets or a real clock: every drop
reason, quorum and deadline, the HELLO answers after a restart, and the root's round sequence."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from swarm_contract.manifest import parse_spec
from swarm_contract.spec import SwarmSpec
from swarm_contract.topology import plan_tree, round_assignment
from swarm_worker.maths.compression import SparseVector, dense_to_sparse, k_for
from swarm_worker.node.admission import DropReason
from swarm_worker.node.round import RoundState
from swarm_worker.node.traffic import Traffic
from swarm_worker.protocol.codec import Message

NUMEL = 200
T0 = 1_000.0  # an arbitrary monotonic time: the state machine never reads a clock itself


def _spec(**overrides: Any) -> SwarmSpec:
    spec: dict[str, Any] = {
        "workers": {"replicas": 8},
        "topology": {"branchingFactor": 4},
        "training": {"roundDeadlineSeconds": 10},
        "robustness": {"rule": "mean"},
    }
    for key, value in overrides.items():
        spec[key] = {**spec.get(key, {}), **value}
    return parse_spec(spec)


def _state(node_id: str = "agg-0", round_index: int = 3, **overrides: Any) -> RoundState:
    spec = _spec(**overrides)
    tree = plan_tree(spec.workers.replicas, spec.topology.branching_factor)
    theta = torch.zeros(NUMEL)
    return RoundState(spec, tree, tree.node(node_id), NUMEL, Traffic(node_id), theta, round_index, T0)


def _update(
    node: str,
    round_index: int = 3,
    *,
    vector: torch.Tensor | None = None,
    workers: int = 1,
    samples: int = 100,
    tensors: dict[str, Any] | None = None,
    nodes: list[dict[str, Any]] | None = None,
    msg_type: str = "update",
) -> Message:
    if tensors is None:
        dense = torch.ones(NUMEL) if vector is None else vector
        # What an honest child sends under the default spec (top-k, fp16; node.admission): a worker
        # its values sparse in fp16, an aggregator dense fp32.
        tensors = {"delta": dense_to_sparse(dense, torch.float16) if node.startswith("worker-") else dense}
    meta = {"samples": samples, "workers": workers, "loss": 0.5, "nodes": nodes or [], "traffic": []}
    return Message(msg_type, "job", round_index, node, meta, tensors)


def _record(node: str, last_round: int, reputation: float = 0.9) -> dict[str, Any]:
    return {
        "id": node,
        "role": "worker",
        "parent": "agg-0",
        "reputation": reputation,
        "uptime": 1.0,
        "agreement": 1.0,
        "contribution": 1.0,
        "quarantined": False,
        "lastRound": last_round,
    }


def _quarantine(state: RoundState, child: str) -> None:
    state.book.get(child, "worker", state.node.id).quarantined = True


def _off_support(state: RoundState) -> SparseVector:
    assert state.support is not None
    off = torch.tensor(sorted(set(range(NUMEL)) - set(state.support.tolist()))[: state.k], dtype=torch.int32)
    return SparseVector(off, torch.ones(state.k, dtype=torch.float16), NUMEL)


# Each case: a setup of the state, then the message, and the reason it must be dropped for.
DROP_CASES: list[tuple[str, Any, Any, DropReason]] = [
    ("unknown", None, lambda s: _update("worker-4"), DropReason.UNKNOWN_NODE),
    ("not-a-node", None, lambda s: _update("root"), DropReason.UNKNOWN_NODE),
    ("unexpected-type", None, lambda s: _update("worker-0", msg_type="model"), DropReason.UNEXPECTED_TYPE),
    ("late", None, lambda s: _update("worker-0", round_index=2), DropReason.LATE),
    ("future", None, lambda s: _update("worker-0", round_index=4), DropReason.FUTURE_ROUND),
    (
        "after-close",
        lambda s: [s.accept(_update(f"worker-{i}"), T0) for i in range(4)] and s.close(),
        lambda s: _update("worker-0"),
        DropReason.LATE,
    ),
    (
        "duplicate",
        lambda s: s.accept(_update("worker-0"), T0),
        lambda s: _update("worker-0"),
        DropReason.DUPLICATE,
    ),
    (
        "quarantined",
        lambda s: _quarantine(s, "worker-1"),
        lambda s: _update("worker-1"),
        DropReason.QUARANTINED,
    ),
    ("no-delta", None, lambda s: _update("worker-0", tensors={"theta": torch.ones(NUMEL)}), DropReason.SHAPE),
    (
        "extra-tensor",
        None,
        lambda s: _update("worker-0", tensors={"delta": torch.ones(NUMEL), "x": torch.ones(1)}),
        DropReason.SHAPE,
    ),
    ("wrong-length", None, lambda s: _update("worker-0", vector=torch.ones(NUMEL + 1)), DropReason.SHAPE),
    (
        "votes-wrong-length",
        None,
        lambda s: _update(
            "worker-0",
            tensors={
                "delta": torch.ones(NUMEL),
                "votes": SparseVector(torch.tensor([1], dtype=torch.int32), torch.ones(1), NUMEL + 5),
            },
        ),
        DropReason.SHAPE,
    ),
    ("too-many-workers", None, lambda s: _update("worker-0", workers=2), DropReason.FIELD),
]


@pytest.mark.parametrize(
    ("setup", "make", "reason"), [c[1:] for c in DROP_CASES], ids=[c[0] for c in DROP_CASES]
)
def test_every_drop_reason(setup: Any, make: Any, reason: DropReason) -> None:
    state = _state()
    if setup is not None:
        setup(state)
    before = dict(state.pending)
    assert state.accept(make(state), T0 + 1) == reason
    assert state.pending.keys() == before.keys()  # a dropped update changes nothing pending


def test_off_support_update_is_dropped_and_on_support_accepted() -> None:
    state = _state(robustness={"rule": "median"})  # coordinate-wise rules use the common support
    assert state.support is not None
    assert state.k == k_for(NUMEL, state.spec.compression.ratio)
    assert state.accept(_update("worker-0", tensors={"delta": _off_support(state)}), T0) == DropReason.SUPPORT
    on = SparseVector(state.support.to(torch.int32), torch.ones(state.k, dtype=torch.float16), NUMEL)
    assert state.accept(_update("worker-0", tensors={"delta": on}), T0) is None
    assert set(state.pending) == {"worker-0"}


def test_dense_update_is_off_a_common_support() -> None:
    state = _state(robustness={"rule": "median"})
    assert state.accept(_update("worker-0", tensors={"delta": torch.ones(NUMEL)}), T0) == DropReason.SUPPORT


def test_not_assigned_with_reshuffle() -> None:
    state = _state(topology={"reshuffle": True})
    mine = set(round_assignment(state.tree, 3, state.spec.training.seed)["agg-0"])
    other = next(w.id for w in state.tree.workers if w.id not in mine)
    assert state.accept(_update(other), T0) == DropReason.NOT_ASSIGNED
    assert state.accept(_update(sorted(mine)[0]), T0) is None


def test_accepted_update_is_dense_fp32_of_the_sparse_payload() -> None:
    state = _state()
    sparse = SparseVector(torch.tensor([3, 7], dtype=torch.int32), torch.tensor([1.5, -2.0]).half(), NUMEL)
    assert state.accept(_update("worker-2", tensors={"delta": sparse}, samples=40), T0) is None
    got = state.pending["worker-2"]
    expected = torch.zeros(NUMEL)
    expected[3], expected[7] = 1.5, -2.0
    torch.testing.assert_close(got.vector, expected, rtol=0, atol=0)
    assert (got.samples, got.workers, got.loss) == (40, 1, 0.5)


def test_closes_at_once_when_every_child_reported() -> None:
    state = _state()
    for i in range(3):
        assert state.accept(_update(f"worker-{i}"), T0) is None
        assert not state.ready(T0)
    assert state.accept(_update("worker-3"), T0) is None
    assert state.ready(T0)


def test_quorum_at_the_deadline_counts_from_the_first_update() -> None:
    state = _state()  # interior: quorum fraction 1.0 by default, so 4 of 4 children
    deadline = state.deadline
    assert deadline == pytest.approx(9.0)  # one level below the root: 10% less than 10 s
    state.accept(_update("worker-0"), T0 + 100)  # long after the opening: the clock starts here
    assert not state.ready(T0 + 100 + deadline - 0.01)
    # No quorum (1 of 4) at the deadline: wait on.
    assert not state.ready(T0 + 100 + deadline + 50)


def test_quorum_at_the_deadline_with_a_lower_quorum() -> None:
    state = _state(training={"minPeers": 4})  # quorum 4 of 8 workers: half of each group
    state.accept(_update("worker-0"), T0)
    assert not state.ready(T0 + state.deadline)
    state.accept(_update("worker-1"), T0 + 1)
    assert not state.ready(T0 + state.deadline - 0.01)
    assert state.ready(T0 + state.deadline)


def test_quarantined_children_are_not_waited_for() -> None:
    state = _state()
    _quarantine(state, "worker-3")
    for i in range(3):
        state.accept(_update(f"worker-{i}"), T0)
    assert state.ready(T0)


def test_root_counts_workers_not_children() -> None:
    state = _state("root", training={"minPeers": 4})
    state.accept(_update("agg-0", workers=4), T0)  # 4 workers: the quorum, from one child of two
    assert not state.ready(T0 + state.deadline - 0.01)
    assert state.ready(T0 + state.deadline)
    short = _state("root", training={"minPeers": 6})
    short.accept(_update("agg-0", workers=4), T0)
    assert not short.ready(T0 + 10 * short.deadline)  # 4 workers < quorum 6: wait on


def test_close_is_the_sample_weighted_mean_and_scores_children() -> None:
    state = _state()
    for i, (value, samples) in enumerate([(1.0, 100), (3.0, 300), (2.0, 100), (2.0, 100)]):
        state.accept(_update(f"worker-{i}", vector=torch.full((NUMEL,), value), samples=samples), T0)
    result = state.close()
    torch.testing.assert_close(result.vector, torch.full((NUMEL,), 1400 / 600), rtol=1e-6, atol=1e-6)
    assert (result.samples, result.workers, result.contributors) == (
        600,
        4,
        tuple(f"worker-{i}" for i in range(4)),
    )
    assert state.closed
    assert not state.ready(T0 + 100)
    assert {r["id"] for r in state.records()} == {f"worker-{i}" for i in range(4)}
    assert all(r["lastRound"] == 3 for r in state.records())


def test_a_missing_child_is_scored_as_absent() -> None:
    state = _state(training={"minPeers": 4})
    for i in range(4):  # each child's first update reached this node: from now on a miss counts
        state.accept(_update(f"worker-{i}"), T0)
    state.close()
    state.open(4, torch.zeros(NUMEL), T0 + 1)
    for i in range(2):
        state.accept(_update(f"worker-{i}", round_index=4), T0 + 1)
    state.close()
    uptime = {r["id"]: r["uptime"] for r in state.records()}
    assert uptime["worker-2"] < 1.0
    assert uptime["worker-0"] == 1.0


def test_records_from_below_keep_the_latest_view() -> None:
    state = _state("root")
    state.accept(_update("agg-0", workers=4, nodes=[_record("worker-0", 2, 0.8)]), T0)
    state.open(4, torch.zeros(NUMEL), T0 + 1)
    state.accept(_update("agg-0", round_index=4, workers=4, nodes=[_record("worker-0", 4, 0.5)]), T0 + 1)
    state.accept(_update("agg-0", round_index=2, workers=4, nodes=[_record("worker-0", 1, 0.99)]), T0 + 2)
    worker0 = next(r for r in state.records() if r["id"] == "worker-0")
    assert worker0["reputation"] == 0.5


def test_hello_after_the_parent_restarted_gets_the_dense_model() -> None:
    """A child that answered round r whose update this node lacks (it restarted) gets the dense
    model, and re-sends its cached update (accepted); a child on round r that has not answered
    yet, or whose update is here, needs nothing."""
    state = _state()
    assert state.hello("worker-0", 3, answered=True).dense_model  # lost: re-sync, it re-sends
    assert not state.hello("worker-1", 3, answered=False).dense_model  # still training
    assert state.accept(_update("worker-0"), T0) is None  # the re-sent update is taken
    assert not state.hello("worker-0", 3, answered=True).dense_model  # here now
    assert state.hello("worker-2", 1, answered=True).dense_model  # behind: catch up


def test_hello_from_a_replacement_reinstates_a_quarantined_child() -> None:
    state = _state()
    _quarantine(state, "worker-1")
    reply = state.hello("worker-1", 0, answered=False)
    assert reply.reinstated
    assert reply.dense_model
    assert not state.book.is_quarantined("worker-1")
    assert not state.hello("worker-2", 0, answered=False).reinstated  # nothing to lift


def test_root_round_sequence() -> None:
    """The root opens r, closes it on both subtrees, opens r + 1 on the new θ: updates of r are
    then late, updates of r + 1 accepted, and nothing of r stays pending."""
    state = _state("root", round_index=0)
    theta = torch.zeros(NUMEL)
    for r in range(3):
        assert state.round == r
        assert state.accept(_update("agg-0", r, workers=4, vector=torch.full((NUMEL,), 1.0)), T0 + r) is None
        assert not state.ready(T0 + r)
        assert state.accept(_update("agg-1", r, workers=4, vector=torch.full((NUMEL,), 3.0)), T0 + r) is None
        assert state.ready(T0 + r)
        result = state.close()
        torch.testing.assert_close(result.vector, torch.full((NUMEL,), 2.0))
        assert result.workers == 8
        theta = theta + result.vector
        state.open(r + 1, theta, T0 + r + 0.5)
        assert state.pending == {}
        assert not state.closed
        assert state.accept(_update("agg-0", r, workers=4), T0 + r + 0.5) == DropReason.LATE
    torch.testing.assert_close(state.theta, torch.full((NUMEL,), 6.0))


def test_restore_gives_back_the_books() -> None:
    state = _state()
    for i in range(4):
        state.accept(_update(f"worker-{i}"), T0)
    state.close()
    books = state.books()
    fresh = _state()
    fresh.restore(books["reputations"], books["subtree_records"], books["support"])
    assert fresh.records() == state.records()
