"""A silent child and an always-invalid child in one group (docs/threat-model.md, the last line): a
whole `swarm run` (LocalSwarm in a thread) whose workers all report to the root, of which only the
honest ones are real processes. The second-to-last worker is our rogue, answering every model with
an update the root must drop; the last one never starts, so it says nothing at all.

The run finishes when the quorum allows it: with `mean` (f = 0) only a minPeers the honest workers
reach does; with a robust rule and f = 2 the default quorum is lowered to the workers the root is
sure to hear from (swarm_contract.tolerance), so the two misbehaving children cannot stall a round."""

from __future__ import annotations

import signal
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from swarm_contract.topology import ROOT_ID
from swarm_worker.local.launcher import SwarmInterruptedError
from swarm_worker.protocol.curve import load_node_keys
from tests.adversarial.nodes import HOST, NUMEL
from tests.adversarial.rogue import Rogue, huge_sparse
from tests.integration.swarm_helpers import SwarmThread, manifest, trained_rounds

pytestmark = [pytest.mark.integration]
ROUNDS = 4
#: A worker that heard nothing for 2 x the deadline says HELLO; a HELLO crossing the next round's
#: broadcast makes it re-send its update, which the root then drops as a (harmless) duplicate. With
#: 1 s (a 2-s HELLO) that race happened under load in CI; 3 s leaves each round 3 s of slack.
DEADLINE_S = 3.0
#: How long round 0 may take once every honest worker sent it: 10 deadlines, ample on a loaded machine.
STALL_S = 10 * DEADLINE_S


def sent_round_0(output: Path, workers: list[str]) -> bool:
    """Every one of `workers` logged round 0, which a worker logs once its update is sent."""
    try:
        return all(trained_rounds(output, w) for w in workers)
    except FileNotFoundError:  # the launcher has not started them yet
        return False


def stop(run: SwarmThread) -> None:
    """End a run still going: the launcher's own stop path (as on SIGTERM), which stops every node."""
    if run.running():
        run.swarm.signalled = signal.SIGTERM
        with suppress(SwarmInterruptedError):
            run.join(timeout=60)


@pytest.mark.parametrize(
    ("replicas", "spec"),
    [
        (4, {"training": {"minPeers": 2}}),
        # Top-k on each worker's own support: the common support's check would drop the rogue first.
        (5, {"robustness": {"rule": "median", "f": 2}, "compression": {"support": "own"}}),
    ],
    ids=["mean-with-minPeers-2", "median-f2-default-quorum"],
)
def test_a_silent_and_an_invalid_child_leave_a_run_the_quorum_allows_to_finish(
    tmp_path: Path, replicas: int, spec: dict[str, Any]
) -> None:
    spec = {
        **spec,
        "training": {"rounds": ROUNDS, "roundDeadlineSeconds": DEADLINE_S, **spec.get("training", {})},
    }
    m = manifest(workers={"replicas": replicas}, topology={"branchingFactor": replicas}, **spec)
    run = SwarmThread(m, tmp_path, timeout=240)
    workers = [f"worker-{i}" for i in range(replicas)]
    assert sorted(run.swarm.tree.node("root").children) == workers
    *honest, rogue_id, silent_id = workers
    for slot in (rogue_id, silent_id):  # no process: the rogue takes one slot, the other stays silent
        del run.swarm.processes[slot]
    # A Byzantine member holds its own key: CURVE lets it in, and the round's checks must hold it.
    keys = load_node_keys(run.swarm.keys_dir, run.swarm.tree, rogue_id, reshuffle=False)
    rogue = Rogue(f"{HOST}:{run.swarm.data_ports['root']}", rogue_id, m.name, curve=keys.client(ROOT_ID))
    run.start()
    try:
        # Top-k in float16 is what an honest worker sends: float32 values are refused (`dtype`).
        rogue.update(0, huge_sparse(NUMEL))
        honest_sent_at: float | None = None
        while run.running():
            reply = rogue.receive(timeout=0.2)
            if reply is not None and reply.type == "model":
                rogue.update(reply.round, huge_sparse(NUMEL))
            if honest_sent_at is None and sent_round_0(tmp_path, honest):
                honest_sent_at = time.monotonic()
            stalled = honest_sent_at is not None and time.monotonic() - honest_sent_at > STALL_S
            assert not (stalled and run.committed_rounds() == 0), (
                f"round 0 did not commit {STALL_S:g} s after the {len(honest)} honest workers sent it "
                f"(quorum {m.spec.quorum}, {m.spec.guaranteed_workers} guaranteed)"
            )
        result = run.join()
    finally:
        stop(run)
        rogue.close()
    assert result["phase"] == "Succeeded"
    assert result["round"] == ROUNDS
    assert [line["workers"] for line in run.swarm.metrics_lines()] == [len(honest)] * ROUNDS
    # Every rogue update, one per round, was dropped for its dtype. The only other drop allowed is
    # an honest worker re-sending an update the root already holds (seen in 3 of 4 clean-clone CI
    # runs under load; not diagnosed): a duplicate, which changes nothing.
    assert rogue.sent == ROUNDS
    dropped = dict(result["dropped"])
    resent = dropped.pop("duplicate", 0)
    assert dropped == {"dtype": ROUNDS}
    assert resent <= len(honest) * ROUNDS
    nodes = {n["id"]: n for n in result["nodes"]}
    assert [w for w in honest if nodes[w]["quarantined"]] == []
    assert {w: nodes[w]["lastRound"] for w in honest} == dict.fromkeys(honest, ROUNDS - 1)
