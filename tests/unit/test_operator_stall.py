"""A round that cannot close shows as `Progressing=False` (RoundStalled) and one Warning event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from swarm_contract.manifest import parse_spec
from swarm_contract.records import RootStatus
from swarm_contract.topology import plan_tree
from swarm_operator.observe import PodObservation
from swarm_operator.reconcile import reconcile
from swarm_operator.restarts import iso
from swarm_operator.settings import Settings
from swarm_operator.stall import STALL_FLOOR_S, check_progress, stall_after

SPEC = parse_spec(
    {"workers": {"replicas": 4}, "topology": {"branchingFactor": 2}, "training": {"roundDeadlineSeconds": 10}}
)
TREE = plan_tree(4, 2)
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def _pods() -> dict[str, PodObservation]:
    return {
        n: PodObservation(name=f"j-{n}", node_id=n, role=node.role, uid=f"u-{n}", phase="Running", ready=True)
        for n, node in TREE.nodes.items()
    }


def _root(round_: int) -> RootStatus:
    return RootStatus(phase="Running", round=round_, rounds=30, loss=0.4, accuracy=0.9)


def _tick(status: dict[str, Any], round_: int, now: datetime) -> Any:
    return reconcile(SPEC, _pods(), _root(round_), status, now=now, generation=1, settings=Settings())


def _progressing(status: dict[str, Any]) -> tuple[str, str]:
    (c,) = [c for c in status["conditions"] if c["type"] == "Progressing"]
    return c["status"], c["reason"]


def test_the_limit_grows_with_the_deadline_and_the_rounds_seen_so_far() -> None:
    assert stall_after(SPEC, None, T0, 0) == STALL_FLOOR_S
    slow = parse_spec({"training": {"roundDeadlineSeconds": 60}})
    assert stall_after(slow, None, T0, 0) == 360
    # Ten rounds took 1,000 s: 100 s a round, so 5 rounds' time (500 s) without progress is a stall.
    assert stall_after(SPEC, T0, T0 + timedelta(seconds=1000), 10) == 500


def test_a_moving_round_records_when_it_moved() -> None:
    moved = check_progress(SPEC, {"round": 3, "roundChangedAt": iso(T0)}, 4, running=True, now=T0)
    assert moved.status == {"roundChangedAt": iso(T0)}
    assert moved.stalled is None


def test_a_stuck_round_is_reported_once_and_clears_when_the_round_moves() -> None:
    start = {"phase": "Running", "startTime": iso(T0)}
    first = _tick(start, 0, T0)
    assert _progressing(first.status) == ("True", "RoundAdvancing")
    status = {**start, **first.status}
    still = _tick(status, 0, T0 + timedelta(seconds=STALL_FLOOR_S - 1))
    assert _progressing(still.status) == ("True", "RoundAdvancing")
    stuck = _tick(status, 0, T0 + timedelta(seconds=STALL_FLOOR_S + 5))
    assert _progressing(stuck.status) == ("False", "RoundStalled")
    assert [e.reason for e in stuck.events] == ["RoundStalled"]
    assert "round 0 has not closed for 125 s" in stuck.events[0].message
    status = {**status, **stuck.status}
    again = _tick(status, 0, T0 + timedelta(seconds=STALL_FLOOR_S + 30))
    assert _progressing(again.status) == ("False", "RoundStalled")
    assert again.events == ()  # one event per stall, not one per tick
    moved = _tick({**status, **again.status}, 1, T0 + timedelta(seconds=STALL_FLOOR_S + 35))
    assert _progressing(moved.status) == ("True", "RoundAdvancing")
    assert moved.status["roundChangedAt"] == iso(T0 + timedelta(seconds=STALL_FLOOR_S + 35))


def test_an_unreadable_root_neither_moves_nor_stalls_the_round() -> None:
    status = {"phase": "Running", "startTime": iso(T0), "round": 2, "roundChangedAt": iso(T0)}
    later = T0 + timedelta(seconds=10 * STALL_FLOOR_S)
    actions = reconcile(SPEC, _pods(), None, status, now=later, generation=1, settings=Settings())
    assert "roundChangedAt" not in actions.status
    assert _progressing(actions.status) == ("True", "RoundAdvancing")
