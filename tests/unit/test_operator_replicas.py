"""The operator with root replicas (`consensus.replicas` R = 4, f = 1): what it believes of R
statuses and pods, how it replaces a replica, and who may reach the consensus port."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from swarm_contract.manifest import parse_spec
from swarm_contract.records import ConsensusStatus, NodeRecord, RootStatus
from swarm_operator.netpol import build_network_policy
from swarm_operator.observe import PodObservation
from swarm_operator.reconcile import Deletion, reconcile
from swarm_operator.replicas import agreed_status, finished_replicas
from swarm_operator.settings import Settings

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
SPEC = parse_spec(
    {"workers": {"replicas": 2}, "topology": {"branchingFactor": 2}, "consensus": {"replicas": 4}}
)
REPLICAS = ("root", "root-1", "root-2", "root-3")
OWNER = {"metadata": {"name": "j", "namespace": "ml", "uid": "uid-1"}}


def _obs(node_id: str, phase: str = "Running", **kw: Any) -> PodObservation:
    role = "worker" if node_id.startswith("worker") else "root"
    return PodObservation(
        name=f"j-{node_id}", node_id=node_id, role=role, uid=f"uid-{node_id}", phase=phase, ready=True, **kw
    )


def _pods(**phases: str) -> dict[str, PodObservation]:
    ids = (*REPLICAS, "worker-0", "worker-1")
    return {n: _obs(n, phases.get(n.replace("-", "_"), "Running")) for n in ids}


def _status(round_: int, phase: str = "Running", leader: str = "root") -> RootStatus:
    consensus = ConsensusStatus(replicas=4, tolerated=1, view=0, leader=leader)
    return RootStatus(phase=phase, round=round_, rounds=30, consensus=consensus)  # type: ignore[arg-type]


def test_progress_is_a_round_two_replicas_reached() -> None:
    # A liar reporting round 29 is outranked by the (f + 1)-th highest report.
    chosen = agreed_status([_status(29), _status(7), _status(8), _status(8)], 4)
    assert chosen is not None
    assert chosen.round == 8
    # With the leader's pod gone, three answers are enough; one alone is not.
    three = agreed_status([_status(9), _status(9), _status(8)], 4)
    assert three is not None
    assert three.round == 9
    assert agreed_status([_status(9)], 4) is None
    # One root (f = 0): its word, as before replicas.
    single = agreed_status([_status(3, "Failed")], 1)
    assert single is not None
    assert (single.phase, single.round) == ("Failed", 3)


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        (["Succeeded", "Running", "Running", "Running"], "Running"),  # one liar's "done"
        (["Failed", "Running", "Running", "Running"], "Running"),  # one liar's "failed"
        (["Succeeded", "Succeeded", "Running", "Running"], "Succeeded"),
        (["Failed", "Failed", "Succeeded", "Running"], "Failed"),
        (["Succeeded", "Failed", "Running"], "Running"),
    ],
)
def test_a_terminal_phase_needs_f_plus_one_replicas(phases: list[str], expected: str) -> None:
    chosen = agreed_status([_status(30 if p != "Running" else 12, p) for p in phases], 4)
    assert chosen is not None
    assert chosen.phase == expected


def test_one_replica_pod_exiting_0_does_not_end_the_job_two_do() -> None:
    one = [_obs("root", "Succeeded"), _obs("root-1"), _obs("root-2"), _obs("root-3")]
    assert not finished_replicas(one, 4)
    assert finished_replicas([*one[:1], _obs("root-1", "Succeeded"), *one[2:]], 4)
    ticked = _tick(_pods(root="Succeeded"), _status(12), {"phase": "Running"})
    assert ticked.status["phase"] == "Running"
    assert not ticked.delete
    done = _tick(_pods(root="Succeeded", root_2="Succeeded"), None, {"phase": "Running"})
    assert done.status["phase"] == "Succeeded"
    later = _tick(
        _pods(root="Succeeded", root_2="Succeeded"), None, done.status, now=NOW + timedelta(seconds=20)
    )
    assert {d.pod for d in later.delete} == {"j-root-1", "j-root-3", "j-worker-0", "j-worker-1"}


def _tick(pods: dict[str, PodObservation], root: RootStatus | None, status: dict[str, Any], **kw: Any) -> Any:
    return reconcile(SPEC, pods, root, status, now=kw.get("now", NOW), generation=1, settings=Settings())


def test_a_deleted_replica_pod_is_recreated_and_every_replica_is_in_status() -> None:
    first = _tick(_pods(), _status(10, leader="root-1"), {"phase": "Running"})
    s = first.status
    assert (s["aggregators"], s["readyAggregators"], s["workers"]) == (4, 4, 2)
    assert {n["id"] for n in s["nodes"]} == {*REPLICAS, "worker-0", "worker-1"}
    assert s["consensus"]["leader"] == "root-1"
    assert {c["type"]: c["message"] for c in s["conditions"]}["PodsReady"] == "6/6 pods ready"
    pods = _pods()
    pods["root-1"] = _obs("root-1", "Failed", failure="Deleted")
    gone = _tick(pods, _status(11), s)
    assert gone.delete == (Deletion("j-root-1"),)
    del pods["root-1"]
    later = _tick(pods, _status(12), {**s, **gone.status}, now=NOW + timedelta(seconds=5))
    assert later.create == ("root-1",)
    assert later.status["restarts"]["byNode"] == {"root-1": 1}


def test_only_the_jobs_replicas_reach_the_consensus_port() -> None:
    rules = build_network_policy(SPEC, OWNER, Settings())["spec"]["ingress"]
    (consensus,) = [r for r in rules if r["ports"][0]["port"] == 5556]
    assert consensus["from"] == [
        {"podSelector": {"matchLabels": {"swarm.ncrsh.io/job": "j", "swarm.ncrsh.io/role": "root"}}}
    ]
    single = parse_spec({"workers": {"replicas": 2}})
    assert all(
        r["ports"][0]["port"] != 5556
        for r in build_network_policy(single, OWNER, Settings())["spec"]["ingress"]
    )


def test_one_lying_replica_cannot_get_an_honest_pod_replaced() -> None:
    def status(round_: int, quarantined: bool) -> RootStatus:
        scores = {"reputation": 0.9, "uptime": 1.0, "agreement": 1.0, "contribution": 1.0}
        record = NodeRecord.model_validate(
            {"id": "worker-0", "role": "worker", "parent": "root", "lastRound": round_, **scores}
            | {"quarantined": quarantined}
        )
        return _status(round_).model_copy(update={"nodes": [record]})

    liar_in_the_middle = [status(9, False), status(8, True), status(7, False), status(7, False)]
    chosen = agreed_status(liar_in_the_middle, 4)
    assert chosen is not None
    assert chosen.round == 8  # the liar's own status is the one reported...
    assert not chosen.nodes[0].quarantined  # ...but not its lone quarantine
    assert not _tick(_pods(), chosen, {"phase": "Running"}).delete
    two = agreed_status([status(9, True), status(8, True), status(7, False)], 4)
    assert two is not None
    assert two.nodes[0].quarantined
