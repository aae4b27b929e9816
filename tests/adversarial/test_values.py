"""Huge finite values, wrong dtypes and replays against a live interior aggregator (agg-0 of a tree of
8 workers: root <- agg-0 <- worker-0..3). The rogue is worker-3, three more peers of ours play
worker-0..2 honestly and `FakeParent` stands in for the root, so the aggregate agg-0 sends up is the
round's result as its parent sees it: each check asserts the drop counter by reason, that the result
is exactly what the honest updates alone give, and that no honest worker is quarantined."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from swarm_worker.protocol.codec import Message, Payload
from tests.adversarial.nodes import NUMEL, FakeParent, Node, manifest_doc, node_process
from tests.adversarial.rogue import (
    HUGE,
    HUGE_FP16,
    Rogue,
    dense_of,
    huge_dense,
    huge_sparse,
    random_sparse,
)

pytestmark = [pytest.mark.integration]
JOB = "rogue"
ROUNDS = 3
SAMPLES = 32


class Sent(NamedTuple):
    peer: Rogue
    payload: Payload
    frames: list[bytes]


@dataclass
class Group:
    agg: Node
    parent: FakeParent
    honest: list[Rogue]  # worker-0..2, well behaved
    rogue: Rogue  # worker-3

    @property
    def children(self) -> list[Rogue]:
        return [*self.honest, self.rogue]

    def send_honest(self, r: int, peers: list[Rogue]) -> list[Sent]:
        """Each of `peers` sends an honest-looking update for round r (a sparse float32 of its own)."""
        sent = []
        for peer in peers:
            payload = random_sparse(NUMEL, seed=10 * r + int(peer.node_id[-1]), dtype=torch.float32)
            sent.append(Sent(peer, payload, peer.update(r, payload, samples=SAMPLES)))
        return sent

    def result(self, r: int, senders: list[Sent]) -> Message:
        """agg-0's UPDATE for round r; its aggregate is the mean of `senders`' updates (equal samples)."""
        up = self.parent.expect_update(r)
        expected = torch.stack([dense_of(s.payload) for s in senders]).mean(dim=0)
        torch.testing.assert_close(dense_of(up.tensors["delta"]), expected, rtol=1e-6, atol=1e-7)
        assert (up.meta["workers"], up.meta["samples"]) == (len(senders), SAMPLES * len(senders))
        records = {n["id"]: n for n in up.meta["nodes"]}
        assert [c.node_id for c in self.honest if records[c.node_id]["quarantined"]] == []
        assert all(records[s.peer.node_id]["lastRound"] == r for s in senders)
        return up

    def next_round(self, r: int) -> None:
        """The parent opens round r (a dense zero θ); every child gets the model."""
        self.parent.send_model("agg-0", r, torch.zeros(NUMEL))
        for child in self.children:
            assert child.expect("model").round == r


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Group]:
    spec = {
        "workers": {"replicas": 8},
        "topology": {"branchingFactor": 4},
        # agg-0 closes a round when all 4 children reported, or 0.9 x 2 s after the first update
        # with a quorum of 3 (round_plan.interior_quorum).
        "training": {"rounds": 100, "roundDeadlineSeconds": 2},
        # Top-k in float32: a sparse float32 update is the form an honest worker sends.
        "compression": {"valueDtype": "float32"},
    }
    with ExitStack() as stack:
        parent = stack.enter_context(FakeParent(JOB))
        doc = manifest_doc(JOB, spec)
        agg = stack.enter_context(node_process(tmp_path, doc, "agg-0", parent=parent.address))
        peers = [stack.enter_context(Rogue(agg.address, f"worker-{i}", JOB)) for i in range(4)]
        yield Group(agg, parent, peers[:3], peers[3])
        agg.alive()


# What the rogue sends, and why agg-0 must drop it (admission.values_fit): the form an honest worker
# of this spec sends is a sparse float32 update, its values within maxUpdateRatio x max(1, max |θ|).
HUGE_UPDATES = [
    ("sparse-fp32-3e38", huge_sparse(NUMEL), "magnitude"),
    ("sparse-fp32-minus-3e38", huge_sparse(NUMEL, -HUGE), "magnitude"),
    ("dense-fp32-3e38", huge_dense(NUMEL), "dtype"),
    ("sparse-bf16-3e38", huge_sparse(NUMEL, HUGE, torch.bfloat16), "dtype"),
    ("sparse-fp16-65504", huge_sparse(NUMEL, HUGE_FP16, torch.float16), "dtype"),
]


def test_huge_finite_values_are_dropped_and_the_round_result_is_the_honest_one(group: Group) -> None:
    dropped: dict[str, int] = {}
    for r in range(ROUNDS):
        for _, payload, reason in HUGE_UPDATES:
            group.rogue.update(r, payload, samples=SAMPLES)
            dropped[reason] = dropped.get(reason, 0) + 1
        group.agg.wait_dropped(dropped)  # all counted before the round can close
        # Closed at the deadline, on the quorum of the 3 honest workers.
        up = group.result(r, group.send_honest(r, group.honest))
        assert max(abs(v) for v in dense_of(up.tensors["delta"]).tolist()) < 1
        group.next_round(r + 1)
    assert group.agg.dropped() == {"magnitude": 2 * ROUNDS, "dtype": 3 * ROUNDS}


def test_replays_of_old_rounds_are_dropped_as_late(group: Group) -> None:
    sent: dict[int, dict[str, list[bytes]]] = {}  # round -> node -> frames, for the replays
    replays = {
        1: [(0, "worker-3")],  # the rogue's own update of round 0
        2: [(0, "worker-3"), (1, "worker-3")],
    }
    late = 0
    for r in range(ROUNDS):
        for old, node in replays.get(r, []):
            group.rogue.send_frames(sent[old][node])
            late += 1
        if r == 1:
            # An honest worker's update captured in round 0, replayed through the rogue's socket:
            # the header says worker-0, the routing id worker-3 (this is no defence against a rogue
            # that takes worker-0's routing id: that is impersonation, open until CURVE).
            group.rogue.send_frames(sent[0]["worker-0"])
        group.agg.wait_dropped({"late": late, "identity": 1} if r else {})
        updates = group.send_honest(r, group.children)
        group.result(r, updates)  # all four reported: the replays changed nothing
        sent[r] = {s.peer.node_id: s.frames for s in updates}
        if r + 1 < ROUNDS:
            group.next_round(r + 1)
    # The last round's update again, after the round closed (its parent has not opened the next).
    group.rogue.send_frames(sent[ROUNDS - 1]["worker-3"])
    group.agg.wait_dropped({"late": late + 1, "identity": 1})
