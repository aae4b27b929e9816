"""Records and counters a child forwards (swarm_worker.node.round, node.subtree, node.traffic): a
child is believed only about its own subtree and only up to the current round, nothing is taken
from a message the round drops, and no flood of made-up entries grows the stores."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from swarm_contract.topology import reportable
from swarm_worker.node.admission import DropReason
from swarm_worker.node.round import RoundState
from tests.unit.test_round import NUMEL, T0, _record, _state, _update


def _from(child: str, records: list[dict[str, Any]], *, workers: int = 4, round_index: int = 3) -> Any:
    msg = _update(child, round_index, workers=workers, nodes=records)
    return msg


def _ids(state: RoundState) -> set[str]:
    return {r["id"] for r in state.records()}


# (what a child claims, the record's id, its lastRound): all refused by the root at round 3.
FORGED = [
    ("about-a-sibling-subtree", "worker-5", 2),  # worker-5 is below agg-1, not agg-0
    ("about-the-sibling", "agg-1", 2),
    ("about-the-root", "root", 2),
    ("about-itself", "agg-0", 2),  # the root measures agg-0 itself
    ("from-the-future", "worker-1", 10**9),
    ("not-in-the-tree", "worker-99", 2),
]


@pytest.mark.parametrize(("node", "last_round"), [c[1:] for c in FORGED], ids=[c[0] for c in FORGED])
def test_forged_records_are_refused(node: str, last_round: int) -> None:
    state = _state("root")
    honest = _record("worker-0", 2)
    assert (
        state.accept(_from("agg-0", [honest, {**_record(node, last_round), "quarantined": True}]), T0) is None
    )
    assert _ids(state) == {"worker-0"}
    assert state.invalid_records == 1


def test_a_record_out_of_bounds_is_refused_alone() -> None:
    state = _state("root")
    bad = {**_record("worker-1", 2), "reputation": 7.0}
    assert state.accept(_from("agg-0", [_record("worker-0", 2), bad]), T0) is None
    assert _ids(state) == {"worker-0"}
    assert state.invalid_records == 1


@pytest.mark.parametrize(
    "make",
    [
        lambda: _from("agg-0", [_record("worker-0", 1)], round_index=2),  # late
        lambda: _from("agg-0", [_record("worker-0", 1)], workers=5),  # field out of range
        lambda: _update("agg-0", workers=4, nodes=[_record("worker-0", 1)], vector=torch.ones(NUMEL + 1)),
    ],
    ids=["late", "field", "shape"],
)
def test_nothing_is_merged_from_a_dropped_message(make: Any) -> None:
    state = _state("root")
    msg = make()
    msg.meta["traffic"] = [["worker-0", 1, 10, 20]]
    assert state.accept(msg, T0) is not None
    assert state.records() == []
    assert state.traffic.known == {}


def test_a_duplicate_update_cannot_rewrite_records() -> None:
    state = _state("root")
    assert state.accept(_from("agg-0", [_record("worker-0", 2, 0.9)]), T0) is None
    assert state.accept(_from("agg-0", [_record("worker-0", 3, 0.2)]), T0) == DropReason.DUPLICATE
    assert state.records()[0]["reputation"] == 0.9


def test_traffic_only_about_the_subtree_and_bounded_per_node() -> None:
    state = _state("root")
    own_and_below = [["agg-0", 1, 5, 5], ["worker-0", 1, 7, 9]]
    foreign = [["agg-1", 1, 10**12, 10**12], ["root", 1, 10**12, 10**12], ["ghost", 1, 1, 1]]
    many = [["worker-1", inc, 1, 1] for inc in range(1, 1001)]  # a thousand made-up incarnations
    msg = _from("agg-0", [])
    msg.meta["traffic"] = own_and_below + foreign + many
    assert state.accept(msg, T0) is None
    assert state.invalid_records == len(foreign)
    assert {k[0] for k in state.traffic.known} == {"agg-0", "worker-0", "worker-1"}
    assert sum(1 for k in state.traffic.known if k[0] == "worker-1") == 8
    assert max(k[1] for k in state.traffic.known if k[0] == "worker-1") == 1000  # the newest kept


def test_a_record_flood_stays_within_the_tree() -> None:
    """Thousands of made-up records over many rounds: the store never holds more than the nodes
    below the children, one record each."""
    # Reputation off: the two children send one and the same vector, which the book would punish.
    state = _state("root", round_index=0, robustness={"reputation": {"enabled": False}})
    for r in range(50):
        flood = [{**_record(f"worker-{i % 300}", r), "parent": f"agg-{(i % 300) // 4}"} for i in range(300)]
        for child in ("agg-0", "agg-1"):
            assert state.accept(_from(child, flood, round_index=r), T0 + r) is None
        state.close()
        state.open(r + 1, torch.zeros(NUMEL), T0 + r)
    ids = _ids(state)
    assert ids == {f"worker-{i}" for i in range(8)}
    assert len(state.records()) == len(ids)


def test_reshuffled_workers_may_be_reported_by_any_bottom_aggregator() -> None:
    state = _state("root", topology={"reshuffle": True})
    assert reportable(state.tree, "agg-0", reshuffle=True) == frozenset(f"worker-{i}" for i in range(8))
    assert reportable(state.tree, "agg-0", reshuffle=False) == frozenset(f"worker-{i}" for i in range(4))
    assert state.accept(_from("agg-0", [_record("worker-6", 2)]), T0) is None
    assert _ids(state) == {"worker-6"}


@pytest.mark.parametrize(
    "forged",
    [{"parent": "agg-1"}, {"parent": "root"}, {"role": "aggregator"}],
    ids=["another-aggregator-as-measurer", "root-as-measurer", "wrong-role"],
)
def test_a_record_must_name_who_may_measure_the_node(forged: dict[str, Any]) -> None:
    state = _state("root")
    record = {**_record("worker-1", 2), **forged}  # worker-1 is measured by agg-0, its parent
    assert state.accept(_from("agg-0", [_record("worker-0", 2), record]), T0) is None
    assert _ids(state) == {"worker-0"}
    assert state.invalid_records == 1
