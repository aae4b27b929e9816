"""Real processes, real faults: SIGKILL a worker, an interior aggregator, the root; every run ends
with the accuracy bar met. (digits: 8 workers, two aggregators, root.)

A 3 s round deadline makes rounds commit without the killed node; it also lets a round commit
without a worker that was merely slow on a loaded machine, so these tests never ask that a given
round had all 8 workers, only what the fault must have caused: which rounds a node missed, and
that it contributed again after its restart (its reputation record's `lastRound`: the last round an
aggregator used its update)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from tests.integration.swarm_helpers import SwarmThread, manifest, trained_rounds

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BAR = 0.95
WORKERS = 8
#: node.model_sync.accepted_round's WARNING: a node applied its parent's model of an older round.
ROLLBACK = re.compile(
    r"(?P<node>\S+): round (?P<held>\d+) -> (?P<to>\d+): the parent \S+ sent an older model"
)


def test_worker_killed_mid_run_round_continues_on_quorum_and_worker_rejoins(tmp_path: Path) -> None:
    # A long backoff keeps the worker away for a few rounds, so rounds must commit without it. Every
    # such round waits out the deadline, so 30 rounds leave it over a minute to come back even when
    # starting a process is slow. No quarantine: a worker away that long would be quarantined, and
    # rounds would stop waiting for it and could end the run before it is back.
    rounds = 30
    m = manifest(
        training={"rounds": rounds, "roundDeadlineSeconds": 3},
        restartPolicy={"backoffSeconds": 8},
        robustness={"reputation": {"quarantineRounds": rounds}},
    )
    run = SwarmThread(m, tmp_path).start()
    run.wait_for_round(3)
    run.swarm.kill("worker-5")
    result = run.join()
    lines = run.swarm.metrics_lines()
    assert result["phase"] == "Succeeded"
    assert result["round"] == rounds
    assert result["accuracy"] >= BAR
    assert result["restarts"] == {"worker-5": 1}
    assert [line["round"] for line in lines] == list(range(1, rounds + 1))

    # worker-5's log: the rounds of its first process, then round 0 again (every process starts
    # there), then the rounds it was sent after the restart.
    trained = [t.round for t in trained_rounds(tmp_path, "worker-5")]
    assert trained.count(0) == 2, f"worker-5 trained rounds {trained}"
    restart = trained.index(0, 1)
    before, after = trained[:restart], trained[restart + 1 :]
    missed = sorted(set(range(rounds)) - set(trained))
    assert missed, f"worker-5 trained every round ({trained}): no round ran without it"
    for r in missed:  # committed without worker-5, on a quorum of the others
        assert m.spec.quorum <= lines[r]["workers"] < WORKERS, (r, lines[r])
    assert after, f"worker-5 trained no round after its restart: {trained}"
    assert min(after) > max(before), f"worker-5 trained rounds {trained}"
    records = {record["id"]: record for record in result["nodes"]}
    assert records["worker-5"]["lastRound"] > max(before), "the restarted worker did not rejoin"


def test_interior_aggregator_killed_and_restarted_is_found_again(tmp_path: Path) -> None:
    m = manifest(training={"rounds": 14, "roundDeadlineSeconds": 3})
    run = SwarmThread(m, tmp_path).start()
    run.wait_for_round(3)
    run.swarm.kill("agg-0")
    # The killed process took part in at most the round open now; later rounds need its successor.
    open_at_kill = run.committed_rounds()
    result = run.join()
    assert result["phase"] == "Succeeded"
    assert result["accuracy"] >= BAR
    assert result["restarts"] == {"agg-0": 1}
    records = {record["id"]: record for record in result["nodes"]}
    # The new agg-0 scores its workers afresh, so their records come from it: each of them found it.
    for node in ("agg-0", "worker-0", "worker-1", "worker-2", "worker-3"):
        assert records[node]["lastRound"] > open_at_kill, f"{node} did not report after the restart"


def test_root_killed_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    m = manifest(training={"rounds": 14, "roundDeadlineSeconds": 3}, checkpoint={"everyRounds": 2})
    run = SwarmThread(m, tmp_path).start()
    run.wait_for_round(5)
    run.swarm.kill("root")
    result = run.join()
    assert result["phase"] == "Succeeded"
    assert result["round"] == 14
    assert result["accuracy"] >= BAR
    assert result["restarts"] == {"root": 1}
    log = (tmp_path / "logs" / "root.log").read_text()
    resumed = re.search(r"resumed from checkpoint at round (\d+)", log)
    assert resumed is not None
    rounds = [line["round"] for line in run.swarm.metrics_lines()]
    assert rounds == list(range(1, 15)), "metrics.jsonl must hold each round once after the resume"
    # Nodes holding a later round than the checkpoint's go back to it, never silently: each step
    # back of an aggregator's models is one WARNING, and every one of them lands on the resumed round.
    for node in ("agg-0", "agg-1", *(f"worker-{i}" for i in range(WORKERS))):
        node_log = (tmp_path / "logs" / f"{node}.log").read_text()
        rollbacks = [(int(m["held"]), int(m["to"])) for m in ROLLBACK.finditer(node_log) if m["node"] == node]
        assert all(to == int(resumed[1]) < held for held, to in rollbacks), (node, rollbacks)
        if node.startswith("agg-"):
            held = [int(r) for r in re.findall(rf"{node}: round (\d+): model", node_log)]
            assert rollbacks == [(a, b) for a, b in itertools.pairwise(held) if b < a], (node, held)
