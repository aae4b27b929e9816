"""`topology.reshuffle` with real processes: every round each worker reports to the bottom aggregator
`round_assignment` draws for it, so over a run a worker's updates go to more than one parent, and the
swarm still learns. (6 workers, branching 3: agg-0 and agg-1 below the root.)"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from swarm_contract.manifest import parse_manifest
from swarm_contract.spec import API_GROUP, API_VERSION, KIND
from swarm_contract.topology import Tree, parent_in_round, plan_tree, round_assignment
from tests.integration.swarm_helpers import SwarmThread, metric_samples
from tests.polling import poll

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WORKERS, BRANCHING, ROUNDS, SEED = 6, 3, 12, 3
BAR = 0.93


def drawn_in(tree: Tree, rounds: range) -> dict[str, set[str]]:
    """Every worker `round_assignment` sends to each bottom aggregator in any of `rounds`."""
    out: dict[str, set[str]] = {}
    for r in rounds:
        for agg, members in round_assignment(tree, r, SEED).items():
            out.setdefault(agg, set()).update(members)
    return out


def test_reshuffled_workers_report_to_several_aggregators_and_the_swarm_learns(tmp_path: Path) -> None:
    m = parse_manifest(
        {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {"name": "reshuffle"},
            "spec": {
                "workers": {"replicas": WORKERS},
                "topology": {"branchingFactor": BRANCHING, "reshuffle": True},
                "task": {"name": "digits"},
                # A long deadline: each aggregator closes a round when every worker assigned to it
                # reported, so a round has all workers unless one was sent to the wrong aggregator.
                "training": {"rounds": ROUNDS, "syncEvery": 50, "roundDeadlineSeconds": 60, "seed": SEED},
                "compression": {"method": "topk", "ratio": 0.01, "broadcast": "delta"},
                "robustness": {"rule": "mean"},
            },
        }
    )
    tree = plan_tree(WORKERS, BRANCHING)
    fixed = {a.id: set(a.children) for a in tree.aggregators if a.level == 1}
    assert sorted(fixed) == ["agg-0", "agg-1"]
    # The draw (public: seed and round) moves workers away from their fixed group within two rounds,
    # long before the run ends, so the aggregators below show it while they still run.
    drawn = drawn_in(tree, range(2))
    assert all(drawn[agg] - fixed[agg] for agg in fixed), drawn

    run = SwarmThread(m, tmp_path).start()
    # Each aggregator exports a reputation gauge per child it has scored: every worker it was sent.
    ports = {agg: run.swarm.processes[agg].metrics_port for agg in fixed}
    scored: dict[str, set[str]] = {agg: set() for agg in fixed}

    def outsiders_scored() -> bool:
        assert run.running(), f"the swarm ended first; scored {scored}: {run.error!r}"
        for agg, port in ports.items():
            with contextlib.suppress(OSError):  # not serving yet
                scored[agg] |= {s.labels["child"] for s in metric_samples(port, "swarm_reputation")}
        return all(scored[agg] - fixed[agg] for agg in fixed)

    poll(lambda: f"workers of the other group at both aggregators: {scored}", outsiders_scored, timeout=300)
    result = run.join()

    assert result["phase"] == "Succeeded"
    assert result["round"] == ROUNDS
    assert result["accuracy"] >= BAR
    assert [line["workers"] for line in run.swarm.metrics_lines()] == [WORKERS] * ROUNDS
    every_draw = drawn_in(tree, range(ROUNDS))
    for agg in fixed:
        assert scored[agg] <= every_draw[agg], f"{agg} scored workers never drawn for it"
    # The root keeps each worker's latest record, from the aggregator that scored it last: the one
    # drawn for the worker in that round.
    records = {r["id"]: r for r in result["nodes"] if r["role"] == "worker"}
    assert sorted(records) == [f"worker-{rank}" for rank in range(WORKERS)]
    for worker, record in records.items():
        assert record["parent"] == parent_in_round(tree, worker, record["lastRound"], SEED), record
