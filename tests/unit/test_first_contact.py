"""First contact (maths.reputation): a book does not score a node's first misses before its first
update reached it, so the children of a replaced aggregator that are still reconnecting keep their
reputation, while a node that withholds its updates still loses uptime and is quarantined."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from swarm_contract.manifest import parse_spec
from swarm_contract.topology import plan_tree
from swarm_worker.maths.compression import dense_to_sparse
from swarm_worker.maths.reputation import (
    FIRST_CONTACT_ROUNDS,
    NodeReputation,
    ReputationBook,
    RoundObservation,
    update_reputation,
)
from swarm_worker.node.round import RoundState
from swarm_worker.node.traffic import Traffic
from swarm_worker.protocol.codec import Message

HONEST = RoundObservation(delivered=True, selected=1.0, mad_score=0.5, cosine=0.8, typical_cosine=0.8)
ABSENT = RoundObservation(delivered=False)
SETTINGS: dict[str, Any] = {"decay": 0.8, "threshold": 0.5, "quarantine_rounds": 3}
NUMEL = 200
T0 = 1_000.0


def run(history: list[RoundObservation]) -> NodeReputation:
    rep = NodeReputation("worker-2", "worker", "agg-0")
    for r, obs in enumerate(history):
        update_reputation(rep, obs, r, **SETTINGS)
    return rep


def first_quarantined(history: list[RoundObservation]) -> int | None:
    """The number of rounds after which `history` had the node quarantined (None: never)."""
    rep = NodeReputation("worker-2", "worker", "agg-0")
    for r, obs in enumerate(history):
        update_reputation(rep, obs, r, **SETTINGS)
        if rep.quarantined:
            return r + 1
    return None


def test_misses_before_the_first_update_are_counted_not_scored() -> None:
    rep = run([ABSENT] * FIRST_CONTACT_ROUNDS)
    assert (rep.reputation, rep.uptime, rep.rounds_below, rep.last_round) == (1.0, 1.0, 0, -1)
    assert rep.unscored_misses == FIRST_CONTACT_ROUNDS
    update_reputation(rep, ABSENT, FIRST_CONTACT_ROUNDS, **SETTINGS)
    assert rep.uptime == pytest.approx(0.8), "the grace is spent: the next miss counts"


@pytest.mark.parametrize(
    ("history", "quarantined_after"),
    [
        # Unreachable for 8 rounds (3 not scored, 5 scored), then honest: it climbs back in time.
        ([ABSENT] * (FIRST_CONTACT_ROUNDS + 5) + [HONEST] * 10, None),
        # The same misses after a delivery all count: quarantined at the 6th, as a replaced
        # aggregator did to a child reconnecting to it before the grace.
        ([HONEST] + [ABSENT] * (FIRST_CONTACT_ROUNDS + 5) + [HONEST] * 10, 7),
        # Withholding after one delivery: every miss counts from the first.
        ([HONEST] + [ABSENT] * 12, 7),
        # Never delivering (`silent`): quarantined FIRST_CONTACT_ROUNDS rounds later, within 10.
        ([ABSENT] * 12, FIRST_CONTACT_ROUNDS + 7),
    ],
    ids=["reconnecting-child", "same-misses-after-a-delivery", "withholding", "silent"],
)
def test_when_a_node_is_quarantined(history: list[RoundObservation], quarantined_after: int | None) -> None:
    assert first_quarantined(history) == quarantined_after
    if quarantined_after is None:
        assert run(history).reputation > SETTINGS["threshold"]


def test_a_silent_node_put_on_probation_gets_no_new_grace() -> None:
    book = ReputationBook(**SETTINGS)
    for r in range(FIRST_CONTACT_ROUNDS + 7):
        book.observe("worker-2", "worker", "agg-0", ABSENT, r)
    assert book.is_quarantined("worker-2")
    assert book.reinstate("worker-2")
    book.observe("worker-2", "worker", "agg-0", ABSENT, 10)
    assert book.nodes["worker-2"].uptime == pytest.approx(0.8)


# ---------------------------------------------------------------------------------------------
# A replaced aggregator: its round state starts with an empty book on its parent's round


def replaced_aggregator(round_index: int) -> RoundState:
    """agg-0 (children worker-0..3) of a fresh process that joined its parent's round `round_index`."""
    spec = parse_spec(
        {
            "workers": {"replicas": 8},
            "topology": {"branchingFactor": 4},
            "training": {"roundDeadlineSeconds": 10},
            "robustness": {"rule": "mean"},
        }
    )
    tree = plan_tree(8, 4)
    node = tree.node("agg-0")
    return RoundState(spec, tree, node, NUMEL, Traffic("agg-0"), torch.zeros(NUMEL), round_index, T0)


def update(node: str, round_index: int) -> Message:
    meta = {"samples": 100, "workers": 1, "loss": 0.5, "nodes": [], "traffic": []}
    values = torch.linspace(0.5, 1.5, NUMEL) + 0.01 * int(node[-1])
    tensors: dict[str, Any] = {"delta": dense_to_sparse(values, torch.float16)}
    return Message("update", "job", round_index, node, meta, tensors)


def close_round(state: RoundState, round_index: int, delivering: list[str]) -> dict[str, dict[str, Any]]:
    state.open(round_index, torch.zeros(NUMEL), T0 + round_index)
    for child in delivering:
        assert state.accept(update(child, round_index), T0 + round_index) is None
    state.close()
    return {r["id"]: r for r in state.records()}


def test_a_replaced_aggregator_scores_a_child_only_from_its_first_update_or_after_the_grace() -> None:
    state = replaced_aggregator(7)
    # worker-3 cannot reach the new process yet; worker-2 delivers once, then withholds.
    records = close_round(state, 7, ["worker-0", "worker-1", "worker-2"])
    grace_over = 7 + FIRST_CONTACT_ROUNDS  # worker-3's misses at rounds 7, 8, 9 are not scored
    for r in range(8, grace_over):
        records = close_round(state, r, ["worker-0", "worker-1"])
        assert records["worker-2"]["uptime"] == pytest.approx(0.8 ** (r - 7)), "scored on every miss"
    assert records["worker-3"]["uptime"] == 1.0
    assert records["worker-3"]["lastRound"] == -1
    records = close_round(state, grace_over, ["worker-0", "worker-1"])
    assert records["worker-3"]["uptime"] == pytest.approx(0.8), "the grace is over"
    assert records["worker-0"]["uptime"] == records["worker-1"]["uptime"] == 1.0
