"""User path: a root of 4 replicas (examples/replicated.yaml) whose leader's pod is deleted mid-run.

`kubectl delete pod` of the leader replica once a few rounds are committed: the other three elect the
next leader (a view change) and keep committing, so `status.round` never stops nor goes back; the
operator replaces the pod, whose new process starts with nothing (its checkpoints are an emptyDir)
and catches up from the others by state transfer, verified by the commit certificate; the run
Succeeds with every round committed and the workers never applied an older round. The job runs
beside test_4_oom.py's (its fixture applies both before either is awaited).
"""

from __future__ import annotations

import re
from typing import Any

from tests.cluster.harness import poll

from .kube import Kube, example, sized_for_test_nodes

NAMESPACE = "e2e-replicas"
ROUNDS = 140
#: Kill the leader once this many rounds are committed: the run is well under way and most of it
#: is still to come, so the replacement has time to start and catch up.
DELETE_AT = 5
CAUGHT_UP = re.compile(r"(?P<me>root\S*): caught up at round (?P<round>\d+) from (?P<sender>\S+)")
#: swarm_worker.node.model_sync.accepted_round's WARNING: a node applied an older round's model.
ROLLBACK = re.compile(r"(?P<node>\S+): round \d+ -> \d+: the parent \S+ sent an older model")


def replicated_job() -> dict[str, Any]:
    """examples/replicated.yaml sized for the test nodes: 2 workers under 4 root replicas, rounds of
    1,000 local steps (about 0.3 s each on an idle 2-core machine, longer beside other jobs)."""
    job = sized_for_test_nodes(example("replicated.yaml"))
    spec = job["spec"]
    spec["workers"]["replicas"] = 2
    spec["topology"]["branchingFactor"] = 2
    spec["training"].update(rounds=ROUNDS, syncEvery=1000, roundDeadlineSeconds=30)
    spec["topology"]["aggregatorResources"] = dict(spec["workers"]["resources"])
    return job


def check_deleted_leader_is_outlived(kube: Kube, job: dict[str, Any]) -> str:
    """Delete the leader's pod mid-run; assert the module docstring. Returns a line for the report."""
    name = job["metadata"]["name"]
    seen: list[int] = []

    def status() -> dict[str, Any]:
        return kube.watch_rounds(NAMESPACE, name, seen)

    first = poll(
        f"{name} past round {DELETE_AT}",
        lambda: (st := status()).get("round", 0) >= DELETE_AT and st.get("consensus") and st,
        600,
        interval=1.0,
    )
    leader = first["consensus"]["leader"]
    old = kube.pod_of(NAMESPACE, name, leader)
    assert old is not None, leader
    before = first["round"]
    assert before < ROUNDS, f"the run ended (round {before}) before its leader could be deleted"
    kube.kubectl("delete", "pod", "-n", NAMESPACE, old["metadata"]["name"], "--wait=true", timeout=120)
    deleted_at = len(seen)

    moved = poll(
        "a view change to another leader",
        lambda: (st := status()).get("consensus", {}).get("leader") not in (None, leader) and st,
        300,
        interval=1.0,
    )
    assert moved["consensus"]["viewChanges"] >= 1, moved["consensus"]

    def caught_up() -> list[re.Match[str]] | None:
        pod = kube.pod_of(NAMESPACE, name, leader)
        if pod is None or pod["metadata"]["uid"] == old["metadata"]["uid"]:
            return None
        log = kube.kubectl("logs", "-n", NAMESPACE, pod["metadata"]["name"], check=False).stdout
        found = [m for m in CAUGHT_UP.finditer(log) if m["me"] == leader]
        return found or None

    def ended() -> bool:
        return status().get("phase") == "Succeeded"

    transfers = poll(
        f"the replaced {leader} to catch up from the others",
        lambda: caught_up() or (ended() and ["ended"]),
        400,
        interval=2.0,
    )
    assert transfers != ["ended"], f"the run ended before the new {leader} caught up: raise ROUNDS"
    caught_round = int(transfers[0]["round"])
    assert before <= caught_round <= ROUNDS, (before, caught_round)

    final = poll(f"{name} to succeed", lambda: (st := status()).get("phase") == "Succeeded" and st, 600)
    assert final["round"] == ROUNDS
    assert seen == sorted(seen), f"status.round went back: {seen}"
    assert min(seen[deleted_at:]) >= before, seen
    assert final["restarts"]["byNode"] == {leader: 1}, final["restarts"]
    assert final["accuracy"] >= 0.9
    replicas = {n["id"] for n in final["nodes"] if n["role"] == "root"}
    assert replicas == {"root", "root-1", "root-2", "root-3"}
    for i in range(job["spec"]["workers"]["replicas"]):
        log = kube.kubectl("logs", "-n", NAMESPACE, f"{name}-worker-{i}").stdout
        assert not ROLLBACK.search(log), log[-2000:]
    kube.kubectl("delete", "namespace", NAMESPACE, "--wait=false")
    return (
        f"e2e replicas: leader {leader} deleted at round {before}, "
        f"{final['consensus']['viewChanges']} view change(s), the new {leader} caught up at round "
        f"{caught_round}, {ROUNDS} rounds Succeeded"
    )
